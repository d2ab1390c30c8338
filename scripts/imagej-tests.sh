#!/usr/bin/env bash
# The ImageJ plugin in a real ImageJ (Debian's, under Xvfb): builds Espinnet_.jar, puts it
# alone in a fresh plugins folder (with jna.jar in plugins/jars, as plain ImageJ needs),
# runs the macros of tests/imagej and checks what they left against the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/imagej-build.sh
cli="$PWD/target/release/espinnet"
[ -x "$cli" ] || { echo "imagej-tests: build the command line first (cargo build --release)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ij/plugins/jars" "$work/out" "$work/home"
cp target/imagej/Espinnet_.jar "$work/ij/plugins/"
cp /usr/share/java/jna.jar "$work/ij/plugins/jars/"
javac --release 8 -nowarn -Xlint:-options -d "$work/ij/plugins" -cp /usr/share/java/ij.jar \
      tests/imagej/EspinnetChecks.java
for macro in reconstruct bad-inputs cancel; do
  # A fresh home (ImageJ's preferences, JNA's cache); nothing set for ONNX Runtime. A
  # macro stuck on a dialog is stopped by the timeout and fails the checks.
  env -u VIRTUAL_ENV -u ESPINNET_ORT_PATH -u ORT_DYLIB_PATH HOME="$work/home" \
    timeout 300 xvfb-run -a java -cp /usr/share/java/ij.jar ij.ImageJ -ijpath "$work/ij" \
    -batch "tests/imagej/$macro.ijm" "$work/out" > "$work/$macro.log" 2>&1 || true
done
# True headless (no display, java.awt.headless): the static entries, jars on the class path.
env -u DISPLAY -u VIRTUAL_ENV -u ESPINNET_ORT_PATH -u ORT_DYLIB_PATH HOME="$work/home" \
  timeout 300 java -Djava.awt.headless=true \
  -cp "/usr/share/java/ij.jar:$work/ij/plugins/Espinnet_.jar:$work/ij/plugins/jars/jna.jar" \
  ij.ImageJ -ijpath "$work/ij" -batch tests/imagej/headless.ijm "$work/out" > "$work/headless.log" 2>&1 || true
.venv/bin/python tests/imagej/check_outputs.py "$work" "$cli"
