/* qmath.c - quantization math: spec -> grid, range -> scale / zero-point, error metrics */
#include "qmath.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Every float32 step below is an assignment to a float, which C11 (with the standard
 * excess-precision rules that -std=c11 selects) rounds to float32 even on x87; no step is an
 * a * b + c that could be contracted into an FMA. */

int qmath_spec(qcal_qspec *out, int bits, uint32_t flags, int axis, qerror *e)
{
    if (bits < 2 || bits > 16)
        return qerror_set(e, QERR_USAGE, "quantization spec: bits must be 2..16, got %d", bits);
    if (flags & ~QCAL_QSPEC_KNOWN_FLAGS)
        return qerror_set(e, QERR_USAGE, "quantization spec: unknown flag bits 0x%x",
                          (unsigned)(flags & ~QCAL_QSPEC_KNOWN_FLAGS));
    if ((flags & QCAL_QSPEC_PER_CHANNEL) && axis < 1)
        return qerror_set(e, QERR_USAGE,
                          "quantization spec: per-channel needs a channel axis >= 1, got %d",
                          axis);
    qcal_qspec s = {0};
    s.bits = (uint32_t)bits;
    s.flags = flags;
    s.axis = (flags & QCAL_QSPEC_PER_CHANNEL) ? axis : -1;
    if (flags & QCAL_QSPEC_SIGNED) {
        s.qmin = -((int64_t)1 << (bits - 1));
        s.qmax = ((int64_t)1 << (bits - 1)) - 1;
        if (flags & QCAL_QSPEC_NARROW)
            s.qmin += 1;
    } else {
        s.qmin = 0;
        s.qmax = ((int64_t)1 << bits) - 1;
        if (flags & QCAL_QSPEC_NARROW)
            s.qmax -= 1;
    }
    *out = s;
    return 0;
}

static int check_range(double lo, double hi, qerror *e)
{
    if (!isfinite(lo) || !isfinite(hi))
        return qerror_set(e, QERR_DATA, "range [%g, %g] is not finite", lo, hi);
    if (lo > hi)
        return qerror_set(e, QERR_DATA, "range [%.9g, %.9g] is inverted (min > max)", lo, hi);
    if (fabs(lo) > FLT_MAX || fabs(hi) > FLT_MAX)
        return qerror_set(e, QERR_DATA, "range [%g, %g] does not fit in float32", lo, hi);
    return 0;
}

static int check_spec(const qcal_qspec *spec, qerror *e)
{
    if (spec->bits < 2 || spec->bits > 16 || spec->qmin >= spec->qmax)
        return qerror_set(e, QERR_SOFTWARE, "quantization spec: bad grid (bits %u, [%lld, %lld])",
                          (unsigned)spec->bits, (long long)spec->qmin, (long long)spec->qmax);
    return 0;
}

int qmath_qparams(const qcal_qspec *spec, double lo, double hi, double *scale,
                  int64_t *zero_point, qerror *e)
{
    if (check_spec(spec, e) || check_range(lo, hi, e))
        return -1;
    float flo = (float)lo, fhi = (float)hi; /* torch keeps min_val / max_val in float32 */
    float neg = flo < 0.0f ? flo : 0.0f;
    float pos = fhi > 0.0f ? fhi : 0.0f;
    float s;
    if (spec->flags & QCAL_QSPEC_SYMMETRIC) {
        float amax = -neg > pos ? -neg : pos;
        float half = (float)((double)(spec->qmax - spec->qmin) / 2.0);
        s = amax / half;
    } else {
        float width = pos - neg;
        s = width / (float)(spec->qmax - spec->qmin);
    }
    if (!isfinite(s))
        return qerror_set(e, QERR_DATA, "range [%g, %g] is too wide for a float32 scale", lo, hi);
    if (s < FLT_EPSILON)
        s = FLT_EPSILON;
    int64_t zp;
    if (!(spec->flags & QCAL_QSPEC_SYMMETRIC)) {
        float steps = neg / s;
        zp = spec->qmin - (int64_t)nearbyintf(steps); /* half to even, as torch.round */
        zp = zp < spec->qmin ? spec->qmin : zp > spec->qmax ? spec->qmax : zp;
    } else if (spec->flags & QCAL_QSPEC_SIGNED) {
        zp = 0;
    } else {
        zp = (spec->flags & QCAL_QSPEC_NARROW) /* centred: torch's (qmin + qmax) // 2 */
                 ? (spec->qmin + spec->qmax) / 2
                 : spec->qmin + ((int64_t)1 << (spec->bits - 1)); /* torch's 128 for quint8 */
    }
    *scale = s;
    *zero_point = zp;
    return 0;
}

double qmath_threshold(double lo, double hi)
{
    double a = fabs(lo), b = fabs(hi);
    return a > b ? a : b;
}

/* One value on a grid given in float: qminf <= zpf <= qmaxf are integers below 2^24 in
 * magnitude, so every step below is exact where torch's int64 arithmetic is. Rounding adds
 * and removes 1.5 * 2^23, which rounds half to even for |prod| < 2^22; larger products
 * stay larger than any grid of <= 16 bits and clamp the same way. Written with compares and
 * no calls so that the loop over many values vectorizes. */
static inline float fake_quant_one(float x, float inv, float scale, float zpf, float qminf,
                                   float qmaxf)
{
    const float magic = 0x1.8p23f;
    float prod = x * inv;
    float rounded = (prod + magic) - magic;
    float qf = zpf + rounded;
    qf = qf >= qminf ? qf : qminf; /* NaN -> qmin */
    qf = qf <= qmaxf ? qf : qmaxf;
    return (qf - zpf) * scale;
}

float qmath_fake_quant(float x, float scale, int64_t zero_point, int64_t qmin, int64_t qmax)
{
    return fake_quant_one(x, 1.0f / scale, scale, (float)zero_point, (float)qmin, (float)qmax);
}

void qmath_fake_quant_n(const float *x, float *out, uint64_t n, float scale, int64_t zero_point,
                        int64_t qmin, int64_t qmax)
{
    float inv = 1.0f / scale, zpf = (float)zero_point, qminf = (float)qmin, qmaxf = (float)qmax;
    for (uint64_t i = 0; i < n; i++)
        out[i] = fake_quant_one(x[i], inv, scale, zpf, qminf, qmaxf);
}

/* Fake-quantize and error sums fused, the hot loop of the evaluation pass, in two steps:
 * qmath_clean_run once per run of values (NaN and Inf become 0, which every grid reproduces
 * exactly, so they add nothing; the count, sum x^2 and each block's extrema are the same for
 * every grid), then qmath_grid_err per grid.
 * Per value the kernel takes the step count r = round(clamp(x / scale)), torch's q = r scale
 * (float32) and e = x - q, and sums e^2, r^2 and x q; sum q^2 is scale^2 sum r^2, formed in
 * float64 at the end (the sums of r^2 are integers, exact in float32 lanes for grids of up to
 * 10 bits, and exactly 0 when every q is). sum x q is summed itself: every x q >= 0 (q has
 * x's sign or is 0), so its sum cannot cancel, where (sum x^2 + sum q^2 - sum e^2) / 2 lost
 * most of its digits when clipping made sum e^2 nearly sum x^2 (cosines 3e-4 off, and mix
 * kept the wrong candidate). A block whose values all lie inside the grid (its extrema say
 * so) skips the clamp: the same numbers, two operations fewer.
 * Magnitudes float32 squares cannot hold (a block with |x| above 2^50: sums of 16 squares
 * overflow near 2^63; below 2^-40 they underflow) go through a scalar form that sums in
 * float64 (the same r, q and e): rare in networks, exact where the fast form is not.
 * Within a block of FQ_SPAN values the products are summed per lane in float32 (value i to
 * lane i mod the lane count), then each block's lane sums are added to float64 totals in lane
 * order (a block's rounding is ~1e-7 of itself, far below the differences between
 * candidates). The grid sums have 16 lanes (two AVX2 vectors: the additions' latency bounded
 * the loop with one) and, on CPUs with FMA, accumulate with fused multiply-adds; elsewhere
 * with a multiply and an add. A scalar form makes the same operations in the same order, so
 * the SIMD forms are tested bit for bit against it; results agree across machines to float32
 * rounding, exactly among FMA ones. */
enum { FQ_LANES = 8, FQ_GRID_LANES = 16, FQ_SPAN = QMATH_CLEAN_BLOCK };

/* A grid as the kernel uses it: the step count is clamped to [lo, hi] = [qmin - zp, qmax - zp]
 * before rounding, which gives fake_quant_one's value for every finite x (rounding is monotone
 * and keeps the integer bounds) with fewer operations. */
typedef struct fq_grid {
    float inv, scale, lo, hi;
} fq_grid;

/* Per-lane float64 sums over the blocks of one call: sum e^2, sum r^2, sum x q. */
typedef struct fq_totals {
    double se[FQ_GRID_LANES], rr[FQ_GRID_LANES], xq[FQ_GRID_LANES];
} fq_totals;

typedef void (*fq_block_fn)(const float *x, uint64_t len, const fq_grid *g, fq_totals *t);
typedef uint64_t (*clean_block_fn)(const float *x, uint64_t len, float *out, double *sum_sq,
                                   float *extrema); /* sum_sq: FQ_LANES float64 lanes */

/* The forms of the comparisons are those of SSE's max and min (the second operand on ties),
 * so that a -0 takes the same path everywhere. */
static inline float grid_steps(float x, const fq_grid *g)
{
    const float magic = 0x1.8p23f; /* |p| <= 2^16 here: adding and removing rounds half to even */
    float p = x * g->inv;
    p = p > g->lo ? p : g->lo;
    p = p < g->hi ? p : g->hi;
    return (p + magic) - magic;
}

/* A block's float32 lane sums join the float64 lane sums, lane by lane: no chain of dependent
 * additions per block (adding 48 lanes into three totals one after the other took longer than
 * the block itself), and the same numbers whatever the vector width. */
static void add_lanes(double *total, const float *lane, int lanes)
{
    for (int l = 0; l < lanes; l++)
        total[l] += lane[l];
}

/* The lanes' sum, in lane order, once per call. */
static double lane_total(const double *lane, int lanes)
{
    double total = 0;
    for (int l = 0; l < lanes; l++)
        total += lane[l];
    return total;
}

static uint64_t clean_block_scalar(const float *x, uint64_t len, float *out, double *sum_sq,
                                   float *extrema)
{
    float sr[FQ_LANES] = {0}, lo = INFINITY, hi = -INFINITY;
    uint64_t used = 0;
    for (uint64_t i = 0; i < len; i++) {
        float v = x[i];
        int keep = v - v == 0.0f;
        v = keep ? v : 0.0f;
        out[i] = v;
        sr[i % FQ_LANES] += v * v;
        used += (uint64_t)keep;
        lo = v < lo ? v : lo, hi = v > hi ? v : hi;
    }
    add_lanes(sum_sq, sr, FQ_LANES);
    extrema[0] = lo, extrema[1] = hi;
    return used;
}

/* The scalar grid sums, with the accumulation of the SIMD form they stand for. */
static void grid_block_scalar(const float *x, uint64_t len, const fq_grid *g, fq_totals *t,
                              int fused)
{
    float se[FQ_GRID_LANES] = {0}, rr[FQ_GRID_LANES] = {0}, xq[FQ_GRID_LANES] = {0};
    for (uint64_t i = 0; i < len; i++) {
        int l = (int)(i % FQ_GRID_LANES);
        float xv = x[i], r = grid_steps(xv, g), q = r * g->scale, e = xv - q;
        if (fused) {
            se[l] = fmaf(e, e, se[l]), rr[l] = fmaf(r, r, rr[l]), xq[l] = fmaf(xv, q, xq[l]);
        } else {
            float ee = e * e, rrv = r * r, xqv = xv * q; /* each rounded: no contraction */
            se[l] += ee, rr[l] += rrv, xq[l] += xqv;
        }
    }
    add_lanes(t->se, se, FQ_GRID_LANES), add_lanes(t->rr, rr, FQ_GRID_LANES);
    add_lanes(t->xq, xq, FQ_GRID_LANES);
}

/* The same steps with float64 sums, for magnitudes whose float32 squares overflow or
 * underflow (see above); value i still goes to lane i mod the lane count. */
static void grid_block_wide(const float *x, uint64_t len, const fq_grid *g, fq_totals *t)
{
    for (uint64_t i = 0; i < len; i++) {
        int l = (int)(i % FQ_GRID_LANES);
        float xv = x[i], r = grid_steps(xv, g), q = r * g->scale, e = xv - q;
        t->se[l] += (double)e * e, t->rr[l] += (double)r * r, t->xq[l] += (double)xv * q;
    }
}

static void fq_block_scalar(const float *x, uint64_t len, const fq_grid *g, fq_totals *t)
{
    grid_block_scalar(x, len, g, t, 0);
}

static void fq_block_scalar_fused(const float *x, uint64_t len, const fq_grid *g, fq_totals *t)
{
    grid_block_scalar(x, len, g, t, 1);
}

/* The lanes of extrema vectors into extrema[0] (min) and extrema[1] (max). */
static void store_extrema(const float *lo, const float *hi, int lanes, float *extrema)
{
    float mn = lo[0], mx = hi[0];
    for (int l = 1; l < lanes; l++)
        mn = lo[l] < mn ? lo[l] : mn, mx = hi[l] > mx ? hi[l] : mx;
    extrema[0] = mn, extrema[1] = mx;
}

#if defined(__SSE2__)
#include <immintrin.h>

/* Set bits of a 4-bit mask (a table: popcount is a library call on baseline x86-64). */
static const uint8_t kept_of_mask[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

/* len is a multiple of 8: lanes 0-3 in the *0 registers, 4-7 in the *1 ones. */
static uint64_t clean_block_sse2(const float *x, uint64_t len, float *out, double *sum_sq,
                                 float *extrema)
{
    const __m128 zero = _mm_setzero_ps();
    __m128 sr0 = zero, sr1 = zero, lo = _mm_set1_ps(INFINITY), hi = _mm_set1_ps(-INFINITY);
    uint64_t used = 0;
    for (uint64_t i = 0; i < len; i += FQ_LANES) {
        __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
        __m128 ka = _mm_cmpeq_ps(_mm_sub_ps(a, a), zero), kb = _mm_cmpeq_ps(_mm_sub_ps(b, b), zero);
        a = _mm_and_ps(a, ka), b = _mm_and_ps(b, kb);
        _mm_storeu_ps(out + i, a), _mm_storeu_ps(out + i + 4, b);
        sr0 = _mm_add_ps(sr0, _mm_mul_ps(a, a)), sr1 = _mm_add_ps(sr1, _mm_mul_ps(b, b));
        lo = _mm_min_ps(lo, _mm_min_ps(a, b)), hi = _mm_max_ps(hi, _mm_max_ps(a, b));
        used += kept_of_mask[_mm_movemask_ps(ka)] + kept_of_mask[_mm_movemask_ps(kb)];
    }
    float lane[FQ_LANES], l_lo[4], l_hi[4];
    _mm_storeu_ps(lane, sr0), _mm_storeu_ps(lane + 4, sr1);
    add_lanes(sum_sq, lane, FQ_LANES);
    _mm_storeu_ps(l_lo, lo), _mm_storeu_ps(l_hi, hi);
    store_extrema(l_lo, l_hi, 4, extrema);
    return used;
}

/* Sixteen lanes in four vectors of four: s[k] holds lanes 4k .. 4k + 3. */
static void fq_block_sse2(const float *x, uint64_t len, const fq_grid *g, fq_totals *t)
{
    const __m128 inv = _mm_set1_ps(g->inv), scale = _mm_set1_ps(g->scale);
    const __m128 lo = _mm_set1_ps(g->lo), hi = _mm_set1_ps(g->hi);
    const __m128 magic = _mm_set1_ps(0x1.8p23f);
    __m128 se[4], rr[4], xq[4];
    for (int k = 0; k < 4; k++)
        se[k] = rr[k] = xq[k] = _mm_setzero_ps();
    for (uint64_t i = 0; i < len; i += FQ_GRID_LANES)
        for (int k = 0; k < 4; k++) {
            __m128 xv = _mm_loadu_ps(x + i + 4 * k);
            __m128 p = _mm_min_ps(_mm_max_ps(_mm_mul_ps(xv, inv), lo), hi);
            __m128 r = _mm_sub_ps(_mm_add_ps(p, magic), magic);
            __m128 q = _mm_mul_ps(r, scale), e = _mm_sub_ps(xv, q);
            se[k] = _mm_add_ps(se[k], _mm_mul_ps(e, e)), rr[k] = _mm_add_ps(rr[k], _mm_mul_ps(r, r));
            xq[k] = _mm_add_ps(xq[k], _mm_mul_ps(xv, q));
        }
    float l_se[FQ_GRID_LANES], l_rr[FQ_GRID_LANES], l_xq[FQ_GRID_LANES];
    for (int k = 0; k < 4; k++) {
        _mm_storeu_ps(l_se + 4 * k, se[k]), _mm_storeu_ps(l_rr + 4 * k, rr[k]);
        _mm_storeu_ps(l_xq + 4 * k, xq[k]);
    }
    add_lanes(t->se, l_se, FQ_GRID_LANES), add_lanes(t->rr, l_rr, FQ_GRID_LANES);
    add_lanes(t->xq, l_xq, FQ_GRID_LANES);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define QMATH_HAVE_AVX2 1
/* AVX2 forms (chosen at run time); the clamped step count is below 2^16, where the rounding
 * instruction and the magic constant agree. */
__attribute__((target("avx2"))) static uint64_t clean_block_avx2(const float *x, uint64_t len,
                                                                 float *out, double *sum_sq,
                                                                 float *extrema)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 sr = zero, lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY);
    uint64_t used = 0;
    for (uint64_t i = 0; i < len; i += FQ_LANES) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 keep = _mm256_cmp_ps(_mm256_sub_ps(v, v), zero, _CMP_EQ_OQ);
        v = _mm256_and_ps(v, keep);
        _mm256_storeu_ps(out + i, v);
        sr = _mm256_add_ps(sr, _mm256_mul_ps(v, v));
        lo = _mm256_min_ps(lo, v), hi = _mm256_max_ps(hi, v);
        int m = _mm256_movemask_ps(keep);
        used += kept_of_mask[m & 15] + kept_of_mask[m >> 4];
    }
    float lane[FQ_LANES], l_lo[FQ_LANES], l_hi[FQ_LANES];
    _mm256_storeu_ps(lane, sr);
    add_lanes(sum_sq, lane, FQ_LANES);
    _mm256_storeu_ps(l_lo, lo), _mm256_storeu_ps(l_hi, hi);
    store_extrema(l_lo, l_hi, FQ_LANES, extrema);
    return used;
}

/* One vector of eight values into its lanes' sums; `clamp` is a constant of each caller. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
fq_step_avx2(__m256 xv, const fq_grid *g, int clamp, __m256 *se, __m256 *rr, __m256 *xq)
{
    __m256 p = _mm256_mul_ps(xv, _mm256_set1_ps(g->inv));
    if (clamp)
        p = _mm256_min_ps(_mm256_max_ps(p, _mm256_set1_ps(g->lo)), _mm256_set1_ps(g->hi));
    __m256 r = _mm256_round_ps(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 q = _mm256_mul_ps(r, _mm256_set1_ps(g->scale)), e = _mm256_sub_ps(xv, q);
    *se = _mm256_fmadd_ps(e, e, *se), *rr = _mm256_fmadd_ps(r, r, *rr);
    *xq = _mm256_fmadd_ps(xv, q, *xq);
}

/* Lanes 0-7 in the *0 registers, 8-15 in the *1 ones. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
fq_avx2(const float *x, uint64_t len, const fq_grid *g, fq_totals *t, int clamp)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 se0 = zero, rr0 = zero, xq0 = zero, se1 = zero, rr1 = zero, xq1 = zero;
    for (uint64_t i = 0; i < len; i += FQ_GRID_LANES) {
        fq_step_avx2(_mm256_loadu_ps(x + i), g, clamp, &se0, &rr0, &xq0);
        fq_step_avx2(_mm256_loadu_ps(x + i + 8), g, clamp, &se1, &rr1, &xq1);
    }
    float l_se[FQ_GRID_LANES], l_rr[FQ_GRID_LANES], l_xq[FQ_GRID_LANES];
    _mm256_storeu_ps(l_se, se0), _mm256_storeu_ps(l_se + 8, se1);
    _mm256_storeu_ps(l_rr, rr0), _mm256_storeu_ps(l_rr + 8, rr1);
    _mm256_storeu_ps(l_xq, xq0), _mm256_storeu_ps(l_xq + 8, xq1);
    add_lanes(t->se, l_se, FQ_GRID_LANES), add_lanes(t->rr, l_rr, FQ_GRID_LANES);
    add_lanes(t->xq, l_xq, FQ_GRID_LANES);
}

__attribute__((target("avx2,fma"))) static void fq_block_avx2(const float *x, uint64_t len,
                                                              const fq_grid *g, fq_totals *t)
{
    fq_avx2(x, len, g, t, 1);
}

__attribute__((target("avx2,fma"))) static void fq_inside_avx2(const float *x, uint64_t len,
                                                               const fq_grid *g, fq_totals *t)
{
    fq_avx2(x, len, g, t, 0);
}
#endif
#endif

typedef struct fq_kernels {
    clean_block_fn clean;
    fq_block_fn block, inside, tail; /* whole blocks of FQ_SPAN (any; inside the grid); the
                                        rest (its scalar form) */
} fq_kernels;

static int have_avx2_fma(void)
{
#if defined(QMATH_HAVE_AVX2)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static fq_kernels kernels_for_this_cpu(void)
{
#if defined(QMATH_HAVE_AVX2)
    if (have_avx2_fma())
        return (fq_kernels){clean_block_avx2, fq_block_avx2, fq_inside_avx2, fq_block_scalar_fused};
#endif
#if defined(__SSE2__)
    return (fq_kernels){clean_block_sse2, fq_block_sse2, fq_block_sse2, fq_block_scalar};
#else
    return (fq_kernels){clean_block_scalar, fq_block_scalar, fq_block_scalar, fq_block_scalar};
#endif
}

/* The scalar forms of what this CPU runs. */
static fq_kernels portable_kernels(void)
{
    fq_block_fn block = have_avx2_fma() ? fq_block_scalar_fused : fq_block_scalar;
    return (fq_kernels){clean_block_scalar, block, block, block};
}

/* Whether magnitudes up to m need float64 sums of squares (see the kernel's comment). */
static int too_wide(float m)
{
    return m > 0x1p50f || (m > 0 && m < 0x1p-40f);
}

static float largest_magnitude(const float *extrema)
{
    return fabsf(extrema[0]) > fabsf(extrema[1]) ? fabsf(extrema[0]) : fabsf(extrema[1]);
}

/* One block cleaned by `clean`, its sum of squares in float64 when its magnitudes need it. */
static uint64_t clean_block_with(clean_block_fn clean, const float *x, uint64_t len,
                                 float *out, double *lanes, float *extrema)
{
    double block[FQ_LANES] = {0};
    uint64_t used = clean(x, len, out, block, extrema);
    if (too_wide(largest_magnitude(extrema)))
        for (uint64_t i = 0; i < len; i++)
            lanes[i % FQ_LANES] += (double)out[i] * out[i];
    else
        for (int l = 0; l < FQ_LANES; l++)
            lanes[l] += block[l];
    return used;
}

/* Whole blocks of FQ_SPAN values with the fast form; the rest with the scalar one. */
static uint64_t clean_with(clean_block_fn clean, const float *x, uint64_t n, float *out,
                           float *extrema, double *sum_sq)
{
    uint64_t i = 0, used = 0;
    double lanes[FQ_LANES] = {0};
    for (; i + FQ_SPAN <= n; i += FQ_SPAN)
        used += clean_block_with(clean, x + i, FQ_SPAN, out + i, lanes, extrema + 2 * (i / FQ_SPAN));
    if (i < n)
        used += clean_block_with(clean_block_scalar, x + i, n - i, out + i, lanes,
                                 extrema + 2 * (i / FQ_SPAN));
    *sum_sq += lane_total(lanes, FQ_LANES);
    return used;
}

/* Whether the FQ_SPAN values from offset i all lie inside the grid: the extrema of the (one
 * or two) cleaned blocks they overlap, scaled as the kernel scales (monotone), within it. */
static int span_inside(const float *extrema, uint64_t i, const fq_grid *g)
{
    uint64_t b0 = i / FQ_SPAN, b1 = (i + FQ_SPAN - 1) / FQ_SPAN;
    float lo = extrema[2 * b0] < extrema[2 * b1] ? extrema[2 * b0] : extrema[2 * b1];
    float hi = extrema[2 * b0 + 1] > extrema[2 * b1 + 1] ? extrema[2 * b0 + 1] : extrema[2 * b1 + 1];
    return lo * g->inv >= g->lo && hi * g->inv <= g->hi;
}

/* The largest magnitude of the values from offset i to i + len (the blocks they overlap). */
static float span_magnitude(const float *extrema, uint64_t i, uint64_t len)
{
    float m = 0;
    for (uint64_t b = i / FQ_SPAN; b <= (i + len - 1) / FQ_SPAN; b++) {
        float v = largest_magnitude(extrema + 2 * b);
        m = v > m ? v : m;
    }
    return m;
}

static void grid_err_with(fq_kernels k, qmath_err *acc, const float *clean,
                          const float *extrema, uint64_t at, uint64_t n, const fq_grid *g)
{
    fq_totals t;
    memset(&t, 0, sizeof t);
    uint64_t i = at, end = at + n;
    for (; i + FQ_SPAN <= end; i += FQ_SPAN) {
        fq_block_fn block = too_wide(span_magnitude(extrema, i, FQ_SPAN)) ? grid_block_wide
                            : span_inside(extrema, i, g)                 ? k.inside
                                                                         : k.block;
        block(clean + i, FQ_SPAN, g, &t);
    }
    if (i < end)
        (too_wide(span_magnitude(extrema, i, end - i)) ? grid_block_wide : k.tail)(clean + i, end - i, g, &t);
    double scale = g->scale;
    acc->sum_sq_err += lane_total(t.se, FQ_GRID_LANES);
    acc->sum_sq_q += scale * scale * lane_total(t.rr, FQ_GRID_LANES);
    acc->dot += lane_total(t.xq, FQ_GRID_LANES);
}

static fq_grid grid_of(float scale, int64_t zero_point, int64_t qmin, int64_t qmax)
{
    return (fq_grid){1.0f / scale, scale, (float)(qmin - zero_point), (float)(qmax - zero_point)};
}

uint64_t qmath_clean_run(const float *x, uint64_t n, float *clean, float *extrema,
                         double *sum_sq_ref)
{
    return clean_with(kernels_for_this_cpu().clean, x, n, clean, extrema, sum_sq_ref);
}


void qmath_grid_err(qmath_err *acc, const float *clean, const float *extrema, uint64_t at,
                    uint64_t n, float scale, int64_t zero_point, int64_t qmin, int64_t qmax)
{
    fq_grid g = grid_of(scale, zero_point, qmin, qmax);
    grid_err_with(kernels_for_this_cpu(), acc, clean, extrema, at, n, &g);
}

/* Both steps over runs of a buffer's length. */
static void fake_quant_err_with(fq_kernels k, qmath_err *acc, const float *x, uint64_t n,
                                float scale, int64_t zero_point, int64_t qmin, int64_t qmax)
{
    enum { RUN = 16 * FQ_SPAN };
    float clean[RUN], extrema[2 * (RUN / FQ_SPAN)];
    fq_grid g = grid_of(scale, zero_point, qmin, qmax);
    qmath_err part = {0};
    for (uint64_t at = 0; at < n; at += RUN) {
        uint64_t len = n - at < RUN ? n - at : RUN;
        part.n += clean_with(k.clean, x + at, len, clean, extrema, &part.sum_sq_ref);
        grid_err_with(k, &part, clean, extrema, 0, len, &g);
    }
    qmath_err_merge(acc, &part);
}

void qmath_fake_quant_err(qmath_err *acc, const float *x, uint64_t n, float scale,
                          int64_t zero_point, int64_t qmin, int64_t qmax)
{
    fake_quant_err_with(kernels_for_this_cpu(), acc, x, n, scale, zero_point, qmin, qmax);
}

void qmath_fake_quant_err_portable(qmath_err *acc, const float *x, uint64_t n, float scale,
                                   int64_t zero_point, int64_t qmin, int64_t qmax)
{
    fake_quant_err_with(portable_kernels(), acc, x, n, scale, zero_point, qmin, qmax);
}

/* Four interleaved lanes (fixed order, so reproducible) shorten the chains of dependent
 * float64 additions. */
void qmath_err_add(qmath_err *acc, const float *x, const float *q, uint64_t n)
{
    double se[4] = {0}, sr[4] = {0}, sq[4] = {0}, dot[4] = {0};
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) {
            double a = x[i + l], b = q[i + l], d = a - b;
            se[l] += d * d, sr[l] += a * a, sq[l] += b * b, dot[l] += a * b;
        }
    for (int l = 0; i < n; i++, l++) {
        double a = x[i], b = q[i], d = a - b;
        se[l] += d * d, sr[l] += a * a, sq[l] += b * b, dot[l] += a * b;
    }
    acc->n += n;
    for (int l = 0; l < 4; l++) {
        acc->sum_sq_err += se[l], acc->sum_sq_ref += sr[l];
        acc->sum_sq_q += sq[l], acc->dot += dot[l];
    }
}

void qmath_err_merge(qmath_err *into, const qmath_err *from)
{
    into->n += from->n;
    into->sum_sq_err += from->sum_sq_err;
    into->sum_sq_ref += from->sum_sq_ref;
    into->sum_sq_q += from->sum_sq_q;
    into->dot += from->dot;
}

double qmath_mse(const qmath_err *acc)
{
    return acc->n ? acc->sum_sq_err / (double)acc->n : 0.0;
}

double qmath_sqnr_db(const qmath_err *acc)
{
    if (acc->sum_sq_err == 0.0)
        return INFINITY; /* exact reproduction, including of an all-zero signal */
    if (acc->sum_sq_ref == 0.0)
        return -INFINITY; /* nothing but noise */
    return 10.0 * log10(acc->sum_sq_ref / acc->sum_sq_err);
}

double qmath_cosine(const qmath_err *acc)
{
    int ref_zero = acc->sum_sq_ref == 0.0, q_zero = acc->sum_sq_q == 0.0;
    if (ref_zero && q_zero)
        return 1.0;
    if (ref_zero || q_zero)
        return 0.0;
    double c = acc->dot / (sqrt(acc->sum_sq_ref) * sqrt(acc->sum_sq_q)); /* no overflow */
    return c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;
}
