/* hist_kl.c - entropy calibration on a qcal.histogram. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "histogram.h"

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
 *   tpu:  tpu-mlir (calibration_math kl_diversity_hist): see tpu_threshold below.
 * When no candidate has a finite divergence (constants, tiny offset ranges: every literal
 * candidate is infinite) the threshold is max|x|: TensorRT's literal answer there is amax/16. */

enum { KL_TRT, KL_NVPQ, KL_TPU };
enum { P_VARIANT, P_BINS, P_LEVELS, P_START, P_SMOOTH };

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

/* ---- the same search in O(levels) per candidate ------------------------------------------ *
 * divergence() costs O(i) with a log per bin, 35 ms per tensor over 2048 bins. The same KL
 * follows from prefix sums over ref, one term per level. With T = sum ref (P's mass: the
 * clip moves mass, smoothing keeps it), R = sum ref[0..i) (Q's), p', q' the smoothed bins,
 *   KL = (sum p' log p' - sum p' log q') / T + log(R / T)
 * (bins empty in P are empty in Q: eps log(eps / eps) = 0). On a level with nz non-empty bins
 * of mass m every q' is m / nz - take_q, so sum p' log q' is one log per level. Smoothing
 * takes take_p = eps zeros / nonzeros from each non-empty P bin, so sum (r - t) log (r - t)
 * expands about t = 0: r log r - t (log r + 1) + sum_k>=2 t^k / (k (k - 1) r^(k - 1)), with
 * prefix sums of r^-m; used while t <= min r / 16 (a 13-term series then errs below 1e-15 of
 * the sum). Likewise log(Q - take_q) = log Q + log(1 - take_q / Q), and log Q is kept per
 * level. Candidates outside these bounds (fractional bins below 16 t or 8 take_q) take
 * divergence(), which also keeps its exact rules for those cases. The two agree to about
 * 1e-11 of the KL (the sums cancel); KL below 1e-12 counts as 0, so exact ties stay ties.
 * bench_estimators, ms per tensor: trt 35 (divergence) -> 1.2 (cached levels, scalar) -> 0.7
 * (level terms of a width filled at once with a vector log, summed four levels at a time);
 * nvpq 31 -> 0.9 -> 0.5. */

enum { SERIES = 12 }; /* powers r^-1 .. r^-12 */

/* The levels of candidate i are i / L or i / L + 1 bins wide, and those of one width recur
 * over the candidates (2048 bins, 128 levels: 18,748 distinct levels of 245,888). For the
 * candidates of one width w = i / L the terms of the levels [lo, lo + w + e) (e = 0, 1) of
 * every lo are kept at lo + (e ^ flip) n, in arrays of two halves: when w steps up, the wide
 * half becomes the narrow one (flip toggles) and keeps its terms. Per level: mass m, non-empty
 * bins nz, log q = log(m / nz), 1 / q and m log q; all 0 when nz = 0 (it adds nothing). */
typedef struct level_terms {
    double *mass, *nonzero, *logq, *invq, *mlogq;
    uint64_t width, flip, n;
    int avx2;                         /* the machine has AVX2 */
} level_terms;

typedef struct kl_prefix {
    double *mass;                     /* sum of ref[0..k) (exact for integer counts) */
    long double *rlogr, *logr;        /* sums of r log r, log r over r > 0 in ref[0..k) */
    double *inv[SERIES + 1];          /* inv[m][k]: sum of r^-m over r > 0 in ref[0..k) */
    double *minpos;                   /* least positive r in ref[0..k); INFINITY if none */
    uint64_t *zeros;                  /* empty bins in ref[0..k) */
    level_terms lv;
    void *block;
} kl_prefix;

static void prefix_free(kl_prefix *s)
{
    free(s->block);
}

/* Level l of candidate i holds bins [ceil(l i / L), ceil((l + 1) i / L)), and
 * ceil(a / L) = floor((a + L - 1/2) / L) is exact in double for a < 2^40: the quotient stays
 * 1 / (2L) from an integer, far more than the product's rounding. Unlike stepping by i / L
 * with a carried remainder, each bound is computed on its own (no chain from level to level). */
typedef struct level_walk {
    int64_t i, lo, width, n, flip;
    double half_up, inv_levels;
} level_walk;

static inline level_walk walk_start(const level_terms *lv, uint64_t i, uint64_t levels)
{
    return (level_walk){(int64_t)i, 0, (int64_t)lv->width, (int64_t)lv->n, (int64_t)lv->flip,
                        (double)levels - 0.5, 1.0 / (double)levels};
}

static inline int64_t walk_bound(const level_walk *w, int64_t l)
{
    return (int64_t)(((double)(l * w->i) + w->half_up) * w->inv_levels);
}

/* The index in the level terms of level l (the walk's levels in order from 0), then on */
static inline uint64_t walk_next(level_walk *w, int64_t l)
{
    int64_t hi = walk_bound(w, l + 1), at = w->lo + ((hi - w->lo - w->width) ^ w->flip) * w->n;
    w->lo = hi;
    return (uint64_t)at;
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define KL_HAVE_AVX2 1

/* walk_next for four levels at a time in int32 lanes (bounds below 2^28), the same
 * arithmetic, its constants broadcast once per candidate. */
typedef struct walk4 {
    __m128i products, four_i, width, flip, n, top; /* top: the previous group's bounds */
    __m256d half_up, inv_levels;
} walk4;

__attribute__((target("avx2"))) static inline walk4 walk4_start(const level_walk *w)
{
    __m128i first = _mm_mullo_epi32(_mm_setr_epi32(1, 2, 3, 4), _mm_set1_epi32((int)w->i));
    return (walk4){first, _mm_set1_epi32(4 * (int)w->i), _mm_set1_epi32((int)w->width),
                   _mm_set1_epi32((int)w->flip), _mm_set1_epi32((int)w->n), _mm_setzero_si128(),
                   _mm256_set1_pd(w->half_up), _mm256_set1_pd(w->inv_levels)};
}

/* The term indices of the next four levels */
__attribute__((target("avx2"))) static inline __m128i walk4_next(walk4 *w)
{
    __m256d q = _mm256_add_pd(_mm256_cvtepi32_pd(w->products), w->half_up);
    __m128i hi = _mm256_cvttpd_epi32(_mm256_mul_pd(q, w->inv_levels));
    __m128i lo = _mm_alignr_epi8(hi, w->top, 12);
    __m128i half = _mm_xor_si128(_mm_sub_epi32(_mm_sub_epi32(hi, lo), w->width), w->flip);
    w->top = hi, w->products = _mm_add_epi32(w->products, w->four_i);
    return _mm_add_epi32(lo, _mm_mullo_epi32(half, w->n));
}
#endif

/* ---- log of the level terms ------------------------------------------------------------ *
 * libm's log took a third of the search (18,748 of them per tensor). The same to about an ulp,
 * four at a time: x = 2^e m with m in [sqrt(1/2), sqrt(2)), s = (m - 1) / (m + 1) (|s| <=
 * 0.1716), log m = 2 atanh s = 2 s (1 + s^2 / 3 + s^4 / 5 + ...), cut after s^20 / 21 (the
 * rest is below 2^-56 of the sum); e log 2 in two parts, the first exact for any e (its low 32
 * bits are zero). The scalar form runs the same operations, so AVX2 or not gives the same
 * logs. Values that are not normal positive numbers go to libm in both. */
static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
enum { ATANH_TERMS = 11 }; /* 1 / (2k + 1) for k = 0 .. 10 */

static double atanh_series(double z)
{
    double p = 1.0 / (2 * ATANH_TERMS - 1);
    for (int k = ATANH_TERMS - 2; k >= 0; k--)
        p = p * z + 1.0 / (2 * k + 1);
    return p;
}

static double log_one(double x)
{
    if (!(x >= DBL_MIN && x <= DBL_MAX))
        return log(x);
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    double e = (double)((int64_t)(bits >> 52) - 1023), m;
    bits = (bits & 0x000fffffffffffffu) | 0x3ff0000000000000u;
    memcpy(&m, &bits, sizeof m);
    if (m > M_SQRT2)
        m *= 0.5, e += 1;
    double f = m - 1, s = f / (2 + f);
    return e * ln2_hi + (e * ln2_lo + 2 * s * atanh_series(s * s));
}

#if defined(KL_HAVE_AVX2)
__attribute__((target("avx2"))) static __m256d log4(__m256d x)
{
    __m256i bits = _mm256_castpd_si256(x);
    /* the biased exponent as a double: 2^52 + b, less 2^52 + 1023 */
    __m256i biased = _mm256_or_si256(_mm256_srli_epi64(bits, 52),
                                     _mm256_set1_epi64x(0x4330000000000000));
    __m256d e = _mm256_sub_pd(_mm256_castsi256_pd(biased), _mm256_set1_pd(4503599627371519.0));
    __m256i mant = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000fffffffffffff)),
                                   _mm256_set1_epi64x(0x3ff0000000000000));
    __m256d m = _mm256_castsi256_pd(mant), one = _mm256_set1_pd(1.0);
    __m256d high = _mm256_cmp_pd(m, _mm256_set1_pd(M_SQRT2), _CMP_GT_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), high);
    e = _mm256_add_pd(e, _mm256_and_pd(high, one));
    __m256d f = _mm256_sub_pd(m, one);
    __m256d s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f)), z = _mm256_mul_pd(s, s);
    __m256d p = _mm256_set1_pd(1.0 / (2 * ATANH_TERMS - 1));
    for (int k = ATANH_TERMS - 2; k >= 0; k--)
        p = _mm256_add_pd(_mm256_mul_pd(p, z), _mm256_set1_pd(1.0 / (2 * k + 1)));
    __m256d two_s_p = _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), s), p);
    __m256d low = _mm256_add_pd(_mm256_mul_pd(e, _mm256_set1_pd(ln2_lo)), two_s_p);
    return _mm256_add_pd(_mm256_mul_pd(e, _mm256_set1_pd(ln2_hi)), low);
}

/* logs_of on blocks of four normal positive values; the rest are left to log_one */
__attribute__((target("avx2"))) static uint64_t logs_of_avx2(double *x, uint64_t n)
{
    uint64_t i = 0;
    const __m256d least = _mm256_set1_pd(DBL_MIN), most = _mm256_set1_pd(DBL_MAX);
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_loadu_pd(x + i);
        __m256d normal = _mm256_and_pd(_mm256_cmp_pd(v, least, _CMP_GE_OQ),
                                       _mm256_cmp_pd(v, most, _CMP_LE_OQ));
        if (_mm256_movemask_pd(normal) != 0xf)
            for (int j = 0; j < 4; j++)
                x[i + j] = log_one(x[i + j]);
        else
            _mm256_storeu_pd(x + i, log4(v));
    }
    return i;
}
#endif

/* x[i] := log x[i] */
static void logs_of(double *x, uint64_t n, int avx2)
{
    uint64_t i = 0;
#if defined(KL_HAVE_AVX2)
    if (avx2)
        i = logs_of_avx2(x, n);
#endif
    (void)avx2;
    for (; i < n; i++)
        x[i] = log_one(x[i]);
}

/* Fills one half of the terms with the levels [lo, lo + span) for lo < below (those reaching
 * past the bins are never used: 0). Filling them all costs fewer logs than finding which ones
 * the candidates use (about 2 lo of 3 are). */
static void fill_half(kl_prefix *s, uint64_t half, uint64_t span, uint64_t below)
{
    level_terms *lv = &s->lv;
    uint64_t n = lv->n, inside = n > span ? n - span : 0, at = half * n;
    uint64_t count = below < inside ? below : inside, end = below < n ? below : n;
    double *q = lv->logq + at;
    for (uint64_t lo = 0; lo < count; lo++) {
        double m = s->mass[lo + span] - s->mass[lo];
        uint64_t nz = span - (s->zeros[lo + span] - s->zeros[lo]);
        lv->mass[at + lo] = nz ? m : 0, lv->nonzero[at + lo] = (double)nz;
        lv->invq[at + lo] = nz ? (double)nz / m : 0, q[lo] = nz ? m / (double)nz : 1; /* log 1 = 0 */
    }
    logs_of(q, count, lv->avx2);
    for (uint64_t lo = 0; lo < count; lo++)
        lv->mlogq[at + lo] = lv->mass[at + lo] * q[lo];
    for (uint64_t lo = count; lo < end; lo++)
        lv->mass[at + lo] = lv->nonzero[at + lo] = lv->invq[at + lo] = q[lo] = lv->mlogq[at + lo] = 0;
}

/* Makes the terms those of width w (of candidates with i / L = w, whose levels start below
 * (w + 1) L; the wide ones are the narrow ones of width w + 1 next, so below (w + 2) L) */
static void terms_for_width(kl_prefix *s, uint64_t width, uint64_t levels)
{
    level_terms *lv = &s->lv;
    if (width == lv->width + 1)
        lv->flip ^= 1; /* the wide half is now the narrow one */
    else
        fill_half(s, lv->flip, width, (width + 1) * levels);
    fill_half(s, lv->flip ^ 1, width + 1, (width + 2) * levels);
    lv->width = width;
}

static int prefix_build(kl_prefix *s, const double *ref, uint64_t bins)
{
    uint64_t n = bins + 1;
    /* largest alignment first: long doubles, doubles, integers */
    s->block = malloc(2 * n * sizeof(long double) + n * (SERIES + 2 + 10) * sizeof(double) +
                      n * sizeof(uint64_t));
    if (!s->block)
        return 0;
    s->rlogr = s->block, s->logr = s->rlogr + n;
    double *d = (double *)(s->logr + n);
    s->mass = d, d += n;
    for (int m = 1; m <= SERIES; m++, d += n)
        s->inv[m] = d;
    s->minpos = d, d += n;
    level_terms *lv = &s->lv;
    lv->mass = d, lv->nonzero = d + 2 * n, lv->logq = d + 4 * n, lv->invq = d + 6 * n;
    lv->mlogq = d + 8 * n, d += 10 * n;
    s->zeros = (uint64_t *)d;
    lv->n = n, lv->width = UINT64_MAX, lv->flip = 0, lv->avx2 = simd_avx2(); /* none yet */
    s->mass[0] = 0, s->rlogr[0] = s->logr[0] = 0, s->minpos[0] = INFINITY, s->zeros[0] = 0;
    for (int m = 1; m <= SERIES; m++)
        s->inv[m][0] = 0;
    for (uint64_t j = 0; j < bins; j++) {
        double r = ref[j], lr = r > 0 ? log(r) : 0, inv = r > 0 ? 1 / r : 0, pw = inv;
        s->mass[j + 1] = s->mass[j] + r;
        s->rlogr[j + 1] = s->rlogr[j] + r * lr;
        s->logr[j + 1] = s->logr[j] + lr;
        for (int m = 1; m <= SERIES; m++, pw *= inv)
            s->inv[m][j + 1] = s->inv[m][j] + pw;
        s->minpos[j + 1] = r > 0 && r < s->minpos[j] ? r : s->minpos[j];
        s->zeros[j + 1] = s->zeros[j] + (r == 0);
    }
    return 1;
}

/* sum (r - t) log(r - t) over the non-empty bins of ref[0..n); NAN when the series does not
 * converge fast enough (then the caller falls back). */
static long double sum_rlogr_shifted(const kl_prefix *s, uint64_t n, double t)
{
    if (t == 0)
        return s->rlogr[n];
    if (!(t * 16 <= s->minpos[n]))
        return s->minpos[n] == INFINITY ? 0 : NAN;
    long double nonzero = (long double)(n - s->zeros[n]), sum = s->rlogr[n];
    sum -= t * (s->logr[n] + nonzero);
    double tk = t;
    for (int k = 2; k <= SERIES + 1; k++) {
        tk *= t;
        sum += tk / ((double)k * (k - 1)) * s->inv[k - 1][n];
    }
    return sum;
}

static const double inv_k[] = {0, 1, 1. / 2, 1. / 3, 1. / 4, 1. / 5, 1. / 6, 1. / 7, 1. / 8,
                               1. / 9, 1. / 10, 1. / 11, 1. / 12, 1. / 13, 1. / 14, 1. / 15,
                               1. / 16, 1. / 17, 1. / 18, 1. / 19, 1. / 20};

/* log(1 - u) = -sum_k=1..terms u^k / k */
static double log1m_series(double u, int terms)
{
    double sum = 0;
    for (int k = terms; k >= 1; k--)
        sum = sum * u + inv_k[k];
    return -u * sum;
}

/* The terms log1m_series needs for log(1 - u) with 0 <= u <= u_bound <= 1/8: the series cut
 * where u^(terms + 1) <= 1e-16 (a level's term w log(1 - u) then errs by under 1e-16 w, the
 * KL by under 1e-16). One count serves all of a candidate's levels (u_bound = take_q over the
 * least non-empty bin, which no level's mean is under): a loop of the same length on every
 * level is one the branch predictor learns. */
static int series_terms(double u_bound)
{
    /* u_max[k]: the largest u that k terms serve, 1e-16^(1 / (k + 1)) */
    static const double u_max[] = {0, 1e-8, 4.6415888e-6, 1e-4, 6.3095734e-4, 2.1544347e-3,
                                   5.1794747e-3, 1e-2, 1.6681005e-2, 2.5118864e-2,
                                   3.5111917e-2, 4.6415888e-2, 5.8780161e-2, 7.1968567e-2,
                                   8.5769590e-2, 0.1, 0.11441248, 0.12915497};
    int terms = 1;
    while (u_bound > u_max[terms])
        terms++;
    return terms;
}

typedef struct share_args {
    double take_p, take_q;
    int terms, smooth;
} share_args;

/* A level's share of sum p' log q': its bins (m - nz take_p) times log(m / nz - take_q);
 * without smoothing, the m log q kept. */
static inline double level_share(const level_terms *lv, uint64_t k, const share_args *a)
{
    if (!a->smooth)
        return lv->mlogq[k];
    double logq = lv->logq[k] + log1m_series(a->take_q * lv->invq[k], a->terms);
    return (lv->mass[k] - lv->nonzero[k] * a->take_p) * logq;
}

#if defined(KL_HAVE_AVX2)
/* Four terms by four scalar loads: on this machine (AMD Zen 4) faster than a gather */
__attribute__((target("avx2"))) static inline __m256d load4(const double *term, const uint32_t *at)
{
    return _mm256_setr_pd(term[at[0]], term[at[1]], term[at[2]], term[at[3]]);
}

/* level_share of four levels, the same operations in the same order */
__attribute__((target("avx2"))) static inline __m256d share4(const level_terms *lv,
                                                             __m128i where, const share_args *a)
{
    uint32_t at[4];
    _mm_storeu_si128((__m128i *)at, where);
    if (!a->smooth)
        return load4(lv->mlogq, at);
    __m256d u = _mm256_mul_pd(_mm256_set1_pd(a->take_q), load4(lv->invq, at));
    __m256d series = _mm256_setzero_pd();
    for (int k = a->terms; k >= 1; k--)
        series = _mm256_add_pd(_mm256_mul_pd(series, u), _mm256_set1_pd(inv_k[k]));
    __m256d minus_u = _mm256_xor_pd(u, _mm256_set1_pd(-0.0));
    __m256d logq = _mm256_add_pd(load4(lv->logq, at),
                                 _mm256_mul_pd(minus_u, series));
    __m256d taken = _mm256_mul_pd(load4(lv->nonzero, at),
                                  _mm256_set1_pd(a->take_p));
    return _mm256_mul_pd(_mm256_sub_pd(load4(lv->mass, at), taken), logq);
}

/* The lane sums of levels [0, 8 floor(L / 8)); returns that count */
__attribute__((target("avx2"))) static int64_t lane_sums_avx2(const level_terms *lv,
                                                              level_walk *w, int64_t levels,
                                                              const share_args *a, double lane[8])
{
    __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
    walk4 w4 = walk4_start(w);
    int64_t l = 0;
    for (; l + 8 <= levels; l += 8) {
        low = _mm256_add_pd(low, share4(lv, walk4_next(&w4), a));
        high = _mm256_add_pd(high, share4(lv, walk4_next(&w4), a));
    }
    _mm256_storeu_pd(lane, low), _mm256_storeu_pd(lane + 4, high);
    return l;
}
#endif

/* sum p' log q' over candidate i's levels; *last_logq: the last level's log q'. Level l adds
 * to lane l mod 8 (so that the additions do not wait on each other), in the same order with
 * AVX2 or without: the same sums on every machine. */
static double sum_plogq(const kl_prefix *s, uint64_t i, uint64_t levels, double take_p,
                        double take_q, double *last_logq)
{
    const level_terms *lv = &s->lv;
    share_args a = {take_p, take_q, take_q > 0 ? series_terms(take_q / s->minpos[i]) : 0,
                    take_q > 0 || take_p > 0};
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    level_walk w = walk_start(lv, i, levels);
    int64_t l = 0;
#if defined(KL_HAVE_AVX2)
    if (lv->avx2)
        l = lane_sums_avx2(lv, &w, (int64_t)levels, &a, lane), w.lo = walk_bound(&w, l);
#endif
    for (; l < (int64_t)levels; l++) {
        uint64_t at = walk_next(&w, l);
        lane[l % 8] += level_share(lv, at, &a);
    }
    level_walk top = walk_start(lv, i, levels);
    top.lo = walk_bound(&top, (int64_t)levels - 1);
    uint64_t at = walk_next(&top, (int64_t)levels - 1);
    *last_logq = lv->logq[at] + log1m_series(take_q * lv->invq[at], a.terms);
    double half[4];
    for (int j = 0; j < 4; j++)
        half[j] = lane[j] + lane[j + 4];
    return (half[0] + half[1]) + (half[2] + half[3]);
}

/* KL of candidate i from the prefix sums; NAN: take divergence() instead. */
static double fast_divergence(kl_prefix *s, const double *ref, uint64_t i, uint64_t bins,
                              uint64_t levels, double eps)
{
    double total = s->mass[bins], in_range = s->mass[i];
    double clipped = s->mass[bins] - s->mass[i], last_p = ref[i - 1] + clipped;
    uint64_t zeros_p = s->zeros[i - 1] + (last_p == 0), zeros_q = s->zeros[i];
    if (!(total > 0) || !(in_range > 0) || (eps == 0 && ref[i - 1] == 0 && clipped > 0))
        return INFINITY; /* as divergence(): sq = 0, or mass over an empty Q bin */
    double take_p = eps > 0 ? eps * (double)zeros_p / (double)(i - zeros_p) : 0;
    double take_q = eps > 0 ? eps * (double)zeros_q / (double)(i - zeros_q) : 0;
    long double plogp = sum_rlogr_shifted(s, i - 1, take_p);
    /* log(Q - take_q) = log Q + log(1 - take_q / Q), Q >= the least non-empty bin */
    if (isnan(plogp) || (last_p > 0 && !(last_p - take_p > 0)) || !(take_q * 8 <= s->minpos[i]))
        return NAN;
    double last_logq; /* used only when ref[i - 1] > 0: the last level is not empty then */
    long double plogq = sum_plogq(s, i, levels, take_p, take_q, &last_logq);
    if (last_p > 0) {
        double pl = last_p - take_p;
        plogp += pl * log(pl);
        plogq += ref[i - 1] > 0 ? clipped * last_logq : pl * log(eps);
    }
    double kl = (double)((plogp - plogq) / total) + log(in_range / total);
    return kl < 1e-12 ? 0 : kl; /* KL >= 0; below 1e-12 is the sums' rounding (ties stay ties) */
}

/* The threshold into *t; *searched = 0 when no candidate had a finite divergence (*t = amax). */
static int kl_threshold(const hview *v, const qcal_value *params, double amax, double *t,
                        int *searched, qcal_err *err)
{
    int variant = (int)params[P_VARIANT].i;
    uint64_t bins = (uint64_t)params[P_BINS].i, levels = (uint64_t)params[P_LEVELS].i;
    uint64_t start = (uint64_t)params[P_START].i;
    double eps = variant == KL_TRT ? params[P_SMOOTH].f : 0.0;
    *t = amax, *searched = 0;
    if (amax <= 0 || start > bins)
        return QCAL_OK;
    double *ref = malloc(3 * bins * sizeof *ref);
    kl_prefix s = {0};
    if (!ref)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    double *p = ref + bins, *q = p + bins, best = INFINITY, W = amax / (double)bins;
    hist_rebin(v, 0.0, amax, bins, ref);
    if (variant == KL_NVPQ && bins > 1)
        ref[0] = ref[1];
    if (!prefix_build(&s, ref, bins)) {
        free(ref);
        return fail(err, QCAL_E_NOMEM, "out of memory");
    }
    uint64_t last = variant == KL_NVPQ ? bins : bins - 1;
    for (uint64_t i = start < levels ? levels : start; i <= last; i++) {
        if (i / levels != s.lv.width)
            terms_for_width(&s, i / levels, levels);
        double kl = fast_divergence(&s, ref, i, bins, levels, eps);
        if (isnan(kl))
            kl = divergence(ref, i, bins, levels, eps, p, q);
        int better = variant == KL_NVPQ ? kl <= best : kl < best;
        if (isfinite(kl) && better) {
            best = kl, *searched = 1;
            *t = fmin(variant == KL_NVPQ ? (double)i * W : ((double)i + 0.5) * W, amax);
        }
    }
    prefix_free(&s);
    free(ref);
    return QCAL_OK;
}

/* ---- tpu: tpu-mlir's kl_diversity_hist ---------------------------------------------------- *
 * The histogram holds |x| without the exact zeros, `bins` bins centred on k w, w = amax /
 * (bins - 1) (bin 0 holds [0, w/2)), padded with empty bins to N, a multiple of `levels` (D).
 * Candidates i = D, 2D, ..., N. P = h[0..i) with the tail folded into P[i-1], divided by the
 * total count; Q spreads each of the D groups' mass over its non-empty bins and divides by the
 * in-range count S only (the folded tail is not in Q, which makes the search keep light tails
 * whole and cut sparse outliers hard). KL with log10 and +1e-30 on both sides; the first strict
 * minimum wins; threshold w i, clipped to amax (i = N reaches past it). qcal differs from
 * tpu-mlir in one respect: its histogram is exact (no growth step, no int32 counts). */

/* The histogram without its exact zeros: they all sit in the bin holding 0. */
static int counts_without_zeros(const hview *v, uint64_t **out, qcal_err *err)
{
    uint64_t *c = malloc(v->n * sizeof *c);
    if (!c)
        return fail(err, QCAL_E_NOMEM, "out of memory");
    memcpy(c, v->counts, v->n * sizeof *c);
    double at = floor(-v->lo / v->width); /* the bin holding 0 */
    if (v->zeros && !(at >= 0 && at < (double)v->n && c[(uint64_t)at] >= v->zeros)) {
        free(c);
        return fail(err, QCAL_E_DATA, "histogram statistic: %llu zeros, but the bin at 0 does "
                    "not hold them", (unsigned long long)v->zeros);
    }
    if (v->zeros)
        c[(uint64_t)at] -= v->zeros;
    *out = c;
    return QCAL_OK;
}

static double tpu_divergence(const double *h, uint64_t n, uint64_t i, uint64_t levels, double total)
{
    double in_range = 0, tail = 0, kl = 0;
    for (uint64_t j = 0; j < i; j++)
        in_range += h[j];
    for (uint64_t j = i - 1; j < n; j++)
        tail += h[j];
    uint64_t e = i / levels;
    for (uint64_t g = 0; g < i; g += e) {
        double mass = 0;
        uint64_t used = 0;
        for (uint64_t j = g; j < g + e; j++)
            mass += h[j], used += h[j] != 0;
        for (uint64_t j = g; j < g + e; j++) {
            double p = (j == i - 1 ? tail : h[j]) / total;
            double q = h[j] != 0 ? mass / (double)used / in_range : 0.0;
            if (p != 0) /* a zero P term adds 0 */
                kl += p * (log10(p + 1e-30) - log10(q + 1e-30));
        }
    }
    return kl;
}

/* The threshold into *t; *searched = 0 when there was nothing to search (no non-zero value). */
static int tpu_threshold(const hview *v, const qcal_value *params, double amax, double *t,
                         int *searched, qcal_err *err)
{
    uint64_t bins = (uint64_t)params[P_BINS].i, levels = (uint64_t)params[P_LEVELS].i;
    uint64_t padded = (bins + levels - 1) / levels * levels;
    *t = amax, *searched = 0;
    if (v->zeros == UINT64_MAX)
        return fail(err, QCAL_E_DATA, "kl variant tpu needs the count of exact zeros, which "
                    "this histogram statistic lacks");
    if (!(amax > 0) || v->zeros == v->count)
        return QCAL_OK;
    uint64_t *counts = NULL;
    int rc = counts_without_zeros(v, &counts, err);
    if (rc)
        return rc;
    double *h = calloc(padded, sizeof *h);
    if (!h) {
        free(counts);
        return fail(err, QCAL_E_NOMEM, "out of memory");
    }
    hview nonzero = *v;
    nonzero.counts = counts;
    double w = amax / (double)(bins - 1), best = INFINITY;
    hist_rebin(&nonzero, -0.5 * w, ((double)bins - 0.5) * w, bins, h);
    double total = (double)(v->count - v->zeros);
    for (uint64_t i = levels; i <= padded; i += levels) {
        double kl = tpu_divergence(h, padded, i, levels, total);
        if (kl < best)
            best = kl, *t = fmin(w * (double)i, amax);
    }
    *searched = 1;
    free(h);
    free(counts);
    return QCAL_OK;
}

static int kl_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                       qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    if ((uint64_t)params[P_LEVELS].i > (uint64_t)params[P_BINS].i)
        return fail(err, QCAL_E_INVAL, "levels must not exceed bins");
    hview v;
    int rc = hist_view_for(stat, spec, n_ranges, &v, err);
    if (rc)
        return rc;
    if (!v.abs && v.smin < 0)
        return fail(err, QCAL_E_KIND, "entropy calibration needs a histogram of |x| (observe "
                    "histogram with abs=true)");
    double amax = v.abs ? v.max : fmax(fabs(v.smin), fabs(v.smax));
    int searched;
    double t;
    rc = params[P_VARIANT].i == KL_TPU ? tpu_threshold(&v, params, amax, &t, &searched, err)
                                       : kl_threshold(&v, params, amax, &t, &searched, err);
    if (rc)
        return rc;
    note_constant(err, v.smin, v.smax);
    if (!searched && v.smin != v.smax)
        note_add(err, "no candidate threshold has a finite divergence: the threshold is max|x|");
    int is_signed = (spec->flags & QCAL_QSPEC_SIGNED) != 0;
    ranges[0] = (qcal_range){is_signed || v.smin < 0 ? -t : 0.0, t};
    return QCAL_OK;
}

static const char *const kl_variants[] = {"trt", "nvpq", "tpu", NULL};
static const qcal_param kl_params[] = {
    {.name = "variant", .type = QCAL_PARAM_CHOICE, .def = {.i = KL_TRT}, .choices = kl_variants,
     .help = "trt: Migacz 2017 as published; nvpq: NVIDIA pytorch-quantization; tpu: "
             "tpu-mlir (zeros left out, centred bins, candidates every `levels` bins)"},
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 65536,
     .help = "reference histogram bins over [0, max|x|] (tpu: centred on k max|x| / (bins - 1))"},
    {.name = "levels", .type = QCAL_PARAM_INT, .def = {.i = 128}, .min = 2, .max = 4096,
     .help = "quantized levels (int8 magnitudes: 128)"},
    {.name = "start", .type = QCAL_PARAM_INT, .def = {.i = 128}, .min = 1, .max = 65536,
     .help = "first candidate bin"},
    {.name = "smooth", .type = QCAL_PARAM_FLOAT, .def = {.f = 0.0001}, .min = 0, .max = 0.1,
     .help = "trt: epsilon smoothing of empty bins (0: literal)"},
};

const qcal_estimator hist_kl = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "kl",
    .help = "entropy calibration: the threshold minimising KL(P || Q) (TensorRT)",
    .accepts = histogram_kinds,
    .n_params = 5,
    .params = kl_params,
    .estimate = kl_estimate,
};
