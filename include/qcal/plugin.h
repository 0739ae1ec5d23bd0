/* plugin.h - the qcal plugin ABI: the only header a plugin needs.
 *
 * A plugin is a shared object that exports exactly one symbol, qcal_plugin_entry(), which
 * returns static const descriptors of the observers and estimators it provides.
 *
 *   observer:  a streaming statistic over a tensor's values
 *              create -> observe* -> merge* -> serialize | finalize -> destroy
 *   estimator: a pure function (statistic, parameters, quantization spec) -> range(s)
 *
 * Words: MUST / MUST NOT / SHOULD / MAY as in RFC 2119.
 *
 * ---------------------------------------------------------------------------------------
 * VERSIONING
 *   Every growable struct starts with a qcal_head {abi_version, struct_size}.
 *   abi_version = major << 16 | minor. The host refuses another major (naming the file and
 *   both versions) and a struct_size below the 1.0 minimum (QCAL_*_SIZE_1_0). Otherwise it
 *   copies min(struct_size, its own sizeof) bytes into a zeroed struct of its own: members an
 *   older plugin lacks read as NULL/0 ("absent": behave as before the member existed), members
 *   a newer plugin adds are ignored. The host never reads past struct_size.
 *   A minor version only appends members that are optional in both directions. Anything else
 *   is a new major, recorded in the changelog at the end of this file.
 *   Leaf structs passed by value or in arrays (qcal_param, qcal_value, qcal_array, qcal_stat,
 *   qcal_tensor, qcal_slab, qcal_qspec, qcal_range, qcal_err) are FROZEN: they never change.
 *   Reserved `flags` members MUST be 0; a receiver refuses bits it does not know.
 *
 * OWNERSHIP (who allocates, frees)
 *   - The plugin owns its descriptors (valid as long as the .so is loaded; the host never
 *     unloads a plugin during a run), its states (create/destroy) and every array it hands out
 *     from serialize/finalize: valid until the next call on that state or its destroy.
 *   - The host owns everything it passes in (tensor, slab, params, stat, spec, err, output
 *     range buffers): valid for the duration of the call only. A plugin MUST NOT keep a
 *     pointer to any of it after the call returns; it copies what it needs.
 *   - No allocation crosses the boundary in either direction.
 *
 * THREADS
 *   - qcal_plugin_entry() is called once per file, on the main thread, before any worker runs.
 *     It MUST be cheap and idempotent: no allocation, no threads, no output.
 *   - An observer state is used by one thread at a time, but different states of the same
 *     observer run concurrently on different threads: a plugin MUST keep no mutable globals.
 *   - merge(into, from): neither state is in use elsewhere; both were created with the same
 *     tensor and parameters. The host merges worker states in a fixed order.
 *   - For results independent of the thread count and slab size (which qcal promises its
 *     users), observe + merge MUST be exact: the finalized statistic may depend only on the
 *     multiset of (sample index, values) seen, never on how they were split into slabs or
 *     states. Keep integer counts, exact extrema, or per-batch records keyed by sample index.
 *   - estimate() is pure and MAY run on any thread, concurrently.
 *   - A plugin MUST NOT create threads, change the floating-point environment or the locale,
 *     or install signal handlers.
 *
 * ERRORS
 *   Every fallible method returns QCAL_OK (0) or a negative QCAL_E_* code, and takes a
 *   host-owned qcal_err whose buffer is zeroed before the call. The plugin MAY write one
 *   sentence into err->msg, without the plugin, method or tensor name (the host adds them).
 *   A plugin MUST NOT print, exit, abort, longjmp or throw across this boundary.
 *
 * PARAMETERS
 *   Observers and estimators declare their parameters (qcal_param). The host validates the
 *   user's values (type, bounds, choices, unknown names) and passes a dense qcal_value array
 *   in declaration order, defaults filled in: a plugin reads params[i] with no checks.
 *
 * STATISTICS
 *   Statistics (finalize) and saved states (serialize) are a kind name plus named typed
 *   arrays, so the host can save any of them to HDF5, merge and re-estimate without the dump,
 *   and hand them to Lua, without knowing the kind. Standard kinds (below) are shared by all
 *   plugins; third parties name their own kinds "vendor.name".
 * ---------------------------------------------------------------------------------------
 */
#ifndef QCAL_PLUGIN_H
#define QCAL_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QCAL_ABI_MAJOR 1
#define QCAL_ABI_MINOR 0
#define QCAL_ABI_VERSION ((uint32_t)((QCAL_ABI_MAJOR << 16) | QCAL_ABI_MINOR))
#define QCAL_ABI_MAJOR_OF(v) ((uint32_t)(v) >> 16)
#define QCAL_ABI_MINOR_OF(v) ((uint32_t)(v)&0xffffu)

#if defined(_WIN32)
#define QCAL_PLUGIN_EXPORT __declspec(dllexport)
#else
#define QCAL_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/* ---- result codes (permanent; the host treats unknown negative codes as QCAL_E_PLUGIN) -- */
#define QCAL_OK 0
#define QCAL_E_INVAL -1   /* invalid argument or parameter combination */
#define QCAL_E_NOMEM -2   /* allocation failed */
#define QCAL_E_KIND -3    /* statistic of a kind (or kind version) this method does not take */
#define QCAL_E_DATA -4    /* the data cannot give a result (e.g. no finite value seen) */
#define QCAL_E_UNSUP -5   /* unsupported combination (e.g. a spec flag the plugin lacks) */
#define QCAL_E_PLUGIN -6  /* internal plugin failure */

#define QCAL_ERR_MSG_SIZE 256

/* A host-owned error buffer, zeroed before each call. Leaf struct: frozen. */
typedef struct qcal_err {
    char msg[QCAL_ERR_MSG_SIZE]; /* one sentence, NUL-terminated (the host forces the NUL) */
} qcal_err;

/* The header of every growable struct. */
typedef struct qcal_head {
    uint32_t abi_version; /* QCAL_ABI_VERSION the struct was compiled with */
    uint32_t struct_size; /* sizeof the struct as compiled */
} qcal_head;

#define QCAL_HEAD(type) { QCAL_ABI_VERSION, (uint32_t)sizeof(type) }

/* ---- parameters ------------------------------------------------------------------------ */

#define QCAL_PARAM_INT 1    /* value.i, bounded by [min, max] */
#define QCAL_PARAM_FLOAT 2  /* value.f, finite, bounded by [min, max] */
#define QCAL_PARAM_BOOL 3   /* value.i, 0 or 1 */
#define QCAL_PARAM_CHOICE 4 /* value.i = index into choices; default given as an index */

/* One parameter value. Leaf: frozen. */
typedef union qcal_value {
    int64_t i;
    double f;
} qcal_value;

/* A parameter declaration. Leaf (declared in arrays): frozen. */
typedef struct qcal_param {
    const char *name;            /* [a-z0-9_]+, unique within its method */
    uint32_t type;               /* QCAL_PARAM_* */
    uint32_t flags;              /* reserved, MUST be 0 */
    qcal_value def;              /* default, within bounds / a valid choice index */
    double min, max;             /* inclusive bounds for INT and FLOAT */
    const char *const *choices;  /* CHOICE: NULL-terminated list of names; otherwise NULL */
    const char *help;            /* one line, shown by `qcal list` */
} qcal_param;

/* ---- data -------------------------------------------------------------------------------- */

#define QCAL_DTYPE_F32 1
#define QCAL_DTYPE_F64 2
#define QCAL_DTYPE_I64 3
#define QCAL_DTYPE_U64 4

#define QCAL_MAX_RANK 8

/* A named typed array of a statistic. Leaf: frozen. Row-major, native byte order. */
typedef struct qcal_array {
    const char *name;                 /* [a-z0-9_]+ */
    uint32_t dtype;                   /* QCAL_DTYPE_* */
    uint32_t rank;                    /* 0..4 (0: a scalar, one element) */
    uint64_t shape[4];
    const void *data;                 /* owner: whoever filled the struct (see OWNERSHIP) */
} qcal_array;

/* A statistic or a saved state. Leaf: frozen. */
typedef struct qcal_stat {
    const char *kind;          /* "qcal.minmax", "vendor.thing" */
    uint32_t kind_version;     /* layout version of that kind */
    uint32_t n_arrays;
    uint64_t channels;         /* 1 for per-tensor statistics, C for per-channel ones */
    const qcal_array *arrays;
} qcal_stat;

/* What an observer is created for. Leaf: frozen. */
typedef struct qcal_tensor {
    const char *name;              /* the tensor's name in the dump */
    uint32_t rank;                 /* 1..QCAL_MAX_RANK; shape[0] is the sample axis */
    int32_t channel_axis;          /* 1..rank-1, or -1 when the tensor has none */
    uint64_t shape[QCAL_MAX_RANK]; /* shape[0] = samples in the whole (possibly sharded) dump */
    uint64_t batch_size;           /* samples per calibration batch (>= 1), for batch-based
                                      methods: batch b is samples [b*batch_size, (b+1)*batch_size) */
} qcal_tensor;

/* A slab of values: rows consecutive samples along axis 0, converted to float32.
 * Values may contain NaN and +-Inf; an observer MUST NOT fold them into a range.
 * The host guarantees that a slab never splits a calibration batch: first_row is a multiple
 * of the tensor's batch_size and rows is a multiple of it, except for the tensor's last slab
 * (whose last batch may be short). So a per-batch statistic can be computed within one
 * observe() call. Slabs of one tensor may reach different states in any order.
 * Leaf: frozen. */
typedef struct qcal_slab {
    const float *data;   /* rows * row_size values, row-major */
    uint64_t rows;       /* samples in this slab (>= 1) */
    uint64_t row_size;   /* values per sample: product of shape[1..] */
    uint64_t first_row;  /* index of the slab's first sample in the whole dump */
} qcal_slab;

/* ---- quantization spec ------------------------------------------------------------------ */

#define QCAL_QSPEC_SIGNED 1u      /* integer grid is signed */
#define QCAL_QSPEC_SYMMETRIC 2u   /* range is [-t, t] (signed) or [0, t] (unsigned) */
#define QCAL_QSPEC_NARROW 4u      /* narrow range: drop the most negative level */
#define QCAL_QSPEC_PER_CHANNEL 8u /* one range per channel along `axis` */
#define QCAL_QSPEC_KNOWN_FLAGS 15u

/* A quantization spec, as estimators see it. Leaf: frozen.
 * A plugin MUST refuse (QCAL_E_UNSUP) flags outside QCAL_QSPEC_KNOWN_FLAGS of its version. */
typedef struct qcal_qspec {
    uint32_t bits;   /* 2..16 */
    uint32_t flags;  /* QCAL_QSPEC_* */
    int64_t qmin;    /* integer grid, derived by the host from bits and flags */
    int64_t qmax;
    int32_t axis;    /* channel axis when per-channel, else -1 */
    uint32_t reserved; /* MUST be 0 */
} qcal_qspec;

/* A real range. Symmetric methods return [-t, t]. Leaf: frozen. */
typedef struct qcal_range {
    double lo, hi;
} qcal_range;

/* ---- observers --------------------------------------------------------------------------- */

typedef struct qcal_observer {
    qcal_head head;
    const char *name;        /* bundled: bare ("minmax"); third party: "vendor.name" */
    const char *help;        /* one line */
    const char *stat_kind;   /* kind that finalize produces */
    uint32_t n_params;
    uint32_t flags;          /* reserved, MUST be 0 */
    const qcal_param *params;

    /* [main or worker thread] Make a state for `tensor`. MUST NOT keep `tensor` or its name.
     * Returns QCAL_E_INVAL (with a sentence) when the tensor does not suit the observer, e.g.
     * a per-channel observer on a tensor without channel axis. */
    int (*create)(const qcal_tensor *tensor, const qcal_value *params, void **state,
                  qcal_err *err);
    /* [one state at a time] Fold one slab into the state. */
    int (*observe)(void *state, const qcal_slab *slab, qcal_err *err);
    /* [neither state in use] into := into (+) from. `from` is left valid and unchanged. */
    int (*merge)(void *into, const void *from, qcal_err *err);
    /* [one state at a time] The exact mergeable state as arrays; arrays owned by the state. */
    int (*serialize)(const void *state, qcal_stat *out, qcal_err *err);
    /* [one state at a time] Fold a serialized state into `state` (as merge would). `state`
     * was made by create() for the same tensor and parameters. MUST validate every array
     * (presence, dtype, shape) and refuse inconsistent input with QCAL_E_DATA. */
    int (*deserialize)(void *state, const qcal_stat *in, qcal_err *err);
    /* [one state at a time] The statistic for estimators; arrays owned by the state. Returns
     * QCAL_E_DATA when nothing finite was seen. */
    int (*finalize)(void *state, qcal_stat *out, qcal_err *err);
    /* [one state at a time] Free the state. NULL is allowed and does nothing. */
    void (*destroy)(void *state);
    /* ABI 1.0 ends here */
} qcal_observer;

#define QCAL_OBSERVER_SIZE_1_0 (offsetof(qcal_observer, destroy) + sizeof(void (*)(void *)))

/* ---- estimators -------------------------------------------------------------------------- */

typedef struct qcal_estimator {
    qcal_head head;
    const char *name;
    const char *help;
    const char *const *accepts; /* NULL-terminated statistic kinds this estimator takes */
    uint32_t n_params;
    uint32_t flags;             /* reserved, MUST be 0 */
    const qcal_param *params;

    /* [any thread, concurrent] Write `n_ranges` ranges: 1 for a per-tensor spec, else
     * stat->channels (the host checks this before the call). Each range MUST be finite with
     * lo <= hi; the host refuses anything else. On success the estimator MAY leave one
     * sentence in err->msg as a note on the result (a constant tensor, a fallback taken);
     * the host records it with the result. */
    int (*estimate)(const qcal_stat *stat, const qcal_value *params, const qcal_qspec *spec,
                    qcal_range *ranges, uint64_t n_ranges, qcal_err *err);
    /* ABI 1.0 ends here */
} qcal_estimator;

#define QCAL_ESTIMATOR_SIZE_1_0 (offsetof(qcal_estimator, estimate) + sizeof(void (*)(void)))

/* ---- the host, as a plugin sees it ------------------------------------------------------- */

#define QCAL_LOG_ERROR 1
#define QCAL_LOG_WARN 2
#define QCAL_LOG_INFO 3
#define QCAL_LOG_DEBUG 4

typedef struct qcal_host {
    qcal_head head;
    const char *version; /* host version string, e.g. "0.1.0" */
    /* [any thread] Log one already formatted line (no newline needed). */
    void (*log)(const struct qcal_host *host, uint32_t level, const char *line);
    /* ABI 1.0 ends here */
} qcal_host;

#define QCAL_HOST_SIZE_1_0 (offsetof(qcal_host, log) + sizeof(void (*)(void)))

/* ---- the plugin file --------------------------------------------------------------------- */

typedef struct qcal_plugin {
    qcal_head head;
    const char *name;    /* the family, e.g. "minmax" */
    const char *version; /* the plugin's own version string */
    const char *help;
    uint32_t n_observers;
    uint32_t n_estimators;
    const qcal_observer *const *observers;   /* pointers: each struct carries its own size */
    const qcal_estimator *const *estimators;
    /* ABI 1.0 ends here */
} qcal_plugin;

#define QCAL_PLUGIN_SIZE_1_0 (offsetof(qcal_plugin, estimators) + sizeof(void *))

/* The one exported symbol. Its signature never changes in any version. Returns static const
 * data, or NULL to refuse the host (after saying why through host->log). */
#define QCAL_PLUGIN_ENTRY_NAME "qcal_plugin_entry"
typedef const qcal_plugin *(*qcal_plugin_entry_fn)(const qcal_host *host);
QCAL_PLUGIN_EXPORT const qcal_plugin *qcal_plugin_entry(const qcal_host *host);

/* ---- standard statistic kinds ------------------------------------------------------------
 * "qcal.minmax" v1, channels C (1 per tensor):
 *     lo f32[C], hi f32[C]       extrema of finite values
 *     count u64[C]               finite values seen
 *     nonfinite u64[2]           NaN count, +-Inf count (whole tensor)
 * "qcal.histogram" v1, channels 1 (per tensor, as in every reference tool):
 *     counts u64[n]              occupied bins, in order; bin i covers [lo + i w, lo + (i+1) w)
 *     lo f64[1], width f64[1]    left edge of bin 0, bin width w (a power of two)
 *     min f64[1], max f64[1]     exact extrema of the histogrammed values (|x| when abs)
 *     smin f64[1], smax f64[1]   exact signed extrema of x
 *     count u64[1]               finite values (the sum of counts)
 *     nonfinite u64[2]           NaN count, +-Inf count
 *     abs u64[1]                 1 when the values are |x|
 *     zeros u64[1]               values equal to 0 (qcal >= 0.1; absent from other producers)
 * Estimators SHOULD ignore arrays they do not know, so kinds can gain arrays in a new
 * kind_version without breaking consumers.
 * ---------------------------------------------------------------------------------------- */

/* ---- changelog ----------------------------------------------------------------------------
 * 1.0  first version.
 * ---------------------------------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif
#endif /* QCAL_PLUGIN_H */
