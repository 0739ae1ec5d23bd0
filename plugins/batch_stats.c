/* batch_stats.c - the batch_stats observer: POT/NNCF statistics, one row per sample or batch.
 *
 * For every unit (a sample by default, as NNCF and POT at its default stat_batch_size 1; or a
 * batch of the tensor's batch_size samples, as POT's in-graph reductions) and channel, the
 * observer keeps min, max, abs max and, with quantiles=true, the quantiles q and 1 - q of x
 * and of |x| (q = outlier_prob, linear interpolation as numpy). NaN and Inf are left out and
 * counted. Units are stored with their index and sorted when published, so the statistic does
 * not depend on how the dump was cut into slabs or spread over threads.
 *
 * Memory: 7 floats per unit and channel (POT keeps the same list of per-batch arrays); bound
 * it with the recipe's sample limit (pot.lua: stat_subset_size).
 * The estimator on this statistic (`quantile`, POT's range estimators) is in pot_quantile.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "batch_stats.h"

#define STATE_KIND "qcal.batch_stats.state"
#define MAX_VALUES ((uint64_t)1 << 32) /* units x channels x statistics */

enum { P_UNIT, P_PER_CHANNEL, P_OUTLIER, P_QUANTILES, N_PARAMS };
enum { UNIT_SAMPLE, UNIT_BATCH };

const char *const batch_stat_names[N_STATS] = {
    "min", "max", "abs_max", "quantile_lo", "quantile_hi", "abs_quantile_lo", "abs_quantile_hi",
};

typedef struct bs_state {
    layout g;
    uint64_t unit_rows;   /* samples per unit */
    int quantiles;        /* quantile statistics wanted */
    double outlier_prob;
    uint64_t n, cap;      /* units held */
    uint64_t *unit;       /* [cap] unit index, in arrival order */
    float *values;        /* [cap][N_STATS][C] */
    float *scratch;       /* one unit's values of one channel */
    float *keep;          /* the values a quantile filter keeps (after scratch, same block) */
    uint64_t nonfinite[2];
    /* serialize / finalize output (owned here) */
    uint64_t *out_unit;
    float *out_values[N_STATS]; /* [U][C] each */
    uint64_t out_rows, out_q;
    double out_prob;
    qcal_array arrays[N_STATS + 6];
} bs_state;

static uint64_t n_stats(const bs_state *s) { return s->quantiles ? N_STATS : N_EXTREMA; }

/* ---- order statistics ---------------------------------------------------------------------- */

static void swap_f(float *a, float *b)
{
    float t = *a;
    *a = *b, *b = t;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Moves the k-th smallest of v[0..n) to v[k], smaller ones before it, larger ones after.
 * Quickselect (Hoare partition, median-of-three pivot); sorts the rest if it degenerates. */
static void select_kth(float *v, uint64_t n, uint64_t k)
{
    int64_t lo = 0, hi = (int64_t)n - 1, K = (int64_t)k;
    for (int rounds = 0; hi > lo; rounds++) {
        if (rounds > 64) {
            qsort(v + lo, (size_t)(hi - lo + 1), sizeof *v, cmp_f);
            return;
        }
        int64_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo]) swap_f(&v[mid], &v[lo]);
        if (v[hi] < v[lo]) swap_f(&v[hi], &v[lo]);
        if (v[hi] < v[mid]) swap_f(&v[hi], &v[mid]);
        float pivot = v[mid];
        int64_t i = lo, j = hi;
        while (i <= j) { /* v[lo] <= pivot <= v[hi] keep both scans in bounds */
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j)
                swap_f(&v[i++], &v[j--]);
        }
        if (K <= j)
            hi = j;
        else if (K >= i)
            lo = i;
        else
            return; /* v[j+1 .. i-1] all equal the pivot */
    }
}

/* numpy's linear quantile of v[0..n) (reordered) at position i + f: v_(i) + f (v_(i+1) - v_(i)) */
static float quantile_at(float *v, uint64_t n, uint64_t i, double f)
{
    select_kth(v, n, i);
    double a = v[i];
    if (f <= 0 || i + 1 >= n)
        return (float)a;
    float b = v[i + 1]; /* the smallest of the upper part */
    for (uint64_t j = i + 2; j < n; j++)
        b = v[j] < b ? v[j] : b;
    return (float)(a + f * ((double)b - a));
}

/* The position of the linear q-quantile among n values: index i, fraction f (i + f = q (n-1)) */
static uint64_t quantile_index(uint64_t n, double q, double *f)
{
    double pos = q * (double)(n - 1);
    uint64_t i = (uint64_t)pos;
    if (i >= n - 1)
        i = n - 1;
    *f = pos - (double)i;
    return i;
}

static float quantile_of(float *v, uint64_t n, double q)
{
    double f;
    uint64_t i = quantile_index(n, q, &f);
    return quantile_at(v, n, i, f);
}

/* ---- quantiles near an end, by a filter ---------------------------------------------------- *
 * quantile_of reorders all of a unit's values, four times per unit: 87 % of a pot pass. The
 * quantiles POT asks for sit near the ends (outlier_prob 1e-4), and need only the few values
 * beyond them. A threshold t from a sample of the values splits them in one pass that
 * reorders nothing: those beyond t are kept, those equal to t counted (a ReLU tensor's zeros
 * are mostly ties). In the sorted values the kept ones and the ties are a known run of ranks
 * at that end; when ranks i and i + 1 fall in it, the quantile follows with quantile_at's own
 * arithmetic: the same value. When the sample misjudges (the ranks fall outside, or more are
 * kept than the buffer holds) or the rank is not near an end, quantile_of does it. */
enum { FILTER_MIN = 1 << 15, SAMPLE = 1024, FILTER_BLOCK = 4096 };

/* The keep buffer for units of n values: room for n / 16 kept plus a block's overrun */
static uint64_t keep_capacity(uint64_t n) { return n / 16; }
static uint64_t keep_size(uint64_t n) { return keep_capacity(n) + FILTER_BLOCK; }

/* The values of v[0..n) below t (upper: above) into keep, their count into *m, the count of
 * those equal to t into *ties; 0 when more than cap would be kept. Every value is written
 * (keep[m] is overwritten until one is kept), so the loop has no branch; checked after each
 * block, so keep needs cap + FILTER_BLOCK entries. */
static int keep_beyond(const float *v, uint64_t n, float t, int upper, float *keep, uint64_t cap,
                       uint64_t *m, uint64_t *ties)
{
    uint64_t kept = 0, equal = 0;
    for (uint64_t at = 0; at < n; at += FILTER_BLOCK) {
        uint64_t end = n - at < FILTER_BLOCK ? n : at + FILTER_BLOCK;
        if (upper)
            for (uint64_t i = at; i < end; i++)
                keep[kept] = v[i], kept += v[i] > t, equal += v[i] == t;
        else
            for (uint64_t i = at; i < end; i++)
                keep[kept] = v[i], kept += v[i] < t, equal += v[i] == t;
        if (kept > cap)
            return 0;
    }
    *m = kept, *ties = equal;
    return 1;
}

/* A threshold that `need` values of v[0..n) reach (are at or below; upper: at or above) with
 * a wide margin, from SAMPLE values at scattered positions (a fixed sequence: the same runs
 * the same way); NAN when the sample says the filter would keep too much. */
static float filter_threshold(const float *v, uint64_t n, uint64_t need, int upper)
{
    float sample[SAMPLE];
    uint64_t stride = n / SAMPLE, mix = 0x9e3779b97f4a7c15u;
    for (uint64_t k = 0; k < SAMPLE; k++) {
        mix = mix * 6364136223846793005u + 1442695040888963407u;
        sample[k] = v[k * stride + (mix >> 33) % stride];
    }
    double expect = (double)need * SAMPLE / (double)n;
    double rank = ceil(expect + 4 * sqrt(expect) + 8); /* ~4 sigma above the expected count */
    if (rank >= SAMPLE / 8)
        return NAN;
    uint64_t at = upper ? SAMPLE - 1 - (uint64_t)rank : (uint64_t)rank;
    select_kth(sample, SAMPLE, at);
    return sample[at];
}

/* quantile_of(v, n, q) without reordering v, by the values beyond t (below it when i is in
 * the lower half of the ranks, else above); 0 when t does not reach ranks i and i + 1 or more
 * than the buffer holds are beyond it. */
static int quantile_beyond(const float *v, uint64_t n, double q, float t, float *keep, float *out)
{
    double f;
    uint64_t i = quantile_index(n, q, &f), m, ties;
    int upper = i >= n / 2;
    if (!keep_beyond(v, n, t, upper, keep, keep_capacity(n), &m, &ties))
        return 0;
    /* ranks [kept_from, kept_from + m) are the kept values, [tie_from, tie_from + ties) t */
    uint64_t kept_from = upper ? n - m : 0, tie_from = upper ? n - m - ties : m;
    uint64_t last = f > 0 && i + 1 < n ? i + 1 : i; /* the ranks the quantile reads: i, last */
    if (upper ? i < tie_from : last >= m + ties)
        return 0;
    int a_kept = i >= kept_from && i < kept_from + m, b_kept = last >= kept_from && last < kept_from + m;
    double a = t;
    if (a_kept) {
        select_kth(keep, m, i - kept_from);
        a = keep[i - kept_from];
    }
    if (last == i) {
        *out = (float)a;
        return 1;
    }
    float b = t; /* rank i + 1: the least kept value above rank i's, or a tie */
    uint64_t from = a_kept ? i - kept_from + 1 : 0;
    if (b_kept) {
        b = keep[from];
        for (uint64_t j = from + 1; j < m; j++)
            b = keep[j] < b ? keep[j] : b;
    }
    *out = (float)(a + f * ((double)b - a));
    return 1;
}

/* quantile_of(v, n, q) without reordering v, when q is near an end; 0 when it cannot. */
static int quantile_near_end(const float *v, uint64_t n, double q, float *keep, float *out)
{
    double f;
    uint64_t i = quantile_index(n, q, &f);
    int upper = i >= n / 2;
    uint64_t need = upper ? n - i : i + 2; /* the values from that end down to ranks i, i + 1 */
    if (n < FILTER_MIN || need > keep_capacity(n) / 2)
        return 0;
    float t = filter_threshold(v, n, need, upper);
    return !isnan(t) && quantile_beyond(v, n, q, t, keep, out);
}

static float quantile_fast(float *v, uint64_t n, double q, float *keep)
{
    float x;
    return quantile_near_end(v, n, q, keep, &x) ? x : quantile_of(v, n, q);
}

/* ---- one unit ------------------------------------------------------------------------------ */

/* Copies channel ch's finite values of `rows` samples into out; returns how many. */
static uint64_t gather(const layout *g, const float *x, uint64_t rows, uint64_t ch, float *out)
{
    uint64_t n = 0, blocks = rows * g->outer;
    for (uint64_t b = 0; b < blocks; b++) {
        const float *run = x + b * g->channels * g->inner + ch * g->inner;
        for (uint64_t i = 0; i < g->inner; i++) {
            float v = run[i] + 0.0f;
            out[n] = v;
            n += isfinite(v) != 0;
        }
    }
    return n;
}

/* The statistics of n finite values (reordered) into st[N_STATS] (quantiles: only if asked). */
static void unit_stats(const bs_state *s, float *v, uint64_t n, float st[N_STATS])
{
    if (n == 0) {
        for (int k = 0; k < N_STATS; k++)
            st[k] = NAN;
        return;
    }
    float lo = INFINITY, hi = -INFINITY;
    uint64_t count = 0, nonfinite[2] = {0, 0};
    scan_run(v, n, &lo, &hi, &count, nonfinite);
    st[S_MIN] = lo, st[S_MAX] = hi, st[S_ABS_MAX] = fmaxf(fabsf(lo), fabsf(hi));
    if (!s->quantiles) {
        st[S_Q_LO] = st[S_Q_HI] = st[S_ABS_Q_LO] = st[S_ABS_Q_HI] = NAN; /* not kept */
        return;
    }
    st[S_Q_LO] = quantile_fast(v, n, s->outlier_prob, s->keep);
    st[S_Q_HI] = quantile_fast(v, n, 1.0 - s->outlier_prob, s->keep);
    for (uint64_t i = 0; i < n; i++)
        v[i] = fabsf(v[i]);
    st[S_ABS_Q_LO] = quantile_fast(v, n, s->outlier_prob, s->keep);
    st[S_ABS_Q_HI] = quantile_fast(v, n, 1.0 - s->outlier_prob, s->keep);
}

static int bs_grow(bs_state *s, uint64_t need)
{
    if (need <= s->cap)
        return 0;
    uint64_t cap = s->cap ? s->cap : 64, row = N_STATS * s->g.channels;
    while (cap < need)
        cap *= 2;
    if (cap > MAX_VALUES / row)
        return -1;
    uint64_t *unit = realloc(s->unit, cap * sizeof *unit);
    if (unit)
        s->unit = unit;
    float *values = unit ? realloc(s->values, cap * row * sizeof *values) : NULL;
    if (!values)
        return -1;
    s->values = values, s->cap = cap;
    return 0;
}

static void count_nonfinite(bs_state *s, const float *x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            s->nonfinite[isnan(x[i]) ? 0 : 1]++;
}

static int bs_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    bs_state *s = state;
    int rc = slab_check(&s->g, slab, err);
    if (rc)
        return rc;
    uint64_t c = s->g.channels, row = N_STATS * c;
    for (uint64_t r = 0; r < slab->rows;) {
        uint64_t index = (slab->first_row + r) / s->unit_rows;
        uint64_t end = (index + 1) * s->unit_rows - slab->first_row; /* this unit's end */
        end = end > slab->rows ? slab->rows : end;
        if (bs_grow(s, s->n + 1))
            return fail(err, QCAL_E_NOMEM, "out of memory for %llu units of %llu channels",
                        (unsigned long long)(s->n + 1), (unsigned long long)c);
        const float *x = slab->data + r * s->g.row_size;
        count_nonfinite(s, x, (end - r) * s->g.row_size);
        float *out = s->values + s->n * row;
        for (uint64_t ch = 0; ch < c; ch++) {
            float st[N_STATS];
            unit_stats(s, s->scratch, gather(&s->g, x, end - r, ch, s->scratch), st);
            for (int k = 0; k < N_STATS; k++)
                out[(uint64_t)k * c + ch] = st[k];
        }
        s->unit[s->n++] = index;
        r = end;
    }
    return QCAL_OK;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static void out_free(bs_state *s)
{
    free(s->out_unit);
    s->out_unit = NULL;
    for (int k = 0; k < N_STATS; k++)
        free(s->out_values[k]), s->out_values[k] = NULL;
}

static void bs_destroy(void *state)
{
    bs_state *s = state;
    if (!s)
        return;
    out_free(s);
    free(s->unit), free(s->values), free(s->scratch), free(s);
}

static int bs_create(const qcal_tensor *t, const qcal_value *params, void **state, qcal_err *err)
{
    bs_state *s = calloc(1, sizeof *s);
    if (!s)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    int rc = layout_make(t, (int)params[P_PER_CHANNEL].i, &s->g, err);
    s->unit_rows = params[P_UNIT].i == UNIT_BATCH ? t->batch_size : 1;
    s->quantiles = (int)params[P_QUANTILES].i;
    s->outlier_prob = params[P_OUTLIER].f;
    if (!rc && s->unit_rows == 0)
        rc = fail(err, QCAL_E_INVAL, "unit=batch but the tensor has no batch size");
    uint64_t per_channel = s->g.row_size / (s->g.channels ? s->g.channels : 1);
    if (!rc && per_channel > MAX_VALUES / s->unit_rows)
        rc = fail(err, QCAL_E_INVAL, "a unit of %llu samples is too large",
                  (unsigned long long)s->unit_rows);
    uint64_t unit_values = s->unit_rows * per_channel;
    if (!rc && !(s->scratch = malloc((unit_values + keep_size(unit_values)) * sizeof(float))))
        rc = fail(err, QCAL_E_NOMEM, "out of memory");
    if (!rc)
        s->keep = s->scratch + unit_values;
    if (rc) {
        bs_destroy(s);
        return rc;
    }
    *state = s;
    return QCAL_OK;
}

static int bs_same(const bs_state *a, const bs_state *b)
{
    return a->g.channels == b->g.channels && a->unit_rows == b->unit_rows &&
           a->quantiles == b->quantiles && a->outlier_prob == b->outlier_prob;
}

/* Appends n units (index, values [n][N_STATS][C]). */
static int bs_append(bs_state *s, const uint64_t *unit, const float *values, uint64_t n)
{
    if (bs_grow(s, s->n + n))
        return -1;
    uint64_t row = N_STATS * s->g.channels;
    memcpy(s->unit + s->n, unit, n * sizeof *unit);
    memcpy(s->values + s->n * row, values, n * row * sizeof *values);
    s->n += n;
    return 0;
}

static int bs_merge(void *into, const void *from, qcal_err *err)
{
    bs_state *a = into;
    const bs_state *b = from;
    if (!bs_same(a, b))
        return fail(err, QCAL_E_INVAL, "batch_stats states with different settings");
    if (bs_append(a, b->unit, b->values, b->n))
        return fail(err, QCAL_E_NOMEM, "out of memory");
    a->nonfinite[0] += b->nonfinite[0];
    a->nonfinite[1] += b->nonfinite[1];
    return QCAL_OK;
}

/* ---- publishing: units sorted by index ------------------------------------------------------ */

typedef struct keyed {
    uint64_t unit, at;
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
    uint64_t x = ((const keyed *)a)->unit, y = ((const keyed *)b)->unit;
    return (x > y) - (x < y);
}

/* Fills out_unit and out_values in unit order; fails if a unit was observed twice. */
static int publish(bs_state *s, qcal_err *err)
{
    uint64_t n = s->n, c = s->g.channels;
    keyed *order = malloc((n + 1) * sizeof *order);
    out_free(s);
    s->out_unit = malloc((n + 1) * sizeof *s->out_unit);
    int ok = order && s->out_unit;
    for (int k = 0; ok && k < N_STATS; k++)
        ok = (s->out_values[k] = malloc((n * c + 1) * sizeof(float))) != NULL;
    if (!ok) {
        free(order);
        return fail(err, QCAL_E_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < n; i++)
        order[i] = (keyed){s->unit[i], i};
    qsort(order, n, sizeof *order, cmp_keyed);
    for (uint64_t i = 0; i < n; i++) {
        s->out_unit[i] = order[i].unit;
        for (int k = 0; k < N_STATS; k++)
            memcpy(s->out_values[k] + i * c, s->values + (order[i].at * N_STATS + (uint64_t)k) * c,
                   c * sizeof(float));
    }
    free(order);
    for (uint64_t i = 1; i < n; i++)
        if (s->out_unit[i] == s->out_unit[i - 1])
            return fail(err, QCAL_E_DATA, "unit %llu was observed twice (overlapping shards?)",
                        (unsigned long long)s->out_unit[i]);
    return QCAL_OK;
}

static int bs_out(bs_state *s, const char *kind, qcal_stat *out, qcal_err *err)
{
    int rc = publish(s, err);
    if (rc)
        return rc;
    uint64_t n = s->n, c = s->g.channels;
    uint32_t k = 0;
    for (uint64_t st = 0; st < n_stats(s); st++)
        s->arrays[k++] = array2(batch_stat_names[st], QCAL_DTYPE_F32, n, c, s->out_values[st]);
    s->out_rows = s->unit_rows, s->out_prob = s->outlier_prob, s->out_q = (uint64_t)s->quantiles;
    s->arrays[k++] = array1("unit", QCAL_DTYPE_U64, n, s->out_unit);
    s->arrays[k++] = array1("outlier_prob", QCAL_DTYPE_F64, 1, &s->out_prob);
    s->arrays[k++] = array1("unit_rows", QCAL_DTYPE_U64, 1, &s->out_rows);
    s->arrays[k++] = array1("nonfinite", QCAL_DTYPE_U64, 2, s->nonfinite);
    s->arrays[k++] = array1("quantiles", QCAL_DTYPE_U64, 1, &s->out_q);
    *out = (qcal_stat){kind, 1, k, c, s->arrays};
    return QCAL_OK;
}

static int bs_finalize(void *state, qcal_stat *out, qcal_err *err)
{
    return bs_out(state, BATCH_STATS_KIND, out, err);
}

static int bs_serialize(const void *state, qcal_stat *out, qcal_err *err)
{
    return bs_out((bs_state *)state, STATE_KIND, out, err); /* only out_* members change */
}

/* ---- saved states --------------------------------------------------------------------------- */

static int settings_check(const bs_state *s, const qcal_stat *in, qcal_err *err)
{
    const qcal_array *rows = expect(in, "unit_rows", QCAL_DTYPE_U64, 1, 1, 0, err);
    const qcal_array *prob = rows ? find(in, "outlier_prob") : NULL;
    const qcal_array *q = rows ? expect(in, "quantiles", QCAL_DTYPE_U64, 1, 1, 0, err) : NULL;
    if (!rows || !q)
        return QCAL_E_DATA;
    if (!prob || prob->dtype != QCAL_DTYPE_F64 || prob->rank > 1 || !prob->data)
        return fail(err, QCAL_E_DATA, "array 'outlier_prob' is missing or not f64[1]");
    if (in->channels != s->g.channels || *(const uint64_t *)rows->data != s->unit_rows ||
        *(const uint64_t *)q->data != (uint64_t)s->quantiles ||
        *(const double *)prob->data != s->outlier_prob)
        return fail(err, QCAL_E_DATA, "state of other settings (channels, unit, quantiles or "
                    "outlier_prob) than this observer");
    return QCAL_OK;
}

static int values_check(const float *v, uint64_t n, qcal_err *err)
{
    for (uint64_t i = 0; i < n; i++)
        if (isinf(v[i]))
            return fail(err, QCAL_E_DATA, "state holds an infinite statistic");
    return QCAL_OK;
}

static int bs_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    bs_state *s = state;
    int rc = kind_check(in, STATE_KIND, err);
    if (rc || (rc = settings_check(s, in, err)))
        return rc;
    const qcal_array *unit = find(in, "unit");
    if (!unit || unit->dtype != QCAL_DTYPE_U64 || unit->rank != 1 || (unit->shape[0] && !unit->data))
        return fail(err, QCAL_E_DATA, "array 'unit' is missing or not u64[n]");
    uint64_t n = unit->shape[0], c = s->g.channels;
    if (n > MAX_VALUES / (N_STATS * c))
        return fail(err, QCAL_E_DATA, "%llu units is too many", (unsigned long long)n);
    const qcal_array *nf = expect(in, "nonfinite", QCAL_DTYPE_U64, 1, 2, 0, err);
    const float *cols[N_STATS] = {0};
    for (uint64_t k = 0; nf && k < n_stats(s); k++) {
        const qcal_array *a = expect(in, batch_stat_names[k], QCAL_DTYPE_F32, 2, n, c, err);
        if (!a || values_check(a->data, n * c, err))
            return QCAL_E_DATA;
        cols[k] = a->data;
    }
    if (!nf)
        return QCAL_E_DATA;
    if (bs_grow(s, s->n + n))
        return fail(err, QCAL_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++, s->n++) {
        s->unit[s->n] = ((const uint64_t *)unit->data)[i];
        for (uint64_t k = 0; k < N_STATS; k++)
            for (uint64_t ch = 0; ch < c; ch++)
                s->values[(s->n * N_STATS + k) * c + ch] = cols[k] ? cols[k][i * c + ch] : NAN;
    }
    s->nonfinite[0] += ((const uint64_t *)nf->data)[0];
    s->nonfinite[1] += ((const uint64_t *)nf->data)[1];
    return QCAL_OK;
}

/* ---- the plugin ------------------------------------------------------------------------------ */

static const char *const unit_choices[] = {"sample", "batch", NULL};
static const qcal_param params[N_PARAMS] = {
    {.name = "unit", .type = QCAL_PARAM_CHOICE, .def = {.i = UNIT_SAMPLE}, .choices = unit_choices,
     .help = "statistics per sample (NNCF; POT at stat_batch_size 1) or per batch of batch_size"},
    {.name = "per_channel", .type = QCAL_PARAM_BOOL, .def = {.i = 0}, .min = 0, .max = 1,
     .help = "one statistic per channel along the tensor's channel_axis"},
    {.name = "outlier_prob", .type = QCAL_PARAM_FLOAT, .def = {.f = 1e-4}, .min = 0, .max = 0.5,
     .help = "q of the quantiles q and 1 - q (POT/NNCF: 1e-4)"},
    {.name = "quantiles", .type = QCAL_PARAM_BOOL, .def = {.i = 1}, .min = 0, .max = 1,
     .help = "also keep the quantiles of x and |x| (costs a selection per unit)"},
};

static const qcal_observer batch_stats = {
    .head = QCAL_HEAD(qcal_observer),
    .name = "batch_stats",
    .help = "per-sample (or per-batch) min, max, abs max and quantiles, as POT/NNCF collect them",
    .stat_kind = BATCH_STATS_KIND,
    .n_params = N_PARAMS,
    .params = params,
    .create = bs_create,
    .observe = bs_observe,
    .merge = bs_merge,
    .serialize = bs_serialize,
    .deserialize = bs_deserialize,
    .finalize = bs_finalize,
    .destroy = bs_destroy,
};

static const qcal_observer *const observers[] = {&batch_stats};
static const qcal_estimator *const estimators[] = {&batch_quantile};

static const qcal_plugin plugin = {
    .head = QCAL_HEAD(qcal_plugin),
    .name = "batch_stats",
    .version = "0.1.0",
    .help = "POT/NNCF-style per-batch statistics and range estimators",
    .n_observers = 1,
    .n_estimators = 1,
    .observers = observers,
    .estimators = estimators,
};

const qcal_plugin *qcal_plugin_entry(const qcal_host *host)
{
    (void)host;
    return &plugin;
}
