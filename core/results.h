/* results.h - the results file: /calibration, /statistics, written atomically */
#ifndef QCAL_RESULTS_H
#define QCAL_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "hstat.h"
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
    int has_metrics;
    double mse, sqnr_db, cosine;
    char *note;         /* NULL, or a note such as "constant tensor" */
} result_tensor;

typedef struct result_stat {
    char *tensor;
    char *observer;     /* observer name: the dataset group under /statistics/<tensor>/ */
    char *params;       /* "key=value ..." the observer ran with, for re-creating it */
    hstat *state;       /* serialized observer state */
} result_stat;

typedef struct results {
    char *recipe, *source, *qcal_version, *created;
    result_tensor *tensors;
    size_t n_tensors, cap_tensors;
    result_stat *stats;
    size_t n_stats, cap_stats;
} results;

results *results_new(const char *recipe, const char *source);
void results_free(results *r);

/* Adds (or replaces) a tensor's calibration; computes scale and zero-point with qmath.
 * lo/hi hold `channels` values (1 unless the spec is per channel). */
int results_put(results *r, const char *tensor, const char *orig_name, const char *method,
                const qcal_qspec *spec, uint64_t channels, const double *lo, const double *hi,
                qerror *e);
result_tensor *results_find(results *r, const char *tensor);
/* Takes ownership of state. */
int results_add_stat(results *r, const char *tensor, const char *observer, const char *params,
                     hstat *state, qerror *e);

/* Writes to a temporary file beside `path`, then renames it into place. An existing file
 * is refused unless force. */
int results_write(const results *r, const char *path, int force, qerror *e);
/* Reads a results file back (for show, export, and re-estimation). */
int results_read(const char *path, results **out, qerror *e);

#endif
