/* packed.c - inflating slabs of stored gzip chunks on the workers (see packed.h) */
#include "packed.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

size_t packed_chunk_bytes(const packed_form *f)
{
    size_t bytes = f->elem_size;
    for (int k = 0; k < f->rank; k++)
        bytes *= (size_t)f->chunk[k];
    return bytes;
}

void packed_chunk_span(const packed_form *f, uint64_t row0, uint64_t nrows, uint64_t *c0,
                       uint64_t *c1)
{
    *c0 = row0 / f->chunk_rows;
    *c1 = nrows ? (row0 + nrows - 1) / f->chunk_rows + 1 : *c0;
}

size_t packed_head_bytes(uint64_t n_chunks)
{
    return sizeof(packed_slab) + (size_t)n_chunks * sizeof(packed_chunk);
}

/* HDF5's shuffle stores byte b of every element together: in[b * n + i] is byte b of
 * element i. Written per element size so the compiler keeps the strides constant. */
static void unshuffle(const unsigned char *in, size_t bytes, size_t size, unsigned char *out)
{
    size_t n = bytes / size;
    if (size == 4) {
        for (size_t i = 0; i < n; i++) {
            out[4 * i] = in[i], out[4 * i + 1] = in[n + i];
            out[4 * i + 2] = in[2 * n + i], out[4 * i + 3] = in[3 * n + i];
        }
    } else if (size == 2) {
        for (size_t i = 0; i < n; i++)
            out[2 * i] = in[i], out[2 * i + 1] = in[n + i];
    } else {
        for (size_t b = 0; b < size; b++)
            for (size_t i = 0; i < n; i++)
                out[i * size + b] = in[b * n + i];
    }
    memcpy(out + n * size, in + n * size, bytes - n * size); /* HDF5 leaves a tail as is */
}

static int applies(int at, uint32_t mask) { return at >= 0 && !(mask & (1u << at)); }

/* One chunk back to its stored values: into `direct` when given (a whole chunk inside the
 * slab that needs no unshuffle), else into scratch; returns where they are, or NULL. */
static const unsigned char *unpack_chunk(const packed_form *f, const packed_chunk *c,
                                         const unsigned char *data, unsigned char *direct,
                                         unsigned char *scratch, char *why, size_t why_size)
{
    size_t want = packed_chunk_bytes(f);
    const unsigned char *at = data;
    if (applies(f->deflate_at, c->mask)) {
        unsigned char *dst = direct ? direct : scratch;
        uLongf got = (uLongf)want;
        int zrc = uncompress(dst, &got, data, (uLong)c->bytes);
        if (zrc != Z_OK || got != want) {
            snprintf(why, why_size, "the chunk at row %llu does not inflate to %zu bytes (zlib "
                     "%d, %lu bytes)", (unsigned long long)c->offset[0], want, zrc, (unsigned long)got);
            return NULL;
        }
        at = dst;
    } else if (c->bytes != want) {
        snprintf(why, why_size, "the chunk at row %llu holds %llu bytes, expected %zu",
                 (unsigned long long)c->offset[0], (unsigned long long)c->bytes, want);
        return NULL;
    }
    if (applies(f->shuffle_at, c->mask) && f->elem_size > 1) {
        unsigned char *dst = at == scratch ? scratch + want : scratch;
        unshuffle(at, want, f->elem_size, dst);
        at = dst;
    }
    return at;
}

/* Copies rows [first, last) of a chunk that cuts rows into the slab (rows from slab_row0):
 * for each row, one run of the last axis per index of the axes between. */
static void scatter(const packed_form *f, const packed_chunk *c, const unsigned char *src,
                    uint64_t first, uint64_t last, uint64_t slab_row0, unsigned char *raw)
{
    int r = f->rank;
    uint64_t extent[QCAL_MAX_RANK], in_chunk[QCAL_MAX_RANK], in_slab[QCAL_MAX_RANK];
    for (int k = 0; k < r; k++) /* edge chunks reach past the dataset: their padding stays */
        extent[k] = f->chunk[k] < f->dims[k] - c->offset[k] ? f->chunk[k] : f->dims[k] - c->offset[k];
    in_chunk[r - 1] = in_slab[r - 1] = 1; /* element strides */
    for (int k = r - 2; k >= 0; k--) {
        in_chunk[k] = in_chunk[k + 1] * f->chunk[k + 1];
        in_slab[k] = in_slab[k + 1] * f->dims[k + 1];
    }
    size_t es = f->elem_size, run = (size_t)extent[r - 1] * es;
    for (uint64_t row = first; row < last; row++) {
        uint64_t idx[QCAL_MAX_RANK] = {0};
        for (;;) {
            uint64_t from = (row - c->offset[0]) * in_chunk[0];
            uint64_t to = (row - slab_row0) * in_slab[0] + c->offset[r - 1];
            for (int k = 1; k < r - 1; k++) {
                from += idx[k] * in_chunk[k];
                to += (c->offset[k] + idx[k]) * in_slab[k];
            }
            memcpy(raw + to * es, src + from * es, run);
            int k = r - 2;
            while (k >= 1 && ++idx[k] == extent[k])
                idx[k--] = 0;
            if (k < 1)
                break;
        }
    }
}

int packed_unpack(const packed_form *f, const void *buf, void *raw, void *scratch, char *why,
                  size_t why_size)
{
    const packed_slab *head = buf;
    const packed_chunk *chunks = (const packed_chunk *)(head + 1);
    const unsigned char *data = (const unsigned char *)buf + packed_head_bytes(head->n_chunks);
    uint64_t end = head->row0 + head->nrows;
    for (uint64_t k = 0; k < head->n_chunks; data += chunks[k].bytes, k++) {
        const packed_chunk *c = &chunks[k];
        uint64_t row0 = c->offset[0];
        uint64_t first = row0 > head->row0 ? row0 : head->row0;
        uint64_t last = row0 + f->chunk_rows < end ? row0 + f->chunk_rows : end;
        unsigned char *dst = (unsigned char *)raw + (first - head->row0) * f->row_bytes;
        int whole = f->whole_rows && first == row0 && last == row0 + f->chunk_rows;
        int direct = whole && !(applies(f->shuffle_at, c->mask) && f->elem_size > 1);
        const unsigned char *rows = unpack_chunk(f, c, data, direct ? dst : NULL, scratch, why,
                                                 why_size);
        if (!rows)
            return -1;
        if (!f->whole_rows)
            scatter(f, c, rows, first, last, head->row0, raw);
        else if (rows != dst)
            memcpy(dst, rows + (first - row0) * f->row_bytes, (last - first) * f->row_bytes);
    }
    return 0;
}
