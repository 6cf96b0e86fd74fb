#!/usr/bin/env bash
# Brings up a real single-node Slurm cluster on this host for the compute tests:
#   munged -> MariaDB -> slurmdbd -> slurmctld -> slurmd, all started directly (these containers have no systemd).
# slurmdbd (backed by Debian's MariaDB) is there so that `sacct` reports real accounting (TotalCPU, AllocTRES,
# ElapsedRaw): with accounting_storage/none, sacct only says that accounting is disabled.
# Idempotent: safe to run twice; a daemon already running is left alone, and changed config is re-read (slurmctld
# and slurmd are restarted when the node's definition changed: `scontrol reconfigure` does not pick up new Gres=).
# Ends by waiting for the node to be idle and for a trivial srun and sbatch job (seen by sacct) to complete.
set -euo pipefail

log() { printf '[setup-slurm %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*"; for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/slurm/slurmdbd.log; do
  [ -f "$f" ] && { echo "--- tail $f"; tail -n 30 "$f"; }; done; exit 1; }
# A live (non-zombie) process of that name: a killed daemon stays a zombie where the container's init never reaps.
running() { ps -eo stat=,comm= | awk -v n="$1" '$2 == n && $1 !~ /^Z/ { f = 1 } END { exit !f }'; }
# A pid file left by a daemon that is gone (the machine was handed over, not rebooted) could name a reused pid,
# which slurmctld would try to kill at start: drop it.
clear_stale_pid() { [ -f "$2" ] && ! running "$1" && rm -f "$2"; return 0; }
start=$(date +%s)

[ "$(id -u)" = 0 ] || { echo "setup-slurm.sh must run as root" >&2; exit 1; }

# --- packages -------------------------------------------------------------------------------------------------
pkgs=(slurm-wlm slurmdbd munge mariadb-server procps)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- munge ----------------------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
clear_stale_pid munged /run/munge/munged.pid
if ! running munged; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null || die "munge does not round-trip a credential"

# --- MariaDB for slurmdbd -------------------------------------------------------------------------------------
install -d -o mysql -g mysql -m 0755 /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  log "initialising MariaDB data directory"
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
if ! running mariadbd && ! running mysqld; then
  log "starting MariaDB"
  (cd / && setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --bind-address=127.0.0.1 >/var/log/mariadbd-setu.log 2>&1 < /dev/null &)
fi
for _ in $(seq 1 60); do mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
mariadb -e 'SELECT 1' >/dev/null 2>&1 || die "MariaDB did not come up (see /var/log/mariadbd-setu.log)"

install -d -o slurm -g slurm -m 0755 /etc/slurm /var/log/slurm /var/lib/slurm /var/lib/slurm/slurmctld /run/slurm
install -d -m 0755 /var/lib/slurm/slurmd
# The database password is local to this host (MariaDB listens on loopback only); made once, then reused.
dbconf=/etc/slurm/slurmdbd.conf
dbpass=$(sed -n 's/^StoragePass=//p' "$dbconf" 2>/dev/null || true)
[ -n "$dbpass" ] || dbpass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${dbpass}';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${dbpass}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

host=$(hostname -s)
changed=0
# write_if_changed FILE MODE OWNER: stdin becomes FILE only when it differs, so a second run restarts nothing.
write_if_changed() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  install -m "$2" -o "$3" -g "$3" "$tmp" "$1"; rm -f "$tmp"; log "wrote $1"; return 0
}

write_if_changed "$dbconf" 0600 slurm <<CONF && changed=1 || true
# Written by .ci/setup-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=${dbpass}
CONF

# --- slurm.conf: one node, this host, with the CPUs and memory slurmd itself detects ---------------------------
nodeline=$(slurmd -C | head -n 1)
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$nodeline")
mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$nodeline")
[ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from 'slurmd -C': $nodeline"
# Leave some memory to the OS so a job's --mem never makes slurmd drain the node for low memory.
mem=$(( mem > 2048 ? mem - 512 : mem ))
topology=$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$nodeline" || true)

nodeconf=0
write_if_changed /etc/slurm/slurm.conf 0644 slurm <<CONF && changed=1 nodeconf=1 || true
# Written by .ci/setup-slurm.sh: a single-node cluster for Setu's tests.
ClusterName=setu
SlurmctldHost=${host}(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in these containers: track processes through /proc and bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
# gpu: what real GPU nodes declare (this one has none). testslot: a count-only generic resource with no device, so the
# tests can send --gres through sbatch and read it back from sacct's AllocTRES. It is not a GPU and is never called one:
# Slurm drops a gres/gpu that has no device File= (slurmd -G lists nothing), so a GPU cannot be declared here honestly.
GresTypes=gpu,testslot
# Accounting: real per-job CPU time (TotalCPU) and allocations (AllocTRES) for sacct, stored through slurmdbd.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu,gres/testslot
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} ${topology} RealMemory=${mem} Gres=testslot:2 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
write_if_changed /etc/slurm/gres.conf 0644 slurm <<CONF && changed=1 nodeconf=1 || true
# Written by .ci/setup-slurm.sh: two units of a device-less test resource (see GresTypes in slurm.conf).
NodeName=${host} Name=testslot Count=2
CONF
[ -f /etc/slurm/cgroup.conf ] || printf 'CgroupPlugin=autodetect\nIgnoreSystemd=yes\n' >/etc/slurm/cgroup.conf

# --- daemons ---------------------------------------------------------------------------------------------------
clear_stale_pid slurmdbd /run/slurm/slurmdbd.pid
clear_stale_pid slurmctld /run/slurm/slurmctld.pid
clear_stale_pid slurmd /run/slurm/slurmd.pid
if ! running slurmdbd; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
fi
for _ in $(seq 1 60); do sacctmgr -n -P list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -n -P list cluster >/dev/null 2>&1 || die "slurmdbd is not answering sacctmgr"
sacctmgr -n -P list cluster format=Cluster | grep -qx setu || sacctmgr -i add cluster setu >/dev/null

# stop_daemon NAME PIDFILE: SIGTERM by its pid file, then wait for it to be gone (running jobs survive: their
# slurmstepd processes and slurmctld's saved state outlive both daemons).
stop_daemon() {
  local pid; pid=$(cat "$2" 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do running "$1" || return 0; sleep 0.25; done
  die "$1 (pid ${pid:-?}) did not stop"
}
# A node whose Gres= changed must be re-registered: restart slurmctld and slurmd rather than reconfigure.
node_gres=$(scontrol show node -o "$host" 2>/dev/null | grep -o ' Gres=[^ ]*' || true)
if [ "$nodeconf" = 1 ] || { running slurmd && [[ "$node_gres" != " Gres=testslot:2"* ]]; }; then
  if running slurmctld || running slurmd; then log "node definition changed: restarting slurmctld and slurmd"; fi
  running slurmd && stop_daemon slurmd /run/slurm/slurmd.pid
  running slurmctld && stop_daemon slurmctld /run/slurm/slurmctld.pid
  changed=0
fi
if running slurmctld; then
  [ "$changed" = 1 ] && { log "configuration changed: scontrol reconfigure"; scontrol reconfigure || true; }
else
  log "starting slurmctld"
  /usr/sbin/slurmctld
fi
for _ in $(seq 1 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
scontrol ping | grep -q UP || die "slurmctld is not answering"

if ! running slurmd; then
  log "starting slurmd"
  /usr/sbin/slurmd
fi

# --- wait for an idle node, then prove jobs run and are accounted ----------------------------------------------
state=""
for i in $(seq 1 120); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1 || true)
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*|fail*) [ $((i % 10)) = 0 ] && scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$state" in idle|mixed|allocated) log "node $host is $state" ;; *) die "node $host is '$state', not idle" ;; esac

out=$(timeout 60 srun -N1 -n1 -t 1 /bin/echo setu-srun-ok) || die "srun failed"
[ "$out" = setu-srun-ok ] || die "srun printed '$out'"
tmpdir=$(mktemp -d); chmod 755 "$tmpdir"
jid=$(sbatch --parsable -o "$tmpdir/out" -t 1 --wrap 'echo setu-sbatch-ok') || die "sbatch failed"
jid=${jid%%;*}
acct=""
for _ in $(seq 1 120); do
  acct=$(sacct -j "$jid" -X -n -P --format=State 2>/dev/null | head -n 1 || true)
  [ "$acct" = COMPLETED ] && break
  case "$acct" in FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) die "test job $jid ended $acct";; esac
  sleep 0.5
done
[ "$acct" = COMPLETED ] || die "test job $jid is '$acct' in sacct, not COMPLETED"
grep -q setu-sbatch-ok "$tmpdir/out" || die "test job output missing"
rm -rf "$tmpdir"
log "Slurm is up: srun and sbatch job $jid completed and accounted ($(( $(date +%s) - start ))s)"
