#!/usr/bin/env bash
# TRAM multi-label with negatives (issue 12): synthcti's cells of experiments/tram-multi.toml
# (fastText, frozen MiniLM, linear; a `none` class and a validation threshold), then the peer —
# scikit-learn TF-IDF + one-vs-rest logistic regression — trained and scored on the split files
# that run wrote (RUN_DIR/split/*.jsonl), so both see identical train / validation / test rows.
# Prints one JSON line per model and a table: micro, macro, samples and per-document F1.
# Usage: bash benches/multilabel.sh   (release build; the MiniLM embeddings are cached)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release 2>&1 | tail -1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$CARGO_TARGET_DIR/release/synthcti" run experiments/tram-multi.toml --out "$W/run" -q > /dev/null
python3 benches/multilabel_peer.py "$W/run"
