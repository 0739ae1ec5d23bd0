/* spill.h - an append-only temporary file for what memory should not hold
 *
 * Observer states of thousands of tensors would otherwise all stay in memory until the
 * results are written. The file is created on first write in $TMPDIR (else /tmp) and
 * unlinked at once, so nothing is left behind, however the process ends. Reads and writes
 * are positioned (pread/pwrite): reads may run beside one writer.
 */
#ifndef QCAL_SPILL_H
#define QCAL_SPILL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct spill spill;

spill *spill_new(void); /* NULL when out of memory; no file yet */
void spill_free(spill *s); /* NULL is allowed */

/* Appends data[n]; *at receives its offset. QERR_IO naming the folder when the file cannot
 * be made or written (a full disk). */
int spill_write(spill *s, const void *data, size_t n, uint64_t *at, qerror *e);
/* Reads back n bytes written at `at`. QERR_IO on failure. */
int spill_read(const spill *s, uint64_t at, void *data, size_t n, qerror *e);
/* Bytes written so far. */
uint64_t spill_size(const spill *s);

#endif
