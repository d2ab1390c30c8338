#!/usr/bin/env bash
# The pictures of plugin/imagej/README.md, taken in ImageJ under Xvfb (1280×800).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/imagej-build.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ij/plugins/jars" "$work/home" plugin/imagej/docs
cp target/imagej/Espinnet_.jar "$work/ij/plugins/"
cp /usr/share/java/jna.jar "$work/ij/plugins/jars/"
javac --release 8 -nowarn -Xlint:-options -d "$work/ij/plugins" -cp /usr/share/java/ij.jar \
      tests/imagej/Screenshots.java
HOME="$work/home" timeout 300 xvfb-run -a -s "-screen 0 1280x800x24" \
  java -cp /usr/share/java/ij.jar ij.ImageJ -ijpath "$work/ij" \
  -macro "$PWD/tests/imagej/screenshots.ijm" "$PWD/plugin/imagej/docs"
ls -la plugin/imagej/docs
