#!/usr/bin/env bash
# CLI latency benchmark (issue 15): `synthcti --help`, `plan` and `runs` on a warm cache, target
# <= 50 ms each. Release build. Warm = the OS file cache is hot, and the synthcti cache holds
# what a previous run of experiments/tram.toml left: its stage entries and the stat memo of its
# big inputs (dataset, ATT&CK bundle, MiniLM, SmolLM2 GGUF), so `plan` hashes none of them again.
#
# Usage: benches/cli.sh [runs]   (default 20). Prints, per command, the median and min of `runs`
# wall times in ms, beside `/bin/true` (the cost of starting any process here) and, when
# BASE=/path/to/another/synthcti is set, the same command of that binary (e.g. a build of main).
# Uses hyperfine when it is installed (`cargo install hyperfine` or `apt-get install hyperfine`),
# else a shell loop with `date +%s%N`.
set -u
cd "$(dirname "$0")/.."
runs="${1:-20}"
cargo build --release 2>&1 | tail -1
B="$(pwd)/${CARGO_TARGET_DIR:-target}/release/synthcti"
[ -x "$B" ] || B="${CARGO_TARGET_DIR:-target}/release/synthcti"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export SYNTHCTI_CACHE_DIR="$W/cache"

# Warm: one cold run of experiments/tram.toml (about 4 minutes on 2 cores: it is what makes the
# cache warm for its `plan`), and three smoke runs for `runs` to list.
(cd "$W" && "$B" run "$OLDPWD/experiments/tram.toml" -q > /dev/null 2>&1) \
  || echo "warning: the warm-up run of tram.toml failed (models/ missing? run \`just models\`)"
for i in 1 2 3; do
  (cd "$W" && "$B" run "$OLDPWD/experiments/smoke.toml" -q > /dev/null 2>&1) || echo "warning: smoke run $i failed"
done

# median and min (ms) of `runs` timings of a command
measure() {
  local name="$1"; shift
  local ts=()
  "$@" > /dev/null 2>&1   # one more warm-up
  for _ in $(seq 1 "$runs"); do
    local s e
    s=$(date +%s%N); "$@" > /dev/null 2>&1; e=$(date +%s%N)
    ts+=($(( (e - s) / 1000 )))
  done
  printf '%s\n' "${ts[@]}" | sort -n | awk -v name="$name" -v n="$runs" '
    { v[NR] = $1 }
    END { med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2;
          printf "%-34s median %7.1f ms  min %7.1f ms  (%d runs)\n", name, med / 1000, v[1] / 1000, n }'
}

bench() {
  local name="$1"; shift
  if command -v hyperfine > /dev/null; then
    hyperfine -N --warmup 2 --runs "$runs" --export-json "$W/h.json" "$*" > /dev/null 2>&1
    python3 -c "import json,sys; r=json.load(open('$W/h.json'))['results'][0]; print('%-34s median %7.1f ms  min %7.1f ms  (%d runs, hyperfine)' % ('$name', r['median']*1e3, r['min']*1e3, len(r['times'])))"
  else
    measure "$name" "$@"
  fi
}

echo "== synthcti CLI latency, warm cache ($(nproc) cores)"
bench "/bin/true (process floor)" /bin/true
for bin in "$B" ${BASE:-}; do
  tag=$([ "$bin" = "$B" ] && echo "" || echo " [BASE]")
  bench "--help$tag" "$bin" --help
  bench "plan smoke.toml$tag" "$bin" plan experiments/smoke.toml
  bench "plan tram.toml$tag" "$bin" plan experiments/tram.toml
  bench "runs$tag" "$bin" runs --results "$W/results"
done
