#!/usr/bin/env bash
# A throw-away Slurm cluster on this host, for the tests and the benchmark:
# slurmctld plus two slurmd (nodes n1 and n2, one CPU each, both on localhost with their own
# port), no cgroups, no accounting database; munged with a key of its own. Everything lives
# under DIR (config, state, spool, logs, pid files, munge socket).
#
#   scripts/slurm-test-cluster.sh start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-test-cluster.sh stop DIR
#   SLURM_TEST_OWNER=PID scripts/slurm-test-cluster.sh start DIR   # stopped when PID exits
#
# Needs root (slurmd runs jobs as their submitter) and Debian's slurm-wlm and munge packages.
# Ports: 6817 (slurmctld), 6818/6819 (slurmd); override with SLURM_TEST_PORT_BASE.
set -euo pipefail

cmd=${1:?usage: $0 start|stop|status DIR}
dir=${2:?usage: $0 start|stop|status DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
base=${SLURM_TEST_PORT_BASE:-6817}
export SLURM_CONF="$dir/slurm.conf"
sock="$dir/munge/munge.socket"

stop_pid() { # kill the daemon whose pid file is $1, and wait for it
  local f=$1
  [[ -f $f ]] || return 0
  local pid; pid=$(cat "$f" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

case $cmd in
start)
  for b in munged slurmctld slurmd sinfo sbatch; do
    command -v "$b" >/dev/null || PATH="$PATH:/usr/sbin" command -v "$b" >/dev/null || {
      echo "slurm-test-cluster: $b not found; apt-get install -y slurm-wlm munge" >&2; exit 3; }
  done
  export PATH="$PATH:/usr/sbin"
  if [[ -f $dir/slurmctld.pid ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    echo "export SLURM_CONF=$SLURM_CONF"; exit 0   # already running: reuse it
  fi
  mkdir -p "$dir"/{state,spool/n1,spool/n2,log,munge}
  chmod 700 "$dir/munge"
  if [[ ! -f $dir/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" 2>/dev/null
    chmod 400 "$dir/munge/munge.key"
  fi
  cat > "$SLURM_CONF" <<CONF
ClusterName=synthcti-test
SlurmctldHost=localhost
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=30
KillWait=2
SchedulerParameters=sched_interval=1,bf_interval=1
MessageTimeout=10
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((base + 1)) CPUs=1 RealMemory=2000 State=UNKNOWN
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((base + 2)) CPUs=1 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
  munged --socket="$sock" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" --force
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF" -N n1
  slurmd -f "$SLURM_CONF" -N n2
  for _ in $(seq 150); do
    idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2=="idle"' | wc -l)
    if [[ $idle -eq 2 ]]; then
      if [[ -n ${SLURM_TEST_OWNER:-} ]]; then
        # A watcher stops the cluster when its owner (a test binary) exits, however it exits.
        setsid bash -c "while kill -0 $SLURM_TEST_OWNER 2>/dev/null; do sleep 1; done; '$0' stop '$dir'" \
          </dev/null >/dev/null 2>&1 &
      fi
      echo "export SLURM_CONF=$SLURM_CONF"; exit 0
    fi
    sleep 0.2
  done
  echo "slurm-test-cluster: nodes did not become idle in 30 s; see $dir/log" >&2
  sinfo -N >&2 || true
  exit 1
  ;;
stop)
  stop_pid "$dir/slurmd-n1.pid"
  stop_pid "$dir/slurmd-n2.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munge/munged.pid"
  ;;
status)
  sinfo -N -o '%N %t %c' ;;
*) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac
