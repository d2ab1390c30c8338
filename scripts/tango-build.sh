#!/usr/bin/env bash
# Builds the Tango device server, target/tango/EspinnetDS: installs cppTango (Debian
# libtango-dev) and the PyTango client the tests use if missing, installs espinnet's CMake
# package (C++ API, with HDF5 reading) into target/tango/prefix, then builds plugin/tango
# against it with find_package(espinnet). Safe to rerun; cargo's output is shared with the
# other library-only builds (target/package).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
dpkg -s libtango-dev >/dev/null 2>&1 || need+=(libtango-dev)
dpkg -s python3-tango >/dev/null 2>&1 || need+=(python3-tango)
dpkg -s python3-venv >/dev/null 2>&1 || need+=(python3-venv)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
./scripts/apt-install.sh tango ${need[@]+"${need[@]}"}

out="$PWD/target/tango"
cmake -S cmake -B "$out/package" -DCMAKE_INSTALL_PREFIX="$out/prefix" \
      -DESPINNET_CARGO_TARGET_DIR="$PWD/target/package" -DESPINNET_CARGO_FEATURES="cpp,hdf5" >/dev/null
cmake --build "$out/package" --target install -j 2 >/dev/null
cmake -S plugin/tango -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$out/prefix" >/dev/null
cmake --build "$out/build" -j 2
cp "$out/build/EspinnetDS" "$out/EspinnetDS.new" && mv -f "$out/EspinnetDS.new" "$out/EspinnetDS"
echo "tango: $out/EspinnetDS"
