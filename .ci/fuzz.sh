#!/usr/bin/env bash
# Fuzzing: runs the cargo-fuzz targets of fuzz/ for a while each, seeded from committed inputs.
#
#   .ci/fuzz.sh                      # every target, ${FUZZ_SECS:-60} seconds each
#   .ci/fuzz.sh reader rules         # only these targets
#   FUZZ_SECS=3600 .ci/fuzz.sh reader  # a long run (an hour)
#
# Targets (fuzz/fuzz_targets/):
#   reader   any bytes as an ERP export through convert::convert (defaults, and a config variant
#            picked by the first two bytes); every row must make a batch line check_line accepts
#   rules    any text through normalize_number, sanitize_into (both modes), check_length, cost
#   listing  any remote listing through BatchName::parse, and the bytes through check_batch
#   config   any text through Config::parse (an accepted config converts a small export) and
#            parse_duration
#   template any text through Template::parse; an accepted one resolved against a header and
#            rendered with a row (the repair of unquoted delimiters, templates with absorb_column
#            and workbooks are in reader's config variants and seeds)
#
# Seeds: fuzz/seeds/<target>, plus samples/ and tests/corpus/ for reader and config/ for config.
#
# Only the stable toolchain is needed: cargo-fuzz's -Z flags are accepted with RUSTC_BOOTSTRAP=1,
# and the build uses no sanitizer (-s none): the code under test is safe Rust, where a bug shows
# as a panic, which libFuzzer catches without one. Debug assertions and overflow checks are on.
# The first build takes long (about 15 minutes on 2 cores: OpenSSL and SQLite are compiled from
# source); later ones reuse fuzz/target and take about a minute after a change to src/.
#
# Long runs by hand keep their corpus in fuzz/corpus/<target> (gitignored) and grow it each time:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run reader -s none -- -max_total_time=3600
#   (add corpus/reader seeds/reader ../samples ../tests/corpus after `reader` to seed it;
#   -jobs=N -workers=N runs N processes). Always pass -s none: other build flags rebuild
#   everything. This script does the same, adding the committed seeds each time. FUZZ_ARGS adds
#   libFuzzer options, e.g. FUZZ_ARGS="-jobs=2 -workers=2". libFuzzer's -max_len defaults to the
#   largest seed (about 100 KB for reader), past the reader's 64 KiB record and head limits;
#   FUZZ_ARGS="-max_len=4096" trades that for speed.
#
# A crash leaves fuzz/artifacts/<target>/crash-<sha1> (or oom-/timeout-) and fails this script.
# To turn it into a regression test:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -s none artifacts/<target>/crash-...
#                                                     # reproduce, with the panic message
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> -s none artifacts/<target>/crash-...
#                                                     # minimise; prints the minimal input's
#                                                     # bytes and its minimized-from-... file
# then add a test to tests/fuzz_regressions.rs feeding those bytes through the same API and
# asserting the target's property, fix the bug, and copy the input to fuzz/seeds/<target>/ so
# every later run starts from it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${FUZZ_SECS:-60}
all=(reader rules listing config template)
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
  case " ${all[*]} " in
    *" $t "*) ;;
    *) echo "fuzz.sh: unknown target '$t' (targets: ${all[*]})" >&2; exit 2 ;;
  esac
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
build=(-s none)
cd fuzz
# One build of the targets asked for (they share everything but their main).
if [ "${#targets[@]}" -eq "${#all[@]}" ]; then
  cargo fuzz build "${build[@]}"
else
  for t in "${targets[@]}"; do cargo fuzz build "${build[@]}" "$t"; done
fi

stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
failed=()
for t in "${targets[@]}"; do
  corpus="corpus/$t"
  mkdir -p "$corpus" "artifacts/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds+=("seeds/$t")
  case "$t" in
    reader) seeds+=("$root/samples" "$root/tests/corpus" "$root/tests/fixtures/sheets") ;;
    config) seeds+=("$root/config") ;;
  esac
  echo "=== fuzz $t: ${secs}s (seeds: ${seeds[*]:-none}) ==="
  # -print_final_stats: exec/s and coverage in the log.
  # shellcheck disable=SC2086 # FUZZ_ARGS is split on purpose
  if ! cargo fuzz run "${build[@]}" "$t" "$corpus" ${seeds[@]+"${seeds[@]}"} -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    ${FUZZ_ARGS:-}; then
    failed+=("$t")
  fi
  if [ -n "$(find "artifacts/$t" -type f -newer "$stamp" -print -quit)" ]; then
    case " ${failed[*]-} " in *" $t "*) ;; *) failed+=("$t") ;; esac
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo >&2
  for t in "${failed[@]}"; do
    echo "fuzz.sh: target '$t' failed; artifacts:" >&2
    find "$PWD/artifacts/$t" -type f -newer "$stamp" -print >&2 || true
  done
  exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]} (${secs}s each)"
