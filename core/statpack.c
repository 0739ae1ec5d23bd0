/* statpack.c - a pass's observer states as one byte buffer, to send between processes */
#include "statpack.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hstat.h"
#include "pass.h"

#define MAGIC "QCS1"
#define MAX_ARRAYS STATPACK_MAX_ARRAYS

void statbuf_free(statbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* Appends n bytes (zero-padded to 8); -1 when out of memory. */
static int put(statbuf *b, const void *src, size_t n)
{
    size_t need = b->len + pad8(n);
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < need)
            cap *= 2;
        unsigned char *grown = realloc(b->data, cap);
        if (!grown)
            return -1;
        b->data = grown, b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, src, n);
    memset(b->data + b->len + n, 0, pad8(n) - n);
    b->len = need;
    return 0;
}

static int put_u64(statbuf *b, uint64_t v) { return put(b, &v, sizeof v); }

static int put_pair(statbuf *b, uint32_t x, uint32_t y)
{
    uint32_t v[2] = {x, y};
    return put(b, v, sizeof v);
}

static int put_str(statbuf *b, const char *s)
{
    uint32_t n = (uint32_t)strlen(s) + 1;
    return put_pair(b, n, 0) || put(b, s, n);
}

int statpack_put_stat(statbuf *b, const qcal_stat *st)
{
    if (put_str(b, st->kind) || put_pair(b, st->kind_version, st->n_arrays) ||
        put_u64(b, st->channels))
        return -1;
    for (uint32_t i = 0; i < st->n_arrays; i++) {
        const qcal_array *a = &st->arrays[i];
        uint64_t bytes = hstat_array_count(a) * hstat_dtype_size(a->dtype);
        if (put_str(b, a->name) || put_pair(b, a->dtype, a->rank) ||
            put(b, a->shape, sizeof a->shape) || put_u64(b, bytes) || put(b, a->data, bytes))
            return -1;
    }
    return 0;
}

int statpack_pass(pass *p, statbuf *out, qerror *e)
{
    if (put(out, MAGIC, 4) || put_u64(out, pass_count(p)))
        return qerror_set(e, QERR_SOFTWARE, "out of memory packing observer states");
    for (size_t h = 0; h < pass_count(p); h++) {
        hstat *st = NULL;
        if (pass_serialize(p, (int)h, &st, e))
            return -1;
        int rc = statpack_put_stat(out, &st->view);
        hstat_free(st);
        if (rc)
            return qerror_set(e, QERR_SOFTWARE, "out of memory packing observer states");
    }
    return 0;
}

/* ---- reading ----------------------------------------------------------------------------- */

typedef struct reader {
    const unsigned char *data;
    size_t len, at;
    int bad;
} reader;

static const void *take(reader *r, size_t n)
{
    if (r->bad || n > r->len - r->at || pad8(n) > r->len - r->at) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->data + r->at;
    r->at += pad8(n);
    return p;
}

static uint64_t take_u64(reader *r)
{
    const uint64_t *p = take(r, sizeof *p);
    return p ? *p : 0;
}

static void take_pair(reader *r, uint32_t *x, uint32_t *y)
{
    const uint32_t *p = take(r, 2 * sizeof *p);
    *x = p ? p[0] : 0, *y = p ? p[1] : 0;
}

static const char *take_str(reader *r)
{
    uint32_t n, zero;
    take_pair(r, &n, &zero);
    const char *s = n ? take(r, n) : NULL;
    if (!s || s[n - 1] != '\0' || zero)
        r->bad = 1;
    return r->bad ? NULL : s;
}

/* One state, its arrays pointing into the buffer (arrays[] is filled, caller-owned). */
static int take_stat(reader *r, qcal_stat *st, qcal_array *arrays)
{
    memset(st, 0, sizeof *st);
    st->kind = take_str(r);
    take_pair(r, &st->kind_version, &st->n_arrays);
    st->channels = take_u64(r);
    if (r->bad || st->n_arrays > MAX_ARRAYS)
        return -1;
    for (uint32_t i = 0; i < st->n_arrays && !r->bad; i++) {
        qcal_array *a = &arrays[i];
        a->name = take_str(r);
        take_pair(r, &a->dtype, &a->rank);
        const uint64_t *shape = take(r, sizeof a->shape);
        uint64_t bytes = take_u64(r);
        if (r->bad || a->rank > 4)
            return -1;
        memcpy(a->shape, shape, sizeof a->shape);
        if (bytes != hstat_array_count(a) * hstat_dtype_size(a->dtype))
            return -1;
        a->data = take(r, (size_t)bytes);
    }
    st->arrays = arrays;
    return r->bad ? -1 : 0;
}

int statpack_take_stat(const unsigned char *data, size_t len, size_t *at, qcal_stat *st,
                       qcal_array *arrays)
{
    reader r = {data, len, *at, 0};
    int rc = take_stat(&r, st, arrays);
    *at = r.at;
    return rc;
}

int statpack_fold(pass *p, const unsigned char *data, size_t len, int replace, const char *from,
                  qerror *e)
{
    reader r = {data, len, 0, 0};
    const char *magic = take(&r, 4);
    uint64_t n = take_u64(&r);
    if (r.bad || memcmp(magic, MAGIC, 4) || n != pass_count(p))
        return qerror_set(e, QERR_SOFTWARE, "%s: expected the states of %zu observers, found "
                          "another message", from, pass_count(p));
    qcal_array *arrays = malloc(MAX_ARRAYS * sizeof *arrays);
    if (!arrays)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    int rc = 0;
    for (size_t h = 0; h < n && !rc; h++) {
        qcal_stat st;
        if (take_stat(&r, &st, arrays))
            rc = qerror_set(e, QERR_SOFTWARE, "%s: state #%zu is malformed", from, h + 1);
        else
            rc = pass_fold(p, (int)h, &st, replace, e);
    }
    free(arrays);
    if (!rc && r.at != r.len)
        rc = qerror_set(e, QERR_SOFTWARE, "%s: %zu bytes after the last state", from, r.len - r.at);
    return rc;
}
