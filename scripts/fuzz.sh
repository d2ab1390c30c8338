#!/usr/bin/env bash
# Fuzzes each target of tests/fuzz for SECONDS (default 30) with libFuzzer, starting from
# the committed corpora (tests/fuzz/corpus/<target>); new inputs go to target/fuzz/<target>,
# which `--merge` folds back into the committed corpora, minimised. A crash, a panic, an
# abort, a run over 10 s or a process over 2 GB fails the run and leaves the input in
# tests/fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     scripts/fuzz.sh --merge
# Uses nightly when the machine has it, else the stable toolchain with RUSTC_BOOTSTRAP
# (libFuzzer's instrumentation needs no sanitizer: --sanitizer none). Installs cargo-fuzz
# from crates.io if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
fuzz=(cargo fuzz)
if ! cargo +nightly --version >/dev/null 2>&1; then
  export RUSTC_BOOTSTRAP=1
else
  fuzz=(cargo +nightly fuzz)
fi
opts=(--fuzz-dir tests/fuzz --sanitizer none -O)
targets=(read_stack options reconstruct integrate)
# The network engine is not fuzzed; its library is not needed.
export ESPINNET_ORT_PATH=/nonexistent
# The readers' target writes each input to a file under the temporary folder: this run's
# own, removed when it ends.
TMPDIR=$(mktemp -d)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

if [ "${1:-}" = "--merge" ]; then
  for t in "${targets[@]}"; do
    mkdir -p "target/fuzz/$t" "tests/fuzz/corpus/$t.new"
    "${fuzz[@]}" run "${opts[@]}" "$t" "tests/fuzz/corpus/$t.new" "tests/fuzz/corpus/$t" "target/fuzz/$t" \
      -- -merge=1 -max_len=65536 2>&1 | tail -n 1
    rm -rf "tests/fuzz/corpus/$t" && mv "tests/fuzz/corpus/$t.new" "tests/fuzz/corpus/$t"
  done
  exit 0
fi

seconds=${1:-30}
shift || true
[ $# -gt 0 ] && targets=("$@")
"${fuzz[@]}" build "${opts[@]}" >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz/$t"
  echo "fuzz: $t for ${seconds} s"
  "${fuzz[@]}" run "${opts[@]}" "$t" "target/fuzz/$t" "tests/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|ERROR|panicked|SUMMARY" || true
  # A failure leaves an artifact (grep above keeps the run's exit status out of the way).
  if compgen -G "tests/fuzz/artifacts/$t/*" >/dev/null; then
    echo "fuzz: $t failed, see tests/fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
