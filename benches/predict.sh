#!/usr/bin/env bash
# `predict` benchmark (issue 12), release build. Trains (or takes from the cache) the fastText and
# frozen-MiniLM cells of experiments/tram.toml (real data only), exports both, then per run:
# - fastText: `synthcti predict` on one sentence (≈ load: read the folder, load the weights) and on
#   N sentences (TRAM single-label texts as a JSONL of one-line documents, repeated to N);
#   sentences/s after load = sentences / (t_N − t_1). Targets: load ≤ 0.5 s, ≥ 20,000 sentences/s.
# - frozen MiniLM: the same on the 5,089 TRAM texts once, beside the embedding throughput
#   `cargo bench --bench encoder -- 1 embed` measures on the same texts (batch 32), in the same
#   run. Target: predict ≥ 0.9× the embedding throughput.
# Usage: benches/predict.sh [runs] [N]   (default 3 runs, N = 50,000); prints every run, then
# medians and ratios.
set -u
cd "$(dirname "$0")/.."
runs="${1:-3}"
n="${2:-50000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
data="${SYNTHCTI_DATA_DIR:-../shared/data}"
cargo build --release 2>&1 | tail -1
cargo bench --no-run --bench encoder 2>&1 | tail -1
B="$CARGO_TARGET_DIR/release/synthcti"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cache="${SYNTHCTI_CACHE_DIR:-$W/cache}"
"$B" run experiments/tram.toml --set 'augment.kind=["none"]' --cache-dir "$cache" --out "$W/run" -q > /dev/null || { echo "run failed"; exit 1; }
ft=$(ls "$W/run/cells" | grep '^fasttext' | head -1)
mini=$(ls "$W/run/cells" | grep '^encoder-frozen' | head -1)
"$B" export "$W/run" "$ft" --to "$W/ft" --cache-dir "$cache" > /dev/null || exit 1
"$B" export "$W/run" "$mini" --to "$W/mini" --cache-dir "$cache" > /dev/null || exit 1
python3 - "$W" "$n" "$data" <<'PY'
import json, sys, itertools
w, n, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = json.load(open(f"{data}/tram/single_label.json"))
texts = [r["text"].replace("\n", " ") for r in rows]
with open(f"{w}/one.jsonl", "w") as f:
    f.write(json.dumps({"text": "The actor used PowerShell to download a payload."}) + "\n")
with open(f"{w}/many.jsonl", "w") as f:
    for t in itertools.islice(itertools.cycle(texts), n):
        f.write(json.dumps({"text": t}) + "\n")
with open(f"{w}/tram.jsonl", "w") as f:
    for t in texts:
        f.write(json.dumps({"text": t}) + "\n")
PY
sentences() { "$B" predict "$1" "$2" --format jsonl --top-k 1 | python3 -c 'import sys, json; print(sum(len(json.loads(l)["sentences"]) for l in sys.stdin))'; }
n_many=$(sentences "$W/ft" "$W/many.jsonl")
n_tram=$(sentences "$W/ft" "$W/tram.jsonl")
echo "sentences after segmentation: many.jsonl $n_many, tram.jsonl $n_tram"
secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); python3 -c "print($e - $s)"; }
out="$W/rows.jsonl"
for i in $(seq 1 "$runs"); do
  t1=$(secs "$B" predict "$W/ft" "$W/one.jsonl" --format jsonl)
  tn=$(secs "$B" predict "$W/ft" "$W/many.jsonl" --format jsonl --top-k 1)
  m1=$(secs "$B" predict "$W/mini" "$W/one.jsonl" --format jsonl)
  mn=$(secs "$B" predict "$W/mini" "$W/tram.jsonl" --format jsonl --top-k 1)
  emb=$(cargo bench --quiet --bench encoder -- 1 embed | grep '^{' | python3 -c 'import sys, json; print(json.loads(sys.stdin.readline())["sentences_per_s"])')
  python3 - "$i" "$t1" "$tn" "$m1" "$mn" "$emb" "$n_many" "$n_tram" <<'PY' | tee -a "$out"
import json, sys
i, t1, tn, m1, mn, emb, n_many, n_tram = sys.argv[1:]
t1, tn, m1, mn, emb = map(float, (t1, tn, m1, mn, emb))
print(json.dumps({"run": int(i), "fasttext_load_s": t1, "fasttext_sentences_per_s": int(n_many) / (tn - t1),
                  "minilm_load_s": m1, "minilm_sentences_per_s": int(n_tram) / (mn - m1),
                  "encoder_bench_sentences_per_s": emb}))
PY
done
python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda k: statistics.median(r[k] for r in rows)
ratio = statistics.median(r["minilm_sentences_per_s"] / r["encoder_bench_sentences_per_s"] for r in rows)
print(f"medians over {sys.argv[2]} runs:")
print(f"  fastText predict: load {med('fasttext_load_s'):.3f} s (target <= 0.5), {med('fasttext_sentences_per_s'):.0f} sentences/s after load (target >= 20000)")
print(f"  MiniLM predict: load {med('minilm_load_s'):.3f} s, {med('minilm_sentences_per_s'):.1f} sentences/s after load;"
      f" encoder bench {med('encoder_bench_sentences_per_s'):.1f} sentences/s; ratio {ratio:.2f} (target >= 0.9)")
PY
