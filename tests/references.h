/* references.h - plain reference implementations of calibration algorithms, for tests */
#ifndef QCAL_TEST_REFERENCES_H
#define QCAL_TEST_REFERENCES_H

#include <stddef.h>
#include <stdint.h>

/* TensorRT entropy threshold (nvpq = 0: Migacz 2017 as published, eps = smoothing; nvpq = 1:
 * NVIDIA pytorch-quantization) on 2048 bins of |x| over [0, max|x|], 128 levels. */
double ref_kl_trt(const float *x, size_t n, int nvpq, double eps);
/* The same, with curve[i] := the divergence of candidate i (INFINITY where it has none) for
 * each candidate i (curve holds 2049 entries; NULL: not wanted). */
double ref_kl_trt_curve(const float *x, size_t n, int nvpq, double eps, double *curve);
/* The same with L levels (L <= 128) */
double ref_kl_trt_levels(const float *x, size_t n, int nvpq, double eps, int L, double *curve);
/* numpy.quantile(sorted, q) with linear interpolation, on values sorted ascending */
float ref_quantile_sorted(const float *sorted, size_t n, double q);
/* tpu-mlir's KL threshold on |x| without exact zeros (2048 centred bins, 128 levels). */
double ref_kl_tpu(const float *x, size_t n);

/* A linear layer in float64: y[r][o] = b[o] + sum_i x[r][i] w[o][i] (b may be NULL). */
void ref_linear(const float *x, uint64_t rows, uint64_t in, const float *w, const float *b,
                uint64_t out, double *y);
/* The textbook conv2d of one sample x[C][H][W] with w[O][C/groups][kh][kw], stride s, zero
 * padding pad; y[O][oh][ow] in float64, oh / ow returned. */
void ref_conv2d(const float *x, uint64_t C, uint64_t H, uint64_t W, const float *w,
                const float *b, uint64_t O, uint64_t kh, uint64_t kw, const uint64_t s[2],
                const uint64_t pad[2], uint64_t groups, double *y, uint64_t *oh, uint64_t *ow);

/* torch's quantization grid of a range [lo, hi] (widened to hold 0), in float32 as torch
 * computes it: affine scale (hi - lo) / (qmax - qmin) and zero point qmin - round(lo / scale);
 * symmetric scale max(-lo, hi) / ((qmax - qmin) / 2) and zero point 0 (signed) or the
 * middle of the grid; scales below FLT_EPSILON become FLT_EPSILON. */
void ref_grid(double lo, double hi, int symmetric, int is_signed, int narrow, int bits,
              long long qmin, long long qmax, float *scale, long long *zero_point);
/* torch's fake_quantize: (clamp(zp + nearbyint(x * (1 / scale)), qmin, qmax) - zp) * scale,
 * NaN to qmin. */
float ref_fake_quant(float x, float scale, long long zp, long long qmin, long long qmax);

#endif
