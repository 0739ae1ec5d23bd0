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
 * When no candidate has a finite divergence (constants, tiny offset ranges: every literal
 * candidate is infinite) the threshold is max|x|: TensorRT's literal answer there is amax/16. */

enum { KL_TRT, KL_NVPQ };

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

static double kl_threshold(const hview *v, const qcal_value *params, double amax)
{
    int variant = (int)params[0].i;
    uint64_t bins = (uint64_t)params[1].i, levels = (uint64_t)params[2].i;
    uint64_t start = (uint64_t)params[3].i;
    double eps = variant == KL_TRT ? params[4].f : 0.0;
    double *ref = malloc(3 * bins * sizeof *ref);
    if (!ref || amax <= 0 || start > bins) {
        free(ref);
        return amax;
    }
    double *p = ref + bins, *q = p + bins, best = INFINITY, t = amax, W = amax / (double)bins;
    hist_rebin(v, 0.0, amax, bins, ref);
    if (variant == KL_NVPQ && bins > 1)
        ref[0] = ref[1];
    uint64_t last = variant == KL_NVPQ ? bins : bins - 1;
    for (uint64_t i = start < levels ? levels : start; i <= last; i++) {
        double kl = divergence(ref, i, bins, levels, eps, p, q);
        int better = variant == KL_NVPQ ? kl <= best : kl < best;
        if (isfinite(kl) && better) {
            best = kl;
            t = variant == KL_NVPQ ? (double)i * W : ((double)i + 0.5) * W;
        }
    }
    free(ref);
    return t < amax ? t : amax;
}

static int kl_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                       qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    if (spec->flags & ~QCAL_QSPEC_KNOWN_FLAGS)
        return fail(err, QCAL_E_UNSUP, "unknown quantization spec flags 0x%x", spec->flags);
    if ((spec->flags & QCAL_QSPEC_PER_CHANNEL) || n_ranges != 1)
        return fail(err, QCAL_E_UNSUP, "histograms are per tensor: use a per-tensor spec");
    if ((uint64_t)params[2].i > (uint64_t)params[1].i || (uint64_t)params[1].i > 65536)
        return fail(err, QCAL_E_INVAL, "levels must not exceed bins");
    hview v;
    int rc = hist_view(stat, &v, err);
    if (rc)
        return rc;
    if (!v.abs && v.smin < 0)
        return fail(err, QCAL_E_KIND, "entropy calibration needs a histogram of |x| (observe "
                    "histogram with abs=true)");
    double amax = v.abs ? v.max : fmax(fabs(v.smin), fabs(v.smax));
    double t = kl_threshold(&v, params, amax);
    int is_signed = (spec->flags & QCAL_QSPEC_SIGNED) != 0;
    ranges[0] = (qcal_range){is_signed || v.smin < 0 ? -t : 0.0, t};
    return QCAL_OK;
}

static const char *const kl_variants[] = {"trt", "nvpq", NULL};
static const qcal_param kl_params[] = {
    {.name = "variant", .type = QCAL_PARAM_CHOICE, .def = {.i = KL_TRT}, .choices = kl_variants,
     .help = "trt: Migacz 2017 as published; nvpq: NVIDIA pytorch-quantization"},
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 65536,
     .help = "reference histogram bins over [0, max|x|]"},
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
