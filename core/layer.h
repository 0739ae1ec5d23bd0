/* layer.h - layers described under /layers/<name> (linear, conv2d) and their forward math.
 *
 * A strategy may judge a candidate range of an activation by the error it causes in the output
 * of the layer that consumes it (tpu-mlir's auto-tune). This is that layer's math: linear and
 * conv2d (stride, padding, groups; dilation 1) by im2col and a blocked GEMM, in float32 with
 * a fixed summation order, so results do not depend on threads or slab sizes.
 *
 * Dump contract (DESIGN.md): group /layers/<name>, attributes `type` ("linear" | "conv2d"),
 * `input` (the activation's name), `stride`, `padding` (int or int[2], default 1 and 0),
 * `groups` (int, default 1); datasets `weight` (linear [out, in]; conv2d [O, C/groups, kh, kw])
 * and optional `bias` [out].
 */
#ifndef QCAL_LAYER_H
#define QCAL_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum { LAYER_LINEAR = 1, LAYER_CONV2D = 2 };

typedef struct layer {
    char *name;          /* the group's name under /layers */
    char *input;         /* name of the activation it consumes */
    int type;            /* LAYER_* */
    uint64_t out_ch;     /* out_features / O */
    uint64_t in_ch;      /* in_features / C (all groups) */
    uint64_t kh, kw;     /* conv2d kernel (1, 1 for linear) */
    uint64_t stride[2], padding[2], groups;
    float *weight;       /* as stored: linear [out, in]; conv2d [O, C/groups, kh, kw] */
    uint64_t weight_size;
    float *bias;         /* [out_ch] or NULL */
} layer;

/* Reads every group under /layers of the HDF5 file at path (none: *n = 0). Any malformed
 * layer is an error naming the file and the layer. */
int layers_load(const char *path, layer **out, size_t *n, qerror *e);
void layers_free(layer *layers, size_t n);

/* How one sample of the consumed activation maps through the layer. */
typedef struct layer_geom {
    uint64_t rows;           /* linear: vectors per sample (product of the leading dims) */
    uint64_t in_h, in_w;     /* conv2d: input plane */
    uint64_t out_h, out_w;   /* conv2d: output plane */
    uint64_t in_size;        /* values per input sample */
    uint64_t out_size;       /* values per output sample */
    uint64_t scratch;        /* floats of scratch layer_forward needs */
} layer_geom;

/* Checks that a sample of the activation (dims without axis 0, rank >= 1) fits the layer:
 * linear takes [..., in]; conv2d takes [C, H, W]. Errors name the layer, the activation and
 * the shapes. */
int layer_geometry(const layer *l, const char *activation, const uint64_t *sample_dims,
                   int sample_rank, layer_geom *g, qerror *e);

/* Floats of a packed weight (layer_pack's output). */
uint64_t layer_packed_size(const layer *l);
/* Repacks weights w (l->weight's layout, e.g. fake-quantized) for layer_forward: linear is
 * transposed to [in, out] so the inner loop runs along contiguous outputs. */
void layer_pack(const layer *l, const float *w, float *packed);

/* y[out_size] = layer(x[in_size]) with packed weights and the layer's bias. */
void layer_forward(const layer *l, const layer_geom *g, const float *packed, const float *x,
                   float *y, float *scratch);

#endif
