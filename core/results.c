/* results.c - the results file: building it in memory, writing it atomically, reading it back */
#include "results.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdatomic.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h5attr.h"
#include "qmath.h"
#include "spill.h"
#include "statpack.h"

#ifndef QCAL_VERSION
#define QCAL_VERSION "unknown"
#endif

#define WALK_DEPTH_MAX 64

/* ---- the in-memory results ------------------------------------------------------------ */

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static char *iso_now(void)
{
    char buf[32];
    time_t now = time(NULL);
    /* Reproducible builds' convention: a fixed clock makes equal inputs give equal bytes. */
    const char *epoch = getenv("SOURCE_DATE_EPOCH");
    if (epoch && *epoch) {
        char *end;
        long long v = strtoll(epoch, &end, 10);
        if (!*end && v >= 0)
            now = (time_t)v;
    }
    struct tm tm;
    if (!gmtime_r(&now, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm))
        buf[0] = '\0';
    return strdup(buf);
}

static void tensor_key(const void *items, size_t i, const char **parts)
{
    parts[0] = ((const result_tensor *)items)[i].tensor;
}

static void stat_key(const void *items, size_t i, const char **parts)
{
    const result_stat *s = (const result_stat *)items + i;
    parts[0] = s->tensor, parts[1] = s->observer, parts[2] = s->params;
}

static void info_key(const void *items, size_t i, const char **parts)
{
    parts[0] = ((const result_info *)items)[i].tensor;
}

static void cands_key(const void *items, size_t i, const char **parts)
{
    parts[0] = ((const result_candidates *)items)[i].tensor;
}

static void extrema_key(const void *items, size_t i, const char **parts)
{
    parts[0] = ((const result_extrema *)items)[i].tensor;
}

/* The process's budget for saved states in memory, and what all results hold of it. */
static size_t state_budget = RESULTS_STATE_BUDGET;
static _Atomic size_t states_held;

void results_set_state_budget(size_t bytes) { state_budget = bytes; }

/* Takes bytes from the budget for r, or says there is not enough (0). */
static int take_budget(results *r, size_t bytes)
{
    size_t held = atomic_load(&states_held);
    do {
        if (bytes > state_budget || held > state_budget - bytes)
            return 0;
    } while (!atomic_compare_exchange_weak(&states_held, &held, held + bytes));
    r->held_bytes += bytes;
    return 1;
}

static void give_budget(results *r, size_t bytes)
{
    atomic_fetch_sub(&states_held, bytes);
    r->held_bytes -= bytes;
}

/* An empty results with its indexes ready; NULL when out of memory. */
static results *results_alloc(void)
{
    results *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    keyindex_init(&r->by_tensor, 1, tensor_key);
    keyindex_init(&r->by_stat, 3, stat_key);
    keyindex_init(&r->by_info, 1, info_key);
    keyindex_init(&r->by_cands, 1, cands_key);
    keyindex_init(&r->by_extrema, 1, extrema_key);
    return r;
}

results *results_new(const char *recipe, const char *source)
{
    results *r = results_alloc();
    if (!r)
        return NULL;
    r->recipe = dup_or_empty(recipe);
    r->source = dup_or_empty(source);
    r->qcal_version = strdup(QCAL_VERSION);
    r->created = iso_now();
    if (!r->recipe || !r->source || !r->qcal_version || !r->created) {
        results_free(r);
        return NULL;
    }
    return r;
}

static void tensor_clear(result_tensor *t)
{
    free(t->tensor);
    free(t->orig_name);
    free(t->method);
    free(t->lo);
    free(t->hi);
    free(t->scale);
    free(t->zero_point);
    free(t->note);
    memset(t, 0, sizeof *t);
}

static void stat_clear(result_stat *s)
{
    free(s->tensor);
    free(s->observer);
    free(s->params);
    hstat_free(s->state);
    memset(s, 0, sizeof *s);
}

static void info_clear(result_info *in)
{
    free(in->tensor);
    free(in->orig_name);
    free(in->dtype);
    free(in->op_type);
    memset(in, 0, sizeof *in);
}

static void cands_clear(result_candidates *c)
{
    for (uint64_t i = 0; c->method && i < c->n; i++)
        free(c->method[i]);
    free(c->method);
    free(c->tensor);
    free(c->criterion);
    free(c->lo); /* lo owns the six [n] arrays */
    memset(c, 0, sizeof *c);
}

void results_free(results *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_cands; i++)
        cands_clear(&r->cands[i]);
    free(r->cands);
    for (size_t i = 0; i < r->n_tensors; i++)
        tensor_clear(&r->tensors[i]);
    for (size_t i = 0; i < r->n_stats; i++)
        stat_clear(&r->stats[i]);
    for (size_t i = 0; i < r->n_infos; i++)
        info_clear(&r->infos[i]);
    free(r->tensors);
    free(r->stats);
    free(r->infos);
    for (size_t i = 0; i < r->n_extrema; i++)
        free(r->extrema[i].tensor);
    free(r->extrema);
    keyindex_free(&r->by_extrema);
    keyindex_free(&r->by_tensor);
    keyindex_free(&r->by_stat);
    keyindex_free(&r->by_info);
    keyindex_free(&r->by_cands);
    free(r->recipe);
    free(r->source);
    free(r->qcal_version);
    free(r->created);
    give_budget(r, r->held_bytes);
    spill_free(r->spill);
    free(r);
}

/* A tensor name becomes a group path: non-empty components, none of them "." or "..". */
static int path_ok(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += n;
        if (*p == '/' && !*++p)
            return 0; /* trailing slash */
    }
    return 1;
}

result_tensor *results_find(results *r, const char *tensor)
{
    size_t i = keyindex_find(&r->by_tensor, r->tensors, r->n_tensors, &tensor);
    return i == SIZE_MAX ? NULL : &r->tensors[i];
}

/* Makes room for one more element in a growing array of n elements of `size` bytes. */
static int reserve(void **items, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t grown = *cap ? 2 * *cap : 16;
    void *p = realloc(*items, grown * size);
    if (!p)
        return -1;
    *items = p;
    *cap = grown;
    return 0;
}

/* Stores t (taking its allocations), replacing an entry of the same tensor. */
static int tensor_store(results *r, result_tensor *t, qerror *e)
{
    result_tensor *old = results_find(r, t->tensor);
    if (old) {
        tensor_clear(old);
        *old = *t;
        return 0;
    }
    if (reserve((void **)&r->tensors, &r->cap_tensors, r->n_tensors, sizeof *r->tensors)) {
        tensor_clear(t);
        return qerror_set(e, QERR_SOFTWARE, "out of memory storing results");
    }
    r->tensors[r->n_tensors++] = *t;
    return 0;
}

static int tensor_alloc(result_tensor *t, uint64_t channels)
{
    t->channels = channels;
    t->lo = malloc(channels * sizeof *t->lo);
    t->hi = malloc(channels * sizeof *t->hi);
    t->scale = malloc(channels * sizeof *t->scale);
    t->zero_point = malloc(channels * sizeof *t->zero_point);
    return t->lo && t->hi && t->scale && t->zero_point ? 0 : -1;
}

static result_extrema *find_extrema(results *r, const char *tensor)
{
    const char *key[1] = {tensor};
    size_t i = keyindex_find(&r->by_extrema, r->extrema, r->n_extrema, key);
    return i == SIZE_MAX ? NULL : &r->extrema[i];
}

static void carry_extrema(result_tensor *t, const result_extrema *x)
{
    if (x)
        t->has_data_range = 1, t->data_min = x->lo, t->data_max = x->hi;
}

int results_note_data_range(results *r, const char *tensor, double lo, double hi, qerror *e)
{
    if (!isfinite(lo) || !isfinite(hi) || lo > hi)
        return 0;
    result_extrema *x = find_extrema(r, tensor);
    if (!x) {
        char *name = strdup(tensor);
        if (!name || reserve((void **)&r->extrema, &r->cap_extrema, r->n_extrema, sizeof *r->extrema)) {
            free(name);
            return qerror_set(e, QERR_SOFTWARE, "out of memory storing results");
        }
        x = &r->extrema[r->n_extrema++];
        *x = (result_extrema){name, lo, hi};
    }
    x->lo = fmin(x->lo, lo), x->hi = fmax(x->hi, hi);
    result_tensor *t = results_find(r, tensor);
    if (t)
        carry_extrema(t, x);
    return 0;
}

static int put_check(const char *tensor, const char *method, const qcal_qspec *spec,
                     uint64_t channels, qerror *e)
{
    if (!path_ok(tensor))
        return qerror_set(e, QERR_DATA, "results: bad tensor name '%s' (expected a/b/c path "
                          "components, none empty, '.' or '..')", tensor ? tensor : "(null)");
    if (!method || !*method)
        return qerror_set(e, QERR_SOFTWARE, "results: tensor '%s' has no method name", tensor);
    if (channels < 1 || channels > ((uint64_t)1 << 32))
        return qerror_set(e, QERR_SOFTWARE, "results: tensor '%s' has %llu channels", tensor,
                          (unsigned long long)channels);
    if (!(spec->flags & QCAL_QSPEC_PER_CHANNEL) && channels != 1)
        return qerror_set(e, QERR_SOFTWARE,
                          "results: tensor '%s' has a per-tensor spec but %llu ranges", tensor,
                          (unsigned long long)channels);
    return 0;
}

int results_put(results *r, const char *tensor, const char *orig_name, const char *method,
                const qcal_qspec *spec, uint64_t channels, const double *lo, const double *hi,
                qerror *e)
{
    if (put_check(tensor, method, spec, channels, e))
        return -1;
    result_tensor t = {0};
    t.spec = *spec;
    t.tensor = strdup(tensor);
    t.orig_name = strdup(orig_name ? orig_name : tensor);
    t.method = strdup(method);
    if (tensor_alloc(&t, channels) || !t.tensor || !t.orig_name || !t.method) {
        tensor_clear(&t);
        return qerror_set(e, QERR_SOFTWARE, "out of memory storing results");
    }
    for (uint64_t c = 0; c < channels; c++) {
        t.lo[c] = lo[c];
        t.hi[c] = hi[c];
        if (qmath_qparams(spec, lo[c], hi[c], &t.scale[c], &t.zero_point[c], e)) {
            tensor_clear(&t);
            if (channels == 1)
                return qerror_prefix(e, "tensor '%s'", tensor);
            return qerror_prefix(e, "tensor '%s' channel %llu", tensor, (unsigned long long)c);
        }
    }
    carry_extrema(&t, find_extrema(r, tensor));
    return tensor_store(r, &t, e);
}

/* The base name of the path that starts at s and ends at ", " or the end: its start and
 * length; *next is past the separator (or at the end). */
static const char *next_base(const char *s, size_t *len, const char **next)
{
    const char *end = strstr(s, ", ");
    if (!end)
        end = s + strlen(s);
    const char *base = s;
    for (const char *c = s; c < end; c++)
        if (*c == '/')
            base = c + 1;
    *len = (size_t)(end - base);
    *next = *end ? end + 2 : end;
    return base;
}

int results_same_source(const char *a, const char *b)
{
    while (*a && *b) {
        size_t la, lb;
        const char *ba = next_base(a, &la, &a), *bb = next_base(b, &lb, &b);
        if (la != lb || memcmp(ba, bb, la))
            return 0;
    }
    return !*a && !*b;
}

const char *results_empty_hint(const results *r)
{
    return r->n_stats ? " (only statistics, as `qcal observe` and `qcal merge` write: run the "
                        "recipe with --from-statistics on the merged file first)"
                      : " (the recipe put no range)";
}

static int name_ok(const char *s)
{
    return s && *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Keeps s's state in memory while the budget allows, else moves it to the spill file. */
static int hold_or_spill(results *r, result_stat *s, qerror *e)
{
    if (take_budget(r, hstat_data_bytes(s->state)))
        return 0;
    statbuf packed = {0};
    if (!r->spill && !(r->spill = spill_new()))
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (statpack_put_stat(&packed, &s->state->view)) {
        statbuf_free(&packed);
        return qerror_set(e, QERR_SOFTWARE, "out of memory packing a state");
    }
    int rc = spill_write(r->spill, packed.data, packed.len, &s->spill_at, e);
    s->spill_len = packed.len;
    statbuf_free(&packed);
    if (rc)
        return -1;
    hstat_free(s->state);
    s->state = NULL;
    return 0;
}

static int stat_store(results *r, result_stat *s, qerror *e)
{
    result_stat *old = results_find_stat(r, s->tensor, s->observer, s->params);
    if (old) {
        give_budget(r, hstat_data_bytes(old->state)); /* a spilled one's bytes stay unused */
        stat_clear(old);
        *old = *s; /* the same key: the index stays right */
        return 0;
    }
    if (reserve((void **)&r->stats, &r->cap_stats, r->n_stats, sizeof *r->stats)) {
        give_budget(r, hstat_data_bytes(s->state));
        stat_clear(s);
        return qerror_set(e, QERR_SOFTWARE, "out of memory storing statistics");
    }
    r->stats[r->n_stats++] = *s;
    return 0;
}

int results_add_stat(results *r, const char *tensor, const char *observer, const char *params,
                     hstat *state, qerror *e)
{
    if (!path_ok(tensor) || !name_ok(observer) || !state) {
        hstat_free(state);
        return qerror_set(e, QERR_SOFTWARE, "results: bad statistic (tensor '%s', observer '%s')",
                          tensor ? tensor : "(null)", observer ? observer : "(null)");
    }
    result_stat s = {.max_rows = -1};
    s.tensor = strdup(tensor);
    s.observer = strdup(observer);
    s.params = dup_or_empty(params);
    s.state = state;
    if (!s.tensor || !s.observer || !s.params) {
        stat_clear(&s);
        return qerror_set(e, QERR_SOFTWARE, "out of memory storing statistics");
    }
    if (hold_or_spill(r, &s, e)) {
        stat_clear(&s);
        return qerror_prefix(e, "tensor '%s', observer '%s'", tensor, observer);
    }
    return stat_store(r, &s, e);
}

const qcal_stat *results_stat_view(const results *r, const result_stat *s, hstat **loaded,
                                   qerror *e)
{
    *loaded = NULL;
    if (s->state)
        return &s->state->view;
    unsigned char *bytes = malloc(s->spill_len ? (size_t)s->spill_len : 1);
    qcal_array *arrays = malloc(STATPACK_MAX_ARRAYS * sizeof *arrays);
    qcal_stat st;
    size_t at = 0;
    int rc = !bytes || !arrays ? qerror_set(e, QERR_SOFTWARE, "out of memory") : 0;
    if (!rc && !r->spill)
        rc = qerror_set(e, QERR_SOFTWARE, "results: no spill file for a spilled state");
    if (!rc)
        rc = spill_read(r->spill, s->spill_at, bytes, (size_t)s->spill_len, e);
    if (!rc && (statpack_take_stat(bytes, (size_t)s->spill_len, &at, &st, arrays) ||
                at != s->spill_len))
        rc = qerror_set(e, QERR_SOFTWARE, "results: a spilled state reads back malformed");
    if (!rc)
        rc = hstat_copy(&st, loaded, e);
    free(arrays);
    free(bytes);
    if (rc) {
        qerror_prefix(e, "observer '%s' on tensor '%s'", s->observer, s->tensor);
        return NULL;
    }
    return &(*loaded)->view;
}

result_stat *results_find_stat(results *r, const char *tensor, const char *observer,
                               const char *params)
{
    const char *key[3] = {tensor, observer, params ? params : ""};
    size_t i = keyindex_find(&r->by_stat, r->stats, r->n_stats, key);
    return i == SIZE_MAX ? NULL : &r->stats[i];
}

/* The index is a cache: finding through a const results updates it. */
const result_info *results_find_info(const results *r, const char *tensor)
{
    keyindex *x = (keyindex *)&r->by_info;
    size_t i = keyindex_find(x, r->infos, r->n_infos, &tensor);
    return i == SIZE_MAX ? NULL : &r->infos[i];
}

const result_candidates *results_find_candidates(const results *r, const char *tensor)
{
    keyindex *x = (keyindex *)&r->by_cands;
    size_t i = keyindex_find(x, r->cands, r->n_cands, &tensor);
    return i == SIZE_MAX ? NULL : &r->cands[i];
}

static int cands_copy(const result_candidates *in, result_candidates *out)
{
    memset(out, 0, sizeof *out);
    out->n = in->n, out->chosen = in->chosen;
    out->tensor = strdup(in->tensor);
    out->criterion = strdup(in->criterion ? in->criterion : "");
    out->method = calloc(in->n ? in->n : 1, sizeof *out->method);
    out->lo = malloc(6 * (in->n ? in->n : 1) * sizeof *out->lo);
    if (!out->tensor || !out->criterion || !out->method || !out->lo)
        return -1;
    out->hi = out->lo + in->n, out->mse = out->hi + in->n, out->sqnr_db = out->mse + in->n;
    out->cosine = out->sqnr_db + in->n, out->layer_error = out->cosine + in->n;
    const double *src[6] = {in->lo, in->hi, in->mse, in->sqnr_db, in->cosine, in->layer_error};
    for (int k = 0; k < 6; k++)
        for (uint64_t i = 0; i < in->n; i++)
            out->lo[k * in->n + i] = src[k] ? src[k][i] : NAN;
    for (uint64_t i = 0; i < in->n; i++)
        if (!(out->method[i] = strdup(in->method && in->method[i] ? in->method[i] : "")))
            return -1;
    return 0;
}

int results_add_candidates(results *r, const result_candidates *c, qerror *e)
{
    if (!path_ok(c->tensor))
        return qerror_set(e, QERR_DATA, "candidates: bad tensor name '%s'", c->tensor ? c->tensor : "");
    if (c->chosen < -1 || c->chosen >= (int64_t)c->n)
        return qerror_set(e, QERR_DATA, "candidates of '%s': chosen index %lld out of [0, %llu)",
                          c->tensor, (long long)c->chosen, (unsigned long long)c->n);
    result_candidates copy;
    if (cands_copy(c, &copy)) {
        cands_clear(&copy);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    result_candidates *old = (result_candidates *)results_find_candidates(r, c->tensor);
    if (old) {
        cands_clear(old);
        *old = copy;
        return 0;
    }
    if (reserve((void **)&r->cands, &r->cap_cands, r->n_cands, sizeof *r->cands)) {
        cands_clear(&copy);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    r->cands[r->n_cands++] = copy;
    return 0;
}

static int info_copy(const result_info *in, result_info *out)
{
    *out = *in;
    out->tensor = strdup(in->tensor);
    out->orig_name = dup_or_empty(in->orig_name ? in->orig_name : in->tensor);
    out->dtype = dup_or_empty(in->dtype);
    out->op_type = in->op_type ? strdup(in->op_type) : NULL;
    if (out->tensor && out->orig_name && out->dtype && (out->op_type || !in->op_type))
        return 0;
    info_clear(out);
    return -1;
}

int results_add_info(results *r, const result_info *info, qerror *e)
{
    if (!path_ok(info->tensor) || info->rank < 1 || info->rank > QCAL_MAX_RANK)
        return qerror_set(e, QERR_SOFTWARE, "results: bad tensor description '%s'",
                          info->tensor ? info->tensor : "(null)");
    result_info copy;
    if (info_copy(info, &copy))
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    result_info *old = (result_info *)results_find_info(r, info->tensor);
    if (old) {
        info_clear(old);
        *old = copy;
        return 0;
    }
    if (reserve((void **)&r->infos, &r->cap_infos, r->n_infos, sizeof *r->infos)) {
        info_clear(&copy);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    r->infos[r->n_infos++] = copy;
    return 0;
}

/* ---- HDF5 helpers ---------------------------------------------------------------------- */

/* Where a write or read is, for error lines. */
typedef struct ctx {
    const char *path; /* the file the user named */
    char obj[1200];   /* the HDF5 object being written or read */
    qerror *e;
} ctx;

static herr_t first_desc(unsigned n, const H5E_error2_t *err, void *ud)
{
    if (n == 0 && err->desc)
        snprintf(ud, 256, "%s", err->desc);
    return 0;
}

/* The description of HDF5's API-level error (the first on its stack, walking downward); must
 * run before the next HDF5 call clears the stack. */
static void api_reason(char *buf)
{
    buf[0] = '\0';
    if (h5_system_reason(buf, 256))
        return;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, first_desc, buf);
    if (!buf[0])
        snprintf(buf, 256, "HDF5 error");
}

static int write_failed(const ctx *c, const char *what, const char *name)
{
    char why[256];
    api_reason(why);
    return qerror_set(c->e, QERR_IO, "cannot write '%s': %s %s of %s: %s", c->path, what, name,
                      c->obj, why);
}

static hid_t str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static int attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *buf,
                      const ctx *c)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (a < 0 || H5Awrite(a, mtype, buf) < 0) ? write_failed(c, "attribute", name) : 0;
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    return rc;
}

static int attr_str(hid_t loc, const char *name, const char *value, const ctx *c)
{
    hid_t t = str_type();
    if (t < 0)
        return write_failed(c, "attribute", name);
    int rc = attr_write(loc, name, t, t, &value, c);
    H5Tclose(t);
    return rc;
}

static int attr_i64(hid_t loc, const char *name, int64_t v, const ctx *c)
{
    return attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, c);
}

static int attr_flag(hid_t loc, const char *name, int v, const ctx *c)
{
    int8_t b = v ? 1 : 0;
    return attr_write(loc, name, H5T_STD_I8LE, H5T_NATIVE_INT8, &b, c);
}

static int attr_f64(hid_t loc, const char *name, double v, const ctx *c)
{
    return attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, c);
}

static int dset_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                      const hsize_t *dims, const void *data, const ctx *c)
{
    hid_t sp = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0); /* no clock in the file: same inputs, same bytes */
    hid_t d = sp < 0 ? -1 : H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    int empty = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 0;
    int rc = (d < 0 || (!empty && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
                 ? write_failed(c, "dataset", name)
                 : 0;
    if (d >= 0)
        H5Dclose(d);
    if (sp >= 0)
        H5Sclose(sp);
    return rc;
}

/* Opens or creates one group below loc, with no modification times recorded. */
static hid_t group_one(hid_t loc, const char *name, hid_t gcpl)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) > 0)
        return H5Gopen2(loc, name, H5P_DEFAULT);
    hid_t own = gcpl == H5P_DEFAULT ? H5Pcreate(H5P_GROUP_CREATE) : H5Pcopy(gcpl);
    H5Pset_obj_track_times(own, 0); /* no clock in the file: same inputs, same bytes */
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, own, H5P_DEFAULT);
    H5Pclose(own);
    return g;
}

/* Opens the group at `path` below loc, creating it and any missing parents one by one (so
 * every one of them is created without times; gcpl applies to the last). */
static hid_t group_at(hid_t loc, const char *path, hid_t gcpl, const ctx *c)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    hid_t g = H5Iinc_ref(loc) >= 0 ? loc : -1;
    for (char *part = buf, *next; g >= 0 && part; part = next) {
        next = strchr(part, '/');
        if (next)
            *next++ = '\0';
        hid_t child = group_one(g, part, next ? H5P_DEFAULT : gcpl);
        H5Idec_ref(g);
        g = child;
    }
    if (g < 0)
        write_failed(c, "group", path);
    return g;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int write_spec(hid_t g, const result_tensor *t, const ctx *c)
{
    uint32_t f = t->spec.flags;
    return attr_str(g, "name", t->orig_name, c) || attr_str(g, "tensor", t->tensor, c) ||
           attr_str(g, "method", t->method, c) || attr_i64(g, "bits", t->spec.bits, c) ||
           attr_i64(g, "qmin", t->spec.qmin, c) || attr_i64(g, "qmax", t->spec.qmax, c) ||
           attr_flag(g, "symmetric", f & QCAL_QSPEC_SYMMETRIC, c) ||
           attr_flag(g, "narrow_range", f & QCAL_QSPEC_NARROW, c) ||
           attr_flag(g, "signed", f & QCAL_QSPEC_SIGNED, c) ||
           attr_str(g, "granularity", (f & QCAL_QSPEC_PER_CHANNEL) ? "per_channel" : "per_tensor",
                    c);
}

/* The scalar attributes: the range (overall, when per channel) and its scale / zero-point. */
static int write_range(hid_t g, const result_tensor *t, const ctx *c)
{
    double lo = t->lo[0], hi = t->hi[0], scale = t->scale[0];
    int64_t zp = t->zero_point[0];
    for (uint64_t i = 1; i < t->channels; i++) {
        lo = t->lo[i] < lo ? t->lo[i] : lo;
        hi = t->hi[i] > hi ? t->hi[i] : hi;
    }
    if (t->channels > 1 && qmath_qparams(&t->spec, lo, hi, &scale, &zp, c->e))
        return qerror_prefix(c->e, "cannot write '%s': %s", c->path, c->obj);
    return attr_f64(g, "min", lo, c) || attr_f64(g, "max", hi, c) ||
           attr_f64(g, "threshold", qmath_threshold(lo, hi), c) ||
           attr_f64(g, "scale", scale, c) || attr_i64(g, "zero_point", zp, c);
}

static int write_channels(hid_t g, const result_tensor *t, const ctx *c)
{
    hsize_t n = t->channels;
    hid_t f = H5T_IEEE_F64LE, m = H5T_NATIVE_DOUBLE;
    return attr_i64(g, "axis", t->spec.axis, c) || dset_write(g, "min", f, m, 1, &n, t->lo, c) ||
           dset_write(g, "max", f, m, 1, &n, t->hi, c) ||
           dset_write(g, "scale", f, m, 1, &n, t->scale, c) ||
           dset_write(g, "zero_point", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &n, t->zero_point, c);
}

static int write_tensor(hid_t cal, const result_tensor *t, ctx *c)
{
    snprintf(c->obj, sizeof c->obj, "/calibration/%s", t->tensor);
    hid_t g = group_at(cal, t->tensor, H5P_DEFAULT, c);
    if (g < 0)
        return -1;
    int rc = write_spec(g, t, c) || write_range(g, t, c);
    if (!rc && t->has_metrics)
        rc = attr_f64(g, "mse", t->mse, c) || attr_f64(g, "sqnr_db", t->sqnr_db, c) ||
             attr_f64(g, "cosine", t->cosine, c);
    if (!rc && t->note)
        rc = attr_str(g, "note", t->note, c);
    if (!rc && t->has_data_range)
        rc = attr_f64(g, "data_min", t->data_min, c) || attr_f64(g, "data_max", t->data_max, c);
    if (!rc && (t->spec.flags & QCAL_QSPEC_PER_CHANNEL))
        rc = write_channels(g, t, c);
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int dtype_h5(uint32_t dtype, hid_t *ftype, hid_t *mtype)
{
    switch (dtype) {
    case QCAL_DTYPE_F32:
        *ftype = H5T_IEEE_F32LE, *mtype = H5T_NATIVE_FLOAT;
        return 0;
    case QCAL_DTYPE_F64:
        *ftype = H5T_IEEE_F64LE, *mtype = H5T_NATIVE_DOUBLE;
        return 0;
    case QCAL_DTYPE_I64:
        *ftype = H5T_STD_I64LE, *mtype = H5T_NATIVE_INT64;
        return 0;
    case QCAL_DTYPE_U64:
        *ftype = H5T_STD_U64LE, *mtype = H5T_NATIVE_UINT64;
        return 0;
    default:
        return -1;
    }
}

static int write_array(hid_t g, const qcal_array *a, const ctx *c)
{
    hid_t ft, mt;
    if (a->rank > 4 || dtype_h5(a->dtype, &ft, &mt))
        return qerror_set(c->e, QERR_SOFTWARE, "cannot write '%s': array '%s' of %s has dtype %u "
                          "and rank %u", c->path, a->name, c->obj, (unsigned)a->dtype,
                          (unsigned)a->rank);
    hsize_t dims[4];
    for (uint32_t d = 0; d < a->rank; d++)
        dims[d] = a->shape[d];
    return dset_write(g, a->name, ft, mt, (int)a->rank, dims, a->data, c);
}

/* Statistic groups track creation order, so arrays read back in the order they were made. */
static hid_t stat_group(hid_t stats, const result_stat *s, int nth, const ctx *c)
{
    char path[1024];
    if (nth > 1)
        snprintf(path, sizeof path, "%s/%s#%d", s->tensor, s->observer, nth);
    else
        snprintf(path, sizeof path, "%s/%s", s->tensor, s->observer);
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    if (gcpl < 0 ||
        H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0) {
        if (gcpl >= 0)
            H5Pclose(gcpl);
        write_failed(c, "group", path);
        return -1;
    }
    hid_t g = group_at(stats, path, gcpl, c);
    H5Pclose(gcpl);
    return g;
}

static int write_stat(hid_t stats, const results *r, const result_stat *s, int nth, ctx *c)
{
    snprintf(c->obj, sizeof c->obj, "/statistics/%s/%s", s->tensor, s->observer);
    hstat *loaded;
    const qcal_stat *v = results_stat_view(r, s, &loaded, c->e);
    hid_t g = v ? stat_group(stats, s, nth, c) : -1;
    if (g < 0) {
        hstat_free(loaded);
        return -1;
    }
    int rc = attr_str(g, "tensor", s->tensor, c) || attr_str(g, "observer", s->observer, c) ||
             attr_str(g, "kind", v->kind, c) || attr_i64(g, "kind_version", v->kind_version, c) ||
             attr_i64(g, "channels", (int64_t)v->channels, c) ||
             attr_str(g, "params", s->params, c) ||
             (s->batch_size && (attr_i64(g, "batch_size", (int64_t)s->batch_size, c) ||
                                attr_i64(g, "axis", s->axis, c))) ||
             (s->on_share && attr_i64(g, "on_share", 1, c)) ||
             (s->max_rows >= 0 && attr_i64(g, "max_rows", s->max_rows, c));
    for (uint32_t i = 0; !rc && i < v->n_arrays; i++)
        rc = write_array(g, &v->arrays[i], c);
    H5Gclose(g);
    hstat_free(loaded);
    return rc ? -1 : 0;
}

/* ordinal[i]: 1 for the first state of an observer on a tensor, 2 for the next (other
 * params), ...; NULL when out of memory. */
static size_t *stat_ordinals(const results *r)
{
    size_t n = r->n_stats ? r->n_stats : 1;
    size_t *nth = calloc(n, sizeof *nth), *seen = calloc(n, sizeof *seen);
    keyindex by_observer; /* (tensor, observer): the first two parts of a stat's key */
    keyindex_init(&by_observer, 2, stat_key);
    for (size_t i = 0; nth && seen && i < r->n_stats; i++) {
        const char *key[2] = {r->stats[i].tensor, r->stats[i].observer};
        nth[i] = ++seen[keyindex_find(&by_observer, r->stats, i + 1, key)];
    }
    keyindex_free(&by_observer);
    if (!seen)
        free(nth), nth = NULL;
    free(seen);
    return nth;
}

/* Pointers into one array: their order is the order the statistics were added in. */
static int by_tensor_then_added(const void *a, const void *b)
{
    const result_stat *x = *(const result_stat *const *)a, *y = *(const result_stat *const *)b;
    int c = strcmp(x->tensor, y->tensor);
    return c ? c : (x > y) - (x < y);
}

/* The order statistics are written in: by tensor, and as added within a tensor. A pass hands
 * its tensors' states over as each tensor is done, in whichever order the threads finish;
 * this makes the file the same every time. NULL when out of memory. */
static const result_stat **stat_order(const results *r)
{
    const result_stat **order = malloc((r->n_stats ? r->n_stats : 1) * sizeof *order);
    for (size_t i = 0; order && i < r->n_stats; i++)
        order[i] = &r->stats[i];
    if (order)
        qsort(order, r->n_stats, sizeof *order, by_tensor_then_added);
    return order;
}

static int write_info(hid_t stats, const result_info *in, ctx *c)
{
    snprintf(c->obj, sizeof c->obj, "/statistics/%s", in->tensor);
    hid_t g = group_at(stats, in->tensor, H5P_DEFAULT, c);
    if (g < 0)
        return -1;
    hsize_t rank = (hsize_t)in->rank;
    int64_t shape[QCAL_MAX_RANK];
    for (int d = 0; d < in->rank; d++)
        shape[d] = (int64_t)in->shape[d];
    hid_t sp = H5Screate_simple(1, &rank, NULL);
    hid_t a = sp < 0 ? -1 : H5Acreate2(g, "shape", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (a < 0 || H5Awrite(a, H5T_NATIVE_INT64, shape) < 0) ? write_failed(c, "attribute", "shape") : 0;
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    rc = rc || attr_i64(g, "channel_axis", in->channel_axis, c) ||
         attr_str(g, "name", in->orig_name, c) || attr_str(g, "dtype", in->dtype, c) ||
         (in->op_type && attr_str(g, "op_type", in->op_type, c));
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int write_candidates(hid_t root, const result_candidates *k, ctx *c)
{
    snprintf(c->obj, sizeof c->obj, "/candidates/%s", k->tensor);
    hid_t g = group_at(root, k->tensor, H5P_DEFAULT, c);
    if (g < 0)
        return -1;
    hsize_t n = k->n;
    hid_t st = str_type();
    const char *names[6] = {"min", "max", "mse", "sqnr_db", "cosine", "layer_error"};
    int rc = st < 0 || attr_i64(g, "chosen", k->chosen, c) ||
             attr_str(g, "criterion", k->criterion, c) ||
             dset_write(g, "method", st, st, 1, &n, k->method, c);
    for (int i = 0; !rc && i < 6; i++)
        rc = dset_write(g, names[i], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &n, k->lo + i * n, c);
    if (st >= 0)
        H5Tclose(st);
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int write_body(hid_t f, const results *r, ctx *c)
{
    snprintf(c->obj, sizeof c->obj, "/");
    if (attr_str(f, "qcal_version", r->qcal_version, c) || attr_str(f, "recipe", r->recipe, c) ||
        attr_str(f, "source", r->source, c) || attr_str(f, "created", r->created, c))
        return -1;
    if (attr_i64(f, "dump_has_weights", r->dump_has_weights, c))
        return -1;
    if (r->share_count && (attr_i64(f, "share_index", (int64_t)r->share_index, c) ||
                           attr_i64(f, "share_count", (int64_t)r->share_count, c)))
        return -1;
    hid_t cal = group_at(f, "calibration", H5P_DEFAULT, c);
    hid_t stats = cal < 0 ? -1 : group_at(f, "statistics", H5P_DEFAULT, c);
    int rc = stats < 0 ? -1 : 0;
    for (size_t i = 0; !rc && i < r->n_tensors; i++)
        rc = write_tensor(cal, &r->tensors[i], c);
    size_t *ordinal = rc ? NULL : stat_ordinals(r);
    const result_stat **order = rc ? NULL : stat_order(r);
    if (!rc && (!ordinal || !order))
        rc = qerror_set(c->e, QERR_SOFTWARE, "out of memory writing '%s'", c->path);
    for (size_t k = 0; !rc && k < r->n_stats; k++)
        rc = write_stat(stats, r, order[k], (int)ordinal[order[k] - r->stats], c);
    free((void *)order);
    free(ordinal);
    for (size_t i = 0; !rc && i < r->n_infos; i++)
        rc = write_info(stats, &r->infos[i], c);
    hid_t cands = rc || !r->n_cands ? -1 : group_at(f, "candidates", H5P_DEFAULT, c);
    if (!rc && r->n_cands && cands < 0)
        rc = -1;
    for (size_t i = 0; !rc && i < r->n_cands; i++)
        rc = write_candidates(cands, &r->cands[i], c);
    if (cands >= 0)
        H5Gclose(cands);
    if (stats >= 0)
        H5Gclose(stats);
    if (cal >= 0)
        H5Gclose(cal);
    return rc;
}

/* Writes the HDF5 file `tmp` (already created empty by mkstemp) and closes it. */
static int write_hdf5(const results *r, const char *tmp, ctx *c)
{
    char why[256];
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_obj_track_times(fcpl, 0);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0)
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG); /* nothing may outlive H5Fclose */
    hid_t f = fapl < 0 ? -1 : H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fcpl);
    if (f < 0) {
        api_reason(why);
        if (fapl >= 0)
            H5Pclose(fapl);
        return qerror_set(c->e, QERR_CANTCREAT, "cannot create '%s': %s", c->path, why);
    }
    H5Pclose(fapl);
    int rc = write_body(f, r, c);
    if (H5Fclose(f) < 0) {
        h5_file_left_open();
        api_reason(why);
        if (!rc)
            rc = qerror_set(c->e, QERR_IO, "cannot write '%s': %s", c->path, why);
    }
    return rc;
}

/* ---- the atomic file dance ------------------------------------------------------------- */

static int sys_failed(const ctx *c, int code, const char *what)
{
    int err = errno;
    return qerror_set(c->e, code, "cannot %s '%s': %s", what, c->path, strerror(err));
}

static void sync_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return;
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0'; /* "/x.h5" -> "/", "a/x.h5" -> "a" */
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd); /* best effort: the rename has happened, there is nothing to undo */
        close(fd);
    }
    free(dir);
}

/* Moves tmp onto path. Without force, link() makes "refuse an existing file" atomic. */
static int publish(const char *tmp, int force, const ctx *c)
{
    if (force)
        return rename(tmp, c->path) ? sys_failed(c, QERR_CANTCREAT, "rename a file onto") : 0;
    if (link(tmp, c->path) == 0) {
        unlink(tmp);
        return 0;
    }
    if (errno == EEXIST)
        return qerror_set(c->e, QERR_CANTCREAT, "refusing to overwrite existing '%s' (use --force)",
                          c->path);
    if (access(c->path, F_OK) == 0) /* a filesystem without hard links: check, then rename */
        return qerror_set(c->e, QERR_CANTCREAT, "refusing to overwrite existing '%s' (use --force)",
                          c->path);
    return rename(tmp, c->path) ? sys_failed(c, QERR_CANTCREAT, "rename a file onto") : 0;
}

/* The new file's mode: the old file's when replacing one, else 0666 minus the umask. */
static mode_t new_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return st.st_mode & 07777;
    mode_t mask = umask(0); /* the only way to read it; restored at once */
    umask(mask);
    return 0666 & ~mask;
}

static int check_target(const char *path, int force, const ctx *c)
{
    struct stat st;
    if (!path || !*path)
        return qerror_set(c->e, QERR_CANTCREAT, "cannot create a results file with no name");
    if (stat(path, &st) != 0)
        return 0;
    if (S_ISDIR(st.st_mode))
        return qerror_set(c->e, QERR_CANTCREAT, "cannot create '%s': it is a directory", path);
    if (!force)
        return qerror_set(c->e, QERR_CANTCREAT, "refusing to overwrite existing '%s' (use --force)",
                          path);
    return 0;
}

/* The temporary file being written, for results_abandon_temp() from a signal handler. */
static char pending_temp[4096];
static volatile sig_atomic_t pending_set;

void results_abandon_temp(void)
{
    if (pending_set)
        unlink(pending_temp); /* async-signal-safe */
}

static void pending(const char *tmp)
{
    pending_set = 0;
    if (tmp && strlen(tmp) < sizeof pending_temp) {
        memcpy(pending_temp, tmp, strlen(tmp) + 1);
        pending_set = 1;
    }
}

static int write_atomic(const results *r, const char *path, int force, ctx *c)
{
    if (check_target(path, force, c))
        return -1;
    size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
    char *tmp = malloc(n);
    if (!tmp)
        return qerror_set(c->e, QERR_SOFTWARE, "out of memory");
    snprintf(tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(tmp);
        return sys_failed(c, QERR_CANTCREAT, "create");
    }
    pending(tmp);
    /* the target's mode comes once written: a read-only old file's mode on the temporary
     * file kept HDF5 from opening it for writing ("HDF5 error" replacing a 0444 file) */
    int rc = write_hdf5(r, tmp, c);
    if (!rc && fchmod(fd, new_mode(path)) != 0)
        rc = sys_failed(c, QERR_CANTCREAT, "create");
    if (!rc && fsync(fd) != 0)
        rc = sys_failed(c, QERR_IO, "write");
    if (close(fd) != 0 && !rc)
        rc = sys_failed(c, QERR_IO, "write");
    if (!rc)
        rc = publish(tmp, force, c);
    if (rc)
        unlink(tmp);
    pending(NULL);
    if (!rc)
        sync_dir(path);
    free(tmp);
    return rc;
}

int results_write(const results *r, const char *path, int force, qerror *e)
{
    ctx c = {.path = path, .e = e};
    int rc;
    H5E_BEGIN_TRY
    {
        rc = write_atomic(r, path, force, &c);
    }
    H5E_END_TRY;
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------ */

static int bad_attr(const ctx *c, const char *name, const char *want)
{
    return qerror_set(c->e, QERR_DATA, "'%s': %s: attribute '%s' is missing or not %s", c->path,
                      c->obj, name, want);
}

static int scalar_space(hid_t sp)
{
    return sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1;
}

/* A scalar numeric attribute of class cls, converted to mtype. */
static int attr_num(hid_t loc, const char *name, H5T_class_t cls, hid_t mtype, void *out,
                    const ctx *c)
{
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    int ok = t >= 0 && H5Tget_class(t) == cls && scalar_space(sp) && H5Aread(a, mtype, out) >= 0;
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return ok ? 0 : bad_attr(c, name, cls == H5T_FLOAT ? "a scalar float" : "a scalar integer");
}

static int attr_get_i64(hid_t loc, const char *name, int64_t *v, const ctx *c)
{
    return attr_num(loc, name, H5T_INTEGER, H5T_NATIVE_INT64, v, c);
}

static int attr_get_f64(hid_t loc, const char *name, double *v, const ctx *c)
{
    return attr_num(loc, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, v, c);
}

static char *read_str(hid_t a, hid_t t)
{
    char *out = NULL;
    if (H5Tis_variable_str(t) > 0) {
        hid_t mt = str_type();
        char *s = NULL;
        if (mt >= 0 && H5Tset_cset(mt, H5Tget_cset(t)) >= 0 && h5_read_attr_vlen(a, mt, &s) >= 0 &&
            s) {
            out = strdup(s);
            H5free_memory(s);
        }
        if (mt >= 0)
            H5Tclose(mt);
        return out;
    }
    size_t n = H5Tget_size(t);
    out = n > 0 && n < (1u << 20) ? calloc(n + 1, 1) : NULL;
    if (out && H5Aread(a, t, out) < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

/* A scalar string attribute (variable or fixed length), malloc'd. */
static int attr_get_str(hid_t loc, const char *name, char **out, const ctx *c)
{
    *out = NULL;
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && scalar_space(sp))
        *out = read_str(a, t);
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return *out ? 0 : bad_attr(c, name, "a string");
}

static int has_attr(hid_t loc, const char *name)
{
    return H5Aexists(loc, name) > 0;
}

/* A 1-D dataset of n values of class cls, read as mtype into a new buffer. */
static void *read_vector(hid_t g, const char *name, H5T_class_t cls, hid_t mtype, uint64_t n,
                         const ctx *c)
{
    hid_t d = H5Lexists(g, name, H5P_DEFAULT) > 0 ? H5Dopen2(g, name, H5P_DEFAULT) : -1;
    hid_t t = d < 0 ? -1 : H5Dget_type(d);
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    hsize_t dims[1] = {0};
    int ok = t >= 0 && H5Tget_class(t) == cls && sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 &&
             H5Sget_simple_extent_dims(sp, dims, NULL) == 1 && dims[0] == n;
    void *buf = ok ? malloc(n * 8) : NULL;
    if (buf && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        buf = NULL;
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    if (!buf)
        qerror_set(c->e, QERR_DATA, "'%s': %s: dataset '%s' is missing or not %s[%llu]", c->path,
                   c->obj, name, cls == H5T_FLOAT ? "float" : "integer", (unsigned long long)n);
    return buf;
}

typedef struct spec_attrs {
    int64_t bits, qmin, qmax, symmetric, narrow, sign, axis;
    char *granularity;
} spec_attrs;

static int read_spec(hid_t g, qcal_qspec *spec, const ctx *c)
{
    spec_attrs s = {.axis = -1};
    if (attr_get_i64(g, "bits", &s.bits, c) || attr_get_i64(g, "qmin", &s.qmin, c) ||
        attr_get_i64(g, "qmax", &s.qmax, c) || attr_get_i64(g, "symmetric", &s.symmetric, c) ||
        attr_get_i64(g, "narrow_range", &s.narrow, c) || attr_get_i64(g, "signed", &s.sign, c) ||
        attr_get_str(g, "granularity", &s.granularity, c))
        return -1;
    int per_channel = strcmp(s.granularity, "per_channel") == 0;
    int known = per_channel || strcmp(s.granularity, "per_tensor") == 0;
    free(s.granularity);
    if (!known)
        return bad_attr(c, "granularity", "'per_tensor' or 'per_channel'");
    if (per_channel && attr_get_i64(g, "axis", &s.axis, c))
        return -1;
    uint32_t flags = (s.sign ? QCAL_QSPEC_SIGNED : 0) | (s.symmetric ? QCAL_QSPEC_SYMMETRIC : 0) |
                     (s.narrow ? QCAL_QSPEC_NARROW : 0) |
                     (per_channel ? QCAL_QSPEC_PER_CHANNEL : 0);
    int bits = s.bits < 0 || s.bits > 64 ? 0 : (int)s.bits;
    int axis = s.axis < -1 || s.axis > 64 ? 0 : (int)s.axis;
    if (qmath_spec(spec, bits, flags, axis, c->e)) {
        if (c->e)
            c->e->code = QERR_DATA;
        return qerror_prefix(c->e, "'%s': %s", c->path, c->obj);
    }
    if (spec->qmin != s.qmin || spec->qmax != s.qmax)
        return qerror_set(c->e, QERR_DATA, "'%s': %s: qmin/qmax [%lld, %lld] do not match %d bits "
                          "(expected [%lld, %lld])", c->path, c->obj, (long long)s.qmin,
                          (long long)s.qmax, bits, (long long)spec->qmin, (long long)spec->qmax);
    return 0;
}

static int read_channels(hid_t g, result_tensor *t, const ctx *c)
{
    int64_t n = 0;
    hid_t d = H5Lexists(g, "min", H5P_DEFAULT) > 0 ? H5Dopen2(g, "min", H5P_DEFAULT) : -1;
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    if (sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1)
        n = H5Sget_simple_extent_npoints(sp);
    if (sp >= 0)
        H5Sclose(sp);
    if (d >= 0)
        H5Dclose(d);
    if (n < 1 || n > ((int64_t)1 << 32))
        return qerror_set(c->e, QERR_DATA, "'%s': %s: dataset 'min' is missing or not float[C]",
                          c->path, c->obj);
    t->channels = (uint64_t)n;
    t->lo = read_vector(g, "min", H5T_FLOAT, H5T_NATIVE_DOUBLE, t->channels, c);
    t->hi = t->lo ? read_vector(g, "max", H5T_FLOAT, H5T_NATIVE_DOUBLE, t->channels, c) : NULL;
    t->scale = t->hi ? read_vector(g, "scale", H5T_FLOAT, H5T_NATIVE_DOUBLE, t->channels, c) : NULL;
    t->zero_point = t->scale ? read_vector(g, "zero_point", H5T_INTEGER, H5T_NATIVE_INT64,
                                           t->channels, c)
                             : NULL;
    return t->zero_point ? 0 : -1;
}

static int read_range(hid_t g, result_tensor *t, const ctx *c)
{
    if (t->spec.flags & QCAL_QSPEC_PER_CHANNEL)
        return read_channels(g, t, c);
    if (tensor_alloc(t, 1))
        return qerror_set(c->e, QERR_SOFTWARE, "out of memory");
    return attr_get_f64(g, "min", t->lo, c) || attr_get_f64(g, "max", t->hi, c) ||
           attr_get_f64(g, "scale", t->scale, c) || attr_get_i64(g, "zero_point", t->zero_point, c);
}

/* Finite as a float32: every range and scale qcal writes is one (the formats deployment
 * toolchains read hold float32). */
static int float_finite(double v) { return fabs(v) <= FLT_MAX; }

/* What a results file must hold for its values to be usable. */
static int check_values(const result_tensor *t, const ctx *c)
{
    for (uint64_t i = 0; i < t->channels; i++) {
        int ok = float_finite(t->lo[i]) && float_finite(t->hi[i]) && t->lo[i] <= t->hi[i] &&
                 float_finite(t->scale[i]) && t->scale[i] > 0 &&
                 t->zero_point[i] >= t->spec.qmin && t->zero_point[i] <= t->spec.qmax;
        if (!ok)
            return qerror_set(c->e, QERR_DATA, "'%s': %s: channel %llu has range [%g, %g], scale "
                              "%g, zero-point %lld (expected a range and scale > 0 finite in "
                              "float32 and a zero-point on the grid)", c->path, c->obj, (unsigned long long)i,
                              t->lo[i], t->hi[i], t->scale[i], (long long)t->zero_point[i]);
    }
    return 0;
}

static int read_extras(hid_t g, result_tensor *t, const ctx *c)
{
    if (has_attr(g, "mse")) {
        t->has_metrics = 1;
        if (attr_get_f64(g, "mse", &t->mse, c) || attr_get_f64(g, "sqnr_db", &t->sqnr_db, c) ||
            attr_get_f64(g, "cosine", &t->cosine, c))
            return -1;
    }
    if (has_attr(g, "note") && attr_get_str(g, "note", &t->note, c))
        return -1;
    if (has_attr(g, "data_min") || has_attr(g, "data_max")) {
        t->has_data_range = 1;
        if (attr_get_f64(g, "data_min", &t->data_min, c) ||
            attr_get_f64(g, "data_max", &t->data_max, c))
            return -1;
        if (!float_finite(t->data_min) || !float_finite(t->data_max) || t->data_min > t->data_max)
            return qerror_set(c->e, QERR_DATA, "'%s': %s: data range [%g, %g] (expected "
                              "data_min <= data_max, finite in float32)", c->path, c->obj,
                              t->data_min, t->data_max);
    }
    if (has_attr(g, "name"))
        return attr_get_str(g, "name", &t->orig_name, c);
    t->orig_name = strdup(t->tensor);
    return t->orig_name ? 0 : qerror_set(c->e, QERR_SOFTWARE, "out of memory");
}

static int read_tensor(hid_t g, const char *rel, results *r, const ctx *c)
{
    result_tensor t = {0};
    t.tensor = strdup(rel);
    int rc = !t.tensor ? qerror_set(c->e, QERR_SOFTWARE, "out of memory") : 0;
    if (!rc)
        rc = attr_get_str(g, "method", &t.method, c) || read_spec(g, &t.spec, c) ||
             read_range(g, &t, c) || check_values(&t, c) || read_extras(g, &t, c);
    if (rc) {
        tensor_clear(&t);
        return -1;
    }
    return tensor_store(r, &t, c->e);
}

/* Array names of a statistic group, in creation order when the file tracks it. */
static int link_name(hid_t g, H5_index_t idx, hsize_t i, char *buf, size_t size)
{
    ssize_t n = H5Lget_name_by_idx(g, ".", idx, H5_ITER_INC, i, buf, size, H5P_DEFAULT);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

static H5_index_t group_index(hid_t g)
{
    unsigned flags = 0;
    hid_t gcpl = H5Gget_create_plist(g);
    if (gcpl >= 0) {
        H5Pget_link_creation_order(gcpl, &flags);
        H5Pclose(gcpl);
    }
    return (flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
}

static int dtype_of(hid_t t, uint32_t *dtype)
{
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    if (cls == H5T_FLOAT && (size == 4 || size == 8))
        *dtype = size == 4 ? QCAL_DTYPE_F32 : QCAL_DTYPE_F64;
    else if (cls == H5T_INTEGER && size == 8)
        *dtype = H5Tget_sign(t) == H5T_SGN_NONE ? QCAL_DTYPE_U64 : QCAL_DTYPE_I64;
    else
        return -1;
    return 0;
}

/* Reads dataset `name` of g into a (name and data malloc'd). */
static int read_array(hid_t g, const char *name, qcal_array *a, const ctx *c)
{
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    hid_t t = d < 0 ? -1 : H5Dget_type(d);
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    int rank = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    hsize_t dims[4] = {0};
    hid_t ft, mt;
    int ok = t >= 0 && dtype_of(t, &a->dtype) == 0 && rank >= 0 && rank <= 4 &&
             H5Sget_simple_extent_dims(sp, dims, NULL) == rank;
    ok = ok && dtype_h5(a->dtype, &ft, &mt) == 0;
    a->rank = ok ? (uint32_t)rank : 0;
    for (int i = 0; ok && i < rank; i++)
        a->shape[i] = dims[i];
    uint64_t n = ok ? hstat_array_count(a) : 0;
    ok = ok && n <= ((uint64_t)1 << 32);
    void *buf = ok ? malloc(n ? n * hstat_dtype_size(a->dtype) : 1) : NULL;
    ok = buf && (n == 0 || H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    a->data = buf;
    a->name = strdup(name);
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    if (ok && a->name)
        return 0;
    return qerror_set(c->e, QERR_DATA, "'%s': %s: dataset '%s' is not a float32, float64, int64 "
                      "or uint64 array of rank 0..4", c->path, c->obj, name);
}

static void arrays_free(qcal_array *a, hsize_t n)
{
    for (hsize_t i = 0; a && i < n; i++) {
        free((void *)a[i].name);
        free((void *)a[i].data);
    }
    free(a);
}

static int read_arrays(hid_t g, qcal_stat *st, const ctx *c)
{
    H5G_info_t info;
    if (H5Gget_info(g, &info) < 0 || info.nlinks > 256)
        return qerror_set(c->e, QERR_DATA, "'%s': %s: unreadable, or over 256 arrays", c->path,
                          c->obj);
    qcal_array *a = calloc(info.nlinks ? info.nlinks : 1, sizeof *a);
    if (!a)
        return qerror_set(c->e, QERR_SOFTWARE, "out of memory");
    H5_index_t idx = group_index(g);
    char name[256];
    int rc = 0;
    for (hsize_t i = 0; !rc && i < info.nlinks; i++) {
        rc = link_name(g, idx, i, name, sizeof name)
                 ? qerror_set(c->e, QERR_DATA, "'%s': %s: unreadable link", c->path, c->obj)
                 : read_array(g, name, &a[i], c);
    }
    if (rc) {
        arrays_free(a, info.nlinks);
        return -1;
    }
    st->n_arrays = (uint32_t)info.nlinks;
    st->arrays = a;
    return 0;
}

static int read_stat_attrs(hid_t g, qcal_stat *st, char **kind, char **params, const ctx *c)
{
    int64_t version, channels;
    if (attr_get_str(g, "kind", kind, c) || attr_get_i64(g, "kind_version", &version, c) ||
        attr_get_i64(g, "channels", &channels, c) || attr_get_str(g, "params", params, c))
        return -1;
    if (version < 0 || version > UINT32_MAX || channels < 1)
        return qerror_set(c->e, QERR_DATA, "'%s': %s: kind_version %lld or channels %lld out of "
                          "range", c->path, c->obj, (long long)version, (long long)channels);
    st->kind = *kind;
    st->kind_version = (uint32_t)version;
    st->channels = (uint64_t)channels;
    return 0;
}

static int read_stat(hid_t g, const char *rel, results *r, const ctx *c)
{
    const char *slash = strrchr(rel, '/');
    if (!slash)
        return qerror_set(c->e, QERR_DATA, "'%s': %s: a statistic needs a tensor and an observer "
                          "name (/statistics/<tensor>/<observer>)", c->path, c->obj);
    qcal_stat st = {0};
    char *kind = NULL, *params = NULL, *tensor = strndup(rel, (size_t)(slash - rel));
    hstat *h = NULL;
    int rc = tensor ? read_stat_attrs(g, &st, &kind, &params, c) : -1;
    if (!rc)
        rc = read_arrays(g, &st, c);
    if (!rc && hstat_copy(&st, &h, c->e)) {
        if (c->e)
            c->e->code = QERR_DATA;
        rc = qerror_prefix(c->e, "'%s': %s", c->path, c->obj);
    }
    char *observer = NULL; /* the group may be "<observer>#2": the attribute names it */
    if (!rc && has_attr(g, "observer"))
        rc = attr_get_str(g, "observer", &observer, c);
    int64_t on_share = 0, batch = 0, axis = 0, max_rows = -1;
    if (!rc && has_attr(g, "on_share"))
        rc = attr_get_i64(g, "on_share", &on_share, c);
    if (!rc && has_attr(g, "max_rows"))
        rc = attr_get_i64(g, "max_rows", &max_rows, c);
    if (!rc && max_rows < -1)
        rc = qerror_set(c->e, QERR_DATA, "'%s': %s: expected max_rows >= 0, found %lld", c->path,
                        c->obj, (long long)max_rows);
    if (!rc && has_attr(g, "batch_size"))
        rc = attr_get_i64(g, "batch_size", &batch, c) || attr_get_i64(g, "axis", &axis, c);
    if (!rc && (batch < 0 || axis < -1 || axis >= QCAL_MAX_RANK))
        rc = qerror_set(c->e, QERR_DATA, "'%s': %s: expected batch_size >= 0 and axis in [-1, %d], "
                        "found %lld and %lld", c->path, c->obj, QCAL_MAX_RANK - 1,
                        (long long)batch, (long long)axis);
    const char *observer_name = observer ? observer : slash + 1;
    if (!rc && (!path_ok(tensor) || !name_ok(observer_name))) /* a damaged file's names */
        rc = qerror_set(c->e, QERR_DATA, "'%s': %s: expected a tensor path and an observer name, "
                        "found '%s' and '%s'", c->path, c->obj, tensor, observer_name);
    if (!rc)
        rc = results_add_stat(r, tensor, observer_name, params, h, c->e);
    else
        hstat_free(h);
    if (!rc) {
        result_stat *s = results_find_stat(r, tensor, observer_name, params);
        s->on_share = on_share != 0, s->batch_size = (uint64_t)batch, s->axis = (int)axis;
        s->max_rows = max_rows;
    }
    arrays_free((qcal_array *)st.arrays, st.n_arrays);
    free(observer);
    free(kind);
    free(params);
    free(tensor);
    return rc;
}

static int read_shape(hid_t g, result_info *in, const ctx *c)
{
    hid_t a = H5Aopen(g, "shape", H5P_DEFAULT);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a), t = a < 0 ? -1 : H5Aget_type(a);
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    int64_t shape[QCAL_MAX_RANK];
    int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && n >= 1 && n <= QCAL_MAX_RANK &&
             H5Aread(a, H5T_NATIVE_INT64, shape) >= 0;
    for (hssize_t d = 0; ok && d < n; d++)
        ok = shape[d] >= 1;
    if (ok) {
        in->rank = (int)n;
        for (hssize_t d = 0; d < n; d++)
            in->shape[d] = (uint64_t)shape[d];
    }
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    if (a >= 0)
        H5Aclose(a);
    return ok ? 0 : bad_attr(c, "shape", "1 to 8 positive integers");
}

static int read_info(hid_t g, const char *rel, results *r, const ctx *c)
{
    result_info in = {0};
    int64_t axis = -1;
    in.tensor = (char *)rel;
    int rc = read_shape(g, &in, c) || attr_get_i64(g, "channel_axis", &axis, c) ||
             attr_get_str(g, "name", &in.orig_name, c) || attr_get_str(g, "dtype", &in.dtype, c) ||
             (has_attr(g, "op_type") && attr_get_str(g, "op_type", &in.op_type, c));
    if (!rc && (axis < -1 || axis >= in.rank || axis == 0))
        rc = qerror_set(c->e, QERR_DATA, "'%s': %s: channel_axis %lld out of range for rank %d",
                        c->path, c->obj, (long long)axis, in.rank);
    in.channel_axis = (int)axis;
    if (!rc)
        rc = results_add_info(r, &in, c->e);
    free(in.orig_name);
    free(in.dtype);
    free(in.op_type);
    return rc ? -1 : 0;
}

/* The string dataset `method` of n entries into out (malloc'd strings). */
static int read_methods(hid_t g, uint64_t n, char **out, const ctx *c)
{
    hid_t d = H5Lexists(g, "method", H5P_DEFAULT) > 0 ? H5Dopen2(g, "method", H5P_DEFAULT) : -1;
    hid_t t = d < 0 ? -1 : H5Dget_type(d), sp = d < 0 ? -1 : H5Dget_space(d);
    hsize_t dims[1] = {0};
    int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0 &&
             H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, dims, NULL) == 1 &&
             dims[0] == n;
    char **raw = ok ? calloc(n ? n : 1, sizeof *raw) : NULL;
    hid_t mt = str_type();
    if (raw && h5_read_dataset_vlen(d, mt, raw) < 0)
        ok = 0;
    for (uint64_t i = 0; raw && i < n; i++) {
        out[i] = strdup(ok && raw[i] ? raw[i] : "");
        ok = ok && out[i];
    }
    if (raw && ok)
        H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, raw);
    free(raw);
    H5Tclose(mt);
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    return ok && raw ? 0 : qerror_set(c->e, QERR_DATA, "'%s': %s: dataset 'method' is missing or "
                                      "not %llu strings", c->path, c->obj, (unsigned long long)n);
}

static int read_candidates(hid_t g, const char *rel, results *r, const ctx *c)
{
    result_candidates k = {0};
    hid_t d = H5Lexists(g, "min", H5P_DEFAULT) > 0 ? H5Dopen2(g, "min", H5P_DEFAULT) : -1;
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    hsize_t n = 0;
    int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, &n, NULL) == 1;
    if (sp >= 0)
        H5Sclose(sp);
    if (d >= 0)
        H5Dclose(d);
    if (!ok)
        return qerror_set(c->e, QERR_DATA, "'%s': %s: dataset 'min' is missing or not 1-D", c->path, c->obj);
    const char *names[6] = {"min", "max", "mse", "sqnr_db", "cosine", "layer_error"};
    double *v[6] = {0};
    char **methods = calloc(n ? n : 1, sizeof *methods);
    int rc = methods ? 0 : qerror_set(c->e, QERR_SOFTWARE, "out of memory");
    for (int i = 0; !rc && i < 6; i++)
        rc = (v[i] = read_vector(g, names[i], H5T_FLOAT, H5T_NATIVE_DOUBLE, n, c)) ? 0 : -1;
    rc = rc || attr_get_i64(g, "chosen", &k.chosen, c) || attr_get_str(g, "criterion", &k.criterion, c) ||
         read_methods(g, n, methods, c);
    if (!rc) {
        k.tensor = (char *)rel, k.n = n, k.method = methods;
        k.lo = v[0], k.hi = v[1], k.mse = v[2], k.sqnr_db = v[3], k.cosine = v[4], k.layer_error = v[5];
        rc = results_add_candidates(r, &k, c->e);
    }
    for (int i = 0; i < 6; i++)
        free(v[i]);
    for (hsize_t i = 0; methods && i < n; i++)
        free(methods[i]);
    free(methods);
    free(k.criterion);
    return rc ? -1 : 0;
}

typedef int (*entry_fn)(hid_t g, const char *rel, results *r, const ctx *c);

typedef struct link_list {
    char **names;
    size_t n, cap;
} link_list;

static void link_list_free(link_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
}

static herr_t collect_link(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    (void)g, (void)info;
    link_list *l = ud;
    if (reserve((void **)&l->names, &l->cap, l->n, sizeof *l->names))
        return -1;
    l->names[l->n] = strdup(name);
    return l->names[l->n++] ? 0 : -1;
}

/* Every link of g in name order, listed in one iteration (asking for the i-th name walks
 * the group's index from its start each time: quadratic in a group of 2,000 tensors). */
static int list_links(hid_t g, link_list *l)
{
    memset(l, 0, sizeof *l);
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_link, l) < 0) {
        link_list_free(l);
        return -1;
    }
    return 0;
}

/* Visits every group below g; `mark` attribute makes a group an entry (read by fn). */
static int walk(hid_t g, const char *base, const char *rel, const char *mark, entry_fn fn,
                results *r, ctx *c, int depth)
{
    link_list links;
    if (depth > WALK_DEPTH_MAX || list_links(g, &links))
        return qerror_set(c->e, QERR_DATA, "'%s': /%s/%s: unreadable or too deeply nested",
                          c->path, base, rel);
    char child[1024];
    int rc = 0;
    for (size_t i = 0; !rc && i < links.n; i++) {
        if ((size_t)snprintf(child, sizeof child, "%s%s%s", rel, *rel ? "/" : "",
                             links.names[i]) >= sizeof child) {
            rc = qerror_set(c->e, QERR_DATA, "'%s': /%s/%s: expected a path under %zu bytes, "
                            "found a longer one", c->path, base, rel, sizeof child);
            break;
        }
        hid_t o = H5Oopen(g, links.names[i], H5P_DEFAULT);
        if (o < 0 || H5Iget_type(o) != H5I_GROUP) {
            if (o >= 0)
                H5Oclose(o);
            continue; /* datasets belong to their entry */
        }
        snprintf(c->obj, sizeof c->obj, "/%s/%s", base, child);
        rc = has_attr(o, mark) ? fn(o, child, r, c) : 0;
        if (!rc)
            rc = walk(o, base, child, mark, fn, r, c, depth + 1);
        H5Oclose(o);
    }
    link_list_free(&links);
    return rc ? -1 : 0;
}

static int read_section(hid_t f, const char *base, const char *mark, entry_fn fn, results *r,
                        ctx *c)
{
    if (H5Lexists(f, base, H5P_DEFAULT) <= 0)
        return 0;
    hid_t g = H5Gopen2(f, base, H5P_DEFAULT);
    if (g < 0)
        return qerror_set(c->e, QERR_DATA, "'%s': /%s is not a group", c->path, base);
    int rc = walk(g, base, "", mark, fn, r, c, 0);
    H5Gclose(g);
    return rc;
}

static int read_root(hid_t f, results *r, ctx *c)
{
    snprintf(c->obj, sizeof c->obj, "/");
    if (!has_attr(f, "qcal_version"))
        return qerror_set(c->e, QERR_DATA, "'%s' is not a qcal results file (no qcal_version "
                          "attribute at its root)", c->path);
    if (attr_get_str(f, "qcal_version", &r->qcal_version, c) ||
        attr_get_str(f, "recipe", &r->recipe, c) || attr_get_str(f, "source", &r->source, c) ||
        attr_get_str(f, "created", &r->created, c))
        return -1;
    int64_t index = 0, count = 0, has_weights = 0;
    if (has_attr(f, "dump_has_weights") && attr_get_i64(f, "dump_has_weights", &has_weights, c))
        return -1;
    r->dump_has_weights = has_weights != 0;
    if (has_attr(f, "share_count") &&
        (attr_get_i64(f, "share_index", &index, c) || attr_get_i64(f, "share_count", &count, c)))
        return -1;
    if (count < 0 || index < 0 || (count && index >= count))
        return qerror_set(c->e, QERR_DATA, "'%s': expected share_index in [0, share_count), "
                          "found %lld of %lld", c->path, (long long)index, (long long)count);
    r->share_index = (uint64_t)index, r->share_count = (uint64_t)count;
    return 0;
}

static int read_file(const char *path, int header_only, results **out, ctx *c)
{
    if (access(path, R_OK) != 0)
        return sys_failed(c, QERR_NOINPUT, "open");
    if (H5Fis_hdf5(path) <= 0)
        return qerror_set(c->e, QERR_DATA, "'%s' is not a qcal results file (not HDF5)", path);
    char why[256];
    hid_t f = h5_open_read(path, why, sizeof why);
    if (f < 0)
        return qerror_set(c->e, QERR_NOINPUT, "cannot open '%s': %s", path, why);
    results *r = results_alloc();
    int rc = r ? read_root(f, r, c) : qerror_set(c->e, QERR_SOFTWARE, "out of memory");
    if (!rc && !header_only)
        rc = read_section(f, "calibration", "method", read_tensor, r, c);
    if (!rc && !header_only)
        rc = read_section(f, "statistics", "kind", read_stat, r, c);
    if (!rc && !header_only)
        rc = read_section(f, "statistics", "shape", read_info, r, c);
    if (!rc && !header_only)
        rc = read_section(f, "candidates", "chosen", read_candidates, r, c);
    h5_close_read(f);
    if (rc) {
        results_free(r);
        return -1;
    }
    *out = r;
    return 0;
}

static int read_guarded(const char *path, int header_only, results **out, qerror *e)
{
    ctx c = {.path = path, .e = e};
    int rc;
    *out = NULL;
    const char *guard = h5_guard_enter(path);
    H5E_BEGIN_TRY
    {
        rc = read_file(path, header_only, out, &c);
    }
    H5E_END_TRY;
    h5_guard_leave(guard);
    return rc;
}

int results_read(const char *path, results **out, qerror *e)
{
    return read_guarded(path, 0, out, e);
}

int results_read_header(const char *path, results **out, qerror *e)
{
    return read_guarded(path, 1, out, e);
}

/* Byte order with '/' below every other byte: the order of a walk that lists each group's
 * links by name ("a/b" before "a.b", a group before its children). */
static int path_cmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned ca = *a == '/' ? 1u : (unsigned char)*a, cb = *b == '/' ? 1u : (unsigned char)*b;
        if (ca != cb || !ca)
            return (ca > cb) - (ca < cb);
    }
}

static int by_tensor_path(const void *a, const void *b)
{
    return path_cmp(((const result_tensor *)a)->tensor, ((const result_tensor *)b)->tensor);
}

void results_sort_as_file(results *r)
{
    if (r->n_tensors > 1)
        qsort(r->tensors, r->n_tensors, sizeof *r->tensors, by_tensor_path);
    keyindex_forget(&r->by_tensor);
}

void result_overall_range(const result_tensor *t, double *lo, double *hi)
{
    *lo = t->lo[0], *hi = t->hi[0];
    for (uint64_t c = 1; c < t->channels; c++)
        *lo = fmin(*lo, t->lo[c]), *hi = fmax(*hi, t->hi[c]);
}

void result_scheme_text(const qcal_qspec *s, char *buf, size_t size)
{
    snprintf(buf, size, "%s%u%s%s", (s->flags & QCAL_QSPEC_SIGNED) ? "int" : "uint", s->bits,
             (s->flags & QCAL_QSPEC_SYMMETRIC) ? " sym" : " aff",
             (s->flags & QCAL_QSPEC_NARROW) ? " narrow" : "");
}
