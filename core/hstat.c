/* hstat.c - validated, host-owned deep copies of plugin statistics */
#include "hstat.h"

#include <stdlib.h>
#include <string.h>

#define KIND_MAX 63
#define NAME_MAX_LEN 63
#define ARRAYS_MAX 256
#define ELEMENTS_MAX ((uint64_t)1 << 32) /* per array: 16 GiB of float32 is no statistic */

size_t hstat_dtype_size(uint32_t dtype)
{
    switch (dtype) {
    case QCAL_DTYPE_F32:
        return 4;
    case QCAL_DTYPE_F64:
    case QCAL_DTYPE_I64:
    case QCAL_DTYPE_U64:
        return 8;
    default:
        return 0;
    }
}

uint64_t hstat_array_count(const qcal_array *a)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < a->rank && d < 4; d++)
        n *= a->shape[d];
    return n;
}

static int kind_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok || n >= KIND_MAX)
            return 0;
    }
    return n > 0;
}

static int name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') || n >= NAME_MAX_LEN)
            return 0;
    }
    return n > 0;
}

/* Element count with overflow and size checks; 0 with an error message on failure. */
static int array_count_checked(const qcal_array *a, uint64_t *count, qerror *e)
{
    if (a->rank > 4)
        return qerror_set(e, QERR_SOFTWARE, "array '%s' has rank %u (at most 4)", a->name,
                          (unsigned)a->rank);
    uint64_t n = 1;
    for (uint32_t d = 0; d < a->rank; d++) {
        if (a->shape[d] != 0 && n > ELEMENTS_MAX / a->shape[d])
            return qerror_set(e, QERR_SOFTWARE, "array '%s' is too large (over 2^32 elements)",
                              a->name);
        n *= a->shape[d];
    }
    if (n > ELEMENTS_MAX)
        return qerror_set(e, QERR_SOFTWARE, "array '%s' is too large (over 2^32 elements)",
                          a->name);
    *count = n;
    return 0;
}

static int check_array(const qcal_stat *src, uint32_t i, qerror *e)
{
    const qcal_array *a = &src->arrays[i];
    if (!a->name || !name_ok(a->name))
        return qerror_set(e, QERR_SOFTWARE, "array #%u has a bad name '%s' (expected [a-z0-9_]+)",
                          (unsigned)i, a->name ? a->name : "(null)");
    for (uint32_t j = 0; j < i; j++)
        if (strcmp(src->arrays[j].name, a->name) == 0)
            return qerror_set(e, QERR_SOFTWARE, "array name '%s' appears twice", a->name);
    if (!hstat_dtype_size(a->dtype))
        return qerror_set(e, QERR_SOFTWARE, "array '%s' has unknown dtype %u", a->name,
                          (unsigned)a->dtype);
    uint64_t n = 0;
    if (array_count_checked(a, &n, e))
        return -1;
    if (n > 0 && !a->data)
        return qerror_set(e, QERR_SOFTWARE, "array '%s' has %llu elements but no data", a->name,
                          (unsigned long long)n);
    return 0;
}

static int check_stat(const qcal_stat *src, qerror *e)
{
    if (!src->kind || !kind_ok(src->kind))
        return qerror_set(e, QERR_SOFTWARE,
                          "statistic has a bad kind '%.80s' (expected up to %d of [A-Za-z0-9_.-])",
                          src->kind ? src->kind : "(null)", KIND_MAX);
    if (src->channels < 1)
        return qerror_set(e, QERR_SOFTWARE, "statistic '%s' has 0 channels (expected >= 1)",
                          src->kind);
    if (src->n_arrays > ARRAYS_MAX)
        return qerror_set(e, QERR_SOFTWARE, "statistic '%s' has %u arrays (at most %d)",
                          src->kind, (unsigned)src->n_arrays, ARRAYS_MAX);
    if (src->n_arrays > 0 && !src->arrays)
        return qerror_set(e, QERR_SOFTWARE, "statistic '%s' declares %u arrays but has none",
                          src->kind, (unsigned)src->n_arrays);
    for (uint32_t i = 0; i < src->n_arrays; i++)
        if (check_array(src, i, e))
            return qerror_prefix(e, "statistic '%s'", src->kind);
    return 0;
}

static int copy_array(hstat *s, const qcal_array *a, uint32_t i)
{
    s->arrays[i] = *a;
    s->names[i] = strdup(a->name);
    if (!s->names[i])
        return -1;
    s->arrays[i].name = s->names[i];
    size_t bytes = (size_t)hstat_array_count(a) * hstat_dtype_size(a->dtype);
    s->data[i] = NULL;
    if (bytes > 0) {
        s->data[i] = malloc(bytes);
        if (!s->data[i])
            return -1;
        memcpy(s->data[i], a->data, bytes);
    }
    for (uint32_t d = a->rank; d < 4; d++) /* unused dims read as 0 */
        s->arrays[i].shape[d] = 0;
    s->arrays[i].data = s->data[i];
    return 0;
}

int hstat_copy(const qcal_stat *src, hstat **out, qerror *e)
{
    *out = NULL;
    if (check_stat(src, e))
        return -1;
    hstat *s = calloc(1, sizeof *s);
    if (!s)
        return qerror_set(e, QERR_SOFTWARE, "out of memory copying a statistic");
    uint32_t n = src->n_arrays;
    s->kind = strdup(src->kind);
    s->arrays = calloc(n ? n : 1, sizeof *s->arrays);
    s->names = calloc(n ? n : 1, sizeof *s->names);
    s->data = calloc(n ? n : 1, sizeof *s->data);
    int bad = !s->kind || !s->arrays || !s->names || !s->data;
    for (uint32_t i = 0; i < n && !bad; i++)
        bad = copy_array(s, &src->arrays[i], i);
    s->view.kind = s->kind;
    s->view.kind_version = src->kind_version;
    s->view.n_arrays = n;
    s->view.channels = src->channels;
    s->view.arrays = s->arrays;
    if (bad) {
        hstat_free(s);
        return qerror_set(e, QERR_SOFTWARE, "out of memory copying statistic '%s'", src->kind);
    }
    *out = s;
    return 0;
}

void hstat_free(hstat *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->view.n_arrays; i++) {
        if (s->names)
            free(s->names[i]);
        if (s->data)
            free(s->data[i]);
    }
    free(s->names);
    free(s->data);
    free(s->arrays);
    free(s->kind);
    free(s);
}

size_t hstat_data_bytes(const hstat *s)
{
    size_t bytes = 0;
    for (uint32_t i = 0; s && i < s->view.n_arrays; i++)
        bytes += (size_t)hstat_array_count(&s->arrays[i]) * hstat_dtype_size(s->arrays[i].dtype);
    return bytes;
}

const qcal_array *hstat_find(const qcal_stat *s, const char *name)
{
    for (uint32_t i = 0; s && i < s->n_arrays; i++)
        if (s->arrays[i].name && strcmp(s->arrays[i].name, name) == 0)
            return &s->arrays[i];
    return NULL;
}

int hstat_equal(const qcal_stat *a, const qcal_stat *b)
{
    if (strcmp(a->kind, b->kind) || a->kind_version != b->kind_version ||
        a->channels != b->channels || a->n_arrays != b->n_arrays)
        return 0;
    for (uint32_t i = 0; i < a->n_arrays; i++) {
        const qcal_array *x = &a->arrays[i], *y = &b->arrays[i];
        if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->rank != y->rank ||
            memcmp(x->shape, y->shape, sizeof x->shape))
            return 0;
        size_t bytes = (size_t)hstat_array_count(x) * hstat_dtype_size(x->dtype);
        if (bytes && memcmp(x->data, y->data, bytes))
            return 0;
    }
    return 1;
}
