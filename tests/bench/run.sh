#!/usr/bin/env bash
# run.sh - benchmarks, as ratios against a baseline measured in the same run (never asserted).
#   bash tests/bench/run.sh BUILD_DIR [GIB]
# Prints one table: figure, qcal, baseline, ratio. Page cache warm (each file is read once
# before timing); rounds interleave qcal and the baseline so drift hits both alike.
set -euo pipefail
BUILD=${1:-build-release}
GIB=${2:-1.0}
ROUNDS=${ROUNDS:-3}
OUT="$BUILD/bench"
mkdir -p "$OUT"
DUMP="$OUT/bench-${GIB}g.h5"
B="$BUILD/tests/bench_read"
QCAL="$BUILD/core/qcal"

[ -f "$DUMP" ] || { echo "bench: generating $DUMP ($GIB GiB)" >&2; "$B" make "$DUMP" "$GIB"; }
cat "$DUMP" > /dev/null # warm the page cache

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

HIST="$(dirname "$0")/hist_pass.lua"
EVAL="$(dirname "$0")/eval_pass.lua"
declare -a base_t qcal_t qcal_rss qcal1_t hist_t pot_t kl_t ev0_t ev1_t mpi_t
# MPI: the same pot run split over 2 ranks (when qcal was built with Open MPI).
MPIRUN=""
if command -v mpirun > /dev/null && ldd "$QCAL" | grep -q libmpi; then
    MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none -n 2"
fi
for ((r = 0; r < ROUNDS; r++)); do
    read -r t _ < <("$B" time -- "$B" read "$DUMP" 2>/dev/null)
    base_t+=("$t")
    read -r t rss < <("$B" time -- "$QCAL" run minmax "$DUMP" -o "$OUT/minmax.h5" --force)
    qcal_t+=("$t"); qcal_rss+=("$rss")
    read -r t _ < <("$B" time -- "$QCAL" run minmax "$DUMP" -o "$OUT/minmax.h5" --force --threads 1)
    qcal1_t+=("$t")
    read -r t _ < <("$B" time -- "$QCAL" run "$HIST" "$DUMP" -o "$OUT/hist.h5" --force)
    hist_t+=("$t")
    read -r t _ < <("$B" time -- "$QCAL" run pot "$DUMP" -o "$OUT/pot.h5" --force range_estimator=quantile)
    pot_t+=("$t")
    if [ -n "$MPIRUN" ]; then
        read -r t _ < <("$B" time -- $MPIRUN "$QCAL" run pot "$DUMP" -o "$OUT/pot-mpi.h5" --force range_estimator=quantile)
        mpi_t+=("$t")
    fi
    read -r t _ < <("$B" time -- "$QCAL" run kl "$DUMP" -o "$OUT/kl.h5" --force)
    kl_t+=("$t")
    read -r t _ < <("$B" time -- "$QCAL" run "$EVAL" "$DUMP" -o "$OUT/eval0.h5" --force evaluate=false)
    ev0_t+=("$t")
    read -r t _ < <("$B" time -- "$QCAL" run "$EVAL" "$DUMP" -o "$OUT/eval.h5" --force candidates=10)
    ev1_t+=("$t")
done 2>/dev/null

bt=$(printf '%s\n' "${base_t[@]}" | median)
qt=$(printf '%s\n' "${qcal_t[@]}" | median)
q1=$(printf '%s\n' "${qcal1_t[@]}" | median)
ht=$(printf '%s\n' "${hist_t[@]}" | median)
pt=$(printf '%s\n' "${pot_t[@]}" | median)
kt=$(printf '%s\n' "${kl_t[@]}" | median)
e0=$(printf '%s\n' "${ev0_t[@]}" | median)
e1=$(printf '%s\n' "${ev1_t[@]}" | median)
mt=$( [ -n "$MPIRUN" ] && printf '%s\n' "${mpi_t[@]}" | median || echo 0)
rss=$(printf '%s\n' "${qcal_rss[@]}" | sort -n | tail -1)
size=$(stat -c %s "$DUMP")
awk -v bt="$bt" -v qt="$qt" -v q1="$q1" -v ht="$ht" -v pt="$pt" -v kt="$kt" -v e0="$e0" -v e1="$e1" -v mt="$mt" -v rss="$rss" -v size="$size" -v rounds="$ROUNDS" -v cores="$(nproc)" 'BEGIN {
    printf "\n%-46s %10s %10s %8s\n", "figure (median of " rounds ", " cores " cores)", "qcal", "baseline", "ratio"
    printf "%-46s %9.3fs %9.3fs %8.2f\n", "minmax run (default threads) / plain HDF5 read", qt, bt, qt / bt
    printf "%-46s %9.3fs %9.3fs %8.2f\n", "minmax run (--threads 1) / plain HDF5 read", q1, bt, q1 / bt
    printf "%-46s %9.3fs %9.3fs %8.2f\n", "minmax + histogram pass / plain HDF5 read", ht, bt, ht / bt
    printf "%-46s %9.3fs %9.3fs %8.2f\n", "pot (batch_stats, quantiles) / plain HDF5 read", pt, bt, pt / bt
    printf "%-46s %9.3fs %9.3fs %8.2f\n", "kl recipe (minmax + fixed_histogram passes) / read", kt, bt, kt / bt
    printf "%-46s %9.3fs %9.3fs %8.2f\n", "evaluation pass, 10 candidates/tensor / read", e1 - e0, bt, (e1 - e0) / bt
    printf "%-46s %9.3fs %9.3fs %8.2f\n", "  (whole run: minmax pass + evaluation) / read", e1, bt, e1 / bt
    if (mt > 0)
        printf "%-46s %9.3fs %9.3fs %8.2f\n", "pot, mpirun -n 2 / the same single process", mt, pt, mt / pt
    printf "%-46s %7.0fMiB %7.0fMiB %8.3f\n", "peak RSS of the run / dump size", rss / 1024, size / 1048576, rss * 1024 / size
    printf "throughput: plain read %.0f MiB/s, qcal %.0f MiB/s\n", size / bt / 1048576, size / qt / 1048576
}'

echo
echo "estimators: time per tensor through the plugin ABI (2048-bin histogram of 1M gaussian values)"
"$BUILD/tests/bench_estimators" "$BUILD/plugins" "${CALLS:-20}"
