#!/usr/bin/env bash
# Benchmarks for synthetic generation (the generation issue), on this machine:
#  - local generation speed with SmolLM2-135M-Instruct Q4_1, 2 threads: synthcti's in-process
#    llama.cpp (tokens/s over decoding, from every call of a cold tram.toml run) beside llama.cpp's
#    own llama-bench (token generation, `-p 0 -n 128 -t 2`), built from the same vendored llama.cpp
#    sources with the same CPU flags, run before and after;
#  - `synthcti run experiments/tram.toml` with the local provider: cold wall time (all target
#    techniques generated, both cells trained) and a warm rerun;
#  - macro-F1 baseline vs augmented over seeds (overall and over the target techniques).
# Usage: bash benches/generate.sh [RUNS] [SEEDS]   (RUNS warm reruns and llama-bench repetitions;
#        SEEDS training seeds for the F1 comparison, default "1,2,3")
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
seeds="${2:-1,2,3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
bash scripts/fetch-models.sh >/dev/null
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/synthcti"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# llama-bench from the llama.cpp sources llama-cpp-sys-2 vendors (cached in the target folder).
src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-*/llama.cpp | sort -V | tail -1)"
lb_dir="$CARGO_TARGET_DIR/llama-bench-$(basename "$(dirname "$src")")"
if [ ! -x "$lb_dir/bin/llama-bench" ]; then
  echo "building llama-bench from $src (once)…"
  cmake -S "$src" -B "$lb_dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF -DGGML_SSE42=ON \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON >/dev/null
  cmake --build "$lb_dir" --target llama-bench -j 2 >/dev/null
fi
peer() { "$lb_dir/bin/llama-bench" -m "$model" -p 0 -n 128 -t 2 -r "$runs" -o json 2>/dev/null \
  | python3 -c "import json,sys; r=json.load(sys.stdin)[0]; print(f\"{r['avg_ts']:.1f}\")"; }
peer_before="$(peer)"

cache="$work/cache"
/usr/bin/time -f "%e %M" -o "$work/t" "$bin" run experiments/tram.toml --cache-dir "$cache" --out "$work/cold" -q > /dev/null
read -r cold rss < "$work/t"
ours="$(python3 - "$cache" <<'PY'
import glob, json, statistics, sys
rows = [json.load(open(p)) for p in glob.glob(sys.argv[1] + "/entries/llm-call/*/answer.json")]
dec = [r["completion_tokens"] / r["decode_seconds"] for r in rows if r.get("decode_seconds")]
tot = sum(r["completion_tokens"] for r in rows)
wall = sum(r["seconds"] for r in rows)
print(f"{statistics.median(dec):.1f} {tot / sum(r['decode_seconds'] for r in rows):.1f} {tot / wall:.1f} {len(rows)} {tot}")
PY
)"
read -r ours_median ours_decode ours_total calls tokens <<< "$ours"
peer_after="$(peer)"
: > "$work/warm"
for i in $(seq 1 "$runs"); do
  /usr/bin/time -f "%e" -o "$work/t" "$bin" run experiments/tram.toml --cache-dir "$cache" --out "$work/warm-$i" -q > /dev/null
  cat "$work/t" >> "$work/warm"
done
"$bin" run experiments/tram.toml --cache-dir "$cache" --out "$work/seeds" -q --set "experiment.seeds=[$seeds]" > /dev/null

echo "== local generation, SmolLM2-135M-Instruct Q4_1, 2 threads"
echo "synthcti (in-process llama.cpp): $calls calls, $tokens tokens; decode $ours_decode tok/s (median per call $ours_median), end to end incl. prompt $ours_total tok/s"
echo "peer llama-bench tg128: $peer_before tok/s before, $peer_after tok/s after ($runs repetitions each)"
python3 -c "import sys; o=float(sys.argv[1]); p=(float(sys.argv[2])+float(sys.argv[3]))/2; print(f'ratio synthcti decode / llama-bench: {o/p:.2f}')" "$ours_decode" "$peer_before" "$peer_after"
echo "== experiments/tram.toml, local provider"
echo "cold run (generation + both cells) wall ${cold} s, peak RSS $(( rss / 1024 )) MiB; warm rerun wall $(median < "$work/warm") s (median of $runs)"
echo "== macro-F1 on TRAM test, seeds $seeds (fastText-style; augmented = + kept synthetic sentences)"
python3 - "$work/seeds/summary.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for aug in ("none", "synthetic"):
    r = [x for x in rows if x["augment"] == aug]
    m = [float(x["macro_f1"]) for x in r]; t = [float(x["target_macro_f1"]) for x in r]
    kept = r[0]["synthetic_kept"] if aug == "synthetic" else "-"
    print(f"{aug:>9}: macro-F1 {' '.join(f'{v:.4f}' for v in m)} (mean {statistics.mean(m):.4f}); "
          f"targets only {' '.join(f'{v:.4f}' for v in t)} (mean {statistics.mean(t):.4f}); synthetic kept {kept}")
PY
