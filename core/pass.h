/* pass.h - one streaming pass over a dump, feeding every declared observer */
#ifndef QCAL_PASS_H
#define QCAL_PASS_H

#include <stddef.h>
#include <stdint.h>

#include "dump.h"
#include "error.h"
#include "hstat.h"
#include "registry.h"
#include "results.h"

typedef struct pass_options {
    int threads;         /* worker threads, >= 1 (default: online cores) */
    size_t slab_bytes;   /* target float32 bytes per slab (default 4 MiB) */
    size_t piece_bytes;  /* several observers on a tensor take a slab in pieces of about this
                            many bytes, whole batches each (default 256 KiB) */
    uint64_t batch_size; /* samples per calibration batch for batch-based methods (32) */
    uint64_t max_rows;   /* read only the first max_rows samples; 0 = all */
    /* Stream only share i of K (share_count 0: all): each tensor's batches are cut into K
     * consecutive runs, and observers see the rows of run i at their global sample index, so
     * merging the K shares' states gives exactly the states of one whole pass. */
    uint64_t share_index, share_count;
    /* Several processes (MPI): when set, the pass streams share rank/size and then folds the
     * states of every rank, in rank order, into every rank's (see dist.h). */
    const struct dist *dist;
    void (*progress)(void *ud, uint64_t bytes_done, uint64_t bytes_total);
    void *progress_ud;
    /* When set, receives how slabs were read: stored gzip chunks inflated by the workers
     * (packed.h), slabs HDF5 read (and inflated) itself, and slabs mapped from the file. */
    struct pass_counts *counts;
} pass_options;

typedef struct pass_counts {
    uint64_t packed_slabs;   /* slabs whose chunks a worker inflated */
    uint64_t packed_chunks;  /* chunks inflated by workers */
    uint64_t plain_slabs;    /* slabs read through HDF5's own pipeline */
    uint64_t mapped_slabs;   /* slabs mapped from the file (dump_map_rows) */
} pass_counts;

void pass_defaults(pass_options *o);

typedef struct pass pass;

pass *pass_new(dump *d);
void pass_free(pass *p);

/* Declares `obs` on tensor `tensor` with resolved params (obs->desc.n_params values).
 * channel_axis: PASS_AXIS_DEFAULT keeps the tensor's own, else 1..rank-1. A state is created
 * and destroyed at once, so a tensor the observer refuses fails here, naming both.
 * Returns a handle >= 0, or -1. */
#define PASS_AXIS_DEFAULT (-2)
int pass_observe(pass *p, size_t tensor, const reg_observer *obs, const qcal_value *params,
                 int channel_axis, qerror *e);

/* Hands each declaration's state over serialized (keep owns `state`, also when it fails) as
 * soon as its tensor is done, then drops it, so a pass over thousands of tensors holds a few
 * states at a time instead of all of them. Worker threads call keep, one call at a time, in
 * declaration order within a tensor. pass_run and pass_load then hand every declaration
 * over exactly once and keep none (pass_fold with replace brings one back). With keep NULL
 * (the default) the pass keeps its states. */
typedef int (*pass_keep_fn)(void *ud, int h, hstat *state, qerror *e);
void pass_set_keep(pass *p, pass_keep_fn keep, void *ud);

/* Streams the dump once. Slab k of a tensor goes to worker k mod threads; worker states are
 * merged in worker order, so results depend on nothing but the data when observers are exact. */
int pass_run(pass *p, const pass_options *o, qerror *e);

/* Instead of streaming the dump: each declared observer takes the state saved for its
 * tensor, observer name and parameters in `saved` (read from the results file `from`). */
int pass_load(pass *p, const results *saved, const char *from, const pass_options *o,
              qerror *e);

/* Whether `saved` holds a state for every declared observer (pass_load would succeed). */
int pass_saved_all(const pass *p, const results *saved);

size_t pass_count(const pass *p);
const reg_observer *pass_observer(const pass *p, int handle);
size_t pass_tensor(const pass *p, int handle);
const qcal_value *pass_params(const pass *p, int handle);
/* The tensor as observer `handle` was created for (its channel axis and batch size). */
const qcal_tensor *pass_desc(const pass *p, int handle);

/* Folds a serialized state (another share's) into the result state of observer h, as merge
 * would; with `replace`, the result state is first emptied. */
int pass_fold(pass *p, int h, const qcal_stat *st, int replace, qerror *e);

/* Observer h's states are made for batches of `batch_size` samples (as when it streamed). */
void pass_set_batch_size(pass *p, int h, uint64_t batch_size);

/* The rows [*begin, *end) of share i of K of `rows` samples cut in batches of `batch`. */
void pass_share_rows(uint64_t rows, uint64_t batch, uint64_t i, uint64_t k, uint64_t *begin,
                     uint64_t *end);

/* After pass_run: host-owned copies of the finalized statistic / the serialized state. */
int pass_finalize(pass *p, int handle, hstat **out, qerror *e);
int pass_serialize(pass *p, int handle, hstat **out, qerror *e);
/* Frees observer h's result state once the caller keeps it serialized (a pass over 2,000
 * tensors would otherwise hold every state twice); pass_fold(.., replace) brings it back. */
void pass_release(pass *p, int handle);
int pass_has_state(const pass *p, int handle);

#endif
