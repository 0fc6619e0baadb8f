#!/usr/bin/env bash
# The Slurm executor against local runs, on this machine (release build):
#  1. wall time of a 16-cell fastText grid over the full TRAM single-label set (dim 16/32 ×
#     8 seeds, 3 epochs), each run on a cold cache: `--executor slurm` on a throw-away cluster of
#     two one-CPU nodes (scripts/slurm-test-cluster.sh), beside local `--jobs 1` and `--jobs 2`,
#     run side by side in the same loop (RUNS rounds; medians);
#  2. per-task overhead, submit → start → cache hit: the 16 tasks are submitted held
#     (`--hold`, `--detach`) on an empty cache, the cache is then filled by a local run, and the
#     jobs are released; each task finds its cell cached. Overhead per task = (release → last
#     result) × 2 nodes / 16 tasks; also the median in-process time of a task (a cache hit).
#
#   benches/slurm.sh [RUNS]      (default 3; needs root, slurm-wlm and munge)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
bin="$(cd "$CARGO_TARGET_DIR" && pwd)/release/synthcti"
work=$(mktemp -d /var/tmp/synthcti-bench-slurm.XXXXXX)
cluster="$work/cluster"
export SLURM_TEST_PORT_BASE=${SLURM_TEST_PORT_BASE:-7817}
trap 'bash scripts/slurm-test-cluster.sh stop "$cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
eval "$(bash scripts/slurm-test-cluster.sh start "$cluster")"
export SLURM_CONF
data="${SYNTHCTI_DATA_DIR:-$(cd ../shared/data && pwd)}"

cat > "$work/grid.toml" <<EOF
[experiment]
name = "bench-slurm"
seeds = [1, 2, 3, 4, 5, 6, 7, 8]
output_dir = "$work/results"
[data]
dir = "$data"
kind = "tram-single"
attack = "none"
[split]
seed = 42
[[classifier]]
kind = "fasttext"
dim = [16, 32]
maxn = 0
minn = 0
buckets = 65536
epochs = 3
[executor.slurm]
cpus = 1
EOF

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A times
for r in $(seq "$runs"); do
  for mode in slurm jobs1 jobs2; do
    cache="$work/cache-$mode-$r"
    out="$work/results/$mode-$r"
    case $mode in
      slurm) args=(--executor slurm) ;;
      jobs1) args=(--jobs 1) ;;
      jobs2) args=(--jobs 2) ;;
    esac
    t0=$(now)
    "$bin" run "$work/grid.toml" --cache-dir "$cache" --out "$out" -q "${args[@]}" >/dev/null
    t1=$(now)
    times[$mode]+="$(echo "$t1 - $t0" | bc) "
    echo "round $r $mode: $(echo "$t1 - $t0" | bc) s"
    rm -rf "$cache"
  done
done
# Same numbers: Slurm's summary.csv against the local one (timings aside).
cut -d, -f1-11 "$work/results/slurm-1/summary.csv" > "$work/a.csv"
cut -d, -f1-11 "$work/results/jobs1-1/summary.csv" > "$work/b.csv"
cmp -s "$work/a.csv" "$work/b.csv" && same=yes || same=NO

# Per-task overhead: held array on an empty cache, cache filled locally, then released.
over=()
inproc=()
for r in $(seq "$runs"); do
  cache="$work/cache-hold-$r"
  out="$work/results/hold-$r"
  "$bin" run "$work/grid.toml" --cache-dir "$cache" --out "$out" -q --executor slurm --detach \
    --set 'executor.slurm.sbatch_args=["--hold"]' >/dev/null
  "$bin" run "$work/grid.toml" --cache-dir "$cache" --out "$work/results/fill-$r" -q --jobs 2 >/dev/null
  job=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['jobs'][0]['job_id'])" "$out/slurm/tasks.json")
  t0=$(now)
  scontrol release "$job"
  while [ "$(ls "$out/slurm/results" | grep -c '\.json$')" -lt 16 ]; do sleep 0.05; done
  t1=$(now)
  o=$(echo "($t1 - $t0) * 2 / 16" | bc -l)
  over+=("$o")
  inproc+=("$(python3 -c "
import json,glob,statistics,sys
r=[json.load(open(p)) for p in glob.glob(sys.argv[1]+'/slurm/results/*.json')]
assert all(x['ok'] and not x['trained'] for x in r), 'a task trained: not a cache hit'
print(statistics.median(x['seconds'] for x in r))" "$out")")
  "$bin" report "$out" >/dev/null
  printf 'round %s: overhead per task %.2f s\n' "$r" "$o"
  rm -rf "$cache"
done

m_slurm=$(tr ' ' '\n' <<<"${times[slurm]}" | grep . | median)
m_j1=$(tr ' ' '\n' <<<"${times[jobs1]}" | grep . | median)
m_j2=$(tr ' ' '\n' <<<"${times[jobs2]}" | grep . | median)
m_over=$(printf '%s\n' "${over[@]}" | median)
m_in=$(printf '%s\n' "${inproc[@]}" | median)
echo
echo "16-cell fastText grid (TRAM single-label, cold cache), median of $runs rounds on $(nproc) cores:"
printf '  slurm (2 nodes x 1 CPU)  %7.1f s\n' "$m_slurm"
printf '  local --jobs 1           %7.1f s   (slurm / jobs1 = %.2f)\n' "$m_j1" "$(echo "$m_slurm / $m_j1" | bc -l)"
printf '  local --jobs 2           %7.1f s   (slurm / jobs2 = %.2f)\n' "$m_j2" "$(echo "$m_slurm / $m_j2" | bc -l)"
echo "  summary.csv numbers equal to local: $same"
printf 'per-task overhead, submit -> start -> cache hit: %.2f s (target <= 2 s); in-process time of a hit %.2f s\n' "$m_over" "$m_in"
