/* xsum.h - exact sums of doubles: the same result in any order of additions and merges
 *
 * Each addend is rounded once to a multiple of 2^-XSUM_FRAC_BITS (deterministically: the
 * rounding depends on the addend alone), then added exactly into a fixed-point integer of
 * 32-bit digits. So a sum split over threads, slabs, files or MPI ranks and merged in any
 * order is bit for bit the sum of one sequential run: what evaluation passes need to give
 * identical results everywhere. Magnitudes from 2^-XSUM_FRAC_BITS to 2^XSUM_INT_BITS are
 * exact (the evaluation's sums are of float32 squares and products, which stay within
 * 2^-298..2^256 a value: 160 fraction bits flushed squares of |x| below 1e-24 to 0);
 * beyond it a sum becomes +-inf, and NaN / Inf addends give NaN / Inf as float addition would.
 */
#ifndef QCAL_XSUM_H
#define QCAL_XSUM_H

#include <stdint.h>

#define XSUM_FRAC_BITS 320
#define XSUM_INT_BITS 304
#define XSUM_LIMBS ((XSUM_FRAC_BITS + XSUM_INT_BITS) / 32 + 1)

enum { XSUM_POS_INF = 1, XSUM_NEG_INF = 2, XSUM_NAN = 4 };

typedef struct xsum {
    int64_t limb[XSUM_LIMBS]; /* value = sum limb[i] 2^(32 i - XSUM_FRAC_BITS) */
    uint32_t pending;         /* additions since the digits were last normalized */
    uint32_t special;         /* XSUM_* flags */
} xsum;

void xsum_add(xsum *s, double v);
void xsum_merge(xsum *into, const xsum *from);
/* The sum, rounded to a double the same way whatever the order it was built in. */
double xsum_value(const xsum *s);
/* Canonical digits (every limb but the top in [0, 2^32)), for saving; equal sums give equal
 * digits. */
void xsum_normalize(xsum *s);

#endif
