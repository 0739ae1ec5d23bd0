/* test_qmath.c - quantization grids, torch's qparams, fake-quantize and error metrics */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "qmath.h"
#include "xsum.h"
#include "fixtures.h"
#include "references.h"

#define S QCAL_QSPEC_SIGNED
#define SYM QCAL_QSPEC_SYMMETRIC
#define NAR QCAL_QSPEC_NARROW
#define PC QCAL_QSPEC_PER_CHANNEL

static qcal_qspec spec_of(int bits, uint32_t flags)
{
    qcal_qspec s;
    qerror e = {0};
    cr_assert_eq(qmath_spec(&s, bits, flags, (flags & PC) ? 1 : -1, &e), 0, "%s", e.msg);
    return s;
}

/* Expected (scale, zero_point) for a range; scales are float32 values written by hand. */
static void expect_qp(int bits, uint32_t flags, double lo, double hi, double scale, int64_t zp)
{
    qcal_qspec s = spec_of(bits, flags);
    double got_s = -1;
    int64_t got_zp = -999;
    qerror e = {0};
    cr_assert_eq(qmath_qparams(&s, lo, hi, &got_s, &got_zp, &e), 0, "%s", e.msg);
    cr_expect_eq(got_s, scale, "bits %d flags %u [%g, %g]: scale %a, expected %a", bits,
                 (unsigned)flags, lo, hi, got_s, scale);
    cr_expect_eq(got_zp, zp, "bits %d flags %u [%g, %g]: zero-point %lld, expected %lld", bits,
                 (unsigned)flags, lo, hi, (long long)got_zp, (long long)zp);
}

/* ---- grids ---------------------------------------------------------------------------- */

static void expect_grid(int bits, uint32_t flags, int64_t qmin, int64_t qmax)
{
    qcal_qspec s = spec_of(bits, flags);
    cr_expect_eq(s.qmin, qmin, "bits %d flags %u: qmin %lld", bits, (unsigned)flags,
                 (long long)s.qmin);
    cr_expect_eq(s.qmax, qmax, "bits %d flags %u: qmax %lld", bits, (unsigned)flags,
                 (long long)s.qmax);
    cr_expect_eq(s.bits, (uint32_t)bits);
    cr_expect_eq(s.flags, flags);
    cr_expect_eq(s.reserved, 0u);
}

Test(spec, grids)
{
    expect_grid(8, S, -128, 127);
    expect_grid(8, S | NAR, -127, 127);
    expect_grid(8, 0, 0, 255);
    expect_grid(8, NAR, 0, 254);
    expect_grid(4, S, -8, 7);
    expect_grid(4, 0, 0, 15);
    expect_grid(2, S, -2, 1);
    expect_grid(16, S, -32768, 32767);
    expect_grid(16, 0, 0, 65535);
    expect_grid(8, S | SYM | PC, -128, 127);
}

Test(spec, axis)
{
    qcal_qspec s;
    cr_assert_eq(qmath_spec(&s, 8, S | PC, 3, NULL), 0);
    cr_expect_eq(s.axis, 3);
    cr_assert_eq(qmath_spec(&s, 8, S, 5, NULL), 0);
    cr_expect_eq(s.axis, -1, "a per-tensor spec has no axis");
}

static void expect_spec_refused(int bits, uint32_t flags, int axis, const char *words)
{
    qcal_qspec s;
    qerror e = {0};
    cr_expect_eq(qmath_spec(&s, bits, flags, axis, &e), -1, "bits %d flags %u axis %d", bits,
                 (unsigned)flags, axis);
    cr_expect_eq(e.code, QERR_USAGE);
    cr_expect(strstr(e.msg, words), "message '%s' lacks '%s'", e.msg, words);
}

Test(spec, refused)
{
    expect_spec_refused(1, S, -1, "bits must be 2..16, got 1");
    expect_spec_refused(17, 0, -1, "bits must be 2..16, got 17");
    expect_spec_refused(8, 16u, -1, "unknown flag bits 0x10");
    expect_spec_refused(8, S | PC, 0, "channel axis >= 1, got 0");
    expect_spec_refused(8, S | PC, -1, "channel axis");
}

/* ---- qparams: hand-computed torch values ------------------------------------------------- */

Test(qparams, uint8_affine)
{
    /* 4.5 / 255 = 0.0176470588..; nearest float32 0x1.212122p-6 = 0.017647059634.
     * -1.5 / that = -84.9999924 -> round -85 -> zp 85 (torch measured (0.0176, 85)). */
    expect_qp(8, 0, -1.5, 3.0, 0x1.212122p-6, 85);
}

Test(qparams, constant_negative)
{
    /* [-3.25, -3.25] widens to [-3.25, 0]: scale = fl(3.25 / 255) = 0x1.a1a1a2p-7; -3.25 / scale
     * rounds to exactly -255.0 in float32, so zp lands on the grid's top: 255 for uint8,
     * -128 + 255 = 127 for int8. */
    expect_qp(8, 0, -3.25, -3.25, 0x1.a1a1a2p-7, 255);
    expect_qp(8, S, -3.25, -3.25, 0x1.a1a1a2p-7, 127);
}

Test(qparams, all_zero)
{
    expect_qp(8, 0, 0.0, 0.0, FLT_EPSILON, 0);
    expect_qp(8, S, 0.0, 0.0, FLT_EPSILON, -128);
    expect_qp(8, S | SYM, 0.0, 0.0, 0x1p-23, 0);
    cr_expect_eq((double)FLT_EPSILON, 1.1920928955078125e-07);
}

Test(qparams, symmetric)
{
    /* 1 / 127.5 = 0.00784313725..; float32 0x1.010102p-7. */
    expect_qp(8, S | SYM, -1.0, 1.0, 0x1.010102p-7, 0);
    /* narrow: 1 / 127 = 0.0078740157..; float32 0x1.020408p-7 */
    expect_qp(8, S | SYM | NAR, -1.0, 1.0, 0x1.020408p-7, 0);
    /* quint8 symmetric: same scale as int8, zero-point 128 (torch) */
    expect_qp(8, SYM, -1.0, 1.0, 0x1.010102p-7, 128);
    /* amax comes from the larger side: [-0.5, 2] -> 2 / 7.5 = 0.2666..; 0x1.111112p-2 */
    expect_qp(4, S | SYM, -0.5, 2.0, 0x1.111112p-2, 0);
    /* 16 bits: 3 / 32767.5 = 9.1554131e-05; 0x1.800180p-14 */
    expect_qp(16, S | SYM, -3.0, 1.0, 0x1.80018p-14, 0);
    /* unsigned symmetric: the signed grid shifted by 2^(bits-1), whatever the width */
    expect_qp(4, SYM, -1.0, 1.0, 0x1.111112p-3, 8);      /* 1 / 7.5 */
    expect_qp(16, SYM, -1.0, 1.0, 0x1.0001p-15, 32768);  /* 1 / 32767.5, torch's 2^15 */
    expect_qp(8, SYM | NAR, -1.0, 1.0, 0x1.020408p-7, 127); /* [0, 254]: 1 / 127, centred */
    /* a range not containing 0 is widened before the threshold: [2, 6] -> amax 6 */
    expect_qp(8, S | SYM, 2.0, 6.0, 6.0f / 127.5f, 0);
}

Test(qparams, four_and_sixteen_bits)
{
    /* int4 [-1, 2]: scale = fl(3 / 15) = 0x1.99999ap-3 (0.2 rounded up); -1 / scale =
     * -4.99999993 -> float32 -5.0 -> zp = -8 + 5 = -3 */
    expect_qp(4, S, -1.0, 2.0, 0x1.99999ap-3, -3);
    /* uint16 [-1, 1]: scale = fl(2 / 65535) = 0x1.0001p-15 = 2^-15 + 2^-31;
     * -1 / scale = -32767.5000076 -> float32 -32767.5 exactly: a tie, to even -32768 */
    expect_qp(16, 0, -1.0, 1.0, 0x1.0001p-15, 32768);
    expect_qp(16, S, -1.0, 1.0, 0x1.0001p-15, 0);
}

Test(qparams, round_half_even)
{
    /* scale exactly 0.125 (width 31.875 = 255 / 8); lo / scale exactly -2.5 and -3.5:
     * half to even gives -2 and -4 (half away from zero would give -3 and -4, half up -2
     * and -3), so zp 2 and 4. */
    expect_qp(8, 0, -0.3125, 31.5625, 0.125, 2);
    expect_qp(8, 0, -0.4375, 31.4375, 0.125, 4);
    /* and a tie rounding up in magnitude: -1.5 -> -2 (width 255/16 = 15.9375, scale 1/16) */
    expect_qp(8, 0, -0.09375, 15.84375, 0.0625, 2);
}

Test(qparams, positive_only_range_widened)
{
    /* [2, 6] -> [0, 6]: scale = fl(6 / 255) = 0x1.818182p-6, zero-point at qmin */
    expect_qp(8, 0, 2.0, 6.0, 0x1.818182p-6, 0);
    expect_qp(8, S, 2.0, 6.0, 0x1.818182p-6, -128);
    expect_qp(8, 0, 0.0, 6.0, 0x1.818182p-6, 0);
}

Test(qparams, float32_rounding_of_the_range)
{
    /* torch's min_val is float32: 0.1 becomes 0x1.99999ap-4 before anything else. The
     * double 0.1 / 255 would give a different scale; torch gives fl(fl(0.1) / 255). */
    double scale;
    int64_t zp;
    qcal_qspec s = spec_of(8, 0);
    cr_assert_eq(qmath_qparams(&s, 0.0, 0.1, &scale, &zp, NULL), 0);
    cr_expect_eq(scale, (double)(0.1f / 255.0f));
    cr_expect_eq(scale, (double)(float)scale, "the scale is a float32 value");
}

static void expect_refused(double lo, double hi, const char *words)
{
    qcal_qspec s = spec_of(8, 0);
    double scale = 7;
    int64_t zp = 7;
    qerror e = {0};
    cr_expect_eq(qmath_qparams(&s, lo, hi, &scale, &zp, &e), -1, "[%g, %g] accepted", lo, hi);
    cr_expect_eq(e.code, QERR_DATA);
    cr_expect(strstr(e.msg, words), "message '%s' lacks '%s'", e.msg, words);
    cr_expect(scale == 7 && zp == 7, "outputs untouched on failure");
}

Test(qparams, refused)
{
    expect_refused(NAN, 1.0, "not finite");
    expect_refused(-1.0, NAN, "not finite");
    expect_refused(-INFINITY, 1.0, "not finite");
    expect_refused(0.0, INFINITY, "not finite");
    expect_refused(2.0, 1.0, "inverted");
    expect_refused(-1e39, 1.0, "float32");
    expect_refused(-3e38, 3e38, "too wide"); /* the width overflows float32 */
}

/* ---- qparams against a slow reference written differently ------------------------------ */

/* Each float32 operation as a double operation rounded once to float (exact for + - * /),
 * and round-half-even by hand. */
static double ref_rne(double x)
{
    double f = floor(x), d = x - f;
    if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0.0))
        return f + 1.0;
    return f;
}

static void ref_qparams(int bits, uint32_t flags, double lo, double hi, float *scale, long long *zp)
{
    long long half = 1LL << (bits - 1), qmin, qmax;
    if (flags & S) {
        qmin = -half + ((flags & NAR) ? 1 : 0);
        qmax = half - 1;
    } else {
        qmin = 0;
        qmax = 2 * half - 1 - ((flags & NAR) ? 1 : 0);
    }
    double neg = fmin((double)(float)lo, 0.0), pos = fmax((double)(float)hi, 0.0);
    double span = (double)(qmax - qmin);
    float s;
    if (flags & SYM)
        s = (float)(fmax(-neg, pos) / (double)(float)(span / 2.0));
    else
        s = (float)((double)(float)(pos - neg) / span);
    if ((double)s < ldexp(1.0, -23))
        s = (float)ldexp(1.0, -23);
    *scale = s;
    if (flags & SYM) {
        *zp = (flags & S) ? 0 : (flags & NAR) ? (qmin + qmax) / 2 : qmin + half;
        return;
    }
    long long z = qmin - (long long)ref_rne((double)(float)(neg / (double)s));
    *zp = z < qmin ? qmin : z > qmax ? qmax : z;
}

static uint64_t lcg(uint64_t *st)
{
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    return *st >> 11;
}

static double rand_value(uint64_t *st)
{
    double u = (double)lcg(st) / 9007199254740992.0; /* [0, 1) */
    int e = (int)(lcg(st) % 40) - 20;
    return (u * 2.0 - 1.0) * ldexp(1.0, e);
}

Test(qparams, matches_reference_sweep)
{
    uint64_t st = 42;
    for (int i = 0; i < 20000; i++) {
        int bits = 2 + (int)(lcg(&st) % 15);
        uint32_t flags = (uint32_t)(lcg(&st) % 8);
        double a = rand_value(&st), b = rand_value(&st);
        if (i % 7 == 0)
            b = a; /* constant tensors */
        double lo = fmin(a, b), hi = fmax(a, b);
        float rs;
        long long rz;
        ref_qparams(bits, flags, lo, hi, &rs, &rz);
        qcal_qspec s = spec_of(bits, flags);
        double scale;
        int64_t zp;
        cr_assert_eq(qmath_qparams(&s, lo, hi, &scale, &zp, NULL), 0);
        cr_assert(scale == (double)rs && zp == rz,
                  "bits %d flags %u [%a, %a]: got (%a, %lld), reference (%a, %lld)", bits,
                  (unsigned)flags, lo, hi, scale, (long long)zp, (double)rs, rz);
    }
}

Test(qparams, threshold)
{
    cr_expect_eq(qmath_threshold(-3.0, 2.0), 3.0);
    cr_expect_eq(qmath_threshold(-1.0, 2.5), 2.5);
    cr_expect_eq(qmath_threshold(2.0, 6.0), 6.0);
    cr_expect_eq(qmath_threshold(0.0, 0.0), 0.0);
}

/* ---- fake-quantize ------------------------------------------------------------------------ */

Test(fake_quant, by_hand)
{
    /* scale 1/8, zp 2, uint8: q = clamp(rne(8x) + 2, 0, 255), out = (q - 2) / 8 */
    cr_expect_eq(qmath_fake_quant(0.3f, 0.125f, 2, 0, 255), 0.25f);      /* 2.4 -> 2 */
    cr_expect_eq(qmath_fake_quant(0.1875f, 0.125f, 2, 0, 255), 0.25f);   /* 1.5 -> 2 */
    cr_expect_eq(qmath_fake_quant(0.0625f, 0.125f, 2, 0, 255), 0.0f);    /* 0.5 -> 0 */
    cr_expect_eq(qmath_fake_quant(-0.1875f, 0.125f, 2, 0, 255), -0.25f); /* -1.5 -> -2 */
    cr_expect_eq(qmath_fake_quant(100.0f, 0.125f, 2, 0, 255), 31.625f);  /* clamp 255 */
    cr_expect_eq(qmath_fake_quant(-1.0f, 0.125f, 2, 0, 255), -0.25f);    /* clamp 0 */
}

Test(fake_quant, nonfinite)
{
    cr_expect_eq(qmath_fake_quant(INFINITY, 0.125f, 2, 0, 255), 31.625f);
    cr_expect_eq(qmath_fake_quant(-INFINITY, 0.125f, 2, 0, 255), -0.25f);
    cr_expect_eq(qmath_fake_quant(NAN, 0.125f, 2, 0, 255), -0.25f, "NaN goes to qmin, as torch");
}

Test(fake_quant, multiplies_by_the_reciprocal)
{
    /* scale 0.1f = 0x1.99999ap-4, 1/scale = 10.0f exactly. x = 0x1.8ccccc p+0 (1.54999995):
     * x * 10 rounds to 15.5 in float32 -> 16 (torch), while x / scale = 15.499999 -> 15.
     * Output 16 * 0.1f = 0x1.99999ap+0 (1.60000002). */
    float x = 0x1.8cccccp+0f;
    cr_expect_eq(qmath_fake_quant(x, 0x1.99999ap-4f, 0, -128, 127), 0x1.99999ap+0f);
}

Test(fake_quant, symmetric_int8)
{
    /* scale 1/127.5 rounded up to float32 0x1.010102p-7, so 1/scale = 0x1.fdfffep+6
     * (127.4999924): +-1.0 -> +-127.49999 -> +-127, never the -128 level; +-2.0 clamp. */
    float s = 0x1.010102p-7f;
    cr_expect_eq(qmath_fake_quant(1.0f, s, 0, -128, 127), 127.0f * s);
    cr_expect_eq(qmath_fake_quant(-1.0f, s, 0, -128, 127), -127.0f * s);
    cr_expect_eq(qmath_fake_quant(2.0f, s, 0, -128, 127), 127.0f * s);
    cr_expect_eq(qmath_fake_quant(-2.0f, s, 0, -128, 127), -128.0f * s);
    cr_expect_eq(qmath_fake_quant(0.0f, s, 0, -128, 127), 0.0f);
}

Test(fake_quant, vector_form_matches_torch_on_every_grid)
{
    /* grids of 2, 8 and 16 bits, signed and unsigned, with zero points inside them; values
     * from ties, the clamping edges, huge magnitudes, tiny scales and non-finite inputs */
    const struct { int64_t qmin, qmax, zp; float scale; } grids[] = {
        {0, 255, 2, 0.125f}, {-128, 127, 0, 0x1.99999ap-4f}, {-128, 127, -3, 1e-7f},
        {0, 65535, 40000, 3e-3f}, {-32768, 32767, 0, 1.7e-5f}, {0, 3, 1, 0.7f},
        {-2, 1, 0, 1e20f},
    };
    uint64_t state = 0x5eed;
    float x[4096], got[4096];
    for (size_t g = 0; g < sizeof grids / sizeof *grids; g++) {
        for (int i = 0; i < 4096; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            double u = (double)(state >> 11) / 9007199254740992.0;
            float s = grids[g].scale;
            switch (i % 6) {
            case 0: x[i] = (float)((u - 0.5) * 2 * s * (double)(grids[g].qmax - grids[g].qmin)); break;
            case 1: x[i] = ((float)(i / 6 % 300) - 150.0f + 0.5f) * s; break; /* ties */
            case 2: x[i] = (float)((u - 0.5) * 1e30); break;
            case 3: x[i] = (float)((u - 0.5) * 8.4e6 * s); break; /* around 2^22 steps */
            case 4: x[i] = i % 4 ? (i % 3 ? INFINITY : -INFINITY) : NAN; break;
            default: x[i] = (float)(u - 0.5) * 1e-30f; break;
            }
        }
        qmath_fake_quant_n(x, got, 4096, grids[g].scale, grids[g].zp, grids[g].qmin, grids[g].qmax);
        for (int i = 0; i < 4096; i++) {
            float want = ref_fake_quant(x[i], grids[g].scale, grids[g].zp, grids[g].qmin, grids[g].qmax);
            cr_assert(got[i] == want || (isnan(got[i]) && isnan(want)),
                      "grid %zu, x = %a: got %a, torch %a", g, x[i], got[i], want);
            cr_assert_eq(qmath_fake_quant(x[i], grids[g].scale, grids[g].zp, grids[g].qmin,
                                          grids[g].qmax), got[i]);
        }
    }
}

/* The evaluation pass's fused kernel: bit for bit the same on every path (SIMD or not), and
 * within float32 block rounding of the float64 sums of torch's fake-quantize. */
Test(fake_quant, fused_error_matches_the_float64_reference_on_every_path)
{
    static float x[10007];
    uint64_t state = 99;
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(((double)(state >> 11) / 9007199254740992.0 - 0.3) * 9.0);
    }
    x[5] = NAN, x[700] = INFINITY, x[9999] = -INFINITY, x[10006] = NAN;
    const struct { float scale; int64_t zp, qmin, qmax; } grids[] = {
        {0.02f, 90, 0, 255}, {0.05f, 0, -127, 127}, {0.7f, 3, 0, 15}, {1e-4f, 0, -32768, 32767},
    };
    const uint64_t lengths[] = {0, 1, 7, 8, 63, 64, 65, 255, 256, 257, 10007};
    for (size_t g = 0; g < sizeof grids / sizeof *grids; g++)
        for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
            uint64_t n = lengths[k];
            qmath_err fast = {0}, slow = {0};
            qmath_fake_quant_err(&fast, x, n, grids[g].scale, grids[g].zp, grids[g].qmin, grids[g].qmax);
            qmath_fake_quant_err_portable(&slow, x, n, grids[g].scale, grids[g].zp, grids[g].qmin,
                                          grids[g].qmax);
            cr_assert(!memcmp(&fast, &slow, sizeof fast), "grid %zu, n %llu: SIMD and portable differ",
                      g, (unsigned long long)n);
            double se = 0, sr = 0, sq = 0, dot = 0;
            uint64_t used = 0;
            for (uint64_t i = 0; i < n; i++) {
                if (!isfinite(x[i]))
                    continue;
                double a = x[i], b = ref_fake_quant(x[i], grids[g].scale, grids[g].zp, grids[g].qmin,
                                                    grids[g].qmax);
                se += (a - b) * (a - b), sr += a * a, sq += b * b, dot += a * b, used++;
            }
            cr_assert_eq(fast.n, used, "grid %zu, n %llu", g, (unsigned long long)n);
            const double got[4] = {fast.sum_sq_err, fast.sum_sq_ref, fast.sum_sq_q, fast.dot};
            const double want[4] = {se, sr, sq, dot};
            for (int j = 0; j < 4; j++)
                cr_assert(fabs(got[j] - want[j]) <= 2e-6 * fabs(want[j]) + 1e-30,
                          "grid %zu, n %llu, sum %d: %.12g vs %.12g", g, (unsigned long long)n, j,
                          got[j], want[j]);
        }
}

/* Sums float32 lanes cannot hold (audited): |x| near 1e20 (squares of 16 values overflow a
 * float32 lane: mse inf, cosine NaN), |x| near 1e-38 (squares underflow to 0: a grid that
 * loses every value looked exact), and heavy clipping of outliers, where sum x q from
 * (x^2 + q^2 - e^2) / 2 cancelled (cosine 3e-4 off). Each within 1e-6 of float64 sums of
 * torch's fake-quantize, on every path. */
Test(fake_quant, sums_hold_huge_tiny_and_clipped_values)
{
    static float x[3][4096];
    uint64_t state = 7;
    for (int i = 0; i < 4096; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(state >> 11) / 9007199254740992.0 - 0.5;
        x[0][i] = (float)(u * 4e20);
        x[1][i] = (float)(u * 4e-38);
        x[2][i] = (float)(i % 64 ? u * 0.02 : u * 2e3); /* 1.5 % outliers */
    }
    const struct { float scale; int64_t zp, qmin, qmax; } grids[3] = {
        {1.6e18f, 0, -127, 127},        /* covers the huge values */
        {1.1920929e-7f, 0, -128, 127},  /* torch's eps floor: every tiny value is 0 */
        {0.0004f, 0, -127, 127},        /* [-0.05, 0.05]: the outliers clipped */
    };
    for (int d = 0; d < 3; d++) {
        qmath_err fast = {0}, slow = {0};
        qmath_fake_quant_err(&fast, x[d], 4096, grids[d].scale, grids[d].zp, grids[d].qmin, grids[d].qmax);
        qmath_fake_quant_err_portable(&slow, x[d], 4096, grids[d].scale, grids[d].zp,
                                      grids[d].qmin, grids[d].qmax);
        cr_assert(!memcmp(&fast, &slow, sizeof fast), "data %d: SIMD and portable differ", d);
        double se = 0, sr = 0, sq = 0, dot = 0;
        for (int i = 0; i < 4096; i++) {
            double a = x[d][i], b = ref_fake_quant(x[d][i], grids[d].scale, grids[d].zp,
                                                   grids[d].qmin, grids[d].qmax);
            se += (a - b) * (a - b), sr += a * a, sq += b * b, dot += a * b;
        }
        const double got[4] = {fast.sum_sq_err, fast.sum_sq_ref, fast.sum_sq_q, fast.dot};
        const double want[4] = {se, sr, sq, dot};
        for (int j = 0; j < 4; j++)
            cr_expect(fabs(got[j] - want[j]) <= 1e-6 * fabs(want[j]), "data %d, sum %d: %.12g vs %.12g",
                      d, j, got[j], want[j]);
        double cos_want = sq == 0 ? 0 : dot / (sqrt(sr) * sqrt(sq));
        cr_expect(fabs(qmath_cosine(&fast) - cos_want) <= 1e-6, "data %d: cosine %.9g vs %.9g", d,
                  qmath_cosine(&fast), cos_want);
        cr_expect(isfinite(qmath_mse(&fast)) && qmath_mse(&fast) > 0, "data %d: mse %g", d,
                  qmath_mse(&fast));
    }
}

/* The evaluation pass's two steps: NaN and Inf cleaned to 0 and left out of the count and
 * sum x^2 once (with each block's extrema), then each grid on the clean values; together the
 * single call's sums, also for a run starting inside the cleaned values. */
Test(fake_quant, clean_once_then_each_grid_gives_the_single_call)
{
    static float x[4096], clean[4096], extrema[2 * 4096 / QMATH_CLEAN_BLOCK];
    uint64_t state = 7;
    for (size_t i = 0; i < 4096; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(((double)(state >> 11) / 9007199254740992.0 - 0.5) * 6.0);
    }
    x[0] = -0.0f, x[3] = NAN, x[300] = INFINITY, x[4095] = -INFINITY, x[700] = 2.75f;
    const struct { float scale; int64_t zp, qmin, qmax; } grids[] = {
        {0.02f, 128, 0, 255}, {0.05f, 0, -127, 127}, {0.5f, 0, 0, 3}, {3e-5f, 0, -32768, 32767},
    };
    const uint64_t lengths[] = {1, 9, 256, 300, 4096};
    for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
        uint64_t n = lengths[k], finite = 0;
        for (uint64_t i = 0; i < n; i++)
            finite += isfinite(x[i]) != 0;
        double sum_sq_ref = 0;
        cr_assert_eq(qmath_clean_run(x, n, clean, extrema, &sum_sq_ref), finite);
        for (uint64_t i = 0; i < n; i++)
            cr_assert(isfinite(x[i]) ? clean[i] == x[i] : clean[i] == 0.0f, "value %llu",
                      (unsigned long long)i);
        for (uint64_t b = 0; b * QMATH_CLEAN_BLOCK < n; b++) { /* extrema by a plain scan */
            float lo = INFINITY, hi = -INFINITY;
            for (uint64_t i = b * QMATH_CLEAN_BLOCK; i < n && i < (b + 1) * QMATH_CLEAN_BLOCK; i++)
                lo = fminf(lo, isfinite(x[i]) ? x[i] : 0), hi = fmaxf(hi, isfinite(x[i]) ? x[i] : 0);
            cr_assert(extrema[2 * b] == lo && extrema[2 * b + 1] == hi, "n %llu, block %llu",
                      (unsigned long long)n, (unsigned long long)b);
        }
        for (size_t g = 0; g < sizeof grids / sizeof *grids; g++) {
            qmath_err single = {0}, parts = {.n = finite, .sum_sq_ref = sum_sq_ref};
            qmath_fake_quant_err(&single, x, n, grids[g].scale, grids[g].zp, grids[g].qmin,
                                 grids[g].qmax);
            qmath_grid_err(&parts, clean, extrema, 0, n, grids[g].scale, grids[g].zp,
                           grids[g].qmin, grids[g].qmax);
            cr_assert(!memcmp(&single, &parts, sizeof single), "grid %zu, n %llu", g,
                      (unsigned long long)n);
            if (n < 1000)
                continue;
            qmath_err tail = {0}, offset = {0}; /* from value 333 on: its blocks straddle two */
            qmath_fake_quant_err(&tail, x + 333, n - 333, grids[g].scale, grids[g].zp,
                                 grids[g].qmin, grids[g].qmax);
            qmath_grid_err(&offset, clean, extrema, 333, n - 333, grids[g].scale, grids[g].zp,
                           grids[g].qmin, grids[g].qmax);
            cr_assert(offset.sum_sq_err == tail.sum_sq_err && offset.sum_sq_q == tail.sum_sq_q &&
                      offset.dot == tail.dot, "grid %zu, from 333", g);
        }
    }
}

/* Blocks inside the grid skip the clamp: values on the grid's ends exactly (x / scale = qmin -
 * zp and qmax - zp), ties, -0 on an unsigned grid's end, blocks inside next to blocks beyond;
 * the sums equal the portable form's, which always clamps, bit for bit, and the float64 sums
 * of torch's fake-quantize. */
Test(fake_quant, blocks_inside_the_grid_give_the_clamped_sums)
{
    enum { N = 8 * QMATH_CLEAN_BLOCK };
    static float x[N];
    const struct { float scale; int64_t zp, qmin, qmax; } grids[] = {
        {0.5f, 0, -8, 7}, {0.5f, 0, 0, 15}, {0.25f, 3, 0, 15},
    };
    for (size_t g = 0; g < sizeof grids / sizeof *grids; g++) {
        float s = grids[g].scale, lo = (float)(grids[g].qmin - grids[g].zp) * s,
              hi = (float)(grids[g].qmax - grids[g].zp) * s;
        for (int i = 0; i < N; i++) { /* blocks 0-5 inside, 6 one step beyond, 7 far beyond */
            int b = i / QMATH_CLEAN_BLOCK, j = i % QMATH_CLEAN_BLOCK;
            float inside = lo + (hi - lo) * (float)(j % 61) / 60.0f;
            x[i] = b < 6 ? inside : b == 6 ? (j ? inside : hi + s) : inside * 40.0f;
            if (j == 1) x[i] = lo; /* the ends, exactly */
            if (j == 2) x[i] = hi;
            if (j == 3) x[i] = lo == 0 ? -0.0f : lo + 0.5f * s; /* -0 on the end; a tie */
        }
        qmath_err fast = {0}, slow = {0};
        qmath_fake_quant_err(&fast, x, N, s, grids[g].zp, grids[g].qmin, grids[g].qmax);
        qmath_fake_quant_err_portable(&slow, x, N, s, grids[g].zp, grids[g].qmin, grids[g].qmax);
        cr_assert(!memcmp(&fast, &slow, sizeof fast), "grid %zu: the fast form differs", g);
        double se = 0, sq = 0, dot = 0;
        for (int i = 0; i < N; i++) {
            double a = x[i], q = ref_fake_quant(x[i], s, grids[g].zp, grids[g].qmin, grids[g].qmax);
            se += (a - q) * (a - q), sq += q * q, dot += a * q;
        }
        cr_assert(fabs(fast.sum_sq_err - se) <= 2e-6 * se && fabs(fast.sum_sq_q - sq) <= 2e-6 * sq &&
                      fabs(fast.dot - dot) <= 2e-6 * fabs(dot),
                  "grid %zu: %g %g %g vs %g %g %g", g, fast.sum_sq_err, fast.sum_sq_q, fast.dot,
                  se, sq, dot);
    }
}

/* ---- error metrics ------------------------------------------------------------------------ */

Test(metrics, by_hand)
{
    /* errors 0, -0.5, -0.5, 0: sum 0.5; signal 1+4+9 = 14; q energy 1+2.25+12.25 = 15.5;
     * dot 1+3+10.5 = 14.5. mse 0.125, sqnr 10 log10(28) = 14.4715803134222 dB,
     * cosine 14.5 / sqrt(217) = 0.98432413828809 */
    float x[] = {1, -2, 3, 0}, q[] = {1, -1.5f, 3.5f, 0};
    qmath_err acc = {0};
    qmath_err_add(&acc, x, q, 4);
    cr_expect_eq(acc.n, 4u);
    cr_expect_eq(qmath_mse(&acc), 0.125);
    cr_expect_float_eq(qmath_sqnr_db(&acc), 14.4715803134222, 1e-12);
    cr_expect_float_eq(qmath_cosine(&acc), 0.98432413828809, 1e-13);
}

Test(metrics, merge_equals_one_pass)
{
    float x[] = {1, -2, 3, 0, 0.5f}, q[] = {1, -1.5f, 3.5f, 0, 0.25f};
    qmath_err all = {0}, a = {0}, b = {0};
    qmath_err_add(&all, x, q, 5);
    qmath_err_add(&a, x, q, 2);
    qmath_err_add(&b, x + 2, q + 2, 3);
    qmath_err_merge(&a, &b);
    cr_expect_eq(a.n, 5u);
    cr_expect_eq(a.sum_sq_err, 0.5625); /* 0.25 + 0.25 + 0.0625, exact in binary */
    cr_expect_eq(a.sum_sq_ref, all.sum_sq_ref);
    cr_expect_eq(a.sum_sq_q, all.sum_sq_q);
    cr_expect_eq(a.dot, all.dot);
}

Test(metrics, degenerate_cases)
{
    float z[] = {0, 0, 0}, x[] = {1, 2, -2}, q[] = {0.5f, 0, 0};
    qmath_err acc = {0};
    cr_expect_eq(qmath_mse(&acc), 0.0, "n = 0");
    cr_expect(isinf(qmath_sqnr_db(&acc)) && qmath_sqnr_db(&acc) > 0);
    cr_expect_eq(qmath_cosine(&acc), 1.0);

    qmath_err_add(&acc, x, x, 3); /* exact */
    cr_expect(isinf(qmath_sqnr_db(&acc)) && qmath_sqnr_db(&acc) > 0);
    cr_expect_float_eq(qmath_cosine(&acc), 1.0, 1e-15);
    cr_expect_eq(qmath_mse(&acc), 0.0);

    qmath_err zz = {0}; /* all zero, reproduced exactly */
    qmath_err_add(&zz, z, z, 3);
    cr_expect(isinf(qmath_sqnr_db(&zz)) && qmath_sqnr_db(&zz) > 0);
    cr_expect_eq(qmath_cosine(&zz), 1.0);

    qmath_err noise = {0}; /* zero signal, non-zero output */
    qmath_err_add(&noise, z, q, 3);
    cr_expect(isinf(qmath_sqnr_db(&noise)) && qmath_sqnr_db(&noise) < 0);
    cr_expect_eq(qmath_cosine(&noise), 0.0);
    cr_expect_eq(qmath_mse(&noise), 0.25 / 3);

    qmath_err lost = {0}; /* everything quantized to zero: error == signal -> 0 dB */
    qmath_err_add(&lost, x, z, 3);
    cr_expect_eq(qmath_sqnr_db(&lost), 0.0);
    cr_expect_eq(qmath_cosine(&lost), 0.0);
}

Test(metrics, anti_correlated)
{
    float x[] = {1, -2}, q[] = {-1, 2};
    qmath_err acc = {0};
    qmath_err_add(&acc, x, q, 2);
    cr_expect_float_eq(qmath_cosine(&acc), -1.0, 1e-15);
    cr_expect(qmath_cosine(&acc) >= -1.0, "clamped to [-1, 1]");
    cr_expect_eq(qmath_mse(&acc), 10.0); /* (4 + 16) / 2 */
}

/* ---- exact sums (xsum) ------------------------------------------------------------------ */

static double xsum_of(const double *v, size_t n)
{
    xsum s;
    memset(&s, 0, sizeof s);
    for (size_t i = 0; i < n; i++)
        xsum_add(&s, v[i]);
    return xsum_value(&s);
}

Test(xsum, any_order_and_any_split_give_the_same_bits)
{
    enum { N = 20000 };
    static double v[N];
    uint64_t rng = 99;
    for (size_t i = 0; i < N; i++) /* magnitudes 2^-120 .. 2^120, both signs */
        v[i] = ldexp(fx_rand_uniform(&rng) - 0.5, (int)(fx_rand_u64(&rng) % 241) - 120);
    double forward = xsum_of(v, N);
    static double shuffled[N];
    memcpy(shuffled, v, sizeof v);
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = (size_t)(fx_rand_u64(&rng) % (i + 1));
        double t = shuffled[i];
        shuffled[i] = shuffled[j], shuffled[j] = t;
    }
    double again = xsum_of(shuffled, N);
    cr_expect_eq(memcmp(&forward, &again, sizeof forward), 0, "%.17g vs %.17g", forward, again);
    /* split in 7 uneven parts, merged last part first */
    xsum parts[7], total;
    memset(parts, 0, sizeof parts);
    memset(&total, 0, sizeof total);
    for (size_t i = 0; i < N; i++)
        xsum_add(&parts[(i * i) % 7], v[i]);
    for (int p = 6; p >= 0; p--)
        xsum_merge(&total, &parts[p]);
    double merged = xsum_value(&total);
    cr_expect_eq(memcmp(&forward, &merged, sizeof forward), 0, "%.17g vs %.17g", forward, merged);
}

Test(xsum, sums_are_exact_where_floating_point_loses_them)
{
    double cancel[] = {1e16, 1.0, -1e16};
    cr_expect_eq(xsum_of(cancel, 3), 1.0); /* double arithmetic gives 0 */
    double tiny_negative[] = {1.0, -1.0 - ldexp(1, -52), ldexp(1, -100)};
    cr_expect_eq(xsum_of(tiny_negative, 3), -ldexp(1, -52) + ldexp(1, -100));
    /* 0.1 ten times: the exact sum of ten copies of the double 0.1 is 1 + 2^-54 + 2^-56 +
     * 2^-59 ..., nearest double 1.0; within one ulp either way */
    double tenth[10];
    for (int i = 0; i < 10; i++)
        tenth[i] = 0.1;
    long double exact = 10.0L * (long double)0.1; /* 57 bits: exact in x87 extended */
    double got = xsum_of(tenth, 10);
    cr_expect(fabs(got - (double)exact) <= ldexp(1, -52), "%.17g vs %.17Lg", got, exact);
    double squares[1000];
    long double ref = 0;
    for (int i = 0; i < 1000; i++) { /* float32 squares: exact in double and in the sum */
        float x = (float)(i * 0.37 - 100.0);
        squares[i] = (double)x * x;
        ref += (long double)squares[i];
    }
    cr_expect_eq(xsum_of(squares, 1000), (double)ref);
}

Test(xsum, nan_and_infinities_behave_as_in_float_addition)
{
    double with_nan[] = {1.0, NAN, 2.0};
    cr_expect(isnan(xsum_of(with_nan, 3)));
    double pos[] = {1.0, INFINITY};
    cr_expect_eq(xsum_of(pos, 2), INFINITY);
    double neg[] = {-INFINITY, 5.0};
    cr_expect_eq(xsum_of(neg, 2), -INFINITY);
    double both[] = {INFINITY, -INFINITY};
    cr_expect(isnan(xsum_of(both, 2)));
    double huge[] = {ldexp(1, 400), 1.0}; /* beyond the fixed-point range: +inf, not garbage */
    cr_expect_eq(xsum_of(huge, 2), INFINITY);
    double below[] = {ldexp(1, -340), ldexp(1, -340)}; /* under the grid: rounds to 0 */
    cr_expect_eq(xsum_of(below, 2), 0.0);
    /* the square of a float32 near 1e-38 (2^-252) and the least float32 square (2^-298)
     * are on the grid: tiny tensors' errors are not flushed to 0 (they were, at 2^-160) */
    double tiny[] = {ldexp(1, -252), ldexp(1, -298), ldexp(1, -252)};
    cr_expect_eq(xsum_of(tiny, 3), ldexp(1, -251) + ldexp(1, -298));
    double none[] = {0.0};
    cr_expect_eq(xsum_of(none, 0), 0.0);
}
