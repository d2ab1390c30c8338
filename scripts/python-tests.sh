#!/usr/bin/env bash
# The Python package (plugin/python) as users get it: builds the wheel with the standard
# command, installs it into a fresh virtual environment and runs tests/python there, first
# without ONNX Runtime, then with it; then the editable install of a developer. Needs the
# set-up's .venv and the command-line tool (target/release/espinnet) to compare with.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/python"
ort=$(sed -n 's/^onnxruntime==//p' scripts/requirements.txt)
cli="$PWD/target/release/espinnet"
[ -x "$cli" ] || { echo "python-tests: build the command line first (cargo build --release)" >&2; exit 1; }
# What a user who set nothing has: no ONNX Runtime path, no active environment.
run() { env -u VIRTUAL_ENV -u ESPINNET_ORT_PATH -u ORT_DYLIB_PATH -u ESPINNET_LIBRARY \
            ESPINNET_CLI="$cli" "$@"; }

rm -rf "$out/dist"
.venv/bin/python -m pip wheel ./plugin/python --no-deps -q -w "$out/dist"
wheel=$(ls "$out"/dist/espinnet-*.whl)
python3 -m venv --clear "$out/venv"
"$out/venv/bin/pip" install -q "$wheel" pytest tifffile
run ESPINNET_EXPECT_INSTALL=wheel "$out/venv/bin/python" -m pytest -q -p no:cacheprovider \
    -m without_onnxruntime tests/python/test_package.py
# ONNX Runtime through the package's own extra, at the version the set-up pins.
"$out/venv/bin/pip" install -q "$wheel[cpu]" "onnxruntime==$ort"
run ESPINNET_EXPECT_INSTALL=wheel "$out/venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/python/test_package.py
# CT series: the extras for tomography (algotom) and Dask.
"$out/venv/bin/pip" install -q "$wheel[tomo,dask]"
run "$out/venv/bin/python" -m pytest -q -p no:cacheprovider -s tests/python/test_series.py

# A developer's editable install into the set-up's .venv (cargo output shared, so quick).
.venv/bin/pip install -q -e ./plugin/python
run ESPINNET_EXPECT_INSTALL=editable .venv/bin/python -m pytest -q -p no:cacheprovider \
    -k "installed or version or glibc or no_environment" tests/python/test_package.py
echo "python-tests: wheel $(basename "$wheel") and editable install: ok"
