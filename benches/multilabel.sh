#!/usr/bin/env bash
# TRAM multi-label with negatives (issue 12): synthcti's cells of experiments/tram-multi.toml
# with both heads — a `none` class and independent sigmoids (fastText, frozen MiniLM, linear),
# each with its validation threshold — then the peer, scikit-learn
# TF-IDF + one-vs-rest logistic regression, trained and scored on the split files the runs wrote
# (RUN_DIR/split/*.jsonl, checked byte-identical), so all see identical train / validation / test
# rows. Prints one JSON line per model and a table: validation micro-F1 (the figure the default
# head is chosen by), micro, macro, samples and per-document F1 on test.
# Usage: bash benches/multilabel.sh   (release build; the MiniLM embeddings are cached)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release 2>&1 | tail -1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
BIN="$CARGO_TARGET_DIR/release/synthcti"
"$BIN" run experiments/tram-multi.toml --set data.multi_label_head=none-class --out "$W/none" -q > /dev/null
"$BIN" run experiments/tram-multi.toml --set data.multi_label_head=sigmoid --out "$W/sigmoid" -q > /dev/null
python3 benches/multilabel_peer.py "$W/none" "$W/sigmoid"
