/* packed.c - inflating slabs of stored gzip chunks on the workers (see packed.h) */
#include "packed.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

size_t packed_chunk_bytes(const packed_form *f) { return (size_t)f->chunk_rows * f->row_bytes; }

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
                     "%d, %lu bytes)", (unsigned long long)c->row0, want, zrc, (unsigned long)got);
            return NULL;
        }
        at = dst;
    } else if (c->bytes != want) {
        snprintf(why, why_size, "the chunk at row %llu holds %llu bytes, expected %zu",
                 (unsigned long long)c->row0, (unsigned long long)c->bytes, want);
        return NULL;
    }
    if (applies(f->shuffle_at, c->mask) && f->elem_size > 1) {
        unsigned char *dst = at == scratch ? scratch + want : scratch;
        unshuffle(at, want, f->elem_size, dst);
        at = dst;
    }
    return at;
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
        uint64_t first = c->row0 > head->row0 ? c->row0 : head->row0;
        uint64_t last = c->row0 + f->chunk_rows < end ? c->row0 + f->chunk_rows : end;
        unsigned char *dst = (unsigned char *)raw + (first - head->row0) * f->row_bytes;
        int whole = first == c->row0 && last == c->row0 + f->chunk_rows;
        int direct = whole && !(applies(f->shuffle_at, c->mask) && f->elem_size > 1);
        const unsigned char *rows = unpack_chunk(f, c, data, direct ? dst : NULL, scratch, why,
                                                 why_size);
        if (!rows)
            return -1;
        if (rows != dst)
            memcpy(dst, rows + (first - c->row0) * f->row_bytes, (last - first) * f->row_bytes);
    }
    return 0;
}
