# The two commands of the README. Both run their own set-up first (idempotent).
.PHONY: setup demo test bench imagej tango fuzz

CARGO ?= cargo

setup:
	@./scripts/setup.sh

## demo: simulate the paper's set-up and write previews to out/demo (grows with the engines)
demo: setup
	$(CARGO) run --release --quiet -- demo --output out/demo --force

## test: the whole test suite: Rust unit and integration tests (with the C++ API), format
## cross-checks, the C and C++ consumers against the installed CMake package, the Python
## package from its wheel in a fresh environment, the ImageJ plugin in a real ImageJ, then
## the Tango device server against PyTango, and 30 s of fuzzing per target from the corpora
test: setup
	$(CARGO) build --release --features cpp,test-hooks
	$(CARGO) test --release --features cpp,test-hooks
	.venv/bin/python tests/python/check_formats.py target/release/espinnet
	./scripts/c-tests.sh
	./scripts/python-tests.sh
	./scripts/imagej-tests.sh
	./scripts/tango-tests.sh
	./scripts/fuzz.sh 30

## bench: simulator and phase-integration benchmarks
bench: setup
	$(CARGO) run --release --quiet -- bench

## imagej: the ImageJ/Fiji plugin, target/imagej/Espinnet_.jar (copy it into ImageJ's plugins/)
imagej: setup
	./scripts/imagej-build.sh

## tango: the Tango device server, target/tango/EspinnetDS (installs cppTango if missing)
tango: setup
	./scripts/tango-build.sh

## fuzz: each fuzz target for FUZZ_SECONDS (default 600), from the committed corpora
fuzz: setup
	./scripts/fuzz.sh $(or $(FUZZ_SECONDS),600)
