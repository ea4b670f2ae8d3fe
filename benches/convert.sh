#!/usr/bin/env bash
# Benchmark for `smsdrop convert`.
#
# Generates a deterministic ERP-style CSV (UTF-8, ';', header `telefone;mensagem;id`, Brazilian
# numbers in several formats, Portuguese texts with accents and commas), then:
#   1. times `smsdrop convert` against a naive mawk one-liner that does no validation,
#      alternating the two (ABAB...) for ROUNDS rounds after one untimed warm-up of each;
#   2. measures smsdrop's peak RSS (/usr/bin/time -f %M) on the file and on a 10x larger one;
#   3. checks every smsdrop output (exit 0, header line, `EOF` trailer, row count) and fails
#      loudly if convert broke;
#   4. prints a summary block to paste into a README.
#
# Usage: benches/convert.sh [--no-big]
# Environment (defaults):
#   ROWS=1000000   rows in the main input (~78 bytes a row, ~78 MB)
#   ROUNDS=5       timed rounds of each command
#   BENCH_BIG=1    0 skips the 10x (ROWS*10) peak-RSS run; same as --no-big
#   TMPDIR         where the temporary directory goes (needs ~2 GB free with BENCH_BIG=1)
set -euo pipefail

ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-5}
BENCH_BIG=${BENCH_BIG:-1}
BIG_FACTOR=10

for arg in "$@"; do
    case "$arg" in
        --no-big) BENCH_BIG=0 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "convert.sh: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

die() {
    echo "convert.sh: ERROR: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

[[ "$ROWS" =~ ^[1-9][0-9]*$ ]] || die "ROWS must be a positive integer, got '$ROWS'"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"

# --- tools -----------------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$REPO_ROOT/target/release/smsdrop"
if [[ ! -x "$BIN" ]]; then
    log "$BIN missing; running cargo build --release"
    (cd "$REPO_ROOT" && cargo build --release)
    [[ -x "$BIN" ]] || die "cargo build --release did not produce $BIN"
fi
command -v mawk >/dev/null || die "mawk not found (apt-get install mawk)"
command -v python3 >/dev/null || die "python3 not found (needed to generate the input)"
TIME_BIN=/usr/bin/time
if [[ ! -x "$TIME_BIN" ]]; then
    echo "convert.sh: $TIME_BIN is missing (GNU time, Debian/Ubuntu package 'time'); it is needed for peak RSS." >&2
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "convert.sh: installing it: apt-get install -y time" >&2
        apt-get install -y time >&2 || { apt-get update >&2 && apt-get install -y time >&2; } ||
            die "apt-get install time failed; install GNU time and rerun"
    else
        die "install it (sudo apt-get install time) and rerun"
    fi
    [[ -x "$TIME_BIN" ]] || die "$TIME_BIN still missing after installing 'time'"
fi

COMMIT=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
BIN_BUILT=$(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')

# --- scratch dir (also keeps ./smsdrop.toml of the caller out of the way) ---------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smsdrop-bench.XXXXXX")
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$WORK"
CONFIG="$WORK/bench.toml"
printf '[batch]\nmax_rows_per_file = 1000000\n' >"$CONFIG"
SUB=bench
DAY=2026-01-01

# --- input generation ------------------------------------------------------------------------
# gen ROWS FILE: deterministic; row i depends only on i.
gen() {
    python3 - "$1" "$2" <<'PY'
import sys

rows, path = int(sys.argv[1]), sys.argv[2]
DDD = ["11", "21", "31", "41", "51", "61", "71", "81", "85", "19", "27", "48", "62", "92", "13", "84"]
NAMES = ["Maria", "João", "Ana", "José", "Antônio", "Francisca", "Conceição", "Luís", "Sebastião",
         "Márcia", "Raimundo", "Cláudia", "Fábio", "Lúcia", "Tânia", "Inês"]
TEXTS = [
    "Olá {n}, sua fatura de R$ {v} vence amanhã. Código {c}",
    "{n}, seu pedido {c} foi enviado.",
    "Consulta dia {d}/{m} às {h}h. Responda SIM ou NÃO.",
    "Promoção! Até {p}% off em calçados, roupas e acessórios.",
    "Seu código de verificação é {c}",
    "Prezado(a) {n}, o boleto de R$ {v} do mês {m} já está disponível. "
    "Após o vencimento, multa de 2% e juros de 1% ao mês.",
    "{n}, sua entrega chega amanhã, entre {h}h e {h2}h.",
    "Atenção: tentativa de acesso. Não foi você? Ligue já.",
    "Obrigado, {n}! Pagamento de R$ {v} confirmado.",
    "Código {c}: não compartilhe.",
    "Olá {n}, sua recarga de R$ {v} foi concluída.",
]

out = open(path, "w", encoding="utf-8", newline="\n")
out.write("telefone;mensagem;id\n")
buf = []
for i in range(rows):
    ddd = DDD[i % len(DDD)]
    sub = "9" + "%08d" % ((i * 7919 + 12345678) % 100000000)
    f = i % 4
    if f == 0:
        phone = "(%s) %s-%s" % (ddd, sub[:5], sub[5:])
    elif f == 1:
        phone = "+55 %s %s-%s" % (ddd, sub[:5], sub[5:])
    elif f == 2:
        phone = ddd + sub
    else:
        phone = "%s %s-%s" % (ddd, sub[:5], sub[5:])
    k = (i * 31 + i // 7) % len(TEXTS)
    text = TEXTS[k].format(
        n=NAMES[(i // 3) % len(NAMES)],
        v="%d,%02d" % (20 + (i * 37) % 1480, (i * 13) % 100),
        c="%05d" % ((i * 104729) % 100000),
        d=1 + i % 28, m=1 + (i // 28) % 12, h=8 + i % 10, h2=10 + i % 10,
        p=10 + (i % 8) * 5,
    )
    buf.append("%s;%s;%d\n" % (phone, text, i + 1))
    if len(buf) >= 100000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
out.close()
PY
}

# --- runs and checks ---------------------------------------------------------------------------
# run_smsdrop INPUT OUTDIR [time-output-file]: one convert, exit code must be 0.
run_smsdrop() {
    local input=$1 outdir=$2 timefile=${3:-} rc=0
    rm -rf -- "$outdir"
    mkdir -p -- "$outdir"
    if [[ -n "$timefile" ]]; then
        "$TIME_BIN" -f %M -o "$timefile" "$BIN" convert --config "$CONFIG" --subaccount "$SUB" \
            --out "$outdir" --date "$DAY" "$input" >"$WORK/smsdrop.log" 2>&1 || rc=$?
    else
        "$BIN" convert --config "$CONFIG" --subaccount "$SUB" \
            --out "$outdir" --date "$DAY" "$input" >"$WORK/smsdrop.log" 2>&1 || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        echo "---- smsdrop output (first 40 lines) ----" >&2
        head -n 40 "$WORK/smsdrop.log" >&2
        die "smsdrop convert exited $rc on $input (expected 0: every generated row is valid)"
    fi
}

# check_smsdrop_out OUTDIR ROWS: every file has the header line and ends in EOF, and the files
# hold exactly ROWS rows (lines = rows + header line + EOF per file).
check_smsdrop_out() {
    local outdir=$1 rows=$2 f n=0 lines total=0
    shopt -s nullglob
    local files=("$outdir"/*)
    shopt -u nullglob
    [[ ${#files[@]} -gt 0 ]] || die "smsdrop wrote no file into $outdir"
    for f in "${files[@]}"; do
        [[ "$(head -n 1 -- "$f")" == "number;text;correlationId;" ]] ||
            die "$f: first line is not the header line 'number;text;correlationId;'"
        [[ "$(tail -n 1 -- "$f")" == "EOF" ]] || die "$f: last line is not 'EOF'"
        lines=$(wc -l <"$f")
        ((lines >= 3)) || die "$f: only $lines lines"
        total=$((total + lines - 2))
        n=$((n + 1))
    done
    ((total == rows)) ||
        die "smsdrop output in $outdir holds $total rows in $n file(s), expected $rows"
    if ((n == 1)); then
        lines=$(wc -l <"${files[0]}")
        ((lines == rows + 2)) || die "${files[0]}: $lines lines, expected $((rows + 2))"
    fi
}

run_mawk() {
    mawk -F';' 'NR>1 { gsub(/[^0-9]/,"",$1); if (length($1)==11) $1="55" $1; print $1 ";" $2 ";" $3 ";" } END { print "EOF" }' \
        "$1" >"$2"
}

check_mawk_out() {
    local lines
    lines=$(wc -l <"$1")
    ((lines == $2 + 1)) || die "mawk output $1: $lines lines, expected $(($2 + 1))"
    [[ "$(tail -n 1 -- "$1")" == "EOF" ]] || die "mawk output $1: last line is not 'EOF'"
}

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.4f", v[(NR + 1) / 2]; else printf "%.4f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
group() { printf '%d' "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'; }

# --- 1x: generate, warm up, timed rounds -------------------------------------------------------
INPUT="$WORK/input.csv"
log "generating $ROWS rows"
gen "$ROWS" "$INPUT"
BYTES=$(stat -c %s "$INPUT")
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
log "input: $INPUT, $BYTES bytes ($MB MB)"

log "warm-up (untimed) + output checks"
run_smsdrop "$INPUT" "$WORK/out"
check_smsdrop_out "$WORK/out" "$ROWS"
run_mawk "$INPUT" "$WORK/mawk.txt"
check_mawk_out "$WORK/mawk.txt" "$ROWS"

S_TIMES=() M_TIMES=() RATIOS=()
for ((r = 1; r <= ROUNDS; r++)); do
    t0=$(now)
    run_smsdrop "$INPUT" "$WORK/out"
    t1=$(now)
    s=$(elapsed "$t0" "$t1")
    check_smsdrop_out "$WORK/out" "$ROWS"

    t0=$(now)
    run_mawk "$INPUT" "$WORK/mawk.txt"
    t1=$(now)
    m=$(elapsed "$t0" "$t1")
    check_mawk_out "$WORK/mawk.txt" "$ROWS"

    ratio=$(awk -v m="$m" -v s="$s" 'BEGIN { printf "%.3f", m / s }')
    S_TIMES+=("$s") M_TIMES+=("$m") RATIOS+=("$ratio")
    log "round $r/$ROUNDS: smsdrop ${s}s  mawk ${m}s  ratio(mawk/smsdrop) $ratio"
done
S_MED=$(median "${S_TIMES[@]}")
M_MED=$(median "${M_TIMES[@]}")
R_MED=$(median "${RATIOS[@]}")
R_MED=$(awk -v r="$R_MED" 'BEGIN { printf "%.2f", r }')

log "peak RSS, 1x"
run_smsdrop "$INPUT" "$WORK/out" "$WORK/rss1.txt"
check_smsdrop_out "$WORK/out" "$ROWS"
RSS1=$(tail -n 1 "$WORK/rss1.txt")
"$TIME_BIN" -f %M -o "$WORK/rss_mawk.txt" mawk -F';' 'NR>1 { gsub(/[^0-9]/,"",$1); if (length($1)==11) $1="55" $1; print $1 ";" $2 ";" $3 ";" } END { print "EOF" }' \
    "$INPUT" >"$WORK/mawk.txt"
RSS_MAWK=$(tail -n 1 "$WORK/rss_mawk.txt")
rm -rf -- "$WORK/out" "$WORK/mawk.txt"

# --- 10x: peak RSS (and one wall time) ---------------------------------------------------------
BIG_LINE="skipped (BENCH_BIG=0)"
if [[ "$BENCH_BIG" != 0 ]]; then
    BIG_ROWS=$((ROWS * BIG_FACTOR))
    BIG="$WORK/input_big.csv"
    log "generating $BIG_ROWS rows (BENCH_BIG=0 skips this)"
    gen "$BIG_ROWS" "$BIG"
    BIG_BYTES=$(stat -c %s "$BIG")
    BIG_MB=$(awk -v b="$BIG_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
    log "peak RSS, ${BIG_FACTOR}x ($BIG_MB MB)"
    t0=$(now)
    run_smsdrop "$BIG" "$WORK/out_big" "$WORK/rss10.txt"
    t1=$(now)
    BIG_S=$(elapsed "$t0" "$t1")
    check_smsdrop_out "$WORK/out_big" "$BIG_ROWS"
    BIG_FILES=$(find "$WORK/out_big" -type f | wc -l)
    RSS10=$(tail -n 1 "$WORK/rss10.txt")
    BIG_LINE="$(kib_to_mib "$RSS10") MiB  ($(group "$BIG_ROWS") rows, $BIG_MB MB -> $BIG_FILES files; single run ${BIG_S}s, $(mbps "$BIG_BYTES" "$BIG_S") MB/s)"
    rm -rf -- "$BIG" "$WORK/out_big"
fi

# --- summary -----------------------------------------------------------------------------------
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
cat <<SUMMARY

### smsdrop convert benchmark (benches/convert.sh)
date:     $(date -u '+%Y-%m-%d %H:%M UTC')
machine:  nproc=$(nproc)${CPU:+, $CPU}
smsdrop:  $("$BIN" --version 2>/dev/null || echo smsdrop), HEAD $COMMIT, target/release built $BIN_BUILT
input:    $(group "$ROWS") rows, $MB MB (UTF-8, ';', header, formatted BR numbers, accented texts)
rounds:   $ROUNDS each, alternating, after one warm-up each; median wall time
  smsdrop convert   ${S_MED} s   $(mbps "$BYTES" "$S_MED") MB/s   (validates, normalises, sanitises, bills)
  mawk baseline     ${M_MED} s   $(mbps "$BYTES" "$M_MED") MB/s   (no validation)
  ratio mawk/smsdrop (median of per-round ratios): ${R_MED}   (>= 1.0: smsdrop at least as fast)
peak RSS (smsdrop, /usr/bin/time %M):
  1x:   $(kib_to_mib "$RSS1") MiB   (mawk baseline: $(kib_to_mib "$RSS_MAWK") MiB)
  ${BIG_FACTOR}x:  $BIG_LINE
SUMMARY
