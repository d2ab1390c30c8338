#!/usr/bin/env bash
# Training the network on the GPU machine, in one device run (issue 15: the stress families
# in the training data; see models/MODEL_CARD.md, *Training* and *Alternative*).
#
#   scripts/gpu-train.sh prepare         here: an `espinnet` built without HDF5 (the device
#                                        has no libhdf5; its shards are .npz) into .gpu/train/
#   scripts/gpu-train.sh device [MIN]    on the GPU machine, with `.gpu/train` carried along:
#                                        simulates the training and validation sets on its
#                                        cores (27 GB under $TMPDIR, else /tmp), fine-tunes the shipped weights on CUDA for MIN
#                                        minutes (default 5) and leaves the checkpoint, the
#                                        curves and the log in $OUT (else ./gpu-out/train)
#   scripts/gpu-train.sh dry-run         here: the device step on the CPU with a few patches
#                                        and 20 steps, to check this script first
#
# Environment: INIT (weights to start from, under models/train), VARIANT, LR,
# PAPER_WEIGHT (how many times the paper mix's sets are listed) and BALANCE=1 (each family
# of data weighs alike in the loss: `train --balance`) change the recipe.
#
# The device run, through the `device` tool (data about 1.5 min, then MIN minutes; the
# machine stays up 30 s after scripts/gpu-check.sh, so run it right after that one):
#   run(command="scripts/gpu-train.sh device 5", carry=[".gpu/train"], timeout_s=560)
# Then here: export the checkpoint and score it (models/README.md, *Retraining on a GPU*).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=.gpu/train/espinnet

prepare() {
    local target=target/gpu
    mkdir -p .gpu/train
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
    CARGO_TARGET_DIR=$target cargo build --release --no-default-features --features cli --bin espinnet
    cp "$target/release/espinnet" "$BIN"
    strip "$BIN"
    ls -l "$BIN"
}

# Simulates the sets into $1/NAME and trains; $2: "device" or "dry-run", $3: minutes.
train() {
    local work=$1 mode=$2 minutes=$3 out=${OUT:-$ROOT/gpu-out}/train
    local scale device crops steps threads=$(nproc)
    # The run writes into $out itself: a run stopped at the device's time limit still brings
    # back its last checkpoint (saved every 1000 steps).
    rm -rf "$out"
    mkdir -p "$out" "$work/data"
    if [ "$mode" = device ]; then
        nvidia-smi -L | tee "$out/device.txt"
        scale=1 device=cuda crops="128:32 256:8" steps=1000000
    else
        echo "dry run: the CPU, a few patches, 20 steps" | tee "$out/device.txt"
        scale=256 device=cpu crops="64:2 128:1" steps=20
    fi
    "$BIN" --version | tee -a "$out/device.txt"
    df -h "$work" | tee -a "$out/device.txt"
    # The stress model's sets (the model card's recipe, same seeds), four times as large
    # (27 GB of shards, 14 GB on the GPU in float16), the validation sets as they were;
    # NAME MIX PATCH COUNT SEED [SCANS].
    local started=$SECONDS
    while read -r name mix patch count seed scans; do
        count=$(( (count + scale - 1) / scale ))
        "$BIN" dataset --output "$work/data/$name" --mix "$mix" --patch "$patch" \
            --count "$count" --seed "$seed" --shard-size 128 --format npz --force \
            ${scans:+--scans "$scans"}
    done <<'EOF'
stress stress 128 3584 21
paper paper 128 1280 22
broad broad 128 1280 23
stress256 stress 256 512 24
paper256 paper 256 256 25 2-20
valstress stress 128 128 997
val256 paper 256 32 998 2-20
EOF
    echo "datasets simulated in $((SECONDS - started)) s" | tee -a "$out/device.txt"
    local d=$work/data
    # As stress2: the paper mix listed PAPER_WEIGHT times (default twice its weight), from
    # INIT (the shipped weights) at rate LR. Run gpu1 (these defaults) lost a fifth of the
    # paper mix's accuracy (MODEL_CARD.md, *Training*).
    local paper=() k
    for ((k = 0; k < ${PAPER_WEIGHT:-2}; k++)); do paper+=("$d/paper" "$d/paper256"); done
    (cd models/train && PYTHONPATH=. python3 -u -m espinnet_train.train \
        --data "$d/stress" "$d/broad" "$d/stress256" "${paper[@]}" \
        --val "$d/valstress" "$d/val256" --run "$out" \
        --variant "${VARIANT:-light-nonorm}" --init "${INIT:-runs/tune2-step008000.pt}" \
        --device $device --minutes "$minutes" --steps $steps --crops $crops \
        --lr "${LR:-2e-4}" --lr-min 1e-6 --warmup 100 --every 1000 --threads "$threads" \
        ${BALANCE:+--balance}) \
        2>&1 | tee "$out/train.txt"
    echo "results in $out"
}

case ${1:-} in
    prepare) prepare ;;
    device)
        w=$(mktemp -d)
        trap 'rm -rf "$w"' EXIT
        train "$w" device "${2:-5}"
        ;;
    dry-run)
        [ -x "$BIN" ] || prepare
        w=$(mktemp -d)
        trap 'rm -rf "$w"' EXIT
        train "$w" dry-run 0
        ;;
    *) echo "usage: scripts/gpu-train.sh prepare|device [MINUTES]|dry-run" >&2; exit 2 ;;
esac
