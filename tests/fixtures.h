/* fixtures.h - writing test dumps and reference data, independently of the code under test */
#ifndef QCAL_TEST_FIXTURES_H
#define QCAL_TEST_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#define FX_NO_ATTR (-100) /* channel_axis: write no attribute */

typedef struct fx_dataset {
    const char *name;       /* path under /activations (may contain '/'), or under / if root */
    int dtype;              /* DUMP_* from core/dump.h: the stored type */
    int rank;
    uint64_t dims[8];
    uint64_t chunk_rows;    /* 0: contiguous; else chunks of (chunk_rows, dims[1..]) */
    uint64_t chunk_cut[8];  /* with chunk_rows: chunk_cut[k] (k >= 1) when not 0 cuts axis k */
    const void *data;       /* raw values in the stored type (F16/BF16: uint16 bit patterns) */
    int channel_axis;       /* FX_NO_ATTR, or the int attribute to write */
    const char *op_type;    /* NULL: no attribute */
    const char *orig_name;  /* NULL: no `name` attribute */
    int bf16_as_uint16;     /* BF16 only: store as uint16 + dtype="bfloat16" attribute */
    int gzip;               /* deflate level (needs chunk_rows), 0 = none */
    int shuffle;            /* shuffle filter before deflate */
} fx_dataset;

/* Writes a dump with the datasets under /activations (at the root if at_root). 0 on success. */
int fx_write_dump(const char *path, const fx_dataset *ds, size_t n, int at_root);

/* A layer group /layers/<name> appended to an existing file: type "linear" or "conv2d" (or
 * anything, to test refusals), input = the tensor it consumes, stride / padding pairs,
 * groups, weight [out, in] or [out, in/groups, kh, kw] and bias [out] (NULL: none). */
typedef struct fx_layer {
    const char *name, *type, *input;
    long long stride[2], padding[2], groups;
    int weight_rank;
    uint64_t weight_dims[4];
    const float *weight, *bias;
} fx_layer;
int fx_write_layer(const char *path, const fx_layer *l);

/* The text of a file into buf (at most size - 1 bytes, NUL-terminated; "" when unreadable). */
void fx_read_text(const char *path, char *buf, size_t size);

/* The whole file, NUL-terminated, malloc'd; its length into *size when size is not NULL.
 * NULL when it cannot be read. */
char *fx_read_file(const char *path, size_t *size);

/* A fresh private directory under /tmp (malloc'd path), removed by fx_rmtree. */
char *fx_tmpdir(void);
void fx_rmtree(const char *dir);
/* dir + "/" + name, malloc'd. */
char *fx_path(const char *dir, const char *name);

/* Deterministic data: splitmix64-based uniform and Box-Muller gaussian. */
uint64_t fx_rand_u64(uint64_t *state);
double fx_rand_uniform(uint64_t *state); /* [0, 1) */
void fx_fill_gauss(float *x, size_t n, uint64_t seed, float mean, float stddev);

/* The distributions the estimator tests sweep: gaussian (mean 0.2, sd 1), its ReLU (a spike
 * of exact zeros), GELU-like, laplace with 0.1 % outliers x40, bimodal (-3 and +6), and
 * the gaussian with NaN, +Inf and -Inf sprinkled in (finite values then as the gaussian). */
enum { FX_GAUSS, FX_RELU, FX_GELU, FX_LAPLACE_OUTLIERS, FX_BIMODAL, FX_NONFINITE, FX_N_DISTS };
extern const char *const fx_dist_names[FX_N_DISTS];
void fx_fill_dist(float *x, size_t n, int kind, uint64_t seed);
/* Copies the finite values of x into out; returns how many. */
size_t fx_finite(const float *x, size_t n, float *out);

/* float -> IEEE half / bfloat16 bits, round to nearest even (reference, written here). */
uint16_t fx_float_to_half(float f);
uint16_t fx_float_to_bf16(float f);

#endif
