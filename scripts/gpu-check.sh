#!/usr/bin/env bash
# The network engine on a GPU, in one device run (see ../shared/GPU.md for the why).
#
#   scripts/gpu-check.sh prepare   here: bundle a CUDA-13 ONNX Runtime pruned to the H200's
#                                  kernels (sm_90), the network tests and an `espinnet`
#                                  built without HDF5 (the device has no libhdf5) into
#                                  .gpu/bundle.tar.xz (under the device's 64 MiB)
#   scripts/gpu-check.sh device    on the GPU machine, with `.gpu` carried along: the network
#                                  tests on CUDA, `espinnet bench` of the network at 512² and
#                                  2048² (N = 20) with 1, 4 and 16 pairs per call, tiled and
#                                  whole, and of its previous export (CumSum in the warps,
#                                  where Range is now), whole runs' stages from their debug logs (tiled,
#                                  whole, each cuDNN search) and the PyTorch timing of the
#                                  same network; all to $OUT (else ./gpu-out)
#   scripts/gpu-check.sh dry-run   here: the device step on the CPU at small sizes, to check
#                                  this script before device time is spent on it
#
# The device run, through the `device` tool (allow 300 s):
#   run(command="scripts/gpu-check.sh device", carry=[".gpu"], timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=.gpu/bundle.tar.xz
ORT_VERSION=1.31.1

prepare() {
    local s=target/gpu-scratch target=target/gpu
    mkdir -p .gpu "$s/raw" "$s/lib"
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
    ls "$s"/onnxruntime_gpu-$ORT_VERSION-*.whl >/dev/null 2>&1 ||
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
            --platform manylinux_2_28_x86_64 onnxruntime-gpu==$ORT_VERSION -d "$s"
    python3 - "$s" <<'EOF'
import glob, os, sys, zipfile
s = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{s}/onnxruntime_gpu-*.whl")[0]) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and (
            base.startswith("libonnxruntime.so.") or base.startswith("libonnxruntime_providers_")
        ):
            open(f"{s}/raw/{base}", "wb").write(z.read(n))
EOF
    .venv/bin/python -c 'import zstandard' 2>/dev/null || .venv/bin/pip install -q zstandard
    .venv/bin/python "${PRUNE_TOOL:-../shared/tools/prune_ort_cuda.py}" \
        "$s/raw/libonnxruntime_providers_cuda.so" "$s/lib/libonnxruntime_providers_cuda.so" --drop-llm
    cp "$s/raw/libonnxruntime.so.$ORT_VERSION" "$s/raw/libonnxruntime_providers_shared.so" "$s/lib/"
    # No HDF5 on the device: the CLI and the network tests without it.
    CARGO_TARGET_DIR=$target cargo build --release --no-default-features --features cli --bin espinnet
    CARGO_TARGET_DIR=$target cargo test --release --no-default-features --test network --no-run
    cp "$target/release/espinnet" "$s/lib/espinnet"
    cp "$(ls -t "$target"/release/deps/network-* | grep -v '\.d$' | head -1)" "$s/lib/network.test"
    strip "$s/lib/espinnet" "$s/lib/network.test"
    # The tests find their fixtures under the directory they were built in.
    echo "$ROOT" > "$s/lib/manifest_dir"
    # The shipped weights as exported before the warps' coordinates came from Range rather
    # than CumSum (the same outputs), for the bench to compare on the GPU.
    git show 0409d0d:models/espinnet-light.onnx > "$s/lib/espinnet-light-cumsum.onnx"
    tar -C "$s/lib" -cf - . | xz -9 -T0 > "$BUNDLE"
    ls -l "$BUNDLE"
}

# Runs the checks; $1: "device" or "dry-run".
check() {
    local mode=$1 out=${OUT:-$ROOT/gpu-out} o
    mkdir -p "$out"
    o=$(mktemp -d)
    python3 -c "import lzma,sys,tarfile;tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])" \
        "$BUNDLE" "$o"
    export ESPINNET_ORT_PATH=$o/libonnxruntime.so.$ORT_VERSION
    local built_in sizes batches provider
    built_in=$(cat "$o/manifest_dir")
    if [ ! -e "$built_in" ]; then mkdir -p "$(dirname "$built_in")" && ln -s "$ROOT" "$built_in"; fi
    if [ "$mode" = device ]; then
        local sp
        sp=$(python3 -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
        export LD_LIBRARY_PATH=$sp/nvidia/cu13/lib:$sp/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
        nvidia-smi -L | tee "$out/device.txt"
        sizes=512,2048 batches=1,4,16 provider=cuda
    else
        echo "dry run: the CPU, small sizes" | tee "$out/device.txt"
        sizes=128 batches=1,2 provider=cpu
    fi
    "$o/espinnet" --version | tee -a "$out/device.txt"
    # 1. The network tests, the provider chosen as a user gets it (auto: CUDA first).
    # A failing test is reported, not a reason to skip the bench.
    "$o/network.test" --test-threads=1 --nocapture 2>&1 | tee "$out/tests.txt" | tail -5 ||
        echo "network tests FAILED on $provider: see tests.txt" | tee -a "$out/device.txt"
    # 2. The bench: tiles of 1280 px (the default), then whole images.
    local tiled whole
    tiled=$(mktemp) whole=$(mktemp)
    "$o/espinnet" bench --sizes $sizes --scans 20 --engines network --batches $batches \
        --provider $provider --repeat 5 2>&1 | tee "$tiled"
    # (Whole 2048² images 16 at a time would need 11 GB of inputs on the host alone.)
    "$o/espinnet" bench --sizes $sizes --scans 20 --engines network --batches "${batches%,16}" \
        --provider $provider --tile 4096 --repeat 5 --no-whole-run 2>&1 | tee "$whole"
    # The previous export (CumSum in the warps), tiled, one pair per call.
    local cumsum
    cumsum=$(mktemp)
    "$o/espinnet" bench --sizes $sizes --scans 20 --engines network --batches 1 \
        --provider $provider --model "$o/espinnet-light-cumsum.onnx" --repeat 5 --no-whole-run \
        2>&1 | tee "$cumsum"
    { echo "# tiles of at most 1280 px"; cat "$tiled"; echo "# whole images"; cat "$whole"
      echo "# the previous export (CumSum), tiles of at most 1280 px"; cat "$cumsum"; } \
        > "$out/bench.txt"
    # 3. Where a whole run's time goes (its debug log: sessions, tiles, inference, guard,
    # phase, writing): the default tiles and whole images, and cuDNN's cheaper algorithm
    # choices (the first call of a process pays for the default exhaustive search).
    local case size tile search
    case=$(mktemp -d)
    for size in ${sizes//,/ }; do
        "$o/espinnet" simulate --output "$case/in" --size "$size" --scans 20 --seed 1 --force
        for run in "1280 exhaustive" "4096 exhaustive" "1280 heuristic" "1280 fixed"; do
            read -r tile search <<< "$run"
            { time RUST_LOG=espinnet=debug "$o/espinnet" reconstruct --case "$case/in" \
                --output "$case/out" --provider $provider --tile "$tile" \
                --conv-search "$search" --force; } \
                > "$out/stages-$size-tile$tile-$search.txt" 2>&1 || true
        done
    done
    rm -rf "$case"
    # 4. The same network in PyTorch (random weights: the time does not depend on them).
    # torch.compile compiles each new shape: bounded, so that the run ends in time.
    timeout 120 python3 -u scripts/gpu_torch_timing.py --sizes $sizes --batches $batches 2>&1 |
        tee "$out/torch.txt" || true
    echo "results in $out"
}

case ${1:-} in
    prepare) prepare ;;
    device) check device ;;
    dry-run) check dry-run ;;
    *) echo "usage: scripts/gpu-check.sh prepare|device|dry-run" >&2; exit 2 ;;
esac
