#!/usr/bin/env bash
# Builds the ImageJ plugin, target/imagej/Espinnet_.jar: the classes, plugins.config and,
# under JNA's resource path, libespinnet.so (library only: no CLI, no HDF5) and ONNX
# Runtime's libonnxruntime.so from the set-up's onnxruntime wheel (MIT, its licence
# included). Installs Debian's imagej, libjna-java and a JDK if missing; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -e /usr/share/java/ij.jar ] || need+=(imagej)
[ -e /usr/share/java/jna.jar ] || need+=(libjna-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb xauth)
./scripts/apt-install.sh imagej ${need[@]+"${need[@]}"}

out="$PWD/target/imagej"
ort_dir=$(ls -d .venv/lib/python3*/site-packages/onnxruntime 2>/dev/null | head -n 1)
ort=$(ls "$ort_dir"/capi/libonnxruntime.so.1* 2>/dev/null | sort | tail -n 1)
[ -n "$ort" ] || { echo "imagej: no ONNX Runtime in .venv: run scripts/setup.sh" >&2; exit 1; }

# The library alone, in the target directory library-only builds share.
CARGO_TARGET_DIR="$PWD/target/package" cargo build --release --no-default-features --lib -q

rm -rf "$out/classes" "$out/root"
mkdir -p "$out/classes" "$out/root/linux-x86-64" "$out/root/META-INF/licenses"
javac --release 8 -nowarn -Xlint:-options -d "$out/classes" \
      -cp /usr/share/java/ij.jar:/usr/share/java/jna.jar plugin/imagej/src/espinnet/imagej/*.java
cp plugin/imagej/plugins.config "$out/root/"
strip --strip-debug -o "$out/root/linux-x86-64/libespinnet.so" target/package/release/libespinnet.so
cp "$ort" "$out/root/linux-x86-64/libonnxruntime.so"
cp "$ort_dir/LICENSE" "$out/root/META-INF/licenses/onnxruntime-LICENSE"
cp "$ort_dir/ThirdPartyNotices.txt" "$out/root/META-INF/licenses/onnxruntime-ThirdPartyNotices.txt"
rm -f "$out/Espinnet_.jar"
jar --create --file "$out/Espinnet_.jar" -C "$out/classes" . -C "$out/root" .
echo "imagej: $out/Espinnet_.jar ($(du -h "$out/Espinnet_.jar" | cut -f1))"
