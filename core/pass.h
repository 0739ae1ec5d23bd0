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
    uint64_t batch_size; /* samples per calibration batch for batch-based methods (32) */
    uint64_t max_rows;   /* read only the first max_rows samples; 0 = all */
    void (*progress)(void *ud, uint64_t bytes_done, uint64_t bytes_total);
    void *progress_ud;
} pass_options;

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

/* Streams the dump once. Slab k of a tensor goes to worker k mod threads; worker states are
 * merged in worker order, so results depend on nothing but the data when observers are exact. */
int pass_run(pass *p, const pass_options *o, qerror *e);

/* Instead of streaming the dump: each declared observer takes the state saved for its
 * tensor, observer name and parameters in `saved` (read from the results file `from`). */
int pass_load(pass *p, const results *saved, const char *from, qerror *e);

size_t pass_count(const pass *p);
const reg_observer *pass_observer(const pass *p, int handle);
size_t pass_tensor(const pass *p, int handle);
const qcal_value *pass_params(const pass *p, int handle);

/* After pass_run: host-owned copies of the finalized statistic / the serialized state. */
int pass_finalize(pass *p, int handle, hstat **out, qerror *e);
int pass_serialize(pass *p, int handle, hstat **out, qerror *e);

#endif
