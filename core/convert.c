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

static void convert_half_table(const uint16_t *in, size_t n, float *out)
{
    pthread_once(&half_once, half_table_init);
    for (size_t i = 0; i < n; i++)
        out[i] = half_table[in[i]];
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* x86's F16C converts 8 halves per instruction, ~10x the table (the bench's float16 run was
 * 3.7x its raw read). Same values; a signaling NaN comes out quiet, still a NaN. */
__attribute__((target("avx,f16c"))) static void convert_half_f16c(const uint16_t *in, size_t n,
                                                                   float *out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    convert_half_table(in + i, n - i, out + i);
}

static int have_f16c;
static pthread_once_t f16c_once = PTHREAD_ONCE_INIT;

static void f16c_probe(void)
{
    __builtin_cpu_init();
    have_f16c = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}

static void convert_half(const uint16_t *in, size_t n, float *out)
{
    pthread_once(&f16c_once, f16c_probe);
    if (have_f16c)
        convert_half_f16c(in, n, out);
    else
        convert_half_table(in, n, out);
}
#else
static void convert_half(const uint16_t *in, size_t n, float *out)
{
    convert_half_table(in, n, out);
}
#endif

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
