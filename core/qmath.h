/* qmath.h - quantization math, in one place: spec -> grid, range -> scale / zero-point,
 * fake-quantize and error metrics. Follows torch.ao.quantization bit for bit. */
#ifndef QCAL_QMATH_H
#define QCAL_QMATH_H

#include <stdint.h>

#include "error.h"
#include "qcal/plugin.h"

/* Builds a spec: bits 2..16, flags QCAL_QSPEC_*, axis (>= 1 when per-channel, else -1).
 * Derives qmin/qmax: signed [-2^(b-1), 2^(b-1)-1] (narrow: qmin + 1), unsigned [0, 2^b-1]
 * (narrow: qmax - 1). */
int qmath_spec(qcal_qspec *out, int bits, uint32_t flags, int axis, qerror *e);

/* range -> (scale, zero_point), exactly as torch's _calculate_qparams computes in float32:
 *   lo' = min(lo, 0), hi' = max(hi, 0)
 *   symmetric: amax = max(-lo', hi'), scale = amax / ((qmax - qmin) / 2);
 *              zero_point = 0 when signed, qmin + 2^(bits-1) when unsigned (torch's 128)
 *   affine:    scale = (hi' - lo') / (qmax - qmin),
 *              zero_point = clamp(qmin - round_half_even(lo' / scale), qmin, qmax)
 *   scale = max(scale, FLT_EPSILON).
 * Returns -1 (QERR_DATA) for a non-finite or inverted range. */
int qmath_qparams(const qcal_qspec *spec, double lo, double hi, double *scale,
                  int64_t *zero_point, qerror *e);

/* Symmetric threshold of a range: max(|lo|, |hi|). */
double qmath_threshold(double lo, double hi);

/* Quantize-dequantize one value as torch.fake_quantize_per_tensor_affine does:
 * q = clamp(round_half_even(x / scale) + zp, qmin, qmax); return (q - zp) * scale. */
float qmath_fake_quant(float x, float scale, int64_t zero_point, int64_t qmin, int64_t qmax);

/* Error of a quantize-dequantize, accumulated exactly mergeable in float64. */
typedef struct qmath_err {
    uint64_t n;
    double sum_sq_err; /* sum (x - q)^2 */
    double sum_sq_ref; /* sum x^2 */
    double sum_sq_q;   /* sum q^2 */
    double dot;        /* sum x * q */
} qmath_err;

void qmath_err_add(qmath_err *acc, const float *x, const float *q, uint64_t n);
void qmath_err_merge(qmath_err *into, const qmath_err *from);
double qmath_mse(const qmath_err *acc);     /* sum_sq_err / n */
double qmath_sqnr_db(const qmath_err *acc); /* 10 log10(sum_sq_ref / sum_sq_err); +inf when exact */
double qmath_cosine(const qmath_err *acc);  /* dot / sqrt(sum_sq_ref sum_sq_q); 1 when both 0 */

#endif
