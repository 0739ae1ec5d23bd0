/* oot.c - a third-party plugin built against qcal/plugin.h alone: acme.absmax */

/*
 * Observer `acme.absmax`: the largest |x| over the finite values of a tensor; its statistic
 * (and its saved state) is the kind "acme.absmax" v1 with one array, amax f32[1] (-1 while
 * nothing finite was seen). Estimator `acme.absmax`: the symmetric range [-t, t], t = amax.
 * Needs no libm: the build links it with -z defs and nothing else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qcal/plugin.h>

typedef struct absmax_state {
    float amax; /* -1: nothing finite yet */
    qcal_array array;
} absmax_state;

static int is_finite(float v) { return v - v == 0.0f; } /* NaN and +-Inf give NaN */

static int absmax_create(const qcal_tensor *t, const qcal_value *params, void **state,
                         qcal_err *err)
{
    (void)t, (void)params;
    absmax_state *s = malloc(sizeof *s);
    if (!s) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return QCAL_E_NOMEM;
    }
    s->amax = -1.0f;
    *state = s;
    return QCAL_OK;
}

static int absmax_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    (void)err;
    absmax_state *s = state;
    uint64_t n = slab->rows * slab->row_size;
    float m = s->amax;
    for (uint64_t i = 0; i < n; i++) {
        float v = (slab->data[i] < 0.0f ? -slab->data[i] : slab->data[i]) + 0.0f; /* -0: +0 */
        if (is_finite(v) && v > m)
            m = v;
    }
    s->amax = m;
    return QCAL_OK;
}

static int absmax_merge(void *into, const void *from, qcal_err *err)
{
    (void)err;
    absmax_state *a = into;
    const absmax_state *b = from;
    if (b->amax > a->amax)
        a->amax = b->amax;
    return QCAL_OK;
}

static int absmax_out(const void *state, qcal_stat *out, qcal_err *err)
{
    (void)err;
    absmax_state *s = (absmax_state *)state; /* only the array table is written */
    qcal_array a = {"amax", QCAL_DTYPE_F32, 1, {1, 0, 0, 0}, &s->amax};
    s->array = a;
    out->kind = "acme.absmax";
    out->kind_version = 1;
    out->n_arrays = 1;
    out->channels = 1;
    out->arrays = &s->array;
    return QCAL_OK;
}

/* The saved "acme.absmax" state: one f32 amax, -1 or a finite value >= 0. */
static int read_amax(const qcal_stat *in, float *amax, qcal_err *err)
{
    if (!in->kind || strcmp(in->kind, "acme.absmax") || in->kind_version != 1) {
        snprintf(err->msg, sizeof err->msg, "expected an 'acme.absmax' v1 statistic");
        return QCAL_E_KIND;
    }
    for (uint32_t i = 0; i < in->n_arrays && in->arrays; i++) {
        const qcal_array *a = &in->arrays[i];
        if (!a->name || strcmp(a->name, "amax"))
            continue;
        if (a->dtype != QCAL_DTYPE_F32 || a->rank > 1 || (a->rank == 1 && a->shape[0] != 1) ||
            !a->data)
            break;
        *amax = *(const float *)a->data;
        if (!is_finite(*amax) || (*amax < 0.0f && *amax != -1.0f))
            break;
        return QCAL_OK;
    }
    snprintf(err->msg, sizeof err->msg, "array 'amax' missing or not one finite f32");
    return QCAL_E_DATA;
}

static int absmax_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    absmax_state *s = state;
    float amax;
    int rc = read_amax(in, &amax, err);
    if (rc == QCAL_OK && amax > s->amax)
        s->amax = amax;
    return rc;
}

static int absmax_finalize(void *state, qcal_stat *out, qcal_err *err)
{
    if (((absmax_state *)state)->amax < 0.0f) {
        snprintf(err->msg, sizeof err->msg, "no finite value");
        return QCAL_E_DATA;
    }
    return absmax_out(state, out, err);
}

static void absmax_destroy(void *state) { free(state); }

static int absmax_estimate(const qcal_stat *stat, const qcal_value *params,
                           const qcal_qspec *spec, qcal_range *ranges, uint64_t n_ranges,
                           qcal_err *err)
{
    (void)params;
    if ((spec->flags & ~QCAL_QSPEC_KNOWN_FLAGS) || (spec->flags & QCAL_QSPEC_PER_CHANNEL) ||
        n_ranges != 1) {
        snprintf(err->msg, sizeof err->msg, "only per-tensor specs are supported");
        return QCAL_E_UNSUP;
    }
    float amax;
    int rc = read_amax(stat, &amax, err);
    if (rc == QCAL_OK && amax < 0.0f) {
        snprintf(err->msg, sizeof err->msg, "no finite value");
        rc = QCAL_E_DATA;
    }
    if (rc == QCAL_OK) {
        ranges[0].lo = -(double)amax;
        ranges[0].hi = (double)amax;
    }
    return rc;
}

static const qcal_observer absmax_observer = {
    .head = QCAL_HEAD(qcal_observer),
    .name = "acme.absmax",
    .help = "largest |x| over the finite values",
    .stat_kind = "acme.absmax",
    .create = absmax_create,
    .observe = absmax_observe,
    .merge = absmax_merge,
    .serialize = absmax_out,
    .deserialize = absmax_deserialize,
    .finalize = absmax_finalize,
    .destroy = absmax_destroy,
};

static const char *const absmax_accepts[] = {"acme.absmax", NULL};

static const qcal_estimator absmax_estimator = {
    .head = QCAL_HEAD(qcal_estimator),
    .name = "acme.absmax",
    .help = "symmetric range [-amax, amax]",
    .accepts = absmax_accepts,
    .estimate = absmax_estimate,
};

static const qcal_observer *const observers[] = {&absmax_observer};
static const qcal_estimator *const estimators[] = {&absmax_estimator};

static const qcal_plugin plugin = {
    .head = QCAL_HEAD(qcal_plugin),
    .name = "acme",
    .version = "2.3.1",
    .help = "ACME's absolute-max calibration",
    .n_observers = 1,
    .n_estimators = 1,
    .observers = observers,
    .estimators = estimators,
};

const qcal_plugin *qcal_plugin_entry(const qcal_host *host)
{
    if (QCAL_ABI_MAJOR_OF(host->head.abi_version) != QCAL_ABI_MAJOR) {
        host->log(host, QCAL_LOG_ERROR, "acme: this host speaks another plugin ABI");
        return NULL;
    }
    return &plugin;
}
