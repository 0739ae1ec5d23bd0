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
 * extrema), count u64[1] (finite values), nonfinite u64[2] (NaN, +-Inf), abs u64[1], zeros
 * u64[1] (finite values equal to 0: tpu-mlir's histogram leaves them out).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "histogram.h"

enum { P_BINS, P_ABS, P_FACTOR, N_PARAMS };
#define MAGNITUDE_BITS 40 /* finest bin: 2^-40 of the largest magnitude */
#define LANE_SLOTS 8      /* one per vector lane, where bin_in_window counts zeros first */

typedef struct hist {
    uint64_t capacity;      /* B: bins the window may hold */
    int abs;
    int has_data;           /* a finite value was seen */
    int k;                  /* bin width 2^k */
    int64_t base;           /* global index of counts[0] */
    uint64_t *counts;       /* [capacity + LANE_SLOTS]: the window, then bin_in_window's
                               scratch slots (never read) */
    float min, max, smin, smax;
    uint64_t count, nan, inf, zeros; /* zeros: finite values equal to 0 */
    /* what finalize / serialize hand out (owned here) */
    double out_lo, out_width, out_min, out_max, out_smin, out_smax;
    int64_t out_k, out_first;
    uint64_t out_count, out_nonfinite[2], out_abs, out_capacity, out_zeros;
    float out_fmin, out_fmax, out_fsmin, out_fsmax;
    qcal_array arrays[12];
} hist;

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

/* Moves the counts to exponent k >= s->k with the window starting at the bin of lo. The new
 * window is allocated here, not kept beside each state: a pass over thousands of tensors holds
 * thousands of states, and windows move rarely. QCAL_E_NOMEM if it cannot be. */
static int rewindow(hist *s, int k, float lo)
{
    int64_t base = bin_of(lo, k);
    int shift = k - s->k;
    uint64_t *moved = calloc(s->capacity + LANE_SLOTS, sizeof *moved);
    if (!moved)
        return QCAL_E_NOMEM;
    for (uint64_t i = 0; i < s->capacity; i++)
        if (s->counts[i])
            moved[floor_shift(s->base + (int64_t)i, shift) - base] += s->counts[i];
    free(s->counts);
    s->counts = moved;
    s->k = k;
    s->base = base;
    return QCAL_OK;
}

/* Widens the state to hold [lo, hi] (finite), merging bins as needed. */
static int cover(hist *s, float lo, float hi)
{
    if (!s->has_data) {
        s->has_data = 1;
        s->min = lo, s->max = hi;
        s->k = fitting_exponent(lo, hi, s->capacity);
        s->base = bin_of(lo, s->k);
        return QCAL_OK;
    }
    float nlo = lo < s->min ? lo : s->min, nhi = hi > s->max ? hi : s->max;
    int k = fitting_exponent(nlo, nhi, s->capacity);
    if (k < s->k)
        k = s->k; /* never finer than what is already merged */
    if ((k != s->k || bin_of(nlo, k) != s->base) && rewindow(s, k, nlo))
        return QCAL_E_NOMEM;
    s->min = nlo, s->max = nhi;
    return QCAL_OK;
}

/* ---- observing ------------------------------------------------------------------------ */

/* The least |x| of the finite values (INFINITY if none), over 16 independent lanes so that
 * it vectorises like scan_run (NaN and Inf compare false or lose). */
static float least_magnitude(const float *x, uint64_t n)
{
    float lane[16];
    for (int k = 0; k < 16; k++)
        lane[k] = INFINITY;
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) {
            float m = fabsf(x[i + (uint64_t)k]);
            lane[k] = m < lane[k] ? m : lane[k];
        }
    for (; i < n; i++) {
        float m = fabsf(x[i]);
        lane[0] = m < lane[0] ? m : lane[0];
    }
    float least = INFINITY;
    for (int k = 0; k < 16; k++)
        least = lane[k] < least ? lane[k] : least;
    return least;
}

void hist_scan(int abs, const float *x, uint64_t n, float ext[4], uint64_t *nan, uint64_t *inf)
{
    float slo = INFINITY, shi = -INFINITY;
    uint64_t finite = 0, nonfinite[2] = {0, 0};
    scan_run(x, n, &slo, &shi, &finite, nonfinite);
    *nan += nonfinite[0], *inf += nonfinite[1];
    ext[0] = abs ? least_magnitude(x, n) : slo;
    ext[1] = abs ? fmaxf(fabsf(slo), fabsf(shi)) : shi;
    ext[2] = slo, ext[3] = shi;
}

/* floor(x) for |x| < 2^63 without the libm call (x86-64's baseline has no rounding
 * instruction): truncate, then step down where that rounded a negative up. */
static inline int64_t floor_to_int(double x)
{
    int64_t t = (int64_t)x;
    return t - (x < (double)t);
}

/* Counts n finite values into bins; x * 2^-k is exact (a power of two, well inside double's
 * range), so the bin is exactly floor(x / w). The loops are written out per case so that
 * each has neither a test for finiteness nor one for abs. */
static uint64_t bin_finite(hist *s, const float *x, uint64_t n, double scale)
{
    uint64_t zeros = 0, *counts = s->counts;
    int64_t base = s->base;
    if (s->abs)
        for (uint64_t i = 0; i < n; i++) {
            zeros += x[i] == 0;
            counts[floor_to_int((double)fabsf(x[i]) * scale) - base]++;
        }
    else
        for (uint64_t i = 0; i < n; i++) {
            zeros += x[i] == 0;
            counts[floor_to_int((double)x[i] * scale) - base]++;
        }
    return zeros;
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HIST_HAVE_AVX2 1

/* bin_finite on eight values at a time, for k <= 0 on machines with AVX2 (checked at run
 * time). The same bins, in float32: x * 2^-k is exact there (a power of two in [1, 2^125], results
 * below 2^42 as k >= min_exponent), so is its floor, and floor - base is the difference of two
 * integers that is below the capacity, hence exact too. The scalar loop's cost was the
 * conversions, not the counting. n is a multiple of 8 and at most BLOCK. */
__attribute__((target("avx2"))) static uint64_t bin_finite_avx2(uint64_t *counts, const float *x,
                                                                uint64_t n, float scale,
                                                                float base, int abs)
{
    const __m256 s = _mm256_set1_ps(scale), b = _mm256_set1_ps(base), zero = _mm256_setzero_ps();
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256i zeros = _mm256_setzero_si256(); /* per lane, at most BLOCK / 8: no overflow */
    uint32_t bin[8] __attribute__((aligned(32)));
    for (uint64_t i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (abs)
            v = _mm256_and_ps(v, magnitude);
        zeros = _mm256_sub_epi32(zeros, _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_EQ_OQ)));
        __m256 y = _mm256_sub_ps(_mm256_floor_ps(_mm256_mul_ps(v, s)), b);
        _mm256_store_si256((__m256i *)bin, _mm256_cvttps_epi32(y));
        for (int j = 0; j < 8; j++)
            counts[bin[j]]++;
    }
    uint32_t lane[8];
    _mm256_storeu_si256((__m256i *)lane, zeros);
    uint64_t total = 0;
    for (int j = 0; j < 8; j++)
        total += lane[j];
    return total;
}

/* The vectors of 8 from the start of x whose values all fall in the current window: one read
 * of the values does what hist_scan, cover and bin_finite_avx2 do for a block that does not move
 * the window (after the first blocks, nearly every one). It stops before the first vector with
 * a value outside the window (NaN and Inf among them: their bin converts to INT_MIN), and
 * returns how many values it took. Zeros (exact, after abs) count into one scratch slot per
 * lane and join their bin at the end: with ReLU's half zeros, incrementing one bin eight times
 * a vector chained every increment on the one before (1.4x slower, measured). Bin indices
 * leave the vector two to a 64-bit move. */
__attribute__((target("avx2"))) static uint64_t bin_in_window_avx2(hist *s, const float *x,
                                                                  uint64_t n, float scale,
                                                                  float base)
{
    const __m256 sc = _mm256_set1_ps(scale), b = _mm256_set1_ps(base), zero = _mm256_setzero_ps();
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i top = _mm256_set1_epi32((int)(s->capacity - 1)), all = _mm256_set1_epi32(-1);
    const int cap = (int)s->capacity;
    const __m256i slots = _mm256_setr_epi32(cap, cap + 1, cap + 2, cap + 3, cap + 4, cap + 5,
                                            cap + 6, cap + 7);
    __m256 lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY), slo = lo, shi = hi;
    __m256i zeros = _mm256_setzero_si256(); /* per lane, at most BLOCK / 8 */
    uint64_t *counts = s->counts, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), zero); /* -0 as +0, as the scan does */
        __m256 m = s->abs ? _mm256_and_ps(v, magnitude) : v;
        __m256i bin = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_floor_ps(_mm256_mul_ps(m, sc)), b));
        if (!_mm256_testc_si256(_mm256_cmpeq_epi32(_mm256_min_epu32(bin, top), bin), all))
            break;
        slo = _mm256_min_ps(v, slo), shi = _mm256_max_ps(v, shi);
        lo = _mm256_min_ps(m, lo), hi = _mm256_max_ps(m, hi);
        __m256 is_zero = _mm256_cmp_ps(m, zero, _CMP_EQ_OQ);
        zeros = _mm256_sub_epi32(zeros, _mm256_castps_si256(is_zero));
        bin = _mm256_blendv_epi8(bin, slots, _mm256_castps_si256(is_zero));
        __m128i low = _mm256_castsi256_si128(bin), high = _mm256_extracti128_si256(bin, 1);
        uint64_t pair[4] = {(uint64_t)_mm_cvtsi128_si64(low), (uint64_t)_mm_extract_epi64(low, 1),
                            (uint64_t)_mm_cvtsi128_si64(high), (uint64_t)_mm_extract_epi64(high, 1)};
        for (int j = 0; j < 4; j++)
            counts[(uint32_t)pair[j]]++, counts[pair[j] >> 32]++;
    }
    if (!i)
        return 0;
    float l[8], h[8], sl[8], sh[8];
    uint32_t z[8];
    _mm256_storeu_ps(l, lo), _mm256_storeu_ps(h, hi), _mm256_storeu_ps(sl, slo), _mm256_storeu_ps(sh, shi);
    _mm256_storeu_si256((__m256i *)z, zeros);
    uint64_t zero_total = 0;
    for (int j = 0; j < 8; j++) {
        s->min = l[j] < s->min ? l[j] : s->min, s->max = h[j] > s->max ? h[j] : s->max;
        s->smin = sl[j] < s->smin ? sl[j] : s->smin, s->smax = sh[j] > s->smax ? sh[j] : s->smax;
        zero_total += z[j];
    }
    if (zero_total) /* zeros were in the window: so is their bin, 0 - base */
        counts[-s->base] += zero_total;
    s->zeros += zero_total;
    s->count += i;
    return i;
}


/* Whether x * 2^-k and its bin are exact in float32 (see bin_finite_avx2), and AVX2 is there. */
static int float_bins_exact(const hist *s)
{
    float base = (float)s->base;
    /* 2^-k must be a float too: not so for a tensor of zeros (k is then -189) */
    return s->k <= 0 && s->k > FLT_MIN_EXP && (int64_t)base == s->base && simd_avx2();
}

#endif

/* bin_finite, eight at a time where the machine and the exponent allow (see above). */
static uint64_t bin_finite_fast(hist *s, const float *x, uint64_t n, double scale)
{
    uint64_t done = 0, zeros = 0;
#if defined(HIST_HAVE_AVX2)
    if (float_bins_exact(s)) {
        done = n - n % 8;
        zeros = bin_finite_avx2(s->counts, x, done, (float)scale, (float)s->base, s->abs);
    }
#endif
    return zeros + bin_finite(s, x + done, n - done, scale);
}

/* The leading values bin_in_window_avx2 counts: 0 before the first value, or when the machine
 * or the exponent does not allow it. */
static uint64_t bin_in_window(hist *s, const float *x, uint64_t n)
{
#if defined(HIST_HAVE_AVX2)
    if (s->has_data && float_bins_exact(s))
        return bin_in_window_avx2(s, x, n, (float)ldexp(1.0, -s->k), (float)s->base);
#endif
    (void)s, (void)x, (void)n;
    return 0;
}

static uint64_t bin_skipping_nonfinite(hist *s, const float *x, uint64_t n, double scale)
{
    uint64_t zeros = 0;
    for (uint64_t i = 0; i < n; i++) {
        float v = s->abs ? fabsf(x[i]) : x[i];
        if (!isfinite(v))
            continue;
        zeros += v == 0;
        s->counts[floor_to_int((double)v * scale) - s->base]++;
    }
    return zeros;
}

/* One block: what falls in the window is counted at once; for the rest, their extrema widen
 * the window, then they are counted. */
static int observe_block(hist *s, const float *x, uint64_t n)
{
    uint64_t taken = bin_in_window(s, x, n);
    if (taken == n)
        return QCAL_OK;
    x += taken, n -= taken;
    uint64_t nan = 0, inf = 0;
    float ext[4];
    hist_scan(s->abs, x, n, ext, &nan, &inf);
    s->nan += nan, s->inf += inf;
    if (nan + inf == n)
        return QCAL_OK;
    s->smin = s->has_data && s->smin < ext[2] ? s->smin : ext[2];
    s->smax = s->has_data && s->smax > ext[3] ? s->smax : ext[3];
    if (cover(s, ext[0], ext[1]))
        return QCAL_E_NOMEM;
    double scale = ldexp(1.0, -s->k);
    s->zeros += nan + inf ? bin_skipping_nonfinite(s, x, n, scale) : bin_finite_fast(s, x, n, scale);
    s->count += n - nan - inf;
    return QCAL_OK;
}

/* Blocks of 32 Ki values (128 KiB): the counting loop reads what the scan has just brought
 * into the core's cache, instead of the slab a second time from memory. */
enum { BLOCK = 32768 };

static int h_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    uint64_t n = slab->rows * slab->row_size;
    for (uint64_t at = 0; at < n; at += BLOCK)
        if (observe_block(state, slab->data + at, n - at < BLOCK ? n - at : BLOCK))
            return fail(err, QCAL_E_NOMEM, "out of memory re-windowing the histogram");
    return QCAL_OK;
}

/* ---- states --------------------------------------------------------------------------- */

static void h_destroy(void *state)
{
    hist *s = state;
    if (!s)
        return;
    free(s->counts);
    free(s);
}

static int h_create(const qcal_tensor *t, const qcal_value *params, void **state, qcal_err *err)
{
    (void)t;
    uint64_t capacity = (uint64_t)params[P_BINS].i * (uint64_t)params[P_FACTOR].i;
    hist *s = calloc(1, sizeof *s);
    if (!s || !(s->counts = calloc(capacity + LANE_SLOTS, 8))) {
        h_destroy(s);
        return fail(err, QCAL_E_NOMEM, "cannot hold %llu bins", (unsigned long long)capacity);
    }
    s->capacity = capacity;
    s->abs = params[P_ABS].i != 0;
    *state = s;
    return QCAL_OK;
}

/* Folds a described state (k, first bin, counts, extrema) into s. */
static int fold(hist *s, int k, int64_t first, const uint64_t *counts, uint64_t n,
                const float ext[4], uint64_t count, uint64_t nan, uint64_t inf, uint64_t zeros,
                qcal_err *err)
{
    s->nan += nan, s->inf += inf, s->zeros += zeros;
    if (!count)
        return QCAL_OK;
    s->smin = s->has_data && s->smin < ext[2] ? s->smin : ext[2];
    s->smax = s->has_data && s->smax > ext[3] ? s->smax : ext[3];
    /* the other coarser: come to its exponent */
    if (cover(s, ext[0], ext[1]) || (k > s->k && rewindow(s, k, s->min)))
        return fail(err, QCAL_E_NOMEM, "out of memory re-windowing the histogram");
    for (uint64_t i = 0; i < n; i++)
        if (counts[i])
            s->counts[floor_shift(first + (int64_t)i, s->k - k) - s->base] += counts[i];
    s->count += count;
    return QCAL_OK;
}

static int h_merge(void *into, const void *from, qcal_err *err)
{
    hist *s = into;
    const hist *o = from;
    if (o->capacity != s->capacity || o->abs != s->abs)
        return fail(err, QCAL_E_INVAL, "merging histograms of different parameters");
    float ext[4] = {o->min, o->max, o->smin, o->smax};
    return fold(s, o->k, o->base, o->counts, o->capacity, ext, o->count, o->nan, o->inf,
                o->zeros, err);
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
 * count, nonfinite, abs and zeros, at arrays[0..4]. Returns how many it filled. */
static uint32_t common_arrays(hist *s, uint64_t first, uint64_t n)
{
    s->out_count = s->count, s->out_abs = (uint64_t)s->abs, s->out_zeros = s->zeros;
    s->out_nonfinite[0] = s->nan, s->out_nonfinite[1] = s->inf;
    qcal_array counts = {"counts", QCAL_DTYPE_U64, 1, {n, 0, 0, 0}, s->counts + first};
    qcal_array nonfinite = {"nonfinite", QCAL_DTYPE_U64, 1, {2, 0, 0, 0}, s->out_nonfinite};
    s->arrays[0] = counts;
    s->arrays[1] = scalar("count", QCAL_DTYPE_U64, &s->out_count);
    s->arrays[2] = nonfinite;
    s->arrays[3] = scalar("abs", QCAL_DTYPE_U64, &s->out_abs);
    s->arrays[4] = scalar("zeros", QCAL_DTYPE_U64, &s->out_zeros);
    return 5;
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

const void *hist_array(const qcal_stat *in, const char *name, uint32_t dtype, uint64_t n)
{
    static const uint64_t no_elements[1]; /* an empty array may come without data */
    for (uint32_t i = 0; i < in->n_arrays; i++) {
        const qcal_array *a = &in->arrays[i];
        uint64_t count = a->rank == 0 ? 1 : a->shape[0];
        if (strcmp(a->name, name))
            continue;
        if (a->dtype != dtype || a->rank > 1 || (n != UINT64_MAX && count != n))
            return NULL;
        return a->data ? a->data : count == 0 ? (const void *)no_elements : NULL;
    }
    return NULL;
}

uint64_t hist_counts_length(const qcal_stat *in)
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
    uint64_t n = hist_counts_length(in);
    const uint64_t *counts = hist_array(in, "counts", QCAL_DTYPE_U64, n), *count = hist_array(in, "count", QCAL_DTYPE_U64, 1);
    const uint64_t *nf = hist_array(in, "nonfinite", QCAL_DTYPE_U64, 2), *abs = hist_array(in, "abs", QCAL_DTYPE_U64, 1);
    const uint64_t *cap = hist_array(in, "capacity", QCAL_DTYPE_U64, 1);
    const uint64_t *zeros = hist_array(in, "zeros", QCAL_DTYPE_U64, 1);
    const int64_t *k = hist_array(in, "k", QCAL_DTYPE_I64, 1), *first = hist_array(in, "first", QCAL_DTYPE_I64, 1);
    const float *e[4] = {hist_array(in, "min", QCAL_DTYPE_F32, 1), hist_array(in, "max", QCAL_DTYPE_F32, 1),
                         hist_array(in, "smin", QCAL_DTYPE_F32, 1), hist_array(in, "smax", QCAL_DTYPE_F32, 1)};
    if (n == UINT64_MAX || !counts || !count || !nf || !abs || !cap || !zeros || !k || !first || !e[0] ||
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
                       *k == fitting_exponent(ext[0], ext[1], s->capacity) && *zeros <= *count;
    if (!consistent)
        return fail(err, QCAL_E_DATA, "histogram state: counts, extrema and bin exponent disagree");
    return fold(s, (int)*k, *first, counts, n, ext, *count, nf[0], nf[1], *zeros, err);
}

const char *const histogram_kinds[] = {"qcal.histogram", NULL};

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

static const qcal_observer *const observers[] = {&histogram, &hist_fixed_observer};
static const qcal_estimator *const estimators[] = {&hist_percentile, &hist_kl, &hist_mse, &hist_l2_search};

static const qcal_plugin plugin = {
    .head = QCAL_HEAD(qcal_plugin),
    .name = "histogram",
    .version = "0.1.0",
    .help = "histograms of activations",
    .n_observers = 2,
    .n_estimators = 4,
    .observers = observers,
    .estimators = estimators,
};

const qcal_plugin *qcal_plugin_entry(const qcal_host *host)
{
    (void)host;
    return &plugin;
}
