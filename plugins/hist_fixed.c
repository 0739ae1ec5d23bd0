/* hist_fixed.c - the fixed_histogram observer: `bins` equal bins over a range given in advance.
 *
 * The second pass of a two-pass calibration: once a first pass has found max|x| (or min and
 * max), this histogram puts every value in exactly the bin a reference tool's histogram of the
 * same range would, with no re-binning. That matters to entropy calibration, whose result
 * depends on which bins are empty: a histogram re-binned from finer bins smears sparse tails
 * over neighbouring bins. Value x (|x| when abs) goes to bin floor((x - lo) / w), w = (hi -
 * lo) / bins; values outside [lo, hi) are clamped into the edge bins (min and max stay exact,
 * so an estimator can tell). Counts add, so states merge exactly in any order.
 *
 * Finalizes to "qcal.histogram" v1 (see histogram.c) with all `bins` bins, lo and width as
 * given; its saved state is "qcal.fixed_histogram.state" v1.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "histogram.h"

enum { P_BINS, P_ABS, P_LO, P_HI, N_PARAMS };
enum { LANE_SLOTS = 4 };
#define STATE_KIND "qcal.fixed_histogram.state"

typedef struct fixed {
    uint64_t bins;
    int abs;
    double lo, hi, width;
    uint64_t *counts;
    float min, max, smin, smax; /* valid when count > 0 */
    uint64_t count, nan, inf, zeros;
    /* what finalize / serialize hand out */
    double out_lo, out_width, out_min, out_max, out_smin, out_smax, out_hi;
    uint64_t out_count, out_nonfinite[2], out_abs, out_zeros;
    float out_f[4];
    qcal_array arrays[13];
} fixed;

static void f_destroy(void *state)
{
    fixed *s = state;
    if (s)
        free(s->counts);
    free(s);
}

static int f_create(const qcal_tensor *t, const qcal_value *params, void **state, qcal_err *err)
{
    (void)t;
    double lo = params[P_LO].f, hi = params[P_HI].f;
    if (!(hi > lo) || !isfinite(hi - lo))
        return fail(err, QCAL_E_INVAL, "fixed_histogram needs lo < hi, both finite (got [%g, %g])",
                    lo, hi);
    fixed *s = calloc(1, sizeof *s);
    uint64_t bins = (uint64_t)params[P_BINS].i;
    /* LANE_SLOTS more: where bin_avx2 counts exact zeros (always empty between observes) */
    if (!s || !(s->counts = calloc(bins + LANE_SLOTS, sizeof *s->counts))) {
        f_destroy(s);
        return fail(err, QCAL_E_NOMEM, "cannot hold %llu bins", (unsigned long long)bins);
    }
    s->bins = bins, s->abs = params[P_ABS].i != 0;
    s->lo = lo, s->hi = hi, s->width = (hi - lo) / (double)bins;
    *state = s;
    return QCAL_OK;
}

static void take_extrema(fixed *s, const float ext[4], uint64_t finite)
{
    if (!finite)
        return;
    int first = s->count == 0;
    s->min = first || ext[0] < s->min ? ext[0] : s->min;
    s->max = first || ext[1] > s->max ? ext[1] : s->max;
    s->smin = first || ext[2] < s->smin ? ext[2] : s->smin;
    s->smax = first || ext[3] > s->smax ? ext[3] : s->smax;
}

/* The bin of finite v (|v| already taken when abs), clamped into [0, bins). */
static uint64_t bin_of(const fixed *s, float v)
{
    double j = floor(((double)v - s->lo) / s->width);
    return j < 0 ? 0 : j > (double)(s->bins - 1) ? s->bins - 1 : (uint64_t)j;
}

/* Counts the finite ones of n values; returns the zeros among them. */
static uint64_t bin_scalar(fixed *s, const float *x, uint64_t n)
{
    uint64_t zeros = 0;
    for (uint64_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v))
            continue;
        v = s->abs ? fabsf(v) : v;
        zeros += v == 0;
        s->counts[bin_of(s, v)]++;
    }
    return zeros;
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FIXED_HAVE_AVX2 1

/* bin_scalar on four finite values at a time (AVX2, checked at run time): the same double
 * operations, each correctly rounded in SIMD as in scalar code, so the same bins (multiplying
 * by 1 / w instead of dividing, with a check for quotients near an integer, measured slower
 * here: the counting, not the division, bounds the loop). n is a multiple of 4 and bins +
 * LANE_SLOTS fits in an int32. */
__attribute__((target("avx2"))) static uint64_t bin_avx2(fixed *s, const float *x, uint64_t n)
{
    const __m256d lo = _mm256_set1_pd(s->lo), width = _mm256_set1_pd(s->width);
    const __m256d zero_d = _mm256_setzero_pd(), last = _mm256_set1_pd((double)(s->bins - 1));
    const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff)), zero = _mm_setzero_ps();
    const __m128i slots = _mm_setr_epi32((int)s->bins, (int)s->bins + 1, (int)s->bins + 2,
                                         (int)s->bins + 3);
    __m128i zeros = _mm_setzero_si128();
    for (uint64_t i = 0; i < n; i += 4) {
        __m128 v = _mm_loadu_ps(x + i);
        if (s->abs)
            v = _mm_and_ps(v, magnitude);
        __m128i is_zero = _mm_castps_si128(_mm_cmpeq_ps(v, zero));
        zeros = _mm_sub_epi32(zeros, is_zero);
        __m256d j = _mm256_floor_pd(_mm256_div_pd(_mm256_sub_pd(_mm256_cvtps_pd(v), lo), width));
        j = _mm256_min_pd(_mm256_max_pd(j, zero_d), last);
        /* zeros (half a ReLU's output) count in a slot of their lane: incrementing one bin
         * several times per vector makes each increment wait for the one before */
        __m128i bin = _mm_blendv_epi8(_mm256_cvttpd_epi32(j), slots, is_zero);
        uint64_t b01 = (uint64_t)_mm_cvtsi128_si64(bin), b23 = (uint64_t)_mm_extract_epi64(bin, 1);
        s->counts[(uint32_t)b01]++, s->counts[b01 >> 32]++;
        s->counts[(uint32_t)b23]++, s->counts[b23 >> 32]++;
    }
    uint64_t *slot = s->counts + s->bins, in_slots = slot[0] + slot[1] + slot[2] + slot[3];
    memset(slot, 0, LANE_SLOTS * sizeof *slot);
    s->counts[bin_of(s, 0.0f)] += in_slots;
    uint32_t lane[4];
    _mm_storeu_si128((__m128i *)lane, zeros);
    return (uint64_t)lane[0] + lane[1] + lane[2] + lane[3];
}
#endif

/* Blocks of 32 Ki values: the counting reads what the scan has just brought into cache. */
enum { BLOCK = 32768 };

static void observe_block(fixed *s, const float *x, uint64_t n)
{
    uint64_t nan = 0, inf = 0, zeros = 0, done = 0;
    float ext[4];
    hist_scan(s->abs, x, n, ext, &nan, &inf);
    take_extrema(s, ext, n - nan - inf);
#if defined(FIXED_HAVE_AVX2)
    /* the vector loop does not skip NaN and Inf: a block holding any takes the scalar one */
    if (nan + inf == 0 && s->bins + LANE_SLOTS <= INT32_MAX && simd_avx2()) {
        done = n - n % 4;
        zeros = bin_avx2(s, x, done);
    }
#endif
    zeros += bin_scalar(s, x + done, n - done);
    s->count += n - nan - inf, s->nan += nan, s->inf += inf, s->zeros += zeros;
}

static int f_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    uint64_t n = slab->rows * slab->row_size;
    for (uint64_t at = 0; at < n; at += BLOCK)
        observe_block(state, slab->data + at, n - at < BLOCK ? n - at : BLOCK);
    (void)err;
    return QCAL_OK;
}

static int f_merge(void *into, const void *from, qcal_err *err)
{
    fixed *s = into;
    const fixed *o = from;
    if (o->bins != s->bins || o->abs != s->abs || o->lo != s->lo || o->hi != s->hi)
        return fail(err, QCAL_E_INVAL, "merging fixed histograms of different layouts");
    float ext[4] = {o->min, o->max, o->smin, o->smax};
    take_extrema(s, ext, o->count);
    for (uint64_t i = 0; i < s->bins; i++)
        s->counts[i] += o->counts[i];
    s->count += o->count, s->nan += o->nan, s->inf += o->inf, s->zeros += o->zeros;
    return QCAL_OK;
}

static qcal_array scalar(const char *name, uint32_t dtype, const void *data)
{
    return array1(name, dtype, 1, data);
}

/* The arrays a statistic and a saved state share, at arrays[0..5]; returns how many. */
static uint32_t shared_arrays(fixed *s)
{
    s->out_count = s->count, s->out_abs = (uint64_t)s->abs, s->out_zeros = s->zeros;
    s->out_nonfinite[0] = s->nan, s->out_nonfinite[1] = s->inf;
    s->out_lo = s->lo;
    s->arrays[0] = array1("counts", QCAL_DTYPE_U64, s->bins, s->counts);
    s->arrays[1] = scalar("count", QCAL_DTYPE_U64, &s->out_count);
    s->arrays[2] = array1("nonfinite", QCAL_DTYPE_U64, 2, s->out_nonfinite);
    s->arrays[3] = scalar("abs", QCAL_DTYPE_U64, &s->out_abs);
    s->arrays[4] = scalar("zeros", QCAL_DTYPE_U64, &s->out_zeros);
    s->arrays[5] = scalar("lo", QCAL_DTYPE_F64, &s->out_lo);
    return 6;
}

static int f_finalize(void *state, qcal_stat *out, qcal_err *err)
{
    fixed *s = state;
    if (!s->count)
        return fail(err, QCAL_E_DATA, "no finite value (%llu NaN, %llu Inf)",
                    (unsigned long long)s->nan, (unsigned long long)s->inf);
    uint32_t k = shared_arrays(s);
    s->out_width = s->width;
    s->out_min = s->min, s->out_max = s->max, s->out_smin = s->smin, s->out_smax = s->smax;
    s->arrays[k++] = scalar("width", QCAL_DTYPE_F64, &s->out_width);
    s->arrays[k++] = scalar("min", QCAL_DTYPE_F64, &s->out_min);
    s->arrays[k++] = scalar("max", QCAL_DTYPE_F64, &s->out_max);
    s->arrays[k++] = scalar("smin", QCAL_DTYPE_F64, &s->out_smin);
    s->arrays[k++] = scalar("smax", QCAL_DTYPE_F64, &s->out_smax);
    *out = (qcal_stat){"qcal.histogram", 1, k, 1, s->arrays};
    return QCAL_OK;
}

static int f_serialize(const void *state, qcal_stat *out, qcal_err *err)
{
    fixed *s = (fixed *)state; /* only the out_* members change */
    (void)err;
    uint32_t k = shared_arrays(s);
    s->out_hi = s->hi;
    s->out_f[0] = s->min, s->out_f[1] = s->max, s->out_f[2] = s->smin, s->out_f[3] = s->smax;
    s->arrays[k++] = scalar("hi", QCAL_DTYPE_F64, &s->out_hi);
    s->arrays[k++] = array1("extrema", QCAL_DTYPE_F32, 4, s->out_f);
    *out = (qcal_stat){STATE_KIND, 1, k, 1, s->arrays};
    return QCAL_OK;
}

static int f_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    fixed *s = state;
    if (strcmp(in->kind, STATE_KIND) || in->kind_version != 1)
        return fail(err, QCAL_E_KIND, "expected a %s v1 state, found %s v%u", STATE_KIND,
                    in->kind, in->kind_version);
    const uint64_t *counts = hist_array(in, "counts", QCAL_DTYPE_U64, s->bins);
    const uint64_t *count = hist_array(in, "count", QCAL_DTYPE_U64, 1), *abs = hist_array(in, "abs", QCAL_DTYPE_U64, 1);
    const uint64_t *nf = hist_array(in, "nonfinite", QCAL_DTYPE_U64, 2), *zeros = hist_array(in, "zeros", QCAL_DTYPE_U64, 1);
    const double *lo = hist_array(in, "lo", QCAL_DTYPE_F64, 1), *hi = hist_array(in, "hi", QCAL_DTYPE_F64, 1);
    const float *ext = hist_array(in, "extrema", QCAL_DTYPE_F32, 4);
    if (!counts || !count || !abs || !nf || !zeros || !lo || !hi || !ext)
        return fail(err, QCAL_E_DATA, "fixed histogram state: an array is missing or malformed "
                    "(or of another bin count)");
    if (*lo != s->lo || *hi != s->hi || *abs != (uint64_t)s->abs)
        return fail(err, QCAL_E_DATA, "fixed histogram state over [%g, %g] (abs %llu), this "
                    "observer has [%g, %g] (abs %d)", *lo, *hi, (unsigned long long)*abs, s->lo,
                    s->hi, s->abs);
    uint64_t total = 0;
    for (uint64_t i = 0; i < s->bins; i++)
        total += counts[i];
    int ordered = *count == 0 || (ext[0] <= ext[1] && ext[2] <= ext[3] && isfinite(ext[0]) &&
                                  isfinite(ext[1]) && isfinite(ext[2]) && isfinite(ext[3]));
    if (total != *count || *zeros > *count || !ordered)
        return fail(err, QCAL_E_DATA, "fixed histogram state: counts and extrema disagree");
    take_extrema(s, ext, *count);
    for (uint64_t i = 0; i < s->bins; i++)
        s->counts[i] += counts[i];
    s->count += *count, s->nan += nf[0], s->inf += nf[1], s->zeros += *zeros;
    return QCAL_OK;
}

static const qcal_param params[N_PARAMS] = {
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 1 << 20,
     .help = "equal bins over [lo, hi)"},
    {.name = "abs", .type = QCAL_PARAM_BOOL, .def = {.i = 0}, .min = 0, .max = 1,
     .help = "histogram of |x|"},
    {.name = "lo", .type = QCAL_PARAM_FLOAT, .def = {.f = 0.0}, .min = -DBL_MAX, .max = DBL_MAX,
     .help = "left edge of bin 0 (values below go to bin 0)"},
    {.name = "hi", .type = QCAL_PARAM_FLOAT, .def = {.f = 1.0}, .min = -DBL_MAX, .max = DBL_MAX,
     .help = "right edge of the last bin (values at or above go to the last bin)"},
};

const qcal_observer hist_fixed_observer = {
    .head = QCAL_HEAD(qcal_observer),
    .name = "fixed_histogram",
    .help = "histogram of x or |x| on equal bins over a range known in advance (two-pass methods)",
    .stat_kind = "qcal.histogram",
    .n_params = N_PARAMS,
    .params = params,
    .create = f_create,
    .observe = f_observe,
    .merge = f_merge,
    .serialize = f_serialize,
    .deserialize = f_deserialize,
    .finalize = f_finalize,
    .destroy = f_destroy,
};
