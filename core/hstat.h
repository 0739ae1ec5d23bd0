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
/* Validates (kind, names, dtypes, ranks) and deep-copies a plugin's statistic. */
int hstat_copy(const qcal_stat *src, hstat **out, qerror *e);
void hstat_free(hstat *s);
const qcal_array *hstat_find(const qcal_stat *s, const char *name);

#endif
