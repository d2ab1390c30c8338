#!/usr/bin/env bash
# Times ESPINNet Reconstruct in ImageJ against `espinnet reconstruct` on the same simulated
# 512²×20 pair (override: SIZE, SCANS, REPEAT), median of REPEAT, in one run: the command
# inside ImageJ (getTime around run(); first of the session, which unpacks the natives, and
# again), and each whole process (ImageJ: start, open the TIFFs, reconstruct twice; CLI:
# read, reconstruct, write the outputs).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-512}; scans=${SCANS:-20}; repeat=${REPEAT:-3}
./scripts/imagej-build.sh >/dev/null
cli="$PWD/target/release/espinnet"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ij/plugins/jars" "$work/home"
cp target/imagej/Espinnet_.jar "$work/ij/plugins/"
cp /usr/share/java/jna.jar "$work/ij/plugins/jars/"
"$cli" simulate --output "$work/case" --size "$size" --scans "$scans" >/dev/null 2>&1
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
echo "ESPINNet Reconstruct ${size}²×${scans}, median of $repeat (s)"
for engine in network tracking; do
  : > "$work/first"; : > "$work/again"; : > "$work/ij.t"; : > "$work/cli.t"
  for _ in $(seq "$repeat"); do
    t=$(now)
    HOME="$work/home" xvfb-run -a java -cp /usr/share/java/ij.jar ij.ImageJ -ijpath "$work/ij" \
      -batch "$PWD/tests/imagej/timing.ijm" "$work/case,$engine" > "$work/log" 2>&1
    awk "BEGIN {print $(now) - $t}" >> "$work/ij.t"
    sed -n 's/^reconstruct_ms \([0-9]*\).*/\1/p' "$work/log" | awk '{print $1/1000}' > "$work/runs"
    sed -n 1p "$work/runs" >> "$work/first"
    sed -n 2p "$work/runs" >> "$work/again"
    [ "$(grep -c "images 7" "$work/log")" = 2 ] || { cat "$work/log"; exit 1; }
    t=$(now)
    "$cli" reconstruct --reference "$work/case/reference.tif" --sample "$work/case/sample.tif" \
      --output "$work/out" --engine "$engine" --force >/dev/null 2>&1
    awk "BEGIN {print $(now) - $t}" >> "$work/cli.t"
  done
  f=$(median < "$work/first"); a=$(median < "$work/again"); l=$(median < "$work/cli.t")
  i=$(median < "$work/ij.t")
  awk -v e="$engine" -v f="$f" -v a="$a" -v i="$i" -v l="$l" 'BEGIN {printf "%-8s CLI process %5.2f | in ImageJ: first %5.2f (%.2fx), again %5.2f (%.2fx) | ImageJ process (2 runs) %5.2f\n", e, l, f, f / l, a, a / l, i}'
done
