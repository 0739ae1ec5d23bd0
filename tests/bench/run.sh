#!/usr/bin/env bash
# run.sh - the benchmark: every figure as a ratio against a baseline measured in the same run
# (never asserted), printed as one table: figure, qcal, baseline, ratio, target (issue #7).
#   bash tests/bench/run.sh BUILD_DIR [GIB]
# Generates its dumps under BUILD_DIR/bench once (GIB GiB of float32, default 2; a gzip pair,
# float16 and bfloat16, 2,000 small tensors, and for memory a 4 GiB one and 8,000 small
# tensors; BIG=0 skips those two).
# Warm figures read each file once before timing; cold ones drop the file's pages from the
# page cache (posix_fadvise) before every timed command, baseline and qcal alike. Rounds
# interleave qcal and its baseline so drift hits both alike; each figure is a median.
set -euo pipefail
BUILD=${1:-build-release}
GIB=${2:-2.0}
ROUNDS=${ROUNDS:-3}
BIG=${BIG:-4}
OUT="$BUILD/bench"
HERE=$(dirname "$0")
B="$BUILD/tests/bench_read"
QCAL="$BUILD/core/qcal"
PY=/usr/bin/python3
mkdir -p "$OUT"

dump() { # dump NAME GIB TENSORS KIND -> path (generated once)
    local path="$OUT/$1.h5"
    [ -f "$path" ] || { echo "bench: generating $path" >&2; "$B" make "$path" "$2" "$3" "$4"; }
    echo "$path"
}
F32=$(dump "f32-${GIB}g" "$GIB" 12 f32)
GZ=$(dump gzip-0.5g 0.5 12 gzip)
GZS=$(dump gzip-shuffle-0.5g 0.5 12 gzip-shuffle)
F16=$(dump f16-1g 1 12 f16)
BF16=$(dump bf16-1g 1 12 bf16)
SMALL=$(dump small-2000 0.25 2000 small)
CONTIG=$(dump "f32-contiguous-${GIB}g" "$GIB" 12 f32-contiguous)
[ "$BIG" = 0 ] || BIGD=$(dump "f32-${BIG}g" "$BIG" 12 f32)
[ "$BIG" = 0 ] || MANY=$(dump small-8000 1.0 8000 small)

# The peer: PyTorch's observers from Debian's packages (the one thing only the benchmark needs).
if ! "$PY" -c 'import torch, h5py' 2> /dev/null; then
    echo "bench: installing python3-torch and python3-h5py" >&2
    apt-get install -y --no-install-recommends python3-torch python3-h5py > /dev/null 2>&1 ||
        sudo apt-get install -y --no-install-recommends python3-torch python3-h5py > /dev/null 2>&1 ||
        echo "bench: PyTorch unavailable; its rows are skipped" >&2
fi
HAVE_TORCH=$("$PY" -c 'import torch, h5py; print(1)' 2> /dev/null || echo 0)

declare -A T # T[key]="t1 t2 ..." timings; R[key]: peak RSS KiB (largest)
declare -A R
timed() { # timed KEY COLD|WARM FILE CMD... : appends the time, keeps the largest RSS
    local key=$1 mode=$2 file=$3 out t rss
    shift 3
    [ "$mode" = COLD ] && "$B" evict "$file"
    if ! out=$("$B" time -- "$@" 2> "$OUT/failed.err"); then # a failed run's time means nothing
        echo "bench: failed: $*" >&2
        tail -n 5 "$OUT/failed.err" >&2
        exit 1
    fi
    read -r t rss <<< "$out"
    T[$key]="${T[$key]:-} $t"
    [ "${R[$key]:-0}" -ge "$rss" ] || R[$key]=$rss
}
run() { echo "$QCAL" run "$@" --force; }

for f in "$F32" "$GZ" "$GZS" "$F16" "$BF16" "$SMALL" "$CONTIG"; do cat "$f" > /dev/null; done
HIST="$HERE/hist_pass.lua"
EVAL="$HERE/eval_pass.lua"
MPIRUN=""
# (grep without -q: -q stops reading at the first match, ldd then dies of SIGPIPE and, under
# pipefail, the test fails at random)
if command -v mpirun > /dev/null && ldd "$QCAL" | grep libmpi > /dev/null; then
    MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none -n 2"
fi
for ((r = 0; r < ROUNDS; r++)); do
    echo "bench: round $((r + 1)) of $ROUNDS" >&2
    timed read WARM "$F32" "$B" read "$F32"
    timed hist WARM "$F32" $(run "$HIST" "$F32" -o "$OUT/hist.h5")
    timed contig_read WARM "$CONTIG" "$B" read "$CONTIG"
    timed contig_hist WARM "$CONTIG" $(run "$HIST" "$CONTIG" -o "$OUT/hist.h5")
    timed contig_minmax WARM "$CONTIG" $(run minmax "$CONTIG" -o "$OUT/minmax.h5")
    timed read_cold COLD "$F32" "$B" read "$F32"
    timed hist_cold COLD "$F32" $(run "$HIST" "$F32" -o "$OUT/hist.h5")
    cat "$F32" > /dev/null
    timed minmax WARM "$F32" $(run minmax "$F32" -o "$OUT/minmax.h5")
    timed minmax1 WARM "$F32" $(run minmax "$F32" -o "$OUT/minmax.h5" --threads 1)
    timed pot WARM "$F32" $(run pot "$F32" -o "$OUT/pot.h5" range_estimator=quantile)
    [ -z "$MPIRUN" ] || timed mpi WARM "$F32" $MPIRUN $(run pot "$F32" -o "$OUT/pot-mpi.h5" range_estimator=quantile)
    timed kl WARM "$F32" $(run kl "$F32" -o "$OUT/kl.h5")
    timed ev0 WARM "$F32" $(run "$EVAL" "$F32" -o "$OUT/eval0.h5" evaluate=false)
    timed ev1 WARM "$F32" $(run "$EVAL" "$F32" -o "$OUT/eval.h5" candidates=10)
    for g in GZ GZS; do
        file=${!g}
        timed "${g}_read" WARM "$file" "$B" read "$file"
        timed "${g}_zlib" WARM "$file" "$B" inflate "$file"
        for th in 1 2 4; do
            timed "${g}_$th" WARM "$file" $(run minmax "$file" -o "$OUT/gz.h5" --threads $th)
        done
    done
    for h in F16 BF16; do
        file=${!h}
        timed "${h}_read" WARM "$file" "$B" read "$file"
        timed "${h}_run" WARM "$file" $(run minmax "$file" -o "$OUT/half.h5")
    done
    timed small_read WARM "$SMALL" "$B" read "$SMALL"
    timed small WARM "$SMALL" $(run "$HIST" "$SMALL" -o "$OUT/small.h5")
    if [ "$HAVE_TORCH" = 1 ]; then
        timed torch_minmax WARM "$F32" "$PY" "$HERE/torch_observers.py" minmax "$F32"
        timed torch_hist WARM "$F32" "$PY" "$HERE/torch_observers.py" histogram "$F32"
    fi
done
if [ "$BIG" != 0 ]; then # memory: one run of each pass kind on the big dump
    echo "bench: the ${BIG} GiB dump" >&2
    timed big_hist COLD "$BIGD" $(run "$HIST" "$BIGD" -o "$OUT/big.h5")
    timed big_kl COLD "$BIGD" $(run kl "$BIGD" -o "$OUT/big.h5")
    timed many_hist COLD "$MANY" $(run "$HIST" "$MANY" -o "$OUT/many.h5")
fi

med() { printf '%s\n' ${T[$1]:-0} | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
row() { # row FIGURE QCAL_KEY BASE_KEY TARGET
    awk -v f="$1" -v q="$(med "$2")" -v b="$(med "$3")" -v t="$4" \
        'BEGIN { printf "%-52s %9.3fs %9.3fs %7.2f  %s\n", f, q, b, (b > 0 ? q / b : 0), t }'
}
diff_row() { # the evaluation's own time: a run with it minus the same run without
    awk -v f="$1" -v q="$(med ev1)" -v z="$(med ev0)" -v b="$(med read)" -v t="$2" \
        'BEGIN { printf "%-52s %9.3fs %9.3fs %7.2f  %s\n", f, q - z, b, (q - z) / b, t }'
}
mem_row() { # mem_row FIGURE KEY FILE
    awk -v f="$1" -v r="${R[$2]:-0}" -v s="$(stat -c %s "$3")" \
        'BEGIN { printf "%-52s %7.0fMiB %7.0fMiB %7.3f  <= 256 MiB\n", f, r / 1024, s / 1048576, r * 1024 / s }'
}

echo
echo "qcal benchmark: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), median of $ROUNDS"
printf '%-52s %10s %10s %7s  %s\n' "figure" "qcal" "baseline" "ratio" "target"
row "minmax + histogram pass / plain read, warm ($GIB GiB)" hist read "<= 1.25"
row "minmax + histogram pass / plain read, cold" hist_cold read_cold "<= 1.25"
row "  (the same, contiguous storage: mapped, warm)" contig_hist contig_read "<= 1.25"
row "minmax run, contiguous storage (mapped) / plain read" contig_minmax contig_read "-"
for g in GZ GZS; do
    name=$([ $g = GZ ] && echo "gzip" || echo "gzip+shuffle")
    for th in 1 2 4; do
        row "$name minmax pass, --threads $th / zlib alone" "${g}_$th" "${g}_zlib" "$([ $th = 1 ] && echo '<= 1.15' || echo 'reported')"
    done
    row "  ($name: HDF5's own filtered read / zlib alone)" "${g}_read" "${g}_zlib" "-"
done
row "float16 minmax run / raw 16-bit read" F16_run F16_read "memory speed"
row "bfloat16 minmax run / raw 16-bit read" BF16_run BF16_read "memory speed"
mem_row "peak RSS, histogram pass, 2,000 tensors / dump" small "$SMALL"
if [ "$BIG" != 0 ]; then
    mem_row "peak RSS, histogram pass, $BIG GiB / dump" big_hist "$BIGD"
    mem_row "peak RSS, kl recipe (2 passes), $BIG GiB / dump" big_kl "$BIGD"
    mem_row "peak RSS, histogram pass, 8,000 tensors / dump" many_hist "$MANY"
fi
diff_row "evaluation pass, 10 candidates per tensor / read" "<= 2"
if [ "$HAVE_TORCH" = 1 ]; then
    row "qcal minmax run / torch MinMaxObserver" minmax torch_minmax "< 1"
    row "qcal histogram pass / torch HistogramObserver" hist torch_hist "<= 0.05"
fi
row "minmax run (default threads) / plain read" minmax read "-"
row "minmax run (--threads 1) / plain read" minmax1 read "-"
row "pot (batch_stats, quantiles) / plain read" pot read "-"
row "kl recipe (2 passes) / plain read" kl read "-"
row "histogram pass, 2,000 tensors / plain read" small small_read "-"
[ -z "$MPIRUN" ] || row "pot, mpirun -n 2 / the same single process" mpi pot "-"
mem_row "peak RSS, minmax run ($GIB GiB) / dump" minmax "$F32"

echo
echo "estimators: ms per tensor through the plugin ABI (2048-bin histogram of 1M gaussian"
echo "values; best of 5 batches); target <= 1 ms for percentile, kl and mse"
"$BUILD/tests/bench_estimators" "$BUILD/plugins" "${CALLS:-20}"
