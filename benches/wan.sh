#!/usr/bin/env bash
# WAN benchmark for delivery (issue 11, "Delivery speed"): many small batch files to an SFTP
# server RTT milliseconds away, smsdrop side by side with the OpenSSH `sftp -b`, `lftp` and
# `rclone` clients.
#
# Starts its own sshd (SFTP only, `ForceCommand internal-sftp -d <home>`, as benches/deliver.sh)
# on a free loopback port with a generated host key, client key and known_hosts, and puts
# benches/wanproxy.py in front of it: a user-space TCP proxy delaying each direction by RTT/2 ms
# (kernel netem is not needed). Every contender connects to the proxy's port, never to sshd.
# Per RTT in RTTS, ROUNDS rounds, the contenders alternating order each round (odd rounds as
# listed, even rounds reversed), medians:
#   smsdrop send   `smsdrop send --config CFG --no-wait INPUTS...`: convert + journal + archive +
#                  connect + upload of FILES inputs of ROWS rows, end to end
#   smsdrop run    the daemon (`[inbox] stable_secs = 0`, the smallest allowed; watch = "notify"),
#                  started and settled first; timed from one `mv` of all FILES inputs into the
#                  inbox to the last batch file appearing in upload/ (the script polls the
#                  server's folder every 10 ms). Printed as is and minus stable_secs.
#   sftp -b        one OpenSSH session, one `put` per batch file, sequential
#   lftp           `mput -P 4` over sftp:// (OpenSSH as its transport, key auth, known_hosts)
#   rclone         `rclone copy --transfers 8` to an on-the-fly :sftp: remote
# The three clients upload batch files converted once beforehand (`smsdrop convert`); smsdrop
# converts its inputs in the timed run. Each timed command includes its connect and login.
# Every run starts from an empty remote upload/ (and a fresh smsdrop state dir) and is checked:
# exit code, exactly FILES files in upload/, no temporary (dot) files left, the lines equal the
# reference conversion's, and for smsdrop the journal's job states. Any mismatch fails the script.
#
# Before the timed rounds, one untimed run of each contender (the warm-up) goes to a second port
# of the same sshd, through a proxy without delay, where the session runs OpenSSH's sftp-server
# at `-l DEBUG3` (stderr to a file): it logs every SFTP request ("request N: open"), which gives
# the requests per file of each contender, by type. Also once: `sftp -b` directly to sshd vs
# through the proxy with no delay (the proxy's own overhead).
#
# Prints a markdown table per RTT (time, files/s, round trips per file, ratio = tool time /
# smsdrop send time, so >= 1.0 means smsdrop is faster) and the requests table.
#
# The proxy delays application bytes, not TCP segments: ACKs, windows and slow start stay on
# loopback, so no congestion window or bandwidth limit is emulated (irrelevant for small files,
# optimistic for big ones). Its timers deliver about 0.4 ms late on average in each direction;
# each table prints the RTT it actually gave (and min/max delivery error).
#
# How long (2 cores shared with other work, smsdrop at about 5.5 round trips a file): RTTS=20
# ROUNDS=1 took 1 min 35 s; the default (RTTS="20 50 100", ROUNDS=3, FILES=200) 28 min, two
# thirds of it smsdrop send and run at 50 and 100 ms. RTTS="20 50" ROUNDS=1: about 4 min.
#
# Usage: benches/wan.sh
# Environment (defaults):
#   RTTS="20 50 100"  round-trip times to emulate, ms (0 allowed: the proxy alone)
#   FILES=200         small inputs (and batch files) per run
#   ROWS=20           rows per input
#   ROUNDS=3          timed rounds per RTT
#   KEEP=0            1: keep the scratch folder (its path is printed)
#   BIN=<repo>/target/release/smsdrop   the smsdrop binary (the default is built when missing)
#   SSHD=/usr/sbin/sshd                 the sshd binary
#   SFTP_SERVER=/usr/lib/openssh/sftp-server   for the request counts (missing: counts skipped)
#   TMPDIR            where the scratch folder goes
# Needs: OpenSSH server and client, python3, lftp, rclone (lftp and rclone are installed with
# apt-get when missing and running as root).
set -euo pipefail

RTTS=${RTTS:-20 50 100}
FILES=${FILES:-200}
ROWS=${ROWS:-20}
ROUNDS=${ROUNDS:-3}
KEEP=${KEEP:-0}
SSHD=${SSHD:-/usr/sbin/sshd}
SFTP_SERVER=${SFTP_SERVER:-/usr/lib/openssh/sftp-server}
SUB=BENCH
LFTP_PARALLEL=4
RCLONE_TRANSFERS=8
DAEMON_STABLE=0   # [inbox] stable_secs of the daemon: the smallest the config allows
DAEMON_SETTLE=1.5 # seconds the daemon runs (after "smsdrop running") before the inputs arrive

case "${1:-}" in
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "wan.sh: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
esac

die() {
    echo "wan.sh: ERROR: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

for v in FILES ROWS ROUNDS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
read -r -a RTT_LIST <<<"$RTTS"
((${#RTT_LIST[@]} > 0)) || die "RTTS is empty"
for rtt in "${RTT_LIST[@]}"; do
    [[ "$rtt" =~ ^[0-9]+$ ]] || die "RTTS must hold non-negative integers (ms), got '$rtt'"
done

# --- tools -----------------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"
PROXY="$REPO_ROOT/benches/wanproxy.py"
if [[ -z "${BIN:-}" ]]; then
    BIN="$REPO_ROOT/target/release/smsdrop"
    if [[ ! -x "$BIN" ]]; then
        log "$BIN missing; running cargo build --release"
        (cd "$REPO_ROOT" && cargo build --release)
    fi
fi
[[ -x "$BIN" ]] || die "no smsdrop binary at $BIN (set BIN=, or cargo build --release)"
[[ -f "$PROXY" ]] || die "$PROXY missing"
IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1
apt_install() { # apt_install PACKAGE...: as root, apt-get install (after an update if needed)
    ((IS_ROOT == 1)) && command -v apt-get >/dev/null || return 1
    log "installing $* with apt-get"
    apt-get install -y "$@" >&2 || { apt-get update >&2 && apt-get install -y "$@" >&2; }
}
if [[ ! -x "$SSHD" ]] || ! command -v sftp >/dev/null || ! command -v ssh-keygen >/dev/null; then
    if [[ $IS_ROOT == 1 && -x "$REPO_ROOT/.ci/install-sshd.sh" ]]; then
        log "OpenSSH server/client missing; running .ci/install-sshd.sh"
        "$REPO_ROOT/.ci/install-sshd.sh" >&2
    fi
fi
[[ -x "$SSHD" ]] || die "no sshd at $SSHD (apt-get install openssh-server, or set SSHD=)"
command -v sftp >/dev/null || die "sftp not found (apt-get install openssh-client)"
command -v ssh >/dev/null || die "ssh not found (apt-get install openssh-client)"
command -v ssh-keygen >/dev/null || die "ssh-keygen not found (apt-get install openssh-client)"
command -v python3 >/dev/null || die "python3 not found (runs the proxy, generates the inputs)"
for tool in lftp rclone; do
    if ! command -v "$tool" >/dev/null; then
        apt_install "$tool" || die "$tool is missing and could not be installed (sudo apt-get install $tool)"
        command -v "$tool" >/dev/null || die "$tool still missing after apt-get install $tool"
    fi
done
COUNT_REQUESTS=1
if [[ ! -x "$SFTP_SERVER" ]]; then
    log "warning: no $SFTP_SERVER (set SFTP_SERVER=): the per-request counts are skipped"
    COUNT_REQUESTS=0
fi
SSHD=$(readlink -f "$SSHD") # sshd re-executes itself: absolute path

COMMIT=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | head -n 1)
BIN_BUILT=$(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_SECS=$SECONDS

# --- scratch dir, cleanup ----------------------------------------------------------------------
# As root the folder must be traversable by sshd's session; /tmp is.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smsdrop-wan-bench.XXXXXX")
chmod 755 "$WORK"
SSHD_PID=""
DAEMON_PID=""
declare -A PROXY_PID=()
cleanup() {
    local rc=$? name
    if [[ -n "$DAEMON_PID" ]]; then kill_tree "$DAEMON_PID"; fi
    for name in "${!PROXY_PID[@]}"; do kill_tree "${PROXY_PID[$name]}"; done
    if [[ -n "$SSHD_PID" ]]; then kill_tree "$SSHD_PID"; fi
    if [[ "$KEEP" == 1 ]]; then
        echo "wan.sh: scratch folder kept: $WORK" >&2
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "wan.sh: interrupted by a signal" >&2; exit 130' INT TERM
cd "$WORK"

# --- helpers ---------------------------------------------------------------------------------
strip_ansi() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
mkfifo "$WORK/nap"
exec {NAP_FD}<>"$WORK/nap"
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; } # sleep without a fork (nobody writes the fifo)

# --- sshd ------------------------------------------------------------------------------------
# One sshd, two ports: PORT runs internal-sftp (every timed run, through a delaying proxy);
# CPORT runs the sftp-server binary logging each request at DEBUG3 to REQ_LOG (the untimed
# counting runs, through a proxy without delay).
SSH_DIR="$WORK/sshd"
HOME_DIR="$WORK/home"
bench_keys
REQ_LOG="$SSH_DIR/requests.log"
: >"$REQ_LOG"
chmod 666 "$REQ_LOG"
start_sshd() {
    local attempt rc count_cmd
    if [[ $COUNT_REQUESTS == 1 ]]; then
        count_cmd="$SFTP_SERVER -e -l DEBUG3 -d $HOME_DIR 2>>$REQ_LOG"
    else
        count_cmd="internal-sftp -d $HOME_DIR"
    fi
    for attempt in 1 2 3 4 5; do
        PORT=$(free_port)
        CPORT=$(free_port)
        [[ "$PORT" != "$CPORT" ]] || continue
        {
            printf 'Port %s\nPort %s\nMaxSessions 100\n' "$PORT" "$CPORT"
            sshd_base_config
            printf 'ForceCommand internal-sftp -d %s\nMatch LocalPort %s\n    ForceCommand %s\n' \
                "$HOME_DIR" "$CPORT" "$count_cmd"
        } >"$SSH_DIR/sshd_config"
        rc=0
        launch_sshd "$PORT" "$CPORT" || rc=$?
        ((rc == 0)) && return 0
        ((rc == 2)) || break
        log "port $PORT or $CPORT taken; retrying ($attempt)"
    done
    sshd_failed
}
start_sshd
log "sshd pid $SSHD_PID on 127.0.0.1:$PORT (internal-sftp) and :$CPORT (request log), login $LOGIN, home $HOME_DIR"
known_host() { printf '[127.0.0.1]:%s %s\n' "$1" "$HOST_PUB" >>"$KNOWN"; }
known_host "$PORT"
known_host "$CPORT"

# --- proxies ---------------------------------------------------------------------------------
# start_proxy NAME DELAY_MS TARGET_PORT: sets PPORT (also added to known_hosts).
start_proxy() {
    local name=$1 out="$WORK/proxy-$1.out" word="" t
    PPORT=""
    python3 "$PROXY" --target "$3" --delay-ms "$2" >"$out" 2>"$WORK/proxy-$name.err" &
    PROXY_PID[$name]=$!
    for t in $(seq 200); do
        if [[ -s "$out" ]] && read -r word PPORT <"$out" && [[ "$word" == listening && "$PPORT" =~ ^[0-9]+$ ]]; then
            break
        fi
        PPORT=""
        kill -0 "${PROXY_PID[$name]}" 2>/dev/null || break
        sleep 0.05
    done
    [[ -n "$PPORT" ]] || { cat "$WORK/proxy-$name.err" >&2; die "wanproxy ($name) did not start"; }
    known_host "$PPORT"
}
# stop_proxy NAME: sets PROXY_STATS (its last stderr line).
stop_proxy() {
    local pid=${PROXY_PID[$1]} rc=0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || rc=$?
    unset "PROXY_PID[$1]"
    ((rc == 0)) || { cat "$WORK/proxy-$1.err" >&2; die "wanproxy ($1) exited $rc"; }
    PROXY_STATS=$(tail -n 1 "$WORK/proxy-$1.err")
}

# The OpenSSH sftp client as the tests run it (tests/support/sshd.rs): key auth, strict host key
# checking against our known_hosts, no agent, no user config. Append -P PORT -b SCRIPT DEST.
SFTP=(sftp -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i "$KEY"
    -o "UserKnownHostsFile=$KNOWN" -o GlobalKnownHostsFile=/dev/null
    -o StrictHostKeyChecking=yes -o IdentityAgent=none -o ConnectTimeout=10)
DEST="$LOGIN@127.0.0.1"
echo "ls" >"$WORK/ls.sftp"
"${SFTP[@]}" -P "$PORT" -b "$WORK/ls.sftp" "$DEST" >/dev/null 2>"$WORK/sftp-check.err" ||
    { cat "$WORK/sftp-check.err" "$SSH_DIR/sshd.log" >&2; die "sftp cannot log in to the bench sshd"; }

# lftp's transport: OpenSSH with the same options (lftp appends -s -l USER -p PORT HOST sftp). The
# URL's empty password (USER:@) keeps lftp from asking for one; ssh never prompts (BatchMode).
LFTP_SSH="ssh -a -x -F /dev/null -i $KEY -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile=$KNOWN -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10"
export LFTP_HOME="$WORK/lftp-home" # no ~/.lftp, history or transfer log of the user's
mkdir -p "$LFTP_HOME"

# Old folders are moved aside, not deleted, until the end (as in deliver.sh): ext4 skips inodes
# freed in the last minute when it allocates new ones (fs/ext4/ialloc.c, recently_deleted), so
# deleting the last run's files made every file created in the next one slower.
TRASH="$WORK/trash"
mkdir -p "$TRASH"

# write_config FILE SFTP_PORT [inbox lines]: smsdrop config against the bench sshd (via PORT).
STATE="$WORK/state"
INBOX="$WORK/inbox"
write_config() {
    cat >"$1" <<EOF
[batch]
subaccount = "$SUB"

[inbox]
dir = "$INBOX"
duplicate_days = 0
${3:-}

[sftp]
host = "127.0.0.1"
port = $2
username = "$LOGIN"
private_key = "$KEY"
known_hosts = "$KNOWN"

[state]
dir = "$STATE"
EOF
}
CFG="$WORK/smsdrop.toml" # for convert (never connects)
write_config "$CFG" "$PORT"
fresh_state() { aside "$STATE" "$INBOX"; }

# run_timed NAME CMD...: runs CMD; sets T (wall s); stdout/stderr go to $WORK/NAME.out/.err.
run_timed() {
    local name=$1 rc=0 t0 t1
    shift
    t0=$(now)
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null || rc=$?
    t1=$(now)
    T=$(elapsed "$t0" "$t1")
    if [[ $rc -ne 0 ]]; then
        echo "---- $name: $* ----" >&2
        tail -n 30 "$WORK/$name.out" "$WORK/$name.err" >&2
        echo "---- sshd log (last 20 lines) ----" >&2
        tail -n 20 "$SSH_DIR/sshd.log" >&2
        die "$name exited $rc"
    fi
}

remote_count() { find "$HOME_DIR/upload" -mindepth 1 | wc -l; }
lines_digest() { cat "$@" | LC_ALL=C sort | md5sum | cut -d' ' -f1; }

# --- inputs ------------------------------------------------------------------------------------
IN="$WORK/in"
mkdir -p "$IN"
log "generating $FILES inputs of $ROWS rows"
small_inputs "$FILES" "$ROWS" "$IN"
TOTAL_ROWS=$((FILES * ROWS))

log "reference conversion"
REF="$WORK/ref"
mkdir -p "$REF"
run_timed ref "$BIN" convert --config "$CFG" --out "$REF" "$IN"/*
n=$(find "$REF" -type f | wc -l)
((n == FILES)) || die "convert of the inputs wrote $n files, expected $FILES"
n=$(find "$REF" -type f -name '.*' | wc -l)
((n == 0)) || die "convert wrote $n dot files; the remote check counts those as leftovers"
BATCH_BYTES=$(cat "$REF"/* | wc -c)
n=$(cat "$REF"/* | wc -l)
((n == TOTAL_ROWS + 2 * FILES)) || die "the batch files hold $n lines, expected $((TOTAL_ROWS + 2 * FILES))"
DIGEST=$(lines_digest "$REF"/*)
{
    echo "lcd $REF"
    echo "cd upload"
    for f in "$REF"/*; do echo "put $(basename "$f")"; done
} >"$WORK/put.sftp"

# --- checks ------------------------------------------------------------------------------------
check_remote() { # check_remote WHO: FILES files in upload/, no dot files, the reference's lines
    local n
    n=$(remote_count)
    ((n == FILES)) || die "$1: upload/ holds $n entries, expected $FILES: $(find "$HOME_DIR/upload" -mindepth 1 -name '.*' | head -n 3)"
    n=$(find "$HOME_DIR/upload" -mindepth 1 -name '.*' | wc -l)
    ((n == 0)) || die "$1: $n temporary (dot, .part) files left in upload/"
    [[ $(lines_digest "$HOME_DIR"/upload/*) == "$DIGEST" ]] ||
        die "$1: the uploaded files' lines differ from the reference conversion's"
}
# check_jobs CFG: the journal holds FILES jobs, all `uploaded` with all their remote files, no
# rejected rows, TOTAL_ROWS rows in all.
check_jobs() {
    "$BIN" status --config "$1" --json --limit 100000 >"$WORK/status.json" 2>"$WORK/status.err" ||
        die "smsdrop status failed: $(cat "$WORK/status.err")"
    python3 - "$FILES" "$TOTAL_ROWS" "$WORK/status.json" <<'PY' || die "journal check failed (see above)"
import json, sys
want, rows, doc = int(sys.argv[1]), int(sys.argv[2]), json.load(open(sys.argv[3]))
jobs = doc["jobs"]
bad = [j for j in jobs if j["state"] != "uploaded" or j["rows_rejected"]
       or not j["remote_files"] or any(f["state"] != "uploaded" for f in j["remote_files"])]
got = sum(f["rows"] for j in jobs for f in j["remote_files"])
if len(jobs) != want or bad or got != rows:
    print(f"journal: {len(jobs)} jobs (want {want}), {got} rows in remote files (want {rows}); "
          f"not uploaded or with rejected rows: {bad[:3]}", file=sys.stderr)
    sys.exit(1)
PY
}

# --- contenders: each NAME TAG PORT; sets T (s) ---------------------------------------------------
c_send() { # smsdrop send --no-wait, end to end
    local cfg="$WORK/send-$2.toml" n
    write_config "$cfg" "$3"
    clean_remote
    fresh_state
    run_timed "send-$2" "$BIN" send --config "$cfg" --no-wait "$IN"/*
    n=$(grep -c ': uploaded (' "$WORK/send-$2.out" || true)
    ((n == FILES)) || { head -n 5 "$WORK/send-$2.out" >&2; die "smsdrop send ($2): $n inputs reported uploaded, expected $FILES"; }
    check_remote "smsdrop send ($2)"
    check_jobs "$cfg"
}
c_run() { # the daemon: one mv of FILES inputs into its inbox -> the last file in upload/
    local cfg="$WORK/run-$2.toml" prep="$WORK/prep" t t0 t1 n rc=0 deadline files
    write_config "$cfg" "$3" "stable_secs = $DAEMON_STABLE"
    clean_remote
    fresh_state
    aside "$prep"
    mkdir -p "$INBOX" "$prep"
    cp -- "$IN"/* "$prep"/
    "$BIN" run --config "$cfg" >"$WORK/run-$2.out" 2>"$WORK/run-$2.err" </dev/null &
    DAEMON_PID=$!
    for t in $(seq 300); do
        strip_ansi "$WORK/run-$2.err" | grep -q 'smsdrop running' && break
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$DAEMON_PID" 2>/dev/null || ! strip_ansi "$WORK/run-$2.err" | grep -q 'smsdrop running'; then
        tail -n 20 "$WORK/run-$2.err" >&2
        die "smsdrop run ($2) did not start"
    fi
    sleep "$DAEMON_SETTLE"
    # generous: 60 s + 30 round trips a file
    deadline=$(calc "%.0f" "$(now) + 60 + $FILES * 30 * $1 / 1000")
    shopt -s nullglob
    t0=$(now)
    mv -- "$prep"/* "$INBOX"/
    while :; do
        files=("$HOME_DIR"/upload/*) # no dot files: smsdrop's temporary names start with '.'
        ((${#files[@]} >= FILES)) && break
        if (($(calc "%d" "$(now) > $deadline"))) || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            shopt -u nullglob
            tail -n 30 "$WORK/run-$2.err" >&2
            die "smsdrop run ($2): ${#files[@]} of $FILES files in upload/ (daemon gone or over the deadline)"
        fi
        nap 0.01
    done
    t1=$(now)
    shopt -u nullglob
    T=$(elapsed "$t0" "$t1")
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=""
    ((rc == 0)) || { tail -n 20 "$WORK/run-$2.err" >&2; die "smsdrop run ($2) exited $rc on SIGTERM"; }
    n=$(find "$INBOX" -mindepth 1 -maxdepth 1 -name '*.csv' | wc -l)
    ((n == 0)) || die "smsdrop run ($2): $n inputs still in the inbox"
    check_remote "smsdrop run ($2)"
    check_jobs "$cfg"
}
c_sftp() { # OpenSSH sftp -b, one session, sequential puts
    clean_remote
    run_timed "sftp-$2" "${SFTP[@]}" -P "$3" -b "$WORK/put.sftp" "$DEST"
    check_remote "sftp -b ($2)"
}
c_lftp() { # lftp mput -P 4 over sftp://, OpenSSH as transport
    clean_remote
    run_timed "lftp-$2" lftp -c "set sftp:connect-program \"$LFTP_SSH\"; set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 30; open sftp://$LOGIN:@127.0.0.1:$3; mput -P $LFTP_PARALLEL -O upload $REF/*; quit"
    check_remote "lftp ($2)"
}
c_rclone() { # rclone copy --transfers 8 to an on-the-fly :sftp: remote
    clean_remote
    run_timed "rclone-$2" rclone copy --config /dev/null --transfers "$RCLONE_TRANSFERS" \
        --sftp-host 127.0.0.1 --sftp-port "$3" --sftp-user "$LOGIN" \
        --sftp-key-file "$KEY" --sftp-known-hosts-file "$KNOWN" \
        "$REF" :sftp:upload
    check_remote "rclone ($2)"
}
CONTENDERS=(send run sftp lftp rclone)
declare -A LABEL=(
    [send]="smsdrop send --no-wait"
    [run]="smsdrop run (daemon), inbox -> upload/"
    [sftp]="sftp -b, sequential put"
    [lftp]="lftp mput -P $LFTP_PARALLEL"
    [rclone]="rclone copy --transfers $RCLONE_TRANSFERS"
)

# --- requests per file (untimed warm-up through a proxy without delay to CPORT) ------------------
# count_requests NAME LOG_FROM SSHD_FROM: request types from REQ_LOG lines after LOG_FROM; SSH
# logins from sshd.log lines after SSHD_FROM. Sets REQ_LINE (one table row).
count_requests() {
    local logins
    logins=$(tail -n +"$(($3 + 1))" "$SSH_DIR/sshd.log" | grep -c 'Accepted publickey' || true)
    # (sftp-server -e writes its log lines to stderr ending in CR LF: the CRs go first)
    REQ_LINE=$(tail -n +"$(($2 + 1))" "$REQ_LOG" | tr -d '\r' | awk -v files="$FILES" -v logins="$logins" -v label="$1" -v time="$(calc "%.2f" "$T")" '
        / request [0-9]+: / && !/ request [0-9]+: sent / {
            t = $0; sub(/^.* request [0-9]+: /, "", t); split(t, w, " "); n[w[1]]++; total++ }
        /session opened for local user/ { sessions++ }
        END {
            s = ""
            for (k in n) s = s sprintf("%s%s %.2f", (s == "" ? "" : ", "), k, n[k] / files)
            printf "| %s | %s s | %d | %d | %.2f | %s |", label, time, logins, sessions, total / files, s }')
}
REQ_ROWS=()
log "warm-up: one untimed, checked run of each contender through a proxy without delay, counting SFTP requests"
start_proxy count 0 "$CPORT"
for c in "${CONTENDERS[@]}"; do
    from=$(wc -l <"$REQ_LOG")
    sfrom=$(wc -l <"$SSH_DIR/sshd.log")
    "c_$c" 0 count "$PPORT"
    sleep 0.3 # let the server sessions finish their logs
    if [[ $COUNT_REQUESTS == 1 ]]; then
        count_requests "${LABEL[$c]}" "$from" "$sfrom"
        REQ_ROWS+=("$REQ_LINE")
    fi
    log "  ${LABEL[$c]}: ${T}s, checked"
done
stop_proxy count

# --- the proxy's own overhead: sftp -b directly vs through a proxy without delay ----------------------
log "proxy overhead: sftp -b directly to sshd vs through wanproxy with no delay (3 each, alternating)"
start_proxy zero 0 "$PORT"
DIRECT=() VIA=()
for r in 1 2 3; do
    order=(direct via)
    ((r % 2 == 0)) && order=(via direct)
    for how in "${order[@]}"; do
        if [[ $how == direct ]]; then
            c_sftp 0 direct "$PORT"
            DIRECT+=("$T")
        else
            c_sftp 0 zero "$PPORT"
            VIA+=("$T")
        fi
    done
done
stop_proxy zero
DIRECT_MED=$(median "${DIRECT[@]}")
VIA_MED=$(median "${VIA[@]}")
log "  direct ${DIRECT_MED}s, through the proxy ${VIA_MED}s"

# --- timed rounds ------------------------------------------------------------------------------------
TABLES=""
for rtt in "${RTT_LIST[@]}"; do
    half=$(calc "%g" "$rtt / 2")
    start_proxy "rtt$rtt" "$half" "$PORT"
    log "RTT $rtt ms (wanproxy on :$PPORT, $half ms each way): $ROUNDS rounds"
    declare -A TIMES=()
    for ((r = 1; r <= ROUNDS; r++)); do
        order=("${CONTENDERS[@]}")
        if ((r % 2 == 0)); then
            order=()
            for ((i = ${#CONTENDERS[@]} - 1; i >= 0; i--)); do order+=("${CONTENDERS[$i]}"); done
        fi
        line="round $r/$ROUNDS:"
        for c in "${order[@]}"; do
            "c_$c" "$rtt" "rtt$rtt" "$PPORT"
            TIMES[$c]="${TIMES[$c]:-} $T"
            line+="  $c ${T}s"
        done
        log "$line"
    done
    stop_proxy "rtt$rtt"
    declare -A MED=()
    for c in "${CONTENDERS[@]}"; do
        read -r -a ts <<<"${TIMES[$c]}"
        MED[$c]=$(median "${ts[@]}")
    done
    table="
#### RTT $rtt ms (wanproxy, $half ms each way), $FILES files, medians of $ROUNDS
| tool | time | files/s | round trips per file | ratio vs smsdrop |
|---|---|---|---|---|"
    for c in "${CONTENDERS[@]}"; do
        t=${MED[$c]}
        if ((rtt > 0)); then rtts=$(calc "%.2f" "$t * 1000 / $rtt / $FILES"); else rtts="-"; fi
        shown="$(calc "%.2f" "$t") s"
        if [[ $c == run ]]; then
            shown+=" ($(calc "%.2f" "$t - $DAEMON_STABLE") s minus stable_secs = $DAEMON_STABLE)"
        fi
        table+="
| ${LABEL[$c]} | $shown | $(calc "%.1f" "$FILES / $t") | $rtts | $(calc "%.2f" "$t / ${MED[send]}") |"
    done
    table+="
proxy: ${PROXY_STATS#wanproxy: }"
    late=$(sed -n 's/.*mean \([-+0-9.]*\) ms.*/\1/p' <<<"$PROXY_STATS")
    if [[ -n "$late" ]]; then
        table+="
       => the RTT the proxy gave: about $(calc "%.1f" "$rtt + 2 * $late") ms (nominal + 2 x mean delivery error)"
    fi
    TABLES+="$table"$'\n'
    echo "$table" >&2
    unset TIMES MED
done

# --- summary ---------------------------------------------------------------------------------------
paths() { local s=${1//$KNOWN/KNOWN}; echo "${s//$KEY/KEY}"; } # the bench's paths by name
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
if [[ $COUNT_REQUESTS == 1 ]]; then
    REQ_TABLE="| tool | time, RTT 0 | SSH logins | SFTP sessions | SFTP requests per file | by type, per file |
|---|---|---|---|---|---|
$(printf '%s\n' "${REQ_ROWS[@]}")"
else
    REQ_TABLE="(skipped: no $SFTP_SERVER)"
fi
cat <<SUMMARY

### smsdrop WAN delivery benchmark (benches/wan.sh)
date:     $(date -u '+%Y-%m-%d %H:%M UTC'); took $(((SECONDS - START_SECS) / 60)) min $(((SECONDS - START_SECS) % 60)) s
machine:  nproc=$(nproc)${CPU_MODEL:+, $CPU_MODEL}; load avg at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)
smsdrop:  $("$BIN" --version 2>/dev/null || echo smsdrop) ($BIN, built $BIN_BUILT); repo HEAD $COMMIT${DIRTY:+ (+local changes)}
server:   $("$SSHD" -V 2>&1 | head -n 1 || true), internal-sftp, 127.0.0.1 behind benches/wanproxy.py
clients:  $(ssh -V 2>&1 | cut -d, -f1); $(lftp --version | head -n 1 | sed 's/ *| */ /g; s/ Copyright.*//'); $(rclone version 2>/dev/null | head -n 1)
runs:     $FILES inputs of $ROWS rows ($(calc "%.1f" "$BATCH_BYTES / 1e3") kB of batch files); $ROUNDS rounds per RTT, alternating
          order; medians; every run checked (exit code, $FILES files, no dot files, contents)
daemon:   [inbox] stable_secs = $DAEMON_STABLE, watch = "notify" (rescan_secs 30, late_write_secs 300: defaults);
          started and settled ${DAEMON_SETTLE} s before one mv of all inputs into the inbox
ratio:    tool time / smsdrop send time (medians); >= 1.0: smsdrop is faster
$TABLES
#### SFTP requests per file (the untimed warm-up: OpenSSH sftp-server -l DEBUG3, proxy without delay)
$REQ_TABLE

commands (KEY, KNOWN, PORT: the bench's client key, known_hosts and proxy port):
  smsdrop send: $(basename "$BIN") send --config CFG --no-wait INPUTS...
  smsdrop run:  $(basename "$BIN") run --config CFG; then mv PREPARED/* INBOX/
  sftp:   $(paths "${SFTP[*]}") -P PORT -b SCRIPT $DEST   (SCRIPT: lcd, cd upload, $FILES x put)
  lftp:   lftp -c 'set sftp:connect-program "$(paths "$LFTP_SSH")"; set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 30; open sftp://$LOGIN:@127.0.0.1:PORT; mput -P $LFTP_PARALLEL -O upload DIR/*; quit'
  rclone: rclone copy --config /dev/null --transfers $RCLONE_TRANSFERS --sftp-host 127.0.0.1 --sftp-port PORT --sftp-user $LOGIN --sftp-key-file KEY --sftp-known-hosts-file KNOWN DIR :sftp:upload

proxy overhead (RTT 0): sftp -b of the $FILES files directly to sshd ${DIRECT_MED} s, through wanproxy without delay ${VIA_MED} s (medians of 3)
SUMMARY
