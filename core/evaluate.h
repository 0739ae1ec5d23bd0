/* evaluate.h - the evaluation pass: the exact quantize-dequantize error of candidate ranges
 *
 * A strategy declares, per tensor, candidates (a range and a spec each) and optionally a
 * layer that consumes the tensor. One pass over the dump (pass.c, on the worker threads) then
 * measures for every candidate of every tensor:
 *   - the tensor's own error: x against fake_quant(x) over every finite value;
 *   - with a layer: the error of the layer's output, y = layer(x, W) against
 *     y_q = layer(fake_quant(x), fake_quant(W)) (weights quantized as the strategy says),
 *     over the samples whose values are all finite.
 * The sums are float64 (qmath_err), so the metrics follow qmath (mse, sqnr_db, cosine) and,
 * for layers, tpu-mlir's auto-tune distance: the mean over samples of ||y - y_q||_2 / ||y||_1.
 *
 * The pass runs an internal observer (statistic kind "qcal.evaluation"); eval_observer()
 * gives it, and an eval_set is passed to it as its single parameter.
 */
#ifndef QCAL_EVALUATE_H
#define QCAL_EVALUATE_H

#include <stdint.h>

#include "error.h"
#include "hstat.h"
#include "layer.h"
#include "qmath.h"
#include "registry.h"

/* One candidate: the spec and, per channel of spec.axis (or once), its scale and zero-point. */
typedef struct eval_candidate {
    qcal_qspec spec;
    uint64_t channels;  /* 1, or the tensor's dims[spec.axis] */
    uint64_t inner;     /* values per channel step within a sample (per channel only) */
    float *scale;       /* [channels] */
    int64_t *zero_point;/* [channels] */
} eval_candidate;

typedef struct eval_set {
    char *tensor;
    uint64_t n;                 /* candidates */
    eval_candidate *cand;
    const layer *layer;         /* NULL: the tensor's own error only */
    layer_geom geom;
    float *w_ref, *w_q;         /* packed float weights, and packed fake-quantized weights */
} eval_set;

/* A set for a tensor of `rank` dims (axis 0: samples). Each candidate's ranges (lo/hi of
 * `channels[k]` values) become scales and zero-points by qmath; errors name the tensor and
 * the candidate. */
int eval_set_new(const char *tensor, int rank, const uint64_t *dims, uint64_t n,
                 const qcal_qspec *specs, const uint64_t *channels, const double *const *lo,
                 const double *const *hi, eval_set **out, qerror *e);
/* Judges the candidates also by the output of layer l, whose weights are fake-quantized with
 * weight_spec (per tensor, or per output channel when per-channel), from their min and max. */
int eval_set_layer(eval_set *s, const layer *l, const qcal_qspec *weight_spec, int rank,
                   const uint64_t *dims, qerror *e);
void eval_set_free(eval_set *s);

/* The internal observer; its one parameter (.i) is an eval_set pointer that must outlive the
 * pass. */
const reg_observer *eval_observer(void);

/* Per candidate, read back from the finalized "qcal.evaluation" statistic. */
typedef struct eval_result {
    qmath_err tensor;       /* the tensor's own error */
    qmath_err layer;        /* the layer output's error (n == 0 without a layer) */
    double ratio_sum;       /* sum over samples of ||y - y_q||_2 / ||y||_1 */
    uint64_t samples;       /* samples in the layer error */
    uint64_t skipped;       /* samples left out of it (non-finite input, all-zero output) */
} eval_result;

/* Fills out[n] from a finalized statistic of a set of n candidates. */
int eval_results(const hstat *st, uint64_t n, eval_result *out, qerror *e);
/* tpu-mlir's distance: the mean over samples of ||y - y_q||_2 / ||y||_1; NaN without
 * samples. */
double eval_layer_error(const eval_result *r);

#endif
