/* merge.h - `qcal merge`: the statistics files of K shares folded into one
 *
 * `qcal observe --shard i/K` saves, per observer, the state of share i (on_share) and copies
 * the states of earlier passes it loaded (whole). Merging checks the files are the K shares
 * of one observation (same recipe, dump and tensors; every share exactly once), folds the
 * shares' states in share order with each observer's own deserialize (observers are exact,
 * so the order cannot change the result), keeps the whole states (which must agree), and
 * writes a statistics file `qcal run --from-statistics` or another `qcal observe` reads.
 */
#ifndef QCAL_MERGE_H
#define QCAL_MERGE_H

#include <stddef.h>

#include "error.h"
#include "registry.h"

int stats_merge(const char *const *paths, size_t n, registry *reg, const char *output, int force,
                qerror *e);

#endif
