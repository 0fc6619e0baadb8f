#!/usr/bin/env bash
# Encoder benchmarks beside PyTorch 2.9 on the CPU (2 threads), same model, same sentences:
# MiniLM-L6 embedding throughput (5,089 TRAM sentences, batch 32, dynamic padding) and one
# fine-tuning step (batch 32). Runs ours, then the peer, then ours again; medians and ratios.
# Usage: bash benches/encoder.sh [RUNS]      (needs `pip install torch==2.9.* transformers`)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
data="${SYNTHCTI_DATA_DIR:-../shared/data}"
bash scripts/fetch-models.sh >/dev/null
python3 -c "import torch, transformers" 2>/dev/null || pip install --quiet "torch==2.9.*" transformers
export RAYON_NUM_THREADS=2
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo bench --quiet --bench encoder -- "$runs" | grep '^{' >> "$out"
OMP_NUM_THREADS=2 python3 benches/peer_torch.py "$data" "$runs" >> "$out"
cargo bench --quiet --bench encoder -- "$runs" | grep '^{' >> "$out"
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pick(impl, what, key):
    return [r[key] for r in rows if r["impl"].startswith(impl) and r["what"] == what]
ours_e, peer_e = pick("synthcti", "embed", "sentences_per_s"), pick("pytorch", "embed", "sentences_per_s")
ours_s, peer_s = pick("synthcti", "finetune_step", "seconds_per_step"), pick("pytorch", "finetune_step", "seconds_per_step")
peer = [r for r in rows if r["impl"].startswith("pytorch")][0]["impl"]
print(f"embedding, sentences/s: synthcti {' '.join(f'{x:.1f}' for x in ours_e)} | {peer} {peer_e[0]:.1f}"
      f" | ratio {statistics.median(ours_e) / peer_e[0]:.2f}")
print(f"fine-tuning step, s: synthcti {' '.join(f'{x:.3f}' for x in ours_s)} | {peer} {peer_s[0]:.3f}"
      f" | speed ratio {peer_s[0] / statistics.median(ours_s):.2f}")
PY
