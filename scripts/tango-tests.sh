#!/usr/bin/env bash
# The Tango device server (plugin/tango) under test: builds it (scripts/tango-build.sh), then
# runs tests/tango with Debian's PyTango in a virtual environment that also has the
# espinnet Python package (the C API the results are compared with). Each test module
# starts its own EspinnetDS in no-database mode on loopback and stops it by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/tango-build.sh
out="$PWD/target/tango"
ort=$(sed -n 's/^onnxruntime==//p' scripts/requirements.txt)
# The package the results are compared with, built from this tree (cargo's output is
# shared with the other library-only builds, so this is quick after them).
rm -rf "$out/dist"
.venv/bin/python -m pip wheel ./plugin/python --no-deps -q -w "$out/dist"
wheel=$(ls "$out"/dist/espinnet-*.whl)
# Debian's python3-tango lives in the system's site-packages, next to its numpy.
[ -x "$out/venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$out/venv"
"$out/venv/bin/pip" install -q --force-reinstall --no-deps "$wheel"
"$out/venv/bin/pip" install -q "$wheel[cpu]" "onnxruntime==$ort" pytest tifffile h5py
ort_lib=$(ls "$out"/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1* | sort | tail -n 1)
# One process per module: see tests/tango/helpers.py on how long a subscription may last.
for module in tests/tango/test_*.py; do
  ESPINNET_DS="$out/EspinnetDS" ORT_DYLIB_PATH="$ort_lib" \
    "$out/venv/bin/python" -m pytest -q -p no:cacheprovider --tb=short -s "$module" "$@" \
    || [ $? -eq 5 ]  # 5: -k selected nothing in this module
done
echo "tango-tests: EspinnetDS against PyTango: ok"
