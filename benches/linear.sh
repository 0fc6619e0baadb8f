#!/usr/bin/env bash
# The `linear` classifier beside its named peer, scikit-learn TF-IDF (word 1–2 + char_wb 2–5,
# sublinear tf) + LinearSVC (balanced), both trained on the same train + validation examples and
# scored on the same test split (the split files the synthcti run wrote), in the same script.
# Prints macro-F1 and training seconds of each (medians over RUNS runs on TRAM, one run on
# CTI-to-MITRE) and their ratios.
# Usage: bash benches/linear.sh [RUNS]   (default 5; BENCH_BIN to use a built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet
  BENCH_BIN="$CARGO_TARGET_DIR/release/synthcti"
fi
python3 -c "import sklearn" 2>/dev/null || pip install --quiet scikit-learn
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { # field CSV COLUMN → value of the first data row
  python3 -c "import csv,sys; print(next(csv.DictReader(open(sys.argv[1])))[sys.argv[2]])" "$1" "$2"
}

for manifest in benches/linear/tram.toml benches/linear/cti-to-mitre.toml; do
  name="$(basename "$manifest" .toml)"
  n="$runs"; [ "$name" = cti-to-mitre ] && n=1
  : > "$work/$name.train"; : > "$work/$name.peer"
  for i in $(seq 1 "$n"); do
    out="$work/$name-$i"
    "$BENCH_BIN" run "$manifest" --cache-dir "$work/cache-$name-$i" --out "$out" -q > /dev/null
    field "$out/summary.csv" train_seconds >> "$work/$name.train"
    python3 benches/peer_sklearn.py "$out" | grep '"tfidf-word-1-2+char-2-5+linearsvc"' >> "$work/$name.peer"
  done
  f1="$(field "$work/$name-1/summary.csv" macro_f1)"
  micro="$(field "$work/$name-1/summary.csv" micro_f1)"
  t="$(median < "$work/$name.train")"
  python3 - "$work/$name.peer" "$f1" "$micro" "$t" "$manifest" "$n" <<'PY'
import json, statistics, sys
peer = [json.loads(l) for l in open(sys.argv[1])]
f1, micro, t = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
pf1 = peer[0]["macro_f1"]; pmicro = peer[0]["micro_f1"]
pt = statistics.median(p["train_seconds"] for p in peer)
print(f"== {sys.argv[5]} ({sys.argv[6]} run(s); medians of training time)")
print(f"synthcti linear: macro-F1 {f1:.4f}  micro-F1 {micro:.4f}  training {t:.2f} s")
print(f"peer tfidf-word-1-2+char-2-5+linearsvc: macro-F1 {pf1:.4f}  micro-F1 {pmicro:.4f}  fit {pt:.2f} s")
print(f"synthcti/peer: macro-F1 {f1 / pf1:.3f}, training time {t / pt:.2f}")
PY
done
