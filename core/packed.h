/* packed.h - slabs of gzip'd chunks as stored, inflated off the reading thread.
 *
 * HDF5 runs its filter pipeline under its global lock, so a pass over a gzip dump would
 * inflate every chunk on the one thread that talks to HDF5. Instead that thread copies the
 * chunks a slab touches as they are stored (H5Dread_chunk, dump_read_packed) into the slab's
 * buffer, and a worker inflates them (packed_unpack: zlib, then HDF5's byte shuffle undone)
 * into the slab's raw values. Only the pipelines qcal knows take this path: deflate, or
 * shuffle then deflate, stored in native byte order. Chunks may cut rows (h5py's automatic
 * chunking does): a chunk's block is scattered into the slab's rows. */
#ifndef QCAL_PACKED_H
#define QCAL_PACKED_H

#include <stddef.h>
#include <stdint.h>

#include "qcal/plugin.h"

/* How a tensor's chunks are stored. */
typedef struct packed_form {
    int rank;
    uint64_t dims[QCAL_MAX_RANK];
    uint64_t chunk[QCAL_MAX_RANK];
    uint64_t rows;       /* dims[0] */
    uint64_t chunk_rows; /* chunk[0] */
    uint64_t per_block;  /* chunks side by side in one block of chunk_rows rows */
    int whole_rows;      /* every chunk holds whole rows (chunk[k] == dims[k], k >= 1) */
    size_t row_bytes;    /* bytes of one row, stored type */
    size_t elem_size;    /* bytes per element (the shuffle's stride) */
    int deflate_at;      /* position of deflate in the pipeline */
    int shuffle_at;      /* position of shuffle, or -1 */
} packed_form;

/* The head of a packed slab buffer; n_chunks packed_chunk follow, then their bytes in order. */
typedef struct packed_slab {
    uint64_t row0, nrows; /* the rows the slab stands for */
    uint64_t n_chunks;
} packed_slab;

typedef struct packed_chunk {
    uint64_t offset[QCAL_MAX_RANK]; /* the chunk's first element (offset[0]: its first row) */
    uint64_t bytes; /* stored bytes */
    uint32_t mask;  /* HDF5's filter mask: bit k set = filter k was skipped for this chunk */
    uint32_t pad;
} packed_chunk;

/* Bytes of one full chunk, inflated. */
size_t packed_chunk_bytes(const packed_form *f);
/* The first and one-past-last block of chunk_rows rows that rows [row0, row0 + nrows) touch
 * (each block holds per_block chunks). */
void packed_chunk_span(const packed_form *f, uint64_t row0, uint64_t nrows, uint64_t *c0,
                       uint64_t *c1);
/* Bytes of head and chunk table for a slab of n chunks (the stored bytes follow). */
size_t packed_head_bytes(uint64_t n_chunks);
/* Inflates a packed slab into raw (nrows * row_bytes), using scratch (2 chunks' bytes).
 * Thread-safe, no HDF5 calls. 0, or -1 with the reason in why (a chunk zlib cannot inflate,
 * or one of the wrong size). */
int packed_unpack(const packed_form *f, const void *buf, void *raw, void *scratch, char *why,
                  size_t why_size);

#endif
