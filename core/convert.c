/* convert.c - stored element types to float32, outside HDF5 (its half conversion is ~100x
 * slower) and off the reading thread */
#include <pthread.h>
#include <string.h>

#include "dump.h"

float dump_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 31u, mant = h & 1023u;
    uint32_t bits;
    if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf, or nan keeping its payload */
    } else if (exp) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (!mant) {
        bits = sign;
    } else { /* subnormal: mant * 2^-24, normalised */
        uint32_t shift = 0;
        while (!(mant & 1024u)) {
            mant <<= 1;
            shift++;
        }
        bits = sign | ((113u - shift) << 23) | ((mant & 1023u) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float dump_bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Every half value, decoded once: a 256 KiB table beats per-value bit arithmetic. */
static float half_table[65536];
static pthread_once_t half_once = PTHREAD_ONCE_INIT;

static void half_table_init(void)
{
    for (uint32_t h = 0; h < 65536; h++)
        half_table[h] = dump_half_to_float((uint16_t)h);
}

static void convert_half(const uint16_t *in, size_t n, float *out)
{
    pthread_once(&half_once, half_table_init);
    for (size_t i = 0; i < n; i++)
        out[i] = half_table[in[i]];
}

static void convert_bf16(const uint16_t *in, size_t n, float *out)
{
    uint32_t *bits = (uint32_t *)(void *)out; /* float and uint32_t: same size, no aliasing read */
    for (size_t i = 0; i < n; i++)
        bits[i] = (uint32_t)in[i] << 16;
}

#define WIDEN(type)                                                                            \
    do {                                                                                       \
        const type *src = raw;                                                                 \
        for (size_t i = 0; i < n; i++)                                                         \
            out[i] = (float)src[i];                                                            \
    } while (0)

void dump_convert(int dtype, const void *raw, size_t n, float *out)
{
    switch (dtype) {
    case DUMP_F32: memmove(out, raw, n * sizeof *out); break;
    case DUMP_F64: WIDEN(double); break;
    case DUMP_F16: convert_half(raw, n, out); break;
    case DUMP_BF16: convert_bf16(raw, n, out); break;
    case DUMP_I8: WIDEN(int8_t); break;
    case DUMP_U8: WIDEN(uint8_t); break;
    case DUMP_I16: WIDEN(int16_t); break;
    case DUMP_U16: WIDEN(uint16_t); break;
    case DUMP_I32: WIDEN(int32_t); break;
    case DUMP_U32: WIDEN(uint32_t); break;
    case DUMP_I64: WIDEN(int64_t); break;
    case DUMP_U64: WIDEN(uint64_t); break;
    default: memset(out, 0, n * sizeof *out); break;
    }
}
