/* pass.c - one streaming pass: a reader thread feeds slabs to workers holding observer states */
#include "pass.h"

#include "dist.h"
#include "h5attr.h"
#include "packed.h"
#include "params.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE_DEPTH 2 /* slabs waiting per worker */
#define BUFS_PER_WORKER (QUEUE_DEPTH + 1) /* + the one being processed */

typedef struct decl {
    size_t tensor;
    const reg_observer *obs;
    qcal_value *params;
    qcal_tensor desc;  /* name borrowed from the dump, which outlives the pass */
    void *merged;      /* the pass's result state, after pass_run */
    int handed;        /* given to the pass's keep (pass_set_keep) in this run */
} decl;

struct pass {
    dump *d;
    decl *decls;
    size_t n_decls, cap_decls;
    pass_keep_fn keep; /* see pass_set_keep */
    void *keep_ud;
};

/* ---- plugin calls, with the host's error context -------------------------------------- */

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Turns a plugin's return code into a host error naming plugin, observer and tensor. */
static int plugin_failed(int rc, const qcal_err *perr, const decl *dc, const char *method,
                         qerror *e)
{
    char sentence[QCAL_ERR_MSG_SIZE];
    memcpy(sentence, perr->msg, sizeof sentence);
    sentence[sizeof sentence - 1] = '\0';
    if (!sentence[0])
        snprintf(sentence, sizeof sentence, "%s failed with code %d", method, rc);
    int code = (rc == QCAL_E_DATA || rc == QCAL_E_INVAL) ? QERR_DATA : QERR_SOFTWARE;
    return qerror_set(e, code, "%s: observer '%s' on tensor '%s': %s",
                      base_name(dc->obs->plugin->path), dc->obs->desc.name, dc->desc.name,
                      sentence);
}

static int state_create(const decl *dc, void **state, qerror *e)
{
    qcal_err perr;
    memset(&perr, 0, sizeof perr);
    *state = NULL;
    int rc = dc->obs->desc.create(&dc->desc, dc->params, state, &perr);
    if (rc != QCAL_OK || !*state) {
        *state = NULL;
        return plugin_failed(rc ? rc : QCAL_E_PLUGIN, &perr, dc, "create", e);
    }
    return 0;
}

/* ---- declaring observers -------------------------------------------------------------- */

void pass_defaults(pass_options *o)
{
    memset(o, 0, sizeof *o);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = cores > 0 ? (int)cores : 1;
    o->slab_bytes = (size_t)4 << 20;
    o->piece_bytes = (size_t)256 << 10;
    o->batch_size = 32;
}

pass *pass_new(dump *d)
{
    pass *p = calloc(1, sizeof *p);
    if (p)
        p->d = d;
    return p;
}

void pass_free(pass *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_decls; i++) {
        if (p->decls[i].merged)
            p->decls[i].obs->desc.destroy(p->decls[i].merged);
        free(p->decls[i].params);
    }
    free(p->decls);
    free(p);
}

static void describe_tensor(const dump_tensor *t, int channel_axis, qcal_tensor *out)
{
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->rank = (uint32_t)t->rank;
    out->channel_axis = channel_axis == PASS_AXIS_DEFAULT ? t->channel_axis : channel_axis;
    memcpy(out->shape, t->dims, sizeof out->shape);
    out->batch_size = 32;
}

static int check_axis(const dump_tensor *t, int channel_axis, const char *path, qerror *e)
{
    if (channel_axis == PASS_AXIS_DEFAULT || channel_axis == -1)
        return 0;
    if (channel_axis >= 1 && channel_axis < t->rank)
        return 0;
    return qerror_set(e, QERR_DATA,
                      "%s: tensor '%s': expected a channel axis in [1, %d], found %d", path,
                      t->name, t->rank - 1, channel_axis);
}

static int grow_decls(pass *p)
{
    if (p->n_decls < p->cap_decls)
        return 0;
    size_t cap = p->cap_decls ? 2 * p->cap_decls : 16;
    decl *grown = realloc(p->decls, cap * sizeof *grown);
    if (!grown)
        return -1;
    p->decls = grown;
    p->cap_decls = cap;
    return 0;
}

int pass_observe(pass *p, size_t tensor, const reg_observer *obs, const qcal_value *params,
                 int channel_axis, qerror *e)
{
    if (tensor >= dump_count(p->d))
        return qerror_set(e, QERR_SOFTWARE, "pass: no tensor #%zu", tensor);
    const dump_tensor *t = dump_get(p->d, tensor);
    if (check_axis(t, channel_axis, dump_path(p->d), e) || grow_decls(p))
        return e && e->code ? -1 : qerror_set(e, QERR_SOFTWARE, "out of memory");
    decl *dc = &p->decls[p->n_decls];
    memset(dc, 0, sizeof *dc);
    dc->tensor = tensor;
    dc->obs = obs;
    size_t n_params = obs->desc.n_params ? obs->desc.n_params : 1;
    dc->params = calloc(n_params, sizeof *dc->params);
    if (!dc->params)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (obs->desc.n_params)
        memcpy(dc->params, params, obs->desc.n_params * sizeof *params);
    describe_tensor(t, channel_axis, &dc->desc);
    void *probe; /* refuse an unsuitable tensor now, not in the middle of the pass */
    if (state_create(dc, &probe, e)) {
        free(dc->params);
        return -1;
    }
    obs->desc.destroy(probe);
    return (int)p->n_decls++;
}

size_t pass_count(const pass *p) { return p->n_decls; }
const reg_observer *pass_observer(const pass *p, int h) { return p->decls[h].obs; }
size_t pass_tensor(const pass *p, int h) { return p->decls[h].tensor; }
const qcal_value *pass_params(const pass *p, int h) { return p->decls[h].params; }
const qcal_tensor *pass_desc(const pass *p, int h) { return &p->decls[h].desc; }

void pass_set_keep(pass *p, pass_keep_fn keep, void *ud)
{
    p->keep = keep;
    p->keep_ud = ud;
}

static int stat_out(pass *p, int h, int serialize, hstat **out, qerror *e);

/* Gives declaration di's state to p->keep, serialized, and drops it. `mu`, when not NULL,
 * makes the keep calls of several threads one at a time. */
static int hand_over(pass *p, size_t di, pthread_mutex_t *mu, qerror *e)
{
    hstat *state;
    if (stat_out(p, (int)di, 1, &state, e))
        return -1;
    p->decls[di].handed = 1;
    if (mu)
        pthread_mutex_lock(mu);
    int rc = p->keep(p->keep_ud, (int)di, state, e);
    if (mu)
        pthread_mutex_unlock(mu);
    pass_release(p, (int)di);
    return rc;
}

/* ---- the run: jobs, queues, workers --------------------------------------------------- */

typedef struct job {
    size_t group;       /* index into run.groups; SIZE_MAX = stop */
    uint64_t first_row;
    uint64_t rows;
    void *raw;          /* the raw values, or a packed slab (packed.h) when `packed`; unused
                           (but held, for the queue's bound) when mapped */
    int packed;
    dump_window map;    /* the raw values mapped from the file, when map.data */
} job;

/* The declarations on one tensor, fed together from one read of each slab. */
typedef struct group {
    size_t tensor;
    size_t *decls;
    size_t n_decls;
    uint64_t rows;       /* samples of the tensor in this pass (what observers are told) */
    uint64_t row_begin, row_end; /* the rows this process streams: its share */
    uint64_t slab_rows;
    uint64_t batch;      /* slabs and the pieces observers see hold whole batches */
    uint64_t piece_rows; /* rows per observe() call (see piece_rows) */
    const packed_form *packed; /* chunks the workers inflate, or NULL (HDF5 reads) */
    atomic_uint_least64_t slabs_left; /* slabs not yet observed; the worker that observes the
                                         last one merges the group's states (merge_group) */
} group;

struct run;

typedef struct worker {
    struct run *run;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job queue[QUEUE_DEPTH];
    size_t q_head, q_len;
    void *free_bufs[BUFS_PER_WORKER];
    size_t n_free;
    float *values;       /* conversion buffer */
    void *unpacked;      /* a packed slab's raw values */
    void *scratch;       /* two chunks, for inflating and unshuffling */
    void **states;       /* per declaration, created on first use */
} worker;

typedef struct run {
    pass *p;
    group *groups;
    size_t n_groups;
    worker *workers;
    int n_workers;
    int n_started;       /* worker threads running */
    size_t raw_bytes, value_bytes;
    size_t unpacked_bytes, scratch_bytes; /* 0 when no tensor is packed */
    atomic_uint_least64_t packed_slabs, packed_chunks, plain_slabs, mapped_slabs;
    int keep_early;      /* hand states over as their tensor is done (not under MPI, whose
                            exchange needs every state after the run) */
    pthread_mutex_t keep_mu;
    pthread_mutex_t err_mu;
    qerror err;          /* first error of any thread */
    atomic_int failed;   /* set once by any thread; workers skip their work after it */
} run;

static void run_fail(run *r, const qerror *e)
{
    pthread_mutex_lock(&r->err_mu);
    if (!atomic_load(&r->failed)) {
        r->err = *e;
        atomic_store(&r->failed, 1);
    }
    pthread_mutex_unlock(&r->err_mu);
}

static job queue_pop(worker *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->q_len == 0)
        pthread_cond_wait(&w->cv, &w->mu);
    job j = w->queue[w->q_head];
    w->q_head = (w->q_head + 1) % QUEUE_DEPTH;
    w->q_len--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return j;
}

static void queue_push(worker *w, job j)
{
    pthread_mutex_lock(&w->mu);
    while (w->q_len == QUEUE_DEPTH)
        pthread_cond_wait(&w->cv, &w->mu);
    w->queue[(w->q_head + w->q_len) % QUEUE_DEPTH] = j;
    w->q_len++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *buffer_take(worker *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->n_free == 0)
        pthread_cond_wait(&w->cv, &w->mu);
    void *buf = w->free_bufs[--w->n_free];
    pthread_mutex_unlock(&w->mu);
    return buf;
}

static void buffer_give(worker *w, void *buf)
{
    pthread_mutex_lock(&w->mu);
    w->free_bufs[w->n_free++] = buf;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int feed_decl(worker *w, size_t di, const qcal_slab *slab, qerror *e)
{
    decl *dc = &w->run->p->decls[di];
    if (!w->states[di] && state_create(dc, &w->states[di], e))
        return -1;
    qcal_err perr;
    memset(&perr, 0, sizeof perr);
    int rc = dc->obs->desc.observe(w->states[di], slab, &perr);
    return rc == QCAL_OK ? 0 : plugin_failed(rc, &perr, dc, "observe", e);
}

/* Merges declaration di's worker states into its result state, in worker order (the order
 * every run uses, so results do not depend on which thread finished last). */
static int merge_decl(run *r, size_t di, qerror *e)
{
    decl *dc = &r->p->decls[di];
    for (int wi = 0; wi < r->n_workers; wi++) {
        void **st = &r->workers[wi].states[di];
        if (!*st)
            continue;
        if (!dc->merged) {
            dc->merged = *st; /* the pass takes the first state over */
            *st = NULL;
            continue;
        }
        qcal_err perr;
        memset(&perr, 0, sizeof perr);
        int rc = dc->obs->desc.merge(dc->merged, *st, &perr);
        dc->obs->desc.destroy(*st);
        *st = NULL;
        if (rc != QCAL_OK)
            return plugin_failed(rc, &perr, dc, "merge", e);
    }
    return 0;
}

/* Once every slab of a group is observed, no worker touches its states again: merging them
 * then (not after the whole pass) keeps one state per declaration instead of one per worker. */
static void slab_done(worker *w, const job *j)
{
    run *r = w->run;
    group *g = &r->groups[j->group];
    if (atomic_fetch_sub(&g->slabs_left, 1) != 1 || r->failed)
        return;
    qerror e = {0};
    for (size_t k = 0; k < g->n_decls; k++)
        if (merge_decl(r, g->decls[k], &e) ||
            (r->keep_early && hand_over(r->p, g->decls[k], &r->keep_mu, &e))) {
            run_fail(r, &e);
            return;
        }
}

/* A packed slab inflated into w->unpacked; NULL (the run failed) if a chunk is bad. */
static const void *unpack_job(worker *w, const group *g, const job *j)
{
    run *r = w->run;
    char why[256];
    if (packed_unpack(g->packed, j->raw, w->unpacked, w->scratch, why, sizeof why)) {
        const dump_tensor *t = dump_get(r->p->d, g->tensor);
        qerror e = {0};
        qerror_set(&e, QERR_DATA, "%s: tensor '%s': %s", dump_path(r->p->d), t->name, why);
        run_fail(r, &e);
        return NULL;
    }
    atomic_fetch_add(&r->packed_slabs, 1);
    atomic_fetch_add(&r->packed_chunks, ((const packed_slab *)j->raw)->n_chunks);
    return w->unpacked;
}

static void process_job(worker *w, const job *j)
{
    run *r = w->run;
    const group *g = &r->groups[j->group];
    const dump_tensor *t = dump_get(r->p->d, g->tensor);
    uint64_t n = j->rows * t->row_size;
    const void *raw = j->map.data ? j->map.data : j->packed ? unpack_job(w, g, j) : j->raw;
    if (!raw)
        return;
    const float *values = raw;
    if (t->dtype != DUMP_F32) {
        dump_convert(t->dtype, raw, (size_t)n, w->values);
        values = w->values;
    }
    uint64_t step = g->piece_rows;
    qerror e = {0};
    for (uint64_t at = 0; at < j->rows && !r->failed; at += step) {
        uint64_t rows = j->rows - at < step ? j->rows - at : step;
        qcal_slab piece = {values + at * t->row_size, rows, t->row_size, j->first_row + at};
        for (size_t k = 0; k < g->n_decls && !r->failed; k++)
            if (feed_decl(w, g->decls[k], &piece, &e))
                run_fail(r, &e);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        job j = queue_pop(w);
        if (j.group == SIZE_MAX)
            return NULL;
        if (!w->run->failed) {
            h5_guard_mapped(j.map.path); /* NULL when not mapped */
            process_job(w, &j);
            h5_guard_mapped(NULL);
        }
        dump_unmap(&j.map);
        buffer_give(w, j.raw);
        slab_done(w, &j);
    }
}

/* ---- setting up and tearing down a run ------------------------------------------------ */

/* Declarations by tensor: groups[t] collects those on tensor t (tensor indices are dense), then
 * the empty groups are dropped. Each group's list is sized by a first count. */
static int plan_by_tensor(run *r)
{
    pass *p = r->p;
    size_t n_tensors = dump_count(p->d);
    size_t *count = calloc(n_tensors ? n_tensors : 1, sizeof *count);
    if (!count)
        return -1;
    for (size_t i = 0; i < p->n_decls; i++)
        count[p->decls[i].tensor]++;
    int rc = 0;
    size_t *slot = calloc(n_tensors ? n_tensors : 1, sizeof *slot); /* group of tensor t */
    for (size_t t = 0; slot && t < n_tensors; t++) {
        if (!count[t])
            continue;
        group *g = &r->groups[r->n_groups];
        memset(g, 0, sizeof *g);
        g->tensor = t;
        if (!(g->decls = malloc(count[t] * sizeof *g->decls)))
            rc = -1;
        slot[t] = r->n_groups++;
    }
    for (size_t i = 0; !rc && slot && i < p->n_decls; i++) {
        group *g = &r->groups[slot[p->decls[i].tensor]];
        g->decls[g->n_decls++] = i;
    }
    rc = slot ? rc : -1;
    free(slot);
    free(count);
    return rc;
}

/* Several observers on one tensor take each slab a piece at a time, each piece while it is
 * in the core's cache (instead of the whole slab from memory once per observer). Pieces hold
 * whole batches, as slabs do; observers do not depend on how the rows are split. */
static uint64_t piece_rows(const group *g, const pass_options *o, uint64_t row_size)
{
    if (g->n_decls < 2)
        return g->slab_rows;
    uint64_t fit = o->piece_bytes / (row_size * sizeof(float));
    uint64_t piece = fit >= g->batch ? fit - fit % g->batch : g->batch;
    return piece < g->slab_rows ? piece : g->slab_rows;
}

/* Whole batches per slab (plugin.h promises observers that a slab never splits a batch);
 * when one batch is larger than the slab budget, a slab is exactly one batch. */
static uint64_t batch_aligned(uint64_t rows, uint64_t batch)
{
    return rows >= batch ? rows - rows % batch : batch;
}

void pass_share_rows(uint64_t rows, uint64_t batch, uint64_t i, uint64_t k, uint64_t *begin,
                     uint64_t *end)
{
    if (k <= 1) {
        *begin = 0, *end = rows;
        return;
    }
    uint64_t batches = rows / batch + (rows % batch != 0);
    /* floor(batches * i / k) without the product overflowing: batches = q k + r */
    uint64_t b0 = batches / k * i + batches % k * i / k;
    uint64_t b1 = batches / k * (i + 1) + batches % k * (i + 1) / k;
    *begin = b0 * batch < rows ? b0 * batch : rows;
    *end = b1 * batch < rows ? b1 * batch : rows;
}

static void share_of(const pass_options *o, uint64_t *index, uint64_t *count)
{
    *index = o->share_index, *count = o->share_count;
    if (o->dist)
        *index = (uint64_t)o->dist->rank, *count = (uint64_t)o->dist->size;
}

static void grow(size_t *size, size_t at_least) { *size = *size > at_least ? *size : at_least; }

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* A packed group's slabs hold whole chunks when the batch allows it (a chunk cut by a slab
 * boundary would be read and inflated twice), and its buffers fit every chunk a slab touches:
 * stored chunks may be slightly larger than inflated ones (deflate's worst case). */
static void plan_packed(run *r, group *g, const pass_options *o, uint64_t batch)
{
    const packed_form *f = g->packed;
    uint64_t unit = f->chunk_rows / gcd(f->chunk_rows, batch) * batch; /* lcm */
    uint64_t share_rows = g->row_end - g->row_begin;
    if (unit <= (4 * o->slab_bytes) / f->row_bytes && unit < share_rows)
        g->slab_rows = g->slab_rows < unit ? unit : g->slab_rows - g->slab_rows % unit;
    if (g->slab_rows > share_rows) /* an empty share keeps one row: slab counts divide by it */
        g->slab_rows = share_rows ? share_rows : 1;
    size_t chunk = packed_chunk_bytes(f);
    uint64_t chunks = (g->slab_rows / f->chunk_rows + 2) * f->per_block;
    grow(&r->raw_bytes, packed_head_bytes(chunks) + chunks * (chunk + chunk / 256 + 64));
    grow(&r->unpacked_bytes, (size_t)g->slab_rows * f->row_bytes);
    grow(&r->scratch_bytes, 2 * chunk);
}

/* Groups declarations by tensor, in dump order, and sizes the buffers. */
static int plan_groups(run *r, const pass_options *o)
{
    pass *p = r->p;
    r->groups = calloc(p->n_decls ? p->n_decls : 1, sizeof *r->groups);
    if (!r->groups)
        return -1;
    if (plan_by_tensor(r))
        return -1;
    for (size_t i = 0; i < r->n_groups; i++) {
        group *g = &r->groups[i];
        const dump_tensor *t = dump_get(p->d, g->tensor);
        g->rows = (o->max_rows && o->max_rows < t->dims[0]) ? o->max_rows : t->dims[0];
        uint64_t batch = o->batch_size ? o->batch_size : 32, index, count;
        g->batch = batch;
        share_of(o, &index, &count);
        pass_share_rows(g->rows, batch, index, count, &g->row_begin, &g->row_end);
        g->slab_rows = batch_aligned(dump_slab_rows(p->d, g->tensor, o->slab_bytes), batch);
        uint64_t share_rows = g->row_end - g->row_begin;
        if (g->slab_rows > share_rows) /* one slab holds it all: no buffer beyond the data */
            g->slab_rows = share_rows ? share_rows : 1;
        g->packed = dump_packed_form(p->d, g->tensor);
        if (g->packed)
            plan_packed(r, g, o, batch);
        g->piece_rows = piece_rows(g, o, t->row_size);
        atomic_init(&g->slabs_left, (share_rows + g->slab_rows - 1) / g->slab_rows);
        size_t n = (size_t)(g->slab_rows * t->row_size);
        grow(&r->raw_bytes, n * t->elem_size);
        if (t->dtype != DUMP_F32)
            grow(&r->value_bytes, n * sizeof(float));
    }
    return 0;
}

/* The row count and batch size the observers see are those of this run. */
static void update_descs(pass *p, const run *r, const pass_options *o)
{
    for (size_t i = 0; i < r->n_groups; i++)
        for (size_t k = 0; k < r->groups[i].n_decls; k++) {
            decl *dc = &p->decls[r->groups[i].decls[k]];
            dc->desc.shape[0] = r->groups[i].rows;
            dc->desc.batch_size = o->batch_size ? o->batch_size : 32;
        }
}

static int worker_init(run *r, worker *w)
{
    memset(w, 0, sizeof *w);
    w->run = r;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->states = calloc(r->p->n_decls ? r->p->n_decls : 1, sizeof *w->states);
    if (!w->states)
        return -1;
    if (r->value_bytes && !(w->values = malloc(r->value_bytes)))
        return -1;
    if (r->unpacked_bytes && (!(w->unpacked = malloc(r->unpacked_bytes)) ||
                              !(w->scratch = malloc(r->scratch_bytes))))
        return -1;
    for (; w->n_free < BUFS_PER_WORKER; w->n_free++)
        if (!(w->free_bufs[w->n_free] = malloc(r->raw_bytes ? r->raw_bytes : 1)))
            return -1;
    return 0;
}

static void worker_release(run *r, worker *w)
{
    for (size_t i = 0; i < w->n_free; i++)
        free(w->free_bufs[i]);
    for (size_t i = 0; w->states && i < r->p->n_decls; i++)
        if (w->states[i])
            r->p->decls[i].obs->desc.destroy(w->states[i]);
    free(w->states);
    free(w->values);
    free(w->unpacked);
    free(w->scratch);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void run_release(run *r)
{
    for (int i = 0; r->workers && i < r->n_workers; i++)
        worker_release(r, &r->workers[i]);
    free(r->workers);
    for (size_t i = 0; r->groups && i < r->n_groups; i++)
        free(r->groups[i].decls);
    free(r->groups);
    pthread_mutex_destroy(&r->err_mu);
    pthread_mutex_destroy(&r->keep_mu);
}

/* ---- the reader (the calling thread makes every HDF5 call) ----------------------------- */

static uint64_t total_bytes(const run *r)
{
    uint64_t total = 0;
    for (size_t i = 0; i < r->n_groups; i++)
        total += (r->groups[i].row_end - r->groups[i].row_begin) *
                 dump_get(r->p->d, r->groups[i].tensor)->row_size * 4;
    return total;
}

/* A slab mapped from the file when its tensor allows (no copy: the workers read the page
 * cache), as stored chunks for a worker to inflate when it allows that, else through HDF5. */
static int read_slab(run *r, const group *g, job *j, qerror *e)
{
    if (dump_map_rows(r->p->d, g->tensor, j->first_row, j->rows, &j->map) == 0) {
        atomic_fetch_add(&r->mapped_slabs, 1);
        return 0;
    }
    if (g->packed) {
        int rc = dump_read_packed(r->p->d, g->tensor, j->first_row, j->rows, j->raw,
                                  r->raw_bytes, e);
        if (rc <= 0)
            return j->packed = rc == 0, rc;
    }
    atomic_fetch_add(&r->plain_slabs, 1);
    return dump_read_raw(r->p->d, g->tensor, j->first_row, j->rows, j->raw, e);
}

static void read_all(run *r, const pass_options *o)
{
    uint64_t done = 0, total = total_bytes(r);
    for (size_t gi = 0; gi < r->n_groups && !r->failed; gi++) {
        const group *g = &r->groups[gi];
        uint64_t row_bytes = dump_get(r->p->d, g->tensor)->row_size * 4;
        uint64_t slab = 0;
        for (uint64_t row = g->row_begin; row < g->row_end && !r->failed;
             row += g->slab_rows, slab++) {
            worker *w = &r->workers[slab % (uint64_t)r->n_workers];
            uint64_t rows = g->row_end - row < g->slab_rows ? g->row_end - row : g->slab_rows;
            job j = {gi, row, rows, buffer_take(w), 0, {0}};
            qerror e = {0};
            if (read_slab(r, g, &j, &e)) {
                run_fail(r, &e);
                buffer_give(w, j.raw);
                break;
            }
            queue_push(w, j);
            done += rows * row_bytes;
            if (o->progress)
                o->progress(o->progress_ud, done, total);
        }
    }
}

static int start_workers(run *r)
{
    r->workers = calloc((size_t)r->n_workers, sizeof *r->workers);
    if (!r->workers)
        return -1;
    for (int i = 0; i < r->n_workers; i++) {
        if (worker_init(r, &r->workers[i]))
            return -1;
        if (pthread_create(&r->workers[i].thread, NULL, worker_main, &r->workers[i]))
            return -1;
        r->n_started++;
    }
    return 0;
}

static void stop_workers(run *r)
{
    for (int i = 0; i < r->n_started; i++) {
        queue_push(&r->workers[i], (job){SIZE_MAX, 0, 0, NULL, 0, {0}});
        pthread_join(r->workers[i].thread, NULL);
    }
}

/* Merges what slab_done has not (a failed run aside: nothing), and gives a declaration that
 * saw no slab (an empty share) an empty state. */
static int merge_states(run *r, qerror *e)
{
    pass *p = r->p;
    for (size_t di = 0; di < p->n_decls; di++) {
        if (merge_decl(r, di, e))
            return -1;
        if (!p->decls[di].merged && !p->decls[di].handed &&
            state_create(&p->decls[di], &p->decls[di].merged, e))
            return -1;
    }
    return 0;
}

/* Hands over the states slab_done has not (all of them under MPI, the empty ones else). */
static int hand_over_rest(pass *p, qerror *e)
{
    for (size_t di = 0; p->keep && di < p->n_decls; di++)
        if (p->decls[di].merged && hand_over(p, di, NULL, e))
            return -1;
    return 0;
}

static void drop_results(pass *p)
{
    for (size_t i = 0; i < p->n_decls; i++) {
        p->decls[i].handed = 0;
        if (p->decls[i].merged) {
            p->decls[i].obs->desc.destroy(p->decls[i].merged);
            p->decls[i].merged = NULL;
        }
    }
}

static int run_local(run *r, const pass_options *o, qerror *e)
{
    if (plan_groups(r, o))
        return qerror_set(e, QERR_SOFTWARE, "out of memory planning the pass");
    update_descs(r->p, r, o);
    int started = start_workers(r) == 0;
    if (started)
        read_all(r, o);
    stop_workers(r);
    if (!started)
        return qerror_set(e, QERR_SOFTWARE, "cannot start worker threads");
    if (r->failed)
        return e ? (*e = r->err, -1) : -1;
    return merge_states(r, e);
}

int pass_run(pass *p, const pass_options *o, qerror *e)
{
    run r;
    memset(&r, 0, sizeof r);
    atomic_init(&r.failed, 0);
    atomic_init(&r.packed_slabs, 0);
    atomic_init(&r.packed_chunks, 0);
    atomic_init(&r.plain_slabs, 0);
    atomic_init(&r.mapped_slabs, 0);
    r.p = p;
    r.n_workers = o->threads > 0 ? o->threads : 1;
    r.keep_early = p->keep && !o->dist;
    pthread_mutex_init(&r.err_mu, NULL);
    pthread_mutex_init(&r.keep_mu, NULL);
    drop_results(p);
    int rc = run_local(&r, o, e);
    if (o->counts)
        *o->counts = (pass_counts){atomic_load(&r.packed_slabs), atomic_load(&r.packed_chunks),
                                   atomic_load(&r.plain_slabs), atomic_load(&r.mapped_slabs)};
    run_release(&r);
    if (o->dist) /* every rank's states into every rank's, or every rank learns of a failure */
        rc = o->dist->exchange(o->dist, p, rc, e);
    if (!rc)
        rc = hand_over_rest(p, e);
    if (rc)
        drop_results(p);
    return rc;
}

/* ---- results -------------------------------------------------------------------------- */

static int stat_out(pass *p, int h, int serialize, hstat **out, qerror *e)
{
    if (h < 0 || (size_t)h >= p->n_decls || !p->decls[h].merged)
        return qerror_set(e, QERR_SOFTWARE, "pass: observer #%d has not run", h);
    decl *dc = &p->decls[h];
    qcal_stat st;
    qcal_err perr;
    memset(&st, 0, sizeof st);
    memset(&perr, 0, sizeof perr);
    int rc = serialize ? dc->obs->desc.serialize(dc->merged, &st, &perr)
                       : dc->obs->desc.finalize(dc->merged, &st, &perr);
    if (rc != QCAL_OK)
        return plugin_failed(rc, &perr, dc, serialize ? "serialize" : "finalize", e);
    if (hstat_copy(&st, out, e))
        return qerror_prefix(e, "%s: observer '%s' on tensor '%s'",
                             base_name(dc->obs->plugin->path), dc->obs->desc.name, dc->desc.name);
    return 0;
}

int pass_finalize(pass *p, int h, hstat **out, qerror *e) { return stat_out(p, h, 0, out, e); }
int pass_serialize(pass *p, int h, hstat **out, qerror *e) { return stat_out(p, h, 1, out, e); }

void pass_release(pass *p, int h)
{
    decl *dc = &p->decls[h];
    if (dc->merged)
        dc->obs->desc.destroy(dc->merged);
    dc->merged = NULL;
}

int pass_has_state(const pass *p, int h) { return p->decls[h].merged != NULL; }

void pass_set_batch_size(pass *p, int h, uint64_t batch_size)
{
    p->decls[h].desc.batch_size = batch_size;
}

int pass_fold(pass *p, int h, const qcal_stat *st, int replace, qerror *e)
{
    if (h < 0 || (size_t)h >= p->n_decls)
        return qerror_set(e, QERR_SOFTWARE, "pass: no observer #%d", h);
    decl *dc = &p->decls[h];
    if (replace && dc->merged) {
        dc->obs->desc.destroy(dc->merged);
        dc->merged = NULL;
    }
    if (!dc->merged && state_create(dc, &dc->merged, e))
        return -1;
    qcal_err perr;
    memset(&perr, 0, sizeof perr);
    int rc = dc->obs->desc.deserialize(dc->merged, st, &perr);
    return rc == QCAL_OK ? 0 : plugin_failed(rc, &perr, dc, "deserialize", e);
}

/* ---- re-estimation from saved states -------------------------------------------------- */

static const result_stat *find_saved(const results *saved, const decl *dc)
{
    char params[1024];
    params_format_all(dc->obs->desc.params, dc->obs->desc.n_params, dc->params, params,
                      sizeof params);
    /* by the results' index (a cache, which finding may update), not by a scan of every
     * saved state per declaration (quadratic in the number of tensors) */
    const result_stat *s =
        results_find_stat((results *)saved, dc->desc.name, dc->obs->desc.name, params);
    return s && (!s->batch_size || s->axis == dc->desc.channel_axis) ? s : NULL;
}

/* The samples a pass limited to max_rows reads of a tensor with `rows` (0: all). */
static uint64_t rows_read(int64_t max_rows, uint64_t rows)
{
    return max_rows > 0 && (uint64_t)max_rows < rows ? (uint64_t)max_rows : rows;
}

/* A saved state answers for this run only if it saw the samples the run would read, in the
 * batches it would make: else re-estimating would give another run's ranges, silently. */
static int same_sampling(const decl *dc, const result_stat *s, uint64_t rows, const char *from,
                         const pass_options *o, qerror *e)
{
    uint64_t batch = o->batch_size ? o->batch_size : 32;
    if (s->max_rows >= 0 && rows_read(s->max_rows, rows) != rows_read((int64_t)o->max_rows, rows))
        return qerror_set(e, QERR_USAGE, "%s: tensor '%s': the statistics were observed over its "
                          "first %llu samples, this run asks for %llu (max_samples or "
                          "stat_subset_size): observe again with the same limit", from,
                          dc->desc.name, (unsigned long long)rows_read(s->max_rows, rows),
                          (unsigned long long)rows_read((int64_t)o->max_rows, rows));
    if (s->batch_size && s->batch_size != batch)
        return qerror_set(e, QERR_USAGE, "%s: tensor '%s': the statistics were observed in "
                          "batches of %llu samples, this run asks for %llu (--batch-size)", from,
                          dc->desc.name, (unsigned long long)s->batch_size,
                          (unsigned long long)batch);
    return 0;
}

static int load_decl(const pass *p, decl *dc, const results *saved, const char *from,
                     const pass_options *o, qerror *e)
{
    const result_stat *s = find_saved(saved, dc);
    if (!s)
        return qerror_set(e, QERR_DATA, "%s: no saved state of observer '%s' with these "
                          "parameters for tensor '%s' (the statistics lack this pass: `qcal "
                          "observe` it with --from-statistics and merge, or run the recipe on the "
                          "dump)", from, dc->obs->desc.name, dc->desc.name);
    if (o && same_sampling(dc, s, dump_get(p->d, dc->tensor)->dims[0], from, o, e))
        return -1;
    if (s->batch_size) /* as the observer was made when it streamed the dump */
        dc->desc.batch_size = s->batch_size;
    hstat *loaded;
    const qcal_stat *state = results_stat_view(saved, s, &loaded, e);
    if (!state || state_create(dc, &dc->merged, e)) {
        hstat_free(loaded);
        return -1;
    }
    qcal_err perr;
    memset(&perr, 0, sizeof perr);
    int rc = dc->obs->desc.deserialize(dc->merged, state, &perr);
    hstat_free(loaded);
    return rc == QCAL_OK ? 0 : plugin_failed(rc, &perr, dc, "deserialize", e);
}

int pass_saved_all(const pass *p, const results *saved)
{
    for (size_t i = 0; i < p->n_decls; i++)
        if (!find_saved(saved, &p->decls[i]))
            return 0;
    return 1;
}

int pass_load(pass *p, const results *saved, const char *from, const pass_options *o,
              qerror *e)
{
    drop_results(p);
    for (size_t i = 0; i < p->n_decls; i++)
        if (load_decl(p, &p->decls[i], saved, from, o, e) ||
            (p->keep && hand_over(p, i, NULL, e))) {
            drop_results(p);
            return -1;
        }
    return 0;
}
