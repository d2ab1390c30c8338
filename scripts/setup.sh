#!/usr/bin/env bash
# Installs what building and testing espinnet needs; safe to run again (does nothing twice).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
dpkg -s libhdf5-dev >/dev/null 2>&1 || need_apt+=(libhdf5-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The CMake package and its C/C++ consumer tests (scripts/c-tests.sh).
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
./scripts/apt-install.sh setup ${need_apt[@]+"${need_apt[@]}"}

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# Python side: reference readers for the format cross-checks, ONNX Runtime (whose library
# the network engine loads), pytest for the Python package's tests, and CMake 3.26+ for the
# HDF5 sources built into the library by the feature hdf5-static (Debian's is 3.25).
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import numpy, tifffile, h5py, onnxruntime, pytest" >/dev/null 2>&1 \
   || [ ! -x .venv/bin/cmake ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q -r scripts/requirements.txt
fi
