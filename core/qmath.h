/* qmath.h - quantization math, in one place: spec -> grid, range -> scale / zero-point,
 * fake-quantize and error metrics. Follows torch.ao.quantization bit for bit. */
#ifndef QCAL_QMATH_H
#define QCAL_QMATH_H

#include <stdint.h>

#include "error.h"
#include "qcal/plugin.h"

/* Builds a spec: bits 2..16, flags QCAL_QSPEC_*, axis (>= 1 when per-channel; ignored and
 * stored as -1 otherwise). Returns -1 (QERR_USAGE) for anything else.
 * Derives qmin/qmax: signed [-2^(b-1), 2^(b-1)-1] (narrow: qmin + 1), unsigned [0, 2^b-1]
 * (narrow: qmax - 1). */
int qmath_spec(qcal_qspec *out, int bits, uint32_t flags, int axis, qerror *e);

/* range -> (scale, zero_point), exactly as torch's _calculate_qparams computes in float32:
 *   lo' = min(lo, 0), hi' = max(hi, 0)
 *   symmetric: amax = max(-lo', hi'), scale = amax / ((qmax - qmin) / 2);
 *              zero_point = 0 when signed; unsigned: qmin + 2^(bits-1) on a full grid
 *              (torch's 128 for quint8 and 2^15 for uint16; torch takes (qmin + qmax) // 2
 *              = 7 for a custom 4-bit grid where we give 8: the signed grid shifted, the
 *              same for every width), (qmin + qmax) / 2 on a narrow grid (127 for [0, 254],
 *              as torch, so the grid stays centred)
 *   affine:    scale = (hi' - lo') / (qmax - qmin),
 *              zero_point = clamp(qmin - round_half_even(lo' / scale), qmin, qmax)
 *   scale = max(scale, FLT_EPSILON), applied before the zero-point is computed.
 * lo and hi are first rounded to float32 (torch's min_val / max_val), and every step is one
 * float32 operation, so the scale is a float32 value stored in a double.
 * Returns -1 (QERR_DATA) for a non-finite or inverted range, or one beyond float32. */
int qmath_qparams(const qcal_qspec *spec, double lo, double hi, double *scale,
                  int64_t *zero_point, qerror *e);

/* Symmetric threshold of a range: max(|lo|, |hi|). */
double qmath_threshold(double lo, double hi);

/* Quantize-dequantize one value exactly as torch's CPU fake_quantize_per_tensor_affine
 * (_fake_quantize_tensor_helper) does, all in float32:
 *   inv = 1.0f / scale; q = zp + nearbyintf(x * inv)   (multiply by the reciprocal, not a
 *   division: torch's choice, which can differ from x / scale in the last bit)
 *   q = clamp(q, qmin, qmax), NaN -> qmin;  return (float)(q - zp) * scale.
 * So +-Inf map to the grid's ends and NaN to qmin, as in torch >= 2.1. Round half to even
 * assumes the default rounding mode, which plugins may not change. */
float qmath_fake_quant(float x, float scale, int64_t zero_point, int64_t qmin, int64_t qmax);

/* out[i] = qmath_fake_quant(x[i], ...) for n values (out may be x). */
void qmath_fake_quant_n(const float *x, float *out, uint64_t n, float scale, int64_t zero_point,
                        int64_t qmin, int64_t qmax);

/* Error of a quantize-dequantize: sums in float64, mergeable (merging in a fixed order gives
 * reproducible results; a different order may change the last bits). */
typedef struct qmath_err {
    uint64_t n;
    double sum_sq_err; /* sum (x - q)^2 */
    double sum_sq_ref; /* sum x^2 */
    double sum_sq_q;   /* sum q^2 */
    double dot;        /* sum x * q */
} qmath_err;

/* Start from a zeroed qmath_err. x is the reference, q its quantize-dequantize. Non-finite
 * values propagate into the sums (and so into the metrics) as NaN / Inf. */
void qmath_err_add(qmath_err *acc, const float *x, const float *q, uint64_t n);
/* qmath_err_add(acc, x, fake_quant(x), n) over the pairs whose x is finite (NaN and Inf are
 * left out, as the observers leave them out), without the buffer between, vectorized
 * (SSE2; AVX2 with FMA where the CPU has them): products are summed in float32 within blocks
 * of 256 values (float64 for blocks with |x| above 2^50 or below 2^-40, whose float32 squares
 * would overflow or underflow), so the sums agree with it to about 1e-7 relative (identically on machines
 * of the same kind: with FMA or without). */
void qmath_fake_quant_err(qmath_err *acc, const float *x, uint64_t n, float scale,
                          int64_t zero_point, int64_t qmin, int64_t qmax);
/* The same computed without SIMD, accumulating as this CPU's form does (with fmaf where it
 * has FMA); tests compare the two bit for bit. */
void qmath_fake_quant_err_portable(qmath_err *acc, const float *x, uint64_t n, float scale,
                                   int64_t zero_point, int64_t qmin, int64_t qmax);
/* qmath_fake_quant_err in two steps, for measuring many grids on the same values: the first
 * copies x to clean with NaN and Inf replaced by 0, adds sum x^2 of the finite values to
 * *sum_sq_ref, stores the min and max of each block of QMATH_CLEAN_BLOCK clean values in
 * extrema (2 ceil(n / QMATH_CLEAN_BLOCK) floats) and returns the count of finite values (for
 * acc->n and acc->sum_sq_ref of every grid); the second adds sum_sq_err and sum_sq_q of one
 * grid over the n clean values from offset `at` of such a run (clean and extrema as the first
 * step filled them; the extrema let blocks inside the grid skip its clamp), and dot.
 * qmath_fake_quant_err is these steps over runs of 4096 values, bit for bit. */
enum { QMATH_CLEAN_BLOCK = 256 };
uint64_t qmath_clean_run(const float *x, uint64_t n, float *clean, float *extrema,
                         double *sum_sq_ref);
void qmath_grid_err(qmath_err *acc, const float *clean, const float *extrema, uint64_t at,
                    uint64_t n, float scale, int64_t zero_point, int64_t qmin, int64_t qmax);
void qmath_err_merge(qmath_err *into, const qmath_err *from);
/* sum_sq_err / n; 0 when n == 0. */
double qmath_mse(const qmath_err *acc);
/* 10 log10(sum_sq_ref / sum_sq_err); +inf when the error is 0 (also for an all-zero signal
 * or n == 0: nothing was lost), -inf when the error is > 0 but the signal is 0. */
double qmath_sqnr_db(const qmath_err *acc);
/* dot / (sqrt(sum_sq_ref) sqrt(sum_sq_q)), clamped to [-1, 1]; 1 when both norms are 0,
 * 0 when exactly one is. */
double qmath_cosine(const qmath_err *acc);

#endif
