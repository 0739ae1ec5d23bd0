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

/* The sums in four interleaved lanes (fixed order, so reproducible) to shorten the chains
 * of dependent float64 additions; with finite_only, pairs whose x is not finite count as 0. */
static inline void err_sums(qmath_err *acc, const float *x, const float *q, uint64_t n,
                            int finite_only)
{
    enum { LANES = 4 };
    double se[LANES] = {0}, sr[LANES] = {0}, sq[LANES] = {0}, dot[LANES] = {0};
    uint64_t used[LANES] = {0};
    for (uint64_t i = 0; i < n; i++) {
        int lane = (int)(i % LANES), keep = !finite_only || isfinite(x[i]);
        double a = keep ? x[i] : 0.0, b = keep ? q[i] : 0.0, d = a - b;
        se[lane] += d * d, sr[lane] += a * a, sq[lane] += b * b, dot[lane] += a * b;
        used[lane] += (uint64_t)keep;
    }
    for (int l = 0; l < LANES; l++) {
        acc->n += used[l];
        acc->sum_sq_err += se[l], acc->sum_sq_ref += sr[l];
        acc->sum_sq_q += sq[l], acc->dot += dot[l];
    }
}

void qmath_err_add_finite(qmath_err *acc, const float *x, const float *q, uint64_t n)
{
    err_sums(acc, x, q, n, 1);
}

void qmath_err_add(qmath_err *acc, const float *x, const float *q, uint64_t n)
{
    err_sums(acc, x, q, n, 0);
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
