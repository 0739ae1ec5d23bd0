#!/usr/bin/env bash
# run.sh - coverage-guided fuzzing (libFuzzer, with ASan+UBSan) of what qcal parses itself:
# key=value parameters and saved observer states. Bounded: SECONDS per target (default 60).
#   bash tests/fuzz/run.sh [SECONDS]
# Needs clang (Debian: apt-get install clang). Prints executions and findings per target;
# crashing inputs are left as tests/fuzz/out/<target>/crash-*.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
OUT=tests/fuzz/out
mkdir -p "$OUT"
command -v clang >/dev/null || { echo "fuzz: clang is needed (apt-get install clang)" >&2; exit 69; }
[ -f build/plugins/qcal-minmax.so ] || bash tests/dev.sh build
FLAGS="-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Iinclude -Icore"
clang $FLAGS tests/fuzz/fuzz_params.c core/params.c core/error.c -lm -o "$OUT/fuzz_params"
clang $FLAGS -DQCAL_FUZZ_PLUGIN="\"$PWD/build/plugins/qcal-minmax.so\"" tests/fuzz/fuzz_state.c \
    core/hstat.c core/error.c -ldl -lm -o "$OUT/fuzz_state"
for target in params state; do
    mkdir -p "$OUT/$target" "$OUT/corpus-$target"
    log="$OUT/$target.log"
    status=0
    "$OUT/fuzz_$target" -max_total_time="$SECS" -artifact_prefix="$OUT/$target/" \
        "$OUT/corpus-$target" "tests/fuzz/corpus/$target" > "$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || true)
    [ -n "$execs" ] || execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
    crashes=$(ls "$OUT/$target" | grep -c '^crash-' || true)
    echo "fuzz_$target: ${execs:-?} executions in ${SECS}s, exit $status, $crashes crashing input(s)"
done
