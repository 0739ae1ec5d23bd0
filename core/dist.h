/* dist.h - one calibration over several processes (MPI ranks), as if it were one
 *
 * Every rank runs the same recipe on the same dump. Each pass streams share `rank` of `size`
 * (pass.h), then `exchange` gathers every rank's serialized observer states on rank 0, folds
 * them in rank order (observers are exact, so the result equals a single process's), and
 * sends the folded states back, so the recipe continues identically everywhere; only rank 0
 * writes. Every collective step starts by agreeing on failure: a rank that failed reports
 * its own error, the others learn which rank failed, and all of them stop cleanly.
 */
#ifndef QCAL_DIST_H
#define QCAL_DIST_H

#include "error.h"
#include "pass.h"

typedef struct dist {
    int rank, size;
    /* After a local pass that ended with `rc` (0 or -1 with e set): folds the states of every
     * rank into p on every rank. Returns 0, or -1 with e set on every rank when any failed. */
    int (*exchange)(const struct dist *d, pass *p, int rc, qerror *e);
    /* Agrees on the outcome `rc` of this rank's run before rank 0 commits its output;
     * returns -1 (e set) when any rank failed. A no-op once a failure was agreed on. */
    int (*agree)(const struct dist *d, int rc, qerror *e);
    void *impl;
} dist;

#endif
