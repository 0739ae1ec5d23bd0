/* hist_l2.c - l2_search: torch HistogramObserver's non-linear search for (min, max).
 *
 * The histogram of x is re-binned onto `bins` equal bins over [min, max] (torch's histogram;
 * torch <= 1.13 truncates those bounds to integers and loses values outside them, a defect
 * qcal does not have: its histogram is exact). Then, as torch (a port of caffe2's
 * NormMinimization): quantile bounds alpha = 0 and beta = 1 move inwards in steps of 1e-5;
 * at each step the side whose bin index would move more is moved (ties: the upper side), and
 * the window [start, end] is kept while its L2 error does not increase: the search stops at
 * the first increase. Result [min + start w, min + (end + 1) w].
 *
 * The error of a window: it is cut into `levels` destination bins; each source bin's count is
 * spread uniformly over the bin and charged (x - c)^2, c the centre of the destination bin of
 * x, the destination index clamped to the window (so mass outside pays its distance to the
 * edge bin's centre). Torch uses 256 levels whatever the observer's quant_min/max: levels=0
 * (the default) takes the spec's number of levels instead, levels=256 is torch's behaviour. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "histogram.h"

enum { L2_BINS, L2_LEVELS, N_L2 };

/* Integral of density * (x - c)^2 over x - c in [a, b]. */
static double norm_of(double a, double b, double density)
{
    return density * (b * b * b - a * a * a) / 3.0;
}

/* L2 error of quantizing hist (bins of width w) with the window [start, end] in `levels`. */
static double window_error(const double *hist, uint64_t bins, double w, uint64_t start,
                           uint64_t end, uint64_t levels)
{
    double dst = w * (double)(end - start + 1) / (double)levels, half = dst / 2, err = 0;
    if (dst == 0)
        return 0;
    double last = (double)levels - 1;
    for (uint64_t i = 0; i < bins; i++) {
        if (hist[i] == 0)
            continue;
        double begin = ((double)i - (double)start) * w, end_x = begin + w, density = hist[i] / w;
        double db = fmin(fmax(floor(begin / dst), 0), last), de = fmin(fmax(floor(end_x / dst), 0), last);
        double cb = db * dst + half, ce = de * dst + half;
        /* from begin to the end of its destination bin, whole bins between, then the rest */
        err += norm_of(begin - cb, half, density);
        err += (de - db - 1) * norm_of(-half, half, density);
        err += norm_of(-half, end_x - ce, density);
    }
    return err;
}

/* The greedy search; returns the window in *start, *end. */
static void search(const double *hist, uint64_t bins, double w, uint64_t levels,
                   uint64_t *start_out, uint64_t *end_out)
{
    double *cum = malloc(bins * sizeof *cum), total = 0;
    *start_out = 0, *end_out = bins - 1;
    if (!cum)
        return;
    for (uint64_t i = 0; i < bins; i++)
        cum[i] = (total += hist[i]);
    const double step = 1e-5;
    double alpha = 0, beta = 1, best = INFINITY;
    uint64_t start = 0, end = bins - 1;
    while (alpha < beta) {
        double next_alpha = alpha + step, next_beta = beta - step;
        uint64_t l = start, r = end;
        while (l < end && cum[l] < next_alpha * total)
            l++;
        while (r > start && cum[r] > next_beta * total)
            r--;
        uint64_t next_start = start, next_end = end;
        if (l - start > end - r)
            next_start = l, alpha = next_alpha;
        else
            next_end = r, beta = next_beta;
        if (next_start == start && next_end == end)
            continue;
        double e = window_error(hist, bins, w, next_start, next_end, levels);
        if (e > best)
            break;
        best = e, start = next_start, end = next_end;
    }
    free(cum);
    *start_out = start, *end_out = end;
}

static int l2_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                       qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    hview v;
    int rc = hist_view_for(stat, spec, n_ranges, &v, err);
    if (rc)
        return rc;
    if (v.abs)
        return fail(err, QCAL_E_KIND, "l2_search needs a histogram of x (observe histogram with "
                    "abs=false)");
    note_constant(err, v.smin, v.smax);
    uint64_t bins = (uint64_t)params[L2_BINS].i;
    uint64_t levels = params[L2_LEVELS].i ? (uint64_t)params[L2_LEVELS].i
                                          : (uint64_t)((int64_t)spec->qmax - spec->qmin + 1);
    double lo = v.smin, hi = v.smax;
    if (hi > lo) {
        double *hist = malloc(bins * sizeof *hist), w = (hi - lo) / (double)bins;
        if (!hist)
            return fail(err, QCAL_E_NOMEM, "out of memory");
        hist_rebin(&v, lo, hi, bins, hist);
        uint64_t start, end;
        search(hist, bins, w, levels, &start, &end);
        free(hist);
        lo = v.smin + w * (double)start;
        hi = fmin(v.smin + w * (double)(end + 1), v.smax); /* the top edge, up to rounding */
    }
    if (spec->flags & QCAL_QSPEC_SYMMETRIC) {
        double t = fmax(fabs(lo), fabs(hi));
        ranges[0] = (qcal_range){(spec->flags & QCAL_QSPEC_SIGNED) || v.smin < 0 ? -t : 0.0, t};
    } else {
        ranges[0] = (qcal_range){lo, hi};
    }
    return QCAL_OK;
}

static const qcal_param l2_params[N_L2] = {
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 65536,
     .help = "bins over [min, max] the search walks (torch: 2048)"},
    {.name = "levels", .type = QCAL_PARAM_INT, .def = {.i = 0}, .min = 0, .max = 65536,
     .help = "quantized levels of the error model; 0: the spec's; 256: torch, whatever the spec"},
};

const qcal_estimator hist_l2_search = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "l2_search",
    .help = "torch HistogramObserver's greedy search for (min, max) by L2 error on the histogram",
    .accepts = histogram_kinds,
    .n_params = N_L2,
    .params = l2_params,
    .estimate = l2_estimate,
};
