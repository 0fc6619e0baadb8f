#!/usr/bin/env bash
# Cold generation time of experiments/tram.toml's replicate 0 (issue 11's "cold generation wall
# time at most half of today's"), three variants one after another in every round:
#  - shipped: `synthcti generate experiments/tram.toml --set experiment.replicates=1` (this build);
#  - plain:   the same build with issue 11's plain settings (no grammar, 5 sentences a call, one
#             call at a time, 256 tokens, no top-up);
#  - peer:    the code issue 11 was filed against (commit 62b3619, `synthcti run` on that commit's
#             own experiments/tram.toml, stopped after its generate stage), built once from a git
#             worktree into the target folder.
# Each variant starts from an empty stage cache. The time is the generate stage's: from its first
# log line ("generate …: N calls for …") to the last line of the generation (the filter's verdict
# after the top-up round; the peer's "calls: … made"), model load included. Prints one line per
# run and the medians and median ratios.
# Usage: bash benches/gentime.sh [ROUNDS]   (default 3; about 7 minutes a round on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
root="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$root/$CARGO_TARGET_DIR" ;; esac
export SYNTHCTI_DATA_DIR="${SYNTHCTI_DATA_DIR:-$(cd ../shared/data 2>/dev/null && pwd)}"
bash scripts/fetch-models.sh >/dev/null
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/synthcti"

peer_commit=62b3619
peer_tree="$CARGO_TARGET_DIR/peer-$peer_commit"
peer_bin="$CARGO_TARGET_DIR/peer-$peer_commit-target/release/synthcti"
if [ ! -x "$peer_bin" ]; then
  echo "building the peer, synthcti at $peer_commit (once, about 11 minutes)…"
  [ -d "$peer_tree" ] || git worktree add --detach "$peer_tree" "$peer_commit" >/dev/null
  (cd "$peer_tree" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/peer-$peer_commit-target" cargo build --release --quiet)
fi
ln -sfn "$root/models" "$peer_tree/models"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stamp() { while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N)" "$l"; done; }
plain='generator=[{name="smollm2",provider="local",model="models/SmolLM2-135M-Instruct.Q4_1.gguf",temperature=0.8,top_p=0.95,top_k=40,max_tokens=256,seed=0,threads=2,context=2048}]'

# One variant, cold; prints the generate stage's seconds.
one() {
  local v=$1 d="$work/$1-$2" start end
  mkdir -p "$d"
  case $v in
    shipped) SYNTHCTI_CACHE_DIR="$d/cache" "$bin" generate experiments/tram.toml \
               --set experiment.replicates=1 --out "$d/out.jsonl" 2>&1 | stamp >"$d/log" ;;
    plain) SYNTHCTI_CACHE_DIR="$d/cache" "$bin" generate experiments/tram.toml \
             --set experiment.replicates=1 --set augment.per_call=5 --set augment.top_up=0 \
             --set "$plain" --out "$d/out.jsonl" 2>&1 | stamp >"$d/log" ;;
    peer)
      # The peer has no `generate`: its run is stopped once the generate stage has logged.
      (cd "$peer_tree" && SYNTHCTI_CACHE_DIR="$d/cache" exec "$peer_bin" run experiments/tram.toml \
         --out "$d/results" 2>&1 | stamp >"$d/log") &
      local pid=$!
      until grep -q "calls: .* made" "$d/log" 2>/dev/null; do
        kill -0 $pid 2>/dev/null || break
        sleep 0.5
      done
      pkill -f "$peer_bin run" || true
      wait $pid 2>/dev/null || true ;;
  esac
  start=$(grep -m1 "calls for" "$d/log" | cut -d' ' -f1)
  end=$(grep -E "calls: .* made|^[0-9.]+ filter " "$d/log" | tail -1 | cut -d' ' -f1)
  if [ -z "$start" ] || [ -z "$end" ]; then
    echo "$v round $2 failed:" >&2
    tail -5 "$d/log" >&2
    exit 1
  fi
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
: >"$work/times"
for r in $(seq 1 "$rounds"); do
  s=$(one shipped "$r"); p=$(one plain "$r"); q=$(one peer "$r")
  echo "$r $s $p $q" >>"$work/times"
  awk -v r="$r" -v s="$s" -v p="$p" -v q="$q" 'BEGIN {
    printf "round %d: shipped %.1f s, plain %.1f s, peer %s %.1f s; shipped/plain %.2f, shipped/peer %.2f\n",
      r, s, p, "'"$peer_commit"'", q, s / p, s / q }'
done
echo "medians over $rounds rounds: shipped $(cut -d' ' -f2 "$work/times" | median) s," \
  "plain $(cut -d' ' -f3 "$work/times" | median) s, peer $(cut -d' ' -f4 "$work/times" | median) s;" \
  "shipped/plain $(awk '{printf "%.3f\n", $2 / $3}' "$work/times" | median)," \
  "shipped/peer $(awk '{printf "%.3f\n", $2 / $4}' "$work/times" | median)"
