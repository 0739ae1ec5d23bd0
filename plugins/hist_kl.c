/* hist_kl.c - entropy calibration on a qcal.histogram. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "histogram.h"

/* ---- kl: entropy calibration --------------------------------------------------------- *
 * The reference histogram is `bins` bins of |x| over [0, max|x|], re-binned from the
 * observer's finer bins by splitting each in proportion to its overlap (values assumed
 * uniform inside a fine bin: each reference bin's count is off by less than one fine bin,
 * a quarter of a reference bin with the defaults). For each candidate i, P = ref[0..i) with
 * the clipped mass added to P[i-1]; Q = ref[0..i) merged into `levels` levels (bin j to
 * floor(j levels / i)) and spread evenly over each level's non-empty bins; KL(P || Q).
 *   trt  (default): Migacz 2017 as published: candidates [start, bins), first argmin,
 *        threshold (m + 0.5) W; `smooth` > 0 adds MXNet/ONNX Runtime's epsilon smoothing of
 *        empty bins (0: literal, where an empty Q bin under mass makes KL infinite).
 *   nvpq: NVIDIA pytorch-quantization: ref[0] := ref[1] (so ReLU's zero spike does not pull
 *        the threshold down), candidates [start, bins], last argmin, threshold i W.
 *   tpu:  tpu-mlir (calibration_math kl_diversity_hist): see tpu_threshold below.
 * When no candidate has a finite divergence (constants, tiny offset ranges: every literal
 * candidate is infinite) the threshold is max|x|: TensorRT's literal answer there is amax/16. */

enum { KL_TRT, KL_NVPQ, KL_TPU };
enum { P_VARIANT, P_BINS, P_LEVELS, P_START, P_SMOOTH };

/* ORT/MXNet smoothing: empty bins get eps, taken evenly from the others. 0 if all empty. */
static int smooth_bins(double *p, uint64_t n, double eps)
{
    uint64_t zeros = 0;
    for (uint64_t j = 0; j < n; j++)
        zeros += p[j] == 0;
    if (zeros == n)
        return 0;
    double take = eps * (double)zeros / (double)(n - zeros);
    for (uint64_t j = 0; j < n; j++)
        p[j] = p[j] == 0 ? eps : p[j] - take;
    return 1;
}

static double divergence(const double *ref, uint64_t i, uint64_t total_bins, uint64_t levels,
                         double eps, double *p, double *q)
{
    double clipped = 0, mass[65536 / 16 + 1] = {0};
    uint64_t nonzero[65536 / 16 + 1] = {0};
    for (uint64_t j = i; j < total_bins; j++)
        clipped += ref[j];
    for (uint64_t j = 0; j < i; j++) {
        uint64_t l = j * levels / i;
        p[j] = ref[j];
        mass[l] += ref[j];
        nonzero[l] += ref[j] > 0;
    }
    p[i - 1] += clipped;
    for (uint64_t j = 0; j < i; j++) {
        uint64_t l = j * levels / i;
        q[j] = ref[j] > 0 ? mass[l] / (double)nonzero[l] : 0.0;
    }
    if (eps > 0 && (!smooth_bins(p, i, eps) || !smooth_bins(q, i, eps)))
        return INFINITY;
    double sp = 0, sq = 0, kl = 0;
    for (uint64_t j = 0; j < i; j++)
        sp += p[j], sq += q[j];
    if (!(sp > 0) || !(sq > 0))
        return INFINITY;
    for (uint64_t j = 0; j < i; j++) {
        if (p[j] <= 0)
            continue;
        if (q[j] <= 0)
            return INFINITY;
        kl += (p[j] / sp) * log((p[j] / sp) / (q[j] / sq));
    }
    return kl;
}

/* The threshold into *t; *searched = 0 when no candidate had a finite divergence (*t = amax). */
static int kl_threshold(const hview *v, const qcal_value *params, double amax, double *t,
                        int *searched, qcal_err *err)
{
    int variant = (int)params[P_VARIANT].i;
    uint64_t bins = (uint64_t)params[P_BINS].i, levels = (uint64_t)params[P_LEVELS].i;
    uint64_t start = (uint64_t)params[P_START].i;
    double eps = variant == KL_TRT ? params[P_SMOOTH].f : 0.0;
    *t = amax, *searched = 0;
    if (amax <= 0 || start > bins)
        return QCAL_OK;
    double *ref = malloc(3 * bins * sizeof *ref);
    if (!ref)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    double *p = ref + bins, *q = p + bins, best = INFINITY, W = amax / (double)bins;
    hist_rebin(v, 0.0, amax, bins, ref);
    if (variant == KL_NVPQ && bins > 1)
        ref[0] = ref[1];
    uint64_t last = variant == KL_NVPQ ? bins : bins - 1;
    for (uint64_t i = start < levels ? levels : start; i <= last; i++) {
        double kl = divergence(ref, i, bins, levels, eps, p, q);
        int better = variant == KL_NVPQ ? kl <= best : kl < best;
        if (isfinite(kl) && better) {
            best = kl, *searched = 1;
            *t = fmin(variant == KL_NVPQ ? (double)i * W : ((double)i + 0.5) * W, amax);
        }
    }
    free(ref);
    return QCAL_OK;
}

/* ---- tpu: tpu-mlir's kl_diversity_hist ---------------------------------------------------- *
 * The histogram holds |x| without the exact zeros, `bins` bins centred on k w, w = amax /
 * (bins - 1) (bin 0 holds [0, w/2)), padded with empty bins to N, a multiple of `levels` (D).
 * Candidates i = D, 2D, ..., N. P = h[0..i) with the tail folded into P[i-1], divided by the
 * total count; Q spreads each of the D groups' mass over its non-empty bins and divides by the
 * in-range count S only (the folded tail is not in Q, which makes the search keep light tails
 * whole and cut sparse outliers hard). KL with log10 and +1e-30 on both sides; the first strict
 * minimum wins; threshold w i, clipped to amax (i = N reaches past it). qcal differs from
 * tpu-mlir in one respect: its histogram is exact (no growth step, no int32 counts). */

/* The histogram without its exact zeros: they all sit in the bin holding 0. */
static int counts_without_zeros(const hview *v, uint64_t **out, qcal_err *err)
{
    uint64_t *c = malloc(v->n * sizeof *c);
    if (!c)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    memcpy(c, v->counts, v->n * sizeof *c);
    double at = floor(-v->lo / v->width); /* the bin holding 0 */
    if (v->zeros && !(at >= 0 && at < (double)v->n && c[(uint64_t)at] >= v->zeros)) {
        free(c);
        return fail(err, QCAL_E_DATA, "histogram statistic: %llu zeros, but the bin at 0 does "
                    "not hold them", (unsigned long long)v->zeros);
    }
    if (v->zeros)
        c[(uint64_t)at] -= v->zeros;
    *out = c;
    return QCAL_OK;
}

static double tpu_divergence(const double *h, uint64_t n, uint64_t i, uint64_t levels, double total)
{
    double in_range = 0, tail = 0, kl = 0;
    for (uint64_t j = 0; j < i; j++)
        in_range += h[j];
    for (uint64_t j = i - 1; j < n; j++)
        tail += h[j];
    uint64_t e = i / levels;
    for (uint64_t g = 0; g < i; g += e) {
        double mass = 0;
        uint64_t used = 0;
        for (uint64_t j = g; j < g + e; j++)
            mass += h[j], used += h[j] != 0;
        for (uint64_t j = g; j < g + e; j++) {
            double p = (j == i - 1 ? tail : h[j]) / total;
            double q = h[j] != 0 ? mass / (double)used / in_range : 0.0;
            if (p != 0) /* a zero P term adds 0 */
                kl += p * (log10(p + 1e-30) - log10(q + 1e-30));
        }
    }
    return kl;
}

/* The threshold into *t; *searched = 0 when there was nothing to search (no non-zero value). */
static int tpu_threshold(const hview *v, const qcal_value *params, double amax, double *t,
                         int *searched, qcal_err *err)
{
    uint64_t bins = (uint64_t)params[P_BINS].i, levels = (uint64_t)params[P_LEVELS].i;
    uint64_t padded = (bins + levels - 1) / levels * levels;
    *t = amax, *searched = 0;
    if (v->zeros == UINT64_MAX)
        return fail(err, QCAL_E_DATA, "kl variant tpu needs the count of exact zeros, which "
                    "this histogram statistic lacks");
    if (!(amax > 0) || v->zeros == v->count)
        return QCAL_OK;
    uint64_t *counts = NULL;
    int rc = counts_without_zeros(v, &counts, err);
    if (rc)
        return rc;
    double *h = calloc(padded, sizeof *h);
    if (!h) {
        free(counts);
        return fail(err, QCAL_E_NOMEM, "out of memory");
    }
    hview nonzero = *v;
    nonzero.counts = counts;
    double w = amax / (double)(bins - 1), best = INFINITY;
    hist_rebin(&nonzero, -0.5 * w, ((double)bins - 0.5) * w, bins, h);
    double total = (double)(v->count - v->zeros);
    for (uint64_t i = levels; i <= padded; i += levels) {
        double kl = tpu_divergence(h, padded, i, levels, total);
        if (kl < best)
            best = kl, *t = fmin(w * (double)i, amax);
    }
    *searched = 1;
    free(h);
    free(counts);
    return QCAL_OK;
}

static int kl_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                       qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    if ((uint64_t)params[P_LEVELS].i > (uint64_t)params[P_BINS].i)
        return fail(err, QCAL_E_INVAL, "levels must not exceed bins");
    hview v;
    int rc = hist_view_for(stat, spec, n_ranges, &v, err);
    if (rc)
        return rc;
    if (!v.abs && v.smin < 0)
        return fail(err, QCAL_E_KIND, "entropy calibration needs a histogram of |x| (observe "
                    "histogram with abs=true)");
    double amax = v.abs ? v.max : fmax(fabs(v.smin), fabs(v.smax));
    int searched;
    double t;
    rc = params[P_VARIANT].i == KL_TPU ? tpu_threshold(&v, params, amax, &t, &searched, err)
                                       : kl_threshold(&v, params, amax, &t, &searched, err);
    if (rc)
        return rc;
    note_constant(err, v.smin, v.smax);
    if (!searched && v.smin != v.smax)
        note_add(err, "no candidate threshold has a finite divergence: the threshold is max|x|");
    int is_signed = (spec->flags & QCAL_QSPEC_SIGNED) != 0;
    ranges[0] = (qcal_range){is_signed || v.smin < 0 ? -t : 0.0, t};
    return QCAL_OK;
}

static const char *const kl_variants[] = {"trt", "nvpq", "tpu", NULL};
static const qcal_param kl_params[] = {
    {.name = "variant", .type = QCAL_PARAM_CHOICE, .def = {.i = KL_TRT}, .choices = kl_variants,
     .help = "trt: Migacz 2017 as published; nvpq: NVIDIA pytorch-quantization; tpu: "
             "tpu-mlir (zeros left out, centred bins, candidates every `levels` bins)"},
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 65536,
     .help = "reference histogram bins over [0, max|x|] (tpu: centred on k max|x| / (bins - 1))"},
    {.name = "levels", .type = QCAL_PARAM_INT, .def = {.i = 128}, .min = 2, .max = 4096,
     .help = "quantized levels (int8 magnitudes: 128)"},
    {.name = "start", .type = QCAL_PARAM_INT, .def = {.i = 128}, .min = 1, .max = 65536,
     .help = "first candidate bin"},
    {.name = "smooth", .type = QCAL_PARAM_FLOAT, .def = {.f = 0.0001}, .min = 0, .max = 0.1,
     .help = "trt: epsilon smoothing of empty bins (0: literal)"},
};

const qcal_estimator hist_kl = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "kl",
    .help = "entropy calibration: the threshold minimising KL(P || Q) (TensorRT)",
    .accepts = histogram_kinds,
    .n_params = 5,
    .params = kl_params,
    .estimate = kl_estimate,
};
