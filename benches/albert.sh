#!/usr/bin/env bash
# ALBERT-base forward on the CPU beside PyTorch (transformers' AlbertModel), 2 threads each: a
# random ALBERT with albert-base-v2's sizes (hidden 768, 12 passes through one shared layer, 12
# heads, embedding 128, intermediate 3072, gelu_new; the real weights are not reachable here and
# do not change the arithmetic), vocabulary and tokenizer.json of all-MiniLM-L6-v2 (WordPiece,
# 30,522) on both sides, the first N TRAM sentences in file order, batch 32, padding to the longest
# text of each batch, truncation at 128, mean pooling. Runs ours, the peer, ours again; prints
# sentences/s of each run, medians and the ratio.
# Usage: bash benches/albert.sh [RUNS] [N]   (default 3, 512; needs torch and transformers:
#        PYTHON=/path/to/venv/bin/python, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
n="${2:-512}"
py="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
data="${SYNTHCTI_DATA_DIR:-../shared/data}"
bash scripts/fetch-models.sh >/dev/null
"$py" -c "import torch, transformers" 2>/dev/null || "$py" -m pip install --quiet torch transformers safetensors
model="$CARGO_TARGET_DIR/bench-albert-base-random"
[ -f "$model/model.safetensors" ] || "$py" scripts/encoder_fixtures.py albert-base "$model" >/dev/null
export RAYON_NUM_THREADS=2 BENCH_ALBERT_DIR="$model" BENCH_SENTENCES="$n"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo bench --quiet --bench encoder -- "$runs" albert | grep '^{' >> "$out"
OMP_NUM_THREADS=2 "$py" benches/peer_torch_albert.py "$data" "$model" "$runs" "$n" >> "$out"
cargo bench --quiet --bench encoder -- "$runs" albert | grep '^{' >> "$out"
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ours = [x for r in rows if r["impl"].startswith("synthcti") for x in r["all"]]
peer = [x for r in rows if r["impl"].startswith("pytorch") for x in r["all"]]
name = [r["impl"] for r in rows if r["impl"].startswith("pytorch")][0]
n = rows[0]["sentences"]
print(f"ALBERT-base (random weights) embedding, {n} TRAM sentences, batch 32, 2 threads, sentences/s:")
print(f"  synthcti {' '.join(f'{x:.2f}' for x in ours)} (median {statistics.median(ours):.2f}, {len(ours)} runs)")
print(f"  {name} {' '.join(f'{x:.2f}' for x in peer)} (median {statistics.median(peer):.2f}, {len(peer)} runs)")
print(f"  ratio synthcti/pytorch {statistics.median(ours) / statistics.median(peer):.2f}")
PY
