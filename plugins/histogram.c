/* histogram.c - the histogram observer: exact, mergeable, independent of slabs and threads.
 *
 * Bins have width w = 2^k and sit on multiples of w: value x falls in global bin floor(x / w).
 * A state keeps a window of at most B = bins * internal_factor consecutive bins starting at
 * the bin of its minimum. k is the smallest exponent (bounded below relative to the largest
 * magnitude, so a constant tensor works) for which [min, max] fits in B bins; when a value
 * widens the range, k grows and adjacent aligned bins merge (exactly: counts add). So the
 * histogram depends only on the values seen and their global min and max: any split into
 * slabs, threads or machines gives the same counts, bit for bit.
 *
 * Resolution guaranteed: w <= 2 (max - min) / B for max > min (at k - 1 the range did not
 * fit), i.e. at least B / 2 bins across the data; with the defaults (2048 bins, factor 4),
 * at least 4096 bins.
 *
 * Statistic "qcal.histogram" v1 (channels 1): counts u64[n] (the occupied bins, first to
 * last), lo f64[1] (left edge of counts[0]), width f64[1], min f64[1] and max f64[1] (exact
 * extrema of the histogrammed values: |x| when abs), smin f64[1] and smax f64[1] (the signed
 * extrema), count u64[1] (finite values), nonfinite u64[2] (NaN, +-Inf), abs u64[1].
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qcal/plugin.h>

enum { P_BINS, P_ABS, P_FACTOR, N_PARAMS };
#define MAGNITUDE_BITS 40 /* finest bin: 2^-40 of the largest magnitude */

typedef struct hist {
    uint64_t capacity;      /* B: bins the window may hold */
    int abs;
    int has_data;           /* a finite value was seen */
    int k;                  /* bin width 2^k */
    int64_t base;           /* global index of counts[0] */
    uint64_t *counts;       /* [capacity] */
    uint64_t *scratch;      /* [capacity], for re-windowing */
    float min, max, smin, smax;
    uint64_t count, nan, inf;
    /* what finalize / serialize hand out (owned here) */
    double out_lo, out_width, out_min, out_max, out_smin, out_smax;
    int64_t out_k, out_first;
    uint64_t out_count, out_nonfinite[2], out_abs, out_capacity;
    float out_fmin, out_fmax, out_fsmin, out_fsmax;
    qcal_array arrays[12];
} hist;

static int fail(qcal_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- bin arithmetic ------------------------------------------------------------------- */

static int64_t bin_of(double x, int k) { return (int64_t)floor(ldexp(x, -k)); }

static int64_t floor_shift(int64_t g, int s)
{
    return g >= 0 ? g >> s : -((-g - 1) >> s) - 1; /* floor(g / 2^s), also for negatives */
}

static int min_exponent(float lo, float hi)
{
    double mag = fmax(fabs((double)lo), fabs((double)hi));
    return mag > 0 ? ilogb(mag) - MAGNITUDE_BITS : -149 - MAGNITUDE_BITS;
}

/* The smallest k at which [lo, hi] fits in `capacity` aligned bins. */
static int fitting_exponent(float lo, float hi, uint64_t capacity)
{
    int k = min_exponent(lo, hi);
    double span = (double)hi - (double)lo;
    if (span > 0) { /* jump close to the answer, then step */
        int guess = ilogb(span / (double)capacity);
        k = guess - 1 > k ? guess - 1 : k;
    }
    while ((uint64_t)(bin_of(hi, k) - bin_of(lo, k)) >= capacity)
        k++;
    return k;
}

/* Moves the counts to exponent k >= s->k with the window starting at the bin of lo. */
static void rewindow(hist *s, int k, float lo)
{
    int64_t base = bin_of(lo, k);
    int shift = k - s->k;
    memset(s->scratch, 0, s->capacity * sizeof *s->scratch);
    for (uint64_t i = 0; i < s->capacity; i++)
        if (s->counts[i])
            s->scratch[floor_shift(s->base + (int64_t)i, shift) - base] += s->counts[i];
    uint64_t *t = s->counts;
    s->counts = s->scratch;
    s->scratch = t;
    s->k = k;
    s->base = base;
}

/* Widens the state to hold [lo, hi] (finite), merging bins as needed. */
static void cover(hist *s, float lo, float hi)
{
    if (!s->has_data) {
        s->has_data = 1;
        s->min = lo, s->max = hi;
        s->k = fitting_exponent(lo, hi, s->capacity);
        s->base = bin_of(lo, s->k);
        return;
    }
    float nlo = lo < s->min ? lo : s->min, nhi = hi > s->max ? hi : s->max;
    int k = fitting_exponent(nlo, nhi, s->capacity);
    if (k < s->k)
        k = s->k; /* never finer than what is already merged */
    if (k != s->k || bin_of(nlo, k) != s->base)
        rewindow(s, k, nlo);
    s->min = nlo, s->max = nhi;
}

/* ---- observing ------------------------------------------------------------------------ */

/* Extrema of the finite values (as histogrammed and signed) and the NaN/Inf counts. */
static void scan(const hist *s, const float *x, uint64_t n, float ext[4], uint64_t *nan,
                 uint64_t *inf)
{
    float slo = INFINITY, shi = -INFINITY, alo = INFINITY;
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) { /* branch-free: vectorises */
        float v = x[i] + 0.0f; /* -0 as +0 */
        int ok = fabsf(v) <= FLT_MAX;
        bad += !ok;
        float a = ok ? v : INFINITY, b = ok ? v : -INFINITY, m = ok ? fabsf(v) : INFINITY;
        slo = a < slo ? a : slo;
        shi = b > shi ? b : shi;
        alo = m < alo ? m : alo;
    }
    ext[0] = s->abs ? alo : slo;
    ext[1] = s->abs ? fmaxf(fabsf(slo), fabsf(shi)) : shi;
    ext[2] = slo, ext[3] = shi;
    for (uint64_t i = 0; bad && i < n; i++)
        if (!isfinite(x[i]))
            isnan(x[i]) ? (*nan)++ : (*inf)++;
}

static int h_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    hist *s = state;
    uint64_t n = slab->rows * slab->row_size, nan = 0, inf = 0;
    float ext[4];
    scan(s, slab->data, n, ext, &nan, &inf);
    s->nan += nan, s->inf += inf;
    if (nan + inf == n)
        return QCAL_OK;
    s->smin = s->has_data && s->smin < ext[2] ? s->smin : ext[2];
    s->smax = s->has_data && s->smax > ext[3] ? s->smax : ext[3];
    cover(s, ext[0], ext[1]);
    double scale = ldexp(1.0, -s->k);
    for (uint64_t i = 0; i < n; i++) {
        float v = slab->data[i] + 0.0f;
        if (!isfinite(v))
            continue;
        v = s->abs ? fabsf(v) : v;
        s->counts[(int64_t)floor((double)v * scale) - s->base]++;
    }
    s->count += n - nan - inf;
    (void)err;
    return QCAL_OK;
}

/* ---- states --------------------------------------------------------------------------- */

static void h_destroy(void *state)
{
    hist *s = state;
    if (!s)
        return;
    free(s->counts);
    free(s->scratch);
    free(s);
}

static int h_create(const qcal_tensor *t, const qcal_value *params, void **state, qcal_err *err)
{
    (void)t;
    uint64_t capacity = (uint64_t)params[P_BINS].i * (uint64_t)params[P_FACTOR].i;
    hist *s = calloc(1, sizeof *s);
    if (!s || !(s->counts = calloc(capacity, 8)) || !(s->scratch = calloc(capacity, 8))) {
        h_destroy(s);
        return fail(err, QCAL_E_NOMEM, "cannot hold %llu bins", (unsigned long long)capacity);
    }
    s->capacity = capacity;
    s->abs = params[P_ABS].i != 0;
    *state = s;
    return QCAL_OK;
}

/* Folds a described state (k, first bin, counts, extrema) into s. */
static void fold(hist *s, int k, int64_t first, const uint64_t *counts, uint64_t n,
                 const float ext[4], uint64_t count, uint64_t nan, uint64_t inf)
{
    s->nan += nan, s->inf += inf;
    if (!count)
        return;
    s->smin = s->has_data && s->smin < ext[2] ? s->smin : ext[2];
    s->smax = s->has_data && s->smax > ext[3] ? s->smax : ext[3];
    cover(s, ext[0], ext[1]);
    if (k > s->k) /* the other is coarser: come to its exponent */
        rewindow(s, k, s->min);
    for (uint64_t i = 0; i < n; i++)
        if (counts[i])
            s->counts[floor_shift(first + (int64_t)i, s->k - k) - s->base] += counts[i];
    s->count += count;
}

static int h_merge(void *into, const void *from, qcal_err *err)
{
    hist *s = into;
    const hist *o = from;
    if (o->capacity != s->capacity || o->abs != s->abs)
        return fail(err, QCAL_E_INVAL, "merging histograms of different parameters");
    float ext[4] = {o->min, o->max, o->smin, o->smax};
    fold(s, o->k, o->base, o->counts, o->capacity, ext, o->count, o->nan, o->inf);
    return QCAL_OK;
}

/* The occupied bins [first, last] of the window. */
static void occupied(const hist *s, uint64_t *first, uint64_t *n)
{
    uint64_t a = 0, b = s->capacity;
    while (a < b && !s->counts[a])
        a++;
    while (b > a && !s->counts[b - 1])
        b--;
    *first = a, *n = b - a;
}

static qcal_array scalar(const char *name, uint32_t dtype, const void *data)
{
    qcal_array a = {name, dtype, 1, {1, 0, 0, 0}, data};
    return a;
}

/* The arrays a statistic and a saved state share: counts (the occupied bins from `first`),
 * count, nonfinite and abs, at arrays[0..3]. Returns how many it filled. */
static uint32_t common_arrays(hist *s, uint64_t first, uint64_t n)
{
    s->out_count = s->count, s->out_abs = (uint64_t)s->abs;
    s->out_nonfinite[0] = s->nan, s->out_nonfinite[1] = s->inf;
    qcal_array counts = {"counts", QCAL_DTYPE_U64, 1, {n, 0, 0, 0}, s->counts + first};
    qcal_array nonfinite = {"nonfinite", QCAL_DTYPE_U64, 1, {2, 0, 0, 0}, s->out_nonfinite};
    s->arrays[0] = counts;
    s->arrays[1] = scalar("count", QCAL_DTYPE_U64, &s->out_count);
    s->arrays[2] = nonfinite;
    s->arrays[3] = scalar("abs", QCAL_DTYPE_U64, &s->out_abs);
    return 4;
}

static int h_finalize(void *state, qcal_stat *out, qcal_err *err)
{
    hist *s = state;
    if (!s->count)
        return fail(err, QCAL_E_DATA, "no finite value (%llu NaN, %llu Inf)",
                    (unsigned long long)s->nan, (unsigned long long)s->inf);
    uint64_t first, n;
    occupied(s, &first, &n);
    s->out_width = ldexp(1.0, s->k);
    s->out_lo = (double)(s->base + (int64_t)first) * s->out_width;
    s->out_min = s->min, s->out_max = s->max, s->out_smin = s->smin, s->out_smax = s->smax;
    uint32_t k = common_arrays(s, first, n);
    s->arrays[k++] = scalar("lo", QCAL_DTYPE_F64, &s->out_lo);
    s->arrays[k++] = scalar("width", QCAL_DTYPE_F64, &s->out_width);
    s->arrays[k++] = scalar("min", QCAL_DTYPE_F64, &s->out_min);
    s->arrays[k++] = scalar("max", QCAL_DTYPE_F64, &s->out_max);
    s->arrays[k++] = scalar("smin", QCAL_DTYPE_F64, &s->out_smin);
    s->arrays[k++] = scalar("smax", QCAL_DTYPE_F64, &s->out_smax);
    *out = (qcal_stat){"qcal.histogram", 1, k, 1, s->arrays};
    return QCAL_OK;
}

/* ---- saved states --------------------------------------------------------------------- */

#define STATE_KIND "qcal.histogram.state"

static int h_serialize(const void *state, qcal_stat *out, qcal_err *err)
{
    hist *s = (hist *)state; /* only the out_* members it owns for this purpose change */
    (void)err;
    uint64_t first = 0, n = 0;
    if (s->count)
        occupied(s, &first, &n);
    s->out_k = s->k, s->out_first = s->base + (int64_t)first, s->out_capacity = s->capacity;
    s->out_fmin = s->min, s->out_fmax = s->max, s->out_fsmin = s->smin, s->out_fsmax = s->smax;
    uint32_t k = common_arrays(s, first, n);
    s->arrays[k++] = scalar("k", QCAL_DTYPE_I64, &s->out_k);
    s->arrays[k++] = scalar("first", QCAL_DTYPE_I64, &s->out_first);
    s->arrays[k++] = scalar("min", QCAL_DTYPE_F32, &s->out_fmin);
    s->arrays[k++] = scalar("max", QCAL_DTYPE_F32, &s->out_fmax);
    s->arrays[k++] = scalar("smin", QCAL_DTYPE_F32, &s->out_fsmin);
    s->arrays[k++] = scalar("smax", QCAL_DTYPE_F32, &s->out_fsmax);
    s->arrays[k++] = scalar("capacity", QCAL_DTYPE_U64, &s->out_capacity);
    *out = (qcal_stat){STATE_KIND, 1, k, 1, s->arrays};
    return QCAL_OK;
}

static const void *array_of(const qcal_stat *in, const char *name, uint32_t dtype, uint64_t n)
{
    for (uint32_t i = 0; i < in->n_arrays; i++) {
        const qcal_array *a = &in->arrays[i];
        uint64_t count = a->rank == 0 ? 1 : a->shape[0];
        if (!strcmp(a->name, name))
            return a->dtype == dtype && a->rank <= 1 && (n == UINT64_MAX || count == n) && a->data
                       ? a->data : NULL;
    }
    return NULL;
}

static uint64_t counts_length(const qcal_stat *in)
{
    for (uint32_t i = 0; i < in->n_arrays; i++)
        if (!strcmp(in->arrays[i].name, "counts") && in->arrays[i].rank == 1)
            return in->arrays[i].shape[0];
    return UINT64_MAX;
}

static int h_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    hist *s = state;
    if (strcmp(in->kind, STATE_KIND) || in->kind_version != 1)
        return fail(err, QCAL_E_KIND, "expected a %s v1 state, found %s v%u", STATE_KIND,
                    in->kind, in->kind_version);
    uint64_t n = counts_length(in);
    const uint64_t *counts = array_of(in, "counts", QCAL_DTYPE_U64, n), *count = array_of(in, "count", QCAL_DTYPE_U64, 1);
    const uint64_t *nf = array_of(in, "nonfinite", QCAL_DTYPE_U64, 2), *abs = array_of(in, "abs", QCAL_DTYPE_U64, 1);
    const uint64_t *cap = array_of(in, "capacity", QCAL_DTYPE_U64, 1);
    const int64_t *k = array_of(in, "k", QCAL_DTYPE_I64, 1), *first = array_of(in, "first", QCAL_DTYPE_I64, 1);
    const float *e[4] = {array_of(in, "min", QCAL_DTYPE_F32, 1), array_of(in, "max", QCAL_DTYPE_F32, 1),
                         array_of(in, "smin", QCAL_DTYPE_F32, 1), array_of(in, "smax", QCAL_DTYPE_F32, 1)};
    if (n == UINT64_MAX || !counts || !count || !nf || !abs || !cap || !k || !first || !e[0] ||
        !e[1] || !e[2] || !e[3])
        return fail(err, QCAL_E_DATA, "histogram state: an array is missing or malformed");
    if (*cap != s->capacity || *abs != (uint64_t)s->abs)
        return fail(err, QCAL_E_DATA, "histogram state of %llu bins (abs %llu), this observer has "
                    "%llu (abs %d)", (unsigned long long)*cap, (unsigned long long)*abs,
                    (unsigned long long)s->capacity, s->abs);
    float ext[4] = {*e[0], *e[1], *e[2], *e[3]};
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++)
        total += counts[i];
    int finite = isfinite(ext[0]) && isfinite(ext[1]) && ext[0] <= ext[1];
    int consistent = *count == 0 ? n == 0
                     : finite && n >= 1 && n <= s->capacity && total == *count &&
                       *k >= -400 && *k <= 400 && *first == bin_of(ext[0], (int)*k) &&
                       *first + (int64_t)n - 1 == bin_of(ext[1], (int)*k) &&
                       *k == fitting_exponent(ext[0], ext[1], s->capacity);
    if (!consistent)
        return fail(err, QCAL_E_DATA, "histogram state: counts, extrema and bin exponent disagree");
    fold(s, (int)*k, *first, counts, n, ext, *count, nf[0], nf[1]);
    return QCAL_OK;
}

/* ---- percentile ------------------------------------------------------------------------ *
 * The q-quantile of the histogrammed values: the point where the cumulative count reaches
 * q * count, interpolated linearly inside its bin (ONNX Runtime and TensorRT take a bin edge;
 * the difference is below one bin), clamped to the exact [min, max] so a range never passes
 * the observed extrema. */

typedef struct hview {
    const uint64_t *counts;
    uint64_t n, count, abs;
    double lo, width, min, max, smin, smax;
} hview;

static const void *stat_array(const qcal_stat *st, const char *name, uint32_t dtype, uint64_t n)
{
    return array_of(st, name, dtype, n);
}

static int view_of(const qcal_stat *st, hview *v, qcal_err *err)
{
    if (strcmp(st->kind, "qcal.histogram") || st->kind_version < 1)
        return fail(err, QCAL_E_KIND, "expected a qcal.histogram statistic, found %s", st->kind);
    v->n = counts_length(st);
    const uint64_t *count = stat_array(st, "count", QCAL_DTYPE_U64, 1), *abs = stat_array(st, "abs", QCAL_DTYPE_U64, 1);
    const double *d[6] = {stat_array(st, "lo", QCAL_DTYPE_F64, 1), stat_array(st, "width", QCAL_DTYPE_F64, 1),
                          stat_array(st, "min", QCAL_DTYPE_F64, 1), stat_array(st, "max", QCAL_DTYPE_F64, 1),
                          stat_array(st, "smin", QCAL_DTYPE_F64, 1), stat_array(st, "smax", QCAL_DTYPE_F64, 1)};
    v->counts = v->n == UINT64_MAX ? NULL : stat_array(st, "counts", QCAL_DTYPE_U64, v->n);
    if (!v->counts || !count || !abs || !d[0] || !d[1] || !d[2] || !d[3] || !d[4] || !d[5])
        return fail(err, QCAL_E_DATA, "histogram statistic: an array is missing or malformed");
    v->count = *count, v->abs = *abs;
    v->lo = *d[0], v->width = *d[1], v->min = *d[2], v->max = *d[3], v->smin = *d[4], v->smax = *d[5];
    uint64_t total = 0;
    for (uint64_t i = 0; i < v->n; i++)
        total += v->counts[i];
    if (!v->count || total != v->count || !(v->width > 0) || !(v->min <= v->max) ||
        !isfinite(v->lo) || !isfinite(v->min) || !isfinite(v->max))
        return fail(err, QCAL_E_DATA, "histogram statistic: counts and extrema disagree");
    return QCAL_OK;
}

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
    if (spec->flags & ~QCAL_QSPEC_KNOWN_FLAGS)
        return fail(err, QCAL_E_UNSUP, "unknown quantization spec flags 0x%x", spec->flags);
    if ((spec->flags & QCAL_QSPEC_PER_CHANNEL) || n_ranges != 1)
        return fail(err, QCAL_E_UNSUP, "histograms are per tensor: use a per-tensor spec");
    hview v;
    int rc = view_of(stat, &v, err);
    if (rc)
        return rc;
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
    /* x: a non-negative tensor keeps its minimum (one-sided), others clip both tails */
    ranges[0].hi = quantile(&v, q);
    ranges[0].lo = v.smin >= 0 ? v.min : quantile(&v, 1.0 - q);
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
     .help = "auto: |x| for symmetric specs, else both tails (non-negative tensors: upper only)"},
};
static const char *const histogram_kinds[] = {"qcal.histogram", NULL};

static const qcal_estimator percentile = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "percentile",
    .help = "the value below which `percentile` % of the values lie, from a histogram",
    .accepts = histogram_kinds,
    .n_params = 2,
    .params = percentile_params,
    .estimate = percentile_estimate,
};

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

/* Spreads the fine histogram over `bins` reference bins of width W on [0, amax]. */
static void rebin(const hview *v, double amax, uint64_t bins, double *ref)
{
    double W = amax / (double)bins;
    memset(ref, 0, bins * sizeof *ref);
    for (uint64_t i = 0; i < v->n; i++) {
        double c = (double)v->counts[i];
        if (c == 0)
            continue;
        double a = fmax(v->lo + v->width * (double)i, 0.0);
        double b = fmin(v->lo + v->width * (double)(i + 1), amax);
        if (!(b > a)) { /* a point mass (constant tensor) or the top edge */
            uint64_t j = (uint64_t)(a / W);
            ref[j < bins ? j : bins - 1] += c;
            continue;
        }
        for (uint64_t j = (uint64_t)(a / W); j < bins && (double)j * W < b; j++) {
            double lo = fmax(a, (double)j * W), hi = fmin(b, (double)(j + 1) * W);
            if (hi > lo)
                ref[j] += c * (hi - lo) / (b - a);
        }
    }
}

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
    rebin(v, amax, bins, ref);
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
    int rc = view_of(stat, &v, err);
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

static const qcal_estimator kl = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "kl",
    .help = "entropy calibration: the threshold minimising KL(P || Q) (TensorRT)",
    .accepts = histogram_kinds,
    .n_params = 5,
    .params = kl_params,
    .estimate = kl_estimate,
};

/* ---- mse: the candidate with the least quantize-dequantize error ---------------------- *
 * Candidates are fractions f = k / 100 of the range, k = 100, 100 - stride, ... > 0 (Horizon's
 * search: thresholds f max|x| for symmetric specs; MQBench's [f lo, f hi] for affine ones).
 * The error of a candidate is sum over bins of count (c - fq(c))^2 with c the bin centre
 * (bins are at most 1/4096 of the range wide with the defaults); fq quantizes onto the spec's
 * grid the way torch does (scale from the range, zero-point rounded half to even, values
 * rounded to nearest even and clamped). The first strict minimum wins, largest range first. */

static double fake_quant(double x, double scale, double zp, double qmin, double qmax)
{
    double q = nearbyint(x / scale) + zp;
    q = q < qmin ? qmin : q > qmax ? qmax : q;
    return (q - zp) * scale;
}

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

static double hist_error(const hview *v, const qcal_qspec *spec, double lo, double hi)
{
    double scale, zp, err = 0;
    grid_of(spec, lo, hi, &scale, &zp);
    for (uint64_t i = 0; i < v->n; i++) {
        if (!v->counts[i])
            continue;
        double c = fmin(fmax(v->lo + v->width * ((double)i + 0.5), v->min), v->max);
        double d = c - fake_quant(c, scale, zp, (double)spec->qmin, (double)spec->qmax);
        err += (double)v->counts[i] * d * d;
    }
    return err;
}

static int mse_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                        qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    if (spec->flags & ~QCAL_QSPEC_KNOWN_FLAGS)
        return fail(err, QCAL_E_UNSUP, "unknown quantization spec flags 0x%x", spec->flags);
    if ((spec->flags & QCAL_QSPEC_PER_CHANNEL) || n_ranges != 1)
        return fail(err, QCAL_E_UNSUP, "histograms are per tensor: use a per-tensor spec");
    hview v;
    int rc = view_of(stat, &v, err);
    if (rc)
        return rc;
    int symmetric = (spec->flags & QCAL_QSPEC_SYMMETRIC) != 0;
    if (!symmetric && v.abs)
        return fail(err, QCAL_E_KIND, "an affine range needs a histogram of x (observe histogram "
                    "with abs=false)");
    double lo = v.abs ? -v.max : v.smin, hi = v.abs ? v.max : v.smax;
    if (symmetric)
        hi = fmax(fabs(lo), fabs(hi)), lo = -hi;
    double best = INFINITY, best_f = 1;
    for (int64_t k = 100; k > 0; k -= params[0].i) {
        double f = (double)k / 100.0, e = hist_error(&v, spec, lo * f, hi * f);
        if (e < best)
            best = e, best_f = f;
    }
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

static const qcal_estimator mse = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "mse",
    .help = "the fraction of the range with the least quantize-dequantize squared error",
    .accepts = histogram_kinds,
    .n_params = 1,
    .params = mse_params,
    .estimate = mse_estimate,
};

/* ---- the plugin ----------------------------------------------------------------------- */

static const qcal_param params[N_PARAMS] = {
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 65536,
     .help = "bins the estimators work at (reference tools: 2048)"},
    {.name = "abs", .type = QCAL_PARAM_BOOL, .def = {.i = 0}, .min = 0, .max = 1,
     .help = "histogram of |x|, for symmetric methods"},
    {.name = "internal_factor", .type = QCAL_PARAM_INT, .def = {.i = 4}, .min = 1, .max = 64,
     .help = "internal bins per estimator bin; resolution is at least bins*factor/2 bins"},
};

static const qcal_observer histogram = {
    .head = QCAL_HEAD(qcal_observer),
    .name = "histogram",
    .help = "exact histogram on power-of-two aligned bins, of x or |x|; mergeable, split-invariant",
    .stat_kind = "qcal.histogram",
    .n_params = N_PARAMS,
    .params = params,
    .create = h_create,
    .observe = h_observe,
    .merge = h_merge,
    .serialize = h_serialize,
    .deserialize = h_deserialize,
    .finalize = h_finalize,
    .destroy = h_destroy,
};

static const qcal_observer *const observers[] = {&histogram};
static const qcal_estimator *const estimators[] = {&percentile, &kl, &mse};

static const qcal_plugin plugin = {
    .head = QCAL_HEAD(qcal_plugin),
    .name = "histogram",
    .version = "0.1.0",
    .help = "histograms of activations",
    .n_observers = 1,
    .n_estimators = 3,
    .observers = observers,
    .estimators = estimators,
};

const qcal_plugin *qcal_plugin_entry(const qcal_host *host)
{
    (void)host;
    return &plugin;
}
