#!/usr/bin/env bash
# Benchmarks for the foundation issue, each beside its peer, on this machine:
#  - cold `synthcti run` of experiments/tram.toml: wall time, training time, peak memory (RSS)
#  - warm rerun of the same manifest (everything cached): wall time
#  - macro-F1 on TRAM and CTI-to-MITRE, beside scikit-learn TF-IDF + LinearSVC on the same split
# Usage: bash benches/bench.sh [RUNS]   (medians over RUNS cold and warm runs; default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/synthcti"
python3 -c "import sklearn" 2>/dev/null || pip install --quiet scikit-learn
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { # field CSV COLUMN → value of the first data row
  python3 -c "import csv,sys; print(next(csv.DictReader(open(sys.argv[1])))[sys.argv[2]])" "$1" "$2"
}

for manifest in experiments/tram.toml experiments/cti-to-mitre.toml; do
  name="$(basename "$manifest" .toml)"
  : > "$work/$name.cold" ; : > "$work/$name.warm" ; : > "$work/$name.rss" ; : > "$work/$name.train"
  n="$runs"; [ "$name" = cti-to-mitre ] && n=1
  for i in $(seq 1 "$n"); do
    cache="$work/cache-$name-$i"
    /usr/bin/time -f "%e %M" -o "$work/t" "$bin" run "$manifest" --cache-dir "$cache" --out "$work/$name-cold-$i" -q > /dev/null
    read -r wall rss < "$work/t"; echo "$wall" >> "$work/$name.cold"; echo "$rss" >> "$work/$name.rss"
    field "$work/$name-cold-$i/summary.csv" train_seconds >> "$work/$name.train"
    /usr/bin/time -f "%e %M" -o "$work/t" "$bin" run "$manifest" --cache-dir "$cache" --out "$work/$name-warm-$i" -q > /dev/null
    read -r wall _ < "$work/t"; echo "$wall" >> "$work/$name.warm"
  done
  f1="$(field "$work/$name-cold-1/summary.csv" macro_f1)"
  micro="$(field "$work/$name-cold-1/summary.csv" micro_f1)"
  echo "== $manifest ($n run(s); medians)"
  echo "synthcti fasttext: macro-F1 $f1  micro-F1 $micro"
  echo "  cold run wall $(median < "$work/$name.cold") s, training $(median < "$work/$name.train") s, peak RSS $(( $(median < "$work/$name.rss" | cut -d. -f1) / 1024 )) MiB"
  echo "  warm rerun wall $(median < "$work/$name.warm") s"
  python3 benches/peer_sklearn.py "$work/$name-cold-1" | while read -r line; do
    python3 - "$line" "$f1" "$(median < "$work/$name.train")" <<'PY'
import json, sys
p = json.loads(sys.argv[1]); f1 = float(sys.argv[2]); t = float(sys.argv[3])
print(f"peer {p['peer']}: macro-F1 {p['macro_f1']:.4f} micro-F1 {p['micro_f1']:.4f} fit {p['train_seconds']:.2f} s"
      f"  | synthcti/peer macro-F1 ratio {f1 / p['macro_f1']:.3f}, training time ratio {t / p['train_seconds']:.2f}")
PY
  done
done
