/* test_pass.c - the streaming pass: values reach observers intact, for any threads and slabs */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dump.h"
#include "fixtures.h"
#include "params.h"
#include "pass.h"
#include "registry.h"

/* Three tensors of three stored types, one with NaN and Inf, one chunked in 4-row chunks. */
#define A_N 37
#define A_C 8
#define A_I 5
#define B_N 50
#define B_C 16
#define C_N 23

static float a_vals[A_N * A_C * A_I];
static uint16_t b_half[B_N * B_C];
static double c_vals[C_N * 3 * 4];

static char *dir, *dump_file, *gzip_file; /* the same tensors, gzip'd (with and without shuffle) */
static registry *reg;

static float half_ref(uint16_t h) /* written independently of the reader's conversion */
{
    int exp = (h >> 10) & 31, mant = h & 1023;
    float mag = exp == 0 ? ldexpf((float)mant, -24) : ldexpf(1.0f + mant / 1024.0f, exp - 15);
    return (h & 0x8000) ? -mag : mag;
}

static void make_dump(void)
{
    fx_fill_gauss(a_vals, A_N * A_C * A_I, 7, 0.5f, 2.0f);
    a_vals[17] = NAN;
    a_vals[301] = INFINITY;
    a_vals[1000] = -INFINITY;
    float tmp[B_N * B_C];
    fx_fill_gauss(tmp, B_N * B_C, 8, -1.0f, 3.0f);
    for (int i = 0; i < B_N * B_C; i++)
        b_half[i] = fx_float_to_half(tmp[i]);
    uint64_t st = 9;
    for (int i = 0; i < C_N * 12; i++)
        c_vals[i] = 100.0 * fx_rand_uniform(&st) - 20.0;
    fx_dataset ds[3] = {
        {.name = "a", .dtype = DUMP_F32, .rank = 3, .dims = {A_N, A_C, A_I}, .chunk_rows = 4,
         .data = a_vals, .channel_axis = FX_NO_ATTR},
        {.name = "b/half", .dtype = DUMP_F16, .rank = 2, .dims = {B_N, B_C}, .data = b_half,
         .channel_axis = FX_NO_ATTR},
        {.name = "c", .dtype = DUMP_F64, .rank = 3, .dims = {C_N, 3, 4}, .chunk_rows = 5,
         .data = c_vals, .channel_axis = 2},
    };
    dir = fx_tmpdir();
    dump_file = fx_path(dir, "dump.h5");
    cr_assert_eq(fx_write_dump(dump_file, ds, 3, 0), 0);
    ds[0].gzip = 1, ds[0].shuffle = 1;
    ds[0].chunk_cut[1] = 3, ds[0].chunk_cut[2] = 2; /* chunks that cut rows: 3 x 3 per row */
    ds[1].gzip = 6, ds[1].chunk_rows = 7;
    ds[2].gzip = 9, ds[2].shuffle = 1;
    gzip_file = fx_path(dir, "gzip.h5");
    cr_assert_eq(fx_write_dump(gzip_file, ds, 3, 0), 0);
    reg = registry_new(NULL, NULL);
    registry_load_dir(reg, TEST_PLUGIN_DIR);
    cr_assert_not_null(registry_observer(reg, "minmax"));
}

static void cleanup(void)
{
    registry_free(reg);
    fx_rmtree(dir);
    free(dir);
    free(dump_file);
    free(gzip_file);
}

TestSuite(pass, .init = make_dump, .fini = cleanup);

/* Declares minmax, minmax_per_channel, moving_average_minmax and histogram on every tensor
 * (handles[4 t] is tensor t's minmax). */
static pass *declare_all(dump *d, int *handles, size_t *n)
{
    static const char *const names[] = {"minmax", "minmax_per_channel", "moving_average_minmax",
                                        "histogram"};
    pass *p = pass_new(d);
    *n = 0;
    for (size_t t = 0; t < dump_count(d); t++)
        for (int k = 0; k < 4; k++) {
            const reg_observer *o = registry_observer(reg, names[k]);
            cr_assert_not_null(o, "observer %s", names[k]);
            qcal_value v[16];
            qerror e = {0};
            cr_assert_eq(params_resolve(names[k], o->desc.params, o->desc.n_params, NULL, 0, v, &e), 0);
            handles[(*n)++] = pass_observe(p, t, o, v, PASS_AXIS_DEFAULT, &e);
            cr_assert_geq(handles[*n - 1], 0, "%s", e.msg);
        }
    return p;
}

/* Concatenates every serialized state and statistic into one byte string. */
static size_t fingerprint(pass *p, const int *handles, size_t n, unsigned char *out, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        for (int ser = 0; ser < 2; ser++) {
            hstat *s;
            qerror e = {0};
            int rc = ser ? pass_serialize(p, handles[i], &s, &e) : pass_finalize(p, handles[i], &s, &e);
            cr_assert_eq(rc, 0, "%s", e.msg);
            for (uint32_t a = 0; a < s->view.n_arrays; a++) {
                const qcal_array *arr = &s->view.arrays[a];
                size_t bytes = hstat_array_count(arr) * hstat_dtype_size(arr->dtype);
                cr_assert_leq(len + bytes, cap);
                memcpy(out + len, arr->data, bytes);
                len += bytes;
            }
            hstat_free(s);
        }
    return len;
}

static size_t piece_bytes = (size_t)256 << 10; /* the pass's default unless a test sets it */

static size_t run_on(const char *file, int threads, size_t slab_bytes, unsigned char *out,
                     size_t cap, pass_counts *counts)
{
    dump *d;
    qerror e = {0};
    cr_assert_eq(dump_open(file, &d, &e), 0, "%s", e.msg);
    int handles[32];
    size_t n;
    pass *p = declare_all(d, handles, &n);
    pass_options o;
    pass_defaults(&o);
    o.threads = threads;
    o.slab_bytes = slab_bytes;
    o.piece_bytes = piece_bytes;
    o.batch_size = 4;
    o.counts = counts;
    cr_assert_eq(pass_run(p, &o, &e), 0, "%s", e.msg);
    size_t len = fingerprint(p, handles, n, out, cap);
    pass_free(p);
    dump_close(d);
    return len;
}

static size_t run_with(int threads, size_t slab_bytes, unsigned char *out, size_t cap)
{
    return run_on(dump_file, threads, slab_bytes, out, cap, NULL);
}

Test(pass, bit_identical_for_any_threads_and_slab_size)
{
    static unsigned char ref[1 << 20], got[1 << 20];
    size_t ref_len = run_with(1, (size_t)4 << 20, ref, sizeof ref);
    const int threads[] = {2, 4, 3, 1};
    const size_t slabs[] = {1, 100, (size_t)4 << 20, 1000};
    for (int i = 0; i < 4; i++) {
        size_t len = run_with(threads[i], slabs[i], got, sizeof got);
        cr_assert_eq(len, ref_len);
        cr_assert(memcmp(ref, got, len) == 0, "threads %d slab %zu differ", threads[i], slabs[i]);
    }
    /* the observers of a tensor take a slab in pieces of whole batches (4 rows here) */
    const size_t pieces[] = {1, 700, 3000};
    for (int i = 0; i < 3; i++) {
        piece_bytes = pieces[i];
        size_t len = run_with(2, (size_t)4 << 20, got, sizeof got);
        piece_bytes = (size_t)256 << 10;
        cr_assert_eq(len, ref_len);
        cr_assert(memcmp(ref, got, len) == 0, "pieces of %zu bytes differ", pieces[i]);
    }
}

/* gzip'd chunks are read as stored and inflated by the workers (HDF5's pipeline never runs:
 * no slab is read plain), each chunk once when slabs can hold whole chunks, and the states
 * are those of the uncompressed dump, bit for bit, for any threads and slab size. */
Test(pass, gzip_chunks_inflated_on_the_workers_give_the_uncompressed_states)
{
    static unsigned char ref[1 << 20], got[1 << 20];
    size_t ref_len = run_with(1, (size_t)4 << 20, ref, sizeof ref);
    pass_counts counts;
    const int threads[] = {1, 2, 4, 3};
    const size_t slabs[] = {(size_t)4 << 20, (size_t)4 << 20, 1, 700};
    for (int i = 0; i < 4; i++) {
        memset(&counts, 0xff, sizeof counts);
        size_t len = run_on(gzip_file, threads[i], slabs[i], got, sizeof got, &counts);
        cr_assert_eq(len, ref_len);
        cr_assert(memcmp(ref, got, len) == 0, "threads %d slab %zu differ", threads[i], slabs[i]);
        cr_expect_eq(counts.plain_slabs, 0u, "threads %d slab %zu", threads[i], slabs[i]);
        cr_expect_gt(counts.packed_slabs, 0u);
        /* a: 37 rows in chunks of 4 (8 x 5 rows cut 3 x 3), b/half: 50 in 7, c: 23 in 5 */
        if (slabs[i] == ((size_t)4 << 20))
            cr_expect_eq(counts.packed_chunks, 10u * 9u + 8u + 5u, "threads %d", threads[i]);
        else
            cr_expect_geq(counts.packed_chunks, 10u * 9u + 8u + 5u);
    }
    /* the uncompressed dump has nothing to inflate */
    run_on(dump_file, 2, (size_t)4 << 20, got, sizeof got, &counts);
    cr_expect_eq(counts.packed_slabs, 0u);
    cr_expect_gt(counts.plain_slabs, 0u);
}

/* Contiguous storage in native order is mapped, not read (no copy): the states are those of
 * the chunked dump read through HDF5, bit for bit, for any threads and slab size (a slab of
 * one row included), and no slab is read plain. */
Test(pass, mapped_contiguous_values_give_the_states_hdf5_reads)
{
    static unsigned char ref[1 << 20], got[1 << 20];
    size_t ref_len = run_with(1, (size_t)4 << 20, ref, sizeof ref);
    fx_dataset ds[3] = {
        {.name = "a", .dtype = DUMP_F32, .rank = 3, .dims = {A_N, A_C, A_I}, .data = a_vals,
         .channel_axis = FX_NO_ATTR},
        {.name = "b/half", .dtype = DUMP_F16, .rank = 2, .dims = {B_N, B_C}, .data = b_half,
         .channel_axis = FX_NO_ATTR},
        {.name = "c", .dtype = DUMP_F64, .rank = 3, .dims = {C_N, 3, 4}, .data = c_vals,
         .channel_axis = 2},
    };
    char *contig = fx_path(dir, "contig.h5");
    cr_assert_eq(fx_write_dump(contig, ds, 3, 0), 0);
    pass_counts counts;
    const int threads[] = {1, 2, 4};
    const size_t slabs[] = {(size_t)4 << 20, 1, 700};
    for (int i = 0; i < 3; i++) {
        size_t len = run_on(contig, threads[i], slabs[i], got, sizeof got, &counts);
        cr_assert_eq(len, ref_len);
        cr_assert(memcmp(ref, got, len) == 0, "threads %d slab %zu differ", threads[i], slabs[i]);
        cr_expect_eq(counts.plain_slabs, 0u, "threads %d slab %zu", threads[i], slabs[i]);
        cr_expect_gt(counts.mapped_slabs, 0u);
    }
    free(contig);
}

/* One contiguous float32 tensor, big-endian or behind a user block: HDF5 reads it (swapping
 * bytes, or skipping the block), nothing is mapped, and the states are the same. */
static char *contiguous_file(const char *name, hid_t type, hsize_t userblock)
{
    char *path = fx_path(dir, name);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_userblock(fcpl, userblock);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[3] = {A_N, A_C, A_I};
    hid_t sp = H5Screate_simple(3, dims, NULL);
    hid_t d = H5Dcreate2(g, "a", type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a_vals), 0);
    H5Dclose(d), H5Sclose(sp), H5Gclose(g), H5Fclose(f), H5Pclose(fcpl);
    return path;
}

Test(pass, values_hdf5_must_convert_or_offset_are_read_not_mapped)
{
    static unsigned char ref[1 << 20], got[1 << 20];
    char *plain = contiguous_file("le.h5", H5T_IEEE_F32LE, 0);
    char *swapped = contiguous_file("be.h5", H5T_IEEE_F32BE, 0);
    char *blocked = contiguous_file("ub.h5", H5T_IEEE_F32LE, 512);
    pass_counts counts;
    size_t ref_len = run_on(plain, 2, (size_t)4 << 20, ref, sizeof ref, &counts);
    cr_expect_gt(counts.mapped_slabs, 0u, "little-endian, no user block: mapped");
    const char *files[2] = {swapped, blocked};
    for (int k = 0; k < 2; k++) {
        size_t len = run_on(files[k], 2, (size_t)4 << 20, got, sizeof got, &counts);
        cr_assert_eq(len, ref_len);
        cr_expect(memcmp(ref, got, len) == 0, "%s differs", files[k]);
        cr_expect_eq(counts.mapped_slabs, 0u, "%s", files[k]);
        cr_expect_gt(counts.plain_slabs, 0u, "%s", files[k]);
    }
    free(plain), free(swapped), free(blocked);
}

/* Chunks of whole rows (64 KiB here), unfiltered: a slab whose chunks lie end to end in the
 * file is mapped as one window; written last chunk first, they do not, and such slabs are read
 * through HDF5 (a slab of one chunk is still mapped). The states are the same every way. */
#define W_N 64
#define W_ROW 4096
static char *row_chunked_file(const char *name, const float *v, int reversed)
{
    char *path = fx_path(dir, name);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[2] = {W_N, W_ROW}, chunk[2] = {4, W_ROW}, count[2] = {4, W_ROW};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t d = H5Dcreate2(g, "w", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    hid_t mem = H5Screate_simple(2, count, NULL);
    for (int k = 0; k < W_N / 4; k++) { /* one chunk per write, in the order asked */
        hsize_t start[2] = {(hsize_t)(reversed ? W_N / 4 - 1 - k : k) * 4, 0};
        H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL);
        cr_assert_geq(H5Dwrite(d, H5T_NATIVE_FLOAT, mem, sp, H5P_DEFAULT, v + start[0] * W_ROW), 0);
    }
    H5Sclose(mem), H5Dclose(d), H5Pclose(dcpl), H5Sclose(sp), H5Gclose(g), H5Fclose(f);
    return path;
}

Test(pass, adjacent_row_chunks_are_mapped_others_read)
{
    static float v[W_N * W_ROW];
    static unsigned char ref[1 << 20], got[1 << 20];
    fx_fill_gauss(v, W_N * W_ROW, 21, 0.0f, 1.0f);
    v[5] = NAN;
    char *in_order = row_chunked_file("in_order.h5", v, 0);
    char *reversed = row_chunked_file("reversed.h5", v, 1);
    pass_counts counts;
    size_t ref_len = run_on(reversed, 1, (size_t)4 << 20, ref, sizeof ref, &counts);
    cr_expect_eq(counts.mapped_slabs, 0u, "one slab over chunks out of order: read");
    cr_expect_gt(counts.plain_slabs, 0u);
    const size_t slabs[] = {(size_t)4 << 20, 1, 200000};
    for (int i = 0; i < 3; i++) {
        size_t len = run_on(in_order, 2, slabs[i], got, sizeof got, &counts);
        cr_assert_eq(len, ref_len);
        cr_expect(memcmp(ref, got, len) == 0, "in order, slab %zu differs", slabs[i]);
        cr_expect(counts.mapped_slabs > 0 && counts.plain_slabs == 0, "slab %zu", slabs[i]);
    }
    size_t len = run_on(reversed, 2, 1, got, sizeof got, &counts); /* one chunk per slab */
    cr_assert_eq(len, ref_len);
    cr_expect(memcmp(ref, got, len) == 0, "reversed, slabs of one chunk differ");
    cr_expect(counts.mapped_slabs > 0 && counts.plain_slabs == 0);
    free(in_order), free(reversed);
}

static void naive_minmax(const float *x, size_t n, float *lo, float *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i])) {
            if (x[i] < *lo) *lo = x[i];
            if (x[i] > *hi) *hi = x[i];
        }
}

static void expect_minmax(pass *p, int h, float lo, float hi)
{
    hstat *s;
    qerror e = {0};
    cr_assert_eq(pass_finalize(p, h, &s, &e), 0, "%s", e.msg);
    const qcal_array *alo = hstat_find(&s->view, "lo"), *ahi = hstat_find(&s->view, "hi");
    cr_assert(alo && ahi);
    cr_expect_eq(((const float *)alo->data)[0], lo);
    cr_expect_eq(((const float *)ahi->data)[0], hi);
    hstat_free(s);
}

Test(pass, values_reach_observers_converted_and_complete)
{
    dump *d;
    qerror e = {0};
    cr_assert_eq(dump_open(dump_file, &d, &e), 0, "%s", e.msg);
    int handles[32];
    size_t n;
    pass *p = declare_all(d, handles, &n);
    pass_options o;
    pass_defaults(&o);
    o.threads = 2;
    o.slab_bytes = 64;
    cr_assert_eq(pass_run(p, &o, &e), 0, "%s", e.msg);
    float lo, hi, b_vals[B_N * B_C], c_float[C_N * 12];
    naive_minmax(a_vals, A_N * A_C * A_I, &lo, &hi);
    expect_minmax(p, handles[0], lo, hi); /* tensors sorted by name: a, b/half, c */
    for (int i = 0; i < B_N * B_C; i++)
        b_vals[i] = half_ref(b_half[i]);
    naive_minmax(b_vals, B_N * B_C, &lo, &hi);
    expect_minmax(p, handles[4], lo, hi);
    for (int i = 0; i < C_N * 12; i++)
        c_float[i] = (float)c_vals[i];
    naive_minmax(c_float, C_N * 12, &lo, &hi);
    expect_minmax(p, handles[8], lo, hi);
    pass_free(p);
    dump_close(d);
}

Test(pass, max_rows_reads_only_a_prefix)
{
    dump *d;
    qerror e = {0};
    cr_assert_eq(dump_open(dump_file, &d, &e), 0, "%s", e.msg);
    pass *p = pass_new(d);
    const reg_observer *o = registry_observer(reg, "minmax");
    int h = pass_observe(p, 2, o, NULL, PASS_AXIS_DEFAULT, &e);
    cr_assert_geq(h, 0, "%s", e.msg);
    pass_options opt;
    pass_defaults(&opt);
    opt.max_rows = 6;
    opt.slab_bytes = 1;
    cr_assert_eq(pass_run(p, &opt, &e), 0, "%s", e.msg);
    float prefix[6 * 12], lo, hi;
    for (int i = 0; i < 6 * 12; i++)
        prefix[i] = (float)c_vals[i];
    naive_minmax(prefix, 6 * 12, &lo, &hi);
    expect_minmax(p, h, lo, hi);
    pass_free(p);
    dump_close(d);
}

Test(pass, unsuitable_tensor_refused_at_declaration)
{
    dump *d;
    qerror e = {0};
    cr_assert_eq(dump_open(dump_file, &d, &e), 0, "%s", e.msg);
    pass *p = pass_new(d);
    const reg_observer *o = registry_observer(reg, "minmax_per_channel");
    cr_assert_lt(pass_observe(p, 0, o, NULL, 7, &e), 0);
    cr_expect(strstr(e.msg, "tensor 'a'") && strstr(e.msg, "channel axis"), "%s", e.msg);
    pass_free(p);
    dump_close(d);
}

Test(pass, statistic_before_run_is_an_error)
{
    dump *d;
    qerror e = {0};
    cr_assert_eq(dump_open(dump_file, &d, &e), 0, "%s", e.msg);
    pass *p = pass_new(d);
    int h = pass_observe(p, 0, registry_observer(reg, "minmax"), NULL, PASS_AXIS_DEFAULT, &e);
    hstat *s = NULL;
    cr_assert_lt(pass_finalize(p, h, &s, &e), 0);
    cr_expect(strstr(e.msg, "has not run"), "%s", e.msg);
    pass_free(p);
    dump_close(d);
}

/* A plugin failing in the middle of a pass on several threads: one line naming plugin,
 * observer and tensor; no deadlock; no statistic left as if valid. */
Test(pass, plugin_failure_mid_pass_fails_cleanly)
{
    qerror e = {0};
    cr_assert_eq(registry_load_file(reg, TEST_VARIANT_DIR "/variant_fails.so", &e), 0, "%s", e.msg);
    const reg_observer *o = registry_observer(reg, "variant_fails");
    cr_assert_not_null(o);
    for (int threads = 1; threads <= 4; threads *= 2) {
        dump *d;
        cr_assert_eq(dump_open(dump_file, &d, &e), 0, "%s", e.msg);
        pass *p = pass_new(d);
        int h = pass_observe(p, 0, o, NULL, PASS_AXIS_DEFAULT, &e);
        int ok = pass_observe(p, 0, registry_observer(reg, "minmax"), NULL, PASS_AXIS_DEFAULT, &e);
        cr_assert(h >= 0 && ok >= 0, "%s", e.msg);
        pass_options opt;
        pass_defaults(&opt);
        opt.threads = threads;
        opt.slab_bytes = 1;
        opt.batch_size = 1;
        qerror err = {0};
        cr_assert_neq(pass_run(p, &opt, &err), 0);
        cr_expect(strstr(err.msg, "variant_fails.so") && strstr(err.msg, "observer 'variant_fails'") &&
                  strstr(err.msg, "tensor 'a'") && strstr(err.msg, "refusing samples from"),
                  "%s", err.msg);
        hstat *s = NULL;
        cr_expect_neq(pass_finalize(p, ok, &s, &e), 0, "no statistic after a failed pass");
        pass_free(p);
        dump_close(d);
    }
}

/* ---- handing states over as each tensor is done (pass_set_keep) ------------------------- */

typedef struct kept {
    hstat *states[32];
    int times[32];        /* keep calls per handle */
    int order[32], n;     /* handles in the order they came */
    atomic_int inside;    /* keep calls running now */
    int overlapped;
    int fail_at;          /* the handle whose keep fails, or -1 */
} kept;

static int keep_into(void *ud, int h, hstat *state, qerror *e)
{
    kept *k = ud;
    if (atomic_fetch_add(&k->inside, 1) != 0)
        k->overlapped = 1;
    usleep(300); /* widen the window another thread's call would fall in */
    k->times[h]++;
    k->order[k->n++] = h;
    hstat_free(k->states[h]);
    k->states[h] = state;
    atomic_fetch_sub(&k->inside, 1);
    return h == k->fail_at ? qerror_set(e, QERR_IO, "keeping #%d failed", h) : 0;
}

static void kept_free(kept *k)
{
    for (int i = 0; i < 32; i++)
        hstat_free(k->states[i]);
}

/* declare_all on the test dump, its states handed to k. */
static pass *declare_all_keeping(dump **d, int *handles, size_t *n, kept *k)
{
    qerror e = {0};
    cr_assert_eq(dump_open(dump_file, d, &e), 0, "%s", e.msg);
    pass *p = declare_all(*d, handles, n);
    atomic_init(&k->inside, 0);
    pass_set_keep(p, keep_into, k);
    return p;
}

/* Runs p in slabs of 64 bytes, batches of 4 rows. */
static int run_keeping(pass *p, int threads, qerror *e)
{
    pass_options o;
    pass_defaults(&o);
    o.threads = threads;
    o.slab_bytes = 64;
    o.batch_size = 4;
    return pass_run(p, &o, e);
}

/* Every declaration is handed over exactly once, its state the one the pass would have held,
 * within a tensor in declaration order; the pass keeps none, and
 * pass_fold brings one back to finalize as before. */
Test(pass, keep_hands_every_state_over_once_and_keeps_none)
{
    static unsigned char ref[1 << 20];
    size_t ref_len = run_with(1, (size_t)4 << 20, ref, sizeof ref);
    for (int threads = 1; threads <= 3; threads++) {
        dump *d;
        qerror e = {0};
        int handles[32];
        size_t n;
        kept k = {.fail_at = -1};
        pass *p = declare_all_keeping(&d, handles, &n, &k);
        cr_assert_eq(run_keeping(p, threads, &e), 0, "%s", e.msg);
        cr_assert_eq((size_t)k.n, n);
        for (size_t i = 0; i < n; i++) {
            cr_expect_eq(k.times[handles[i]], 1, "handle %d kept %d times", handles[i],
                         k.times[handles[i]]);
            cr_expect_eq(pass_has_state(p, handles[i]), 0, "the pass still holds #%d", handles[i]);
        }
        for (int i = 1; i < k.n; i++) /* four observers per tensor, declared in a row */
            if (k.order[i] / 4 == k.order[i - 1] / 4)
                cr_expect_gt(k.order[i], k.order[i - 1], "within a tensor out of order");
        pass_set_keep(p, NULL, NULL);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(pass_fold(p, handles[i], &k.states[handles[i]]->view, 1, &e), 0, "%s",
                         e.msg);
        static unsigned char got[1 << 20];
        size_t len = fingerprint(p, handles, n, got, sizeof got);
        cr_expect(len == ref_len && memcmp(ref, got, len) == 0, "%d threads: other states",
                  threads);
        kept_free(&k);
        pass_free(p);
        dump_close(d);
    }
}

/* Tensors of one and of three slabs in turn: a worker can finish a one-slab tensor while
 * another is still handing over the three-slab one before it. Their keep calls must still
 * come one at a time. */
Test(pass, keep_calls_come_one_at_a_time)
{
    enum { TENSORS = 24, WIDTH = 8 };
    static float values[TENSORS][12 * WIDTH];
    static char names[TENSORS][16];
    fx_dataset ds[TENSORS];
    for (int t = 0; t < TENSORS; t++) {
        fx_fill_gauss(values[t], 12 * WIDTH, 40 + (unsigned)t, 0.0f, 1.0f);
        snprintf(names[t], sizeof names[t], "t%02d", t);
        ds[t] = (fx_dataset){.name = names[t], .dtype = DUMP_F32, .rank = 2,
                             .dims = {t % 2 ? 12 : 4, WIDTH}, .data = values[t],
                             .channel_axis = FX_NO_ATTR};
    }
    char *path = fx_path(dir, "alternating.h5");
    cr_assert_eq(fx_write_dump(path, ds, TENSORS, 0), 0);
    int overlapped = 0;
    for (int round = 0; round < 20 && !overlapped; round++) {
        dump *d;
        qerror e = {0};
        cr_assert_eq(dump_open(path, &d, &e), 0, "%s", e.msg);
        pass *p = pass_new(d);
        for (size_t t = 0; t < TENSORS; t++)
            cr_assert_geq(pass_observe(p, t, registry_observer(reg, "minmax"), NULL,
                                       PASS_AXIS_DEFAULT, &e), 0, "%s", e.msg);
        kept k = {.fail_at = -1};
        atomic_init(&k.inside, 0);
        pass_set_keep(p, keep_into, &k);
        pass_options o;
        pass_defaults(&o);
        o.threads = 2;
        o.slab_bytes = 4 * WIDTH * sizeof(float); /* one batch of 4 rows per slab */
        o.batch_size = 4;
        cr_assert_eq(pass_run(p, &o, &e), 0, "%s", e.msg);
        cr_expect_eq(k.n, TENSORS);
        overlapped = k.overlapped;
        kept_free(&k);
        pass_free(p);
        dump_close(d);
    }
    cr_expect_eq(overlapped, 0, "two keep calls ran at once");
    free(path);
}

/* A failing keep fails the pass with its own message, on any number of threads. */
Test(pass, keep_failure_fails_the_pass)
{
    for (int threads = 1; threads <= 3; threads++) {
        dump *d;
        qerror e = {0};
        int handles[32];
        size_t n;
        kept k = {.fail_at = 6};
        pass *p = declare_all_keeping(&d, handles, &n, &k);
        cr_expect_neq(run_keeping(p, threads, &e), 0);
        cr_expect_eq(e.code, QERR_IO);
        cr_expect(strstr(e.msg, "keeping #6 failed"), "%s", e.msg);
        kept_free(&k);
        pass_free(p);
        dump_close(d);
    }
}
