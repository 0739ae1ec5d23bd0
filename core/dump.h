/* dump.h - reading calibration dumps: tensors under /activations, streamed along axis 0 */
#ifndef QCAL_DUMP_H
#define QCAL_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "qcal/plugin.h"

/* Element types of a dump dataset, as stored (raw reads keep them; dump_convert widens). */
enum dump_dtype {
    DUMP_F32 = 1,
    DUMP_F64,
    DUMP_F16,  /* IEEE half, as h5py/numpy write it */
    DUMP_BF16, /* custom HDF5 float (8-bit exponent, 7-bit mantissa) or uint16 + dtype attr */
    DUMP_I8,
    DUMP_U8,
    DUMP_I16,
    DUMP_U16,
    DUMP_I32,
    DUMP_U32,
    DUMP_I64,
    DUMP_U64,
};

typedef struct dump_tensor {
    char *name;          /* path under /activations (or under / when that group is absent) */
    char *orig_name;     /* the `name` attribute when present, else a copy of name */
    char *op_type;       /* the `op_type` attribute, or NULL */
    int rank;            /* 1..QCAL_MAX_RANK */
    uint64_t dims[QCAL_MAX_RANK];
    int channel_axis;    /* `channel_axis` attribute, default 1 when rank >= 2, else -1 */
    int dtype;           /* enum dump_dtype */
    size_t elem_size;    /* bytes per raw element in memory (native byte order) */
    uint64_t chunk_rows; /* rows of axis 0 per chunk, 0 when not chunked */
    uint64_t row_size;   /* elements per sample: product of dims[1..] */
} dump_tensor;

typedef struct dump dump;

/* Opens a dump and lists its tensors (sorted by name). Any dataset that is not a usable
 * tensor (strings, compound, scalar, empty, rank > QCAL_MAX_RANK, bad channel_axis, an
 * unavailable filter) is an error naming the file and the dataset: qcal never calibrates
 * half a model silently. */
int dump_open(const char *path, dump **out, qerror *e);
void dump_close(dump *d);
/* Opens several dump files as one dump whose samples are those of the files concatenated in
 * the order given (one file: dump_open). Every file must hold the same tensors with the same
 * trailing shape, dtype and channel axis; else one error names the file and the tensor. Each
 * file is read with its own chunking; a slab may span two files. */
int dump_open_many(const char *const *paths, size_t n, dump **out, qerror *e);
/* The /weights group of the same file: each dataset [out_channels, ...] becomes a tensor
 * "weights/<layer>" [1, out_channels, ...] (one sample) with channel_axis 1, so per-channel
 * observers give one range per output channel; orig_name is "<layer>.weight". */
int dump_open_weights(const char *path, dump **out, qerror *e);
/* Whether the file of an opened dump has a /weights group. */
int dump_has_weights(const dump *d);

/* The dump's file (for several files: the first, which also gives /weights and /layers). */
const char *dump_path(const dump *d);
/* Every file of the dump, joined by ", ": what results record as their source. */
const char *dump_source(const dump *d);
size_t dump_file_count(const dump *d);
/* Weights are named "weights/<layer>" (the /weights view of a dump); activations never are. */
#define DUMP_WEIGHT_PREFIX "weights/"

/* The longest tensor name (and framework name) a dump may give, in bytes: results files, their
 * readers and one-line messages all hold it with room to spare. */
#define DUMP_MAX_NAME 512
int dump_is_weight_name(const char *name);

/* Rows of a tensor mapped from its file instead of read (the pass's reads without a copy, for
 * contiguous storage in native order): data holds the raw values as dump_read_raw would write
 * them. 0 when mapped (release with dump_unmap), 1 when the tensor or these rows cannot be
 * mapped (read them with dump_read_raw). */
typedef struct dump_window {
    void *base;
    size_t len;
    const void *data;
    const char *path; /* the file mapped */
} dump_window;
int dump_map_rows(dump *d, size_t i, uint64_t row0, uint64_t nrows, dump_window *w);
void dump_unmap(dump_window *w);
size_t dump_count(const dump *d);
const dump_tensor *dump_get(const dump *d, size_t i);
/* Index of the tensor with this name (or orig_name), or -1. */
long dump_find(const dump *d, const char *name);
const char *dump_dtype_name(int dtype);
size_t dump_elem_size(int dtype);

/* A dump with tensor descriptions but no values (re-estimating from saved statistics):
 * dump_read_raw on it is an error. dump_add_virtual copies the strings of t. */
int dump_new_virtual(const char *label, dump **out, qerror *e);
int dump_add_virtual(dump *d, const dump_tensor *t, qerror *e);

/* Rows per slab for tensor i: whole chunks, about `slab_bytes` of float32 output, >= 1. */
uint64_t dump_slab_rows(const dump *d, size_t i, size_t slab_bytes);

/* Reads rows [row0, row0 + nrows) of tensor i into `raw` (nrows * row_size * elem_size
 * bytes), in the stored element type, native byte order: no conversion. NOT thread-safe:
 * one thread makes every HDF5 call. */
int dump_read_raw(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *raw, qerror *e);

/* Tensor i's chunks as qcal can inflate them itself (packed.h), or NULL: HDF5 must (an
 * unknown filter, chunks that split rows, another byte order, several files). */
const struct packed_form *dump_packed_form(const dump *d, size_t i);
/* Copies the stored chunks that rows [row0, row0 + nrows) of tensor i touch into buf (cap
 * bytes) as a packed slab: 0; 1 when this slab cannot go that way (a chunk never written,
 * or more bytes than cap): read it with dump_read_raw; -1 on error. NOT thread-safe. */
int dump_read_packed(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *buf, size_t cap,
                     qerror *e);

/* Converts n raw elements of `dtype` to float32. Thread-safe, no HDF5 calls. */
void dump_convert(int dtype, const void *raw, size_t n, float *out);

/* Exposed for tests: IEEE half and bfloat16 bit patterns to float. */
float dump_half_to_float(uint16_t h);
float dump_bf16_to_float(uint16_t b);

#endif
