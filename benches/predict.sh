#!/usr/bin/env bash
# `predict` benchmark (issue 12): a fastText cell of experiments/tram.toml exported, then
# `synthcti predict` on one sentence (≈ load time: read the folder, load the weights) and on N
# sentences (TRAM single-label texts as a JSONL of one-line documents, repeated to N);
# sentences/s after load = N / (t_N − t_1). Release build. Targets: load ≤ 0.5 s, ≥ 20,000
# sentences/s. Usage: benches/predict.sh [runs] [N]   (default 5 runs, N = 50,000; take medians).
set -u
cd "$(dirname "$0")/.."
runs="${1:-5}"
n="${2:-50000}"
cargo build --release 2>&1 | tail -1
B="${CARGO_TARGET_DIR:-target}/release/synthcti"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$B" run experiments/tram.toml --set 'augment.kind=["none"]' --cache-dir "${SYNTHCTI_CACHE_DIR:-$W/cache}" --out "$W/run" -q > /dev/null || { echo "run failed"; exit 1; }
cell=$(ls "$W/run/cells" | grep '^fasttext' | head -1)
"$B" export "$W/run" "$cell" --to "$W/model" --cache-dir "${SYNTHCTI_CACHE_DIR:-$W/cache}" || exit 1
python3 - "$W" "$n" "${SYNTHCTI_DATA_DIR:-../shared/data}" <<'PY'
import json, sys, itertools
w, n, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = json.load(open(f"{data}/tram/single_label.json"))
texts = [r["text"].replace("\n", " ") for r in rows]
with open(f"{w}/one.jsonl", "w") as f:
    f.write(json.dumps({"text": "The actor used PowerShell to download a payload."}) + "\n")
with open(f"{w}/many.jsonl", "w") as f:
    for t in itertools.islice(itertools.cycle(texts), n):
        f.write(json.dumps({"text": t}) + "\n")
PY
count=$("$B" predict "$W/model" "$W/many.jsonl" --format jsonl --top-k 1 | python3 -c 'import sys, json; print(sum(len(json.loads(l)["sentences"]) for l in sys.stdin))')
echo "sentences in many.jsonl after segmentation: $count"
for i in $(seq 1 "$runs"); do
  s=$(date +%s.%N); "$B" predict "$W/model" "$W/one.jsonl" --format jsonl > /dev/null; e=$(date +%s.%N)
  s2=$(date +%s.%N); "$B" predict "$W/model" "$W/many.jsonl" --format jsonl --top-k 1 > /dev/null; e2=$(date +%s.%N)
  python3 -c "t1=$e-$s; tn=$e2-$s2; print(f'run$i load_s {t1:.3f} many_s {tn:.3f} sentences_per_s {$count/(tn-t1):.0f}')"
done
