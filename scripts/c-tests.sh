#!/usr/bin/env bash
# The C and C++ consumers (tests/c) against the installed package: builds the library
# through the CMake package, installs it into a temporary prefix, checks the layout, builds
# the consumers with find_package(espinnet) and with pkg-config, and runs them (CTest,
# valgrind included). Cargo's output is kept in target/package (shared with the Python
# wheel's library-only build), so a second run is quick.
# ESPINNET_PREFIX=DIR installs there and keeps it (to rerun a consumer by hand). The
# library is built with the test hooks (`debug_panic`), which a shipped build never has.
set -euo pipefail
cd "$(dirname "$0")/.."
build="$PWD/target/cmake"
if [ -n "${ESPINNET_PREFIX:-}" ]; then
  prefix=$(realpath -m "$ESPINNET_PREFIX")
else
  prefix=$(mktemp -d)
  trap 'rm -rf "$prefix"' EXIT
fi

ort=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1* 2>/dev/null | sort | tail -n 1)
[ -n "$ort" ] || { echo "c-tests: no ONNX Runtime in .venv: run scripts/setup.sh" >&2; exit 1; }

# With HDF5 built in (hdf5-static, for the series test): its sources need CMake 3.26+,
# which the set-up's .venv has.
PATH="$PWD/.venv/bin:$PATH" cmake -S cmake -B "$build/package" -DCMAKE_INSTALL_PREFIX="$prefix" \
      -DESPINNET_CARGO_TARGET_DIR="$PWD/target/package" \
      -DESPINNET_CARGO_FEATURES="cpp,test-hooks,hdf5-static" >/dev/null
PATH="$PWD/.venv/bin:$PATH" cmake --build "$build/package" --target install -j 2

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The ABI's number: MAJOR, or 0.MINOR before 1.0 (build.rs, cmake/CMakeLists.txt).
case "$version" in 0.*) abi=$(echo "$version" | cut -d. -f1,2) ;; *) abi=${version%%.*} ;; esac
for f in include/espinnet.h include/espinnet.hpp include/espinnet/bridge.h include/rust/cxx.h \
         "lib/libespinnet.so.$version" "lib/libespinnet.so.$abi" lib/libespinnet.so lib/libespinnet.a \
         lib/libespinnet_cxx.a lib/cmake/espinnet/espinnetConfig.cmake \
         lib/cmake/espinnet/espinnetConfigVersion.cmake lib/pkgconfig/espinnet.pc; do
  [ -e "$prefix/$f" ] || { echo "c-tests: $f was not installed" >&2; exit 1; }
done
soname=$(readelf -d "$prefix/lib/libespinnet.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libespinnet.so.$abi" ] || { echo "c-tests: SONAME is '$soname'" >&2; exit 1; }

cmake -S tests/c -B "$build/consumers" -DCMAKE_PREFIX_PATH="$prefix" \
      -DESPINNET_ORT_PATH="$ort" >/dev/null
cmake --build "$build/consumers" -j 2
(cd "$build/consumers" && ctest --output-on-failure)

# A plain Makefile-style consumer: pkg-config alone.
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -Wall -Werror tests/c/roundtrip.c -o "$build/roundtrip_pkgconfig" \
   $(pkg-config --cflags --libs espinnet) -lm -Wl,-rpath,"$prefix/lib"
ESPINNET_TEST_ENGINES=tracking "$build/roundtrip_pkgconfig" >/dev/null
echo "c-tests: package layout, CMake and pkg-config consumers: ok"
