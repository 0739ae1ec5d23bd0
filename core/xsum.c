/* xsum.c - exact sums of doubles (see xsum.h) */
#include "xsum.h"

#include <math.h>
#include <string.h>

#define DIGIT ((int64_t)1 << 32)
#define NORMALIZE_EVERY (1u << 29) /* each add moves a limb by < 2^32: no int64 overflow */

void xsum_normalize(xsum *s)
{
    for (int i = 0; i + 1 < XSUM_LIMBS; i++) {
        /* floor division by 2^32 of a signed value, without shifting negatives */
        int64_t carry = s->limb[i] / DIGIT;
        if (s->limb[i] % DIGIT < 0)
            carry--;
        s->limb[i] -= carry * DIGIT;
        s->limb[i + 1] += carry;
    }
    s->pending = 0;
}

static void flag_infinite(xsum *s, int negative)
{
    s->special |= negative ? XSUM_NEG_INF : XSUM_POS_INF;
}

/* |v| = mant 2^(pos - XSUM_FRAC_BITS) with mant < 2^53, rounded half up at the grid. */
static int split(double a, uint64_t *mant, int *pos)
{
    int e;
    double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    uint64_t bits = (uint64_t)ldexp(m, 53);
    int p = e - 53 + XSUM_FRAC_BITS;
    if (p < 0) {
        int drop = -p;
        bits = drop >= 64 ? 0 : (bits >> drop) + ((bits >> (drop - 1)) & 1);
        p = 0;
    }
    *mant = bits, *pos = p;
    return e + XSUM_FRAC_BITS < 32 * (XSUM_LIMBS - 1) - 1; /* room below the top limb */
}

void xsum_add(xsum *s, double v)
{
    if (v == 0)
        return;
    if (isnan(v)) {
        s->special |= XSUM_NAN;
        return;
    }
    if (isinf(v) || !isfinite(v)) {
        flag_infinite(s, v < 0);
        return;
    }
    uint64_t mant;
    int pos;
    if (!split(fabs(v), &mant, &pos)) {
        flag_infinite(s, v < 0);
        return;
    }
    int idx = pos / 32, sh = pos % 32;
    uint64_t low = (mant & ((((uint64_t)1) << (32 - sh)) - 1)) << sh;
    uint64_t rest = mant >> (32 - sh);
    int64_t d[3] = {(int64_t)low, (int64_t)(rest & 0xffffffffu), (int64_t)(rest >> 32)};
    for (int k = 0; k < 3 && idx + k < XSUM_LIMBS; k++)
        s->limb[idx + k] += v < 0 ? -d[k] : d[k];
    if (++s->pending >= NORMALIZE_EVERY)
        xsum_normalize(s);
}

void xsum_merge(xsum *into, const xsum *from)
{
    xsum copy = *from;
    xsum_normalize(&copy);
    xsum_normalize(into);
    for (int i = 0; i < XSUM_LIMBS; i++)
        into->limb[i] += copy.limb[i];
    into->pending = 2;
    into->special |= from->special;
}

double xsum_value(const xsum *s)
{
    if ((s->special & XSUM_NAN) ||
        ((s->special & XSUM_POS_INF) && (s->special & XSUM_NEG_INF)))
        return NAN;
    if (s->special)
        return (s->special & XSUM_POS_INF) ? INFINITY : -INFINITY;
    xsum c = *s;
    xsum_normalize(&c);
    int negative = c.limb[XSUM_LIMBS - 1] < 0; /* lower digits are >= 0: the top has the sign */
    if (negative) { /* the magnitude, so the digits add up without cancelling */
        for (int i = 0; i < XSUM_LIMBS; i++)
            c.limb[i] = -c.limb[i];
        xsum_normalize(&c);
    }
    /* From the top down: canonical digits make this one fixed computation per value. */
    double v = 0;
    for (int i = XSUM_LIMBS - 1; i >= 0; i--)
        v += ldexp((double)c.limb[i], 32 * i - XSUM_FRAC_BITS);
    return negative ? -v : v;
}
