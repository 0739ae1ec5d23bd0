/* pot_quantile.c - the `quantile` estimator: OpenVINO POT / NNCF range estimators on a
 * "qcal.batch_stats" statistic.
 *
 * Each border is a statistic type (min, max, abs_max, quantile, abs_quantile) reduced over the
 * units by an aggregator (mean, max, min, median, mean_no_outliers, median_no_outliers,
 * hl_estimator). `auto` takes POT's table (range_estimator.py) for the preset, the spec's
 * mode (symmetric or not) and granularity (per tensor or per channel):
 *
 *   preset    granularity  mode        min: type/aggregator   max: type/aggregator
 *   default   tensor       symmetric   min/min                abs_max/mean
 *   default   tensor       asymmetric  min/mean               max/mean
 *   default   channel      symmetric   min/min                abs_max/max
 *   default   channel      asymmetric  min/min                max/max
 *   quantile  tensor       symmetric   min/min                abs_quantile/mean
 *   quantile  tensor       asymmetric  quantile/mean          quantile/mean
 *   quantile  channel      symmetric   min/min                abs_quantile/max
 *   quantile  channel      asymmetric  quantile/min           quantile/max
 *
 * Aggregators work on the pooled unit values (NNCF; POT's mean is a mean of per-batch means,
 * the same at its default stat_batch_size 1). The no-outlier ones keep the values inside the
 * [cut, 1 - cut] quantiles (POT: cut 0.01; NNCF: its outlier_prob). hl_estimator is the
 * Hodges-Lehmann estimator, the median of the Walsh averages (x_i + x_j) / 2: over i < j as
 * POT (self_pairs=false) or i <= j as the textbook; computed exactly in O(m log m) time and
 * O(m) memory where POT builds the m x m matrix.
 *
 * Then POT's border rules (pot_fixes=true): symmetric hi >= 8e-5 (per channel also >= 1 % of
 * the strongest channel), lo = -hi when signed or any min < 0 else 0; asymmetric: a range
 * narrower than 8e-4 widens by 8e-4 each side, zero is included, and a border moves outwards
 * so that zero falls exactly on a level of the spec's grid (tune_range). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "batch_stats.h"

enum { P_PRESET, P_MIN_TYPE, P_MIN_AGG, P_MAX_TYPE, P_MAX_AGG, P_CUT, P_SELF_PAIRS, P_FIXES, N_P };
enum { T_AUTO, T_MIN, T_MAX, T_ABS_MAX, T_QUANTILE, T_ABS_QUANTILE };
enum { A_AUTO, A_MEAN, A_MAX, A_MIN, A_MEDIAN, A_MEAN_NO_OUT, A_MEDIAN_NO_OUT, A_HL };

/* ---- aggregators on m values (finite, sorted ascending) -------------------------------------- */

static double median_sorted(const double *x, uint64_t m)
{
    return m % 2 ? x[m / 2] : 0.5 * (x[m / 2 - 1] + x[m / 2]);
}

static double quantile_sorted(const double *x, uint64_t m, double q)
{
    double pos = q * (double)(m - 1);
    uint64_t i = (uint64_t)pos;
    if (i + 1 >= m)
        return x[m - 1];
    return x[i] + (pos - (double)i) * (x[i + 1] - x[i]);
}

static double mean_of(const double *x, uint64_t m)
{
    double sum = 0;
    for (uint64_t i = 0; i < m; i++)
        sum += x[i];
    return sum / (double)m;
}

/* The values inside [quantile(cut), quantile(1 - cut)], inclusive: a sub-array of x. */
static const double *inliers(const double *x, uint64_t m, double cut, uint64_t *n)
{
    double lo = quantile_sorted(x, m, cut), hi = quantile_sorted(x, m, 1.0 - cut);
    uint64_t a = 0, b = m;
    while (a < m && x[a] < lo)
        a++;
    while (b > a && x[b - 1] > hi)
        b--;
    *n = b - a;
    return x + a;
}

/* Pairs (i < j, or i <= j with self) of sorted x whose sum is <= v: two pointers, O(m). */
static uint64_t pairs_at_most(const double *x, uint64_t m, double v, int self)
{
    uint64_t count = 0;
    int64_t j = (int64_t)m - 1;
    for (int64_t i = 0; i < (int64_t)m; i++) {
        while (j >= i && x[i] + x[j] > v)
            j--;
        if (j < i)
            break;
        count += (uint64_t)(j - i) + (self ? 1 : 0);
    }
    return count;
}

/* The smallest pair sum above v. */
static double pair_sum_above(const double *x, uint64_t m, double v, int self)
{
    double best = INFINITY;
    int64_t j = (int64_t)m - 1;
    for (int64_t i = 0; i < (int64_t)m; i++) { /* j: the first partner whose sum is > v */
        int64_t first = self ? i : i + 1;
        while (j - 1 >= first && x[i] + x[j - 1] > v)
            j--;
        if (j < first)
            j = first;
        if (j < (int64_t)m && x[i] + x[j] > v && x[i] + x[j] < best)
            best = x[i] + x[j];
    }
    return best;
}

/* The k-th smallest (0-based) pair sum, by bisection on the value: exact, since pair sums of
 * float values are exact in double and the bisection ends between two adjacent doubles. */
static double kth_pair_sum(const double *x, uint64_t m, uint64_t k, int self)
{
    double lo = 2 * x[0], hi = 2 * x[m - 1]; /* count(hi) = all pairs > k */
    if (pairs_at_most(x, m, lo, self) > k)
        return lo;
    for (int it = 0; it < 4096; it++) { /* invariant: count(lo) <= k < count(hi) */
        double mid = lo + (hi - lo) / 2;
        if (mid <= lo || mid >= hi)
            break;
        if (pairs_at_most(x, m, mid, self) > k)
            hi = mid;
        else
            lo = mid;
    }
    return pair_sum_above(x, m, lo, self);
}

static double hodges_lehmann(const double *x, uint64_t m, int self)
{
    uint64_t pairs = self ? m * (m + 1) / 2 : m * (m - 1) / 2;
    if (pairs == 0)
        return x[0]; /* one value without self pairs: POT gives NaN; the value is the answer */
    double a = kth_pair_sum(x, m, (pairs - 1) / 2, self);
    double b = pairs % 2 ? a : kth_pair_sum(x, m, pairs / 2, self);
    return 0.25 * (a + b); /* the median of (x_i + x_j) / 2 */
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double aggregate(int agg, double *x, uint64_t m, double cut, int self)
{
    qsort(x, m, sizeof *x, cmp_d);
    uint64_t n;
    const double *in;
    switch (agg) {
    case A_MEAN: return mean_of(x, m);
    case A_MAX: return x[m - 1];
    case A_MIN: return x[0];
    case A_MEDIAN: return median_sorted(x, m);
    case A_MEAN_NO_OUT: in = inliers(x, m, cut, &n); return n ? mean_of(in, n) : median_sorted(x, m);
    case A_MEDIAN_NO_OUT: in = inliers(x, m, cut, &n); return n ? median_sorted(in, n) : median_sorted(x, m);
    default: return hodges_lehmann(x, m, self);
    }
}

/* ---- the estimator ------------------------------------------------------------------------- */

typedef struct border {
    int type, agg;
} border;

static void auto_borders(int quantile_preset, int symmetric, int per_channel, border b[2])
{
    if (symmetric) {
        b[0] = (border){T_MIN, A_MIN};
        b[1] = (border){quantile_preset ? T_ABS_QUANTILE : T_ABS_MAX, per_channel ? A_MAX : A_MEAN};
        return;
    }
    int t = quantile_preset ? T_QUANTILE : 0;
    b[0] = (border){t ? t : T_MIN, per_channel ? A_MIN : A_MEAN};
    b[1] = (border){t ? t : T_MAX, per_channel ? A_MAX : A_MEAN};
}

/* The statistic behind a border type: the min side takes q, the max side 1 - q (POT). */
static int stat_of(int type, int max_side)
{
    switch (type) {
    case T_MIN: return S_MIN;
    case T_MAX: return S_MAX;
    case T_ABS_MAX: return S_ABS_MAX;
    case T_QUANTILE: return max_side ? S_Q_HI : S_Q_LO;
    default: return max_side ? S_ABS_Q_HI : S_ABS_Q_LO;
    }
}

/* Aggregates statistic `st` of channel ch over the units that saw a finite value. */
static int aggregate_channel(const qcal_stat *stat, int st, int agg, uint64_t ch, double cut,
                             int self, double *scratch, double *out, qcal_err *err)
{
    const qcal_array *a = find(stat, batch_stat_names[st]);
    if (!a)
        return fail(err, QCAL_E_KIND, "the statistic has no '%s' (observe batch_stats with "
                    "quantiles=true)", batch_stat_names[st]);
    uint64_t units = a->shape[0], c = stat->channels, m = 0;
    const float *v = a->data;
    for (uint64_t u = 0; u < units; u++)
        if (!isnan(v[u * c + ch]))
            scratch[m++] = v[u * c + ch];
    if (m == 0)
        return fail(err, QCAL_E_DATA, "channel %llu saw no finite value", (unsigned long long)ch);
    *out = aggregate(agg, scratch, m, cut, self);
    return QCAL_OK;
}

/* Notes a tensor whose every finite value is one value (over all units and channels). */
static void note_if_constant(const qcal_stat *stat, uint64_t units, qcal_err *err)
{
    const float *mn = find(stat, "min")->data, *mx = find(stat, "max")->data;
    double lo = INFINITY, hi = -INFINITY;
    for (uint64_t i = 0; i < units * stat->channels; i++)
        if (!isnan(mn[i]))
            lo = fmin(lo, mn[i]), hi = fmax(hi, mx[i]);
    if (lo <= hi)
        note_constant(err, lo, hi);
}

static int stat_check(const qcal_stat *stat, uint64_t *units, qcal_err *err)
{
    const qcal_array *u = find(stat, "unit");
    if (!u || u->rank != 1 || stat->channels == 0)
        return fail(err, QCAL_E_DATA, "batch_stats statistic without units");
    *units = u->shape[0];
    if (*units == 0)
        return fail(err, QCAL_E_DATA, "no unit was observed");
    for (int k = 0; k < N_STATS; k++) {
        const qcal_array *a = find(stat, batch_stat_names[k]);
        if (!a && k < N_EXTREMA)
            return fail(err, QCAL_E_DATA, "array '%s' is missing", batch_stat_names[k]);
        if (a && !expect(stat, batch_stat_names[k], QCAL_DTYPE_F32, 2, *units, stat->channels, err))
            return QCAL_E_DATA;
    }
    return QCAL_OK;
}

/* ---- POT's border rules ---------------------------------------------------------------------- */

static void symmetric_fix(qcal_range *r, uint64_t n, int is_signed, int any_negative, int fixes,
                          qcal_err *err)
{
    double strongest = 0;
    for (uint64_t i = 0; i < n; i++)
        strongest = fmax(strongest, r[i].hi);
    double floor_hi = fixes ? fmax(8e-5, n > 1 ? 0.01 * strongest : 0) : 0;
    uint64_t raised = 0;
    for (uint64_t i = 0; i < n; i++) {
        raised += r[i].hi < floor_hi;
        r[i].hi = fmax(fmax(r[i].hi, floor_hi), 0);
        r[i].lo = is_signed || any_negative ? -r[i].hi : 0;
    }
    if (raised)
        note_add(err, "%llu of %llu upper borders raised to POT's floor max(8e-5, 1 %% of the "
                 "largest) = %g", (unsigned long long)raised,
                 (unsigned long long)n, floor_hi);
}

/* POT's tune_range: move one border outwards so zero is exactly level q of `levels` - 1 steps. */
static void tune_range(qcal_range *r, double steps)
{
    double lo = r->lo, hi = r->hi, q = nearbyint(-lo * steps / (hi - lo));
    if (q <= 0 || q >= steps)
        return;
    double new_lo = q * hi / (q - steps), new_hi = (q - steps) * lo / q;
    if (hi - new_lo > new_hi - lo) /* keep the larger range */
        r->lo = new_lo;
    else
        r->hi = new_hi;
}

static void asymmetric_fix(qcal_range *r, double steps, int fixes, qcal_err *err)
{
    if (fixes && r->hi - r->lo <= 8e-4) {
        note_add(err, "range [%g, %g] narrower than 8e-4: widened by 8e-4 on each side (POT)",
                 r->lo, r->hi);
        r->lo -= 8e-4, r->hi += 8e-4;
    }
    r->lo = fmin(r->lo, 0), r->hi = fmax(r->hi, 0);
    if (fixes && r->hi > r->lo)
        tune_range(r, steps);
}

static int q_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                      qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    if (spec->flags & ~QCAL_QSPEC_KNOWN_FLAGS)
        return fail(err, QCAL_E_UNSUP, "unknown quantization spec flags 0x%x", spec->flags);
    int per_channel = (spec->flags & QCAL_QSPEC_PER_CHANNEL) != 0, rc;
    if (!per_channel && stat->channels != 1)
        return fail(err, QCAL_E_KIND, "a per-tensor spec needs batch_stats with per_channel=false");
    uint64_t units = 0;
    if ((rc = stat_check(stat, &units, err)))
        return rc;
    note_if_constant(stat, units, err);
    int symmetric = (spec->flags & QCAL_QSPEC_SYMMETRIC) != 0;
    border b[2];
    auto_borders(params[P_PRESET].i == 1, symmetric, per_channel, b);
    b[0].type = params[P_MIN_TYPE].i ? (int)params[P_MIN_TYPE].i : b[0].type;
    b[0].agg = params[P_MIN_AGG].i ? (int)params[P_MIN_AGG].i : b[0].agg;
    b[1].type = params[P_MAX_TYPE].i ? (int)params[P_MAX_TYPE].i : b[1].type;
    b[1].agg = params[P_MAX_AGG].i ? (int)params[P_MAX_AGG].i : b[1].agg;
    double *scratch = malloc(units * sizeof *scratch);
    if (!scratch)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    int any_negative = 0;
    for (uint64_t ch = 0; ch < n_ranges && !rc; ch++) {
        double lo = 0, hi = 0;
        rc = aggregate_channel(stat, stat_of(b[0].type, 0), b[0].agg, ch, params[P_CUT].f,
                               (int)params[P_SELF_PAIRS].i, scratch, &lo, err);
        if (!rc)
            rc = aggregate_channel(stat, stat_of(b[1].type, 1), b[1].agg, ch, params[P_CUT].f,
                                   (int)params[P_SELF_PAIRS].i, scratch, &hi, err);
        any_negative |= lo < 0;
        ranges[ch] = (qcal_range){lo, hi};
    }
    free(scratch);
    if (rc)
        return rc;
    int fixes = (int)params[P_FIXES].i;
    if (symmetric) {
        symmetric_fix(ranges, n_ranges, (spec->flags & QCAL_QSPEC_SIGNED) != 0, any_negative,
                      fixes, err);
        return QCAL_OK;
    }
    for (uint64_t ch = 0; ch < n_ranges; ch++) {
        if (ranges[ch].lo > ranges[ch].hi) /* e.g. min from one statistic, max from another */
            return fail(err, QCAL_E_DATA, "channel %llu: aggregated min %g above max %g",
                        (unsigned long long)ch, ranges[ch].lo, ranges[ch].hi);
        asymmetric_fix(&ranges[ch], (double)(spec->qmax - spec->qmin), fixes, err);
    }
    return QCAL_OK;
}

static const char *const preset_choices[] = {"default", "quantile", NULL};
static const char *const type_choices[] = {"auto", "min", "max", "abs_max", "quantile",
                                           "abs_quantile", NULL};
static const char *const agg_choices[] = {"auto", "mean", "max", "min", "median", "mean_no_outliers",
                                          "median_no_outliers", "hl_estimator", NULL};

static const qcal_param q_params[N_P] = {
    {.name = "preset", .type = QCAL_PARAM_CHOICE, .def = {.i = 1}, .choices = preset_choices,
     .help = "POT range_estimator preset: default (min/max) or quantile (outlier_prob)"},
    {.name = "min_type", .type = QCAL_PARAM_CHOICE, .def = {.i = T_AUTO}, .choices = type_choices,
     .help = "statistic of the lower border (auto: the preset's)"},
    {.name = "min_aggregator", .type = QCAL_PARAM_CHOICE, .def = {.i = A_AUTO}, .choices = agg_choices,
     .help = "aggregator of the lower border over units (auto: the preset's)"},
    {.name = "max_type", .type = QCAL_PARAM_CHOICE, .def = {.i = T_AUTO}, .choices = type_choices,
     .help = "statistic of the upper border (auto: the preset's)"},
    {.name = "max_aggregator", .type = QCAL_PARAM_CHOICE, .def = {.i = A_AUTO}, .choices = agg_choices,
     .help = "aggregator of the upper border over units (auto: the preset's)"},
    {.name = "cut", .type = QCAL_PARAM_FLOAT, .def = {.f = 0.01}, .min = 0, .max = 0.49,
     .help = "tail cut of the *_no_outliers aggregators (POT 0.01; NNCF uses outlier_prob)"},
    {.name = "self_pairs", .type = QCAL_PARAM_BOOL, .def = {.i = 0}, .min = 0, .max = 1,
     .help = "hl_estimator over i <= j (textbook) instead of i < j (POT)"},
    {.name = "pot_fixes", .type = QCAL_PARAM_BOOL, .def = {.i = 1}, .min = 0, .max = 1,
     .help = "POT's border rules: 8e-5 / 8e-4 floors, 1 % weak-channel floor, tune_range"},
};

static const char *const accepted[] = {BATCH_STATS_KIND, NULL};

const qcal_estimator batch_quantile = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "quantile",
    .help = "OpenVINO POT / NNCF range estimators: per-unit statistics, aggregated over units",
    .accepts = accepted,
    .n_params = N_P,
    .params = q_params,
    .estimate = q_estimate,
};
