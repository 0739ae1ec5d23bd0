/* qmath.c - quantization math: spec -> grid, range -> scale / zero-point, error metrics */
#include "qmath.h"

#include <float.h>
#include <math.h>

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

/* Fake-quantize and error sums fused, the hot loop of the evaluation pass. Eight lanes (value
 * i goes to lane i mod 8); within a block the products are summed per lane in float32, then
 * each block's lane sums are added to float64 totals in lane order (a block's rounding is
 * ~1e-7 of itself, far below the differences between candidates). The portable, SSE2 and
 * AVX2 forms perform the same operations in the same order, so results do not depend on the
 * machine. A value that is not finite (x - x != 0) counts as 0 and is not counted. */
enum { FQ_LANES = 8, FQ_BLOCK = 32 };

typedef struct fq_grid {
    float inv, scale, zpf, qminf, qmaxf;
} fq_grid;

typedef struct fq_totals {
    double se, sr, sq, dot;
    uint64_t used;
} fq_totals;

typedef void (*fq_block_fn)(const float *x, uint64_t len, const fq_grid *g, fq_totals *t);

static void add_lanes(fq_totals *t, const float *se, const float *sr, const float *sq,
                      const float *dot)
{
    for (int l = 0; l < FQ_LANES; l++)
        t->se += se[l], t->sr += sr[l], t->sq += sq[l], t->dot += dot[l];
}

static void fq_block_scalar(const float *x, uint64_t len, const fq_grid *g, fq_totals *t)
{
    float se[FQ_LANES] = {0}, sr[FQ_LANES] = {0}, sq[FQ_LANES] = {0}, dot[FQ_LANES] = {0};
    for (uint64_t i = 0; i < len; i++) {
        int l = (int)(i % FQ_LANES);
        float xv = x[i], qv = fake_quant_one(xv, g->inv, g->scale, g->zpf, g->qminf, g->qmaxf);
        int keep = xv - xv == 0.0f;
        xv = keep ? xv : 0.0f, qv = keep ? qv : 0.0f;
        float d = xv - qv;
        se[l] += d * d, sr[l] += xv * xv, sq[l] += qv * qv, dot[l] += xv * qv;
        t->used += (uint64_t)keep;
    }
    add_lanes(t, se, sr, sq, dot);
}

#if defined(__SSE2__)
#include <immintrin.h>

/* Set bits of a 4-bit mask (a table: popcount is a library call on baseline x86-64). */
static const uint8_t kept_of_mask[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

/* Four values; max(q, qmin) yields qmin for NaN, as the scalar form. */
#define FQ_STEP_SSE2(xv, se, sr, sq, dot)                                                      \
    do {                                                                                        \
        __m128 r_ = _mm_sub_ps(_mm_add_ps(_mm_mul_ps(xv, inv), magic), magic);                  \
        __m128 qv_ = _mm_mul_ps(_mm_sub_ps(_mm_min_ps(_mm_max_ps(_mm_add_ps(zp, r_), qmin),     \
                                                      qmax), zp), scale);                       \
        __m128 keep_ = _mm_cmpeq_ps(_mm_sub_ps(xv, xv), zero);                                  \
        __m128 x_ = _mm_and_ps(xv, keep_);                                                      \
        qv_ = _mm_and_ps(qv_, keep_);                                                           \
        __m128 d_ = _mm_sub_ps(x_, qv_);                                                        \
        se = _mm_add_ps(se, _mm_mul_ps(d_, d_)), sr = _mm_add_ps(sr, _mm_mul_ps(x_, x_));       \
        sq = _mm_add_ps(sq, _mm_mul_ps(qv_, qv_)), dot = _mm_add_ps(dot, _mm_mul_ps(x_, qv_));  \
        int m_ = _mm_movemask_ps(keep_);                                                        \
        if (m_ != 15) /* rare: a value was not finite */                                        \
            t->used -= (uint64_t)(4 - kept_of_mask[m_]);                                        \
    } while (0)

/* len is a multiple of 8: lanes 0-3 in the *0 registers, 4-7 in the *1 ones. */
static void fq_block_sse2(const float *x, uint64_t len, const fq_grid *g, fq_totals *t)
{
    const __m128 inv = _mm_set1_ps(g->inv), scale = _mm_set1_ps(g->scale), zp = _mm_set1_ps(g->zpf);
    const __m128 qmin = _mm_set1_ps(g->qminf), qmax = _mm_set1_ps(g->qmaxf);
    const __m128 magic = _mm_set1_ps(0x1.8p23f), zero = _mm_setzero_ps();
    __m128 se0 = zero, sr0 = zero, sq0 = zero, dot0 = zero, se1 = zero, sr1 = zero, sq1 = zero, dot1 = zero;
    t->used += len; /* less those found not finite */
    for (uint64_t i = 0; i < len; i += FQ_LANES) {
        __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
        FQ_STEP_SSE2(a, se0, sr0, sq0, dot0);
        FQ_STEP_SSE2(b, se1, sr1, sq1, dot1);
    }
    float se[FQ_LANES], sr[FQ_LANES], sq[FQ_LANES], dot[FQ_LANES];
    _mm_storeu_ps(se, se0), _mm_storeu_ps(se + 4, se1), _mm_storeu_ps(sr, sr0), _mm_storeu_ps(sr + 4, sr1);
    _mm_storeu_ps(sq, sq0), _mm_storeu_ps(sq + 4, sq1), _mm_storeu_ps(dot, dot0), _mm_storeu_ps(dot + 4, dot1);
    add_lanes(t, se, sr, sq, dot);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define QMATH_HAVE_AVX2 1
/* The same on eight lanes at once, for machines with AVX2 (chosen at run time). */
__attribute__((target("avx2"))) static void fq_block_avx2(const float *x, uint64_t len,
                                                          const fq_grid *g, fq_totals *t)
{
    const __m256 inv = _mm256_set1_ps(g->inv), scale = _mm256_set1_ps(g->scale);
    const __m256 zp = _mm256_set1_ps(g->zpf), qmin = _mm256_set1_ps(g->qminf);
    const __m256 qmax = _mm256_set1_ps(g->qmaxf), magic = _mm256_set1_ps(0x1.8p23f);
    const __m256 zero = _mm256_setzero_ps();
    __m256 se = zero, sr = zero, sq = zero, dot = zero;
    t->used += len; /* less those found not finite */
    for (uint64_t i = 0; i < len; i += FQ_LANES) {
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256 r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xv, inv), magic), magic);
        __m256 qf = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(zp, r), qmin), qmax);
        __m256 qv = _mm256_mul_ps(_mm256_sub_ps(qf, zp), scale);
        __m256 keep = _mm256_cmp_ps(_mm256_sub_ps(xv, xv), zero, _CMP_EQ_OQ);
        xv = _mm256_and_ps(xv, keep), qv = _mm256_and_ps(qv, keep);
        __m256 d = _mm256_sub_ps(xv, qv);
        se = _mm256_add_ps(se, _mm256_mul_ps(d, d)), sr = _mm256_add_ps(sr, _mm256_mul_ps(xv, xv));
        sq = _mm256_add_ps(sq, _mm256_mul_ps(qv, qv)), dot = _mm256_add_ps(dot, _mm256_mul_ps(xv, qv));
        int m = _mm256_movemask_ps(keep);
        if (m != 0xff) /* rare: a value was not finite */
            t->used -= (uint64_t)(8 - kept_of_mask[m & 15] - kept_of_mask[m >> 4]);
    }
    float l_se[FQ_LANES], l_sr[FQ_LANES], l_sq[FQ_LANES], l_dot[FQ_LANES];
    _mm256_storeu_ps(l_se, se), _mm256_storeu_ps(l_sr, sr);
    _mm256_storeu_ps(l_sq, sq), _mm256_storeu_ps(l_dot, dot);
    add_lanes(t, l_se, l_sr, l_sq, l_dot);
}
#endif
#endif

static fq_block_fn fq_block_for_this_cpu(void)
{
#if defined(QMATH_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2"))
        return fq_block_avx2;
#endif
#if defined(__SSE2__)
    return fq_block_sse2;
#else
    return fq_block_scalar;
#endif
}

static void fake_quant_err_with(fq_block_fn block, qmath_err *acc, const float *x, uint64_t n,
                                float scale, int64_t zero_point, int64_t qmin, int64_t qmax)
{
    fq_grid g = {1.0f / scale, scale, (float)zero_point, (float)qmin, (float)qmax};
    fq_totals t = {0};
    const uint64_t step = FQ_LANES * FQ_BLOCK;
    uint64_t i = 0;
    for (; i + step <= n; i += step)
        block(x + i, step, &g, &t);
    if (i < n)
        fq_block_scalar(x + i, n - i, &g, &t);
    acc->n += t.used;
    acc->sum_sq_err += t.se, acc->sum_sq_ref += t.sr, acc->sum_sq_q += t.sq, acc->dot += t.dot;
}

void qmath_fake_quant_err(qmath_err *acc, const float *x, uint64_t n, float scale,
                          int64_t zero_point, int64_t qmin, int64_t qmax)
{
    fake_quant_err_with(fq_block_for_this_cpu(), acc, x, n, scale, zero_point, qmin, qmax);
}

void qmath_fake_quant_err_portable(qmath_err *acc, const float *x, uint64_t n, float scale,
                                   int64_t zero_point, int64_t qmin, int64_t qmax)
{
    fake_quant_err_with(fq_block_scalar, acc, x, n, scale, zero_point, qmin, qmax);
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
