/* common.c - helpers the bundled plugins share (see common.h). */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int simd_avx2(void)
{
    const char *off = getenv("QCAL_NO_SIMD");
    if (off && *off)
        return 0;
#if defined(__GNUC__) && defined(__x86_64__)
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

int fail(qcal_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

int product(const uint64_t *dims, int from, int to, uint64_t *out)
{
    uint64_t n = 1;
    for (int d = from; d < to; d++) {
        if (dims[d] && n > UINT64_MAX / dims[d])
            return -1;
        n *= dims[d];
    }
    *out = n;
    return 0;
}

int channel_axis_check(const qcal_tensor *t, qcal_err *err)
{
    if (t->channel_axis == -1)
        return fail(err, QCAL_E_INVAL, "the tensor has no channel axis; use a per-tensor method");
    if (t->channel_axis < 1 || t->channel_axis >= (int32_t)t->rank)
        return fail(err, QCAL_E_INVAL, "channel axis %d is outside 1..%u for a rank-%u tensor",
                    t->channel_axis, t->rank - 1, t->rank);
    uint64_t c = t->shape[t->channel_axis];
    if (c == 0 || c > MAX_CHANNELS)
        return fail(err, QCAL_E_INVAL, "channel axis %d has %llu channels", t->channel_axis,
                    (unsigned long long)c);
    return QCAL_OK;
}

int layout_make(const qcal_tensor *t, int per_channel, layout *g, qcal_err *err)
{
    if (t->rank < 1 || t->rank > QCAL_MAX_RANK)
        return fail(err, QCAL_E_INVAL, "rank %u is outside 1..%d", t->rank, QCAL_MAX_RANK);
    if (product(t->shape, 1, (int)t->rank, &g->row_size) || g->row_size == 0)
        return fail(err, QCAL_E_INVAL, "a sample has no values or too many");
    if (!per_channel) {
        g->outer = 1, g->channels = 1, g->inner = g->row_size;
        return QCAL_OK;
    }
    int rc = channel_axis_check(t, err);
    if (rc)
        return rc;
    int axis = t->channel_axis;
    g->channels = t->shape[axis];
    product(t->shape, 1, axis, &g->outer);
    product(t->shape, axis + 1, (int)t->rank, &g->inner);
    return QCAL_OK;
}

int slab_check(const layout *g, const qcal_slab *slab, qcal_err *err)
{
    if (slab->row_size != g->row_size)
        return fail(err, QCAL_E_INVAL, "slab has %llu values per sample, the tensor %llu",
                    (unsigned long long)slab->row_size, (unsigned long long)g->row_size);
    if (!slab->data && slab->rows)
        return fail(err, QCAL_E_INVAL, "slab has no data");
    return QCAL_OK;
}

/* ---- scanning values --------------------------------------------------------------------- */

/* Extrema of n values all taken as finite (-0 read as +0), and whether they were: the sum of
 * v - v is 0 unless some v is NaN or +-Inf (then lo and hi are left alone). Five operations
 * per vector; min and max are exact, so lanes change nothing in the result. */
static int extrema_tail(const float *x, uint64_t n, float L, float H, float B, float *lo,
                        float *hi)
{
    for (uint64_t i = 0; i < n; i++) {
        float v = x[i] + 0.0f;
        L = v < L ? v : L;
        H = v > H ? v : H;
        B += v - v;
    }
    if (B != 0.0f)
        return 0;
    *lo = L, *hi = H;
    return 1;
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

static float lowest_lane(__m128 v, int max)
{
    float f[4];
    _mm_storeu_ps(f, v);
    float r = f[0];
    for (int k = 1; k < 4; k++)
        r = max ? (f[k] > r ? f[k] : r) : (f[k] < r ? f[k] : r);
    return r;
}

/* Two vectors of eight per step (the general loop is compute-bound on SSE2's four lanes). */
__attribute__((target("avx2"))) static int extrema_avx2(const float *x, uint64_t n, float *lo,
                                                      float *hi)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 l0 = _mm256_set1_ps(*lo), l1 = l0, h0 = _mm256_set1_ps(*hi), h1 = h0;
    __m256 b0 = zero, b1 = zero;
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_add_ps(_mm256_loadu_ps(x + i), zero);
        __m256 v1 = _mm256_add_ps(_mm256_loadu_ps(x + i + 8), zero);
        l0 = _mm256_min_ps(v0, l0), l1 = _mm256_min_ps(v1, l1);
        h0 = _mm256_max_ps(v0, h0), h1 = _mm256_max_ps(v1, h1);
        b0 = _mm256_add_ps(b0, _mm256_sub_ps(v0, v0)), b1 = _mm256_add_ps(b1, _mm256_sub_ps(v1, v1));
    }
    __m256 l = _mm256_min_ps(l0, l1), h = _mm256_max_ps(h0, h1), b = _mm256_add_ps(b0, b1);
    __m128 l4 = _mm_min_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps(l, 1));
    __m128 h4 = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    __m128 b4 = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
    float bad[4];
    _mm_storeu_ps(bad, b4);
    return extrema_tail(x + i, n - i, lowest_lane(l4, 0), lowest_lane(h4, 1),
                        bad[0] + bad[1] + bad[2] + bad[3], lo, hi);
}

/* 1 with the extrema of n finite values; 0 when some value is not finite or the machine
 * lacks AVX2 (scan_nonfinite then does it all: the same results, more slowly). */
static int extrema_if_finite(const float *x, uint64_t n, float *lo, float *hi)
{
    return simd_avx2() && extrema_avx2(x, n, lo, hi);
}
#else
static int extrema_if_finite(const float *x, uint64_t n, float *lo, float *hi)
{
    (void)x, (void)n, (void)lo, (void)hi;
    return 0;
}
#endif

/* Lanes for scan_nonfinite's branch-free loop, which the compiler vectorises. */
#define LANES 16

/* The same with NaN and Inf among the values (rare): branch-free per lane, they are left out
 * of the extrema and counted. */
static void scan_nonfinite(const float *x, uint64_t n, float *lo, float *hi, uint64_t *count,
                           uint64_t nonfinite[2])
{
    float l[LANES], h[LANES];
    uint32_t bad[LANES];
    for (int k = 0; k < LANES; k++)
        l[k] = *lo, h[k] = *hi, bad[k] = 0;
    uint64_t i = 0, n_bad = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int k = 0; k < LANES; k++) {
            float v = x[i + (uint64_t)k] + 0.0f;
            int ok = fabsf(v) <= FLT_MAX; /* false for NaN and +-Inf */
            float a = ok ? v : INFINITY, b = ok ? v : -INFINITY;
            bad[k] += !ok;
            l[k] = a < l[k] ? a : l[k];
            h[k] = b > h[k] ? b : h[k];
        }
        if ((i & 0xfffffu) == 0) /* keep the 32-bit lane counters from overflowing */
            for (int k = 0; k < LANES; k++)
                n_bad += bad[k], bad[k] = 0;
    }
    float L = *lo, H = *hi;
    for (int k = 0; k < LANES; k++) {
        L = l[k] < L ? l[k] : L;
        H = h[k] > H ? h[k] : H;
        n_bad += bad[k];
    }
    for (; i < n; i++) {
        float v = x[i] + 0.0f;
        if (isfinite(v)) {
            L = v < L ? v : L;
            H = v > H ? v : H;
        } else {
            n_bad++;
        }
    }
    if (n_bad) /* rare: tell NaN from Inf in a second look */
        for (uint64_t j = 0; j < n; j++)
            if (!isfinite(x[j]))
                nonfinite[isnan(x[j]) ? 0 : 1]++;
    *lo = L, *hi = H;
    *count += n - n_bad;
}

/* Folds n values into one channel's extrema. -0 is read as +0, so the extrema do not depend
 * on the order in which zeros of both signs arrive. */
void scan_run(const float *x, uint64_t n, float *lo, float *hi, uint64_t *count,
              uint64_t nonfinite[2])
{
    if (extrema_if_finite(x, n, lo, hi))
        *count += n;
    else
        scan_nonfinite(x, n, lo, hi, count, nonfinite);
}

/* ---- notes --------------------------------------------------------------------------------- */

void note_constant(qcal_err *err, double lo, double hi)
{
    if (lo != hi)
        return;
    if (lo == 0)
        snprintf(err->msg, sizeof err->msg, "all-zero tensor: the range is [0, 0] (the scale "
                 "falls back to the smallest positive value)");
    else
        snprintf(err->msg, sizeof err->msg, "constant tensor: every finite value is %.9g", lo);
}

void note_constant_channels(qcal_err *err, uint64_t constant, uint64_t channels)
{
    if (constant)
        snprintf(err->msg, sizeof err->msg, "%llu of %llu channels hold a single value",
                 (unsigned long long)constant, (unsigned long long)channels);
}

void note_add(qcal_err *err, const char *fmt, ...)
{
    size_t used = strlen(err->msg);
    if (used && used + 2 < sizeof err->msg)
        memcpy(err->msg + used, "; ", 3), used += 2;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + used, sizeof err->msg - used, fmt, ap);
    va_end(ap);
}

/* ---- arrays in statistics ---------------------------------------------------------------- */

qcal_array array1(const char *name, uint32_t dtype, uint64_t n, const void *data)
{
    qcal_array a = {name, dtype, 1, {n, 0, 0, 0}, data};
    return a;
}

qcal_array array2(const char *name, uint32_t dtype, uint64_t n, uint64_t m,
                         const void *data)
{
    qcal_array a = {name, dtype, 2, {n, m, 0, 0}, data};
    return a;
}

const qcal_array *find(const qcal_stat *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_arrays; i++)
        if (s->arrays[i].name && !strcmp(s->arrays[i].name, name))
            return &s->arrays[i];
    return NULL;
}

/* The array `name` with the given dtype and shape (rank = number of dims given); NULL with a
 * sentence otherwise. */
const qcal_array *expect(const qcal_stat *s, const char *name, uint32_t dtype,
                                uint32_t rank, uint64_t d0, uint64_t d1, qcal_err *err)
{
    const qcal_array *a = s->arrays || !s->n_arrays ? find(s, name) : NULL;
    if (!a) {
        fail(err, QCAL_E_DATA, "array '%s' is missing", name);
        return NULL;
    }
    int shape_ok = a->rank == rank && a->shape[0] == d0 && (rank < 2 || a->shape[1] == d1);
    if (rank == 1 && d0 == 1 && a->rank == 0)
        shape_ok = 1; /* a scalar is a one-element array */
    if (a->dtype != dtype || !shape_ok) {
        fail(err, QCAL_E_DATA, "array '%s' is not %s[%llu%s] (dtype %u, rank %u, shape[0] %llu)",
             name, dtype == QCAL_DTYPE_F32 ? "f32" : "u64", (unsigned long long)d0,
             rank == 2 ? ", C" : "", a->dtype, a->rank, (unsigned long long)a->shape[0]);
        return NULL;
    }
    if (!a->data && d0 && (rank < 2 || d1)) {
        fail(err, QCAL_E_DATA, "array '%s' has no data", name);
        return NULL;
    }
    return a;
}

int kind_check(const qcal_stat *s, const char *kind, qcal_err *err)
{
    if (!s->kind || strcmp(s->kind, kind) || s->kind_version != 1)
        return fail(err, QCAL_E_KIND, "expected a '%s' v1 state, got '%s' v%u", kind,
                    s->kind ? s->kind : "(null)", s->kind_version);
    return QCAL_OK;
}
