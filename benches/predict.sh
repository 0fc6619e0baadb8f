#!/usr/bin/env bash
# `predict` benchmark (issue 12), release build. Trains (or takes from the cache) the fastText and
# frozen-MiniLM cells of experiments/tram.toml (real data only), exports both, then per run:
# - fastText: `synthcti predict` on one sentence (≈ load: read the folder, load the weights) and on
#   N sentences (TRAM single-label texts as a JSONL of one-line documents, repeated to N);
#   sentences/s after load = sentences / (t_N − t_1). Targets: load ≤ 0.5 s, ≥ 20,000 sentences/s.
# - frozen MiniLM: the same on the first M TRAM texts, beside the embedding throughput
#   `cargo bench --bench encoder -- 1 embed` measures on the same M texts (batch 32,
#   SYNTHCTI_BENCH_SENTENCES=M), in the same run. Target: predict ≥ 0.9× the embedding throughput.
# Usage: benches/predict.sh [runs] [N] [M]   (default 3 runs, N = 50,000, M = 5,089: all);
# prints every run, then medians and ratios.
set -u
cd "$(dirname "$0")/.."
runs="${1:-3}"
n="${2:-50000}"
m="${3:-5089}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
data="${SYNTHCTI_DATA_DIR:-../shared/data}"
# MINILM=0: the fastText half only. NO_BUILD=1: use the binaries already built.
minilm="${MINILM:-1}"
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release 2>&1 | tail -1
  [ "$minilm" = 1 ] && cargo bench --no-run --bench encoder 2>&1 | tail -1
fi
B="$CARGO_TARGET_DIR/release/synthcti"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cache="${SYNTHCTI_CACHE_DIR:-$W/cache}"
only=()
[ "$minilm" = 1 ] || only=(--set 'classifier=[{kind="fasttext"}]')
"$B" run experiments/tram.toml --set 'augment.kind=["none"]' "${only[@]}" --cache-dir "$cache" --out "$W/run" -q > /dev/null || { echo "run failed"; exit 1; }
ft=$(ls "$W/run/cells" | grep '^fasttext' | head -1)
mini=$(ls "$W/run/cells" | grep '^encoder-frozen' | head -1)
"$B" export "$W/run" "$ft" --to "$W/ft" --cache-dir "$cache" > /dev/null || exit 1
[ "$minilm" = 1 ] && { "$B" export "$W/run" "$mini" --to "$W/mini" --cache-dir "$cache" > /dev/null || exit 1; }
python3 - "$W" "$n" "$data" "$m" <<'PY'
import json, sys, itertools
w, n, data, m = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows = json.load(open(f"{data}/tram/single_label.json"))
texts = [r["text"].replace("\n", " ") for r in rows]
with open(f"{w}/one.jsonl", "w") as f:
    f.write(json.dumps({"text": "The actor used PowerShell to download a payload."}) + "\n")
with open(f"{w}/many.jsonl", "w") as f:
    for t in itertools.islice(itertools.cycle(texts), n):
        f.write(json.dumps({"text": t}) + "\n")
with open(f"{w}/tram.jsonl", "w") as f:
    for t in texts[:m]:
        f.write(json.dumps({"text": t}) + "\n")
PY
sentences() { "$B" predict "$1" "$2" --format jsonl --top-k 1 | python3 -c 'import sys, json; print(sum(len(json.loads(l)["sentences"]) for l in sys.stdin))'; }
n_many=$(sentences "$W/ft" "$W/many.jsonl")
n_tram=$(sentences "$W/ft" "$W/tram.jsonl")
echo "sentences after segmentation: many.jsonl $n_many, tram.jsonl $n_tram"
# Wall seconds of a command; its CPU seconds (user + sys) go to $W/cpu. On a loaded machine the
# wall time counts the waits for a core, so the CPU-time rate is printed beside it.
secs() { /usr/bin/time -f "%e %U %S" -o "$W/t" "$@" > /dev/null; python3 -c "w,u,s=open('$W/t').read().split()[-3:]; open('$W/cpu','w').write(str(float(u)+float(s))); print(w)"; }
out="$W/rows.jsonl"
for i in $(seq 1 "$runs"); do
  t1=$(secs "$B" predict "$W/ft" "$W/one.jsonl" --format jsonl)
  tn=$(secs "$B" predict "$W/ft" "$W/many.jsonl" --format jsonl --top-k 1); tn_cpu=$(cat "$W/cpu")
  m1=0; mn=1; emb=1; mn_cpu=1
  if [ "$minilm" = 1 ]; then
    m1=$(secs "$B" predict "$W/mini" "$W/one.jsonl" --format jsonl)
    mn=$(secs "$B" predict "$W/mini" "$W/tram.jsonl" --format jsonl --top-k 1); mn_cpu=$(cat "$W/cpu")
    emb=$(SYNTHCTI_BENCH_SENTENCES="$m" cargo bench --quiet --bench encoder -- 1 embed | grep '^{' | python3 -c 'import sys, json; print(json.loads(sys.stdin.readline())["sentences_per_s"])')
  fi
  python3 - "$i" "$t1" "$tn" "$m1" "$mn" "$emb" "$n_many" "$n_tram" "$tn_cpu" "$mn_cpu" "$minilm" <<'PY' | tee -a "$out"
import json, sys
i, t1, tn, m1, mn, emb, n_many, n_tram, tn_cpu, mn_cpu, minilm = sys.argv[1:]
t1, tn, m1, mn, emb, tn_cpu, mn_cpu = map(float, (t1, tn, m1, mn, emb, tn_cpu, mn_cpu))
row = {"run": int(i), "fasttext_load_s": t1, "fasttext_sentences_per_s": int(n_many) / (tn - t1),
       "fasttext_sentences_per_cpu_s": int(n_many) / tn_cpu}
if minilm == "1":
    row.update({"minilm_load_s": m1, "minilm_sentences_per_s": int(n_tram) / (mn - m1),
                "minilm_sentences_per_cpu_s": int(n_tram) / mn_cpu, "encoder_bench_sentences_per_s": emb})
print(json.dumps(row))
PY
done
python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda k: statistics.median(r[k] for r in rows)
print(f"medians over {sys.argv[2]} runs:")
print(f"  fastText predict: load {med('fasttext_load_s'):.3f} s (target <= 0.5), {med('fasttext_sentences_per_s'):.0f} sentences/s after load,"
      f" {med('fasttext_sentences_per_cpu_s'):.0f} sentences per CPU second (target >= 20000)")
if "minilm_sentences_per_s" in rows[0]:
    ratio = statistics.median(r["minilm_sentences_per_s"] / r["encoder_bench_sentences_per_s"] for r in rows)
    print(f"  MiniLM predict: load {med('minilm_load_s'):.3f} s, {med('minilm_sentences_per_s'):.1f} sentences/s after load;"
          f" encoder bench {med('encoder_bench_sentences_per_s'):.1f} sentences/s; ratio {ratio:.2f} (target >= 0.9)")
PY
