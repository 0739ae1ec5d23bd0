/* references.c - calibration algorithms written plainly on raw values, for tests to compare
 * the plugins against (slow, literal transcriptions of the published descriptions). */
#include <math.h>
#include <string.h>

#include "references.h"

/* TensorRT's entropy threshold, literally, on a 2048-bin |x| histogram built here from the raw
 * values; Q is built level by level (bins [ceil(l i / L), ceil((l + 1) i / L))). nvpq: H[0] :=
 * H[1], i up to 2048 inclusive, last argmin, threshold i W. eps: ORT smoothing (trt only). */
double ref_kl_trt(const float *x, size_t n, int nvpq, double eps)
{
    enum { B = 2048, L = 128 };
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

