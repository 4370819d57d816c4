#!/usr/bin/env bash
# A real one-node Slurm cluster for the tests: this host is the controller and the only compute node.
#
#   tests/cluster/slurm.sh start    install slurmctld/slurmd/munge when absent (Debian packages),
#                                   write the configuration, start munged, slurmctld and slurmd,
#                                   wait until the node is idle, print the environment to use
#   tests/cluster/slurm.sh env      the environment lines (SLURM_CONF=...), for `eval`/`source`
#   tests/cluster/slurm.sh status   0 when the cluster answers, else 1
#   tests/cluster/slurm.sh stop     stop the daemons (the state folder stays, for the logs)
#
# Everything it writes lies in one state folder, $SCRIBMED_SLURM_STATE (default
# /tmp/scribmed-slurm): configuration, munge key and socket, controller state, node spool, logs,
# pid files. It touches nothing else but the packages it installs; `stop` ends every process whose
# environment names this cluster's configuration (daemons, step daemons, jobs). Starting an already running
# cluster and stopping a stopped one do nothing. The daemons run as root (SlurmUser=root), as
# slurmd must to start jobs as their user; without root (or password-less sudo) it exits 3 with
# the reason. Plugins that need neither cgroups nor accounting: proctrack/linuxproc, task/none,
# accounting_storage/none. Exit 3 means "cannot start here" (the tests skip with the message).
set -euo pipefail

STATE="${SCRIBMED_SLURM_STATE:-/tmp/scribmed-slurm}"
CONF="$STATE/etc/slurm.conf"
SOCKET="$STATE/munge/munge.socket.2"
PORT="${SCRIBMED_SLURM_PORT:-16817}"  # slurmctld; slurmd listens on the next port
PACKAGES=(slurmctld slurmd slurm-client munge)

cannot() { echo "slurm.sh: cannot start a cluster here: $*" >&2; exit 3; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else cannot "needs root or password-less sudo to run $1"; fi
}

install_packages() {
  local missing=0 tool
  for tool in slurmctld slurmd sbatch munged mungekey; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing=1
  done
  [ "$missing" = 0 ] && return 0
  command -v apt-get >/dev/null || cannot "Slurm is not installed and apt-get is absent (install ${PACKAGES[*]})"
  echo "slurm.sh: installing ${PACKAGES[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$STATE/apt.log" 2>&1 \
    || { as_root apt-get update -q >>"$STATE/apt.log" 2>&1 \
         && as_root apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$STATE/apt.log" 2>&1; } \
    || cannot "apt-get install ${PACKAGES[*]} failed (see $STATE/apt.log)"
}

write_config() {
  local host cpus mem_mb
  host="$(hostname -s)"
  cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"  # nproc obeys OMP_NUM_THREADS (1 under the tests' workers)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))  # leave the OS 512 MB
  mkdir -p "$STATE/etc" "$STATE/ctld" "$STATE/spool" "$STATE/log" "$STATE/run"
  cat >"$CONF.tmp" <<EOF
# written by tests/cluster/slurm.sh: a one-node cluster, state under $STATE
ClusterName=scribmed
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
KillWait=2
MinJobAge=3600
SchedulerParameters=sched_interval=1,bf_interval=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  mkdir -p "$STATE/munge"
  chmod 700 "$STATE/munge"
  [ -s "$STATE/munge/munge.key" ] || /usr/sbin/mungekey --create --keyfile="$STATE/munge/munge.key" 2>/dev/null \
    || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  chmod 600 "$STATE/munge/munge.key"
  if [ -S "$SOCKET" ] && munge --socket="$SOCKET" -n </dev/null >/dev/null 2>&1; then return 0; fi
  as_root /usr/sbin/munged --force --socket="$SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" \
    || cannot "munged did not start (see $STATE/log/munged.log)"
}

running() {  # the pid file's process is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

answers() {
  SLURM_CONF="$CONF" scontrol ping 2>/dev/null | grep -q "is UP"
}

wait_idle() {
  local i state
  for i in $(seq 1 120); do
    state="$(SLURM_CONF="$CONF" sinfo -h -N -o %t 2>/dev/null || true)"
    case "$state" in idle*|mix*|alloc*) return 0 ;; esac
    if [ "$state" = "down" ] || [ "$state" = "down*" ] || [ "$state" = "drain" ]; then
      SLURM_CONF="$CONF" scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    fi
    sleep 0.5
  done
  cannot "the node did not become idle in 60 s (sinfo: ${state:-no answer}; logs in $STATE/log)"
}

start() {
  mkdir -p "$STATE"
  install_packages
  write_config
  start_munge
  running "$STATE/run/slurmctld.pid" || as_root env SLURM_CONF="$CONF" /usr/sbin/slurmctld -f "$CONF" \
    || cannot "slurmctld did not start (see $STATE/log/slurmctld.log)"
  running "$STATE/run/slurmd.pid" || as_root env SLURM_CONF="$CONF" /usr/sbin/slurmd -f "$CONF" \
    || cannot "slurmd did not start (see $STATE/log/slurmd.log)"
  wait_idle
  echo "slurm.sh: one-node cluster up ($(SLURM_CONF="$CONF" sinfo -h -o '%P %D %c CPUs %m MB %t'); $(SLURM_CONF="$CONF" sinfo -V))" >&2
  env_lines
}

env_lines() {
  echo "export SLURM_CONF=$CONF"
}

cluster_pids() {  # this cluster's daemons and step daemons, and its jobs' processes (found by their environment)
  local dir env
  for dir in /proc/[0-9]*; do
    env="$(tr '\0' '\n' 2>/dev/null <"$dir/environ")" || continue
    grep -qx "SLURM_CONF=$CONF" <<<"$env" || continue
    case "$(cat "$dir/comm" 2>/dev/null)" in
      slurmd|slurmctld|slurmstepd) echo "${dir#/proc/}" ;;
      *) grep -q "^SLURM_JOB_ID=" <<<"$env" && echo "${dir#/proc/}" ;;
    esac
  done
  return 0
}

stop() {
  local pidfile pids
  if answers; then SLURM_CONF="$CONF" scancel --quiet --user="$(id -un)" 2>/dev/null || true; fi
  for pidfile in "$STATE/run/slurmd.pid" "$STATE/run/slurmctld.pid"; do
    running "$pidfile" && as_root kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for i in $(seq 1 40); do
    pids="$(cluster_pids)"
    [ -z "$pids" ] && break
    if [ "$i" -gt 8 ]; then as_root kill -9 $pids 2>/dev/null || true; else as_root kill $pids 2>/dev/null || true; fi
    sleep 0.25
  done
  [ -z "$(cluster_pids)" ] || echo "slurm.sh: processes of the cluster still running: $(cluster_pids | tr '\n' ' ')" >&2
  if running "$STATE/munge/munged.pid"; then
    as_root kill "$(cat "$STATE/munge/munged.pid")" 2>/dev/null || true
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  status) answers ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
