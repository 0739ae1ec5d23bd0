/* test_results.c - host statistics and the results file, checked with the raw HDF5 API */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hstat.h"
#include "qmath.h"
#include "fixtures.h"
#include "results.h"

/* ---- scaffolding ------------------------------------------------------------------------ */

static char dir[256];

static void mk_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/qcal_results_XXXXXX");
    cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    chmod(p, 0700);
    return remove(p);
}

static void rm_dir(void)
{
    chmod(dir, 0700);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(results, .init = mk_dir, .fini = rm_dir);
TestSuite(hstat);

static char *path_in(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static size_t dir_entries(void)
{
    DIR *d = opendir(dir);
    cr_assert(d);
    size_t n = 0;
    for (struct dirent *de; (de = readdir(d));)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int has_temp_files(void)
{
    DIR *d = opendir(dir);
    cr_assert(d);
    int found = 0;
    for (struct dirent *de; (de = readdir(d));)
        found |= strstr(de->d_name, ".tmp.") != NULL;
    closedir(d);
    return found;
}

static qcal_qspec mkspec(int bits, uint32_t flags, int axis)
{
    qcal_qspec s;
    qerror e = {0};
    cr_assert_eq(qmath_spec(&s, bits, flags, axis, &e), 0, "%s", e.msg);
    return s;
}

static results *one_tensor(const char *recipe)
{
    results *r = results_new(recipe, "dump.h5");
    cr_assert(r);
    qcal_qspec s = mkspec(8, 0, -1);
    double lo = -1.5, hi = 3.0;
    qerror e = {0};
    cr_assert_eq(results_put(r, "x", NULL, "minmax", &s, 1, &lo, &hi, &e), 0, "%s", e.msg);
    return r;
}

static void write_ok(const results *r, const char *p, int force)
{
    qerror e = {0};
    cr_assert_eq(results_write(r, p, force, &e), 0, "%s", e.msg);
}

/* ---- raw HDF5 readers, written for the test -------------------------------------------- */

static hid_t open_attr(hid_t loc, const char *name)
{
    cr_assert_gt(H5Aexists(loc, name), 0, "attribute '%s' missing", name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    cr_assert_geq(a, 0);
    hid_t sp = H5Aget_space(a);
    cr_assert_eq(H5Sget_simple_extent_type(sp), H5S_SCALAR, "attribute '%s' not scalar", name);
    H5Sclose(sp);
    return a;
}

static void attr_type(hid_t a, hid_t want, const char *name)
{
    hid_t t = H5Aget_type(a);
    cr_assert_gt(H5Tequal(t, want), 0, "attribute '%s' has the wrong HDF5 type", name);
    H5Tclose(t);
}

static double raw_f64(hid_t loc, const char *name)
{
    hid_t a = open_attr(loc, name);
    attr_type(a, H5T_IEEE_F64LE, name);
    double v;
    cr_assert_geq(H5Aread(a, H5T_NATIVE_DOUBLE, &v), 0);
    H5Aclose(a);
    return v;
}

static int64_t raw_i64(hid_t loc, const char *name)
{
    hid_t a = open_attr(loc, name);
    attr_type(a, H5T_STD_I64LE, name);
    int64_t v;
    cr_assert_geq(H5Aread(a, H5T_NATIVE_INT64, &v), 0);
    H5Aclose(a);
    return v;
}

static int raw_i8(hid_t loc, const char *name)
{
    hid_t a = open_attr(loc, name);
    attr_type(a, H5T_STD_I8LE, name);
    int8_t v;
    cr_assert_geq(H5Aread(a, H5T_NATIVE_INT8, &v), 0);
    H5Aclose(a);
    return v;
}

/* A variable-length UTF-8 string attribute (what h5py reads as str). */
static void expect_str(hid_t loc, const char *name, const char *want)
{
    hid_t a = open_attr(loc, name);
    hid_t t = H5Aget_type(a);
    cr_assert_eq(H5Tget_class(t), H5T_STRING, "attribute '%s' is not a string", name);
    cr_assert_gt(H5Tis_variable_str(t), 0, "attribute '%s' is not variable-length", name);
    cr_assert_eq(H5Tget_cset(t), H5T_CSET_UTF8, "attribute '%s' is not UTF-8", name);
    char *s = NULL;
    cr_assert_geq(H5Aread(a, t, &s), 0);
    if (want)
        cr_expect_str_eq(s, want, "attribute '%s'", name);
    else
        cr_expect(s && *s, "attribute '%s' is empty", name);
    H5free_memory(s);
    H5Tclose(t);
    H5Aclose(a);
}

static hid_t open_dset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    cr_assert_geq(d, 0, "dataset '%s' missing", name);
    hid_t t = H5Dget_type(d);
    cr_assert_gt(H5Tequal(t, type), 0, "dataset '%s' has the wrong HDF5 type", name);
    H5Tclose(t);
    hid_t sp = H5Dget_space(d);
    cr_assert_eq(H5Sget_simple_extent_ndims(sp), rank, "dataset '%s' rank", name);
    if (rank == 0)
        cr_assert_eq(H5Sget_simple_extent_type(sp), H5S_SCALAR, "dataset '%s' not scalar", name);
    hsize_t got[4] = {0};
    H5Sget_simple_extent_dims(sp, got, NULL);
    for (int i = 0; i < rank; i++)
        cr_assert_eq(got[i], dims[i], "dataset '%s' dim %d: %llu", name, i,
                     (unsigned long long)got[i]);
    H5Sclose(sp);
    return d;
}

static void read_dset(hid_t loc, const char *name, hid_t type, hid_t mtype, int rank,
                      const hsize_t *dims, void *out)
{
    hid_t d = open_dset(loc, name, type, rank, dims);
    cr_assert_geq(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), 0);
    H5Dclose(d);
}

static hid_t open_file(const char *p)
{
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(f, 0, "cannot open %s", p);
    return f;
}

static hid_t open_group(hid_t f, const char *name)
{
    cr_assert_gt(H5Lexists(f, name, H5P_DEFAULT), 0, "no group %s", name);
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(g, 0, "cannot open %s", name);
    return g;
}

/* ---- writing: what an h5py user sees ----------------------------------------------------- */

Test(results, root_attributes)
{
    results *r = one_tensor("minmax");
    write_ok(r, path_in("out.h5"), 0);
    hid_t f = open_file(path_in("out.h5"));
    expect_str(f, "qcal_version", NULL);
    expect_str(f, "recipe", "minmax");
    expect_str(f, "source", "dump.h5");
    hid_t a = open_attr(f, "created");
    char *s = NULL;
    hid_t t = H5Aget_type(a);
    H5Aread(a, t, &s);
    int y, mo, d, h, mi, se;
    char z = 0;
    cr_expect_eq(sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &se, &z), 7,
                 "created '%s' is not ISO 8601", s);
    cr_expect_eq(z, 'Z', "created '%s' is not UTC", s);
    cr_expect_eq(strlen(s), 20u);
    cr_expect(y >= 2024 && mo >= 1 && mo <= 12);
    H5free_memory(s);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
    results_free(r);
}

Test(results, per_tensor_calibration)
{
    results *r = one_tensor("minmax");
    result_tensor *t = results_find(r, "x");
    cr_assert(t);
    t->has_metrics = 1;
    t->mse = 0.25;
    t->sqnr_db = INFINITY;
    t->cosine = 0.5;
    t->note = strdup("constant tensor");
    write_ok(r, path_in("out.h5"), 0);
    results_free(r);

    hid_t f = open_file(path_in("out.h5"));
    hid_t g = open_group(f, "/calibration/x");
    expect_str(g, "method", "minmax");
    expect_str(g, "name", "x");
    expect_str(g, "tensor", "x");
    expect_str(g, "granularity", "per_tensor");
    expect_str(g, "note", "constant tensor");
    cr_expect_eq(raw_i64(g, "bits"), 8);
    cr_expect_eq(raw_i64(g, "qmin"), 0);
    cr_expect_eq(raw_i64(g, "qmax"), 255);
    cr_expect_eq(raw_i8(g, "symmetric"), 0);
    cr_expect_eq(raw_i8(g, "narrow_range"), 0);
    cr_expect_eq(raw_i8(g, "signed"), 0);
    cr_expect_eq(raw_f64(g, "min"), -1.5);
    cr_expect_eq(raw_f64(g, "max"), 3.0);
    cr_expect_eq(raw_f64(g, "threshold"), 3.0);
    cr_expect_eq(raw_f64(g, "scale"), 0x1.212122p-6); /* float32 nearest 4.5 / 255 */
    cr_expect_eq(raw_i64(g, "zero_point"), 85);
    cr_expect_eq(raw_f64(g, "mse"), 0.25);
    cr_expect(isinf(raw_f64(g, "sqnr_db")));
    cr_expect_eq(raw_f64(g, "cosine"), 0.5);
    cr_expect_eq(H5Aexists(g, "axis"), 0, "per-tensor has no axis");
    cr_expect_eq(H5Lexists(g, "scale", H5P_DEFAULT), 0, "per-tensor has no datasets");
    H5Gclose(g);
    H5Fclose(f);
}

Test(results, no_metrics_no_note)
{
    results *r = one_tensor("minmax");
    write_ok(r, path_in("out.h5"), 0);
    results_free(r);
    hid_t f = open_file(path_in("out.h5"));
    hid_t g = open_group(f, "/calibration/x");
    cr_expect_eq(H5Aexists(g, "mse"), 0);
    cr_expect_eq(H5Aexists(g, "sqnr_db"), 0);
    cr_expect_eq(H5Aexists(g, "cosine"), 0);
    cr_expect_eq(H5Aexists(g, "note"), 0);
    H5Gclose(g);
    H5Fclose(f);
}

static results *per_channel(void)
{
    results *r = results_new("minmax", "dump.h5");
    qcal_qspec s = mkspec(8, QCAL_QSPEC_SIGNED | QCAL_QSPEC_SYMMETRIC | QCAL_QSPEC_PER_CHANNEL, 1);
    double lo[] = {-1.0, -0.5, 0.0}, hi[] = {1.0, 2.0, 0.0};
    qerror e = {0};
    cr_assert_eq(results_put(r, "conv.w", "conv.weight", "minmax", &s, 3, lo, hi, &e), 0, "%s",
                 e.msg);
    return r;
}

Test(results, per_channel_calibration)
{
    results *r = per_channel();
    write_ok(r, path_in("out.h5"), 0);
    results_free(r);

    hid_t f = open_file(path_in("out.h5"));
    hid_t g = open_group(f, "/calibration/conv.w");
    expect_str(g, "granularity", "per_channel");
    expect_str(g, "name", "conv.weight");
    cr_expect_eq(raw_i64(g, "axis"), 1);
    cr_expect_eq(raw_i8(g, "symmetric"), 1);
    cr_expect_eq(raw_i8(g, "signed"), 1);
    cr_expect_eq(raw_i64(g, "qmin"), -128);
    /* the overall range [-1, 2] and its symmetric scale 2 / 127.5 */
    cr_expect_eq(raw_f64(g, "min"), -1.0);
    cr_expect_eq(raw_f64(g, "max"), 2.0);
    cr_expect_eq(raw_f64(g, "threshold"), 2.0);
    cr_expect_eq(raw_f64(g, "scale"), 0x1.010102p-6);
    cr_expect_eq(raw_i64(g, "zero_point"), 0);
    hsize_t c3[] = {3};
    double lo[3], hi[3], scale[3];
    int64_t zp[3] = {9, 9, 9};
    read_dset(g, "min", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, c3, lo);
    read_dset(g, "max", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, c3, hi);
    read_dset(g, "scale", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, c3, scale);
    read_dset(g, "zero_point", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, c3, zp);
    cr_expect(lo[0] == -1.0 && lo[1] == -0.5 && lo[2] == 0.0);
    cr_expect(hi[0] == 1.0 && hi[1] == 2.0 && hi[2] == 0.0);
    cr_expect_eq(scale[0], 0x1.010102p-7); /* 1 / 127.5 in float32 */
    cr_expect_eq(scale[1], 0x1.010102p-6); /* 2 / 127.5 */
    cr_expect_eq(scale[2], 0x1p-23);       /* the float32 epsilon floor */
    cr_expect(zp[0] == 0 && zp[1] == 0 && zp[2] == 0);
    H5Gclose(g);
    H5Fclose(f);
}

Test(results, nested_tensor_names)
{
    results *r = results_new("minmax", "dump.h5");
    qcal_qspec s = mkspec(8, 0, -1);
    double lo = -1.0, hi = 1.0;
    qerror e = {0};
    cr_assert_eq(results_put(r, "model.0/conv/Conv_output_0", "/model.0/conv/Conv_output_0",
                             "minmax", &s, 1, &lo, &hi, &e), 0, "%s", e.msg);
    cr_assert_eq(results_put(r, "a/b", NULL, "kl", &s, 1, &lo, &hi, &e), 0, "%s", e.msg);
    cr_assert_eq(results_put(r, "a", NULL, "mse", &s, 1, &lo, &hi, &e), 0, "%s", e.msg);
    write_ok(r, path_in("out.h5"), 0);
    results_free(r);

    hid_t f = open_file(path_in("out.h5"));
    hid_t g = open_group(f, "/calibration/model.0/conv/Conv_output_0");
    expect_str(g, "name", "/model.0/conv/Conv_output_0");
    expect_str(g, "tensor", "model.0/conv/Conv_output_0");
    H5Gclose(g);
    g = open_group(f, "/calibration/a");
    expect_str(g, "method", "mse");
    H5Gclose(g);
    g = open_group(f, "/calibration/a/b");
    expect_str(g, "method", "kl");
    H5Gclose(g);
    H5Fclose(f);

    cr_assert_eq(results_read(path_in("out.h5"), &r, &e), 0, "%s", e.msg);
    cr_expect_eq(r->n_tensors, 3u);
    result_tensor *t = results_find(r, "model.0/conv/Conv_output_0");
    cr_assert(t);
    cr_expect_str_eq(t->orig_name, "/model.0/conv/Conv_output_0");
    cr_assert(results_find(r, "a") && results_find(r, "a/b"));
    cr_expect_str_eq(results_find(r, "a")->method, "mse");
    cr_expect_str_eq(results_find(r, "a/b")->method, "kl");
    results_free(r);
}

/* A "qcal.test" v3 statistic of two channels: lo f32[2], count u64 (scalar), grid i64[2, 3]
 * and an empty f64 array (`empty`: its data pointer, which may be NULL). */
static hstat *test_stat(const float *lo, uint64_t count, const int64_t *grid, const double *empty)
{
    qcal_array a[4] = {
        {.name = "lo", .dtype = QCAL_DTYPE_F32, .rank = 1, .shape = {2}, .data = lo},
        {.name = "count", .dtype = QCAL_DTYPE_U64, .rank = 0, .data = &count},
        {.name = "grid", .dtype = QCAL_DTYPE_I64, .rank = 2, .shape = {2, 3}, .data = grid},
        {.name = "empty", .dtype = QCAL_DTYPE_F64, .rank = 1, .shape = {0}, .data = empty},
    };
    qcal_stat st = {.kind = "qcal.test", .kind_version = 3, .n_arrays = 4, .channels = 2,
                    .arrays = a};
    hstat *h = NULL;
    qerror e = {0};
    cr_assert_eq(hstat_copy(&st, &h, &e), 0, "%s", e.msg);
    return h;
}

/* A statistic with every dtype, a scalar and an empty array. */
static hstat *sample_stat(void)
{
    static const float lo[2] = {-1.5f, 0.25f};
    static const uint64_t count = 12345678901ULL;
    static const int64_t grid[6] = {-3, -2, -1, 0, 1, 2};
    static const double none[1] = {0};
    return test_stat(lo, count, grid, none);
}

Test(results, statistics_raw)
{
    results *r = one_tensor("minmax");
    qerror e = {0};
    cr_assert_eq(results_add_stat(r, "layer/1", "minmax", "percentile=99.9", sample_stat(), &e),
                 0, "%s", e.msg);
    write_ok(r, path_in("out.h5"), 0);
    results_free(r);

    hid_t f = open_file(path_in("out.h5"));
    hid_t g = open_group(f, "/statistics/layer/1/minmax");
    expect_str(g, "kind", "qcal.test");
    expect_str(g, "params", "percentile=99.9");
    cr_expect_eq(raw_i64(g, "kind_version"), 3);
    cr_expect_eq(raw_i64(g, "channels"), 2);
    hsize_t d2[] = {2}, d23[] = {2, 3}, d0[] = {0};
    float lo[2];
    uint64_t count = 0;
    int64_t grid[6];
    read_dset(g, "lo", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, d2, lo);
    read_dset(g, "count", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, NULL, &count);
    read_dset(g, "grid", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d23, grid);
    H5Dclose(open_dset(g, "empty", H5T_IEEE_F64LE, 1, d0));
    cr_expect(lo[0] == -1.5f && lo[1] == 0.25f);
    cr_expect_eq(count, 12345678901ULL);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(grid[i], i - 3);
    H5Gclose(g);
    H5Fclose(f);
}

/* ---- reading back ----------------------------------------------------------------------- */

Test(results, round_trip)
{
    results *r = per_channel();
    qerror e = {0};
    qcal_qspec s = mkspec(4, QCAL_QSPEC_SIGNED | QCAL_QSPEC_NARROW, -1);
    double lo = -0.75, hi = 2.5;
    cr_assert_eq(results_put(r, "act", "act:0", "percentile", &s, 1, &lo, &hi, &e), 0);
    result_tensor *t = results_find(r, "act");
    t->has_metrics = 1;
    t->mse = 1e-3;
    t->sqnr_db = 31.5;
    t->cosine = 0.999;
    cr_assert_eq(results_add_stat(r, "act", "hist", "bins=2048", sample_stat(), &e), 0);
    write_ok(r, path_in("out.h5"), 0);

    results *b = NULL;
    cr_assert_eq(results_read(path_in("out.h5"), &b, &e), 0, "%s", e.msg);
    cr_expect_str_eq(b->recipe, "minmax");
    cr_expect_str_eq(b->source, "dump.h5");
    cr_expect_str_eq(b->created, r->created);
    cr_expect_str_eq(b->qcal_version, r->qcal_version);
    cr_assert_eq(b->n_tensors, 2u);
    for (size_t i = 0; i < r->n_tensors; i++) {
        result_tensor *x = &r->tensors[i], *y = results_find(b, x->tensor);
        cr_assert(y, "tensor %s lost", x->tensor);
        cr_expect_str_eq(y->orig_name, x->orig_name);
        cr_expect_str_eq(y->method, x->method);
        cr_expect_eq(memcmp(&y->spec, &x->spec, sizeof x->spec), 0, "spec of %s", x->tensor);
        cr_assert_eq(y->channels, x->channels);
        for (uint64_t c = 0; c < x->channels; c++)
            cr_expect(y->lo[c] == x->lo[c] && y->hi[c] == x->hi[c] &&
                      y->scale[c] == x->scale[c] && y->zero_point[c] == x->zero_point[c],
                      "%s channel %llu", x->tensor, (unsigned long long)c);
        cr_expect_eq(y->has_metrics, x->has_metrics);
        cr_expect(y->mse == x->mse && y->sqnr_db == x->sqnr_db && y->cosine == x->cosine);
        cr_expect_null(y->note);
    }
    cr_assert_eq(b->n_stats, 1u);
    result_stat *st = &b->stats[0];
    cr_expect_str_eq(st->tensor, "act");
    cr_expect_str_eq(st->observer, "hist");
    cr_expect_str_eq(st->params, "bins=2048");
    const qcal_stat *v = &st->state->view;
    cr_expect_str_eq(v->kind, "qcal.test");
    cr_expect_eq(v->kind_version, 3u);
    cr_expect_eq(v->channels, 2u);
    cr_assert_eq(v->n_arrays, 4u);
    const char *order[] = {"lo", "count", "grid", "empty"};
    for (int i = 0; i < 4; i++)
        cr_expect_str_eq(v->arrays[i].name, order[i], "arrays keep their order");
    const qcal_array *c = hstat_find(v, "count");
    cr_assert(c);
    cr_expect(c->dtype == QCAL_DTYPE_U64 && c->rank == 0);
    cr_expect_eq(*(const uint64_t *)c->data, 12345678901ULL);
    const qcal_array *g = hstat_find(v, "grid");
    cr_expect(g->dtype == QCAL_DTYPE_I64 && g->rank == 2 && g->shape[0] == 2 && g->shape[1] == 3);
    cr_expect_eq(((const int64_t *)g->data)[5], 2);
    const qcal_array *l = hstat_find(v, "lo");
    cr_expect(l->dtype == QCAL_DTYPE_F32 && ((const float *)l->data)[0] == -1.5f);
    const qcal_array *em = hstat_find(v, "empty");
    cr_expect(em->dtype == QCAL_DTYPE_F64 && em->rank == 1 && em->shape[0] == 0);
    results_free(b);
    results_free(r);
}

Test(results, read_rejects_foreign_files)
{
    qerror e = {0};
    results *r = (results *)1;
    cr_expect_eq(results_read(path_in("missing.h5"), &r, &e), -1);
    cr_expect_eq(e.code, QERR_NOINPUT);
    cr_expect(strstr(e.msg, "missing.h5") && strstr(e.msg, "No such file"), "%s", e.msg);
    cr_expect_null(r);

    FILE *t = fopen(path_in("text.h5"), "w");
    fputs("not hdf5\n", t);
    fclose(t);
    cr_expect_eq(results_read(path_in("text.h5"), &r, &e), -1);
    cr_expect_eq(e.code, QERR_DATA);
    cr_expect(strstr(e.msg, "text.h5") && strstr(e.msg, "not a qcal results file"), "%s", e.msg);

    hid_t f = H5Fcreate(path_in("plain.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(f);
    cr_expect_eq(results_read(path_in("plain.h5"), &r, &e), -1);
    cr_expect_eq(e.code, QERR_DATA);
    cr_expect(strstr(e.msg, "plain.h5") && strstr(e.msg, "not a qcal results file"), "%s",
              e.msg);
}

/* Rewrites one numeric attribute of a written file with the raw API (v of memory type t). */
static void tamper_attr(const char *p, const char *obj, const char *name, hid_t t, const void *v)
{
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, obj, H5P_DEFAULT);
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, t, v), 0);
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(f);
}

static void tamper_i64(const char *p, const char *obj, const char *name, int64_t v)
{
    tamper_attr(p, obj, name, H5T_NATIVE_INT64, &v);
}

/* Replaces a string attribute of a written file by a fixed-length one holding `v`. */
static void tamper_str(const char *p, const char *obj, const char *name, const char *v)
{
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, obj, H5P_DEFAULT);
    cr_assert_geq(H5Adelete(g, name), 0);
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, strlen(v) + 1);
    hid_t a = H5Acreate2(g, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, t, v), 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Gclose(g);
    H5Fclose(f);
}

/* Reading the file at p is bad data, said in one message holding what and detail. */
static void expect_read_refused(const char *p, const char *what, const char *detail)
{
    results *r = NULL;
    qerror e = {0};
    cr_expect_eq(results_read(p, &r, &e), -1, "%s read", p);
    cr_expect_eq(e.code, QERR_DATA, "%s", e.msg);
    cr_expect(strstr(e.msg, what) && strstr(e.msg, detail), "%s", e.msg);
}

Test(results, read_validates_entries)
{
    results *r = one_tensor("minmax");
    write_ok(r, path_in("a.h5"), 0);
    write_ok(r, path_in("b.h5"), 0);
    qerror e = {0};
    cr_assert_eq(results_add_stat(r, "x", "minmax", "", sample_stat(), &e), 0, "%s", e.msg);
    write_ok(r, path_in("c.h5"), 0);
    write_ok(r, path_in("d.h5"), 0);
    results_free(r);

    tamper_i64(path_in("a.h5"), "/calibration/x", "qmax", 127);
    expect_read_refused(path_in("a.h5"), "/calibration/x", "qmin/qmax");
    tamper_i64(path_in("b.h5"), "/calibration/x", "zero_point", 300);
    expect_read_refused(path_in("b.h5"), "/calibration/x", "zero-point 300");
    /* a damaged file's observer name: bad data, not an internal error */
    tamper_str(path_in("c.h5"), "/statistics/x/minmax", "observer", "");
    expect_read_refused(path_in("c.h5"), "c.h5': /statistics/x/minmax",
                        "an observer name, found 'x' and ''");
    /* finite as a double, not as the float32 every format holds (found by fuzzing: the JSON
     * exports then failed as if out of memory) */
    const double beyond_float = -2e284;
    tamper_attr(path_in("d.h5"), "/calibration/x", "min", H5T_NATIVE_DOUBLE, &beyond_float);
    expect_read_refused(path_in("d.h5"), "/calibration/x", "finite in float32");
}

/* The values' extremes are noted before or after the result is put, widen one another, leave
 * non-finite and inverted ranges out, and come back from the file as data_min / data_max. */
Test(results, data_range_noted_in_any_order_round_trips)
{
    results *r = one_tensor("minmax");
    qerror e = {0};
    cr_assert_eq(results_note_data_range(r, "x", -1.0, 2.0, &e), 0);
    cr_assert_eq(results_note_data_range(r, "x", -0.5, 3.0, &e), 0);
    cr_assert_eq(results_note_data_range(r, "x", NAN, 9.0, &e), 0);
    cr_assert_eq(results_note_data_range(r, "x", 5.0, 4.0, &e), 0);
    cr_assert_eq(results_note_data_range(r, "later", 0.0, 1.5, &e), 0);
    qcal_qspec s = mkspec(8, 0, -1);
    double lo = 0, hi = 1;
    cr_assert_eq(results_put(r, "later", NULL, "kl", &s, 1, &lo, &hi, &e), 0, "%s", e.msg);
    cr_assert_eq(results_put(r, "none", NULL, "kl", &s, 1, &lo, &hi, &e), 0, "%s", e.msg);
    write_ok(r, path_in("dr.h5"), 0);
    results_free(r);
    cr_assert_eq(results_read(path_in("dr.h5"), &r, &e), 0, "%s", e.msg);
    result_tensor *x = results_find(r, "x"), *later = results_find(r, "later"), *none = results_find(r, "none");
    cr_expect(x->has_data_range && x->data_min == -1.0 && x->data_max == 3.0, "[%g, %g]",
              x->data_min, x->data_max);
    cr_expect(later->has_data_range && later->data_min == 0.0 && later->data_max == 1.5);
    cr_expect(!none->has_data_range);
    results_free(r);
    const double above = 7.0;
    tamper_attr(path_in("dr.h5"), "/calibration/x", "data_min", H5T_NATIVE_DOUBLE, &above);
    expect_read_refused(path_in("dr.h5"), "/calibration/x", "data range");
}

/* ---- the atomic write --------------------------------------------------------------------- */

Test(results, refuses_overwrite_without_force)
{
    results *r = one_tensor("first");
    write_ok(r, path_in("out.h5"), 0);
    size_t n0, n1;
    char *before = fx_read_file(path_in("out.h5"), &n0);
    cr_assert_not_null(before, "cannot read the file");
    results *r2 = one_tensor("second");
    qerror e = {0};
    cr_expect_eq(results_write(r2, path_in("out.h5"), 0, &e), -1);
    cr_expect_eq(e.code, QERR_CANTCREAT);
    cr_expect(strstr(e.msg, "refusing to overwrite existing '") &&
              strstr(e.msg, "out.h5' (use --force)"), "%s", e.msg);
    char *after = fx_read_file(path_in("out.h5"), &n1);
    cr_assert_not_null(after, "cannot read the file");
    cr_expect(n0 == n1 && memcmp(before, after, n0) == 0, "the old file changed");
    cr_expect_eq(dir_entries(), 1u, "temp files left behind");

    write_ok(r2, path_in("out.h5"), 1);
    cr_expect_eq(dir_entries(), 1u, "temp files left behind");
    results *b = NULL;
    cr_assert_eq(results_read(path_in("out.h5"), &b, &e), 0, "%s", e.msg);
    cr_expect_str_eq(b->recipe, "second", "--force replaced the file");
    results_free(b);
    free(before);
    free(after);
    results_free(r);
    results_free(r2);
}

Test(results, failed_write_leaves_target_untouched)
{
    results *r = one_tensor("first");
    write_ok(r, path_in("out.h5"), 0);
    size_t n0, n1;
    char *before = fx_read_file(path_in("out.h5"), &n0);
    cr_assert_not_null(before, "cannot read the file");

    /* A statistic corrupted after validation makes the writer fail half-way through. */
    qerror e = {0};
    hstat *h = sample_stat();
    h->arrays[2].dtype = 99;
    cr_assert_eq(results_add_stat(r, "x", "minmax", "", h, &e), 0);
    cr_expect_eq(results_write(r, path_in("out.h5"), 1, &e), -1);
    cr_expect(strstr(e.msg, "out.h5") && strstr(e.msg, "grid"), "%s", e.msg);
    char *after = fx_read_file(path_in("out.h5"), &n1);
    cr_assert_not_null(after, "cannot read the file");
    cr_expect(n0 == n1 && memcmp(before, after, n0) == 0, "the old file changed");
    cr_expect(!has_temp_files(), "temp file left behind");
    cr_expect_eq(dir_entries(), 1u);

    cr_expect_eq(results_write(r, path_in("new.h5"), 0, &e), -1);
    cr_expect_eq(access(path_in("new.h5"), F_OK), -1, "no half-written file appears");
    cr_expect_eq(dir_entries(), 1u, "temp file left behind");
    free(before);
    free(after);
    results_free(r);
}

Test(results, no_temp_files_after_success)
{
    results *r = per_channel();
    write_ok(r, path_in("out.h5"), 0);
    write_ok(r, path_in("out.h5"), 1);
    cr_expect_eq(dir_entries(), 1u);
    cr_expect(!has_temp_files());
    results_free(r);
}

Test(results, file_mode_follows_umask)
{
    umask(022);
    results *r = one_tensor("minmax");
    write_ok(r, path_in("out.h5"), 0);
    struct stat st;
    cr_assert_eq(stat(path_in("out.h5"), &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0644u, "mode %o (mkstemp's 0600 leaked?)", st.st_mode & 0777);
    results_free(r);
}

/* Replacing a read-only (0444) results file with force, as its owner: the new file gets the
 * old mode once written (given it before, the temporary file could not be opened for writing:
 * "HDF5 error"; found by an audit as a user). Run as root, the test's own process drops to
 * nobody, for whom the permission bits count. */
Test(results, replacing_a_read_only_file_keeps_its_mode)
{
    results *r = one_tensor("minmax");
    write_ok(r, path_in("ro.h5"), 0);
    cr_assert_eq(chmod(path_in("ro.h5"), 0444), 0);
    if (geteuid() == 0) {
        cr_assert_eq(chown(dir, 65534, 65534), 0);
        cr_assert_eq(chown(path_in("ro.h5"), 65534, 65534), 0);
        cr_assert_eq(setgid(65534), 0);
        cr_assert_eq(setuid(65534), 0);
    }
    qerror e = {0};
    cr_expect_eq(results_write(r, path_in("ro.h5"), 1, &e), 0, "%s", e.msg);
    struct stat st;
    cr_assert_eq(stat(path_in("ro.h5"), &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0444u, "mode %o", st.st_mode & 0777);
    results *back = NULL;
    cr_expect_eq(results_read(path_in("ro.h5"), &back, &e), 0, "%s", e.msg);
    results_free(back);
    results_free(r);
}

static void expect_cantcreat(const char *p, const char *why)
{
    results *r = one_tensor("minmax");
    qerror e = {0};
    cr_expect_eq(results_write(r, p, 1, &e), -1, "wrote %s", p);
    cr_expect_eq(e.code, QERR_CANTCREAT);
    cr_expect(strstr(e.msg, p) && strstr(e.msg, why), "message '%s' lacks '%s' or '%s'", e.msg,
              p, why);
    results_free(r);
}

Test(results, missing_folder)
{
    expect_cantcreat(path_in("nope/out.h5"), "No such file or directory");
}

Test(results, file_as_folder)
{
    FILE *f = fopen(path_in("plain"), "w");
    fclose(f);
    expect_cantcreat(path_in("plain/out.h5"), "Not a directory");
    cr_expect_eq(dir_entries(), 1u);
}

Test(results, target_is_a_folder)
{
    cr_assert_eq(mkdir(path_in("out.h5"), 0700), 0);
    expect_cantcreat(path_in("out.h5"), "is a directory");
    cr_expect_eq(dir_entries(), 1u);
}

Test(results, read_only_folder)
{
    cr_assert_eq(mkdir(path_in("ro"), 0700), 0);
    cr_assert_eq(chmod(path_in("ro"), 0500), 0);
    FILE *probe = fopen(path_in("ro/probe"), "w");
    if (!probe) {
        expect_cantcreat(path_in("ro/out.h5"), "Permission denied");
        return;
    }
    fclose(probe); /* root ignores mode bits; sysfs refuses new files even to root */
    probe = fopen("/sys/qcal_probe.h5", "w");
    if (probe) {
        fclose(probe);
        remove("/sys/qcal_probe.h5");
        cr_skip_test("no folder this user cannot write to");
    }
    expect_cantcreat("/sys/qcal_test_out.h5", "cannot create '/sys/qcal_test_out.h5': ");
}

/* ---- results_put and add_stat ----------------------------------------------------------- */

Test(results, put_replaces)
{
    results *r = one_tensor("minmax");
    qcal_qspec s = mkspec(8, QCAL_QSPEC_SIGNED | QCAL_QSPEC_SYMMETRIC, -1);
    double lo = -2.0, hi = 1.0;
    cr_assert_eq(results_put(r, "x", "orig", "kl", &s, 1, &lo, &hi, NULL), 0);
    cr_expect_eq(r->n_tensors, 1u);
    result_tensor *t = results_find(r, "x");
    cr_expect_str_eq(t->method, "kl");
    cr_expect_str_eq(t->orig_name, "orig");
    cr_expect_eq(t->scale[0], 0x1.010102p-6); /* 2 / 127.5 */
    cr_expect_eq(t->zero_point[0], 0);
    cr_expect_null(results_find(r, "y"));
    results_free(r);
}

static void expect_put_refused(const char *tensor, uint32_t flags, uint64_t channels,
                               const double *lo, const double *hi, const char *words)
{
    results *r = results_new("minmax", "d.h5");
    qcal_qspec s = mkspec(8, flags, (flags & QCAL_QSPEC_PER_CHANNEL) ? 1 : -1);
    qerror e = {0};
    cr_expect_eq(results_put(r, tensor, NULL, "minmax", &s, channels, lo, hi, &e), -1);
    cr_expect(strstr(e.msg, words), "message '%s' lacks '%s'", e.msg, words);
    cr_expect_eq(r->n_tensors, 0u);
    results_free(r);
}

Test(results, put_refuses)
{
    double lo[] = {-1, 0, NAN}, hi[] = {1, -1, 1};
    expect_put_refused("", 0, 1, lo, hi, "bad tensor name");
    expect_put_refused("/a", 0, 1, lo, hi, "bad tensor name");
    expect_put_refused("a//b", 0, 1, lo, hi, "bad tensor name");
    expect_put_refused("a/", 0, 1, lo, hi, "bad tensor name");
    expect_put_refused("a/./b", 0, 1, lo, hi, "bad tensor name");
    expect_put_refused("t", 0, 2, lo, hi, "per-tensor spec but 2 ranges");
    expect_put_refused("t", QCAL_QSPEC_PER_CHANNEL, 2, lo, hi, "tensor 't' channel 1: range");
    expect_put_refused("t", QCAL_QSPEC_PER_CHANNEL, 3, lo, hi, "tensor 't' channel 1");
    expect_put_refused("t", 0, 1, lo + 2, hi + 2, "tensor 't': range");
}

Test(results, add_stat_replaces_same_params_and_keeps_others)
{
    results *r = one_tensor("minmax");
    cr_assert_eq(results_add_stat(r, "x", "minmax", "a=1", sample_stat(), NULL), 0);
    cr_assert_eq(results_add_stat(r, "x", "minmax", "a=2", sample_stat(), NULL), 0);
    cr_assert_eq(results_add_stat(r, "x", "minmax", "a=1", sample_stat(), NULL), 0);
    cr_assert_eq(results_add_stat(r, "x", "hist", NULL, sample_stat(), NULL), 0);
    cr_expect_eq(r->n_stats, 3u);
    cr_expect_str_eq(r->stats[0].params, "a=1");
    cr_expect_str_eq(r->stats[1].params, "a=2");
    cr_expect_str_eq(r->stats[2].params, "");
    qerror e = {0};
    cr_expect_eq(results_add_stat(r, "x", "a/b", NULL, sample_stat(), &e), -1);
    cr_expect_eq(r->n_stats, 3u);
    results_free(r);
}

/* Two states of one observer (other params) and a tensor description survive a round trip:
 * the second state is written as group "minmax#2" but reads back as observer "minmax". */
Test(results, states_with_other_params_and_tensor_info_round_trip)
{
    results *r = one_tensor("minmax");
    qerror e = {0};
    cr_assert_eq(results_add_stat(r, "x", "minmax", "a=1", sample_stat(), &e), 0);
    cr_assert_eq(results_add_stat(r, "x", "minmax", "a=2", sample_stat(), &e), 0);
    result_info in = {.tensor = "x", .rank = 3, .shape = {5, 4, 3}, .channel_axis = 2,
                      .orig_name = "/x:0", .dtype = "float16", .op_type = "Conv"};
    cr_assert_eq(results_add_info(r, &in, &e), 0, "%s", e.msg);
    cr_assert_eq(results_write(r, path_in("i.h5"), 0, &e), 0, "%s", e.msg);
    results_free(r);
    hid_t f = H5Fopen(path_in("i.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_expect_gt(H5Lexists(f, "/statistics/x/minmax#2", H5P_DEFAULT), 0);
    H5Fclose(f);
    cr_assert_eq(results_read(path_in("i.h5"), &r, &e), 0, "%s", e.msg);
    cr_assert_eq(r->n_stats, 2u);
    cr_expect_str_eq(r->stats[0].observer, "minmax");
    cr_expect_str_eq(r->stats[1].observer, "minmax");
    cr_expect(strcmp(r->stats[0].params, r->stats[1].params) != 0);
    const result_info *got = results_find_info(r, "x");
    cr_assert_not_null(got);
    cr_expect_eq(got->rank, 3);
    cr_expect_eq(got->shape[0], 5u);
    cr_expect_eq(got->shape[2], 3u);
    cr_expect_eq(got->channel_axis, 2);
    cr_expect_str_eq(got->orig_name, "/x:0");
    cr_expect_str_eq(got->dtype, "float16");
    cr_expect_str_eq(got->op_type, "Conv");
    results_free(r);
}

/* ---- saved states beyond the memory budget, in a temporary file ------------------------- */

/* A statistic whose values depend on i: lo = {i, -i / 8}, count = 1000 + i, grid = i .. i + 5,
 * and an empty array. 64 bytes of arrays. */
static hstat *numbered_stat(int i)
{
    float lo[2] = {(float)i, -(float)i / 8};
    uint64_t count = 1000u + (uint64_t)i;
    int64_t grid[6];
    for (int k = 0; k < 6; k++)
        grid[k] = i + k;
    return test_stat(lo, count, grid, NULL);
}

/* Checks the view against numbered_stat(i), value by value. */
static void expect_numbered(const qcal_stat *v, int i)
{
    cr_assert_not_null(v);
    cr_expect_str_eq(v->kind, "qcal.test");
    cr_expect_eq(v->kind_version, 3u);
    cr_expect_eq(v->channels, 2u);
    cr_assert_eq(v->n_arrays, 4u);
    const qcal_array *lo = hstat_find(v, "lo"), *count = hstat_find(v, "count");
    const qcal_array *grid = hstat_find(v, "grid"), *empty = hstat_find(v, "empty");
    cr_assert(lo && count && grid && empty);
    cr_expect_eq(((const float *)lo->data)[0], (float)i);
    cr_expect_eq(((const float *)lo->data)[1], -(float)i / 8);
    cr_expect_eq(*(const uint64_t *)count->data, 1000u + (uint64_t)i);
    cr_expect_eq(count->rank, 0u);
    cr_expect(grid->rank == 2 && grid->shape[0] == 2 && grid->shape[1] == 3);
    for (int k = 0; k < 6; k++)
        cr_expect_eq(((const int64_t *)grid->data)[k], i + k);
    cr_expect(empty->rank == 1 && empty->shape[0] == 0);
}

static void expect_saved_numbered(const results *r, const char *tensor, int i)
{
    const result_stat *s = results_find_stat((results *)r, tensor, "obs", "");
    cr_assert_not_null(s, "%s", tensor);
    hstat *loaded;
    qerror e = {0};
    const qcal_stat *v = results_stat_view(r, s, &loaded, &e);
    cr_assert_not_null(v, "%s", e.msg);
    expect_numbered(v, i);
    cr_expect_eq(loaded != NULL, s->state == NULL, "read back exactly when spilled");
    hstat_free(loaded);
}

static results *numbered_results(size_t budget, const int *order, int n)
{
    results *r = results_new("r", "d.h5");
    cr_assert(r);
    results_set_state_budget(budget);
    char tensor[16];
    qerror e = {0};
    for (int k = 0; k < n; k++) {
        snprintf(tensor, sizeof tensor, "x%d", order[k]);
        cr_assert_eq(results_add_stat(r, tensor, "obs", NULL, numbered_stat(order[k]), &e), 0,
                     "%s", e.msg);
    }
    return r;
}

/* numbered_results written to `name` in the test folder. */
static void write_numbered(size_t budget, const int *order, int n, const char *name)
{
    results *r = numbered_results(budget, order, n);
    qerror e = {0};
    cr_assert_eq(results_write(r, path_in(name), 0, &e), 0, "%s", e.msg);
    results_free(r);
}

static int same_file_bytes(const char *a, const char *b)
{
    size_t na, nb;
    char *x = fx_read_file(a, &na), *y = fx_read_file(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return same;
}

/* Past the budget (here two states' 128 bytes) states go to the file; every one reads back
 * whole, also after the file is written and read again, and the file is the one all-in-memory
 * results give. */
Test(results, states_past_the_budget_go_to_a_file_and_come_back_whole)
{
    setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
    const int order[5] = {0, 1, 2, 3, 4};
    results *r = numbered_results(128, order, 5);
    char tensor[16];
    for (int i = 0; i < 5; i++) {
        snprintf(tensor, sizeof tensor, "x%d", i);
        cr_expect_eq(results_find_stat(r, tensor, "obs", "")->state != NULL, i < 2, "%s", tensor);
        expect_saved_numbered(r, tensor, i);
    }
    qerror e = {0};
    cr_assert_eq(results_write(r, path_in("spilled.h5"), 0, &e), 0, "%s", e.msg);
    results_free(r);
    write_numbered(SIZE_MAX, order, 5, "held.h5");
    cr_expect(same_file_bytes(path_in("spilled.h5"), path_in("held.h5")));
    results_set_state_budget(0); /* reading back: every state to the file */
    int rc = results_read(path_in("spilled.h5"), &r, &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    for (int i = 0; i < 5; i++) {
        snprintf(tensor, sizeof tensor, "x%d", i);
        cr_expect_null(results_find_stat(r, tensor, "obs", "")->state);
        expect_saved_numbered(r, tensor, i);
    }
    results_free(r);
    unsetenv("SOURCE_DATE_EPOCH");
}

/* A replaced state gives its memory back to the budget. */
Test(results, replacing_a_held_state_frees_its_share_of_the_budget)
{
    const int order[3] = {0, 0, 0};
    results *r = numbered_results(64, order, 3);
    cr_expect_eq(r->n_stats, 1u);
    cr_expect_not_null(r->stats[0].state, "held, the budget freed by the state replaced");
    qerror e = {0};
    cr_assert_eq(results_add_stat(r, "y", "obs", NULL, numbered_stat(7), &e), 0, "%s", e.msg);
    cr_expect_null(results_find_stat(r, "y", "obs", "")->state, "past the budget");
    expect_saved_numbered(r, "x0", 0);
    expect_saved_numbered(r, "y", 7);
    results_free(r);
}

/* The budget is the process's: what one results holds, another cannot; freeing a results
 * gives its share back. */
Test(results, the_budget_is_shared_by_every_results_and_given_back)
{
    const int one[1] = {1}, two[1] = {2}, three[1] = {3};
    results *a = numbered_results(64, one, 1); /* 64 bytes of arrays: the whole budget */
    results *b = numbered_results(64, two, 1);
    cr_expect_not_null(a->stats[0].state);
    cr_expect_null(b->stats[0].state, "a holds the budget");
    results_free(a);
    results *c = numbered_results(64, three, 1);
    cr_expect_not_null(c->stats[0].state, "a's share came back");
    expect_saved_numbered(b, "x2", 2);
    expect_saved_numbered(c, "x3", 3);
    results_free(b);
    results_free(c);
}

/* States come in whatever order a pass's threads finish tensors; the file is the same. */
Test(results, statistics_written_in_one_order_whatever_order_they_came_in)
{
    setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
    const int forward[4] = {0, 1, 2, 3}, scrambled[4] = {2, 0, 3, 1};
    write_numbered(SIZE_MAX, forward, 4, "a.h5");
    write_numbered(SIZE_MAX, scrambled, 4, "b.h5");
    cr_expect(same_file_bytes(path_in("a.h5"), path_in("b.h5")));
    unsetenv("SOURCE_DATE_EPOCH");
}

/* No place for the temporary file: one line naming the folder and the reason; the state is
 * not kept (and not leaked). */
Test(results, no_place_for_spilled_states_is_one_clear_error)
{
    results *r = results_new("r", "d.h5");
    cr_assert(r);
    results_set_state_budget(0);
    qerror e = {0};
    setenv("TMPDIR", "/nonexistent/qcal-spill", 1);
    int rc = results_add_stat(r, "x", "obs", NULL, numbered_stat(1), &e);
    unsetenv("TMPDIR");
    cr_expect_neq(rc, 0);
    cr_expect_eq(e.code, QERR_IO);
    cr_expect(strstr(e.msg, "/nonexistent/qcal-spill") && strstr(e.msg, "No such file") &&
              strstr(e.msg, "tensor 'x'"), "%s", e.msg);
    cr_expect(strchr(e.msg, '\n') == NULL);
    cr_expect_eq(r->n_stats, 0u);
    results_free(r);
}

/* ---- hstat ------------------------------------------------------------------------------- */

Test(hstat, deep_copy)
{
    float lo[2] = {1, 2};
    char name[] = "lo", kind[] = "qcal.minmax";
    qcal_array a = {.name = name, .dtype = QCAL_DTYPE_F32, .rank = 1, .shape = {2}, .data = lo};
    qcal_stat st = {.kind = kind, .kind_version = 1, .n_arrays = 1, .channels = 1, .arrays = &a};
    hstat *h = NULL;
    cr_assert_eq(hstat_copy(&st, &h, NULL), 0);
    lo[0] = 99; /* the plugin reuses its buffers */
    name[0] = 'X';
    kind[0] = 'X';
    a.shape[0] = 7;
    const qcal_array *c = hstat_find(&h->view, "lo");
    cr_assert(c);
    cr_expect(c != &a && c->data != lo && c->name != name && h->view.kind != kind);
    cr_expect_eq(((const float *)c->data)[0], 1.0f);
    cr_expect_eq(c->shape[0], 2u);
    cr_expect_str_eq(h->view.kind, "qcal.minmax");
    cr_expect_null(hstat_find(&h->view, "hi"));
    hstat_free(h);
    hstat_free(NULL);
}

Test(hstat, sizes)
{
    cr_expect_eq(hstat_dtype_size(QCAL_DTYPE_F32), 4u);
    cr_expect_eq(hstat_dtype_size(QCAL_DTYPE_F64), 8u);
    cr_expect_eq(hstat_dtype_size(QCAL_DTYPE_I64), 8u);
    cr_expect_eq(hstat_dtype_size(QCAL_DTYPE_U64), 8u);
    cr_expect_eq(hstat_dtype_size(0), 0u);
    cr_expect_eq(hstat_dtype_size(5), 0u);
    qcal_array s = {.rank = 0}, m = {.rank = 3, .shape = {2, 3, 4}}, z = {.rank = 2, .shape = {5}};
    cr_expect_eq(hstat_array_count(&s), 1u);
    cr_expect_eq(hstat_array_count(&m), 24u);
    cr_expect_eq(hstat_array_count(&z), 0u);
}

static void expect_copy_refused(const qcal_stat *st, const char *words)
{
    hstat *h = (hstat *)1;
    qerror e = {0};
    cr_expect_eq(hstat_copy(st, &h, &e), -1, "accepted (expected '%s')", words);
    cr_expect_null(h);
    cr_expect_eq(e.code, QERR_SOFTWARE);
    cr_expect(strstr(e.msg, words), "message '%s' lacks '%s'", e.msg, words);
}

Test(hstat, refuses_broken_statistics)
{
    float v[4] = {0};
    qcal_array a[2] = {
        {.name = "lo", .dtype = QCAL_DTYPE_F32, .rank = 1, .shape = {4}, .data = v},
        {.name = "hi", .dtype = QCAL_DTYPE_F32, .rank = 1, .shape = {4}, .data = v},
    };
    qcal_stat st = {.kind = "qcal.minmax", .kind_version = 1, .n_arrays = 2, .channels = 1,
                    .arrays = a};
    hstat *h = NULL;
    cr_assert_eq(hstat_copy(&st, &h, NULL), 0, "the base case is valid");
    hstat_free(h);

    qcal_stat bad = st;
    bad.kind = NULL;
    expect_copy_refused(&bad, "bad kind");
    bad.kind = "has space";
    expect_copy_refused(&bad, "bad kind");
    bad.kind = "a.very.long.kind.name.that.goes.on.and.on.far.beyond.sixty.three.chars";
    expect_copy_refused(&bad, "bad kind");
    bad = st;
    bad.channels = 0;
    expect_copy_refused(&bad, "0 channels");
    bad = st;
    bad.arrays = NULL;
    expect_copy_refused(&bad, "declares 2 arrays");

    a[1].name = "lo";
    expect_copy_refused(&st, "'lo' appears twice");
    a[1].name = "Hi";
    expect_copy_refused(&st, "bad name 'Hi'");
    a[1].name = NULL;
    expect_copy_refused(&st, "bad name");
    a[1].name = "hi";
    a[1].dtype = 9;
    expect_copy_refused(&st, "unknown dtype 9");
    a[1].dtype = QCAL_DTYPE_F32;
    a[1].rank = 5;
    expect_copy_refused(&st, "rank 5");
    a[1].rank = 4;
    a[1].shape[0] = 1u << 20, a[1].shape[1] = 1u << 20, a[1].shape[2] = 1u << 20;
    a[1].shape[3] = 1u << 20;
    expect_copy_refused(&st, "too large");
    a[1].rank = 1;
    a[1].shape[0] = 4;
    a[1].data = NULL;
    expect_copy_refused(&st, "'hi' has 4 elements but no data");
    a[1].shape[0] = 0; /* an empty array needs no data */
    cr_expect_eq(hstat_copy(&st, &h, NULL), 0);
    hstat_free(h);
}

/* ---- the name index behind the lookups ---------------------------------------------------- */

typedef struct pair {
    char a[16], b[16];
} pair;

static void pair_key(const void *items, size_t i, const char **parts)
{
    parts[0] = ((const pair *)items)[i].a, parts[1] = ((const pair *)items)[i].b;
}

/* The first i with items[i] == (a, b), by a plain scan. */
static size_t scan_for(const pair *items, size_t n, const char *a, const char *b)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(items[i].a, a) && !strcmp(items[i].b, b))
            return i;
    return SIZE_MAX;
}

Test(keyindex, finds_as_a_scan_would_while_the_array_grows_and_is_reordered)
{
    static pair items[3000];
    keyindex x;
    keyindex_init(&x, 2, pair_key);
    const char *none[2] = {"x", "y"};
    cr_assert_eq(keyindex_find(&x, items, 0, none), SIZE_MAX, "empty array");
    size_t n = 0;
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 1000; k++, n++) { /* duplicates, and parts that concatenate alike */
            snprintf(items[n].a, sizeof items[n].a, "t%d", (int)(n % 700));
            snprintf(items[n].b, sizeof items[n].b, "%s", n % 3 ? "obs" : "o");
            if (n % 11 == 0)
                snprintf(items[n].a, sizeof items[n].a, "t%dob", (int)(n % 700)), items[n].b[0] = 's', items[n].b[1] = 0;
        }
        for (size_t i = 0; i < n; i += 7) {
            const char *key[2] = {items[i].a, items[i].b};
            cr_assert_eq(keyindex_find(&x, items, n, key), scan_for(items, n, key[0], key[1]),
                         "element %zu of %zu", i, n);
        }
        const char *absent[2] = {"t1", "obs "};
        cr_assert_eq(keyindex_find(&x, items, n, absent), SIZE_MAX);
    }
    /* reversed: stale positions until told, then right again; a shorter array too */
    for (size_t i = 0; i < n / 2; i++) {
        pair t = items[i];
        items[i] = items[n - 1 - i], items[n - 1 - i] = t;
    }
    keyindex_forget(&x);
    for (size_t len = n; len > 0; len = len / 3) {
        for (size_t i = 0; i < len; i += 13) {
            const char *key[2] = {items[i].a, items[i].b};
            cr_assert_eq(keyindex_find(&x, items, len, key), scan_for(items, len, key[0], key[1]),
                         "element %zu of %zu", i, len);
        }
    }
    keyindex_free(&x);
}
