#!/usr/bin/env bash
# Warm run of a manifest (issue 10 target: experiments/tram.toml, 36 cells, ≤ 5 s): everything is
# in the cache, so the run trains nothing; what is left is hashing inputs, reading the cached
# stages, writing the run folder and the report (bootstraps, per-class tables, figures).
# Binaries side by side, alternating, RUNS times each over the same warm cache: wall, user and
# sys seconds (GNU time) of each run, medians, and the load average before each run (the
# machine is shared: read the figures with it).
# Usage: bash benches/warm.sh CACHE_DIR [RUNS] [MANIFEST] [BINARY...]
#   CACHE_DIR: a cache a cold run of MANIFEST has filled.
#   RUNS: runs per binary (default 5); MANIFEST: default experiments/tram.toml;
#   BINARY: default the release build ($CARGO_TARGET_DIR/release/synthcti); give a second
#   (e.g. an older build) to compare.
#   SET (environment): one --set for every run, e.g.
#   SET='augment.kind=["none","oversample","attack-description"]' for a cache without the
#   synthetic arm.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${1:?usage: bash benches/warm.sh CACHE_DIR [RUNS] [MANIFEST] [BINARY...]}"
runs="${2:-5}"
manifest="${3:-experiments/tram.toml}"
shift $(( $# < 3 ? $# : 3 ))
bins=("$@")
if [ "${#bins[@]}" -eq 0 ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
  cargo build --release --quiet
  bins=("$CARGO_TARGET_DIR/release/synthcti")
fi
set_args=()
[ -n "${SET:-}" ] && set_args=(--set "$SET")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# One run of each first, unmeasured: the stat memo and the page cache settle.
for b in "${bins[@]}"; do
  "$b" run "$manifest" "${set_args[@]}" --cache-dir "$cache" --out "$work/settle" -q > /dev/null; rm -rf "$work/settle"
done
for i in $(seq 1 "$runs"); do
  for j in "${!bins[@]}"; do
    load="$(cut -d' ' -f1 /proc/loadavg)"
    if ! /usr/bin/time -f "%e %U %S" -o "$work/t" "${bins[$j]}" run "$manifest" "${set_args[@]}" --cache-dir "$cache" --out "$work/run-$j-$i" -q > /dev/null; then
      echo "warm.sh: run $i of ${bins[$j]} failed; its figures would not be a warm run's" >&2
      exit 1
    fi
    # A warm run trains nothing: every cell's stages come from the cache.
    if grep -q '"cached": *false' "$work/run-$j-$i/plan.json"; then
      echo "warm.sh: run $i of ${bins[$j]} computed stages; fill the cache with a cold run first" >&2
      exit 1
    fi
    read -r wall user sys < "$work/t"
    echo "$wall" >> "$work/wall.$j"; echo "$user $sys" | awk '{print $1 + $2}' >> "$work/cpu.$j"
    echo "{\"bench\":\"warm-run-once\",\"binary\":\"${bins[$j]}\",\"run\":$i,\"load1\":$load,\"wall_s\":$wall,\"user_s\":$user,\"sys_s\":$sys}"
    rm -rf "$work/run-$j-$i"
  done
done
for j in "${!bins[@]}"; do
  echo "{\"bench\":\"warm-run\",\"manifest\":\"$manifest\",\"set\":\"${SET:-}\",\"binary\":\"${bins[$j]}\",\"runs\":$runs,\"wall_median_s\":$(median < "$work/wall.$j"),\"cpu_median_s\":$(median < "$work/cpu.$j"),\"target_s\":5}"
done
