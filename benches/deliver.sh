#!/usr/bin/env bash
# Benchmark for delivery: `smsdrop send` / `smsdrop run` against a real OpenSSH sshd, side by side
# with the OpenSSH `sftp -b` client doing the same transfers.
#
# Starts its own sshd (SFTP only, `ForceCommand internal-sftp -d <home>`) on a free loopback port
# in a temporary folder, with a generated host key, client key and known_hosts; logs in as the
# current user with key auth (as root: root, `PermitRootLogin prohibit-password`). Then, in one
# run:
#   1. big file: one ~BIG_MB MB batch file. Per round: `smsdrop convert` of the input alone,
#      `smsdrop send --no-wait` of the same input (hash + convert + journal + archive + upload),
#      and `sftp -b` putting the converted batch file (default ciphers, and with smsdrop's cipher
#      when that differs). Upload time of smsdrop = send - convert. The bytes' time on the wire
#      is also read off the uploaded file itself (birth time -> last write, ext4 statx).
#   2. SMALL_FILES small inputs (SMALL_ROWS rows each), end to end: `smsdrop send --no-wait` of
#      all of them (convert, journal, archive, upload) vs one `sftp -b` session putting the
#      already-converted batch files (a script of SMALL_FILES `put` lines), and the same with
#      `put` to a temp name + `rename`, which is what smsdrop does remotely.
#   3. idle CPU of `smsdrop run` with an empty inbox (utime+stime from /proc/PID/stat and the
#      run time in /proc/PID/task/*/schedstat over IDLE_SECS, after IDLE_SETTLE s), with the
#      default timers and with 1 s timers.
#   4. peak RSS (/usr/bin/time -f %M) of smsdrop for the big send.
# Rounds alternate the contenders (odd rounds smsdrop first, even rounds sftp first), each after
# one untimed warm-up that also checks the results. Every run starts from an empty remote
# upload/ and a fresh smsdrop state dir. Exit codes, file counts, sizes and contents on the server
# and the journal's job states are checked; any mismatch fails the script. Ends with a summary
# block to paste into a README.
#
# Usage: benches/deliver.sh
# Environment (defaults):
#   BIG_MB=200        size of the big batch file, MB (10^6 bytes); at most ~1290 (one file
#                     holds at most 1,000,000 rows of at most 1280 characters)
#   SMALL_FILES=1000  small inputs in part 2
#   SMALL_ROWS=5      rows per small input
#   ROUNDS=3          timed rounds of each contender in parts 1 and 2
#   IDLE_SECS=20      idle measurement window, seconds (IDLE_SECS=0 skips part 3)
#   IDLE_SETTLE=3     seconds the daemon runs before the window opens
#   IDLE_TIGHT=1      also measure idle with rescan_secs = poll_secs = 1 (0: defaults only)
#   DROPS=10          part 5: single inputs dropped one at a time into an idle `smsdrop run`
#                     (stable_secs = 1); each timed from the rename into the inbox to its batch
#                     file under its final name on the server (0 skips part 5)
#   PROFILE=0         1: afterwards, one extra small-files send under `strace -f -c` and one under
#                     `perf record -g` (prints syscall counts and top functions; needs strace/perf)
#   KEEP=0            1: keep the scratch folder (its path is printed)
#   SSHD=/usr/sbin/sshd   the sshd binary
#   TMPDIR            where the scratch folder goes (needs ~6x BIG_MB free)
set -euo pipefail

BIG_MB=${BIG_MB:-200}
SMALL_FILES=${SMALL_FILES:-1000}
SMALL_ROWS=${SMALL_ROWS:-5}
ROUNDS=${ROUNDS:-3}
IDLE_SECS=${IDLE_SECS:-20}
IDLE_SETTLE=${IDLE_SETTLE:-3}
IDLE_TIGHT=${IDLE_TIGHT:-1}
DROPS=${DROPS:-10}
PROFILE=${PROFILE:-0}
KEEP=${KEEP:-0}
SSHD=${SSHD:-/usr/sbin/sshd}
SUB=BENCH
MAX_ROWS_PER_FILE=1000000 # config validation allows 1..1000000

case "${1:-}" in
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "deliver.sh: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
esac

die() {
    echo "deliver.sh: ERROR: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

for v in BIG_MB SMALL_FILES SMALL_ROWS ROUNDS IDLE_SETTLE; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
[[ "$IDLE_SECS" =~ ^[0-9]+$ ]] || die "IDLE_SECS must be a non-negative integer, got '$IDLE_SECS'"

# --- tools -----------------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"
BIN="$REPO_ROOT/target/release/smsdrop"
if [[ ! -x "$BIN" ]]; then
    log "$BIN missing; running cargo build --release"
    (cd "$REPO_ROOT" && cargo build --release)
    [[ -x "$BIN" ]] || die "cargo build --release did not produce $BIN"
fi
IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1
if [[ ! -x "$SSHD" ]] || ! command -v sftp >/dev/null || ! command -v ssh-keygen >/dev/null; then
    if [[ $IS_ROOT == 1 && -x "$REPO_ROOT/.ci/install-sshd.sh" ]]; then
        log "OpenSSH server/client missing; running .ci/install-sshd.sh"
        "$REPO_ROOT/.ci/install-sshd.sh" >&2
    fi
fi
[[ -x "$SSHD" ]] || die "no sshd at $SSHD (apt-get install openssh-server, or set SSHD=)"
command -v sftp >/dev/null || die "sftp not found (apt-get install openssh-client)"
command -v ssh-keygen >/dev/null || die "ssh-keygen not found (apt-get install openssh-client)"
command -v python3 >/dev/null || die "python3 not found (needed to generate inputs)"
TIME_BIN=/usr/bin/time
if [[ ! -x "$TIME_BIN" ]]; then
    echo "deliver.sh: $TIME_BIN (GNU time, package 'time') is missing; it is needed for peak RSS." >&2
    if [[ $IS_ROOT == 1 ]] && command -v apt-get >/dev/null; then
        apt-get install -y time >&2 || { apt-get update >&2 && apt-get install -y time >&2; } ||
            die "apt-get install time failed; install GNU time and rerun"
    else
        die "install it (sudo apt-get install time) and rerun"
    fi
    [[ -x "$TIME_BIN" ]] || die "$TIME_BIN still missing after installing 'time'"
fi
SSHD=$(readlink -f "$SSHD") # sshd re-executes itself: absolute path

COMMIT=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | head -n 1)
BIN_BUILT=$(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')
STALE=$(find "$REPO_ROOT/src" "$REPO_ROOT/Cargo.toml" "$REPO_ROOT/Cargo.lock" -type f -newer "$BIN" -print -quit 2>/dev/null || true)
[[ -z "$STALE" ]] || log "warning: $STALE is newer than $BIN (run cargo build --release)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- scratch dir, cleanup ----------------------------------------------------------------------
# As root the folder must be traversable by sshd's session; /tmp is.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smsdrop-deliver-bench.XXXXXX")
chmod 755 "$WORK"
SSHD_PID=""
DAEMON_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$DAEMON_PID" ]]; then kill_tree "$DAEMON_PID"; fi
    if [[ -n "$SSHD_PID" ]]; then kill_tree "$SSHD_PID"; fi
    if [[ "$KEEP" == 1 ]]; then
        echo "deliver.sh: scratch folder kept: $WORK" >&2
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$WORK"

# --- helpers ---------------------------------------------------------------------------------
mbps() { calc "%.1f" "$1 / 1e6 / $2"; }

# --- sshd ------------------------------------------------------------------------------------
SSH_DIR="$WORK/sshd"
HOME_DIR="$WORK/home"
bench_keys
start_sshd
log "sshd pid $SSHD_PID on 127.0.0.1:$PORT, login $LOGIN, home $HOME_DIR"

# The OpenSSH sftp client as the tests run it (tests/support/sshd.rs): key auth, strict host key
# checking against our known_hosts, no agent, no user config. Append [options] -b SCRIPT DEST.
SFTP=(sftp -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i "$KEY" -P "$PORT"
    -o "UserKnownHostsFile=$KNOWN" -o GlobalKnownHostsFile=/dev/null
    -o StrictHostKeyChecking=yes -o IdentityAgent=none -o ConnectTimeout=10)
DEST="$LOGIN@127.0.0.1"
echo "ls" >"$WORK/ls.sftp"
"${SFTP[@]}" -b "$WORK/ls.sftp" "$DEST" >/dev/null 2>"$WORK/sftp-check.err" ||
    { cat "$WORK/sftp-check.err" "$SSH_DIR/sshd.log" >&2; die "sftp cannot log in to the bench sshd"; }

# Old folders are moved aside, not deleted, until the end: ext4 skips inodes freed in the last
# minute when it allocates new ones (fs/ext4/ialloc.c, recently_deleted), so deleting thousands of
# files right before a run made every file created in it (smsdrop's spool and archive files, the
# server's uploads) several times slower than on a settled disk.
TRASH="$WORK/trash"
mkdir -p "$TRASH"

# write_config FILE STATE_DIR INBOX_DIR [extra lines]: smsdrop config against the bench sshd.
write_config() {
    cat >"$1" <<EOF
[batch]
subaccount = "$SUB"
max_rows_per_file = $MAX_ROWS_PER_FILE

[inbox]
dir = "$3"
duplicate_days = 0
${4:-}

[sftp]
host = "127.0.0.1"
port = $PORT
username = "$LOGIN"
private_key = "$KEY"
known_hosts = "$KNOWN"

[state]
dir = "$2"
${5:-}
EOF
}
STATE="$WORK/state"
CFG="$WORK/smsdrop.toml"
write_config "$CFG" "$STATE" "$WORK/inbox-unused"
fresh_state() { aside "$STATE" "$WORK/inbox-unused"; }


# remote_files: names in upload/ (excluding nothing: a leftover .part must show up).
remote_count() { find "$HOME_DIR/upload" -mindepth 1 | wc -l; }
# wire_time FILE: seconds from the file's birth (open/create) to its last write.
wire_time() { stat -c '%.9W %.9Y' "$1" | awk '{ if ($1 == 0) print "n/a"; else printf "%.4f", $2 - $1 }'; }
lines_digest() { cat "$@" | LC_ALL=C sort | md5sum | cut -d' ' -f1; }

# --- inputs ------------------------------------------------------------------------------------
# Big: one batch file of ~BIG_MB MB in at most MAX_ROWS_PER_FILE rows: text length chosen so that
# rows stay under the cap (a row out is 13 digits + text + id + 4 separators).
TARGET_BYTES=$((BIG_MB * 1000000))
TEXT_LEN=$(((TARGET_BYTES + 989999) / 990000 - 26))
((TEXT_LEN < 70)) && TEXT_LEN=70
((TEXT_LEN <= 1280)) || die "BIG_MB=$BIG_MB does not fit one batch file (1,000,000 rows of at most 1280 characters)"
BIG_IN="$WORK/big.csv"
log "generating the big input (~$BIG_MB MB out, texts of $TEXT_LEN characters)"
BIG_ROWS=$(python3 - "$TARGET_BYTES" "$TEXT_LEN" "$BIG_IN" <<'PY'
import sys
target, tlen, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
filler = ("Ola {n}, sua fatura de R$ {v},{c} vence amanha. Pague pelo app ou no banco e evite "
          "multa e juros. O codigo de barras foi enviado por e-mail, duvidas: ligue 0800 000 0000, "
          "atendimento 24h, ou responda SAIR para nao receber mais mensagens. Obrigado pela "
          "preferencia, equipe de cobranca. ") * (tlen // 150 + 2)
names = ["Maria", "Joao", "Ana", "Jose", "Antonio", "Francisca", "Luis", "Marcia", "Fabio", "Lucia"]
out = open(path, "w", encoding="ascii", newline="\n")
size, rows, buf = 27 + 4, 0, []  # header line + EOF trailer of the batch file
while size < target and rows < 1000000:
    i = rows
    phone = "119%08d" % ((i * 7919 + 12345678) % 100000000)
    text = filler.format(n=names[i % 10], v=20 + (i * 37) % 1480, c="%02d" % (i % 100))
    text = ("%d " % i + text)[: tlen - 1].rstrip() + "."
    text = text + "x" * (tlen - len(text))  # exact length, no trailing space
    cid = "id%d" % (i + 1)
    buf.append("%s;%s;%s\n" % (phone, text, cid))
    size += 13 + len(text) + len(cid) + 4
    rows += 1
    if len(buf) >= 50000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
out.close()
print(rows)
PY
)
BIG_IN_BYTES=$(stat -c %s "$BIG_IN")
log "big input: $(group "$BIG_ROWS") rows, $(calc "%.1f" "$BIG_IN_BYTES / 1e6") MB"

SMALL_IN="$WORK/small-in"
mkdir -p "$SMALL_IN"
log "generating $SMALL_FILES small inputs of $SMALL_ROWS rows"
small_inputs "$SMALL_FILES" "$SMALL_ROWS" "$SMALL_IN"
SMALL_TOTAL_ROWS=$((SMALL_FILES * SMALL_ROWS))

# --- reference conversions (also timed once for the breakdown) ---------------------------------
log "reference conversions"
REF_BIG="$WORK/ref-big"
mkdir -p "$REF_BIG"
run_timed ref-big "$BIN" convert --config "$CFG" --out "$REF_BIG" "$BIG_IN"
shopt -s nullglob
ref=("$REF_BIG"/*)
shopt -u nullglob
[[ ${#ref[@]} -eq 1 ]] || die "convert of the big input wrote ${#ref[@]} files, expected exactly 1 (${ref[*]})"
BIG_FILE=${ref[0]}
BIG_BYTES=$(stat -c %s "$BIG_FILE")
big_lines=$(wc -l <"$BIG_FILE")
((big_lines == BIG_ROWS + 2)) || die "$BIG_FILE: $big_lines lines, expected $((BIG_ROWS + 2))"
[[ "$(tail -n 1 "$BIG_FILE")" == EOF ]] || die "$BIG_FILE does not end in EOF"
[[ "$(sed -n 2p "$BIG_FILE")" == 55119*";id1;" && "$(tail -n 2 "$BIG_FILE" | head -n 1)" == *";id$BIG_ROWS;" ]] ||
    die "$BIG_FILE: first/last rows are not 'number;text;id1;' ... 'id$BIG_ROWS;' (fields split wrongly?)"
BIG_MD5=$(md5sum <"$BIG_FILE" | cut -d' ' -f1)
log "big batch file: $(basename "$BIG_FILE"), $BIG_BYTES bytes"

REF_SMALL="$WORK/ref-small"
mkdir -p "$REF_SMALL"
run_timed ref-small "$BIN" convert --config "$CFG" --out "$REF_SMALL" "$SMALL_IN"/*
SMALL_CONVERT_1=$T
n=$(find "$REF_SMALL" -type f | wc -l)
((n == SMALL_FILES)) || die "convert of the small inputs wrote $n files, expected $SMALL_FILES"
SMALL_BYTES=$(cat "$REF_SMALL"/* | wc -c)
small_lines=$(cat "$REF_SMALL"/* | wc -l)
((small_lines == SMALL_TOTAL_ROWS + 2 * SMALL_FILES)) ||
    die "small batch files hold $small_lines lines, expected $((SMALL_TOTAL_ROWS + 2 * SMALL_FILES))"
SMALL_DIGEST=$(lines_digest "$REF_SMALL"/*)
{
    echo "lcd $REF_SMALL"
    echo "cd upload"
    for f in "$REF_SMALL"/*; do echo "put $(basename "$f")"; done
} >"$WORK/small-put.sftp"
{
    echo "lcd $REF_SMALL"
    echo "cd upload"
    for f in "$REF_SMALL"/*; do
        b=$(basename "$f")
        echo "put $b .$b.part"
        echo "rename .$b.part $b"
    done
} >"$WORK/small-put-rename.sftp"
printf 'put %s upload/%s\n' "$BIG_FILE" "$(basename "$BIG_FILE")" >"$WORK/big-put.sftp"

# --- checks ------------------------------------------------------------------------------------
# check_jobs N ROWS: the journal holds N jobs, all `uploaded` with all their remote files, no
# rejected rows, ROWS rows in all.
check_jobs() {
    "$BIN" status --config "$CFG" --json --limit 100000 >"$WORK/status.json" 2>"$WORK/status.err" ||
        die "smsdrop status failed: $(cat "$WORK/status.err")"
    python3 - "$1" "$2" "$WORK/status.json" <<'PY' || die "journal check failed (see above)"
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
check_big_remote() { # check_big_remote WHO
    local n f
    n=$(remote_count)
    ((n == 1)) || die "$1: upload/ holds $n entries, expected 1: $(ls -A "$HOME_DIR/upload" | head)"
    f=$(find "$HOME_DIR/upload" -mindepth 1)
    [[ "$(basename "$f")" == "$SUB".*.txt && "$(basename "$f")" != .* ]] || die "$1: unexpected remote name $f"
    [[ $(stat -c %s "$f") == "$BIG_BYTES" ]] || die "$1: $f has $(stat -c %s "$f") bytes, expected $BIG_BYTES"
    [[ $(md5sum <"$f" | cut -d' ' -f1) == "$BIG_MD5" ]] || die "$1: $f differs from the converted batch file"
    BIG_REMOTE=$f
}
check_small_remote() { # check_small_remote WHO
    local n
    n=$(remote_count)
    ((n == SMALL_FILES)) || die "$1: upload/ holds $n entries, expected $SMALL_FILES"
    n=$(find "$HOME_DIR/upload" -mindepth 1 -name '.*' | wc -l)
    ((n == 0)) || die "$1: $n temporary (.part) files left in upload/"
    [[ $(lines_digest "$HOME_DIR"/upload/*) == "$SMALL_DIGEST" ]] ||
        die "$1: the uploaded files' lines differ from the converted batch files'"
}
check_send_output() { # check_send_output NAME FILES: one "uploaded" line per input
    local n
    n=$(grep -c ': uploaded (' "$WORK/$1.out" || true)
    ((n == $2)) || { head -n 5 "$WORK/$1.out" >&2; die "$1: $n inputs reported uploaded, expected $2"; }
}

# --- contenders ------------------------------------------------------------------------------------
big_convert() {
    rm -rf -- "$WORK/conv-big"
    mkdir -p "$WORK/conv-big"
    run_timed big-convert "$BIN" convert --config "$CFG" --out "$WORK/conv-big" "$BIG_IN"
    [[ $(cat "$WORK/conv-big"/* | md5sum | cut -d' ' -f1) == "$BIG_MD5" ]] || die "big-convert: output differs"
    rm -rf -- "$WORK/conv-big"
}
big_send() {
    clean_remote
    fresh_state
    run_timed big-send env RUST_LOG=smsdrop=debug "$BIN" send --config "$CFG" --no-wait "$BIG_IN"
    check_send_output big-send 1
    check_big_remote smsdrop
    check_jobs 1 "$BIG_ROWS"
    WIRE=$(wire_time "$BIG_REMOTE")
    # (the log has ANSI colours even when not on a terminal)
    CIPHER=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/big-send.err" | grep -o 'sftp session open.*cipher=Some("[^"]*")' |
        head -n 1 | sed 's/.*cipher=Some("\(.*\)")/\1/' || true)
    # smsdrop's own upload time: create of the temporary file to the rename (its "uploaded" line).
    GROUP=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/big-send.err" | grep -o 'group_secs=[0-9.]*' | head -n 1 | cut -d= -f2 || true)
    [[ -n "$GROUP" ]] || die "big-send: no group_secs in the log line of the upload"
    fresh_state
    clean_remote
}
big_sftp() { # big_sftp NAME [sftp options]
    local name=$1
    shift
    clean_remote
    run_timed "$name" "${SFTP[@]}" -v "$@" -b "$WORK/big-put.sftp" "$DEST"
    check_big_remote "$name"
    WIRE=$(wire_time "$BIG_REMOTE")
    SFTP_CIPHER=$(grep -o 'kex: client->server cipher: [^ ]*' "$WORK/$name.err" | head -n 1 | awk '{ print $4 }' || true)
    clean_remote
}
small_send() {
    clean_remote
    fresh_state
    run_timed small-send "$BIN" send --config "$CFG" --no-wait "$SMALL_IN"/*
    check_send_output small-send "$SMALL_FILES"
    check_small_remote smsdrop
    check_jobs "$SMALL_FILES" "$SMALL_TOTAL_ROWS"
    fresh_state
    clean_remote
}
small_sftp() { # small_sftp NAME SCRIPT
    clean_remote
    run_timed "$1" "${SFTP[@]}" -b "$2" "$DEST"
    check_small_remote "$1"
    clean_remote
}

# --- part 1: big file --------------------------------------------------------------------------------
log "part 1: one $(calc "%.1f" "$BIG_BYTES / 1e6") MB batch file; warm-up (untimed) + checks"
big_convert
big_send
SMSDROP_CIPHER=${CIPHER:-unknown}
big_sftp big-sftp
SFTP_DEFAULT_CIPHER=${SFTP_CIPHER:-unknown}
SAME_CIPHER=0
if [[ "$SMSDROP_CIPHER" != unknown && "$SMSDROP_CIPHER" != "$SFTP_DEFAULT_CIPHER" ]]; then
    SAME_CIPHER=1
    big_sftp big-sftp-c -c "$SMSDROP_CIPHER"
fi
log "ciphers: smsdrop $SMSDROP_CIPHER, sftp default $SFTP_DEFAULT_CIPHER"

BG=() BGRAT=() BC=() BS=() BU=() BW=() BP=() BPW=() BQ=() BQW=() BRAT=() BWRAT=() BRSS=() BCPU=() PCPU=() BQRAT=()
for ((r = 1; r <= ROUNDS; r++)); do
    order="convert send sftp sftpc"
    ((r % 2 == 0)) && order="sftpc sftp send convert"
    for what in $order; do
        case $what in
            convert)
                big_convert
                c=$T
                ;;
            send)
                big_send
                s=$T sw=$WIRE srss=$RSS scpu=$CPU sg=$GROUP
                ;;
            sftp)
                big_sftp big-sftp
                p=$T pw=$WIRE pcpu=$CPU
                ;;
            sftpc)
                if [[ $SAME_CIPHER == 1 ]]; then
                    big_sftp big-sftp-c -c "$SMSDROP_CIPHER"
                    q=$T qw=$WIRE
                fi
                ;;
        esac
    done
    u=$(calc "%.4f" "$s - $c")
    (($(calc "%d" "$u > 0.001"))) || die "round $r: send ($s s) not slower than convert ($c s); cannot derive the upload time"
    BC+=("$c") BS+=("$s") BU+=("$u") BW+=("$sw") BP+=("$p") BPW+=("$pw") BRSS+=("$srss") BCPU+=("$scpu") PCPU+=("$pcpu")
    BRAT+=("$(calc "%.3f" "$p / $u")")
    BG+=("$sg") BGRAT+=("$(calc "%.3f" "$p / $sg")")
    [[ "$sw" != n/a && "$pw" != n/a ]] && BWRAT+=("$(calc "%.3f" "$pw / $sw")")
    line="round $r/$ROUNDS: convert ${c}s  send ${s}s  => upload ${u}s ($(mbps "$BIG_BYTES" "$u") MB/s, wire ${sw}s)  sftp ${p}s ($(mbps "$BIG_BYTES" "$p") MB/s, wire ${pw}s)"
    if [[ $SAME_CIPHER == 1 ]]; then
        BQ+=("$q") BQW+=("$qw") BQRAT+=("$(calc "%.3f" "$q / $u")")
        line+="  sftp -c $SMSDROP_CIPHER ${q}s ($(mbps "$BIG_BYTES" "$q") MB/s)"
    fi
    log "$line"
done
BC_MED=$(median "${BC[@]}")
BS_MED=$(median "${BS[@]}")
BU_MED=$(median "${BU[@]}")
BP_MED=$(median "${BP[@]}")
BRAT_MED=$(calc "%.2f" "$(median "${BRAT[@]}")")
BG_MED=$(median "${BG[@]}")
BGRAT_MED=$(calc "%.2f" "$(median "${BGRAT[@]}")")
BIG_RSS=$(maxof "${BRSS[@]}")
BIG_CONVERT_RSS=$(tail -n 1 "$WORK/big-convert.time" | cut -d' ' -f1)
if [[ ${#BWRAT[@]} -gt 0 ]]; then
    BW_MED=$(median "${BW[@]}")
    BPW_MED=$(median "${BPW[@]}")
    WIRE_LINE="  on the wire (remote file birth -> last write, median): smsdrop $(mbps "$BIG_BYTES" "$BW_MED") MB/s (${BW_MED} s), sftp $(mbps "$BIG_BYTES" "$BPW_MED") MB/s (${BPW_MED} s); ratio $(calc "%.2f" "$(median "${BWRAT[@]}")")"
else
    WIRE_LINE="  on the wire: n/a (the file system reports no birth time)"
fi
SAME_LINE=""
if [[ $SAME_CIPHER == 1 ]]; then
    BQ_MED=$(median "${BQ[@]}")
    SAME_LINE="  sftp -b -c $SMSDROP_CIPHER   ${BQ_MED} s   $(mbps "$BIG_BYTES" "$BQ_MED") MB/s   ratio smsdrop/sftp (same cipher): $(calc "%.2f" "$(median "${BQRAT[@]}")")"
fi

# --- part 2: many small files -----------------------------------------------------------------------
log "part 2: $SMALL_FILES inputs of $SMALL_ROWS rows; warm-up (untimed) + checks"
small_send
small_sftp small-sftp "$WORK/small-put.sftp"
small_sftp small-sftp-rename "$WORK/small-put-rename.sftp"
SS=() SP=() SR=() SRAT=() SCPU=()
for ((r = 1; r <= ROUNDS; r++)); do
    order="send sftp rename"
    ((r % 2 == 0)) && order="rename sftp send"
    for what in $order; do
        case $what in
            send)
                small_send
                s=$T scpu=$CPU
                ;;
            sftp)
                small_sftp small-sftp "$WORK/small-put.sftp"
                p=$T
                ;;
            rename)
                small_sftp small-sftp-rename "$WORK/small-put-rename.sftp"
                q=$T
                ;;
        esac
    done
    SS+=("$s") SP+=("$p") SR+=("$q") SCPU+=("$scpu") SRAT+=("$(calc "%.3f" "$p / $s")")
    log "round $r/$ROUNDS: smsdrop send ${s}s ($(calc "%.0f" "$SMALL_FILES / $s") files/s, cpu ${scpu}s)  sftp put ${p}s ($(calc "%.0f" "$SMALL_FILES / $p") files/s)  sftp put+rename ${q}s ($(calc "%.0f" "$SMALL_FILES / $q") files/s)"
done
SS_MED=$(median "${SS[@]}")
SP_MED=$(median "${SP[@]}")
SR_MED=$(median "${SR[@]}")
SRAT_MED=$(calc "%.2f" "$(median "${SRAT[@]}")")
SCPU_MED=$(median "${SCPU[@]}")

# --- part 3: idle CPU ------------------------------------------------------------------------------
# idle_run LABEL [inbox lines] [more sections]: sets IDLE_CPU (s, from ticks), IDLE_RUN_MS
# (schedstat) and IDLE_CS (context switches) over the window.
CLK_TCK=$(getconf CLK_TCK)
proc_cpu() { # utime+stime ticks, summed schedstat ns and context switches over live threads
    local pid=$1 ticks ns=0 cs=0 t
    ticks=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")
    for t in /proc/"$pid"/task/*; do
        ns=$((ns + $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null || echo 0)))
        cs=$((cs + $(awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "$t/status" 2>/dev/null || echo 0)))
    done
    echo "$ticks $ns $cs"
}
idle_run() {
    local label=$1 inbox_extra=${2:-} track_extra=${3:-} a b rc=0
    fresh_state
    clean_remote
    mkdir -p "$WORK/idle-inbox"
    write_config "$WORK/idle.toml" "$STATE" "$WORK/idle-inbox" "$inbox_extra" "$track_extra"
    "$BIN" run --config "$WORK/idle.toml" >"$WORK/idle-$label.out" 2>"$WORK/idle-$label.err" &
    DAEMON_PID=$!
    sleep "$IDLE_SETTLE"
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/idle-$label.err" >&2; die "smsdrop run ($label) died while settling"; }
    a=$(proc_cpu "$DAEMON_PID")
    sleep "$IDLE_SECS"
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/idle-$label.err" >&2; die "smsdrop run ($label) died while idle"; }
    b=$(proc_cpu "$DAEMON_PID")
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=""
    ((rc == 0)) || { cat "$WORK/idle-$label.err" >&2; die "smsdrop run ($label) exited $rc on SIGTERM"; }
    n=$(remote_count)
    ((n == 0)) || die "smsdrop run ($label) uploaded something from an empty inbox"
    fresh_state
    read -r t1 n1 c1 <<<"$a"
    read -r t2 n2 c2 <<<"$b"
    IDLE_CPU=$(calc "%.2f" "($t2 - $t1) / $CLK_TCK")
    IDLE_RUN_MS=$(calc "%.1f" "($n2 - $n1) / 1e6")
    IDLE_CS=$((c2 - c1))
}
IDLE_LINES=""
if ((IDLE_SECS > 0)); then
    log "part 3: idle CPU of smsdrop run, defaults (settle ${IDLE_SETTLE}s, measure ${IDLE_SECS}s)"
    idle_run default
    IDLE_LINES="  defaults (notify + rescan 30 s, poll 30 s): ${IDLE_CPU} s CPU (/proc stat ticks), ${IDLE_RUN_MS} ms run time (schedstat), ${IDLE_CS} context switches in ${IDLE_SECS} s"
    if [[ "$IDLE_TIGHT" == 1 ]]; then
        log "part 3: idle CPU of smsdrop run, rescan_secs = poll_secs = 1"
        idle_run tight "rescan_secs = 1" $'[track]\npoll_secs = 1'
        IDLE_LINES+=$'\n'"  rescan_secs = 1, poll_secs = 1:          ${IDLE_CPU} s CPU (/proc stat ticks), ${IDLE_RUN_MS} ms run time (schedstat), ${IDLE_CS} context switches in ${IDLE_SECS} s"
    fi
else
    IDLE_LINES="  skipped (IDLE_SECS=0)"
fi

# --- part 5: latency of one drop into an idle daemon ------------------------------------------
LAT_LINE="  skipped (DROPS=0)"
if ((DROPS > 0)); then
    log "part 5: $DROPS single drops into an idle smsdrop run (stable_secs = 1)"
    fresh_state
    clean_remote
    mkdir -p "$WORK/lat-inbox" "$WORK/lat-ready"
    write_config "$WORK/lat.toml" "$STATE" "$WORK/lat-inbox" "stable_secs = 1"
    "$BIN" run --config "$WORK/lat.toml" >"$WORK/lat.out" 2>"$WORK/lat.err" &
    DAEMON_PID=$!
    sleep 2
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/lat.err" >&2; die "smsdrop run (latency) died at start"; }
    # Each drop: a prepared input renamed into the inbox (how an ERP's finished export appears),
    # then upload/ watched every 2 ms for a new final name; 3 s of idle between drops.
    LATS=$(python3 - "$DROPS" "$SMALL_IN" "$WORK/lat-ready" "$WORK/lat-inbox" "$HOME_DIR/upload" <<'PY'
import os, shutil, sys, time
drops, src, ready, inbox, upload = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
names = sorted(os.listdir(src))[:drops]
out = []
for i, n in enumerate(names):
    staged = os.path.join(ready, n)
    shutil.copyfile(os.path.join(src, n), staged)
    before = {f for f in os.listdir(upload) if not f.startswith(".")}
    time.sleep(3)
    t0 = time.monotonic()
    os.rename(staged, os.path.join(inbox, n))
    while True:
        now = {f for f in os.listdir(upload) if not f.startswith(".")}
        if now - before:
            break
        if time.monotonic() - t0 > 30:
            sys.exit("drop %d: nothing on the server after 30 s" % i)
        time.sleep(0.002)
    out.append("%.4f" % (time.monotonic() - t0))
print(" ".join(out))
PY
) || die "latency drops failed (see above; log: $WORK/lat.err)"
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || true
    DAEMON_PID=""
    read -r -a LAT <<<"$LATS"
    LAT_MED=$(median "${LAT[@]}")
    LAT_MAX=$(maxof "${LAT[@]}")
    LAT_LINE="  from the rename into the inbox to the file on the server: median ${LAT_MED} s, max ${LAT_MAX} s over ${#LAT[@]} drops (stable_secs = 1: target <= 1.1 s; $( (($(calc "%d" "$LAT_MAX <= 1.1"))) && echo met || echo MISSED))"
    log "latencies: ${LAT[*]}"
    fresh_state
    clean_remote
fi

# --- optional profile of the small-files send -----------------------------------------------------
if [[ "$PROFILE" == 1 ]]; then
    if command -v strace >/dev/null; then
        log "profile: strace -f -c of one $SMALL_FILES-file send"
        clean_remote
        fresh_state
        strace -f -c -o "$WORK/strace.txt" "$BIN" send --config "$CFG" --no-wait "$SMALL_IN"/* >/dev/null 2>&1 ||
            die "send under strace failed"
        check_small_remote "smsdrop (strace)"
        head -n 25 "$WORK/strace.txt" >&2
    fi
    if command -v perf >/dev/null; then
        log "profile: perf record -g of one $SMALL_FILES-file send"
        clean_remote
        fresh_state
        perf record -q -g -o "$WORK/perf.data" "$BIN" send --config "$CFG" --no-wait "$SMALL_IN"/* >/dev/null 2>&1 ||
            die "send under perf failed"
        check_small_remote "smsdrop (perf)"
        perf report -i "$WORK/perf.data" --no-children --stdio --percent-limit 1.5 -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 30 >&2 || true
    fi
    fresh_state
    clean_remote
fi

# --- summary ---------------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
verdict() { (($(calc "%d" "$1 >= 1.0"))) && echo "target >= 1.0 met" || echo "target >= 1.0 MISSED"; }
cat <<SUMMARY

### smsdrop delivery benchmark (benches/deliver.sh)
date:     $(date -u '+%Y-%m-%d %H:%M UTC')
machine:  nproc=$(nproc)${CPU_MODEL:+, $CPU_MODEL}; load avg at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)
smsdrop:  $("$BIN" --version 2>/dev/null || echo smsdrop), HEAD $COMMIT${DIRTY:+ (+local changes)}, target/release built $BIN_BUILT
server:   $("$SSHD" -V 2>&1 | head -n 1 || true) on 127.0.0.1 (internal-sftp), same machine
ciphers:  smsdrop (libssh2) $SMSDROP_CIPHER; OpenSSH sftp default $SFTP_DEFAULT_CIPHER
rounds:   $ROUNDS of each, alternating, after one warm-up each; medians; every run on an empty
          remote upload/ and a fresh smsdrop state dir; results checked (counts, sizes, contents)
1. one batch file, $(calc "%.1f" "$BIG_BYTES / 1e6") MB ($(group "$BIG_ROWS") rows; input $(calc "%.1f" "$BIG_IN_BYTES / 1e6") MB)
  smsdrop convert alone      ${BC_MED} s
  smsdrop send --no-wait     ${BS_MED} s   (hash + convert + journal + archive copy + connect + upload)
  => smsdrop upload part     ${BU_MED} s   $(mbps "$BIG_BYTES" "$BU_MED") MB/s   (send - convert, per round)
  sftp -b put                ${BP_MED} s   $(mbps "$BIG_BYTES" "$BP_MED") MB/s   (connect + upload)
  ratio smsdrop/sftp MB/s (median of per-round ratios): ${BRAT_MED}   ($(verdict "$BRAT_MED"))
  smsdrop upload alone       ${BG_MED} s   $(mbps "$BIG_BYTES" "$BG_MED") MB/s   (its log: create of the temp file -> rename, no login)
  ratio sftp -b put / smsdrop upload alone (median of per-round ratios): ${BGRAT_MED}   ($(verdict "$BGRAT_MED"); sftp's time includes its login)
$WIRE_LINE${SAME_LINE:+
$SAME_LINE}
  CPU (user+sys, median): smsdrop send $(calc "%.2f" "$(median "${BCPU[@]}")") s, sftp+ssh client $(calc "%.2f" "$(median "${PCPU[@]}")") s
2. $(group "$SMALL_FILES") inputs of $SMALL_ROWS rows ($(calc "%.1f" "$SMALL_BYTES / 1e3") kB of batch files), end to end
  smsdrop send --no-wait     ${SS_MED} s   $(calc "%.0f" "$SMALL_FILES / $SS_MED") files/s   (convert + journal + archive + upload; CPU $(calc "%.2f" "$SCPU_MED") s)
  sftp -b, $SMALL_FILES x put       ${SP_MED} s   $(calc "%.0f" "$SMALL_FILES / $SP_MED") files/s   (already converted; one session)
  sftp -b, put + rename      ${SR_MED} s   $(calc "%.0f" "$SMALL_FILES / $SR_MED") files/s   (smsdrop's remote protocol; for reference)
  ratio smsdrop/sftp files/s (median of per-round ratios): ${SRAT_MED}   ($(verdict "$SRAT_MED"))
  (smsdrop convert of the same $SMALL_FILES inputs alone, one run: ${SMALL_CONVERT_1} s)
3. idle CPU of smsdrop run, empty inbox, ${IDLE_SECS} s after ${IDLE_SETTLE} s settling
$IDLE_LINES
4. peak RSS (/usr/bin/time %M): smsdrop send of the $(calc "%.0f" "$BIG_BYTES / 1e6") MB file $(kib_to_mib "$BIG_RSS") MiB (max of $ROUNDS); smsdrop convert alone $(kib_to_mib "$BIG_CONVERT_RSS") MiB
5. latency of one input dropped into an idle smsdrop run
$LAT_LINE
SUMMARY
