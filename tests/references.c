/* references.c - calibration algorithms written plainly on raw values, for tests to compare
 * the plugins against (slow, literal transcriptions of the published descriptions). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "references.h"

float ref_quantile_sorted(const float *sorted, size_t n, double q)
{
    double h = (double)(n - 1) * q;
    size_t lo = (size_t)floor(h), hi = lo + 1 < n ? lo + 1 : lo;
    return (float)((double)sorted[lo] + (h - (double)lo) * ((double)sorted[hi] - (double)sorted[lo]));
}

/* TensorRT's entropy threshold, literally, on a 2048-bin |x| histogram built here from the raw
 * values; Q is built level by level (bins [ceil(l i / L), ceil((l + 1) i / L))). nvpq: H[0] :=
 * H[1], i up to 2048 inclusive, last argmin, threshold i W. eps: ORT smoothing (trt only). */
double ref_kl_trt(const float *x, size_t n, int nvpq, double eps)
{
    return ref_kl_trt_curve(x, n, nvpq, eps, NULL);
}

double ref_kl_trt_curve(const float *x, size_t n, int nvpq, double eps, double *curve)
{
    return ref_kl_trt_levels(x, n, nvpq, eps, 128, curve);
}

double ref_kl_trt_levels(const float *x, size_t n, int nvpq, double eps, int L, double *curve)
{
    enum { B = 2048 };
    static double h[B], p[B], q[B];
    double amax = 0;
    for (size_t k = 0; k < n; k++)
        amax = fmax(amax, fabs((double)x[k]));
    double W = amax / B, best = INFINITY, t = amax;
    memset(h, 0, sizeof h);
    for (size_t k = 0; k < n; k++) {
        size_t j = (size_t)(fabs((double)x[k]) / W);
        h[j < B ? j : B - 1] += 1;
    }
    if (nvpq)
        h[0] = h[1];
    for (int i = 128; i <= (nvpq ? B : B - 1); i++) {
        double outliers = 0;
        for (int j = i; j < B; j++)
            outliers += h[j];
        for (int j = 0; j < i; j++)
            p[j] = h[j], q[j] = 0;
        p[i - 1] += outliers;
        for (int l = 0; l < L; l++) {
            int a = (int)ceil((double)l * i / L), b = (int)ceil((double)(l + 1) * i / L);
            double sum = 0;
            int used = 0;
            for (int j = a; j < b; j++)
                sum += h[j], used += h[j] > 0;
            for (int j = a; j < b; j++)
                q[j] = h[j] > 0 ? sum / used : 0;
        }
        for (int pass = 0; eps > 0 && pass < 2; pass++) { /* smooth p, then q */
            double *d = pass ? q : p;
            int zeros = 0;
            for (int j = 0; j < i; j++)
                zeros += d[j] == 0;
            for (int j = 0; j < i; j++)
                d[j] = d[j] == 0 ? eps : d[j] - eps * zeros / (i - zeros);
        }
        double sp = 0, sq = 0, kl = 0;
        for (int j = 0; j < i; j++)
            sp += p[j], sq += q[j];
        for (int j = 0; j < i && isfinite(kl); j++)
            if (p[j] > 0)
                kl = q[j] > 0 ? kl + p[j] / sp * log(p[j] / sp * sq / q[j]) : INFINITY;
        if (curve)
            curve[i] = kl;
        if (isfinite(kl) && (nvpq ? kl <= best : kl < best)) {
            best = kl;
            t = nvpq ? i * W : (i + 0.5) * W;
        }
    }
    return t;
}

/* tpu-mlir's kl_diversity_hist, transcribed on the raw values: |x| without the exact zeros in
 * 2048 bins centred on k w (w = amax / 2047, bin round-half-up(|x| / w)); candidates i = 128,
 * 256, ..., 2048; P[j] = h[j] (tail summed into P[i-1]) over the whole count; Q[j] = the mass
 * of j's group of i/128 bins over its non-empty bins, over the in-range count, 0 where h[j] is
 * 0; KL in log10 with 1e-30; first strict minimum; threshold w i, at most amax. */
double ref_kl_tpu(const float *x, size_t n)
{
    enum { B = 2048, D = 128 };
    static double h[B];
    double amax = 0, count = 0, best = INFINITY, t;
    for (size_t k = 0; k < n; k++)
        amax = fmax(amax, fabs((double)x[k]));
    double w = amax / (B - 1);
    memset(h, 0, sizeof h);
    for (size_t k = 0; k < n; k++) {
        if (x[k] == 0)
            continue;
        size_t j = (size_t)floor(fabs((double)x[k]) / w + 0.5);
        h[j < B ? j : B - 1] += 1, count += 1;
    }
    t = amax;
    for (int i = D; count > 0 && i <= B; i += D) {
        int e = i / D;
        double in_range = 0, kl = 0;
        for (int j = 0; j < i; j++)
            in_range += h[j];
        for (int j = 0; j < i; j++) {
            double p = h[j], mass = 0;
            for (int k = i; j == i - 1 && k < B; k++)
                p += h[k];
            int nonempty = 0;
            for (int k = j / e * e; k < j / e * e + e; k++)
                mass += h[k], nonempty += h[k] > 0;
            double q = h[j] > 0 ? mass / nonempty / in_range : 0;
            kl += p / count * (log10(p / count + 1e-30) - log10(q + 1e-30));
        }
        if (kl < best)
            best = kl, t = fmin(w * i, amax);
    }
    return t;
}

/* ---- layers ---------------------------------------------------------------------------- */

/* y[r][o] = b[o] + sum_i x[r][i] w[o][i], in double. */
void ref_linear(const float *x, uint64_t rows, uint64_t in, const float *w,
                         const float *b, uint64_t out, double *y)
{
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0;
            for (uint64_t i = 0; i < in; i++)
                s += (double)x[r * in + i] * w[o * in + i];
            y[r * out + o] = s;
        }
}

/* The textbook convolution: y[o][p][q] = b[o] + sum over the group's channels and kernel of
 * x[c][p s - pad + i][q s - pad + j] w[o][c'][i][j], positions outside the input skipped. */
void ref_conv2d(const float *x, uint64_t C, uint64_t H, uint64_t W, const float *w,
                       const float *b, uint64_t O, uint64_t kh, uint64_t kw, const uint64_t s[2],
                       const uint64_t pad[2], uint64_t groups, double *y, uint64_t *oh, uint64_t *ow)
{
    *oh = (H + 2 * pad[0] - kh) / s[0] + 1, *ow = (W + 2 * pad[1] - kw) / s[1] + 1;
    uint64_t cg = C / groups, og = O / groups;
    for (uint64_t o = 0; o < O; o++)
        for (uint64_t p = 0; p < *oh; p++)
            for (uint64_t q = 0; q < *ow; q++) {
                double sum = b ? b[o] : 0;
                uint64_t g = o / og;
                for (uint64_t c = 0; c < cg; c++)
                    for (uint64_t i = 0; i < kh; i++)
                        for (uint64_t j = 0; j < kw; j++) {
                            long r = (long)(p * s[0] + i) - (long)pad[0], t = (long)(q * s[1] + j) - (long)pad[1];
                            if (r < 0 || t < 0 || r >= (long)H || t >= (long)W)
                                continue;
                            sum += (double)x[((g * cg + c) * H + (uint64_t)r) * W + (uint64_t)t] *
                                   w[((o * cg + c) * kh + i) * kw + j];
                        }
                y[(o * *oh + p) * *ow + q] = sum;
            }
}

/* ---- quantization ------------------------------------------------------------------------ */

void ref_grid(double lo, double hi, int symmetric, int is_signed, int narrow, int bits,
              long long qmin, long long qmax, float *scale, long long *zero_point)
{
    float neg = (float)lo < 0 ? (float)lo : 0.0f, pos = (float)hi > 0 ? (float)hi : 0.0f;
    float s;
    long long zp;
    if (symmetric) {
        float m = -neg > pos ? -neg : pos;
        s = m / ((float)(qmax - qmin) / 2.0f);
        zp = is_signed ? 0 : narrow ? (qmin + qmax) / 2 : qmin + (1LL << (bits - 1));
    } else {
        s = (pos - neg) / (float)(qmax - qmin);
        if (s < FLT_EPSILON)
            s = FLT_EPSILON;
        zp = qmin - (long long)nearbyintf(neg / s);
        zp = zp < qmin ? qmin : zp > qmax ? qmax : zp;
    }
    *scale = s < FLT_EPSILON ? FLT_EPSILON : s;
    *zero_point = zp;
}

float ref_fake_quant(float x, float scale, long long zp, long long qmin, long long qmax)
{
    float q = (float)zp + nearbyintf(x * (1.0f / scale));
    long long qi = isnan(q) ? qmin : q < (float)qmin ? qmin : q > (float)qmax ? qmax : (long long)q;
    return (float)(qi - zp) * scale;
}
