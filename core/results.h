/* results.h - the results file: /calibration, /statistics, written atomically
 *
 * File layout (DESIGN.md "Output"; types chosen so h5py returns str, numpy.int64, float64):
 *   /                          attrs qcal_version, recipe, source, created (ISO 8601 UTC,
 *                              "2024-05-01T12:00:00Z", or SOURCE_DATE_EPOCH when set):
 *                              variable-length UTF-8 strings; statistics files of a share
 *                              (`qcal observe --shard i/K`) add share_index, share_count int64
 *   /calibration/<tensor>      one group per tensor; a '/' in the name nests groups
 *     name, tensor, method, granularity ("per_tensor" | "per_channel"), note (optional): strings
 *     bits, qmin, qmax, zero_point, axis (per channel only): int64
 *     symmetric, narrow_range, signed: int8 0/1
 *     min, max, threshold (max(|min|, |max|), for every scheme), scale: float64
 *     mse, sqnr_db, cosine: float64, only when measured (has_metrics)
 *     per channel: datasets min, max, scale (float64 [C]) and zero_point (int64 [C]); the
 *     scalar attributes then hold the overall range (min of mins, max of maxes) and the
 *     scale / zero-point qmath_qparams gives for that range.
 *   /statistics/<tensor>/<observer>   one group per saved observer state
 *     attrs kind, params, tensor, observer (strings), kind_version, channels (int64),
 *     batch_size, axis (int64: how the observer was created, for merging and reloading),
 *     max_rows (int64: the pass's sample limit, 0 for all samples),
 *     on_share (int64 1, only on states observed over one share of the samples);
 *     one dataset per array, in the array order (the group tracks creation order):
 *     float32 / float64 / int64 / uint64 little-endian, rank 0 -> scalar dataspace.
 * A group is a calibration entry when it has a `method` attribute and a statistic when it
 * has a `kind` attribute, so "a" and "a/b" may both be tensors.
 */
#ifndef QCAL_RESULTS_H
#define QCAL_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "hstat.h"
#include "keyindex.h"
#include "qcal/plugin.h"

typedef struct result_tensor {
    char *tensor;       /* name in the dump (group path under /calibration) */
    char *orig_name;    /* exact framework name, for exports */
    char *method;       /* e.g. "minmax" */
    qcal_qspec spec;
    uint64_t channels;  /* 1 per tensor, C per channel */
    double *lo, *hi;    /* [channels] the real range */
    double *scale;      /* [channels] */
    int64_t *zero_point;/* [channels] */
    int has_metrics;    /* set by the caller after measuring; 0 leaves the attributes out */
    double mse, sqnr_db, cosine;
    char *note;         /* NULL, or a malloc'd note such as "constant tensor" (freed by us) */
    int has_data_range; /* the extremes of the tensor's finite values its statistics recorded
                           (attributes data_min, data_max): the sign the exports need */
    double data_min, data_max;
} result_tensor;

/* The extremes of a tensor's values, noted before or after its result is put. */
typedef struct result_extrema {
    char *tensor;
    double lo, hi;
} result_extrema;

typedef struct result_stat {
    char *tensor;
    char *observer;     /* observer name: the dataset group under /statistics/<tensor>/ */
    char *params;       /* "key=value ..." the observer ran with, for re-creating it */
    hstat *state;       /* serialized observer state; NULL when spilled (results_stat_view) */
    uint64_t spill_at, spill_len; /* where in the spill file, when state is NULL */
    uint64_t batch_size;/* the pass's batch size and the channel axis the observer was */
    int axis;           /* created with (attributes batch_size, axis; 0: not recorded) */
    int64_t max_rows;   /* the pass's sample limit (attribute max_rows; 0 all samples, -1 not
                           recorded: files of qcal before 0.1 kept it nowhere) */
    int on_share;       /* observed on this file's share only (attribute on_share = 1):
                           `qcal merge` folds these; the others are whole and must agree */
} result_stat;

/* How the dump described a tensor, saved on /statistics/<tensor> (attributes shape int64[rank],
 * channel_axis int64 (-1: none), name, dtype, op_type strings), so a later run can re-declare
 * its observers and re-estimate without the dump. */
typedef struct result_info {
    char *tensor;
    int rank;
    uint64_t shape[QCAL_MAX_RANK];
    int channel_axis;
    char *orig_name, *dtype, *op_type; /* op_type may be NULL */
} result_info;

/* What a strategy tried on a tensor, at /candidates/<tensor>: attributes chosen (int64, the
 * index of the kept candidate, -1 for none of them) and criterion (string: the error that
 * decided, e.g. "mse" or "layer_error"); datasets method (strings [n]: how each candidate was
 * made), min, max (float64 [n], the overall range), mse, sqnr_db, cosine, layer_error
 * (float64 [n], NaN where not measured). */
typedef struct result_candidates {
    char *tensor;
    uint64_t n;
    char **method;
    double *lo, *hi, *mse, *sqnr_db, *cosine, *layer_error;
    int64_t chosen;
    char *criterion;
} result_candidates;

typedef struct results {
    char *recipe, *source, *qcal_version, *created;
    int dump_has_weights;              /* the dump had /weights (root attribute, int64 0/1), so
                                          re-estimating knows when weight states are missing */
    uint64_t share_index, share_count; /* a statistics file of share i of K (root attributes
                                          share_index, share_count); count 0: not a share */
    result_candidates *cands;
    size_t n_cands, cap_cands;
    result_info *infos;
    size_t n_infos, cap_infos;
    result_tensor *tensors;
    size_t n_tensors, cap_tensors;
    result_stat *stats;
    size_t n_stats, cap_stats;
    result_extrema *extrema;
    size_t n_extrema, cap_extrema;
    keyindex by_tensor, by_stat, by_info, by_cands, by_extrema; /* lookups by name */
    /* Saved states are held in memory while the process's budget allows (all results
     * together: results_set_state_budget), the rest in a temporary file (spill.h), so memory
     * does not grow with the number of tensors. */
    struct spill *spill;
    size_t held_bytes; /* of arrays, this results' share of the budget */
} results;

#define RESULTS_STATE_BUDGET ((size_t)64 << 20)

/* recipe and source are copied (NULL -> ""); created is set to now. NULL when out of memory. */
results *results_new(const char *recipe, const char *source);
void results_free(results *r);

/* Adds (or replaces) a tensor's calibration; computes scale and zero-point with qmath.
 * lo/hi hold `channels` values (1 unless the spec is per channel). tensor is a path of
 * non-empty components other than "." and ".." ("a/b.c" nests); orig_name NULL means tensor.
 * Errors: QERR_DATA for a bad name or range (naming tensor and channel), QERR_SOFTWARE for a
 * channel count that does not fit the spec. Nothing changes on failure. */
int results_put(results *r, const char *tensor, const char *orig_name, const char *method,
                const qcal_qspec *spec, uint64_t channels, const double *lo, const double *hi,
                qerror *e);
result_tensor *results_find(results *r, const char *tensor);
/* Whether two `source` strings (paths joined by ", ") name the same dump files: compared by
 * their base names, so one file named from two folders ("w.h5", "/jobs/w.h5") is the same. */
int results_same_source(const char *a, const char *b);
/* For the error line about a results file without calibration entries: what it likely is. */
const char *results_empty_hint(const results *r);
/* Widens what is known of the extremes of tensor's finite values to [lo, hi] (both finite,
 * lo <= hi; else nothing is noted): its result, put before or after, carries them. */
int results_note_data_range(results *r, const char *tensor, double lo, double hi, qerror *e);
/* The overall range of t (per channel: the least min and the largest max). */
void result_overall_range(const result_tensor *t, double *lo, double *hi);
/* "uint8 aff", "int8 sym narrow": the grid of a spec, for people. */
void result_scheme_text(const qcal_qspec *s, char *buf, size_t size);
/* Adds (or replaces) the saved state of `observer` (no '/') with `params` on `tensor`; params
 * NULL -> "". States of one observer with different params are kept apart (the second is
 * written as group "<observer>#2", its `observer` attribute naming the observer).
 * Takes ownership of state, also on failure (it is then freed). */
int results_add_stat(results *r, const char *tensor, const char *observer, const char *params,
                     hstat *state, qerror *e);

/* The bytes of arrays the saved states of all results in the process may hold in memory
 * before the next ones go to temporary files (at first RESULTS_STATE_BUDGET; 0: every state
 * goes to a file). Applies to states added later. `--state-mib`; set it while no other
 * thread adds states. */
void results_set_state_budget(size_t bytes);
/* The state of s, wherever it is kept: s->state's view, or the state read back from the
 * temporary file into *loaded, which the caller frees (hstat_free) once done with the view
 * (*loaded is NULL when nothing was read). NULL on failure (QERR_IO, QERR_SOFTWARE). */
const qcal_stat *results_stat_view(const results *r, const result_stat *s, hstat **loaded,
                                   qerror *e);

result_stat *results_find_stat(results *r, const char *tensor, const char *observer,
                               const char *params);

/* Adds (or replaces) the candidates of c->tensor (everything is copied). QERR_DATA for a bad
 * name or a chosen index out of range. */
int results_add_candidates(results *r, const result_candidates *c, qerror *e);
const result_candidates *results_find_candidates(const results *r, const char *tensor);
/* Adds (or replaces) a tensor's description; strings are copied. */
int results_add_info(results *r, const result_info *info, qerror *e);
const result_info *results_find_info(const results *r, const char *tensor);

/* Writes to "<path>.tmp.XXXXXX" beside `path`, fsyncs it, then moves it into place (link()
 * without force, so an existing file is never clobbered even by a racing writer; rename()
 * with force) and fsyncs the folder. On any failure the temporary file is removed and an
 * existing `path` is left byte for byte as it was. The new file gets the replaced file's
 * mode, or 0666 minus the umask. Errors: QERR_CANTCREAT (existing file without force, a
 * folder, a missing or unwritable folder: one line naming the path and the reason), QERR_IO
 * (HDF5 or fsync failure while writing). HDF5 prints nothing. Call from one thread. */
int results_write(const results *r, const char *path, int force, qerror *e);
/* Removes the temporary file of a write in progress, if any: async-signal-safe, for a
 * SIGINT/SIGTERM handler, so an interrupted run leaves nothing behind. */
void results_abandon_temp(void);
/* Reads a results file back (for show, export, and re-estimation): every calibration entry,
 * with per-channel arrays, metrics and note, and every statistic as an hstat. Validates types,
 * shapes, the grid (qmin/qmax must match bits and flags) and the values (finite ranges,
 * scale > 0, zero-point on the grid). Errors: QERR_NOINPUT (cannot open), QERR_DATA (not a
 * qcal results file, or a malformed entry: the line names the file and the HDF5 object). */
int results_read(const char *path, results **out, qerror *e);
/* Orders the tensors as results_read lists them from the file: by path, component by
 * component (what printing straight from memory needs to match a read-back). */
void results_sort_as_file(results *r);
/* The root attributes only (recipe, source, share_index, ...): no entries, no statistics. */
int results_read_header(const char *path, results **out, qerror *e);

#endif
