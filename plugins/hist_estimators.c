/* hist_estimators.c - estimators on a qcal.histogram: percentile and mse (kl: hist_kl.c). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "histogram.h"

int hist_view(const qcal_stat *st, hview *v, qcal_err *err)
{
    if (strcmp(st->kind, "qcal.histogram") || st->kind_version < 1)
        return fail(err, QCAL_E_KIND, "expected a qcal.histogram statistic, found %s", st->kind);
    v->n = hist_counts_length(st);
    const uint64_t *count = hist_array(st, "count", QCAL_DTYPE_U64, 1), *abs = hist_array(st, "abs", QCAL_DTYPE_U64, 1);
    const double *d[6] = {hist_array(st, "lo", QCAL_DTYPE_F64, 1), hist_array(st, "width", QCAL_DTYPE_F64, 1),
                          hist_array(st, "min", QCAL_DTYPE_F64, 1), hist_array(st, "max", QCAL_DTYPE_F64, 1),
                          hist_array(st, "smin", QCAL_DTYPE_F64, 1), hist_array(st, "smax", QCAL_DTYPE_F64, 1)};
    v->counts = v->n == UINT64_MAX ? NULL : hist_array(st, "counts", QCAL_DTYPE_U64, v->n);
    if (!v->counts || !count || !abs || !d[0] || !d[1] || !d[2] || !d[3] || !d[4] || !d[5])
        return fail(err, QCAL_E_DATA, "histogram statistic: an array is missing or malformed");
    v->count = *count, v->abs = *abs;
    const uint64_t *zeros = hist_array(st, "zeros", QCAL_DTYPE_U64, 1);
    v->zeros = zeros ? *zeros : UINT64_MAX;
    v->lo = *d[0], v->width = *d[1], v->min = *d[2], v->max = *d[3], v->smin = *d[4], v->smax = *d[5];
    uint64_t total = 0;
    for (uint64_t i = 0; i < v->n; i++)
        total += v->counts[i];
    if (!v->count || total != v->count || !(v->width > 0) || !(v->min <= v->max) ||
        !isfinite(v->lo) || !isfinite(v->min) || !isfinite(v->max) ||
        (v->zeros != UINT64_MAX && v->zeros > v->count))
        return fail(err, QCAL_E_DATA, "histogram statistic: counts and extrema disagree");
    return QCAL_OK;
}

int hist_view_for(const qcal_stat *st, const qcal_qspec *spec, uint64_t n_ranges, hview *v,
                  qcal_err *err)
{
    if (spec->flags & ~QCAL_QSPEC_KNOWN_FLAGS)
        return fail(err, QCAL_E_UNSUP, "unknown quantization spec flags 0x%x", spec->flags);
    if ((spec->flags & QCAL_QSPEC_PER_CHANNEL) || n_ranges != 1)
        return fail(err, QCAL_E_UNSUP, "histograms are per tensor: use a per-tensor spec");
    return hist_view(st, v, err);
}

/* fmin / fmax without the libm call (gcc keeps them out of line for their NaN rules; no
 * operand here is NaN) */
static inline double lesser(double a, double b) { return a < b ? a : b; }
static inline double greater(double a, double b) { return a > b ? a : b; }

/* Adds c, uniform over [a, b), to the bins of width W from lo it overlaps. Overlaps below
 * 1e-9 of [a, b) are rounding slivers (same layouts computed twice): they get nothing, or an
 * identical layout would leave 1e-13 counts in neighbouring bins and turn empty bins non-empty. */
static void spread(double c, double a, double b, double lo, double W, uint64_t bins, double *ref)
{
    double kept = 0, sliver = 1e-9 * (b - a);
    uint64_t first = (uint64_t)greater(0.0, floor((a - lo) / W) - 1), j;
    for (j = first; j < bins && lo + (double)j * W < b; j++) {
        double from = greater(a, lo + (double)j * W), to = lesser(b, lo + (double)(j + 1) * W);
        kept += to - from > sliver ? to - from : 0;
    }
    for (j = first; kept > 0 && j < bins && lo + (double)j * W < b; j++) {
        double from = greater(a, lo + (double)j * W), to = lesser(b, lo + (double)(j + 1) * W);
        if (to - from > sliver)
            ref[j] += c * (to - from) / kept;
    }
}

void hist_rebin(const hview *v, double lo, double hi, uint64_t bins, double *ref)
{
    double W = (hi - lo) / (double)bins;
    memset(ref, 0, bins * sizeof *ref);
    for (uint64_t i = 0; i < v->n; i++) {
        double c = (double)v->counts[i];
        if (c == 0)
            continue;
        double a = greater(v->lo + v->width * (double)i, lo);
        double b = lesser(v->lo + v->width * (double)(i + 1), hi);
        if (!(b > a) || !(W > 0)) { /* a point mass (constant tensor) or the top edge */
            double j = W > 0 ? floor((a - lo) / W) : 0;
            ref[j < 0 ? 0 : j >= (double)bins ? bins - 1 : (uint64_t)j] += c;
            continue;
        }
        spread(c, a, b, lo, W, bins, ref);
    }
}

/* ---- percentile ------------------------------------------------------------------------ *
 * Symmetric: the q-quantile of |x|; affine: the (1 - q) / 2 and 1 - (1 - q) / 2 quantiles of x.
 * The q-quantile of the histogrammed values: the point where the cumulative count reaches
 * q * count, interpolated linearly inside its bin (ONNX Runtime and TensorRT take a bin edge;
 * the difference is below one bin), clamped to the exact [min, max] so a range never passes
 * the observed extrema. */

static double quantile(const hview *v, double q)
{
    if (q <= 0)
        return v->min;
    if (q >= 1)
        return v->max;
    double rank = q * (double)v->count, below = 0;
    for (uint64_t i = 0; i < v->n; i++) {
        double c = (double)v->counts[i];
        if (c > 0 && below + c >= rank) {
            double x = v->lo + v->width * ((double)i + (rank - below) / c);
            return x < v->min ? v->min : x > v->max ? v->max : x;
        }
        below += c;
    }
    return v->max;
}

enum { SIDE_AUTO, SIDE_TWO, SIDE_ABS };

static int percentile_estimate(const qcal_stat *stat, const qcal_value *params,
                               const qcal_qspec *spec, qcal_range *ranges, uint64_t n_ranges,
                               qcal_err *err)
{
    hview v;
    int rc = hist_view_for(stat, spec, n_ranges, &v, err);
    if (rc)
        return rc;
    note_constant(err, v.smin, v.smax);
    double q = params[0].f / 100.0;
    int symmetric = (spec->flags & QCAL_QSPEC_SYMMETRIC) != 0;
    int side = (int)params[1].i;
    if (side == SIDE_AUTO)
        side = symmetric ? SIDE_ABS : SIDE_TWO;
    if ((side == SIDE_ABS) != (v.abs != 0))
        return fail(err, QCAL_E_KIND, "%s needs a histogram of %s (observe histogram with abs=%s)",
                    side == SIDE_ABS ? "a symmetric range" : "an affine range",
                    side == SIDE_ABS ? "|x|" : "x", side == SIDE_ABS ? "true" : "false");
    if (side == SIDE_ABS) {
        double t = quantile(&v, q);
        int is_signed = (spec->flags & QCAL_QSPEC_SIGNED) != 0;
        ranges[0] = (qcal_range){is_signed || !symmetric ? -t : 0.0, t};
        if (!symmetric && v.smin >= 0) /* |x| of a non-negative tensor is x: one-sided */
            ranges[0].lo = v.smin;
        return QCAL_OK;
    }
    /* x: (1 - q) / 2 of the values cut from each tail, so that q of them are inside (ONNX
     * Runtime's and INC's percentile); a tail at 0 (a tensor with no value below, or none
     * above) is kept whole: the range takes in 0 anyway */
    double tail = (1.0 - q) / 2.0;
    ranges[0].hi = v.smax <= 0 ? v.max : quantile(&v, 1.0 - tail);
    ranges[0].lo = v.smin >= 0 ? v.min : quantile(&v, tail);
    if (symmetric) {
        double t = fmax(fabs(ranges[0].lo), fabs(ranges[0].hi));
        ranges[0] = (qcal_range){(spec->flags & QCAL_QSPEC_SIGNED) ? -t : 0.0, t};
    }
    return QCAL_OK;
}

static const char *const side_choices[] = {"auto", "two_sided", "abs", NULL};
static const qcal_param percentile_params[] = {
    {.name = "percentile", .type = QCAL_PARAM_FLOAT, .def = {.f = 99.99}, .min = 0, .max = 100,
     .help = "percent of the values inside the range (ONNX Runtime: 99.999 on |x|)"},
    {.name = "side", .type = QCAL_PARAM_CHOICE, .def = {.i = SIDE_AUTO}, .choices = side_choices,
     .help = "auto: |x| for symmetric specs, else (100 - p) / 2 % off each tail (none off a tail at 0)"},
};

const qcal_estimator hist_percentile = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "percentile",
    .help = "the value below which `percentile` % of the values lie, from a histogram",
    .accepts = histogram_kinds,
    .n_params = 2,
    .params = percentile_params,
    .estimate = percentile_estimate,
};

/* ---- mse: the candidate with the least quantize-dequantize error ---------------------- *
 * Candidates are fractions f = k / 100 of the range, k = 100, 100 - stride, ... > 0 (Horizon's
 * search: thresholds f max|x| for symmetric specs; MQBench's [f lo, f hi] for affine ones).
 * The error of a candidate is sum over bins of count (c - fq(c))^2 with c the bin centre
 * (bins are at most 1/4096 of the range wide with the defaults); fq quantizes onto the spec's
 * grid the way torch does (scale from the range, zero-point rounded half to even, values
 * rounded to nearest even and clamped). The first strict minimum wins, largest range first. */

/* torch's (scale, zero-point) of a range on the spec's grid, in double. */
static void grid_of(const qcal_qspec *spec, double lo, double hi, double *scale, double *zp)
{
    double qmin = (double)spec->qmin, qmax = (double)spec->qmax;
    lo = fmin(lo, 0), hi = fmax(hi, 0);
    if (spec->flags & QCAL_QSPEC_SYMMETRIC) {
        *scale = fmax(fmax(-lo, hi) / ((qmax - qmin) / 2), FLT_EPSILON);
        *zp = (spec->flags & QCAL_QSPEC_SIGNED)   ? 0
              : (spec->flags & QCAL_QSPEC_NARROW) ? floor((qmin + qmax) / 2)
                                                  : qmin + ldexp(1.0, (int)spec->bits - 1);
        return;
    }
    *scale = fmax((hi - lo) / (qmax - qmin), FLT_EPSILON);
    double z = qmin - nearbyint(lo / *scale);
    *zp = z < qmin ? qmin : z > qmax ? qmax : z;
}

/* The histogram as the search reads it: the centres of the non-empty bins (clamped to the
 * exact extrema) and their counts, so that each candidate's loop has neither branches nor
 * libm calls. */
typedef struct bin_list {
    double *centre, *count;
    uint64_t n;
} bin_list;

static int bin_list_make(const hview *v, bin_list *b)
{
    b->centre = malloc(2 * (v->n ? v->n : 1) * sizeof *b->centre);
    if (!b->centre)
        return 0;
    b->count = b->centre + v->n, b->n = 0;
    for (uint64_t i = 0; i < v->n; i++) {
        if (!v->counts[i])
            continue;
        double c = v->lo + v->width * ((double)i + 0.5);
        b->centre[b->n] = c < v->min ? v->min : c > v->max ? v->max : c;
        b->count[b->n++] = (double)v->counts[i];
    }
    return 1;
}

/* One bin's share of hist_error: count (c - fq(c))^2. The quotient is clamped before rounding
 * (to levels - zp, integers: the same as clamping the rounded level), which keeps it below
 * 2^17; adding and removing 1.5 2^52 then leaves it rounded to nearest even, exactly (C's
 * floating-point semantics forbid folding it away): no test, no libm call, and the loop
 * vectorises. */
static inline double bin_error(double centre, double count, double inv_scale, double scale,
                               double qmin, double qmax)
{
    double x = centre * inv_scale;
    x = x < qmin ? qmin : x > qmax ? qmax : x;
    double d = centre - ((x + 0x1.8p52) - 0x1.8p52) * scale;
    return count * d * d;
}

/* sum over bins of count (c - fq(c))^2, fq the quantize-dequantize of the range's grid with
 * c times 1 / scale as torch's kernel computes it; four partial sums, in the same order on
 * every machine (an AVX2 clone where the machine has it runs them as one vector: the search
 * makes 100 of these per tensor). */
__attribute__((target_clones("avx2", "default"))) static double
hist_error(const bin_list *b, const qcal_qspec *spec, double lo, double hi)
{
    double scale, zp, sum[4] = {0};
    grid_of(spec, lo, hi, &scale, &zp);
    double inv_scale = 1 / scale;
    double qmin = (double)spec->qmin - zp, qmax = (double)spec->qmax - zp; /* levels - zp */
    uint64_t i = 0;
    for (; i + 4 <= b->n; i += 4)
        for (int k = 0; k < 4; k++)
            sum[k] += bin_error(b->centre[i + k], b->count[i + k], inv_scale, scale, qmin, qmax);
    for (; i < b->n; i++)
        sum[0] += bin_error(b->centre[i], b->count[i], inv_scale, scale, qmin, qmax);
    return (sum[0] + sum[1]) + (sum[2] + sum[3]);
}

static int mse_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                        qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    hview v;
    int rc = hist_view_for(stat, spec, n_ranges, &v, err);
    if (rc)
        return rc;
    note_constant(err, v.smin, v.smax);
    int symmetric = (spec->flags & QCAL_QSPEC_SYMMETRIC) != 0;
    if (!symmetric && v.abs)
        return fail(err, QCAL_E_KIND, "an affine range needs a histogram of x (observe histogram "
                    "with abs=false)");
    double lo = v.abs ? -v.max : v.smin, hi = v.abs ? v.max : v.smax;
    if (symmetric)
        hi = fmax(fabs(lo), fabs(hi)), lo = -hi;
    double best = INFINITY, best_f = 1;
    bin_list bins;
    if (!bin_list_make(&v, &bins))
        return fail(err, QCAL_E_NOMEM, "out of memory");
    for (int64_t k = 100; k > 0; k -= params[0].i) {
        double f = (double)k / 100.0, e = hist_error(&bins, spec, lo * f, hi * f);
        if (e < best)
            best = e, best_f = f;
    }
    free(bins.centre);
    int is_signed = (spec->flags & QCAL_QSPEC_SIGNED) != 0;
    if (symmetric)
        ranges[0] = (qcal_range){is_signed ? -hi * best_f : 0.0, hi * best_f};
    else
        ranges[0] = (qcal_range){lo * best_f, hi * best_f};
    return QCAL_OK;
}

static const qcal_param mse_params[] = {
    {.name = "stride", .type = QCAL_PARAM_INT, .def = {.i = 1}, .min = 1, .max = 99,
     .help = "step between candidate percents of the range (Horizon: 1; faster: up to 20)"},
};

const qcal_estimator hist_mse = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "mse",
    .help = "the fraction of the range with the least quantize-dequantize squared error",
    .accepts = histogram_kinds,
    .n_params = 1,
    .params = mse_params,
    .estimate = mse_estimate,
};
