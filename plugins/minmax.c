/* minmax.c - the minmax plugin family: three min/max observers and the minmax estimator */

/* Observers minmax, minmax_per_channel and moving_average_minmax (all finalize to
 * "qcal.minmax" v1), estimator minmax. Built against qcal/plugin.h only, as a third party. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qcal/plugin.h>

#include "common.h"

#define MINMAX_STATE_KIND "qcal.minmax.state"
#define MOVING_STATE_KIND "qcal.moving_average_minmax.state"
#define MAX_ENTRIES ((uint64_t)1 << 32) /* per array of a saved state */


/* Channel last: each value belongs to the next channel in turn. */
static void scan_interleaved(const float *x, uint64_t blocks, uint64_t channels, float *lo,
                             float *hi, uint64_t *count, uint64_t nonfinite[2])
{
    for (uint64_t b = 0; b < blocks; b++, x += channels)
        for (uint64_t c = 0; c < channels; c++) {
            float v = x[c] + 0.0f;
            if (isfinite(v)) {
                lo[c] = v < lo[c] ? v : lo[c];
                hi[c] = v > hi[c] ? v : hi[c];
                count[c]++;
            } else {
                nonfinite[isnan(v) ? 0 : 1]++;
            }
        }
}

/* Folds `rows` samples into per-channel extrema. */
static void scan_rows(const layout *g, const float *x, uint64_t rows, float *lo, float *hi,
                      uint64_t *count, uint64_t nonfinite[2])
{
    uint64_t blocks = rows * g->outer;
    if (g->channels == 1) {
        scan_run(x, rows * g->row_size, lo, hi, count, nonfinite);
    } else if (g->inner == 1) {
        scan_interleaved(x, blocks, g->channels, lo, hi, count, nonfinite);
    } else {
        for (uint64_t b = 0; b < blocks; b++)
            for (uint64_t c = 0; c < g->channels; c++, x += g->inner)
                scan_run(x, g->inner, &lo[c], &hi[c], &count[c], nonfinite);
    }
}

static void extrema_reset(float *lo, float *hi, uint64_t *count, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        lo[i] = INFINITY;
        hi[i] = -INFINITY;
        count[i] = 0;
    }
}

static void extrema_fold(float *lo, float *hi, uint64_t *count, const float *lo2,
                         const float *hi2, const uint64_t *count2, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        lo[i] = lo2[i] < lo[i] ? lo2[i] : lo[i];
        hi[i] = hi2[i] > hi[i] ? hi2[i] : hi[i];
        count[i] += count2[i];
    }
}

/* Extrema read back from a state: a channel that saw values has finite lo <= hi. */
static int extrema_valid(const float *lo, const float *hi, const uint64_t *count, uint64_t n,
                         qcal_err *err)
{
    for (uint64_t i = 0; i < n; i++)
        if (count[i] && !(isfinite(lo[i]) && isfinite(hi[i]) && lo[i] <= hi[i]))
            return fail(err, QCAL_E_DATA, "entry %llu has count %llu but range [%g, %g]",
                        (unsigned long long)i, (unsigned long long)count[i], lo[i], hi[i]);
    return QCAL_OK;
}

static int counts_add(uint64_t into[], const uint64_t add[], uint64_t n, qcal_err *err)
{
    for (uint64_t i = 0; i < n; i++)
        if (into[i] > UINT64_MAX - add[i])
            return fail(err, QCAL_E_DATA, "counts overflow");
    for (uint64_t i = 0; i < n; i++)
        into[i] += add[i];
    return QCAL_OK;
}

static int no_finite(const uint64_t nonfinite[2], qcal_err *err)
{
    return fail(err, QCAL_E_DATA, "no finite value (%llu NaN, %llu Inf)",
                (unsigned long long)nonfinite[0], (unsigned long long)nonfinite[1]);
}

/* ==== observers minmax and minmax_per_channel ============================================= */

typedef struct mm_state {
    layout g;
    float *lo, *hi;           /* [C]: +inf / -inf while count is 0 */
    uint64_t *count;          /* [C] finite values */
    uint64_t nonfinite[2];    /* NaN, +-Inf */
    float *out_lo, *out_hi;   /* [C] finalize's copies: 0 for channels without values */
    qcal_array arrays[4];
} mm_state;

static void mm_destroy(void *state)
{
    mm_state *s = state;
    if (!s)
        return;
    free(s->lo);
    free(s->count);
    free(s);
}

static int mm_create_as(const qcal_tensor *t, int per_channel, void **state, qcal_err *err)
{
    mm_state *s = calloc(1, sizeof *s);
    if (!s)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    int rc = layout_make(t, per_channel, &s->g, err);
    if (rc) {
        free(s);
        return rc;
    }
    uint64_t c = s->g.channels;
    s->lo = malloc(4 * c * sizeof *s->lo); /* lo, hi, out_lo, out_hi */
    s->count = malloc(c * sizeof *s->count);
    if (!s->lo || !s->count) {
        mm_destroy(s);
        return fail(err, QCAL_E_NOMEM, "out of memory for %llu channels", (unsigned long long)c);
    }
    s->hi = s->lo + c, s->out_lo = s->lo + 2 * c, s->out_hi = s->lo + 3 * c;
    extrema_reset(s->lo, s->hi, s->count, c);
    *state = s;
    return QCAL_OK;
}

static int mm_create(const qcal_tensor *t, const qcal_value *params, void **state, qcal_err *err)
{
    (void)params;
    return mm_create_as(t, 0, state, err);
}

static int mmpc_create(const qcal_tensor *t, const qcal_value *params, void **state,
                       qcal_err *err)
{
    (void)params;
    return mm_create_as(t, 1, state, err);
}

static int mm_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    mm_state *s = state;
    int rc = slab_check(&s->g, slab, err);
    if (rc)
        return rc;
    scan_rows(&s->g, slab->data, slab->rows, s->lo, s->hi, s->count, s->nonfinite);
    return QCAL_OK;
}

static int mm_merge(void *into, const void *from, qcal_err *err)
{
    mm_state *a = into;
    const mm_state *b = from;
    if (a->g.channels != b->g.channels)
        return fail(err, QCAL_E_INVAL, "states of %llu and %llu channels",
                    (unsigned long long)a->g.channels, (unsigned long long)b->g.channels);
    extrema_fold(a->lo, a->hi, a->count, b->lo, b->hi, b->count, a->g.channels);
    a->nonfinite[0] += b->nonfinite[0];
    a->nonfinite[1] += b->nonfinite[1];
    return QCAL_OK;
}

static void mm_fill(mm_state *s, const char *kind, const float *lo, const float *hi,
                    qcal_stat *out)
{
    uint64_t c = s->g.channels;
    s->arrays[0] = array1("lo", QCAL_DTYPE_F32, c, lo);
    s->arrays[1] = array1("hi", QCAL_DTYPE_F32, c, hi);
    s->arrays[2] = array1("count", QCAL_DTYPE_U64, c, s->count);
    s->arrays[3] = array1("nonfinite", QCAL_DTYPE_U64, 2, s->nonfinite);
    out->kind = kind;
    out->kind_version = 1;
    out->n_arrays = 4;
    out->channels = c;
    out->arrays = s->arrays;
}

/* The state is the statistic itself, except that a channel without values reads
 * lo = +inf, hi = -inf. */
static int mm_serialize(const void *state, qcal_stat *out, qcal_err *err)
{
    (void)err;
    mm_state *s = (mm_state *)state; /* only the output array table is written */
    mm_fill(s, MINMAX_STATE_KIND, s->lo, s->hi, out);
    return QCAL_OK;
}

static int mm_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    mm_state *s = state;
    uint64_t c = s->g.channels;
    int rc = kind_check(in, MINMAX_STATE_KIND, err);
    if (rc)
        return rc;
    if (in->channels != c)
        return fail(err, QCAL_E_DATA, "state has %llu channels, the tensor %llu",
                    (unsigned long long)in->channels, (unsigned long long)c);
    const qcal_array *lo = expect(in, "lo", QCAL_DTYPE_F32, 1, c, 0, err);
    const qcal_array *hi = lo ? expect(in, "hi", QCAL_DTYPE_F32, 1, c, 0, err) : NULL;
    const qcal_array *n = hi ? expect(in, "count", QCAL_DTYPE_U64, 1, c, 0, err) : NULL;
    const qcal_array *nf = n ? expect(in, "nonfinite", QCAL_DTYPE_U64, 1, 2, 0, err) : NULL;
    if (!nf)
        return QCAL_E_DATA;
    if (extrema_valid(lo->data, hi->data, n->data, c, err))
        return QCAL_E_DATA;
    uint64_t total[2] = {s->nonfinite[0], s->nonfinite[1]};
    if (counts_add(total, nf->data, 2, err))
        return QCAL_E_DATA;
    for (uint64_t i = 0; i < c; i++)
        if (s->count[i] > UINT64_MAX - ((const uint64_t *)n->data)[i])
            return fail(err, QCAL_E_DATA, "counts overflow");
    for (uint64_t i = 0; i < c; i++) {
        if (!((const uint64_t *)n->data)[i])
            continue; /* lo / hi of an empty channel mean nothing */
        extrema_fold(&s->lo[i], &s->hi[i], &s->count[i], (const float *)lo->data + i,
                     (const float *)hi->data + i, (const uint64_t *)n->data + i, 1);
    }
    s->nonfinite[0] = total[0], s->nonfinite[1] = total[1];
    return QCAL_OK;
}

static int mm_finalize(void *state, qcal_stat *out, qcal_err *err)
{
    mm_state *s = state;
    uint64_t seen = 0;
    for (uint64_t i = 0; i < s->g.channels; i++) {
        seen += s->count[i];
        s->out_lo[i] = s->count[i] ? s->lo[i] : 0.0f;
        s->out_hi[i] = s->count[i] ? s->hi[i] : 0.0f;
    }
    if (!seen)
        return no_finite(s->nonfinite, err);
    mm_fill(s, "qcal.minmax", s->out_lo, s->out_hi, out);
    return QCAL_OK;
}

/* ==== observer moving_average_minmax ==========================================================
 * torch's MovingAverageMinMaxObserver (and Horizon's min_max): batch b is samples
 * [b*batch_size, (b+1)*batch_size); the first batch sets (min, max), each later one moves them
 * by m += c * (batch_m - m), in batch order. To be exact under any split into slabs and
 * states, the state keeps each batch's extrema keyed by batch index (sorted); merge unions
 * them (a batch split between states takes the min / max of its parts) and finalize applies
 * the average in increasing batch order in float32 arithmetic, every operation rounded as
 * torch's float32 tensors round it (c itself taken as a float32), so the range is torch's bit
 * for bit (double precision, rounded at the end, was up to 3 ulp off). A batch (or, per
 * channel, a batch's channel) without finite values is skipped. */

enum { MA_CONSTANT, MA_BATCH_SIZE, MA_PER_CHANNEL, MA_N_PARAMS };

typedef struct ma_state {
    layout g;
    double constant;
    uint64_t batch_size;
    uint64_t n, cap;            /* batches held */
    uint64_t *batch;            /* [cap] increasing batch indices */
    float *lo, *hi;             /* [cap, C] */
    uint64_t *count;            /* [cap, C] */
    uint64_t nonfinite[2];
    float *tmp_lo, *tmp_hi;     /* [C] one batch during observe; finalize's output */
    uint64_t *tmp_count;        /* [C] */
    qcal_array arrays[6];
} ma_state;

static void ma_destroy(void *state)
{
    ma_state *s = state;
    if (!s)
        return;
    free(s->batch);
    free(s->lo);
    free(s->hi);
    free(s->count);
    free(s->tmp_lo);
    free(s->tmp_count);
    free(s);
}

/* Room for `cap` batches. */
static int ma_grow(ma_state *s, uint64_t cap)
{
    uint64_t c = s->g.channels;
    if (cap <= s->cap)
        return 0;
    if (cap > UINT64_MAX / 8 / c)
        return -1;
    uint64_t *batch = realloc(s->batch, cap * sizeof *batch);
    if (batch)
        s->batch = batch;
    float *lo = realloc(s->lo, cap * c * sizeof *lo);
    if (lo)
        s->lo = lo;
    float *hi = realloc(s->hi, cap * c * sizeof *hi);
    if (hi)
        s->hi = hi;
    uint64_t *count = realloc(s->count, cap * c * sizeof *count);
    if (count)
        s->count = count;
    if (!batch || !lo || !hi || !count)
        return -1;
    s->cap = cap;
    return 0;
}

static int ma_params(ma_state *s, const qcal_tensor *t, const qcal_value *params, qcal_err *err)
{
    s->constant = params[MA_CONSTANT].f;
    if (!(s->constant > 0.0 && s->constant <= 1.0))
        return fail(err, QCAL_E_INVAL, "averaging_constant must be in (0, 1], got %g",
                    s->constant);
    s->batch_size = params[MA_BATCH_SIZE].i > 0 ? (uint64_t)params[MA_BATCH_SIZE].i
                                                 : t->batch_size;
    if (s->batch_size == 0)
        return fail(err, QCAL_E_INVAL, "batch_size is 0 and the tensor has no batch size");
    return layout_make(t, params[MA_PER_CHANNEL].i != 0, &s->g, err);
}

static int ma_create(const qcal_tensor *t, const qcal_value *params, void **state,
                     qcal_err *err)
{
    ma_state *s = calloc(1, sizeof *s);
    if (!s)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    int rc = ma_params(s, t, params, err);
    if (rc) {
        free(s);
        return rc;
    }
    uint64_t c = s->g.channels;
    s->tmp_lo = malloc(2 * c * sizeof *s->tmp_lo);
    s->tmp_count = malloc(c * sizeof *s->tmp_count);
    if (!s->tmp_lo || !s->tmp_count || ma_grow(s, 16)) {
        ma_destroy(s);
        return fail(err, QCAL_E_NOMEM, "out of memory");
    }
    s->tmp_hi = s->tmp_lo + c;
    *state = s;
    return QCAL_OK;
}

/* Index of the first held batch >= b. */
static uint64_t ma_find(const ma_state *s, uint64_t b)
{
    uint64_t lo = 0, hi = s->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (s->batch[mid] < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Folds one batch's extrema into the state. Slabs usually arrive in order, so this is
 * mostly an append; an earlier batch costs a shift of the later ones. */
static int ma_put(ma_state *s, uint64_t b, const float *lo, const float *hi,
                  const uint64_t *count)
{
    uint64_t c = s->g.channels;
    uint64_t at = (s->n && s->batch[s->n - 1] < b) ? s->n : ma_find(s, b);
    if (at == s->n || s->batch[at] != b) {
        if (s->n == s->cap && ma_grow(s, 2 * s->cap))
            return -1;
        uint64_t later = s->n - at;
        memmove(&s->batch[at + 1], &s->batch[at], later * sizeof *s->batch);
        memmove(&s->lo[(at + 1) * c], &s->lo[at * c], later * c * sizeof *s->lo);
        memmove(&s->hi[(at + 1) * c], &s->hi[at * c], later * c * sizeof *s->hi);
        memmove(&s->count[(at + 1) * c], &s->count[at * c], later * c * sizeof *s->count);
        s->batch[at] = b;
        extrema_reset(&s->lo[at * c], &s->hi[at * c], &s->count[at * c], c);
        s->n++;
    }
    extrema_fold(&s->lo[at * c], &s->hi[at * c], &s->count[at * c], lo, hi, count, c);
    return 0;
}

static int ma_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    ma_state *s = state;
    int rc = slab_check(&s->g, slab, err);
    if (rc)
        return rc;
    uint64_t c = s->g.channels, r = 0;
    while (r < slab->rows) {
        uint64_t b = (slab->first_row + r) / s->batch_size;
        uint64_t end = (b + 1) * s->batch_size - slab->first_row; /* this batch's end */
        if (end > slab->rows)
            end = slab->rows;
        extrema_reset(s->tmp_lo, s->tmp_hi, s->tmp_count, c);
        scan_rows(&s->g, slab->data + r * s->g.row_size, end - r, s->tmp_lo, s->tmp_hi,
                  s->tmp_count, s->nonfinite);
        if (ma_put(s, b, s->tmp_lo, s->tmp_hi, s->tmp_count))
            return fail(err, QCAL_E_NOMEM, "out of memory for %llu batches",
                        (unsigned long long)s->n);
        r = end;
    }
    return QCAL_OK;
}

/* Replaces the state's batches by their union with n given batches (increasing indices), in
 * one linear merge. */
static int ma_union(ma_state *s, const uint64_t *batch, const float *lo, const float *hi,
                    const uint64_t *count, uint64_t n)
{
    uint64_t c = s->g.channels, cap = s->n + n, i = 0, j = 0, k = 0;
    ma_state m = {.g = s->g};
    if (ma_grow(&m, cap ? cap : 1)) {
        free(m.batch), free(m.lo), free(m.hi), free(m.count);
        return -1;
    }
    while (i < s->n || j < n) {
        int mine = j == n || (i < s->n && s->batch[i] <= batch[j]);
        int theirs = i == s->n || (j < n && batch[j] <= s->batch[i]);
        m.batch[k] = mine ? s->batch[i] : batch[j];
        extrema_reset(&m.lo[k * c], &m.hi[k * c], &m.count[k * c], c);
        if (mine)
            extrema_fold(&m.lo[k * c], &m.hi[k * c], &m.count[k * c], &s->lo[i * c],
                         &s->hi[i * c], &s->count[i * c], c), i++;
        if (theirs)
            extrema_fold(&m.lo[k * c], &m.hi[k * c], &m.count[k * c], &lo[j * c], &hi[j * c],
                         &count[j * c], c), j++;
        k++;
    }
    free(s->batch), free(s->lo), free(s->hi), free(s->count);
    s->batch = m.batch, s->lo = m.lo, s->hi = m.hi, s->count = m.count;
    s->cap = m.cap, s->n = k;
    return 0;
}

/* Folds n batches (increasing indices) into the state: appends when they all come after the
 * state's last batch (the usual case: slabs in order), else a linear merge. */
static int ma_fold(ma_state *s, const uint64_t *batch, const float *lo, const float *hi,
                   const uint64_t *count, uint64_t n)
{
    uint64_t c = s->g.channels;
    if (n && s->n && batch[0] < s->batch[s->n - 1])
        return ma_union(s, batch, lo, hi, count, n);
    for (uint64_t i = 0; i < n; i++)
        if (ma_put(s, batch[i], lo + i * c, hi + i * c, count + i * c))
            return -1;
    return 0;
}

static int ma_merge(void *into, const void *from, qcal_err *err)
{
    ma_state *a = into;
    const ma_state *b = from;
    if (a->g.channels != b->g.channels || a->batch_size != b->batch_size)
        return fail(err, QCAL_E_INVAL, "states of different channels or batch sizes");
    if (ma_fold(a, b->batch, b->lo, b->hi, b->count, b->n))
        return fail(err, QCAL_E_NOMEM, "out of memory");
    a->nonfinite[0] += b->nonfinite[0];
    a->nonfinite[1] += b->nonfinite[1];
    return QCAL_OK;
}

static int ma_serialize(const void *state, qcal_stat *out, qcal_err *err)
{
    (void)err;
    ma_state *s = (ma_state *)state; /* only the output array table is written */
    uint64_t c = s->g.channels;
    s->arrays[0] = array1("batch", QCAL_DTYPE_U64, s->n, s->batch);
    s->arrays[1] = array2("lo", QCAL_DTYPE_F32, s->n, c, s->lo);
    s->arrays[2] = array2("hi", QCAL_DTYPE_F32, s->n, c, s->hi);
    s->arrays[3] = array2("count", QCAL_DTYPE_U64, s->n, c, s->count);
    s->arrays[4] = array1("nonfinite", QCAL_DTYPE_U64, 2, s->nonfinite);
    s->arrays[5] = array1("batch_size", QCAL_DTYPE_U64, 1, &s->batch_size);
    out->kind = MOVING_STATE_KIND;
    out->kind_version = 1;
    out->n_arrays = 6;
    out->channels = c;
    out->arrays = s->arrays;
    return QCAL_OK;
}

/* Checks a saved state's arrays against this state; a[] receives batch, lo, hi, count,
 * nonfinite, batch_size. */
static int ma_validate(const ma_state *s, const qcal_stat *in, const qcal_array *a[6],
                       qcal_err *err)
{
    uint64_t c = s->g.channels;
    if (in->channels != c)
        return fail(err, QCAL_E_DATA, "state has %llu channels, the tensor %llu",
                    (unsigned long long)in->channels, (unsigned long long)c);
    a[0] = in->arrays || !in->n_arrays ? find(in, "batch") : NULL;
    if (!a[0] || a[0]->dtype != QCAL_DTYPE_U64 || a[0]->rank != 1)
        return fail(err, QCAL_E_DATA, "array 'batch' is missing or not u64[n]");
    uint64_t n = a[0]->shape[0];
    if (n && !a[0]->data)
        return fail(err, QCAL_E_DATA, "array 'batch' has no data");
    if (!(a[1] = expect(in, "lo", QCAL_DTYPE_F32, 2, n, c, err)) ||
        !(a[2] = expect(in, "hi", QCAL_DTYPE_F32, 2, n, c, err)) ||
        !(a[3] = expect(in, "count", QCAL_DTYPE_U64, 2, n, c, err)) ||
        !(a[4] = expect(in, "nonfinite", QCAL_DTYPE_U64, 1, 2, 0, err)) ||
        !(a[5] = expect(in, "batch_size", QCAL_DTYPE_U64, 1, 1, 0, err)))
        return QCAL_E_DATA;
    uint64_t bs = *(const uint64_t *)a[5]->data;
    if (bs != s->batch_size)
        return fail(err, QCAL_E_DATA, "state has batch size %llu, this observer %llu",
                    (unsigned long long)bs, (unsigned long long)s->batch_size);
    const uint64_t *batch = a[0]->data;
    for (uint64_t i = 1; i < n; i++)
        if (batch[i] <= batch[i - 1])
            return fail(err, QCAL_E_DATA, "batch indices are not increasing at entry %llu",
                        (unsigned long long)i);
    if (n > MAX_ENTRIES / c)
        return fail(err, QCAL_E_DATA, "%llu batches of %llu channels is too many",
                    (unsigned long long)n, (unsigned long long)c);
    return extrema_valid(a[1]->data, a[2]->data, a[3]->data, n * c, err);
}

/* Folds a saved state in, as merge would. Entries with count 0 fold as empty whatever their
 * lo / hi say. */
static int ma_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    ma_state *s = state;
    const qcal_array *a[6] = {0};
    int rc = kind_check(in, MOVING_STATE_KIND, err);
    if (rc || (rc = ma_validate(s, in, a, err)))
        return rc;
    uint64_t n = a[0]->shape[0], c = s->g.channels;
    uint64_t total[2] = {s->nonfinite[0], s->nonfinite[1]};
    if (counts_add(total, a[4]->data, 2, err))
        return QCAL_E_DATA;
    float *lo = malloc(2 * (n * c + 1) * sizeof *lo);
    if (!lo)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    float *hi = lo + n * c + 1;
    const float *src_lo = a[1]->data, *src_hi = a[2]->data;
    const uint64_t *count = a[3]->data;
    for (uint64_t i = 0; i < n * c; i++) {
        lo[i] = count[i] ? src_lo[i] : INFINITY;
        hi[i] = count[i] ? src_hi[i] : -INFINITY;
    }
    rc = ma_fold(s, a[0]->data, lo, hi, count, n);
    free(lo);
    if (rc)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    s->nonfinite[0] = total[0], s->nonfinite[1] = total[1];
    return QCAL_OK;
}

/* torch's update m + c (batch - m) on float32 tensors: each operation rounded to float32
 * (volatile: no fused multiply-add, no wider intermediate). */
static float ma_step(float m, float c, float batch)
{
    volatile float difference = batch - m;
    volatile float moved = c * difference;
    return m + moved;
}

/* The moving average of channel ch over the batches that saw a finite value in it. */
static uint64_t ma_average(const ma_state *s, uint64_t ch, double *lo, double *hi)
{
    uint64_t c = s->g.channels, seen = 0;
    const float constant = (float)s->constant;
    float l = 0, h = 0;
    for (uint64_t i = 0; i < s->n; i++) {
        uint64_t k = i * c + ch;
        if (!s->count[k])
            continue; /* a batch without finite values is skipped */
        if (!seen)
            l = s->lo[k], h = s->hi[k];
        else
            l = ma_step(l, constant, s->lo[k]), h = ma_step(h, constant, s->hi[k]);
        seen += s->count[k];
    }
    *lo = l, *hi = h;
    return seen;
}

static int ma_finalize(void *state, qcal_stat *out, qcal_err *err)
{
    ma_state *s = state;
    uint64_t c = s->g.channels, total = 0;
    for (uint64_t ch = 0; ch < c; ch++) {
        double lo = 0.0, hi = 0.0;
        s->tmp_count[ch] = ma_average(s, ch, &lo, &hi);
        s->tmp_lo[ch] = (float)lo;
        s->tmp_hi[ch] = (float)hi;
        total += s->tmp_count[ch];
    }
    if (!total)
        return no_finite(s->nonfinite, err);
    s->arrays[0] = array1("lo", QCAL_DTYPE_F32, c, s->tmp_lo);
    s->arrays[1] = array1("hi", QCAL_DTYPE_F32, c, s->tmp_hi);
    s->arrays[2] = array1("count", QCAL_DTYPE_U64, c, s->tmp_count);
    s->arrays[3] = array1("nonfinite", QCAL_DTYPE_U64, 2, s->nonfinite);
    out->kind = "qcal.minmax";
    out->kind_version = 1;
    out->n_arrays = 4;
    out->channels = c;
    out->arrays = s->arrays;
    return QCAL_OK;
}

/* ==== estimator minmax ==================================================================== */

static int spec_check(const qcal_stat *stat, const qcal_qspec *spec, uint64_t n_ranges,
                      qcal_err *err)
{
    if ((spec->flags & ~QCAL_QSPEC_KNOWN_FLAGS) || spec->reserved)
        return fail(err, QCAL_E_UNSUP, "quantization spec flags 0x%x (reserved %u) are not "
                    "supported", spec->flags, spec->reserved);
    uint64_t want = (spec->flags & QCAL_QSPEC_PER_CHANNEL) ? stat->channels : 1;
    if (n_ranges != want)
        return fail(err, QCAL_E_INVAL, "%llu ranges asked, the spec needs %llu",
                    (unsigned long long)n_ranges, (unsigned long long)want);
    return QCAL_OK;
}

/* lo / hi / count of a "qcal.minmax" statistic, validated. */
static int minmax_arrays(const qcal_stat *stat, const float **lo, const float **hi,
                         const uint64_t **count, qcal_err *err)
{
    if (!stat->kind || strcmp(stat->kind, "qcal.minmax") || stat->kind_version < 1)
        return fail(err, QCAL_E_KIND, "expected a 'qcal.minmax' statistic, got '%s' v%u",
                    stat->kind ? stat->kind : "(null)", stat->kind_version);
    uint64_t c = stat->channels;
    if (c == 0)
        return fail(err, QCAL_E_DATA, "statistic has 0 channels");
    const qcal_array *a = expect(stat, "lo", QCAL_DTYPE_F32, 1, c, 0, err);
    const qcal_array *b = a ? expect(stat, "hi", QCAL_DTYPE_F32, 1, c, 0, err) : NULL;
    const qcal_array *n = b ? expect(stat, "count", QCAL_DTYPE_U64, 1, c, 0, err) : NULL;
    if (!n)
        return QCAL_E_DATA;
    *lo = a->data, *hi = b->data, *count = n->data;
    return QCAL_OK;
}

static qcal_range shape_range(double lo, double hi, uint32_t flags)
{
    qcal_range r = {lo, hi};
    if (flags & QCAL_QSPEC_SYMMETRIC) {
        double t = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
        r.lo = (flags & QCAL_QSPEC_SIGNED) ? -t : 0.0;
        r.hi = t;
    }
    return r;
}

static int channel_range(const float *lo, const float *hi, const uint64_t *count, uint64_t i,
                         qcal_err *err)
{
    if (!count[i])
        return fail(err, QCAL_E_DATA, "channel %llu saw no finite value", (unsigned long long)i);
    if (!(isfinite(lo[i]) && isfinite(hi[i]) && lo[i] <= hi[i]))
        return fail(err, QCAL_E_DATA, "channel %llu has an invalid range [%g, %g]",
                    (unsigned long long)i, lo[i], hi[i]);
    return QCAL_OK;
}

/* Per-tensor range of a statistic: the extrema over channels that saw values. */
static int overall_range(const float *lo, const float *hi, const uint64_t *count, uint64_t c,
                         double *l, double *h, qcal_err *err)
{
    int seen = 0;
    for (uint64_t i = 0; i < c; i++) {
        if (!count[i])
            continue;
        int rc = channel_range(lo, hi, count, i, err);
        if (rc)
            return rc;
        *l = seen && *l < lo[i] ? *l : lo[i];
        *h = seen && *h > hi[i] ? *h : hi[i];
        seen = 1;
    }
    return seen ? QCAL_OK : fail(err, QCAL_E_DATA, "no channel saw a finite value");
}

static int minmax_estimate(const qcal_stat *stat, const qcal_value *params,
                           const qcal_qspec *spec, qcal_range *ranges, uint64_t n_ranges,
                           qcal_err *err)
{
    (void)params;
    const float *lo = NULL, *hi = NULL;
    const uint64_t *count = NULL;
    int rc = spec_check(stat, spec, n_ranges, err);
    if (rc || (rc = minmax_arrays(stat, &lo, &hi, &count, err)))
        return rc;
    if (!(spec->flags & QCAL_QSPEC_PER_CHANNEL)) {
        double l = 0.0, h = 0.0;
        rc = overall_range(lo, hi, count, stat->channels, &l, &h, err);
        if (!rc) {
            ranges[0] = shape_range(l, h, spec->flags);
            note_constant(err, l, h);
        }
        return rc;
    }
    uint64_t constant = 0;
    for (uint64_t i = 0; i < n_ranges; i++) {
        if ((rc = channel_range(lo, hi, count, i, err)))
            return rc;
        ranges[i] = shape_range(lo[i], hi[i], spec->flags);
        constant += lo[i] == hi[i];
    }
    note_constant_channels(err, constant, n_ranges);
    return QCAL_OK;
}

/* ==== descriptors ========================================================================= */

static const qcal_observer minmax_observer = {
    .head = QCAL_HEAD(qcal_observer),
    .name = "minmax",
    .help = "exact min and max of the finite values (torch MinMaxObserver)",
    .stat_kind = "qcal.minmax",
    .create = mm_create,
    .observe = mm_observe,
    .merge = mm_merge,
    .serialize = mm_serialize,
    .deserialize = mm_deserialize,
    .finalize = mm_finalize,
    .destroy = mm_destroy,
};

static const qcal_observer minmax_per_channel_observer = {
    .head = QCAL_HEAD(qcal_observer),
    .name = "minmax_per_channel",
    .help = "exact min and max of the finite values per channel (torch PerChannelMinMaxObserver)",
    .stat_kind = "qcal.minmax",
    .create = mmpc_create,
    .observe = mm_observe,
    .merge = mm_merge,
    .serialize = mm_serialize,
    .deserialize = mm_deserialize,
    .finalize = mm_finalize,
    .destroy = mm_destroy,
};

static const qcal_param moving_params[MA_N_PARAMS] = {
    [MA_CONSTANT] = {.name = "averaging_constant", .type = QCAL_PARAM_FLOAT, .def = {.f = 0.01},
                     .min = 0.0, .max = 1.0,
                     .help = "c in m += c * (batch_m - m); must be above 0"},
    [MA_BATCH_SIZE] = {.name = "batch_size", .type = QCAL_PARAM_INT, .def = {.i = 0},
                       .min = 0.0, .max = 1e12,
                       .help = "samples per batch; 0: the run's batch size"},
    [MA_PER_CHANNEL] = {.name = "per_channel", .type = QCAL_PARAM_BOOL, .def = {.i = 0},
                        .help = "one average per channel along the channel axis"},
};

static const qcal_observer moving_average_observer = {
    .head = QCAL_HEAD(qcal_observer),
    .name = "moving_average_minmax",
    .help = "moving average of per-batch min and max (torch MovingAverageMinMaxObserver)",
    .stat_kind = "qcal.minmax",
    .n_params = MA_N_PARAMS,
    .params = moving_params,
    .create = ma_create,
    .observe = ma_observe,
    .merge = ma_merge,
    .serialize = ma_serialize,
    .deserialize = ma_deserialize,
    .finalize = ma_finalize,
    .destroy = ma_destroy,
};

static const char *const minmax_accepts[] = {"qcal.minmax", NULL};

static const qcal_estimator minmax_estimator = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "minmax",
    .help = "the observed range; symmetric specs take the larger magnitude",
    .accepts = minmax_accepts,
    .estimate = minmax_estimate,
};

static const qcal_observer *const observers[] = {
    &minmax_observer, &minmax_per_channel_observer, &moving_average_observer};
static const qcal_estimator *const estimators[] = {&minmax_estimator};

static const qcal_plugin plugin = {
    .head = QCAL_HEAD(qcal_plugin),
    .name = "minmax",
    .version = "1.0.0",
    .help = "min / max observers (plain, per channel, moving average) and the minmax estimator",
    .n_observers = 3,
    .n_estimators = 1,
    .observers = observers,
    .estimators = estimators,
};

const qcal_plugin *qcal_plugin_entry(const qcal_host *host)
{
    (void)host;
    return &plugin;
}
