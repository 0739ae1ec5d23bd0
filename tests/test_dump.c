/* test_dump.c - the dump reader: types, conversion, listing, attributes, slabs, bad inputs */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dump.h"
#include "fixtures.h"

static char *dir;

static void setup(void) { dir = fx_tmpdir(); }
static void teardown(void)
{
    fx_rmtree(dir);
    free(dir);
}

TestSuite(dump, .init = setup, .fini = teardown);
TestSuite(convert);

/* ---- conversion, against references written here ------------------------------------- */

static float half_ref(uint16_t h)
{
    int exp = (h >> 10) & 31, mant = h & 1023;
    float mag = exp == 31 ? (mant ? NAN : INFINITY)
              : exp == 0  ? ldexpf((float)mant, -24)
                          : ldexpf(1.0f + (float)mant / 1024.0f, exp - 15);
    return (h & 0x8000) ? -mag : mag;
}

static int same_float(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

Test(convert, every_half_pattern)
{
    static uint16_t h[65536];
    static float out[65536];
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    dump_convert(DUMP_F16, h, 65536, out);
    for (uint32_t i = 0; i < 65536; i++)
        cr_assert(same_float(out[i], half_ref((uint16_t)i)), "0x%04x: %a vs %a", i, out[i],
                  half_ref((uint16_t)i));
    cr_expect_eq(dump_half_to_float(0x3c00), 1.0f);
    cr_expect_eq(dump_half_to_float(0xc000), -2.0f);
    cr_expect_eq(dump_half_to_float(0x7bff), 65504.0f);
    cr_expect_eq(dump_half_to_float(0x0001), 0x1p-24f);
    cr_expect_eq(dump_half_to_float(0x0400), 0x1p-14f);
    cr_expect(isinf(dump_half_to_float(0xfc00)) && dump_half_to_float(0xfc00) < 0);
}

Test(convert, every_bfloat16_pattern)
{
    static uint16_t b[65536];
    static float out[65536];
    for (uint32_t i = 0; i < 65536; i++)
        b[i] = (uint16_t)i;
    dump_convert(DUMP_BF16, b, 65536, out);
    for (uint32_t i = 0; i < 65536; i++) {
        union { uint32_t u; float f; } ref = {.u = i << 16};
        cr_assert(same_float(out[i], ref.f), "0x%04x", i);
    }
}

Test(convert, integers_and_doubles)
{
    const int8_t i8[3] = {-128, 0, 127};
    const uint16_t u16[2] = {0, 65535};
    const int64_t i64[2] = {-5000000000LL, 3};
    const double f64[3] = {0.1, -1e300, 1e-50};
    float out[3];
    dump_convert(DUMP_I8, i8, 3, out);
    cr_expect(out[0] == -128.0f && out[1] == 0.0f && out[2] == 127.0f);
    dump_convert(DUMP_U16, u16, 2, out);
    cr_expect(out[0] == 0.0f && out[1] == 65535.0f);
    dump_convert(DUMP_I64, i64, 2, out);
    cr_expect(out[0] == -5e9f && out[1] == 3.0f);
    dump_convert(DUMP_F64, f64, 3, out);
    cr_expect(out[0] == 0.1f && isinf(out[1]) && out[1] < 0 && out[2] == 0.0f);
}

/* ---- reading back what a fixture wrote ------------------------------------------------ */

static dump *open_ok(const char *path)
{
    dump *d = NULL;
    qerror e = {0};
    cr_assert_eq(dump_open(path, &d, &e), 0, "%s", e.msg);
    return d;
}

/* Reads rows [row0, row0+n) of tensor `name` as float32 into out. */
static void read_rows(dump *d, const char *name, uint64_t row0, uint64_t n, float *out)
{
    long i = dump_find(d, name);
    cr_assert_geq(i, 0, "no tensor %s", name);
    const dump_tensor *t = dump_get(d, (size_t)i);
    size_t count = (size_t)(n * t->row_size);
    void *raw = malloc(count * t->elem_size);
    qerror e = {0};
    cr_assert_eq(dump_read_raw(d, (size_t)i, row0, n, raw, &e), 0, "%s", e.msg);
    dump_convert(t->dtype, raw, count, out);
    free(raw);
}

Test(dump, every_stored_type_reads_back)
{
    const float known[6] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 0.333251953125f, -0.0f};
    uint16_t half[6], bf[6];
    for (int i = 0; i < 6; i++) {
        half[i] = fx_float_to_half(known[i]);
        bf[i] = fx_float_to_bf16(known[i]);
    }
    const double f64[6] = {0.5, -1.25, 3e10, -7, 0, 1e-3};
    const int16_t i16[6] = {-32768, -1, 0, 1, 2, 32767};
    const uint32_t u32[6] = {0, 1, 7, 100000, 4000000000u, 9};
    const float f32[6] = {0.1f, -0.2f, 1e-38f, 3.4e38f, -0.0f, 42.0f};
    fx_dataset ds[] = {
        {.name = "h", .dtype = DUMP_F16, .rank = 2, .dims = {3, 2}, .data = half, .channel_axis = FX_NO_ATTR},
        {.name = "b1", .dtype = DUMP_BF16, .rank = 2, .dims = {3, 2}, .data = bf, .channel_axis = FX_NO_ATTR},
        {.name = "b2", .dtype = DUMP_BF16, .rank = 2, .dims = {3, 2}, .data = bf, .channel_axis = FX_NO_ATTR,
         .bf16_as_uint16 = 1},
        {.name = "d", .dtype = DUMP_F64, .rank = 2, .dims = {3, 2}, .data = f64, .channel_axis = FX_NO_ATTR},
        {.name = "i", .dtype = DUMP_I16, .rank = 2, .dims = {3, 2}, .data = i16, .channel_axis = FX_NO_ATTR},
        {.name = "u", .dtype = DUMP_U32, .rank = 2, .dims = {3, 2}, .data = u32, .channel_axis = FX_NO_ATTR},
        {.name = "f", .dtype = DUMP_F32, .rank = 2, .dims = {3, 2}, .data = f32, .channel_axis = FX_NO_ATTR},
    };
    char *path = fx_path(dir, "types.h5");
    cr_assert_eq(fx_write_dump(path, ds, 7, 0), 0);
    dump *d = open_ok(path);
    float out[6];
    read_rows(d, "h", 0, 3, out);
    for (int i = 0; i < 6; i++)
        cr_expect(same_float(out[i], known[i]), "half %d: %a", i, out[i]);
    const float bf_expect[6] = {1.0f, -2.0f, 65536.0f, 0x1p-24f, 0.333984375f, -0.0f};
    read_rows(d, "b1", 0, 3, out);
    for (int i = 0; i < 6; i++)
        cr_expect(same_float(out[i], bf_expect[i]), "bf16 %d: %a", i, out[i]);
    read_rows(d, "b2", 0, 3, out);
    for (int i = 0; i < 6; i++)
        cr_expect(same_float(out[i], bf_expect[i]), "bf16 as uint16 %d: %a", i, out[i]);
    read_rows(d, "d", 0, 3, out);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(out[i], (float)f64[i]);
    read_rows(d, "i", 0, 3, out);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(out[i], (float)i16[i]);
    read_rows(d, "u", 0, 3, out);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(out[i], (float)u32[i]);
    read_rows(d, "f", 0, 3, out);
    for (int i = 0; i < 6; i++)
        cr_expect(same_float(out[i], f32[i]));
    cr_expect_str_eq(dump_dtype_name(dump_get(d, (size_t)dump_find(d, "b2"))->dtype), "bfloat16");
    cr_expect_str_eq(dump_dtype_name(dump_get(d, (size_t)dump_find(d, "h"))->dtype), "float16");
    dump_close(d);
    free(path);
}

Test(dump, rows_in_the_middle_of_chunked_gzip_and_contiguous_data)
{
    enum { ROWS = 37, COLS = 5 };
    static float v[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        v[i] = (float)i * 0.5f - 3.0f;
    fx_dataset ds[] = {
        {.name = "chunked", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS}, .chunk_rows = 4,
         .data = v, .channel_axis = FX_NO_ATTR},
        {.name = "contig", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "gz", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS}, .chunk_rows = 3,
         .data = v, .channel_axis = FX_NO_ATTR, .gzip = 4, .shuffle = 1},
    };
    char *path = fx_path(dir, "rows.h5");
    cr_assert_eq(fx_write_dump(path, ds, 3, 0), 0);
    dump *d = open_ok(path);
    const char *names[] = {"chunked", "contig", "gz"};
    float out[11 * COLS];
    for (int k = 0; k < 3; k++) {
        read_rows(d, names[k], 13, 11, out);
        for (int i = 0; i < 11 * COLS; i++)
            cr_expect_eq(out[i], v[13 * COLS + i], "%s value %d", names[k], i);
    }
    const dump_tensor *t = dump_get(d, (size_t)dump_find(d, "chunked"));
    cr_expect_eq(t->chunk_rows, 4u);
    cr_expect_eq(dump_get(d, (size_t)dump_find(d, "contig"))->chunk_rows, 0u);
    /* whole chunks, at least one, at most the rows there are */
    cr_expect_eq(dump_slab_rows(d, (size_t)dump_find(d, "chunked"), 10 * COLS * 4), 8u);
    cr_expect_eq(dump_slab_rows(d, (size_t)dump_find(d, "chunked"), 1), 4u);
    cr_expect_eq(dump_slab_rows(d, (size_t)dump_find(d, "chunked"), 1 << 20), ROWS);
    cr_expect_eq(dump_slab_rows(d, (size_t)dump_find(d, "contig"), 10 * COLS * 4), 10u);
    cr_expect_eq(dump_slab_rows(d, (size_t)dump_find(d, "contig"), 1), 1u);
    qerror e = {0};
    float *big = malloc(sizeof(float) * (ROWS + 1) * COLS);
    cr_expect_neq(dump_read_raw(d, 0, 30, 8, big, &e), 0, "rows past the end");
    free(big);
    dump_close(d);
    free(path);
}

/* ---- listing and attributes ----------------------------------------------------------- */

Test(dump, listing_names_attributes_and_defaults)
{
    static float v[24];
    fx_dataset ds[] = {
        {.name = "z.last", .dtype = DUMP_F32, .rank = 3, .dims = {2, 3, 4}, .data = v,
         .channel_axis = -1, .op_type = "MatMul"},
        {.name = "block/conv.input", .dtype = DUMP_F32, .rank = 4, .dims = {2, 3, 2, 2}, .data = v,
         .channel_axis = FX_NO_ATTR, .orig_name = "/block/Conv_output_0"},
        {.name = "a.vec", .dtype = DUMP_F32, .rank = 1, .dims = {24}, .data = v,
         .channel_axis = FX_NO_ATTR},
    };
    char *path = fx_path(dir, "list.h5");
    cr_assert_eq(fx_write_dump(path, ds, 3, 0), 0);
    dump *d = open_ok(path);
    cr_assert_eq(dump_count(d), 3u);
    cr_expect_str_eq(dump_get(d, 0)->name, "a.vec");
    cr_expect_str_eq(dump_get(d, 1)->name, "block/conv.input");
    cr_expect_str_eq(dump_get(d, 2)->name, "z.last");
    const dump_tensor *vec = dump_get(d, 0), *conv = dump_get(d, 1), *last = dump_get(d, 2);
    cr_expect_eq(vec->channel_axis, -1, "rank 1 has no channel axis");
    cr_expect_eq(conv->channel_axis, 1, "default channel axis");
    cr_expect_eq(last->channel_axis, 2, "-1 counts from the end");
    cr_expect_str_eq(conv->orig_name, "/block/Conv_output_0");
    cr_expect_str_eq(vec->orig_name, "a.vec");
    cr_expect_str_eq(last->op_type, "MatMul");
    cr_expect_null(vec->op_type);
    cr_expect_eq(conv->rank, 4);
    cr_expect_eq(conv->row_size, 12u);
    cr_expect_eq(conv->elem_size, 4u);
    cr_expect_eq(dump_find(d, "/block/Conv_output_0"), 1, "found by its original name");
    cr_expect_eq(dump_find(d, "nope"), -1);
    dump_close(d);
    free(path);
}

Test(dump, whole_file_mode_without_activations_group)
{
    static float v[8];
    fx_dataset ds[] = {
        {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v, .channel_axis = FX_NO_ATTR},
        {.name = "sub/y", .dtype = DUMP_F32, .rank = 2, .dims = {4, 2}, .data = v, .channel_axis = FX_NO_ATTR},
        {.name = "weights/fc", .dtype = DUMP_F32, .rank = 2, .dims = {2, 4}, .data = v, .channel_axis = FX_NO_ATTR},
    };
    char *path = fx_path(dir, "root.h5");
    cr_assert_eq(fx_write_dump(path, ds, 3, 1), 0);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT); /* a string dataset is skipped here */
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, 4);
    hid_t s = H5Dcreate2(f, "label", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(s, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, "abc");
    H5Dclose(s);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
    dump *d = open_ok(path);
    cr_assert_eq(dump_count(d), 2u, "x and sub/y; /weights and the string are not activations");
    cr_expect_str_eq(dump_get(d, 0)->name, "sub/y");
    cr_expect_str_eq(dump_get(d, 1)->name, "x");
    dump_close(d);
    qerror e = {0};
    cr_assert_eq(dump_open_weights(path, &d, &e), 0, "%s", e.msg);
    cr_assert_eq(dump_count(d), 1u);
    cr_expect_str_eq(dump_get(d, 0)->name, "weights/fc");
    cr_expect_eq(dump_get(d, 0)->rank, 3);
    cr_expect_eq(dump_get(d, 0)->dims[0], 1u);
    cr_expect_eq(dump_get(d, 0)->dims[1], 2u);
    cr_expect_eq(dump_get(d, 0)->channel_axis, 1);
    dump_close(d);
    free(path);
}

Test(dump, virtual_dump_lists_but_cannot_read)
{
    dump *d;
    qerror e = {0};
    cr_assert_eq(dump_new_virtual("stats.h5", &d, &e), 0);
    dump_tensor t = {.name = "b", .rank = 2, .dims = {4, 3}, .channel_axis = 1, .dtype = DUMP_F16,
                     .row_size = 3};
    cr_assert_eq(dump_add_virtual(d, &t, &e), 0);
    t.name = "a";
    cr_assert_eq(dump_add_virtual(d, &t, &e), 0);
    cr_expect_str_eq(dump_get(d, 0)->name, "a");
    cr_expect_eq(dump_get(d, 1)->elem_size, 2u);
    float buf[12];
    cr_expect_neq(dump_read_raw(d, 0, 0, 1, buf, &e), 0);
    cr_expect(strstr(e.msg, "stats.h5") && strstr(e.msg, "'a'") && strstr(e.msg, "statistics"), "%s", e.msg);
    dump_close(d);
}

/* ---- bad inputs: one clear line each --------------------------------------------------- */

static void expect_refused(const char *path, int code, const char *const *needles)
{
    dump *d = NULL;
    qerror e = {0};
    cr_assert_neq(dump_open(path, &d, &e), 0, "accepted %s", path);
    cr_expect_null(d);
    cr_expect_eq(e.code, code, "code %d for: %s", e.code, e.msg);
    cr_expect(strstr(e.msg, path) != NULL, "no file name in: %s", e.msg);
    cr_expect(strchr(e.msg, '\n') == NULL, "more than one line: %s", e.msg);
    for (; *needles; needles++)
        cr_expect(strstr(e.msg, *needles) != NULL, "'%s' missing in: %s", *needles, e.msg);
}

#define REFUSED(path, code, ...) \
    expect_refused(path, code, (const char *const[]){__VA_ARGS__, NULL})

Test(dump, missing_text_and_truncated_files)
{
    char *missing = fx_path(dir, "none.h5"), *text = fx_path(dir, "text.h5"), *cut = fx_path(dir, "cut.h5");
    REFUSED(missing, QERR_NOINPUT, "cannot open");
    FILE *f = fopen(text, "w");
    fputs("this is not HDF5\n", f);
    fclose(f);
    REFUSED(text, QERR_DATA, "expected an HDF5 file", "signature");
    static float v[4096];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {64, 64}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    cr_assert_eq(fx_write_dump(cut, &ds, 1, 0), 0);
    cr_assert_eq(truncate(cut, 2000), 0);
    REFUSED(cut, QERR_DATA, "cannot open as HDF5", "truncated");
    free(missing);
    free(text);
    free(cut);
}

/* Corrupted metadata: one clear line, never a crash (offsets 8 and 16 hit the superblock). */
Test(dump, corrupted_superblock)
{
    static float v[256];
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {16, 16}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    const long offsets[2] = {8, 16};
    for (int k = 0; k < 2; k++) {
        char name[32];
        snprintf(name, sizeof name, "corrupt%d.h5", k);
        char *p = fx_path(dir, name);
        cr_assert_eq(fx_write_dump(p, &ds, 1, 0), 0);
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
        cr_expect_null(strstr(e.msg, "writer still open"), "no lock hint for corruption: %s", e.msg);
        free(p);
    }
}

/* Writes one raw dataset /activations/bad of type `type` and shape dims (rank 0: scalar). */
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

Test(dump, wrong_types_and_shapes)
{
    hsize_t dims[9] = {2, 2, 2, 2, 2, 2, 2, 2, 2};
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 8);
    char *p = raw_dump("str.h5", str, 1, dims, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "expected a numeric dataset", "string");
    free(p);
    H5Tclose(str);
    hid_t cmp = H5Tcreate(H5T_COMPOUND, 8);
    H5Tinsert(cmp, "a", 0, H5T_NATIVE_FLOAT);
    H5Tinsert(cmp, "b", 4, H5T_NATIVE_FLOAT);
    p = raw_dump("cmp.h5", cmp, 1, dims, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "compound");
    free(p);
    H5Tclose(cmp);
    p = raw_dump("ref.h5", H5T_STD_REF_OBJ, 1, dims, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "reference");
    free(p);
    p = raw_dump("scalar.h5", H5T_NATIVE_FLOAT, 0, dims, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "found a scalar");
    free(p);
    char *np = fx_path(dir, "null.h5");
    hid_t nf = H5Fcreate(np, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t ng = H5Gcreate2(nf, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t nsp = H5Screate(H5S_NULL);
    H5Dclose(H5Dcreate2(ng, "bad", H5T_NATIVE_FLOAT, nsp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(nsp);
    H5Gclose(ng);
    H5Fclose(nf);
    REFUSED(np, QERR_DATA, "tensor 'bad'", "empty (null) dataspace");
    free(np);
    hsize_t empty[2] = {0, 4};
    p = raw_dump("empty.h5", H5T_NATIVE_FLOAT, 2, empty, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "non-empty", "length 0");
    free(p);
    p = raw_dump("rank9.h5", H5T_NATIVE_FLOAT, 9, dims, H5P_DEFAULT);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "rank 1 to 8", "found 9");
    free(p);
    hsize_t huge[3] = {1, (hsize_t)1 << 21, (hsize_t)1 << 21}, chunk[3] = {1, 16, 16};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    p = raw_dump("huge.h5", H5T_NATIVE_FLOAT, 3, huge, dcpl);
    REFUSED(p, QERR_DATA, "tensor 'bad'", "2^40");
    free(p);
    H5Pclose(dcpl);
}

Test(dump, bad_channel_axis)
{
    static float v[24];
    const int axes[3] = {0, 5, -4};
    const char *found[3] = {"found 0", "found 5", "found -4"};
    for (int k = 0; k < 3; k++) {
        fx_dataset ds = {.name = "t", .dtype = DUMP_F32, .rank = 3, .dims = {2, 3, 4}, .data = v,
                         .channel_axis = axes[k]};
        char name[32];
        snprintf(name, sizeof name, "axis%d.h5", k);
        char *p = fx_path(dir, name);
        cr_assert_eq(fx_write_dump(p, &ds, 1, 0), 0);
        REFUSED(p, QERR_DATA, "tensor 't'", "channel_axis in [1, 2]", found[k]);
        free(p);
    }
}

Test(dump, no_tensor_at_all)
{
    char *p = fx_path(dir, "nothing.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(f);
    REFUSED(p, QERR_DATA, "expected numeric datasets", "found none");
    free(p);
}

/* h5py's LZF (filter 32000) is not in the HDF5 C library: an optional filter lets us write a
 * dataset that names it, and the reader must say what it is and what to do. */
Test(dump, unavailable_filter_is_named)
{
    hsize_t dims[2] = {4, 4}, chunk[2] = {2, 4};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    unsigned cd[1] = {0};
    cr_assert_geq(H5Pset_filter(dcpl, 32000, H5Z_FLAG_OPTIONAL, 1, cd), 0);
    char *p = raw_dump("lzf.h5", H5T_NATIVE_FLOAT, 2, dims, dcpl);
    H5Pclose(dcpl);
    REFUSED(p, QERR_UNAVAILABLE, "tensor 'bad'", "LZF", "gzip");
    free(p);
}

/* ---- /layers: a layer must name a tensor of the dump and have weights that fit it ------ */

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

static char *layered_dump(const char *file)
{
    static float v[2 * 8 * 4 * 4];
    fx_dataset ds[2] = {
        {.name = "fc.in", .dtype = DUMP_F32, .rank = 3, .dims = {2, 4, 16}, .data = v,
         .channel_axis = FX_NO_ATTR},
        {.name = "conv.in", .dtype = DUMP_F32, .rank = 4, .dims = {2, 8, 4, 4}, .data = v,
         .channel_axis = FX_NO_ATTR},
    };
    char *p = fx_path(dir, file);
    cr_assert_eq(fx_write_dump(p, ds, 2, 0), 0);
    return p;
}

Test(dump, layers_that_fit_are_accepted)
{
    char *p = layered_dump("layers_ok.h5");
    hsize_t lin[2] = {10, 16}, conv[4] = {6, 4, 3, 3};
    add_layer(p, "fc", "linear", "fc.in", 2, lin, 1);
    add_layer(p, "conv", "conv2d", "conv.in", 4, conv, 2);
    dump_close(open_ok(p));
    free(p);
}

Test(dump, layers_that_do_not_fit_are_refused)
{
    hsize_t lin_bad[2] = {10, 15}, conv[4] = {6, 4, 3, 3}, lin_rank3[3] = {10, 16, 1};
    char *p = layered_dump("l1.h5");
    add_layer(p, "fc", "linear", "no.such.tensor", 2, lin_bad, 1);
    REFUSED(p, QERR_DATA, "layer 'fc'", "expected input to name a tensor", "no.such.tensor");
    free(p);
    p = layered_dump("l2.h5");
    add_layer(p, "fc", "linear", "fc.in", 2, lin_bad, 1);
    REFUSED(p, QERR_DATA, "layer 'fc'", "does not fit input 'fc.in' of 16 features");
    free(p);
    p = layered_dump("l3.h5");
    add_layer(p, "conv", "conv2d", "conv.in", 4, conv, 1);
    REFUSED(p, QERR_DATA, "layer 'conv'", "groups 1", "8 features");
    free(p);
    p = layered_dump("l4.h5");
    add_layer(p, "fc", "linear", "fc.in", 3, lin_rank3, 1);
    REFUSED(p, QERR_DATA, "layer 'fc'", "weight of rank 2", "rank 3");
    free(p);
    p = layered_dump("l5.h5");
    add_layer(p, "fc", "attention", "fc.in", 2, lin_bad, 1);
    REFUSED(p, QERR_DATA, "layer 'fc'", "'linear' or 'conv2d'", "'attention'");
    free(p);
}

Test(dump, nan_only_and_inf_only_tensors_open)
{
    /* reading is fine; calibrating them is refused by the observers (see test_lua) */
    static float nan_only[4] = {NAN, NAN, NAN, NAN}, inf_only[4] = {INFINITY, -INFINITY, INFINITY, INFINITY};
    fx_dataset ds[2] = {
        {.name = "n", .dtype = DUMP_F32, .rank = 2, .dims = {2, 2}, .data = nan_only, .channel_axis = FX_NO_ATTR},
        {.name = "i", .dtype = DUMP_F32, .rank = 2, .dims = {2, 2}, .data = inf_only, .channel_axis = FX_NO_ATTR},
    };
    char *p = fx_path(dir, "nonfinite.h5");
    cr_assert_eq(fx_write_dump(p, ds, 2, 0), 0);
    dump *d = open_ok(p);
    float out[4];
    read_rows(d, "i", 0, 2, out);
    cr_expect(isinf(out[0]) && out[1] < 0 && isinf(out[1]));
    dump_close(d);
    free(p);
}
