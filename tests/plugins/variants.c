/* variants.c - test plugins, one per -DVARIANT_<NAME>: each built right, or wrong in one way */

/*
 *   GOOD_EXTRA      valid: observer variant_obs + estimator variant_est
 *   BAD_MAJOR       the plugin struct says ABI 2.0
 *   NO_ENTRY        no qcal_plugin_entry (exports another function instead)
 *   SMALL_SIZE      observer struct_size 16, below the 1.0 minimum
 *   NEWER_MINOR     ABI 1.1: larger plugin and observer structs with an extra member (valid)
 *   DUP_NAME        declares observer 'minmax', which the bundled minmax plugin provides
 *   MISSING_METHOD  observer with merge NULL
 *   BAD_PARAM       a parameter whose default lies outside its bounds
 *   FAILS           valid, but misbehaves: observer variant_fails refuses every slab from
 *                   sample 8 on; estimator variant_nan returns [NaN, 1] on qcal.minmax;
 *                   estimator variant_overrun writes one range past those it is given
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <qcal/plugin.h>

#if defined(VARIANT_NO_ENTRY)

QCAL_PLUGIN_EXPORT int variant_not_an_entry(void);
int variant_not_an_entry(void) { return 42; }

#else

/* ---- a trivial observer: counts values; its statistic is "variant.count" ----------------- */

typedef struct count_state {
    uint64_t n;
    qcal_array array;
} count_state;

static int count_create(const qcal_tensor *t, const qcal_value *params, void **state,
                        qcal_err *err)
{
    (void)t, (void)params, (void)err;
    *state = calloc(1, sizeof(count_state));
    return *state ? QCAL_OK : QCAL_E_NOMEM;
}

static int count_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    (void)err;
    ((count_state *)state)->n += slab->rows * slab->row_size;
    return QCAL_OK;
}

#ifndef VARIANT_MISSING_METHOD
static int count_merge(void *into, const void *from, qcal_err *err)
{
    (void)err;
    ((count_state *)into)->n += ((const count_state *)from)->n;
    return QCAL_OK;
}
#endif

static int count_out(void *state, qcal_stat *out, qcal_err *err)
{
    (void)err;
    count_state *s = state;
    qcal_array a = {"n", QCAL_DTYPE_U64, 0, {0, 0, 0, 0}, &s->n};
    s->array = a;
    out->kind = "variant.count";
    out->kind_version = 1;
    out->n_arrays = 1;
    out->channels = 1;
    out->arrays = &s->array;
    return QCAL_OK;
}

static int count_serialize(const void *state, qcal_stat *out, qcal_err *err)
{
    return count_out((void *)state, out, err);
}

static int count_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    (void)err;
    if (in->n_arrays != 1 || in->arrays[0].dtype != QCAL_DTYPE_U64 || !in->arrays[0].data)
        return QCAL_E_DATA;
    ((count_state *)state)->n += *(const uint64_t *)in->arrays[0].data;
    return QCAL_OK;
}

static void count_destroy(void *state) { free(state); }

#ifdef VARIANT_GOOD_EXTRA
static const char *const count_accepts[] = {"variant.count", NULL};

static int count_estimate(const qcal_stat *stat, const qcal_value *params,
                          const qcal_qspec *spec, qcal_range *ranges, uint64_t n_ranges,
                          qcal_err *err)
{
    (void)stat, (void)params, (void)spec, (void)err;
    for (uint64_t i = 0; i < n_ranges; i++) {
        ranges[i].lo = -1.0;
        ranges[i].hi = 1.0;
    }
    return QCAL_OK;
}
#endif

/* Every method but merge, so MISSING_METHOD can leave it out without overriding it. */
#define COUNT_BUT_MERGE                                                                      \
    .stat_kind = "variant.count", .create = count_create, .observe = count_observe,         \
    .serialize = count_serialize, .deserialize = count_deserialize, .finalize = count_out, \
    .destroy = count_destroy
#define COUNT_METHODS COUNT_BUT_MERGE, .merge = count_merge

/* ---- the variants ------------------------------------------------------------------------ */

#if defined(VARIANT_GOOD_EXTRA)
#define PLUGIN_NAME "variant"
static const qcal_observer observer = {
    .head = QCAL_HEAD(qcal_observer), .name = "variant_obs", .help = "counts values",
    COUNT_METHODS};
static const qcal_estimator estimator = {
    .head = QCAL_HEAD(qcal_estimator), .name = "variant_est", .help = "always [-1, 1]",
    .accepts = count_accepts, .estimate = count_estimate};
#define HAS_ESTIMATOR 1

#elif defined(VARIANT_BAD_MAJOR)
#define PLUGIN_NAME "variant_bad_major"
#define PLUGIN_ABI ((uint32_t)(2u << 16))
static const qcal_observer observer = {
    .head = QCAL_HEAD(qcal_observer), .name = "variant_bad_major", COUNT_METHODS};

#elif defined(VARIANT_SMALL_SIZE)
#define PLUGIN_NAME "variant_small_size"
static const qcal_observer observer = {
    .head = {QCAL_ABI_VERSION, 16}, .name = "variant_small_size", COUNT_METHODS};

#elif defined(VARIANT_NEWER_MINOR)
#define PLUGIN_NAME "variant_newer_minor"
#define NEWER 1
#define ABI_1_1 ((uint32_t)((QCAL_ABI_MAJOR << 16) | 1))
/* What ABI 1.1 might look like: one optional member appended to each growable struct. */
typedef struct observer_1_1 {
    qcal_observer base;
    size_t (*footprint)(const void *state);
} observer_1_1;
typedef struct plugin_1_1 {
    qcal_plugin base;
    const char *homepage;
} plugin_1_1;
static size_t count_footprint(const void *state)
{
    (void)state;
    return sizeof(count_state);
}
static const observer_1_1 observer_newer = {
    .base = {.head = {ABI_1_1, sizeof(observer_1_1)}, .name = "variant_newer",
             .help = "counts values (ABI 1.1)", COUNT_METHODS},
    .footprint = count_footprint};
#define observer (observer_newer.base)

#elif defined(VARIANT_DUP_NAME)
#define PLUGIN_NAME "variant_dup_name"
static const qcal_observer observer = {
    .head = QCAL_HEAD(qcal_observer), .name = "minmax", .help = "a second minmax",
    COUNT_METHODS};

#elif defined(VARIANT_MISSING_METHOD)
#define PLUGIN_NAME "variant_missing_method"
static const qcal_observer observer = {
    .head = QCAL_HEAD(qcal_observer), .name = "variant_missing", COUNT_BUT_MERGE};

#elif defined(VARIANT_BAD_PARAM)
#define PLUGIN_NAME "variant_bad_param"
static const qcal_param bad_params[] = {
    {.name = "level", .type = QCAL_PARAM_INT, .def = {.i = 100}, .min = 0, .max = 10,
     .help = "a default outside its own bounds"}};
static const qcal_observer observer = {
    .head = QCAL_HEAD(qcal_observer), .name = "variant_bad_param", .n_params = 1,
    .params = bad_params, COUNT_METHODS};

#elif defined(VARIANT_FAILS)
#define PLUGIN_NAME "variant_fails"
static int failing_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    if (slab->first_row + slab->rows > 8) {
        snprintf(err->msg, sizeof err->msg, "refusing samples from %llu on",
                 (unsigned long long)slab->first_row);
        return QCAL_E_DATA;
    }
    return count_observe(state, slab, err);
}
static int nan_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                        qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    (void)stat, (void)params, (void)spec, (void)err;
    for (uint64_t i = 0; i < n_ranges; i++)
        ranges[i].lo = NAN, ranges[i].hi = 1.0;
    return QCAL_OK;
}
/* Writes one range more than it is given. */
static int overrun_estimate(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                            qcal_range *ranges, uint64_t n_ranges, qcal_err *err)
{
    (void)stat, (void)params, (void)spec, (void)err;
    for (uint64_t i = 0; i <= n_ranges; i++)
        ranges[i].lo = -1.0, ranges[i].hi = 1.0;
    return QCAL_OK;
}
static const char *const minmax_kind[] = {"qcal.minmax", NULL};
static const qcal_observer observer = {
    .head = QCAL_HEAD(qcal_observer), .name = "variant_fails", .help = "fails after sample 8",
    .stat_kind = "variant.count", .create = count_create, .observe = failing_observe,
    .serialize = count_serialize, .deserialize = count_deserialize, .finalize = count_out,
    .destroy = count_destroy, .merge = count_merge};
static const qcal_estimator estimator = {
    .head = QCAL_HEAD(qcal_estimator), .name = "variant_nan", .help = "returns NaN",
    .accepts = minmax_kind, .estimate = nan_estimate};
static const qcal_estimator estimator_overrun = {
    .head = QCAL_HEAD(qcal_estimator), .name = "variant_overrun", .help = "writes past its ranges",
    .accepts = minmax_kind, .estimate = overrun_estimate};
#define HAS_ESTIMATOR 1
#define EXTRA_ESTIMATOR &estimator_overrun

#else
#error "define one VARIANT_<NAME>"
#endif

#ifndef PLUGIN_ABI
#define PLUGIN_ABI QCAL_ABI_VERSION
#endif

static const qcal_observer *const observers[] = {&observer};
#ifdef HAS_ESTIMATOR
#ifdef EXTRA_ESTIMATOR
static const qcal_estimator *const estimators[] = {&estimator, EXTRA_ESTIMATOR};
#define N_ESTIMATORS 2
#else
static const qcal_estimator *const estimators[] = {&estimator};
#define N_ESTIMATORS 1
#endif
#define ESTIMATORS estimators
#else
#define ESTIMATORS NULL
#define N_ESTIMATORS 0
#endif

#define PLUGIN_FIELDS                                                                          \
    .name = PLUGIN_NAME, .version = "0.0.1", .help = "a test plugin", .n_observers = 1,         \
    .n_estimators = N_ESTIMATORS, .observers = observers, .estimators = ESTIMATORS

#ifdef NEWER
static const plugin_1_1 plugin_newer = {
    .base = {.head = {ABI_1_1, sizeof(plugin_1_1)}, PLUGIN_FIELDS},
    .homepage = "https://example.org/qcal-variant"};
#define PLUGIN (&plugin_newer.base)
#else
static const qcal_plugin plugin = {.head = {PLUGIN_ABI, sizeof(qcal_plugin)}, PLUGIN_FIELDS};
#define PLUGIN (&plugin)
#endif

const qcal_plugin *qcal_plugin_entry(const qcal_host *host)
{
    (void)host;
    return PLUGIN;
}

#endif
