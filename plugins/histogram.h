/* histogram.h - the histogram plugin's shared parts: a read-only view of a "qcal.histogram"
 * statistic (the kind documented in qcal/plugin.h) and the estimators working on it. */
#ifndef QCAL_PLUGINS_HISTOGRAM_H
#define QCAL_PLUGINS_HISTOGRAM_H

#include <qcal/plugin.h>

typedef struct hview {
    const uint64_t *counts;
    uint64_t n, count, abs;
    uint64_t zeros; /* finite values equal to 0; UINT64_MAX if the producer did not count them */
    double lo, width, min, max, smin, smax;
} hview;


/* The 1-D (or scalar) array `name` of dtype with n entries (UINT64_MAX: any); NULL if absent,
 * of another type or shape, or without data. */
const void *hist_array(const qcal_stat *st, const char *name, uint32_t dtype, uint64_t n);
/* Entries of the 1-D array "counts"; UINT64_MAX if there is none. */
uint64_t hist_counts_length(const qcal_stat *st);
/* Checks a qcal.histogram statistic (counts sum to count, extrema ordered) and views it. */
int hist_view(const qcal_stat *st, hview *v, qcal_err *err);
/* What every histogram estimator starts with: a known, per-tensor spec (one range), then
 * hist_view. */
int hist_view_for(const qcal_stat *st, const qcal_qspec *spec, uint64_t n_ranges, hview *v,
                  qcal_err *err);

/* Spreads the histogram over `bins` equal bins on [lo, hi] (values assumed uniform inside each
 * of its bins; the part of a bin outside [lo, hi] holds no value, as lo and hi are at or
 * beyond the exact extrema): each count is off by less than one source bin. */
void hist_rebin(const hview *v, double lo, double hi, uint64_t bins, double *ref);

/* Extrema of the finite values of x (ext[0..1] as histogrammed: of |x| when abs; ext[2..3]
 * signed) and the NaN / Inf counts. */
void hist_scan(int abs, const float *x, uint64_t n, float ext[4], uint64_t *nan, uint64_t *inf);

extern const char *const histogram_kinds[];
extern const qcal_observer hist_fixed_observer;
extern const qcal_estimator hist_percentile, hist_kl, hist_mse, hist_l2_search;

#endif
