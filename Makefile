# The two commands of the README. Both run their own set-up first (idempotent).
.PHONY: setup demo test bench

CARGO ?= cargo

setup:
	@./scripts/setup.sh

## demo: simulate the paper's set-up and write previews to out/demo (grows with the engines)
demo: setup
	$(CARGO) run --release --quiet -- demo --output out/demo --force

## test: the whole test suite: Rust unit and integration tests (the shared library is built
## first so that the C consumer test links against it), then format cross-checks
test: setup
	$(CARGO) build --release
	$(CARGO) test --release
	.venv/bin/python tests/python/check_formats.py target/release/espinnet

## bench: simulator and phase-integration benchmarks
bench: setup
	$(CARGO) run --release --quiet -- bench
