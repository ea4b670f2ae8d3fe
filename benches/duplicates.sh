#!/usr/bin/env bash
# Benchmark of the row guard (`[batch] duplicate_rows = "skip"`) end to end, as a user runs it:
# what 1,000,000 remembered rows cost `smsdrop send --no-wait` of one new 100,000-row export
# (a new process: journal open, index load, convert, guard, journal, archive, SSH login, upload)
# against a real OpenSSH sshd on loopback (started here, as benches/deliver.sh does).
#
# Two state folders, same config apart from their paths:
#   EMPTY  SEED_FILES exports of ROWS distinct rows sent with duplicate_rows = "send": the same
#          jobs, batch files, archive and spool as FULL, but no row remembered
#   FULL   the same exports sent with duplicate_rows = "skip": SEED_FILES x ROWS distinct rows
#          remembered (1,000,000 by default; checked in the journal)
# The remote upload/ is emptied after every seeding send. A pristine copy of each folder
# (cp -a) is restored before every run, so every run starts from the same state. A positive
# control (once, untimed, on a copy of FULL) checks that FULL's rows are really skipped.
# Contenders, each sending the same NEW export (ROWS rows that are not in the seeded set):
#   skip/EMPTY   duplicate_rows = "skip" (the default) on EMPTY
#   skip/FULL    duplicate_rows = "skip" on FULL
#   send/EMPTY   duplicate_rows = "send" on EMPTY: no guard at all, so the guard's own cost shows
# One untimed warm-up of each, then ROUNDS rounds; odd rounds run them in the order above, even
# rounds in reverse (the machine is shared: alternating spreads the noise). Every run is checked:
# exit 0, one "uploaded" line, upload/ holds the batch files and no temporary file, their rows
# are exactly the reference conversion's (ROWS rows). Timed: wall clock of the command
# (EPOCHREALTIME); peak RSS and CPU from GNU time. Ends with a summary block for the README.
#
# Usage: benches/duplicates.sh
# Environment (defaults):
#   ROUNDS=5          timed rounds of each contender
#   ROWS=100000       rows of the new export and of each seed export
#   SEED_FILES=10     seed exports (remembered rows in FULL: SEED_FILES x ROWS)
#   PROFILE=0         1: afterwards, one skip/EMPTY and one skip/FULL send at
#                     RUST_LOG=smsdrop=debug (their log lines with timings) and under
#                     `strace -f -c` (syscall summary), and under `perf record -g` if perf works
#   KEEP=0            1: keep the scratch folder (its path is printed)
#   SSHD=/usr/sbin/sshd   the sshd binary
#   TMPDIR            where the scratch folder goes (needs ~4 GB free with the defaults: each run's
#                     state folder, ~220 MB, is moved aside until the end)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
ROWS=${ROWS:-100000}
SEED_FILES=${SEED_FILES:-10}
PROFILE=${PROFILE:-0}
KEEP=${KEEP:-0}
SSHD=${SSHD:-/usr/sbin/sshd}
SUB=BENCH
ROWS_PER_FILE=50000 # the default [batch] max_rows_per_file, as a user has it

case "${1:-}" in
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "duplicates.sh: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
esac

die() {
    echo "duplicates.sh: ERROR: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

for v in ROUNDS ROWS SEED_FILES; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
((SEED_FILES * ROWS + ROWS < 100000000)) || die "SEED_FILES x ROWS must stay under 10^8 (8-digit numbers)"

# --- tools -----------------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"
BIN="$REPO_ROOT/target/release/smsdrop"
log "cargo build --release --locked"
(cd "$REPO_ROOT" && cargo build --release --locked) >&2 || die "cargo build --release --locked failed"
[[ -x "$BIN" ]] || die "cargo build --release did not produce $BIN"
[[ -x "$SSHD" ]] || die "no sshd at $SSHD (apt-get install openssh-server, or set SSHD=)"
command -v ssh-keygen >/dev/null || die "ssh-keygen not found (apt-get install openssh-client)"
command -v python3 >/dev/null || die "python3 not found (needed to generate inputs and read the journal)"
TIME_BIN=/usr/bin/time
[[ -x "$TIME_BIN" ]] || die "$TIME_BIN (GNU time, package 'time') is missing; it is needed for peak RSS"
SSHD=$(readlink -f "$SSHD") # sshd re-executes itself: absolute path

COMMIT=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | head -n 1)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- scratch dir, cleanup ----------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smsdrop-duplicates-bench.XXXXXX")
chmod 755 "$WORK"
SSHD_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$SSHD_PID" ]]; then kill_tree "$SSHD_PID"; fi
    if [[ "$KEEP" == 1 ]]; then
        echo "duplicates.sh: scratch folder kept: $WORK" >&2
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$WORK"


# --- sshd ------------------------------------------------------------------------------------
SSH_DIR="$WORK/sshd"
HOME_DIR="$WORK/home"
bench_keys
start_sshd
log "sshd pid $SSHD_PID on 127.0.0.1:$PORT, login $LOGIN, home $HOME_DIR"

# Old folders are moved aside, not deleted, until the end (see deliver.sh: ext4 avoids inodes
# freed in the last minute, which slows the files created right after a big delete).
TRASH="$WORK/trash"
mkdir -p "$TRASH"

# write_config FILE STATE_DIR DUPLICATE_ROWS: the defaults a user has ([inbox] duplicate_days
# = 7, max_rows_per_file = 50000), against the bench sshd.
write_config() {
    cat >"$1" <<EOF
[batch]
subaccount = "$SUB"
timezone = "America/Sao_Paulo"
duplicate_rows = "$3"

[inbox]
dir = "$WORK/inbox-unused"

[sftp]
host = "127.0.0.1"
port = $PORT
username = "$LOGIN"
private_key = "$KEY"
known_hosts = "$KNOWN"

[state]
dir = "$2"
EOF
}
# Both live states at paths of the same length; `send` runs on the EMPTY path.
E_STATE="$WORK/states/empty"
F_STATE="$WORK/states/full0"
E_PRISTINE="$WORK/pristine/empty"
F_PRISTINE="$WORK/pristine/full0"
mkdir -p "$WORK/states" "$WORK/pristine"
write_config "$WORK/skip-empty.toml" "$E_STATE" skip
write_config "$WORK/skip-full0.toml" "$F_STATE" skip
write_config "$WORK/send-empty.toml" "$E_STATE" send


# --- inputs ------------------------------------------------------------------------------------
# Row i (0-based over all files): number 55119 + 8 digits, a bijection of i (7919 is prime to
# 10^8), so every row of every file is distinct; texts from a few templates, names and amounts.
# Seed file k holds rows k*ROWS ..; the new export the next ROWS rows.
log "generating $SEED_FILES seed exports and 1 new export of $(group "$ROWS") rows"
mkdir -p "$WORK/seed"
python3 - "$SEED_FILES" "$ROWS" "$WORK/seed" "$WORK/new.csv" <<'PY'
import os, sys
files, rows, seed_dir, new_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
names = ["Maria", "João", "Ana", "José", "Antônio", "Francisca", "Luís", "Márcia", "Fábio", "Lúcia"]
templates = [
    "Olá {n}, sua fatura {i} de R$ {v},{c} vence amanhã. Pague pelo app e evite juros.",
    "{n}, lembrete: consulta {i} marcada para {d}/{m} às {h}h. Responda SIM para confirmar.",
    "Pedido {i} enviado, {n}! Entrega prevista em {d}/{m}. Rastreie pelo nosso site.",
    "{n}, seu código de acesso é {v}{c}. Não compartilhe. Ref {i}.",
]
def write(path, lo, hi):
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write("telefone;mensagem;id\n")
        buf = []
        for i in range(lo, hi):
            phone = "55119%08d" % ((i * 7919 + 1234567) % 100000000)
            text = templates[i % 4].format(n=names[(i // 4) % 10], i=i, v=20 + (i * 37) % 1480,
                                           c="%02d" % (i % 100), d=1 + i % 28, m=1 + i % 12, h=8 + i % 10)
            buf.append("%s;%s;r%d\n" % (phone, text, i))
        out.write("".join(buf))
for k in range(files):
    write(os.path.join(seed_dir, "erp-seed-%02d.csv" % k), k * rows, (k + 1) * rows)
write(new_path, files * rows, (files + 1) * rows)
# The positive control: half rows of seed file 0, half new rows beyond the new export.
with open(os.path.join(os.path.dirname(new_path), "control.csv"), "w", encoding="utf-8", newline="\n") as out:
    seed = open(os.path.join(seed_dir, "erp-seed-00.csv"), encoding="utf-8").read().splitlines()[1:51]
    out.write("telefone;mensagem;id\n" + "\n".join(seed) + "\n")
    for i in range((files + 1) * rows, (files + 1) * rows + 50):
        out.write("55119%08d;Controle %d, novo.;c%d\n" % ((i * 7919 + 1234567) % 100000000, i, i))
PY
NEW="$WORK/new.csv"
NEW_MB=$(calc "%.1f" "$(stat -c %s "$NEW") / 1e6")
BATCH_FILES=$(((ROWS + ROWS_PER_FILE - 1) / ROWS_PER_FILE))

# Reference: the new export converted; every run's uploaded rows must equal these.
lines_digest() { grep -hv -e '^EOF$' "$@" | LC_ALL=C sort | md5sum | cut -d' ' -f1; }
mkdir -p "$WORK/ref"
run_timed ref "$BIN" convert --config "$WORK/skip-empty.toml" --out "$WORK/ref" "$NEW"
n=$(find "$WORK/ref" -type f | wc -l)
((n == BATCH_FILES)) || die "convert of the new export wrote $n files, expected $BATCH_FILES"
ref_lines=$(cat "$WORK/ref"/* | wc -l)
((ref_lines == ROWS + 2 * BATCH_FILES)) || die "reference batch files hold $ref_lines lines, expected $((ROWS + 2 * BATCH_FILES))"
REF_DIGEST=$(lines_digest "$WORK/ref"/*)

# --- checks ------------------------------------------------------------------------------------
# check_run NAME: exit 0 was checked by run_timed; one "uploaded" line; upload/ holds
# BATCH_FILES batch files and nothing else, with exactly the reference rows (ROWS in all).
check_run() {
    local n rows
    n=$(grep -c ': uploaded (' "$WORK/$1.out" || true)
    ((n == 1)) || { head -n 5 "$WORK/$1.out" >&2; die "$1: $n inputs reported uploaded, expected 1"; }
    n=$(find "$HOME_DIR/upload" -mindepth 1 | wc -l)
    ((n == BATCH_FILES)) || die "$1: upload/ holds $n entries, expected $BATCH_FILES: $(ls -A "$HOME_DIR/upload" | head)"
    n=$(find "$HOME_DIR/upload" -mindepth 1 -name '.*' | wc -l)
    ((n == 0)) || die "$1: $n temporary files left in upload/"
    rows=$(cat "$HOME_DIR"/upload/* | wc -l)
    rows=$((rows - 2 * BATCH_FILES))
    ((rows == ROWS)) || die "$1: the uploaded files hold $rows rows, expected $ROWS"
    [[ $(lines_digest "$HOME_DIR"/upload/*) == "$REF_DIGEST" ]] ||
        die "$1: the uploaded rows differ from the reference conversion's"
}
# remembered STATE: rows the journal remembers.
remembered() {
    python3 - "$1/journal.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(c.execute("SELECT coalesce(sum(length(rows)), 0) / 20 FROM remembered").fetchone()[0])
PY
}

# --- seeding -----------------------------------------------------------------------------------
# seed CONFIG STATE: SEED_FILES sends, one export each, remote upload/ emptied after each.
seed() {
    local cfg=$1 state=$2 f k=0
    aside "$state"
    for f in "$WORK"/seed/*.csv; do
        clean_remote
        run_timed "seed-$(basename "$state")-$k" "$BIN" send --config "$cfg" --no-wait "$f"
        n=$(grep -c ': uploaded (' "$WORK/seed-$(basename "$state")-$k.out" || true)
        ((n == 1)) || die "seeding $state with $f: not uploaded"
        k=$((k + 1))
    done
    clean_remote
}
t0=$(now)
log "seeding FULL: $SEED_FILES sends of $(group "$ROWS") rows with duplicate_rows = \"skip\""
seed "$WORK/skip-full0.toml" "$F_STATE"
log "seeding EMPTY: the same $SEED_FILES sends with duplicate_rows = \"send\""
seed "$WORK/send-empty.toml" "$E_STATE"
log "seeded in $(elapsed "$t0" "$(now)") s"
FULL_REMEMBERED=$(remembered "$F_STATE")
EMPTY_REMEMBERED=$(remembered "$E_STATE")
((FULL_REMEMBERED == SEED_FILES * ROWS)) || die "FULL remembers $FULL_REMEMBERED rows, expected $((SEED_FILES * ROWS))"
((EMPTY_REMEMBERED == 0)) || die "EMPTY remembers $EMPTY_REMEMBERED rows, expected 0"
cp -a "$F_STATE" "$F_PRISTINE"
cp -a "$E_STATE" "$E_PRISTINE"
FULL_JOURNAL_MB=$(calc "%.1f" "$(du -b "$F_PRISTINE"/journal.db* | awk '{ s += $1 } END { print s }') / 1e6")
EMPTY_JOURNAL_MB=$(calc "%.1f" "$(du -b "$E_PRISTINE"/journal.db* | awk '{ s += $1 } END { print s }') / 1e6")
log "FULL: $(group "$FULL_REMEMBERED") rows remembered, journal $FULL_JOURNAL_MB MB, state $(du -sh "$F_PRISTINE" | cut -f1); EMPTY: journal $EMPTY_JOURNAL_MB MB"

restore() { # restore STATE PRISTINE
    aside "$1"
    cp -a "$2" "$1"
}

# Positive control (untimed): on FULL, 50 rows of seed file 0 and 50 new rows: 50 go out.
restore "$F_STATE" "$F_PRISTINE"
clean_remote
run_timed control "$BIN" send --config "$WORK/skip-full0.toml" --no-wait "$WORK/control.csv"
rows=$(($(cat "$HOME_DIR"/upload/* | wc -l) - 2))
((rows == 50)) || die "control: $rows rows uploaded, expected 50 (the other 50 were sent by the seeding)"
grep -q ';c' <(cat "$HOME_DIR"/upload/*) || die "control: the new rows were not uploaded"
log "control: FULL skipped the 50 seeded rows and sent the 50 new ones"

# --- contenders --------------------------------------------------------------------------------
contender() { # contender skip-empty|skip-full0|send-empty NAME: sets T, RSS, CPU
    local cfg=$1 name=$2
    case $cfg in
        skip-full0) restore "$F_STATE" "$F_PRISTINE" ;;
        *) restore "$E_STATE" "$E_PRISTINE" ;;
    esac
    clean_remote
    sync
    run_timed "$name" "$BIN" send --config "$WORK/$cfg.toml" --no-wait "$NEW"
    check_run "$name"
}

log "warm-up (untimed, checked): one send of the new export on each"
for c in skip-empty skip-full0 send-empty; do contender "$c" "warm-$c"; done

TE=() TF=() TS=() RE=() RF=() RS=() CE=() CF=() CS=() RAT=() GRAT=()
for ((r = 1; r <= ROUNDS; r++)); do
    order="skip-empty skip-full0 send-empty"
    ((r % 2 == 0)) && order="send-empty skip-full0 skip-empty"
    for c in $order; do
        contender "$c" "$c-$r"
        case $c in
            skip-empty) e=$T && RE+=("$RSS") CE+=("$CPU") ;;
            skip-full0) f=$T && RF+=("$RSS") CF+=("$CPU") ;;
            send-empty) s=$T && RS+=("$RSS") CS+=("$CPU") ;;
        esac
    done
    TE+=("$e") TF+=("$f") TS+=("$s")
    RAT+=("$(calc "%.4f" "$f / $e")") GRAT+=("$(calc "%.4f" "$e / $s")")
    log "round $r/$ROUNDS ($order): skip/EMPTY ${e}s  skip/FULL ${f}s  send/EMPTY ${s}s  FULL/EMPTY $(calc "%.3f" "$f / $e")"
done
E_MED=$(median "${TE[@]}")
F_MED=$(median "${TF[@]}")
S_MED=$(median "${TS[@]}")
RATIO=$(calc "%.3f" "$F_MED / $E_MED")
RATIO_R=$(calc "%.3f" "$(median "${RAT[@]}")")
GUARD=$(calc "%.3f" "$E_MED / $S_MED")
VERDICT=$( (($(calc "%d" "$RATIO <= 1.10"))) && echo "met" || echo "NOT met")
rss_line() { echo "$(kib_to_mib "$(median "$@")") MiB (max $(kib_to_mib "$(maxof "$@")"))"; }

# --- optional profile --------------------------------------------------------------------------
if [[ "$PROFILE" == 1 ]]; then
    for c in skip-empty skip-full0; do
        log "profile: $c at RUST_LOG=smsdrop=debug"
        case $c in skip-full0) restore "$F_STATE" "$F_PRISTINE" ;; *) restore "$E_STATE" "$E_PRISTINE" ;; esac
        clean_remote
        run_timed "debug-$c" env RUST_LOG=smsdrop=debug "$BIN" send --config "$WORK/$c.toml" --no-wait "$NEW"
        check_run "debug-$c"
        echo "-- $c: ${T}s" >&2
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/debug-$c.err" | cut -c1-220 >&2
        if command -v strace >/dev/null; then
            log "profile: $c under strace -f -c"
            case $c in skip-full0) restore "$F_STATE" "$F_PRISTINE" ;; *) restore "$E_STATE" "$E_PRISTINE" ;; esac
            clean_remote
            strace -f -c -o "$WORK/strace-$c.txt" "$BIN" send --config "$WORK/$c.toml" --no-wait "$NEW" \
                >"$WORK/strace-$c.out" 2>"$WORK/strace-$c.err" || die "send under strace failed"
            check_run "strace-$c"
            head -n 15 "$WORK/strace-$c.txt" >&2
        fi
        if command -v perf >/dev/null; then
            log "profile: $c under perf record -g"
            case $c in skip-full0) restore "$F_STATE" "$F_PRISTINE" ;; *) restore "$E_STATE" "$E_PRISTINE" ;; esac
            clean_remote
            if perf record -q -g -o "$WORK/perf-$c.data" "$BIN" send --config "$WORK/$c.toml" --no-wait "$NEW" \
                >"$WORK/perf-$c.out" 2>"$WORK/perf-$c.err"; then
                check_run "perf-$c"
                perf report -i "$WORK/perf-$c.data" --no-children --stdio --percent-limit 2 -g none 2>/dev/null |
                    grep -v '^#' | grep -v '^$' | head -n 25 >&2 || true
            else
                log "perf record failed: $(head -n 2 "$WORK/perf-$c.err")"
            fi
        fi
    done
fi

# --- summary ---------------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
cat <<SUMMARY

### smsdrop row guard benchmark, end to end (benches/duplicates.sh)
date:     $(date -u '+%Y-%m-%d %H:%M UTC')
machine:  nproc=$(nproc)${CPU_MODEL:+, $CPU_MODEL}; load avg at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)
smsdrop:  $("$BIN" --version 2>/dev/null || echo smsdrop), HEAD $COMMIT${DIRTY:+ (+local changes)}
server:   $("$SSHD" -V 2>&1 | head -n 1 || true) on 127.0.0.1 (internal-sftp), same machine
command:  smsdrop send --no-wait of one new export, $(group "$ROWS") rows ($NEW_MB MB, $BATCH_FILES batch files
          of $(group "$ROWS_PER_FILE")), default [inbox] duplicate_days = 7
states:   FULL $(group "$FULL_REMEMBERED") rows remembered ($SEED_FILES seeded sends, journal $FULL_JOURNAL_MB MB);
          EMPTY the same sends with duplicate_rows = "send" (journal $EMPTY_JOURNAL_MB MB, nothing remembered);
          each restored from a pristine copy before every run
rounds:   $ROUNDS, alternating order, after one warm-up each; medians; every run checked
          (exit 0, $BATCH_FILES files on the server holding the $(group "$ROWS") rows)
  duplicate_rows = "send",  EMPTY    ${S_MED} s   peak RSS $(rss_line "${RS[@]}")   CPU $(calc "%.2f" "$(median "${CS[@]}")") s
  duplicate_rows = "skip",  EMPTY    ${E_MED} s   peak RSS $(rss_line "${RE[@]}")   CPU $(calc "%.2f" "$(median "${CE[@]}")") s
  duplicate_rows = "skip",  FULL     ${F_MED} s   peak RSS $(rss_line "${RF[@]}")   CPU $(calc "%.2f" "$(median "${CF[@]}")") s
  FULL/EMPTY: ${RATIO} (ratio of medians; median of per-round ratios ${RATIO_R}): the 10% target is ${VERDICT}
  guard with nothing remembered vs "send": ${GUARD}
  per run (s): send ${TS[*]}
               skip/EMPTY ${TE[*]}
               skip/FULL ${TF[*]}
SUMMARY
