#!/usr/bin/env bash
# Latency of an acquisition through the Tango server against the C API alone (one run;
# arguments go to tests/tango/bench.py). Run scripts/tango-tests.sh once first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/tango"
[ -x "$out/EspinnetDS" ] && [ -x "$out/venv/bin/python" ] || { echo "tango-bench: run scripts/tango-tests.sh first" >&2; exit 1; }
ort_lib=$(ls "$out"/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1* | sort | tail -n 1)
cd tests/tango
ESPINNET_DS="$out/EspinnetDS" ORT_DYLIB_PATH="$ort_lib" "$out/venv/bin/python" bench.py "$@"
