/* hstat.h - host-owned deep copies of statistics (qcal_stat), safe to keep and to share */
#ifndef QCAL_HSTAT_H
#define QCAL_HSTAT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "qcal/plugin.h"

/* A statistic whose every byte the host owns. `view` points into the copy and can be
 * handed to plugins as a const qcal_stat. */
typedef struct hstat {
    qcal_stat view;
    char *kind;
    qcal_array *arrays;
    char **names;
    void **data;
} hstat;

size_t hstat_dtype_size(uint32_t dtype);
uint64_t hstat_array_count(const qcal_array *a); /* elements: product of shape (1 if rank 0) */
/* Validates and deep-copies a plugin's statistic: kind non-NULL, 1..63 of [A-Za-z0-9_.-];
 * channels >= 1; at most 256 arrays, named [a-z0-9_]+ (at most 63), unique; dtype known;
 * rank <= 4; at most 2^32 elements per array; data non-NULL when there are elements. Unused
 * shape entries (>= rank) read as 0 in the copy. Errors are QERR_SOFTWARE (a plugin broke
 * its contract), one line without the plugin's name: the caller prefixes it. *out is NULL
 * on failure. */
int hstat_copy(const qcal_stat *src, hstat **out, qerror *e);
void hstat_free(hstat *s); /* NULL is allowed */
/* The bytes s's arrays hold (what keeping it in memory costs, names and headers aside). */
size_t hstat_data_bytes(const hstat *s);
/* Whether two statistics are the same: kind, version, channels, arrays byte for byte. */
int hstat_equal(const qcal_stat *a, const qcal_stat *b);
/* The array called `name`, or NULL. Works on any qcal_stat, host-owned or not. */
const qcal_array *hstat_find(const qcal_stat *s, const char *name);

#endif
