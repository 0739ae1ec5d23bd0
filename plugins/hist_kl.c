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
 * the sum). Likewise log(Q - take_q) = log Q + log(1 - take_q / Q), and log Q is cached per
 * level. Candidates outside these bounds (fractional bins below 16 t or 8 take_q) take
 * divergence(), which also keeps its exact rules for those cases. The two agree to about
 * 1e-11 of the KL (the sums cancel); KL below 1e-12 counts as 0, so exact ties stay ties.
 * 1.2 ms per tensor for trt, 0.9 for nvpq (bench_estimators, against 35 and 31 before). */

enum { SERIES = 12 }; /* powers r^-1 .. r^-12 */

typedef struct kl_prefix {
    double *mass;                     /* sum of ref[0..k) (exact for integer counts) */
    long double *rlogr, *logr;        /* sums of r log r, log r over r > 0 in ref[0..k) */
    double *reciprocal;               /* 1 / k */
    double *inv[SERIES + 1];          /* inv[m][k]: sum of r^-m over r > 0 in ref[0..k) */
    double *minpos;                   /* least positive r in ref[0..k); INFINITY if none */
    uint64_t *zeros;                  /* empty bins in ref[0..k) */
    void *block;
    /* log Q and 1 / Q of the levels [lo, lo + width) at narrow[lo], of [lo, lo + width + 1)
     * at wide[lo], NAN until first used. Candidate i's levels are i / L or i / L + 1 bins
     * wide and recur over the candidates (2048 bins, 128 levels: 18,748 distinct levels of
     * 245,888); when i / L steps up the wide ones become the narrow ones. */
    double (*narrow)[2], (*wide)[2];
    uint64_t width;
} kl_prefix;

static void prefix_free(kl_prefix *s)
{
    free(s->block);
}

static void forget_levels(double (*levels)[2], uint64_t n)
{
    for (uint64_t k = 0; k < n; k++)
        levels[k][0] = NAN;
}

/* Makes the level caches those of candidate i's two widths. */
static void levels_for(kl_prefix *s, uint64_t i, uint64_t levels, uint64_t bins)
{
    uint64_t width = i / levels;
    if (width == s->width)
        return;
    if (width == s->width + 1) {
        double(*was_narrow)[2] = s->narrow;
        s->narrow = s->wide, s->wide = was_narrow;
    } else {
        forget_levels(s->narrow, bins + 1);
    }
    forget_levels(s->wide, bins + 1);
    s->width = width;
}

/* log Q and 1 / Q of the level [lo, hi) holding nz > 0 non-empty bins of mass m */
static const double *level_log(kl_prefix *s, uint64_t lo, uint64_t hi, double m, uint64_t nz)
{
    double *at = (hi - lo == s->width ? s->narrow : s->wide)[lo];
    if (isnan(at[0])) {
        double q = m * s->reciprocal[nz];
        at[0] = log(q), at[1] = 1 / q;
    }
    return at;
}

static int prefix_build(kl_prefix *s, const double *ref, uint64_t bins)
{
    uint64_t n = bins + 1;
    s->block = malloc(n * (2 * sizeof(long double) + (SERIES + 7) * sizeof(double) +
                           sizeof(uint64_t)));
    if (!s->block)
        return 0;
    s->narrow = s->block, s->wide = s->narrow + n, s->width = 0;
    forget_levels(s->narrow, n), forget_levels(s->wide, n);
    s->rlogr = (long double *)(s->wide + n), s->logr = s->rlogr + n;
    double *d = (double *)(s->logr + n);
    s->mass = d, s->reciprocal = d + n, d += 2 * n;
    for (int m = 1; m <= SERIES; m++, d += n)
        s->inv[m] = d;
    s->minpos = d, s->zeros = (uint64_t *)(d + n);
    s->mass[0] = 0, s->rlogr[0] = s->logr[0] = 0, s->reciprocal[0] = 0, s->minpos[0] = INFINITY;
    s->zeros[0] = 0;
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
        s->reciprocal[j + 1] = 1.0 / (double)(j + 1);
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

/* log(1 - u) = -sum_k=1..terms u^k / k */
static double log1m_series(double u, int terms)
{
    static const double inv_k[] = {0, 1, 1. / 2, 1. / 3, 1. / 4, 1. / 5, 1. / 6, 1. / 7, 1. / 8,
                                   1. / 9, 1. / 10, 1. / 11, 1. / 12, 1. / 13, 1. / 14, 1. / 15,
                                   1. / 16, 1. / 17, 1. / 18, 1. / 19, 1. / 20};
    double sum = 0;
    for (int k = terms; k >= 1; k--)
        sum = sum * u + inv_k[k];
    return -u * sum;
}

/* log(1 - u) for 0 <= u <= 1/8, the series cut where u^(terms + 1) <= 1e-16 (a level's term
 * w log(1 - u) then errs by under 1e-16 w, the KL by under 1e-16).
 * Levels differ in u by orders of magnitude, so each takes its own number of terms. */
static double log1m(double u)
{
    /* u_max[k]: the largest u that k terms serve, 1e-16^(1 / (k + 1)) */
    static const double u_max[] = {0, 1e-8, 4.6415888e-6, 1e-4, 6.3095734e-4, 2.1544347e-3,
                                   5.1794747e-3, 1e-2, 1.6681005e-2, 2.5118864e-2,
                                   3.5111917e-2, 4.6415888e-2, 5.8780161e-2, 7.1968567e-2,
                                   8.5769590e-2, 0.1, 0.11441248, 0.12915497};
    int terms = 1;
    while (u > u_max[terms])
        terms++;
    return log1m_series(u, terms);
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
    long double plogp = sum_rlogr_shifted(s, i - 1, take_p), plogq = 0;
    /* log(Q - take_q) = log Q + log(1 - take_q / Q), Q >= the least non-empty bin */
    if (isnan(plogp) || (last_p > 0 && !(last_p - take_p > 0)) || !(take_q * 8 <= s->minpos[i]))
        return NAN;
    /* level l holds bins [ceil(l i / L), ceil((l + 1) i / L)); hi steps by i / L, remainder r */
    uint64_t lo = 0, hi = (i + levels - 1) / levels, rem = (i + levels - 1) % levels;
    uint64_t step = i / levels, step_rem = i % levels;
    double last_logq = 0, sum = 0, mass_lo = 0;
    uint64_t zeros_lo = 0; /* each level's top is the next one's bottom: loaded once */
    for (uint64_t l = 0; l < levels; l++) {
        double mass_hi = s->mass[hi], m = mass_hi - mass_lo;
        uint64_t zeros_hi = s->zeros[hi], nz = (hi - lo) - (zeros_hi - zeros_lo);
        if (nz) {
            const double *lq = level_log(s, lo, hi, m, nz);
            last_logq = take_q > 0 ? lq[0] + log1m(take_q * lq[1]) : lq[0];
            sum += (m - (double)nz * take_p) * last_logq;
        }
        lo = hi, mass_lo = mass_hi, zeros_lo = zeros_hi, hi += step, rem += step_rem;
        if (rem >= levels)
            hi++, rem -= levels;
    }
    plogq = sum;
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
        levels_for(&s, i, levels, bins);
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
