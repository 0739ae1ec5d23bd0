/* test_dump.c - the dump reader: types, conversion, listing, attributes, slabs, bad inputs */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dump.h"
#include "h5attr.h"
#include "fixtures.h"
#include "packed.h"

static char *dir;

static void setup(void)
{
    dir = fx_tmpdir();
    cr_assert_not_null(dir);
}

static void teardown(void)
{
    fx_rmtree(dir);
    free(dir);
}

TestSuite(convert);
TestSuite(dump, .init = setup, .fini = teardown);
TestSuite(bad, .init = setup, .fini = teardown);
TestSuite(guard, .init = setup, .fini = teardown);

/* ---- references written differently from core/convert.c ------------------------------- */

/* IEEE half by its definition: (1024 + m) * 2^(e - 25), subnormals m * 2^-24. */
static float half_ref(uint16_t h)
{
    int exp = (h >> 10) & 31, mant = h & 1023;
    double mag = exp == 31 ? (mant ? NAN : INFINITY)
               : exp == 0  ? ldexp(mant, -24)
                           : ldexp(1024 + mant, exp - 25);
    return (float)((h & 0x8000) ? -mag : mag);
}

/* bfloat16 by its definition: 8-bit exponent (bias 127), 7-bit mantissa. */
static float bf16_ref(uint16_t b)
{
    int exp = (b >> 7) & 255, mant = b & 127;
    double mag = exp == 255 ? (mant ? NAN : INFINITY)
               : exp == 0   ? ldexp(mant, -133)
                            : ldexp(128 + mant, exp - 134);
    return (float)((b & 0x8000) ? -mag : mag);
}

/* Equal values, NaN equal to NaN, and -0 distinct from +0. */
static int same_float(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return a == b && !signbit(a) == !signbit(b);
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- every stored type, with values worked out by hand -------------------------------- */

static const int8_t i8v[6] = {-128, -1, 0, 1, 100, 127};
static const uint8_t u8v[6] = {0, 1, 100, 128, 200, 255};
static const int16_t i16v[6] = {-32768, -1, 0, 1, 12345, 32767};
static const uint16_t u16v[6] = {0, 1, 12345, 32768, 40000, 65535};
static const int32_t i32v[6] = {INT32_MIN, -1, 0, 16777217, 16777219, INT32_MAX};
static const uint32_t u32v[6] = {0, 1, 16777217, 16777219, 4000000000u, UINT32_MAX};
static const int64_t i64v[6] = {INT64_MIN, -5000000000LL, -1, 0, 3, INT64_MAX};
static const uint64_t u64v[6] = {0, 1, 123, (1ull << 40) + 1, 1ull << 63, UINT64_MAX};
static const double f64v[6] = {0.1, -1e300, 1e-50, 1.0 + 0x1p-30, -0.0, NAN};

typedef struct typed_case {
    const char *name;
    int dtype;
    const void *data;
    size_t elem_size;
    float expect[6]; /* float32 by round-to-nearest-even, worked out by hand */
} typed_case;

static const typed_case typed[] = {
    {"int8", DUMP_I8, i8v, 1, {-128, -1, 0, 1, 100, 127}},
    {"uint8", DUMP_U8, u8v, 1, {0, 1, 100, 128, 200, 255}},
    {"int16", DUMP_I16, i16v, 2, {-32768, -1, 0, 1, 12345, 32767}},
    {"uint16", DUMP_U16, u16v, 2, {0, 1, 12345, 32768, 40000, 65535}},
    /* 2^24 + 1 is a tie that goes to 2^24 (even); 2^24 + 3 goes to 2^24 + 4 (even) */
    {"int32", DUMP_I32, i32v, 4, {-0x1p31f, -1, 0, 16777216.0f, 16777220.0f, 0x1p31f}},
    {"uint32", DUMP_U32, u32v, 4, {0, 1, 16777216.0f, 16777220.0f, 4000000000.0f, 0x1p32f}},
    {"int64", DUMP_I64, i64v, 8, {-0x1p63f, -5000000000.0f, -1, 0, 3, 0x1p63f}},
    {"uint64", DUMP_U64, u64v, 8, {0, 1, 123, 0x1p40f, 0x1p63f, 0x1p64f}},
    /* 0.1 rounds to 0x1.99999ap-4; -1e300 overflows; 1e-50 underflows; 1 + 2^-30 -> 1 */
    {"float64", DUMP_F64, f64v, 8, {0x1.99999ap-4f, -INFINITY, 0.0f, 1.0f, -0.0f, NAN}},
};
#define N_TYPED (sizeof typed / sizeof typed[0])

/* ---- conversion ----------------------------------------------------------------------- */

Test(convert, every_half_pattern_matches_the_definition)
{
    static uint16_t h[65536];
    static float out[65536];
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    dump_convert(DUMP_F16, h, 65536, out);
    for (uint32_t i = 0; i < 65536; i++) {
        float ref = half_ref((uint16_t)i);
        cr_assert(same_float(out[i], ref), "0x%04x: %a, expected %a", i, out[i], ref);
        cr_assert(same_float(dump_half_to_float((uint16_t)i), ref), "0x%04x alone", i);
    }
}

Test(convert, known_half_values)
{
    const uint16_t h[13] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x03ff, 0x0000,
                            0x8000, 0x7c00, 0xfc00, 0x3555, 0x2e66, 0x7e00};
    const float want[12] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 0x1p-14f, 1023 * 0x1p-24f, 0.0f,
                            -0.0f, INFINITY, -INFINITY, 0.333251953125f, 0.0999755859375f};
    float out[13];
    dump_convert(DUMP_F16, h, 13, out);
    for (int i = 0; i < 12; i++)
        cr_expect(same_float(out[i], want[i]), "0x%04x: %a, expected %a", h[i], out[i], want[i]);
    cr_expect(isnan(out[12]), "0x7e00 is NaN, got %a", out[12]);
}

Test(convert, every_bfloat16_pattern_matches_the_definition)
{
    static uint16_t b[65536];
    static float out[65536];
    for (uint32_t i = 0; i < 65536; i++)
        b[i] = (uint16_t)i;
    dump_convert(DUMP_BF16, b, 65536, out);
    for (uint32_t i = 0; i < 65536; i++) {
        float ref = bf16_ref((uint16_t)i);
        cr_assert(same_float(out[i], ref), "0x%04x: %a, expected %a", i, out[i], ref);
        cr_assert(same_float(dump_bf16_to_float((uint16_t)i), ref), "0x%04x alone", i);
        if (!isnan(ref)) /* the float32 whose upper half these bits are */
            cr_assert_eq(bits_of(out[i]), i << 16, "0x%04x", i);
    }
}

Test(convert, known_bfloat16_values)
{
    const uint16_t b[9] = {0x3f80, 0xc000, 0x7f80, 0xff80, 0x0001, 0x8000, 0x4780, 0x3dcd, 0x7fc0};
    const float want[8] = {1.0f, -2.0f, INFINITY, -INFINITY, 0x1p-133f, -0.0f, 65536.0f,
                           0.10009765625f};
    float out[9];
    dump_convert(DUMP_BF16, b, 9, out);
    for (int i = 0; i < 8; i++)
        cr_expect(same_float(out[i], want[i]), "0x%04x: %a, expected %a", b[i], out[i], want[i]);
    cr_expect(isnan(out[8]));
}

Test(convert, integers_and_doubles_widen_with_rounding_to_nearest_even)
{
    for (size_t k = 0; k < N_TYPED; k++) {
        float out[7];
        out[6] = 12345.0f; /* n is respected: nothing written past it */
        dump_convert(typed[k].dtype, typed[k].data, 6, out);
        for (int i = 0; i < 6; i++)
            cr_expect(same_float(out[i], typed[k].expect[i]), "%s[%d]: %a, expected %a",
                      typed[k].name, i, out[i], typed[k].expect[i]);
        cr_expect_eq(out[6], 12345.0f, "%s wrote past n", typed[k].name);
    }
}

Test(convert, float32_is_copied_bit_for_bit)
{
    const uint32_t bits[6] = {0x3f800000, 0x7fc12345, 0x00000001, 0x80000000, 0xff800000,
                              0x7f7fffff};
    float in[6], out[6];
    for (int i = 0; i < 6; i++)
        in[i] = float_of(bits[i]);
    dump_convert(DUMP_F32, in, 6, out);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(bits_of(out[i]), bits[i], "%d: 0x%08x", i, bits_of(out[i]));
}

Test(convert, element_sizes_and_names)
{
    const struct { int dtype; size_t size; const char *name; } want[] = {
        {DUMP_F32, 4, "float32"}, {DUMP_F64, 8, "float64"}, {DUMP_F16, 2, "float16"},
        {DUMP_BF16, 2, "bfloat16"}, {DUMP_I8, 1, "int8"}, {DUMP_U8, 1, "uint8"},
        {DUMP_I16, 2, "int16"}, {DUMP_U16, 2, "uint16"}, {DUMP_I32, 4, "int32"},
        {DUMP_U32, 4, "uint32"}, {DUMP_I64, 8, "int64"}, {DUMP_U64, 8, "uint64"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_expect_eq(dump_elem_size(want[i].dtype), want[i].size, "%s", want[i].name);
        cr_expect_str_eq(dump_dtype_name(want[i].dtype), want[i].name);
    }
}

/* dump_convert is documented thread-safe: several threads meeting float16 for the first time
 * in a fresh process (each test is its own process) must all get the right values. */
static uint16_t all_halves[65536];
static float thread_out[4][65536];

static void *convert_all_halves(void *slot)
{
    dump_convert(DUMP_F16, all_halves, 65536, slot);
    return NULL;
}

Test(convert, first_use_from_several_threads)
{
    for (uint32_t i = 0; i < 65536; i++)
        all_halves[i] = (uint16_t)i;
    pthread_t th[4];
    for (int k = 0; k < 4; k++)
        cr_assert_eq(pthread_create(&th[k], NULL, convert_all_halves, thread_out[k]), 0);
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < 4; k++)
        for (uint32_t i = 0; i < 65536; i++)
            cr_assert(same_float(thread_out[k][i], half_ref((uint16_t)i)), "thread %d 0x%04x",
                      k, i);
}

/* ---- helpers for reading back ---------------------------------------------------------- */

static dump *open_ok(const char *path)
{
    dump *d = NULL;
    qerror e = {0};
    cr_assert_eq(dump_open(path, &d, &e), 0, "%s", e.msg);
    cr_assert_not_null(d);
    return d;
}

static const dump_tensor *tensor(const dump *d, const char *name)
{
    long i = dump_find(d, name);
    cr_assert_geq(i, 0, "no tensor %s", name);
    return dump_get(d, (size_t)i);
}

/* Rows [row0, row0 + n) of tensor `name` in the stored type (malloc'd). */
static void *read_raw(dump *d, const char *name, uint64_t row0, uint64_t n)
{
    long i = dump_find(d, name);
    cr_assert_geq(i, 0, "no tensor %s", name);
    const dump_tensor *t = dump_get(d, (size_t)i);
    void *raw = malloc((size_t)(n * t->row_size) * t->elem_size);
    qerror e = {0};
    cr_assert_eq(dump_read_raw(d, (size_t)i, row0, n, raw, &e), 0, "%s", e.msg);
    return raw;
}

/* The same rows as float32 into out. */
static void read_rows(dump *d, const char *name, uint64_t row0, uint64_t n, float *out)
{
    const dump_tensor *t = tensor(d, name);
    void *raw = read_raw(d, name, row0, n);
    dump_convert(t->dtype, raw, (size_t)(n * t->row_size), out);
    free(raw);
}

static char *write_ok(const char *file, const fx_dataset *ds, size_t n, int at_root)
{
    char *path = fx_path(dir, file);
    cr_assert_eq(fx_write_dump(path, ds, n, at_root), 0, "fixture %s", file);
    return path;
}

/* A float32 dataset of shape dims at `where` (an absolute path), chunked as `chunk` or
 * contiguous when chunk is NULL, written with the raw HDF5 API. */
static void add_raw_float(const char *path, const char *where, int rank, const hsize_t *dims,
                          const hsize_t *chunk, const float *data)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    if (chunk)
        H5Pset_chunk(dcpl, rank, chunk);
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(f, where, H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "fixture %s", where);
    if (data)
        cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    H5Fclose(f);
}

/* A scalar string dataset at `where`, written with the raw HDF5 API. */
static void add_string(const char *path, const char *where)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, 4);
    hid_t s = H5Dcreate2(f, where, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(s, 0, "fixture %s", where);
    H5Dwrite(s, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, "abc");
    H5Dclose(s);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
}

/* A /layers/<name> group (type, input, groups, weight of shape wdims). */
static void add_layer(const char *path, const char *name, const char *type, const char *input,
                      int rank, const hsize_t *wdims, long long groups)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    char gpath[128];
    snprintf(gpath, sizeof gpath, "/layers/%s", name);
    hid_t g = H5Gcreate2(f, gpath, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    hid_t st = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(st, H5T_VARIABLE);
    const char *vals[2] = {type, input}, *names[2] = {"type", "input"};
    for (int i = 0; i < 2; i++) {
        hid_t a = H5Acreate2(g, names[i], st, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, st, &vals[i]);
        H5Aclose(a);
    }
    hid_t a = H5Acreate2(g, "groups", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &groups);
    H5Aclose(a);
    hid_t ws = H5Screate_simple(rank, wdims, NULL);
    H5Dclose(H5Dcreate2(g, "weight", H5T_IEEE_F32LE, ws, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(ws);
    H5Sclose(sp);
    H5Tclose(st);
    H5Gclose(g);
    H5Pclose(lcpl);
    H5Fclose(f);
}

/* ---- reading back what a fixture wrote ------------------------------------------------ */

Test(dump, every_integer_type_and_float64_read_back_unconverted)
{
    fx_dataset ds[N_TYPED];
    for (size_t k = 0; k < N_TYPED; k++)
        ds[k] = (fx_dataset){.name = typed[k].name, .dtype = typed[k].dtype, .rank = 2,
                             .dims = {3, 2}, .data = typed[k].data, .channel_axis = FX_NO_ATTR};
    char *path = write_ok("ints.h5", ds, N_TYPED, 0);
    dump *d = open_ok(path);
    cr_assert_eq(dump_count(d), N_TYPED);
    for (size_t k = 0; k < N_TYPED; k++) {
        const dump_tensor *t = tensor(d, typed[k].name);
        cr_expect_eq(t->dtype, typed[k].dtype, "%s: dtype %d", typed[k].name, t->dtype);
        cr_expect_eq(t->elem_size, typed[k].elem_size, "%s", typed[k].name);
        void *raw = read_raw(d, typed[k].name, 0, 3);
        cr_expect_eq(memcmp(raw, typed[k].data, 6 * typed[k].elem_size), 0,
                     "%s: raw values differ from those written", typed[k].name);
        free(raw);
        float out[6];
        read_rows(d, typed[k].name, 0, 3, out);
        for (int i = 0; i < 6; i++)
            cr_expect(same_float(out[i], typed[k].expect[i]), "%s[%d]: %a, expected %a",
                      typed[k].name, i, out[i], typed[k].expect[i]);
    }
    dump_close(d);
    free(path);
}

Test(dump, float32_reads_back_exactly)
{
    const uint32_t bits[6] = {0x3dcccccd, 0x7fc12345, 0x00000001, 0x80000000, 0xff800000,
                              0x7f7fffff};
    float v[6];
    for (int i = 0; i < 6; i++)
        v[i] = float_of(bits[i]);
    fx_dataset ds = {.name = "f", .dtype = DUMP_F32, .rank = 2, .dims = {2, 3}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *path = write_ok("f32.h5", &ds, 1, 0);
    dump *d = open_ok(path);
    cr_expect_eq(tensor(d, "f")->dtype, DUMP_F32);
    cr_expect_eq(tensor(d, "f")->elem_size, 4u);
    float out[6];
    read_rows(d, "f", 0, 2, out);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(bits_of(out[i]), bits[i], "%d: 0x%08x", i, bits_of(out[i]));
    dump_close(d);
    free(path);
}

/* ---- gzip'd chunks read as stored (packed.h) ------------------------------------------ */

enum { P_DEFLATE, P_SHUFFLE_DEFLATE, P_DEFLATE_SHUFFLE, P_FLETCHER_DEFLATE };

/* A 2-D chunked dataset at `where` with the given pipeline, written with the raw HDF5 API
 * (data NULL: no chunk is written). */
static void add_filtered_nd(const char *path, const char *where, hid_t ftype, hid_t mtype,
                            int rank, const hsize_t *dims, const hsize_t *chunk, int pipeline,
                            const void *data)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    if (pipeline == P_SHUFFLE_DEFLATE)
        H5Pset_shuffle(dcpl);
    if (pipeline == P_FLETCHER_DEFLATE)
        H5Pset_fletcher32(dcpl);
    H5Pset_deflate(dcpl, 4);
    if (pipeline == P_DEFLATE_SHUFFLE)
        H5Pset_shuffle(dcpl);
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(f, where, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "fixture %s", where);
    if (data)
        cr_assert_geq(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Fclose(f);
}

static void add_filtered(const char *path, const char *where, hid_t ftype, hid_t mtype,
                         const hsize_t dims[2], const hsize_t chunk[2], int pipeline,
                         const void *data)
{
    add_filtered_nd(path, where, ftype, mtype, 2, dims, chunk, pipeline, data);
}

/* Replaces the chunk at `row` with its values stored as they are, every filter skipped
 * (what HDF5 does when deflate cannot shrink a chunk). */
static void store_chunk_unfiltered(const char *path, const char *where, hsize_t row,
                                   const void *bytes, size_t n)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, where, H5P_DEFAULT);
    hsize_t offset[2] = {row, 0};
    cr_assert_geq(H5Dwrite_chunk(ds, H5P_DEFAULT, 0x3, offset, n, bytes), 0);
    H5Dclose(ds);
    H5Fclose(f);
}

/* Rows [row0, row0 + n) of tensor `name` read packed and inflated as a worker would. */
static void read_packed_rows(dump *d, const char *name, uint64_t row0, uint64_t n, void *out)
{
    long i = dump_find(d, name);
    cr_assert_geq(i, 0, "no tensor %s", name);
    const packed_form *form = dump_packed_form(d, (size_t)i);
    cr_assert_not_null(form, "%s is not read packed", name);
    static unsigned char buf[1 << 16], scratch[1 << 16];
    qerror e = {0};
    cr_assert_eq(dump_read_packed(d, (size_t)i, row0, n, buf, sizeof buf, &e), 0, "%s", e.msg);
    char why[256] = "";
    cr_assert_eq(packed_unpack(form, buf, out, scratch, why, sizeof why), 0, "%s", why);
}

Test(dump, gzip_chunks_read_as_stored_inflate_to_the_values)
{
    enum { ROWS = 10, COLS = 6 };
    enum { ROW4 = 3 * 5 * 2 };
    float v[ROWS * COLS];
    static float w[ROWS * ROW4];
    int8_t small[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        v[i] = 0.5f * (float)i - 7.0f, small[i] = (int8_t)(i * 37);
    for (int i = 0; i < ROWS * ROW4; i++)
        w[i] = (float)i * 0.25f + 1.0f;
    fx_dataset plain = {.name = "plain", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS},
                        .data = v, .channel_axis = FX_NO_ATTR};
    char *path = write_ok("packed.h5", &plain, 1, 0);
    hsize_t dims[2] = {ROWS, COLS}, chunk[2] = {3, COLS};
    add_filtered(path, "/activations/sd", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, chunk,
                 P_SHUFFLE_DEFLATE, v);
    store_chunk_unfiltered(path, "/activations/sd", 3, v + 3 * COLS, 3 * COLS * sizeof(float));
    add_filtered(path, "/activations/d", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, chunk,
                 P_DEFLATE, v);
    add_filtered(path, "/activations/i8", H5T_STD_I8LE, H5T_NATIVE_INT8, dims, chunk,
                 P_SHUFFLE_DEFLATE, small);
    /* chunks that cut rows, edge chunks on every axis (as h5py's automatic chunking makes) */
    hsize_t cut2[2] = {3, 4}, dims4[4] = {ROWS, 3, 5, 2}, cut4[4] = {4, 2, 3, 2};
    add_filtered(path, "/activations/cut2", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, cut2,
                 P_SHUFFLE_DEFLATE, v);
    add_filtered_nd(path, "/activations/cut4", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, dims4, cut4,
                    P_DEFLATE, w);
    dump *d = open_ok(path);
    const uint64_t spans[][2] = {{0, ROWS}, {1, 5}, {4, 6}, {9, 1}, {3, 3}};
    for (size_t s = 0; s < sizeof spans / sizeof *spans; s++) {
        uint64_t row0 = spans[s][0], n = spans[s][1];
        float got[ROWS * COLS];
        int8_t got8[ROWS * COLS];
        read_packed_rows(d, "sd", row0, n, got);
        cr_expect(memcmp(got, v + row0 * COLS, n * COLS * sizeof *got) == 0, "sd rows %llu+%llu",
                  (unsigned long long)row0, (unsigned long long)n);
        read_packed_rows(d, "d", row0, n, got);
        cr_expect(memcmp(got, v + row0 * COLS, n * COLS * sizeof *got) == 0, "d rows %llu+%llu",
                  (unsigned long long)row0, (unsigned long long)n);
        read_packed_rows(d, "i8", row0, n, got8);
        cr_expect(memcmp(got8, small + row0 * COLS, n * COLS) == 0, "i8 rows %llu+%llu",
                  (unsigned long long)row0, (unsigned long long)n);
        read_packed_rows(d, "cut2", row0, n, got);
        cr_expect(memcmp(got, v + row0 * COLS, n * COLS * sizeof *got) == 0, "cut2 rows %llu+%llu",
                  (unsigned long long)row0, (unsigned long long)n);
        static float got4[ROWS * ROW4];
        memset(got4, 0xff, sizeof got4);
        read_packed_rows(d, "cut4", row0, n, got4);
        cr_expect(memcmp(got4, w + row0 * ROW4, n * ROW4 * sizeof *got4) == 0,
                  "cut4 rows %llu+%llu", (unsigned long long)row0, (unsigned long long)n);
    }
    cr_expect_null(dump_packed_form(d, (size_t)dump_find(d, "plain")));
    dump_close(d);
    free(path);
}

/* What HDF5 must read itself: pipelines qcal does not know, another byte order; and a chunk
 * never written (its fill value comes from HDF5). */
Test(dump, gzip_chunks_qcal_cannot_inflate_go_through_hdf5)
{
    enum { ROWS = 6, COLS = 4 };
    float v[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        v[i] = (float)i - 3.25f;
    fx_dataset plain = {.name = "plain", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS},
                        .data = v, .channel_axis = FX_NO_ATTR};
    char *path = write_ok("unpacked.h5", &plain, 1, 0);
    hsize_t dims[2] = {ROWS, COLS}, rows[2] = {2, COLS};
    add_filtered(path, "/activations/fletcher", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, rows,
                 P_FLETCHER_DEFLATE, v);
    add_filtered(path, "/activations/order", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, rows,
                 P_DEFLATE_SHUFFLE, v);
    add_filtered(path, "/activations/big", H5T_IEEE_F32BE, H5T_NATIVE_FLOAT, dims, rows,
                 P_DEFLATE, v);
    dump *d = open_ok(path);
    const char *const hdf5_reads[] = {"fletcher", "order", "big"};
    for (int k = 0; k < 3; k++) {
        cr_expect_null(dump_packed_form(d, (size_t)dump_find(d, hdf5_reads[k])), "%s",
                       hdf5_reads[k]);
        float got[ROWS * COLS];
        read_rows(d, hdf5_reads[k], 0, ROWS, got);
        cr_expect(memcmp(got, v, sizeof v) == 0, "%s", hdf5_reads[k]);
    }
    dump_close(d);
    free(path);
}

/* A stored chunk zlib cannot inflate is an error naming its row, not garbage values. */
Test(dump, corrupt_gzip_chunk_names_its_row)
{
    enum { ROWS = 6, COLS = 4 };
    float v[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        v[i] = (float)(i * i) * 0.125f;
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS},
                     .chunk_rows = 2, .gzip = 5, .data = v, .channel_axis = FX_NO_ATTR};
    char *path = write_ok("corrupt.h5", &ds, 1, 0);
    dump *d = open_ok(path);
    const packed_form *form = dump_packed_form(d, 0);
    cr_assert_not_null(form);
    static unsigned char buf[1 << 12], scratch[1 << 12];
    qerror e = {0};
    cr_assert_eq(dump_read_packed(d, 0, 0, ROWS, buf, sizeof buf, &e), 0, "%s", e.msg);
    const packed_chunk *chunks = (const packed_chunk *)((const packed_slab *)buf + 1);
    unsigned char *third = buf + packed_head_bytes(3) + chunks[0].bytes + chunks[1].bytes;
    for (uint64_t k = 2; k < chunks[2].bytes; k++) /* past zlib's two-byte header */
        third[k] ^= 0x5a;
    float out[ROWS * COLS];
    char why[256] = "";
    cr_expect_eq(packed_unpack(form, buf, out, scratch, why, sizeof why), -1);
    cr_expect(strstr(why, "row 4"), "%s", why);
    dump_close(d);
    free(path);
}

/* The dump holds one dataset open at a time (HDF5 keeps ~46 KiB per open dataset), and
 * switching back and forth between tensors, with a gzip one among them, reads every value. */
Test(dump, one_dataset_open_while_reading_tensors_in_turn)
{
    enum { ROWS = 6, COLS = 5, N = 3 };
    static float v[N][ROWS * COLS];
    fx_dataset ds[N];
    const char *const names[N] = {"a", "b/c", "d"};
    for (int k = 0; k < N; k++) {
        for (int i = 0; i < ROWS * COLS; i++)
            v[k][i] = (float)(100 * k + i);
        ds[k] = (fx_dataset){.name = names[k], .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS},
                             .data = v[k], .channel_axis = FX_NO_ATTR, .chunk_rows = 2,
                             .gzip = k == 1 ? 4 : 0};
    }
    char *path = write_ok("turns.h5", ds, N, 0);
    size_t open_before = (size_t)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_DATASET);
    dump *d = open_ok(path);
    cr_expect_eq((size_t)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_DATASET), open_before);
    const int order[] = {0, 1, 0, 2, 1, 1, 2, 0};
    for (size_t n = 0; n < sizeof order / sizeof *order; n++) {
        int k = order[n];
        uint64_t row0 = (uint64_t)(n % ROWS);
        float out[ROWS * COLS];
        read_rows(d, names[k], row0, ROWS - row0, out);
        for (uint64_t i = 0; i < (ROWS - row0) * COLS; i++)
            cr_expect_eq(out[i], (float)(100 * k) + (float)(row0 * COLS + i), "%s[%llu]",
                         names[k], (unsigned long long)i);
        cr_expect_eq((size_t)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_DATASET), open_before + 1);
    }
    dump_close(d);
    cr_expect_eq((size_t)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_DATASET), open_before);
    free(path);
}

/* Floats whose float16 and bfloat16 roundings are worked out by hand:
 * 0.1 = 1.6 * 2^-4: half keeps 614/1024 -> 0.0999755859375, bfloat16 0x3dcd -> 0.10009765625;
 * 65504 is the largest half; in bfloat16 it rounds up to 65536. */
static const float known16[8] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 0x1p-14f, 0.1f, -0.0f,
                                 INFINITY};
static const float as_half[8] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 0x1p-14f, 0.0999755859375f,
                                 -0.0f, INFINITY};
static const float as_bf16[8] = {1.0f, -2.0f, 65536.0f, 0x1p-24f, 0x1p-14f, 0.10009765625f,
                                 -0.0f, INFINITY};

Test(dump, float16_and_both_bfloat16_forms_read_back)
{
    uint16_t half[8], bf[8];
    for (int i = 0; i < 8; i++) {
        half[i] = fx_float_to_half(known16[i]);
        bf[i] = fx_float_to_bf16(known16[i]);
    }
    fx_dataset ds[] = {
        {.name = "h", .dtype = DUMP_F16, .rank = 2, .dims = {4, 2}, .data = half,
         .channel_axis = FX_NO_ATTR},
        {.name = "bf_float", .dtype = DUMP_BF16, .rank = 2, .dims = {4, 2}, .data = bf,
         .channel_axis = FX_NO_ATTR},
        {.name = "bf_uint16", .dtype = DUMP_BF16, .rank = 2, .dims = {4, 2}, .data = bf,
         .channel_axis = FX_NO_ATTR, .bf16_as_uint16 = 1},
    };
    char *path = write_ok("half.h5", ds, 3, 0);
    dump *d = open_ok(path);
    cr_expect_eq(tensor(d, "h")->dtype, DUMP_F16);
    cr_expect_eq(tensor(d, "bf_float")->dtype, DUMP_BF16);
    cr_expect_eq(tensor(d, "bf_uint16")->dtype, DUMP_BF16, "uint16 + dtype=\"bfloat16\"");
    const char *names[3] = {"h", "bf_float", "bf_uint16"};
    const float *want[3] = {as_half, as_bf16, as_bf16};
    for (int k = 0; k < 3; k++) {
        cr_expect_eq(tensor(d, names[k])->elem_size, 2u, "%s", names[k]);
        uint16_t *raw = read_raw(d, names[k], 0, 4);
        cr_expect_eq(memcmp(raw, k ? bf : half, sizeof half), 0, "%s: raw bits", names[k]);
        free(raw);
        float out[8];
        read_rows(d, names[k], 0, 4, out);
        for (int i = 0; i < 8; i++)
            cr_expect(same_float(out[i], want[k][i]), "%s[%d]: %a, expected %a", names[k], i,
                      out[i], want[k][i]);
    }
    dump_close(d);
    free(path);
}

/* numpy's ">f4", ">i4" and ">f2": the reader hands back native byte order. */
static void add_big_endian(hid_t f, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
    const hsize_t dims[2] = {2, 2};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "fixture %s", name);
    cr_assert_geq(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(ds);
    H5Sclose(sp);
}

static hid_t half_type(H5T_order_t order)
{
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    H5Tset_order(t, order);
    return t;
}

Test(dump, big_endian_datasets_read_in_native_order)
{
    const float f[4] = {1.5f, -2.25f, 1e-40f, 3e38f};
    const int32_t i[4] = {-70000, 1, 0, 2147483647};
    const uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7bff}; /* 1, -2, 2^-24, 65504 */
    char *path = fx_path(dir, "be.h5");
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(file, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    add_big_endian(g, "f", H5T_IEEE_F32BE, H5T_NATIVE_FLOAT, f);
    add_big_endian(g, "i", H5T_STD_I32BE, H5T_NATIVE_INT32, i);
    hid_t hbe = half_type(H5T_ORDER_BE), hle = half_type(H5T_ORDER_LE);
    add_big_endian(g, "h", hbe, hle, h);
    H5Tclose(hbe);
    H5Tclose(hle);
    H5Gclose(g);
    H5Fclose(file);
    dump *d = open_ok(path);
    cr_expect_eq(tensor(d, "f")->dtype, DUMP_F32);
    cr_expect_eq(tensor(d, "i")->dtype, DUMP_I32);
    cr_expect_eq(tensor(d, "h")->dtype, DUMP_F16);
    void *raw = read_raw(d, "f", 0, 2);
    cr_expect_eq(memcmp(raw, f, sizeof f), 0, "float32 big-endian");
    free(raw);
    raw = read_raw(d, "i", 0, 2);
    cr_expect_eq(memcmp(raw, i, sizeof i), 0, "int32 big-endian");
    free(raw);
    raw = read_raw(d, "h", 0, 2);
    cr_expect_eq(memcmp(raw, h, sizeof h), 0, "float16 big-endian");
    free(raw);
    float out[4];
    read_rows(d, "h", 0, 2, out);
    cr_expect(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f && out[3] == 65504.0f);
    dump_close(d);
    free(path);
}

/* Sample r, element j of the [37, 2, 5] test tensors: exact in float32 and in float16. */
static float cell(int r, int j)
{
    return (float)(r * 10 + j) * 0.5f - 3.0f;
}

enum { ROWS = 37, ROW = 10 };

static void expect_rows(dump *d, const char *name, int row0, int n)
{
    float out[ROWS * ROW];
    read_rows(d, name, (uint64_t)row0, (uint64_t)n, out);
    for (int r = 0; r < n; r++)
        for (int j = 0; j < ROW; j++)
            cr_expect_eq(out[r * ROW + j], cell(row0 + r, j), "%s sample %d element %d: %g",
                         name, row0 + r, j, out[r * ROW + j]);
}

Test(dump, rows_from_chunked_contiguous_and_gzip_shuffle_datasets)
{
    static float v[ROWS * ROW];
    static uint16_t h[ROWS * ROW];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < ROW; j++) {
            v[r * ROW + j] = cell(r, j);
            h[r * ROW + j] = fx_float_to_half(cell(r, j));
        }
    fx_dataset ds[] = {
        {.name = "chunked", .dtype = DUMP_F32, .rank = 3, .dims = {ROWS, 2, 5}, .chunk_rows = 4,
         .data = v, .channel_axis = FX_NO_ATTR},
        {.name = "contig", .dtype = DUMP_F32, .rank = 3, .dims = {ROWS, 2, 5}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "gz", .dtype = DUMP_F32, .rank = 3, .dims = {ROWS, 2, 5}, .chunk_rows = 3,
         .data = v, .channel_axis = FX_NO_ATTR, .gzip = 4, .shuffle = 1},
        {.name = "gz16", .dtype = DUMP_F16, .rank = 3, .dims = {ROWS, 2, 5}, .chunk_rows = 5,
         .data = h, .channel_axis = FX_NO_ATTR, .gzip = 6, .shuffle = 1},
    };
    char *path = write_ok("rows.h5", ds, 4, 0);
    /* chunks that also split the other axes */
    const hsize_t dims[3] = {ROWS, 2, 5}, chunk[3] = {4, 1, 2};
    add_raw_float(path, "/activations/split", 3, dims, chunk, v);
    dump *d = open_ok(path);
    const char *names[5] = {"chunked", "contig", "gz", "gz16", "split"};
    for (int k = 0; k < 5; k++) {
        expect_rows(d, names[k], 13, 11); /* starts and ends inside chunks */
        expect_rows(d, names[k], 33, 4);  /* the last, partial chunk */
        expect_rows(d, names[k], 0, 1);
        expect_rows(d, names[k], 0, ROWS);
    }
    cr_expect_eq(tensor(d, "chunked")->chunk_rows, 4u);
    cr_expect_eq(tensor(d, "gz")->chunk_rows, 3u);
    cr_expect_eq(tensor(d, "gz16")->chunk_rows, 5u);
    cr_expect_eq(tensor(d, "split")->chunk_rows, 4u);
    cr_expect_eq(tensor(d, "contig")->chunk_rows, 0u, "contiguous: not chunked");
    dump_close(d);
    free(path);
}

Test(dump, slab_rows_are_whole_chunks_capped_at_the_sample_count)
{
    static float v[ROWS * 5];
    static uint16_t h[ROWS * 5];
    fx_dataset ds[] = {
        {.name = "chunked", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, 5}, .chunk_rows = 4,
         .data = v, .channel_axis = FX_NO_ATTR},
        {.name = "contig", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, 5}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "half", .dtype = DUMP_F16, .rank = 2, .dims = {ROWS, 5}, .chunk_rows = 4,
         .data = h, .channel_axis = FX_NO_ATTR},
    };
    char *path = write_ok("slabs.h5", ds, 3, 0);
    dump *d = open_ok(path);
    size_t c = (size_t)dump_find(d, "chunked"), n = (size_t)dump_find(d, "contig");
    size_t h16 = (size_t)dump_find(d, "half");
    const size_t row = 5 * sizeof(float); /* float32 output bytes per sample */
    cr_expect_eq(dump_slab_rows(d, c, 10 * row), 8u, "10 rows -> two whole chunks");
    cr_expect_eq(dump_slab_rows(d, c, 39 * row), 36u, "39 rows -> nine whole chunks");
    cr_expect_eq(dump_slab_rows(d, c, 5 * row), 4u);
    cr_expect_eq(dump_slab_rows(d, c, 3 * row), 4u, "never less than one chunk");
    cr_expect_eq(dump_slab_rows(d, c, 1), 4u, "never less than one chunk");
    cr_expect_eq(dump_slab_rows(d, c, 100 * row), ROWS, "capped at the samples there are");
    cr_expect_eq(dump_slab_rows(d, h16, 10 * row), 8u, "sized by float32 output, not storage");
    cr_expect_eq(dump_slab_rows(d, n, 10 * row), 10u);
    cr_expect_eq(dump_slab_rows(d, n, 10 * row + row - 1), 10u);
    cr_expect_eq(dump_slab_rows(d, n, 1), 1u, "at least one row");
    cr_expect_eq(dump_slab_rows(d, n, 100 * row), ROWS);
    dump_close(d);
    free(path);
}

Test(dump, rows_out_of_range_are_refused)
{
    static float v[ROWS * 5];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, 5},
                     .chunk_rows = 4, .data = v, .channel_axis = FX_NO_ATTR};
    char *path = write_ok("range.h5", &ds, 1, 0);
    dump *d = open_ok(path);
    const uint64_t bad[4][2] = {{30, 8}, {ROWS, 1}, {UINT64_MAX, 2}, {1, UINT64_MAX}};
    float buf[8 * 5];
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 8 * 5; i++)
            buf[i] = 777.0f;
        qerror e = {0};
        cr_expect_neq(dump_read_raw(d, 0, bad[k][0], bad[k][1], buf, &e), 0,
                      "rows [%llu, +%llu) accepted", (unsigned long long)bad[k][0],
                      (unsigned long long)bad[k][1]);
        cr_expect_eq(e.code, QERR_SOFTWARE, "case %d: code %d: %s", k, e.code, e.msg);
        cr_expect(strstr(e.msg, path) && strstr(e.msg, "'x'") && strstr(e.msg, "[0, 37)"),
                  "case %d: %s", k, e.msg);
        for (int i = 0; i < 8 * 5; i++)
            cr_assert_eq(buf[i], 777.0f, "case %d wrote into the buffer", k);
    }
    dump_close(d);
    free(path);
}

/* ---- listing and attributes ----------------------------------------------------------- */

Test(dump, listing_is_sorted_with_nested_names_and_attributes)
{
    static float v[2 * 3 * 2 * 2];
    fx_dataset ds[] = {
        {.name = "z.last", .dtype = DUMP_F32, .rank = 4, .dims = {2, 1, 2, 3}, .data = v,
         .channel_axis = -1, .op_type = "MatMul"},
        {.name = "block/conv.input", .dtype = DUMP_F32, .rank = 4, .dims = {2, 3, 2, 2},
         .chunk_rows = 1, .data = v, .channel_axis = FX_NO_ATTR, .op_type = "Conv",
         .orig_name = "/block/Conv_output_0"},
        {.name = "a.vec", .dtype = DUMP_F32, .rank = 1, .dims = {5}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "m.three", .dtype = DUMP_F32, .rank = 3, .dims = {2, 3, 4}, .data = v,
         .channel_axis = -2},
        {.name = "m.two", .dtype = DUMP_F32, .rank = 3, .dims = {2, 3, 4}, .data = v,
         .channel_axis = 2, .orig_name = "z.last"},
        {.name = "r8", .dtype = DUMP_F32, .rank = 8, .dims = {2, 1, 1, 3, 1, 1, 1, 2}, .data = v,
         .channel_axis = 7},
        {.name = "block/deeper/fc", .dtype = DUMP_F32, .rank = 2, .dims = {3, 4}, .data = v,
         .channel_axis = FX_NO_ATTR},
    };
    char *path = write_ok("list.h5", ds, 7, 0);
    dump *d = open_ok(path);
    cr_expect_str_eq(dump_path(d), path);
    cr_assert_eq(dump_count(d), 7u);
    const char *sorted[7] = {"a.vec", "block/conv.input", "block/deeper/fc", "m.three", "m.two",
                             "r8", "z.last"};
    for (size_t i = 0; i < 7; i++)
        cr_expect_str_eq(dump_get(d, i)->name, sorted[i], "position %zu", i);

    const dump_tensor *vec = tensor(d, "a.vec"), *conv = tensor(d, "block/conv.input");
    const dump_tensor *last = tensor(d, "z.last"), *fc = tensor(d, "block/deeper/fc");
    cr_expect_eq(vec->channel_axis, -1, "rank 1 has no channel axis");
    cr_expect_eq(conv->channel_axis, 1, "default on rank 4");
    cr_expect_eq(fc->channel_axis, 1, "default on rank 2");
    cr_expect_eq(last->channel_axis, 3, "-1 on rank 4 is axis 3");
    cr_expect_eq(tensor(d, "m.three")->channel_axis, 1, "-2 on rank 3 is axis 1");
    cr_expect_eq(tensor(d, "m.two")->channel_axis, 2);
    cr_expect_eq(tensor(d, "r8")->channel_axis, 7);

    cr_expect_str_eq(conv->orig_name, "/block/Conv_output_0");
    cr_expect_str_eq(vec->orig_name, "a.vec", "defaults to the name");
    cr_expect_str_eq(conv->op_type, "Conv");
    cr_expect_str_eq(last->op_type, "MatMul");
    cr_expect_null(vec->op_type);

    cr_expect_eq(conv->rank, 4);
    const uint64_t cdims[4] = {2, 3, 2, 2};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(conv->dims[i], cdims[i], "dims[%d]", i);
    cr_expect_eq(conv->row_size, 12u);
    cr_expect_eq(conv->elem_size, 4u);
    cr_expect_eq(conv->dtype, DUMP_F32);
    cr_expect_eq(conv->chunk_rows, 1u);
    cr_expect_eq(fc->chunk_rows, 0u);
    cr_expect_eq(vec->rank, 1);
    cr_expect_eq(vec->dims[0], 5u);
    cr_expect_eq(vec->row_size, 1u, "a rank-1 sample is one value");
    cr_expect_eq(tensor(d, "r8")->rank, 8);
    cr_expect_eq(tensor(d, "r8")->row_size, 6u);

    cr_expect_eq(dump_find(d, "block/conv.input"), 1);
    cr_expect_eq(dump_find(d, "/block/Conv_output_0"), 1, "found by its original name");
    cr_expect_eq(dump_find(d, "z.last"), 6, "a name wins over another tensor's orig_name");
    cr_expect_eq(dump_find(d, "conv.input"), -1, "names are full paths");
    cr_expect_eq(dump_find(d, "nope"), -1);
    dump_close(d);
    free(path);
}

Test(dump, only_activations_are_listed_when_the_group_exists)
{
    static float v[8];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *path = write_ok("strict.h5", &ds, 1, 0);
    const hsize_t dims[2] = {2, 4};
    add_raw_float(path, "/other", 2, dims, NULL, v);
    add_string(path, "/label");
    dump *d = open_ok(path);
    cr_assert_eq(dump_count(d), 1u, "/other and /label are outside /activations");
    cr_expect_str_eq(dump_get(d, 0)->name, "x");
    dump_close(d);
    free(path);
}

Test(dump, whole_file_mode_without_activations_group)
{
    static float v[8];
    fx_dataset ds[] = {
        {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "sub/y", .dtype = DUMP_I16, .rank = 2, .dims = {4, 2}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "weights/fc", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v,
         .channel_axis = FX_NO_ATTR},
    };
    char *path = write_ok("root.h5", ds, 3, 1);
    add_string(path, "/label");
    add_string(path, "/sub/note");
    const hsize_t w[2] = {3, 4};
    add_layer(path, "fc", "linear", "x", 2, w, 1);
    dump *d = open_ok(path);
    cr_assert_eq(dump_count(d), 2u, "x and sub/y; /weights, /layers and strings are skipped");
    cr_expect_str_eq(dump_get(d, 0)->name, "sub/y");
    cr_expect_str_eq(dump_get(d, 1)->name, "x");
    cr_expect_eq(dump_get(d, 0)->dtype, DUMP_I16);
    dump_close(d);
    free(path);
}

Test(dump, weights_view_adds_a_sample_axis)
{
    static float v[8];
    for (int i = 0; i < 8; i++)
        v[i] = (float)i - 2.5f;
    fx_dataset ds[] = {
        {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "weights/fc", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v,
         .channel_axis = FX_NO_ATTR},
    };
    char *path = write_ok("weights.h5", ds, 2, 1);
    dump *d = NULL;
    qerror e = {0};
    cr_assert_eq(dump_open_weights(path, &d, &e), 0, "%s", e.msg);
    cr_assert_eq(dump_count(d), 1u);
    const dump_tensor *t = dump_get(d, 0);
    cr_expect_str_eq(t->name, "weights/fc");
    cr_expect_str_eq(t->orig_name, "fc.weight");
    cr_expect_eq(t->rank, 3);
    cr_expect(t->dims[0] == 1 && t->dims[1] == 2 && t->dims[2] == 4);
    cr_expect_eq(t->row_size, 8u);
    cr_expect_eq(t->channel_axis, 1);
    float out[8];
    read_rows(d, "weights/fc", 0, 1, out);
    for (int i = 0; i < 8; i++)
        cr_expect_eq(out[i], (float)i - 2.5f);
    dump_close(d);
    free(path);
}

Test(dump, virtual_dump_lists_but_cannot_read)
{
    dump *d = NULL;
    qerror e = {0};
    cr_assert_eq(dump_new_virtual("stats.h5", &d, &e), 0, "%s", e.msg);
    char name[8] = "b";
    dump_tensor t = {.name = name, .rank = 2, .dims = {4, 3}, .channel_axis = 1,
                     .dtype = DUMP_F16, .row_size = 3, .op_type = "Relu"};
    cr_assert_eq(dump_add_virtual(d, &t, &e), 0, "%s", e.msg);
    strcpy(name, "a"); /* the dump keeps its own copy of "b" */
    t.op_type = NULL;
    t.orig_name = "orig/a";
    cr_assert_eq(dump_add_virtual(d, &t, &e), 0, "%s", e.msg);
    cr_expect_str_eq(dump_path(d), "stats.h5");
    cr_assert_eq(dump_count(d), 2u);
    cr_expect_str_eq(dump_get(d, 0)->name, "a", "sorted by name");
    cr_expect_str_eq(dump_get(d, 1)->name, "b");
    cr_expect_str_eq(dump_get(d, 1)->orig_name, "b", "defaults to the name");
    cr_expect_str_eq(dump_get(d, 1)->op_type, "Relu");
    cr_expect_str_eq(dump_get(d, 0)->orig_name, "orig/a");
    cr_expect_eq(dump_get(d, 1)->elem_size, 2u);
    cr_expect_eq(dump_get(d, 1)->dims[1], 3u);
    cr_expect_eq(dump_find(d, "orig/a"), 0);
    float buf[12];
    e = (qerror){0};
    cr_expect_neq(dump_read_raw(d, 0, 0, 1, buf, &e), 0);
    cr_expect_eq(e.code, QERR_DATA, "code %d", e.code);
    cr_expect(strstr(e.msg, "stats.h5") && strstr(e.msg, "'a'") && strstr(e.msg, "statistics"),
              "%s", e.msg);
    dump_close(d);
}

Test(dump, nan_only_and_inf_only_tensors_open)
{
    /* reading is fine; calibrating them is refused by the observers */
    static float nan_only[4] = {NAN, NAN, NAN, NAN};
    static float inf_only[4] = {INFINITY, -INFINITY, INFINITY, INFINITY};
    fx_dataset ds[2] = {
        {.name = "n", .dtype = DUMP_F32, .rank = 2, .dims = {2, 2}, .data = nan_only,
         .channel_axis = FX_NO_ATTR},
        {.name = "i", .dtype = DUMP_F32, .rank = 2, .dims = {2, 2}, .data = inf_only,
         .channel_axis = FX_NO_ATTR},
    };
    char *p = write_ok("nonfinite.h5", ds, 2, 0);
    dump *d = open_ok(p);
    float out[4];
    read_rows(d, "i", 0, 2, out);
    cr_expect(isinf(out[0]) && out[0] > 0 && isinf(out[1]) && out[1] < 0);
    read_rows(d, "n", 0, 2, out);
    cr_expect(isnan(out[0]) && isnan(out[3]));
    dump_close(d);
    free(p);
}

/* ---- bad inputs: one clear line each --------------------------------------------------- */

static void expect_refused(const char *path, int code, const char *const *needles)
{
    static char sentinel;
    dump *d = (dump *)(void *)&sentinel;
    qerror e = {0};
    cr_assert_neq(dump_open(path, &d, &e), 0, "accepted %s", path);
    cr_expect_null(d, "*out must be NULL on failure");
    cr_expect_eq(e.code, code, "code %d for: %s", e.code, e.msg);
    cr_expect(strstr(e.msg, path) != NULL, "no file name in: %s", e.msg);
    cr_expect(strchr(e.msg, '\n') == NULL, "more than one line: %s", e.msg);
    /* needles are looked for in the message without the path, which could contain them */
    char rest[QERROR_MSG_SIZE];
    const char *at = strstr(e.msg, path);
    size_t head = at ? (size_t)(at - e.msg) : strlen(e.msg);
    snprintf(rest, sizeof rest, "%.*s%s", (int)head, e.msg, at ? at + strlen(path) : "");
    for (; *needles; needles++)
        cr_expect(strstr(rest, *needles) != NULL, "'%s' missing in: %s", *needles, e.msg);
}

#define REFUSED(path, code, ...) \
    expect_refused(path, code, (const char *const[]){__VA_ARGS__, NULL})

/* Writes one dataset /activations/bad of `type` and shape dims (rank 0: scalar), unwritten. */
static char *raw_dump(const char *file, hid_t type, int rank, const hsize_t *dims, hid_t dcpl)
{
    char *path = fx_path(dir, file);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(g, "bad", type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(d, 0, "fixture %s", file);
    H5Dclose(d);
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
    return path;
}

Test(bad, missing_file)
{
    char *p = fx_path(dir, "none.h5");
    REFUSED(p, QERR_NOINPUT, "cannot open", "No such file");
    free(p);
    p = fx_path(dir, "folder.h5");
    cr_assert_eq(mkdir(p, 0700), 0);
    REFUSED(p, QERR_NOINPUT, "expected an HDF5 file, found a directory");
    free(p);
}

Test(bad, text_file_named_h5)
{
    char *p = fx_path(dir, "text.h5");
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs("this is not HDF5\n", f);
    fclose(f);
    REFUSED(p, QERR_DATA, "expected an HDF5 file", "signature");
    free(p);
}

Test(bad, truncated_file)
{
    static float v[64 * 64];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {64, 64}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *p = write_ok("cut.h5", &ds, 1, 0);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_gt(st.st_size, 64 * 64 * 4);
    cr_assert_eq(truncate(p, st.st_size / 2), 0);
    REFUSED(p, QERR_DATA, "cannot open as HDF5", "truncated");
    free(p);
}

/* Corrupted metadata: one clear line, never a crash (offsets 8 and 16 hit the superblock). */
Test(bad, corrupted_superblock)
{
    static float v[256];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {16, 16}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    const long offsets[2] = {8, 16};
    for (int k = 0; k < 2; k++) {
        char name[32];
        snprintf(name, sizeof name, "corrupt%d.h5", k);
        char *p = write_ok(name, &ds, 1, 0);
        FILE *f = fopen(p, "r+b");
        cr_assert_not_null(f);
        fseek(f, offsets[k], SEEK_SET);
        for (int i = 0; i < 16; i++)
            fputc(0xff, f);
        fclose(f);
        REFUSED(p, QERR_DATA, "cannot open as HDF5");
        dump *d = NULL;
        qerror e = {0};
        dump_open(p, &d, &e);
        cr_expect_null(strstr(e.msg, "writer still open"), "no lock hint for corruption: %s",
                       e.msg);
        free(p);
    }
}

Test(bad, weights_view_without_weights)
{
    static float v[8];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *p = write_ok("noweights.h5", &ds, 1, 0);
    dump *d = NULL;
    qerror e = {0};
    cr_assert_neq(dump_open_weights(p, &d, &e), 0);
    cr_expect_null(d);
    cr_expect_eq(e.code, QERR_DATA);
    cr_expect(strstr(e.msg, p) && strstr(e.msg, "expected a /weights group") &&
              strstr(e.msg, "found none"), "%s", e.msg);
    free(p);
}

Test(bad, string_dataset)
{
    const hsize_t dims[1] = {4};
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 8);
    char *p = raw_dump("str.h5", str, 1, dims, H5P_DEFAULT);
    H5Tclose(str);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected a numeric dataset", "found a string");
    free(p);
}

Test(bad, compound_and_reference_datasets)
{
    const hsize_t dims[1] = {4};
    hid_t cmp = H5Tcreate(H5T_COMPOUND, 8);
    H5Tinsert(cmp, "a", 0, H5T_NATIVE_FLOAT);
    H5Tinsert(cmp, "b", 4, H5T_NATIVE_FLOAT);
    char *p = raw_dump("cmp.h5", cmp, 1, dims, H5P_DEFAULT);
    H5Tclose(cmp);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected a numeric dataset", "found a compound");
    free(p);
    hid_t opaque = H5Tcreate(H5T_OPAQUE, 2); /* h5py's |V2, how ml_dtypes.bfloat16 lands */
    p = raw_dump("v2.h5", opaque, 1, dims, H5P_DEFAULT);
    H5Tclose(opaque);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "found an opaque type", "dtype=\"bfloat16\"");
    free(p);
    p = raw_dump("ref.h5", H5T_STD_REF_OBJ, 1, dims, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected a numeric dataset", "reference");
    free(p);
}

Test(bad, scalar_and_null_datasets)
{
    char *p = raw_dump("scalar.h5", H5T_NATIVE_FLOAT, 0, NULL, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected an array with a sample axis",
            "found a scalar");
    free(p);
    p = fx_path(dir, "null.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_NULL);
    H5Dclose(H5Dcreate2(g, "bad", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected a non-empty dataset", "null");
    free(p);
}

Test(bad, zero_length_dataset)
{
    const hsize_t empty[2] = {0, 4};
    char *p = raw_dump("empty.h5", H5T_NATIVE_FLOAT, 2, empty, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected a non-empty dataset", "axis 0 of length 0");
    free(p);
    const hsize_t inner[3] = {3, 0, 2};
    p = raw_dump("empty_inner.h5", H5T_NATIVE_FLOAT, 3, inner, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "non-empty", "axis 1 of length 0");
    free(p);
}

Test(bad, rank_nine)
{
    const hsize_t dims[9] = {2, 2, 2, 2, 2, 2, 2, 2, 2};
    char *p = raw_dump("rank9.h5", H5T_NATIVE_FLOAT, 9, dims, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected rank 1 to 8", "found 9");
    free(p);
}

/* A chunked dataset never written costs nothing on disk, whatever its declared shape. */
static char *unwritten_dump(const char *file, const hsize_t *dims)
{
    const hsize_t chunk[3] = {1, 16, 16};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_INCR);
    char *p = raw_dump(file, H5T_NATIVE_FLOAT, 3, dims, dcpl);
    H5Pclose(dcpl);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_lt(st.st_size, 1 << 20, "fixture %s allocated storage", file);
    return p;
}

Test(bad, shape_beyond_two_to_the_forty_values_per_sample)
{
    const hsize_t huge[3] = {1, (hsize_t)1 << 21, (hsize_t)1 << 21};
    char *p = unwritten_dump("huge.h5", huge);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected at most 2^40 values per sample");
    free(p);
    const hsize_t over[3] = {1, (hsize_t)1 << 20, ((hsize_t)1 << 20) + 1};
    p = unwritten_dump("over.h5", over);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "2^40");
    free(p);
    /* exactly 2^40 passes the shape check: what stops it is the next check, values never
     * written (a dump that size cannot be made here) */
    const hsize_t limit[3] = {1, (hsize_t)1 << 20, (hsize_t)1 << 20};
    p = unwritten_dump("limit.h5", limit);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected its 4294967296 chunks written, found 0");
    free(p);
}

/* Values never written read as the fill value: qcal would calibrate zeros no model produced
 * (a dumper that stopped early, dimensions claiming more samples than were written). */
Test(bad, values_never_written)
{
    enum { ROWS = 6, COLS = 4 };
    float v[ROWS * COLS] = {0};
    fx_dataset ok = {.name = "ok", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    hsize_t dims[2] = {ROWS, COLS}, rows[2] = {2, COLS};
    char *path = write_ok("gz-unwritten.h5", &ok, 1, 0);
    add_filtered(path, "/activations/unwritten", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, rows,
                 P_DEFLATE, NULL);
    REFUSED(path, QERR_DATA, "tensor 'unwritten'", "expected its 3 chunks written, found 0");
    free(path);
    /* two of three chunks: the first four rows only */
    path = write_ok("partly.h5", &ok, 1, 0);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, rows);
    hid_t sp = H5Screate_simple(2, dims, NULL), mem = H5Screate_simple(2, (hsize_t[]){4, COLS}, NULL);
    hid_t ds = H5Dcreate2(f, "/activations/partly", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, (hsize_t[]){0, 0}, NULL, (hsize_t[]){4, COLS}, NULL);
    cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, sp, H5P_DEFAULT, v), 0);
    H5Dclose(ds), H5Sclose(mem), H5Sclose(sp), H5Pclose(dcpl), H5Fclose(f);
    REFUSED(path, QERR_DATA, "tensor 'partly'", "expected its 3 chunks written, found 2");
    free(path);
    /* contiguous, never written (HDF5 allocates its storage on the first write) */
    path = raw_dump("contiguous.h5", H5T_NATIVE_FLOAT, 2, dims, H5P_DEFAULT);
    REFUSED(path, QERR_DATA, "tensor 'bad'", "expected its values written, found no storage");
    free(path);
}

static char *axis_dump(const char *file, int axis)
{
    static float v[24];
    fx_dataset ds = {.name = "t", .dtype = DUMP_F32, .rank = 3, .dims = {2, 3, 4}, .data = v,
                     .channel_axis = axis};
    return write_ok(file, &ds, 1, 0);
}

Test(bad, channel_axis_zero_or_out_of_range)
{
    const int axes[4] = {0, 5, -3, -4};
    const char *found[4] = {"found 0", "found 5", "found -3", "found -4"};
    for (int k = 0; k < 4; k++) {
        char name[32];
        snprintf(name, sizeof name, "axis%d.h5", k);
        char *p = axis_dump(name, axes[k]);
        REFUSED(p, QERR_DATA, "tensor 't'", "expected channel_axis in [1, 2]", found[k]);
        free(p);
    }
}

/* Replaces the channel_axis attribute of /activations/t by n values (0: scalar) of `type`. */
static void retype_axis(const char *path, hid_t type, hsize_t n, const void *value)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "/activations/t", H5P_DEFAULT);
    H5Adelete(ds, "channel_axis");
    hid_t sp = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(ds, "channel_axis", type, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0);
    cr_assert_geq(H5Awrite(a, type, value), 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(f);
}

/* The value as stored: an unsigned 2^64 - 1 read clamped to 2^63 - 1 in the message; and a
 * tensor of rank 1 has no axis to name ("expected channel_axis in [1, 0]" before). */
Test(bad, channel_axis_unsigned_huge_or_on_rank_one)
{
    char *p = axis_dump("axis_u64.h5", 1);
    const unsigned long long huge = ~0ull;
    retype_axis(p, H5T_NATIVE_ULLONG, 0, &huge);
    REFUSED(p, QERR_DATA, "tensor 't'", "expected channel_axis in [1, 2]", "found 18446744073709551615");
    free(p);
    static float v[4];
    fx_dataset ds = {.name = "t", .dtype = DUMP_F32, .rank = 1, .dims = {4}, .data = v,
                     .channel_axis = 1};
    p = write_ok("axis_rank1.h5", &ds, 1, 0);
    REFUSED(p, QERR_DATA, "tensor 't'", "expected no channel_axis on a tensor of rank 1");
    free(p);
}

Test(bad, channel_axis_of_a_non_integer_type)
{
    char *p = axis_dump("axis_float.h5", 1);
    const double one = 1.0;
    retype_axis(p, H5T_NATIVE_DOUBLE, 0, &one);
    REFUSED(p, QERR_DATA, "tensor 't'", "expected", "integer", "channel_axis", "float");
    free(p);
    p = axis_dump("axis_string.h5", 1);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, 2);
    retype_axis(p, st, 0, "1");
    H5Tclose(st);
    REFUSED(p, QERR_DATA, "tensor 't'", "expected", "integer", "channel_axis", "string");
    free(p);
    p = axis_dump("axis_pair.h5", 1);
    const int pair[2] = {1, 2};
    retype_axis(p, H5T_NATIVE_INT, 2, pair);
    REFUSED(p, QERR_DATA, "tensor 't'", "expected one integer", "channel_axis", "2 value");
    free(p);
}

Test(bad, no_numeric_dataset_at_all)
{
    char *p = fx_path(dir, "nothing.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(f);
    REFUSED(p, QERR_DATA, "expected numeric datasets under /activations", "found none");
    free(p);
    p = fx_path(dir, "strings_only.h5");
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    add_string(p, "/label");
    REFUSED(p, QERR_DATA, "expected numeric datasets", "anywhere in the file", "found none");
    free(p);
}

/* Groups nested 40 deep below /activations (a runaway writer): refused, naming the group where
 * the limit of 32 levels is passed; 32 levels (/activations and 31 below it) are read. */
static char *nested_dump(const char *file, int depth)
{
    char *p = fx_path(dir, file), path[512] = "/activations";
    for (int k = 0; k < depth; k++)
        snprintf(path + strlen(path), sizeof path - strlen(path), "/g%d", k);
    strcat(path, "/x");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    const hsize_t dims[2] = {2, 2};
    const float v[4] = {1, 2, 3, 4};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, path, H5T_NATIVE_FLOAT, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(d, 0, "fixture %s", path);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d), H5Sclose(sp), H5Pclose(lcpl), H5Fclose(f);
    return p;
}

Test(bad, groups_nested_too_deep)
{
    char *p = nested_dump("deep.h5", 40);
    REFUSED(p, QERR_DATA, "group '/activations/g0/g1/", "/g31'", "at most 32 deep");
    free(p);
    p = nested_dump("deep_ok.h5", 31); /* /activations and 31 more: 32 levels */
    dump *d = open_ok(p);
    cr_expect_eq(dump_count(d), 1u);
    dump_close(d);
    free(p);
}

/* Names longer than DUMP_MAX_NAME bytes (a tensor's path, or its name attribute) are refused
 * at open, naming the file and the length; a name of exactly that length is read. */
Test(bad, names_beyond_the_longest_allowed)
{
    static const float v[4] = {1, 2, 3, 4};
    static char longest[DUMP_MAX_NAME + 2];
    memset(longest, 'n', DUMP_MAX_NAME + 1);
    fx_dataset ds = {.name = longest, .dtype = DUMP_F32, .rank = 2, .dims = {2, 2}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *p = write_ok("long_name.h5", &ds, 1, 0);
    char found[32];
    snprintf(found, sizeof found, "found %d", DUMP_MAX_NAME + 1);
    REFUSED(p, QERR_DATA, "expected a name of at most", found);
    free(p);
    longest[DUMP_MAX_NAME] = '\0';
    p = write_ok("longest_name.h5", &ds, 1, 0);
    dump *d = open_ok(p);
    cr_expect_eq(strlen(dump_get(d, 0)->name), (size_t)DUMP_MAX_NAME);
    dump_close(d);
    free(p);
    ds.name = "short";
    longest[DUMP_MAX_NAME] = 'n';
    ds.orig_name = longest;
    p = write_ok("long_orig_name.h5", &ds, 1, 0);
    REFUSED(p, QERR_DATA, "tensor 'short'", "name attribute of at most", found);
    free(p);
}

/* h5py's LZF (filter 32000) is not in the HDF5 C library: an optional filter lets us write a
 * dataset that names it, and the reader must say what it is and what to do. */
static char *filtered_dump(const char *file, H5Z_filter_t id)
{
    const hsize_t dims[2] = {4, 4}, chunk[2] = {2, 4};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    const unsigned cd[1] = {0};
    cr_assert_geq(H5Pset_filter(dcpl, id, H5Z_FLAG_OPTIONAL, 1, cd), 0);
    char *p = raw_dump(file, H5T_NATIVE_FLOAT, 2, dims, dcpl);
    H5Pclose(dcpl);
    return p;
}

Test(bad, unavailable_filters_are_named)
{
    cr_assert_leq(H5Zfilter_avail(32000), 0, "LZF is installed here: this test needs it absent");
    char *p = filtered_dump("lzf.h5", 32000);
    REFUSED(p, QERR_UNAVAILABLE, "tensor 'bad'", "LZF", "gzip");
    free(p);
    cr_assert_leq(H5Zfilter_avail(32004), 0);
    p = filtered_dump("lz4.h5", 32004);
    REFUSED(p, QERR_UNAVAILABLE, "tensor 'bad'", "filter 32004", "not available");
    free(p);
}

/* ---- /layers: a layer must name a tensor of the dump and have weights that fit it ------ */

/* Sets (replacing) an int64 attribute of object `obj` in the file at path. */
static void set_i64_attr(const char *path, const char *obj, const char *name, long long v)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), o = H5Oopen(f, obj, H5P_DEFAULT);
    cr_assert_geq(o, 0, "%s", obj);
    if (H5Aexists(o, name) > 0)
        H5Adelete(o, name);
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(o, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, H5T_NATIVE_LLONG, &v), 0);
    H5Aclose(a), H5Sclose(sp), H5Oclose(o), H5Fclose(f);
}

static char *layered_dump(const char *file)
{
    static float v[2 * 8 * 4 * 4];
    fx_dataset ds[2] = {
        {.name = "fc.in", .dtype = DUMP_F32, .rank = 3, .dims = {2, 4, 16}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "conv.in", .dtype = DUMP_F32, .rank = 4, .dims = {2, 8, 4, 4}, .data = v,
         .channel_axis = FX_NO_ATTR},
    };
    return write_ok(file, ds, 2, 0);
}

Test(dump, layers_that_fit_are_accepted)
{
    char *p = layered_dump("layers_ok.h5");
    const hsize_t lin[2] = {10, 16}, conv[4] = {6, 4, 3, 3};
    add_layer(p, "fc", "linear", "fc.in", 2, lin, 1);
    add_layer(p, "conv", "conv2d", "conv.in", 4, conv, 2);
    dump *d = open_ok(p);
    cr_expect_eq(dump_count(d), 2u, "layer weights are not activations");
    dump_close(d);
    free(p);
}

Test(bad, layers_that_do_not_fit)
{
    const hsize_t lin_bad[2] = {10, 15}, conv[4] = {6, 4, 3, 3}, lin_rank3[3] = {10, 16, 1};
    /* each: one layer added to the two-tensor dump, and what the one line must say (the last
     * ones as audited: "input ... of 0 features" said nothing of the rank) */
    const struct {
        const char *file, *layer, *type, *input;
        int rank;
        const hsize_t *dims;
        long long groups;
        const char *says[2];
    } cases[] = {
        {"l1.h5", "fc", "linear", "no.such.tensor", 2, lin_bad, 1,
         {"expected input to name a tensor", "no.such.tensor"}},
        {"l2.h5", "fc", "linear", "fc.in", 2, lin_bad, 1,
         {"does not fit input 'fc.in' of 16 features", "layer 'fc'"}},
        {"l3.h5", "conv", "conv2d", "conv.in", 4, conv, 1, {"groups 1", "8 features"}},
        {"l4.h5", "fc", "linear", "fc.in", 3, lin_rank3, 1, {"weight of rank 2", "rank 3"}},
        {"l5.h5", "fc", "attention", "fc.in", 2, lin_bad, 1, {"'linear' or 'conv2d'", "'attention'"}},
        {"l7.h5", "conv", "conv2d", "fc.in", 4, conv, 1,
         {"expected input 'fc.in' of rank 4", "found rank 3"}},
    };
    char *p;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char layer[64];
        snprintf(layer, sizeof layer, "layer '%s'", cases[k].layer);
        p = layered_dump(cases[k].file);
        add_layer(p, cases[k].layer, cases[k].type, cases[k].input, cases[k].rank, cases[k].dims,
                  cases[k].groups);
        REFUSED(p, QERR_DATA, layer, cases[k].says[0], cases[k].says[1]);
        free(p);
    }
    /* an input attribute of another type, a weight that is a string: said as such ("found 'no
     * input attribute'", "found none or rank -1" before) */
    p = layered_dump("l8.h5");
    add_layer(p, "fc", "linear", "fc.in", 2, lin_bad, 1);
    set_i64_attr(p, "/layers/fc", "input", 7);
    REFUSED(p, QERR_DATA, "layer 'fc'", "expected a string attribute input", "another type");
    free(p);
    p = layered_dump("l9.h5");
    add_layer(p, "fc", "linear", "fc.in", 2, lin_bad, 1);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/layers/fc/weight", H5P_DEFAULT);
    H5Fclose(f);
    add_string(p, "/layers/fc/weight");
    REFUSED(p, QERR_DATA, "layer 'fc'", "weight of rank 2", "found a string type");
    free(p);
    /* a damaged file's string can hold any byte: the message stays one line (a vertical tab
     * or a newline would break it for whoever reads stderr by lines) */
    p = layered_dump("l6.h5");
    add_layer(p, "fc", "lin\vea\nr\x7f", "fc.in", 2, lin_bad, 1);
    REFUSED(p, QERR_DATA, "layer 'fc'", "found 'lin\\x0bea r\\x7f'");
    free(p);
}

/* ---- the guard around HDF5 calls ---------------------------------------------------------- */

/* malloc's checks abort on a heap HDF5 has overrun (found on a fuzzed results file, in
 * H5Fclose): inside a guarded read that is the one 'corrupt file' line and exit 65, as for a
 * fault; outside any guard an abort stays an abort. */
Test(guard, an_abort_while_reading_a_file_is_a_corrupt_file, .exit_code = 65)
{
    fx_rmtree(dir); /* the suite's folder: the exit skips its teardown */
    h5_guard_install();
    h5_guard_enter("damaged.h5");
    abort();
}

Test(guard, an_abort_elsewhere_stays_an_abort, .signal = SIGABRT)
{
    fx_rmtree(dir);
    h5_guard_install();
    abort();
}

/* A mapped dump that shrinks under the reader (truncated by someone else) raises SIGBUS where
 * the values were: with the mapped file marked, that is one line naming it and exit 74. */
Test(guard, a_mapped_file_that_shrinks_is_an_io_error, .exit_code = 74)
{
    static float v[64 * 1024];
    for (size_t k = 0; k < sizeof v / sizeof *v; k++)
        v[k] = (float)k;
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {64, 1024}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *p = write_ok("shrinks.h5", &ds, 1, 0);
    dump *d = open_ok(p);
    dump_window w;
    cr_assert_eq(dump_map_rows(d, 0, 0, 64, &w), 0, "contiguous float32: mapped");
    const float *x = w.data;
    cr_assert_eq(x[64 * 1024 - 1], (float)(64 * 1024 - 1), "the mapped values are the values");
    cr_assert_eq(truncate(p, 4096), 0);
    fx_rmtree(dir); /* now: the exit below skips the suite's teardown (the mapping stays) */
    h5_guard_install();
    h5_guard_mapped(w.path);
    volatile float last = x[64 * 1024 - 1]; /* beyond the end now */
    (void)last;
    cr_assert_fail("no SIGBUS");
}

static int open_descriptors(void)
{
    int n = 0;
    DIR *fds = opendir("/proc/self/fd");
    cr_assert_not_null(fds);
    while (readdir(fds))
        n++;
    closedir(fds);
    return n;
}

/* Mapping reads through HDF5's own descriptor: a dump of several files holds one descriptor
 * per file, so it may span as many files as the process may open, not half. */
Test(dump, one_descriptor_per_file_and_values_mapped_through_it)
{
    static float v[3][64 * 256];
    char *paths[3];
    for (int f = 0; f < 3; f++) {
        for (size_t k = 0; k < 64 * 256; k++)
            v[f][k] = (float)(f * 100000 + (int)k);
        fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {64, 256},
                         .data = v[f], .channel_axis = FX_NO_ATTR};
        char name[32];
        snprintf(name, sizeof name, "part%d.h5", f);
        paths[f] = write_ok(name, &ds, 1, 0);
    }
    int before = open_descriptors();
    dump *d;
    qerror e = {0};
    cr_assert_eq(dump_open_many((const char *const *)paths, 3, &d, &e), 0, "%s", e.msg);
    cr_expect_eq(open_descriptors(), before + 3, "one descriptor per file");
    dump_window w;
    cr_assert_eq(dump_map_rows(d, 0, 128 + 10, 5, &w), 0, "rows of the third file: mapped");
    const float *x = w.data;
    cr_expect_eq(x[0], 200000.0f + 10 * 256, "the third file's row 10");
    cr_expect_eq(x[5 * 256 - 1], 200000.0f + 15 * 256 - 1);
    dump_unmap(&w);
    dump_close(d);
    cr_expect_eq(open_descriptors(), before, "all closed with the dump");
    for (int f = 0; f < 3; f++)
        free(paths[f]);
}

/* The file offset of the chunk holding row `row` of dataset x. */
static uint64_t chunk_address(const char *path, hsize_t row)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), ds = H5Dopen2(f, "/activations/x", H5P_DEFAULT);
    hsize_t offset[2] = {row, 0}, size = 0;
    haddr_t addr = HADDR_UNDEF;
    unsigned mask = 0;
    cr_assert_geq(H5Dget_chunk_info_by_coord(ds, offset, &mask, &addr, &size), 0);
    H5Dclose(ds);
    H5Fclose(f);
    return addr;
}

/* Replaces the one little-endian copy of `from` in the file (a chunk index entry) by `to`. */
static void patch_u64(const char *path, uint64_t from, uint64_t to)
{
    FILE *fp = fopen(path, "r+b");
    cr_assert_not_null(fp);
    static unsigned char b[1 << 20];
    size_t n = fread(b, 1, sizeof b, fp), found = 0, at = 0;
    for (size_t k = 0; k + 8 <= n; k++)
        if (!memcmp(b + k, &from, 8))
            found++, at = k;
    cr_assert_eq(found, 1, "one copy of the address");
    cr_assert_eq(fseek(fp, (long)at, SEEK_SET), 0);
    cr_assert_eq(fwrite(&to, 8, 1, fp), 1);
    fclose(fp);
}

/* A chunk index pointing past the end of the file is damaged data (65), not an I/O error. */
Test(bad, chunk_address_past_the_end_is_bad_data)
{
    static float v[4 * 1024];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {4, 1024}, .chunk_rows = 1,
                     .data = v, .channel_axis = FX_NO_ATTR};
    char *p = write_ok("far.h5", &ds, 1, 0);
    patch_u64(p, chunk_address(p, 2), 1ull << 40);
    dump *d = open_ok(p);
    qerror e = {0};
    cr_expect_neq(dump_read_raw(d, 0, 0, 4, v, &e), 0);
    cr_expect_eq(e.code, QERR_DATA, "%s", e.msg);
    cr_expect(strstr(e.msg, "tensor 'x'") && strstr(e.msg, "addr overflow"), "%s", e.msg);
    dump_close(d);
    free(p);
}

/* Only a read the system refused (HDF5 quotes its errno) is an I/O error. */
Test(bad, a_read_the_system_refused_is_an_io_error)
{
    char why[256];
    H5Eclear2(H5E_DEFAULT);
    H5Epush2(H5E_DEFAULT, __FILE__, "test", __LINE__, H5E_ERR_CLS, H5E_IO, H5E_READERROR,
             "file read failed: errno = 5, error message = 'Input/output error'");
    cr_expect_eq(h5_reason_code(why, sizeof why), QERR_IO);
    cr_expect(strstr(why, "Input/output error"), "%s", why);
    H5Eclear2(H5E_DEFAULT);
    H5Epush2(H5E_DEFAULT, __FILE__, "test", __LINE__, H5E_ERR_CLS, H5E_STORAGE, H5E_BADVALUE,
             "bad chunk signature");
    cr_expect_eq(h5_reason_code(why, sizeof why), QERR_DATA);
    H5Eclear2(H5E_DEFAULT);
}

/* A dataset reached through an external link lies in another file: its values are read
 * through HDF5, never mapped from the dump's own file at the other file's offsets (which
 * gave another tensor's values, found by an audit). */
Test(dump, externally_linked_dataset_is_read_not_mapped)
{
    static float pad[64 * 1024], theirs[16 * 1024], back[16 * 1024];
    for (size_t k = 0; k < 64 * 1024; k++)
        pad[k] = -5.0f;
    for (size_t k = 0; k < 16 * 1024; k++)
        theirs[k] = 100.0f + (float)k;
    fx_dataset target = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {16, 1024},
                         .data = theirs, .channel_axis = FX_NO_ATTR};
    fx_dataset outer = {.name = "pad", .dtype = DUMP_F32, .rank = 2, .dims = {64, 1024},
                        .data = pad, .channel_axis = FX_NO_ATTR};
    char *t = write_ok("target.h5", &target, 1, 0), *p = write_ok("outer.h5", &outer, 1, 0);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Lcreate_external(t, "/activations/x", f, "/activations/e", H5P_DEFAULT,
                                     H5P_DEFAULT), 0);
    H5Fclose(f);
    dump *d = open_ok(p);
    size_t e = dump_find(d, "e");
    cr_assert_neq(e, SIZE_MAX);
    dump_window w;
    cr_expect_neq(dump_map_rows(d, e, 0, 16, &w), 0, "not mapped from the outer file");
    qerror err = {0};
    cr_assert_eq(dump_read_raw(d, e, 0, 16, back, &err), 0, "%s", err.msg);
    cr_expect_eq(memcmp(back, theirs, sizeof back), 0, "the linked file's values");
    cr_expect_eq(dump_map_rows(d, dump_find(d, "pad"), 0, 64, &w), 0, "its own: mapped");
    dump_unmap(&w);
    dump_close(d);
    free(t), free(p);
}

/* One dataset /activations/t of file type ftype written from mtype values, with an optional
 * string attribute dtype. */
static char *typed_dump(const char *file, hid_t ftype, hid_t mtype, const void *v,
                        const char *dtype_attr)
{
    char *path = fx_path(dir, file);
    const hsize_t dims[2] = {2, 2};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(g, "t", ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "fixture %s", file);
    cr_assert_geq(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    if (dtype_attr) {
        hid_t st = H5Tcopy(H5T_C_S1), scalar = H5Screate(H5S_SCALAR);
        H5Tset_size(st, H5T_VARIABLE);
        hid_t a = H5Acreate2(ds, "dtype", st, scalar, H5P_DEFAULT, H5P_DEFAULT);
        cr_assert_geq(H5Awrite(a, st, &dtype_attr), 0);
        H5Aclose(a), H5Sclose(scalar), H5Tclose(st);
    }
    H5Dclose(ds), H5Sclose(sp), H5Gclose(g), H5Fclose(f);
    return path;
}

/* qcal converts 16-bit floats itself, so only IEEE half and bfloat16 laid out exactly are
 * taken as such: a half with exponent bias 10 (HDF5 reads 0x3c00 as 32, not 1) is refused,
 * naming the layout. The dtype attribute marks 16-bit integers as float bits (bfloat16 on
 * int16 too, float16 on uint16); on other storage it contradicts the data and is refused. */
Test(dump, sixteen_bit_floats_by_layout_and_by_attribute)
{
    const uint16_t bits[4] = {0x3c00, 0xc000, 0x3f80, 0x0000}; /* half 1, -2; bf16 1 */
    hid_t biased = half_type(H5T_ORDER_LE);
    H5Tset_ebias(biased, 10);
    char *p = typed_dump("bias10.h5", biased, biased, bits, NULL);
    REFUSED(p, QERR_DATA, "tensor 't'", "16-bit float of unusual layout", "bias 10");
    free(p);
    H5Tclose(biased);
    p = typed_dump("bf_i16.h5", H5T_STD_I16LE, H5T_NATIVE_INT16, bits, "bfloat16");
    dump *d = open_ok(p);
    float out[4];
    cr_expect_eq(tensor(d, "t")->dtype, DUMP_BF16);
    read_rows(d, "t", 0, 2, out);
    cr_expect(out[0] == 0.0078125f && out[1] == -2.0f && out[2] == 1.0f && out[3] == 0.0f,
              "bfloat16 bits in int16: %g %g %g %g", out[0], out[1], out[2], out[3]);
    dump_close(d), free(p);
    p = typed_dump("f16_u16.h5", H5T_STD_U16LE, H5T_NATIVE_UINT16, bits, "float16");
    d = open_ok(p);
    cr_expect_eq(tensor(d, "t")->dtype, DUMP_F16);
    read_rows(d, "t", 0, 2, out);
    cr_expect(out[0] == 1.0f && out[1] == -2.0f && out[2] == 1.875f && out[3] == 0.0f,
              "half bits in uint16: %g %g %g %g", out[0], out[1], out[2], out[3]);
    dump_close(d), free(p);
    const float f[4] = {1, 2, 3, 4};
    p = typed_dump("bf_f32.h5", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, f, "bfloat16");
    REFUSED(p, QERR_DATA, "tensor 't'", "dtype = \"bfloat16\"", "16-bit integers", "float type of 4 bytes");
    free(p);
}

/* Values in other files must all be there: HDF5 reads what a short external file lacks as
 * zeros, and a virtual dataset's missing source as its fill value, without a word (found by
 * an audit). Both are refused when the dump is opened, naming the file. */
Test(bad, short_external_storage_and_missing_virtual_sources)
{
    const hsize_t dims[2] = {4, 8};
    static float v[32];
    char *bin = fx_path(dir, "values.bin"), *p = fx_path(dir, "ext.h5");
    FILE *fp = fopen(bin, "wb");
    cr_assert_eq(fwrite(v, 4, 16, fp), 16u); /* half the 128 bytes declared */
    fclose(fp);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_external(dcpl, bin, 0, sizeof v);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), sp = H5Screate_simple(2, dims, NULL);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(H5Dcreate2(g, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Gclose(g), H5Fclose(f), H5Pclose(dcpl);
    REFUSED(p, QERR_DATA, "tensor 'x'", "values.bin", "hold 128 bytes", "found 64 bytes");

    char *src = fx_path(dir, "src.h5"), *vp = fx_path(dir, "virtual.h5");
    fx_dataset s = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {4, 8}, .data = v,
                    .channel_axis = FX_NO_ATTR};
    cr_assert_eq(fx_write_dump(src, &s, 1, 0), 0);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    cr_assert_geq(H5Pset_virtual(dcpl, sp, "src.h5", "/activations/x", sp), 0);
    f = H5Fcreate(vp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(H5Dcreate2(g, "v", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Gclose(g), H5Fclose(f), H5Pclose(dcpl), H5Sclose(sp);
    dump *d = open_ok(vp); /* the source beside it: fine */
    dump_close(d);
    cr_assert_eq(unlink(src), 0);
    REFUSED(vp, QERR_NOINPUT, "tensor 'v'", "src.h5:/activations/x", "found none");
    cr_assert_eq(mkfifo(src, 0600), 0); /* a FIFO in its place: refused, not read (it blocks) */
    REFUSED(vp, QERR_NOINPUT, "tensor 'v'", "src.h5:/activations/x", "found none");
    free(bin), free(p), free(src), free(vp);
}

/* The framework name must be a string, as op_type must: an integer name was ignored, and
 * the exports named the tensor otherwise without a word (found by an audit). */
Test(bad, name_attribute_of_another_type)
{
    static float v[8];
    fx_dataset ds = {.name = "t", .dtype = DUMP_F32, .rank = 2, .dims = {4, 2}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *p = write_ok("intname.h5", &ds, 1, 0);
    set_i64_attr(p, "/activations/t", "name", 7);
    REFUSED(p, QERR_DATA, "tensor 't'", "expected a string attribute name");
    free(p);
}

/* Inside /activations a link that leads nowhere (a soft link to nothing, an external link to
 * a missing file) is a tensor the dump lost: refused, where it was skipped silently (found
 * by an audit). */
Test(bad, links_that_lead_nowhere)
{
    static float v[8];
    fx_dataset ds = {.name = "t", .dtype = DUMP_F32, .rank = 2, .dims = {4, 2}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    char *p = write_ok("dangling.h5", &ds, 1, 0);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Lcreate_soft("/activations/gone", f, "/activations/s", H5P_DEFAULT, H5P_DEFAULT), 0);
    H5Fclose(f);
    REFUSED(p, QERR_DATA, "'/activations/s'", "a link that leads nowhere");
    free(p);
    p = write_ok("dangling_ext.h5", &ds, 1, 0);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Lcreate_external("no_such_file.h5", "/x", f, "/activations/e", H5P_DEFAULT,
                                     H5P_DEFAULT), 0);
    H5Fclose(f);
    REFUSED(p, QERR_DATA, "'/activations/e'", "a link that leads nowhere");
    free(p);
}

/* Partial edge chunks stored unfiltered (H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS) carry nothing in
 * their filter mask: qcal leaves such datasets to HDF5, which reads them (qcal inflated the
 * raw edge chunk and refused a valid file; found by an audit). */
Test(dump, unfiltered_partial_edge_chunks_read_through_hdf5)
{
    enum { ROWS = 10, COLS = 6 };
    float v[ROWS * COLS], back[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        v[i] = (float)i * 0.5f - 7.0f;
    char *p = fx_path(dir, "partial.h5");
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[2] = {ROWS, COLS}, chunk[2] = {4, COLS};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_deflate(dcpl, 6);
    cr_assert_geq(H5Pset_chunk_opts(dcpl, H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS), 0);
    hid_t ds = H5Dcreate2(g, "a", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(sp), H5Gclose(g), H5Fclose(f), H5Pclose(fapl);
    dump *d = open_ok(p);
    cr_expect_null(dump_packed_form(d, 0), "left to HDF5");
    read_rows(d, "a", 0, ROWS, back);
    cr_expect_eq(memcmp(back, v, sizeof v), 0, "every value, the edge chunk's too");
    dump_close(d);
    free(p);
}

/* Opens a dump of one dataset /activations/x [4, 8] float32 stored in external file `name`. */
static char *external_dump(const char *file, const char *name)
{
    const hsize_t dims[2] = {4, 8};
    char *p = fx_path(dir, file);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    cr_assert_geq(H5Pset_external(dcpl, name, 0, 4 * 8 * 4), 0);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), sp = H5Screate_simple(2, dims, NULL);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(H5Dcreate2(g, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Gclose(g), H5Sclose(sp), H5Fclose(f), H5Pclose(dcpl);
    return p;
}

/* External storage that is not a regular file: a FIFO blocked the read for ever, /dev/null read
 * as zeros; and a name longer than qcal's buffer was read past its end (found by an ASan
 * fuzz). */
Test(bad, external_storage_that_is_not_a_file)
{
    char *fifo = fx_path(dir, "values.fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    char *p = external_dump("ext_fifo.h5", fifo);
    REFUSED(p, QERR_DATA, "tensor 'x'", "to be a regular file, found a FIFO");
    free(p);
    p = external_dump("ext_null.h5", "/dev/null");
    REFUSED(p, QERR_DATA, "tensor 'x'", "to be a regular file, found a device");
    free(p);
    char longname[1500];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    p = external_dump("ext_long.h5", longname);
    static char sentinel;
    dump *d = (dump *)(void *)&sentinel;
    qerror e = {0};
    if (dump_open(p, &d, &e) == 0) /* a file that is not there: HDF5 says so when reading */
        dump_close(d);
    free(p), free(fifo);
}

/* Parts of a virtual dataset no mapping selects read as the fill value: a declared shape far
 * beyond its sources (which then asked for terabytes of buffer) is refused. */
Test(bad, virtual_dataset_mapping_part_of_its_shape)
{
    static float v[4 * 8];
    fx_dataset s = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {4, 8}, .data = v,
                    .channel_axis = FX_NO_ATTR};
    char *src = fx_path(dir, "part_src.h5"), *p = fx_path(dir, "part_vds.h5");
    cr_assert_eq(fx_write_dump(src, &s, 1, 0), 0);
    const hsize_t small[2] = {4, 8}, big[2] = {400, 8};
    hid_t ssp = H5Screate_simple(2, small, NULL), vsp = H5Screate_simple(2, big, NULL);
    const hsize_t start[2] = {0, 0};
    H5Sselect_hyperslab(vsp, H5S_SELECT_SET, start, NULL, small, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    cr_assert_geq(H5Pset_virtual(dcpl, vsp, "part_src.h5", "/activations/x", ssp), 0);
    H5Sselect_all(vsp);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(H5Dcreate2(g, "v", H5T_IEEE_F32LE, vsp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Gclose(g), H5Fclose(f), H5Pclose(dcpl), H5Sclose(ssp), H5Sclose(vsp);
    REFUSED(p, QERR_DATA, "tensor 'v'", "3200 values mapped to sources, found 32");
    free(src), free(p);
}
