#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for the cluster backend's tests
# (recipe: ../shared/reference/slurm.md). Debian's slurmctld + two `slurmd -N` daemons + munge;
# each node declares two GPUs as GRES backed by stand-in device files, so Slurm binds GPU
# indices per job (CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS) exactly as on a GPU cluster.
#
#   scripts/slurm-cluster.sh start    # install (apt) if needed, start; idempotent
#   scripts/slurm-cluster.sh status   # sinfo
#   scripts/slurm-cluster.sh stop     # stop the daemons started by `start`
#   scripts/slurm-cluster.sh env      # prints `export SLURM_CONF=...` for a shell to eval
#
# State lives in $ISOBENCH_SLURM_DIR (default /tmp/isobench-slurm). Needs root (as CI runs).
set -euo pipefail
D=${ISOBENCH_SLURM_DIR:-/tmp/isobench-slurm}
export SLURM_CONF=$D/slurm.conf
log() { printf '[slurm-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
  local missing=""
  for p in slurmd slurmctld slurm-client munge; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

write_config() {
  local host; host=$(hostname)
  mkdir -p "$D"/{spool,state,log}
  cat > "$D/slurm.conf" <<CONF
ClusterName=isobench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
SlurmUser=root
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=2 RealMemory=4000 Gres=gpu:2
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=2 RealMemory=4000 Gres=gpu:2
PartitionName=gpu Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  cat > "$D/gres.conf" <<CONF
AutoDetect=off
NodeName=n1 Name=gpu File=/dev/tty[1-2]
NodeName=n2 Name=gpu File=/dev/tty[3-4]
CONF
  # "disabled" is not a cgroup plugin in 22.05; v1 with systemd ignored loads without cgroups.
  printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' > "$D/cgroup.conf"
}

start() {
  install
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -f /etc/munge/munge.key ] || { log "no /etc/munge/munge.key"; exit 1; }
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  if ! alive "$D/slurmctld.pid"; then
    write_config
    log "starting slurmctld ($D)"
    slurmctld
  fi
  for n in n1 n2; do
    if ! alive "$D/slurmd-$n.pid"; then
      mkdir -p "$D/spool/$n"
      slurmd -N "$n"
    fi
  done
  for _ in $(seq 1 60); do
    if [ "$(sinfo -h -o '%t' 2>/dev/null | grep -c idle || true)" -ge 1 ] \
       && [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE 'idle|mix|alloc')" -ge 2 ]; then
      log "ready: $(sinfo -h -o '%P %a %D %t %N' | tr '\n' ' ')"
      return 0
    fi
    sleep 0.5
  done
  sinfo -N || true
  log "the cluster did not come up; logs in $D/log"
  exit 1
}

stop() {
  for f in "$D"/slurmd-*.pid "$D/slurmctld.pid"; do
    alive "$f" && kill "$(cat "$f")" 2>/dev/null || true
  done
  log "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) sinfo -N ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
