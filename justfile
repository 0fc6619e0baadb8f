# synthcti recipes. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Run an experiment manifest (extra flags go to `synthcti run`).
run manifest="experiments/tram.toml" *flags="":
    cargo run --release -- run {{manifest}} {{flags}}

# Show every cell and stage key of a manifest, and what is cached.
plan manifest="experiments/tram.toml" *flags="":
    cargo run --release -- plan {{manifest}} {{flags}}

# The test suite (the same command CI runs).
test:
    cargo test

# Benchmarks: training time, warm rerun, peak memory and macro-F1 against scikit-learn on the same splits.
bench runs="5":
    bash benches/bench.sh {{runs}}

# Download the publishers' dataset files into ./data (or $SYNTHCTI_DATA_DIR).
data-pull:
    cargo run --release -- data pull

# Format, lint, test.
check:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
    cargo test
