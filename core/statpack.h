/* statpack.h - a pass's observer states as one byte buffer, to send between processes
 *
 * Layout (native byte order: sender and receiver run the same build): "QCS1", u64 number of
 * states; per state, in declaration order: kind (u32 length incl. NUL, bytes), u32
 * kind_version, u32 n_arrays, u64 channels; per array: name (as kind), u32 dtype, u32 rank,
 * u64 shape[4], u64 bytes, data. Every field starts on an 8-byte boundary, so arrays of
 * doubles are read in place from a malloc'd buffer.
 */
#ifndef QCAL_STATPACK_H
#define QCAL_STATPACK_H

#include <stddef.h>

#include "error.h"
#include "qcal/plugin.h"

struct pass;

typedef struct statbuf {
    unsigned char *data;
    size_t len, cap;
} statbuf;

void statbuf_free(statbuf *b);

/* Appends one statistic in the layout above (-1 when out of memory). */
int statpack_put_stat(statbuf *b, const qcal_stat *st);
/* Reads one statistic from data[len] at *at (advanced past it): st's arrays point into data
 * and are listed in arrays[], which must hold STATPACK_MAX_ARRAYS. -1 when malformed. */
#define STATPACK_MAX_ARRAYS 256
int statpack_take_stat(const unsigned char *data, size_t len, size_t *at, qcal_stat *st,
                       qcal_array *arrays);

/* Appends the serialized state of every observer of p (after pass_run) to out. */
int statpack_pass(struct pass *p, statbuf *out, qerror *e);

/* Folds the states packed in data[len] into p's, observer by observer (replace: p's states
 * are emptied first, so p then holds exactly the packed ones). `from` names the sender in
 * errors. A buffer that does not match p (count, framing) is refused. */
int statpack_fold(struct pass *p, const unsigned char *data, size_t len, int replace, const char *from,
                  qerror *e);

#endif
