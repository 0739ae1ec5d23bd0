/* common.h - helpers the bundled plugins share. Compiled into each plugin (hidden symbols);
 * not part of the ABI: a third-party plugin needs only <qcal/plugin.h>. */
#ifndef QCAL_PLUGINS_COMMON_H
#define QCAL_PLUGINS_COMMON_H

#include <stdint.h>

#include <qcal/plugin.h>

#define MAX_CHANNELS ((uint64_t)1 << 26)

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* 1 when the machine has AVX2 and QCAL_NO_SIMD is unset or empty: the vector loops then run.
 * Every one gives the same results as its scalar form (the tests run both). */
int simd_avx2(void);

/* Writes the message into err and returns code. */
int fail(qcal_err *err, int code, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* ---- how a sample's values are laid out --------------------------------------------------
 * A sample (row) is `outer` blocks of [channels, inner] values: the channel axis splits the
 * row into contiguous runs of `inner` values (inner = 1 when the channel axis is last). A
 * per-tensor observer has one channel and one run per row. */
typedef struct layout {
    uint64_t row_size, outer, channels, inner;
} layout;

/* The product of dims[from..to) into *out; -1 on overflow. */
int product(const uint64_t *dims, int from, int to, uint64_t *out);
int channel_axis_check(const qcal_tensor *t, qcal_err *err);
int layout_make(const qcal_tensor *t, int per_channel, layout *g, qcal_err *err);
int slab_check(const layout *g, const qcal_slab *slab, qcal_err *err);

/* Folds n values into one channel's extrema (finite values only; NaN and Inf counted apart). */
void scan_run(const float *x, uint64_t n, float *lo, float *hi, uint64_t *count,
              uint64_t nonfinite[2]);

/* Notes (left in err->msg on success) for degenerate data: a tensor whose finite values are
 * all `lo` == `hi`, or `constant` of `channels` channels with a single value. */
void note_constant(qcal_err *err, double lo, double hi);
void note_constant_channels(qcal_err *err, uint64_t constant, uint64_t channels);
/* Appends a sentence to the note in err->msg ("; " between sentences). */
void note_add(qcal_err *err, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* ---- arrays in statistics ---------------------------------------------------------------- */
qcal_array array1(const char *name, uint32_t dtype, uint64_t n, const void *data);
qcal_array array2(const char *name, uint32_t dtype, uint64_t n, uint64_t m, const void *data);
const qcal_array *find(const qcal_stat *s, const char *name);
/* The array `name` with the given dtype and shape (rank = number of dims given); NULL with a
 * sentence in err otherwise. */
const qcal_array *expect(const qcal_stat *s, const char *name, uint32_t dtype, uint32_t rank,
                         uint64_t d0, uint64_t d1, qcal_err *err);
int kind_check(const qcal_stat *s, const char *kind, qcal_err *err);

#endif
