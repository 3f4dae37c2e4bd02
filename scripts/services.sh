#!/usr/bin/env bash
# Ensure the external services the test-suite needs, and print the environment
# to use them as `export NAME=value` lines on stdout (everything else goes to stderr):
#
#     eval "$(scripts/services.sh)"      # ensure + export (what scripts/test.sh does)
#     scripts/services.sh stop           # stop the Redis/Mosquitto *this checkout* started
#     scripts/services.sh stop-slurm     # stop the machine's shared test Slurm
#
# For each service: if something already answers at the configured URL, use it.
# Otherwise start our own on a private port, with state/logs under <repo>/var/
# (git-ignored), installing the server via apt-get when it is missing and we are root.
#
#   Redis  TALICADA_TEST_REDIS_URL (default redis://127.0.0.1:6379/0)
#          own server: redis://127.0.0.1:6391/0, var/redis/
#   MQTT   TALICADA_TEST_MQTT_URL  (default mqtt://127.0.0.1:1883)
#          own server: mosquitto on mqtt://127.0.0.1:1884, var/mosquitto/
#   Slurm  TALICADA_TEST_SLURM=1 when `sinfo` answers with a node up; otherwise,
#          as root, the machine's one-node cluster: munged + slurmctld + slurmd,
#          installed from Debian's slurm-wlm and munge when missing, config in
#          /etc/slurm/slurm.conf (where the commands look), state in
#          /var/lib/talicada-slurm, logs in /var/log/talicada-slurm. Every
#          checkout on the machine shares it (`stop-slurm` stops it). Without a
#          Slurm the Slurm tests fail, saying how to start one.
#   Chromium  /usr/bin/chromium for the dashboard's browser tests, installed from
#          Debian's chromium package when missing and we are root.
#
# Every network check and wait is bounded by a timeout; nothing here can hang.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR_DIR="$ROOT/var"
VENV_PY="$ROOT/.venv/bin/python"

DEFAULT_REDIS_URL="redis://127.0.0.1:6379/0"
DEFAULT_MQTT_URL="mqtt://127.0.0.1:1883"
OWN_REDIS_PORT=6391
OWN_MQTT_PORT=1884
OWN_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
OWN_MQTT_URL="mqtt://127.0.0.1:$OWN_MQTT_PORT"
START_WAIT_SECONDS=10

# Keep stdout clean for `eval`: exports go to fd 3, all other output to stderr.
exec 3>&1 1>&2

log() { printf 'services: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
emit_export() { printf 'export %s=%q\n' "$1" "$2" >&3; }
# Hide passwords in URLs before logging them.
redact() { printf '%s' "$1" | sed -E 's#//([^:@/]*):[^@/]*@#//\1:***@#'; }

# Any Python >= 3 will do for the stdlib-only helpers below.
if [[ -x "$VENV_PY" ]]; then HELPER_PY="$VENV_PY"; else HELPER_PY="python3"; fi

# Print "host port" of a URL ($2 = default port).
url_host_port() {
    "$HELPER_PY" -c '
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))' "$1" "$2"
}

# wait_until SECONDS CMD...: retry CMD every 0.2 s until it succeeds or time runs out.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------- Redis ---

# Does a Redis server answer PING at URL $1?
redis_ping() {
    local url=$1 host port reply
    if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import redis' >/dev/null 2>&1; then
        timeout 5 "$VENV_PY" -c '
import sys, redis
r = redis.Redis.from_url(sys.argv[1], socket_timeout=2, socket_connect_timeout=2)
sys.exit(0 if r.ping() else 1)' "$url" >/dev/null 2>&1
        return
    fi
    if command -v redis-cli >/dev/null 2>&1; then
        reply="$(timeout 5 redis-cli -u "$url" ping 2>/dev/null)" || return 1
        [[ "$reply" == PONG ]]
        return
    fi
    read -r host port < <(url_host_port "$url" 6379) || return 1
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 3 bash -c '
        exec 4<>"/dev/tcp/$1/$2" || exit 1
        printf "PING\r\n" >&4
        IFS= read -r -t 2 reply <&4 && [[ "$reply" == "+PONG"* ]]' _ "$host" "$port" 2>/dev/null
}

# ----------------------------------------------------------------- MQTT ---

# Does an MQTT broker accept an (anonymous or URL-credentialed) CONNECT at URL $1?
# For non-mqtt:// schemes (mqtts, ws, ...) only check that the TCP port accepts.
mqtt_check() {
    timeout 5 "$HELPER_PY" - "$1" >/dev/null 2>&1 <<'PY'
import os, socket, struct, sys, urllib.parse

u = urllib.parse.urlsplit(sys.argv[1])
host, port = u.hostname or "127.0.0.1", u.port or 1883
with socket.create_connection((host, port), timeout=2) as s:
    if u.scheme not in ("mqtt", "tcp", ""):
        sys.exit(0)
    s.settimeout(2)

    def field(b: bytes) -> bytes:
        return struct.pack("!H", len(b)) + b

    flags, payload = 0x02, field(b"talicada-probe-%d" % os.getpid())  # clean session
    if u.username is not None:
        flags |= 0x80
        payload += field(urllib.parse.unquote(u.username).encode())
        if u.password is not None:
            flags |= 0x40
            payload += field(urllib.parse.unquote(u.password).encode())
    body = field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 10) + payload
    assert len(body) < 128
    s.sendall(bytes([0x10, len(body)]) + body)
    connack = b""
    while len(connack) < 4:
        chunk = s.recv(4 - len(connack))
        if not chunk:
            sys.exit(1)
        connack += chunk
    s.sendall(b"\xe0\x00")  # DISCONNECT
    sys.exit(0 if connack[0] == 0x20 and connack[3] == 0 else 1)
PY
}

# --------------------------------------------------------- installation ---

APT_UPDATED=0
# ensure_binary BINARY DEBIAN_PACKAGE ENV_VAR
ensure_binary() {
    local bin=$1 pkg=$2 var=$3 dir
    command -v "$bin" >/dev/null 2>&1 && return 0
    # Debian installs mosquitto in /usr/sbin, which a non-root PATH may lack.
    for dir in /usr/sbin /usr/local/sbin /sbin; do
        if [[ -x "$dir/$bin" ]]; then
            PATH="$PATH:$dir"
            return 0
        fi
    done
    if [[ "$(id -u)" -ne 0 ]]; then
        die "'$bin' is not installed and we are not root. Install it" \
            "(sudo apt-get install -y $pkg) or set $var to a running server."
    fi
    command -v apt-get >/dev/null 2>&1 || die "'$bin' is missing and apt-get is not available"
    log "'$bin' not found; installing Debian package $pkg"
    if ((!APT_UPDATED)); then
        timeout 600 apt-get update -q || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=120 "$pkg" || die "apt-get install $pkg failed"
    hash -r
    command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] ||
        die "'$bin' still not found after installing $pkg"
    [[ -x "/usr/sbin/$bin" ]] && PATH="$PATH:/usr/sbin"
    return 0
}

# start_daemon OUTFILE CMD...: run a self-daemonising server (bounded to 10 s until
# it has forked) with stdin from /dev/null, stdout+stderr to OUTFILE, and every
# other inherited fd closed: a daemon holding fd 3 (our `eval` pipe), fd 9 (the
# lock) or a CI runner's log pipe would make its reader wait until it exits.
start_daemon() {
    local out=$1
    shift
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
                eval "exec $fd>&-"
            fi
        done 2>/dev/null
        exec timeout 10 "$@"
    ) </dev/null >"$out" 2>&1
}

# Show the tail of a log file to explain a failed start.
show_log() {
    [[ -f "$1" ]] || return 0
    log "last lines of $1:"
    tail -n 20 "$1" >&2 || true
}

# ------------------------------------------------------------- ensure ---

# reuse_running LABEL CHECK URL OWN_URL VAR: export VAR for a server already
# answering, at URL or at our own address; fail (status 1) when none does.
reuse_running() {
    local label=$1 check=$2 url=$3 own=$4 var=$5
    if "$check" "$url"; then
        log "$label: using $(redact "$url")"
        emit_export "$var" "$url"
        return 0
    fi
    log "$label: nothing answers at $(redact "$url")"
    if [[ "$url" != "$own" ]] && "$check" "$own"; then
        log "$label: using our own server already running at $own"
        emit_export "$var" "$own"
        return 0
    fi
    return 1
}

ensure_redis() {
    local url="${TALICADA_TEST_REDIS_URL:-$DEFAULT_REDIS_URL}" dir="$VAR_DIR/redis"
    reuse_running Redis redis_ping "$url" "$OWN_REDIS_URL" TALICADA_TEST_REDIS_URL && return
    ensure_binary redis-server redis-server TALICADA_TEST_REDIS_URL
    mkdir -p "$dir"
    log "Redis: starting our own redis-server on 127.0.0.1:$OWN_REDIS_PORT (logs: $dir/redis.log)"
    if ! start_daemon "$dir/start.out" redis-server --port "$OWN_REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --daemonize yes \
        --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"; then
        show_log "$dir/start.out"
        show_log "$dir/redis.log"
        die "redis-server failed to start"
    fi
    if ! wait_until "$START_WAIT_SECONDS" redis_ping "$OWN_REDIS_URL"; then
        show_log "$dir/start.out"
        show_log "$dir/redis.log"
        die "redis-server did not answer on port $OWN_REDIS_PORT within ${START_WAIT_SECONDS}s"
    fi
    emit_export TALICADA_TEST_REDIS_URL "$OWN_REDIS_URL"
}

ensure_mosquitto() {
    local url="${TALICADA_TEST_MQTT_URL:-$DEFAULT_MQTT_URL}" dir="$VAR_DIR/mosquitto"
    reuse_running MQTT mqtt_check "$url" "$OWN_MQTT_URL" TALICADA_TEST_MQTT_URL && return
    ensure_binary mosquitto mosquitto TALICADA_TEST_MQTT_URL
    mkdir -p "$dir"
    # Minimal test-only config: anonymous, loopback only, no persistence.
    # `user` keeps mosquitto running as us (as root it would otherwise switch
    # to the `mosquitto` user and could not write to var/).
    cat >"$dir/mosquitto.conf" <<EOF
# Generated by scripts/services.sh for the test-suite; rewritten on every start.
listener $OWN_MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
pid_file $dir/mosquitto.pid
log_dest file $dir/mosquitto.log
user $(id -un)
EOF
    log "MQTT: starting our own mosquitto on 127.0.0.1:$OWN_MQTT_PORT (logs: $dir/mosquitto.log)"
    if ! start_daemon "$dir/start.out" mosquitto -d -p "$OWN_MQTT_PORT" -c "$dir/mosquitto.conf"; then
        show_log "$dir/start.out"
        show_log "$dir/mosquitto.log"
        die "mosquitto failed to start"
    fi
    if ! wait_until "$START_WAIT_SECONDS" mqtt_check "$OWN_MQTT_URL"; then
        show_log "$dir/start.out"
        show_log "$dir/mosquitto.log"
        die "mosquitto did not accept connections on port $OWN_MQTT_PORT within ${START_WAIT_SECONDS}s"
    fi
    emit_export TALICADA_TEST_MQTT_URL "$OWN_MQTT_URL"
}

# ---------------------------------------------------------------- Slurm ---
#
# One cluster per MACHINE, shared by every checkout (worktrees, CI's clean
# clone): its config is where Slurm's commands look by default
# (/etc/slurm/slurm.conf), and its state and logs are in system directories,
# never inside a checkout that may be deleted. A checkout that finds `sinfo`
# answering uses that cluster; a machine-wide lock makes two checkouts starting
# at once start one cluster, not two on the same ports.

SLURM_CONF_PATH=/etc/slurm/slurm.conf
SLURM_HOME=/var/lib/talicada-slurm
SLURM_LOGS=/var/log/talicada-slurm
SLURM_LOCK=/run/lock/talicada-slurm.lock
#: The first line of a config we wrote: only such a config is ever rewritten.
SLURM_MARK="# talicada one-node test cluster (scripts/services.sh)"
SLURM_WAIT_SECONDS=60

# Does a Slurm controller answer `sinfo` (with the default config, or $SLURM_CONF)?
slurm_answers() { timeout 5 sinfo -h -o %T >/dev/null 2>&1; }

# Is a node up to run jobs (idle, or already running some)?
slurm_node_ready() {
    local states
    states="$(timeout 5 sinfo -h -N -o %T 2>/dev/null)" || return 1
    [[ "$states" =~ (idle|mixed|allocated|completing) ]]
}

munge_answers() { timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

# Is the process named in pidfile $1 running as command $2?
pidfile_running() {
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" && "$(ps -o comm= -p "$pid" 2>/dev/null || true)" == "$2"* ]]
}

ensure_munged() {
    munge_answers && return 0
    if [[ ! -s /etc/munge/munge.key ]]; then
        timeout 30 mungekey --create --keyfile=/etc/munge/munge.key ||
            die "could not create /etc/munge/munge.key"
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    # Debian's service unit makes the socket directory; without systemd we do.
    install -d -o munge -g munge -m 0755 /run/munge
    log "Slurm: starting munged"
    if ! start_daemon "$SLURM_LOGS/munged.out" runuser -u munge -- munged; then
        show_log "$SLURM_LOGS/munged.out"
        die "munged failed to start"
    fi
    wait_until "$START_WAIT_SECONDS" munge_answers ||
        die "munged did not answer within ${START_WAIT_SECONDS}s"
}

# The smallest slurm.conf for one node: this host with all its CPUs and most of
# its memory; no cgroups (containers rarely have them); the job-completion log
# is what `sacct -c` reads (no slurmdbd); the schedulers look every second;
# ended jobs stay in squeue for MinJobAge seconds.
write_slurm_conf() {
    local host cpus mem_mb
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem_mb="$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')"
    mkdir -p "$(dirname "$SLURM_CONF_PATH")" "$SLURM_HOME/state" "$SLURM_HOME/spool"
    cat >"$SLURM_CONF_PATH.tmp" <<EOF
$SLURM_MARK
# Rewritten whenever that script starts the cluster; state in $SLURM_HOME, logs in $SLURM_LOGS.
ClusterName=talicada-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=6917
SlurmdPort=6918
AuthType=auth/munge
StateSaveLocation=$SLURM_HOME/state
SlurmdSpoolDir=$SLURM_HOME/spool
SlurmctldPidFile=$SLURM_HOME/slurmctld.pid
SlurmdPidFile=$SLURM_HOME/slurmd.pid
SlurmctldLogFile=$SLURM_LOGS/slurmctld.log
SlurmdLogFile=$SLURM_LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_HOME/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
ReturnToService=2
MinJobAge=300
MaxJobCount=100000
KillWait=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$SLURM_CONF_PATH.tmp" "$SLURM_CONF_PATH"
}

# Start the machine's cluster (we hold the machine-wide lock).
start_slurm() {
    ensure_binary slurmctld slurm-wlm TALICADA_TEST_SLURM
    ensure_binary munged munge TALICADA_TEST_SLURM
    if [[ -f "$SLURM_CONF_PATH" ]] && [[ "$(head -n 1 "$SLURM_CONF_PATH")" != "$SLURM_MARK" ]]; then
        die "$SLURM_CONF_PATH is not ours and its Slurm does not answer; start that Slurm" \
            "(sinfo must answer) or move the file away so that a test cluster can be set up"
    fi
    mkdir -p "$SLURM_HOME" "$SLURM_LOGS"
    ensure_munged
    if ! pidfile_running "$SLURM_HOME/slurmctld.pid" slurmctld; then
        stop_pidfile "$SLURM_HOME/slurmd.pid" slurmd
        write_slurm_conf
        log "Slurm: starting slurmctld (config $SLURM_CONF_PATH, logs in $SLURM_LOGS/)"
        # -c: start clean, with no jobs or node state left from an earlier cluster.
        if ! start_daemon "$SLURM_LOGS/slurmctld.out" slurmctld -c; then
            show_log "$SLURM_LOGS/slurmctld.out"
            show_log "$SLURM_LOGS/slurmctld.log"
            die "slurmctld failed to start"
        fi
    fi
    if ! wait_until "$SLURM_WAIT_SECONDS" slurm_answers; then
        show_log "$SLURM_LOGS/slurmctld.log"
        die "slurmctld did not answer within ${SLURM_WAIT_SECONDS}s"
    fi
    if ! pidfile_running "$SLURM_HOME/slurmd.pid" slurmd; then
        log "Slurm: starting slurmd"
        if ! start_daemon "$SLURM_LOGS/slurmd.out" slurmd; then
            show_log "$SLURM_LOGS/slurmd.out"
            show_log "$SLURM_LOGS/slurmd.log"
            die "slurmd failed to start"
        fi
    fi
    if ! wait_until "$SLURM_WAIT_SECONDS" slurm_node_ready; then
        show_log "$SLURM_LOGS/slurmd.log"
        show_log "$SLURM_LOGS/slurmctld.log"
        die "the Slurm node did not come up within ${SLURM_WAIT_SECONDS}s"
    fi
    log "Slurm: one node ($(hostname -s), $(nproc) CPUs) is up"
}

# Export TALICADA_TEST_SLURM=1 when a Slurm answers, or once we started one.
ensure_slurm() {
    if command -v sinfo >/dev/null 2>&1 && slurm_answers && slurm_node_ready; then
        log "Slurm: using the cluster sinfo answers for (${SLURM_CONF:-default config})"
        emit_export TALICADA_TEST_SLURM 1
        return
    fi
    if [[ -n "${SLURM_CONF:-}" ]]; then
        # Not fatal: the other tests still run, and the Slurm tests fail saying why.
        log "WARNING: SLURM_CONF=$SLURM_CONF is set but its Slurm does not answer" \
            "(or has no node up); the Slurm tests will fail"
        return
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        # Not fatal: the other tests still run, and the Slurm tests fail saying why.
        log "WARNING: no Slurm answers and only root can start one here (munged, slurmd);" \
            "the Slurm tests will fail. Run as root, or start Slurm and make sinfo answer."
        return
    fi
    # One checkout at a time past this point, machine-wide; it re-checks first.
    mkdir -p "$(dirname "$SLURM_LOCK")"
    exec 8>"$SLURM_LOCK"
    flock -w 600 8 || die "timed out waiting for $SLURM_LOCK (another checkout starting Slurm?)"
    if command -v sinfo >/dev/null 2>&1 && slurm_answers && slurm_node_ready; then
        log "Slurm: another checkout has just started it"
    else
        start_slurm
    fi
    exec 8>&-
    emit_export TALICADA_TEST_SLURM 1
}

# --------------------------------------------------------------- stop ---

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# stop_pidfile PIDFILE EXPECTED_COMMAND: SIGTERM the process named in PIDFILE,
# but only if it really is EXPECTED_COMMAND (guards against recycled pids).
stop_pidfile() {
    local pidfile=$1 expected=$2 pid comm
    [[ -f "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' <"$pidfile")"
    comm="$(ps -o comm= -p "$pid" 2>/dev/null || true)"
    if [[ -z "$pid" || "$comm" != "$expected"* ]]; then
        log "$expected: not running (stale $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    log "$expected: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    wait_until 10 pid_gone "$pid" ||
        log "WARNING: $expected (pid $pid) still running after 10s"
    rm -f "$pidfile"
}

# The dashboard's browser tests drive Debian's Chromium (never a downloaded one).
ensure_browser() {
    [[ -x /usr/bin/chromium ]] && return 0
    ensure_binary chromium chromium TALICADA_TEST_CHROMIUM
}

main() {
    case "${1:-ensure}" in
        ensure)
            mkdir -p "$VAR_DIR"
            # Serialise concurrent runs so two of them never race to start servers.
            if command -v flock >/dev/null 2>&1; then
                exec 9>"$VAR_DIR/services.lock"
                flock -w 60 9 || die "timed out waiting for $VAR_DIR/services.lock"
            fi
            ensure_redis
            ensure_mosquitto
            ensure_slurm
            ensure_browser
            ;;
        stop)
            stop_pidfile "$VAR_DIR/redis/redis.pid" redis-server
            stop_pidfile "$VAR_DIR/mosquitto/mosquitto.pid" mosquitto
            ;;
        stop-slurm)
            # The machine's cluster: other checkouts may be using it.
            stop_pidfile "$SLURM_HOME/slurmd.pid" slurmd
            stop_pidfile "$SLURM_HOME/slurmctld.pid" slurmctld
            ;;
        *) die "usage: $0 [ensure|stop|stop-slurm]" ;;
    esac
}

main "$@"
