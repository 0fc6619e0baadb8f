#!/usr/bin/env bash
# Core runner benchmark (issue 9): experiments/tram.toml cold, warm reruns and `plan`, then
# --jobs 1 beside --jobs 2 with the generation cached (train and evaluate entries removed from a
# copy of the cache for each run), checking that every cell's predictions.jsonl is identical.
# Release build. Usage: benches/core.sh [rounds]   (default 2; each round = one --jobs 1 and one
# --jobs 2 run). Prints wall seconds and peak RSS (KB) per run; take medians over the rounds.
set -u
cd "$(dirname "$0")/.."
rounds="${1:-2}"
cargo build --release 2>&1 | tail -1
B="${CARGO_TARGET_DIR:-target}/release/synthcti"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
t() { /usr/bin/time -f "$1 wall_s %e peak_rss_kb %M" "${@:2}" > /dev/null 2> "$W/time.err"; local rc=$?; tail -1 "$W/time.err"; return $rc; }
t cold "$B" run experiments/tram.toml --cache-dir "$W/cache" --out "$W/cold" -q || { echo "cold run failed"; exit 1; }
for i in 1 2 3 4 5; do t "warm$i" "$B" run experiments/tram.toml --cache-dir "$W/cache" --out "$W/warm$i" -q; done
for i in 1 2 3; do t "plan$i" "$B" plan experiments/tram.toml --cache-dir "$W/cache"; done
for r in $(seq 1 "$rounds"); do
  for j in 1 2; do
    rm -rf "$W/c$j"; cp -a "$W/cache" "$W/c$j"; rm -rf "$W/c$j/entries/train" "$W/c$j/entries/evaluate"
    t "round$r jobs$j" "$B" run experiments/tram.toml --cache-dir "$W/c$j" --out "$W/r$r-j$j" --jobs "$j" -q
  done
  for c in "$W/r$r-j1"/cells/*; do
    n=$(basename "$c")
    if cmp -s "$c/predictions.jsonl" "$W/r$r-j2/cells/$n/predictions.jsonl"; then echo "round$r identical $n"; else echo "round$r DIFFER $n"; fi
  done
done
