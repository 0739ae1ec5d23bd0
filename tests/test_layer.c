/* test_layer.c - linear and conv2d forward (im2col + blocked GEMM) against naive loops, and
 * reading /layers from a dump with its bad inputs */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "layer.h"
#include "references.h"

static void fill(float *v, uint64_t n, uint64_t *seed)
{
    for (uint64_t i = 0; i < n; i++)
        v[i] = (float)(fx_rand_uniform(seed) * 2 - 1);
}

/* |got - want| within float32 rounding of a sum of `terms` products of magnitude <= 1. */
static void expect_close(const float *got, const double *want, uint64_t n, uint64_t terms,
                         const char *what)
{
    double tol = 4e-7 * (double)(terms + 1) * 4;
    for (uint64_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol, "%s: y[%llu] = %.9g, reference %.9g", what,
                  (unsigned long long)i, got[i], want[i]);
}

Test(layer, linear_matches_a_naive_product)
{
    uint64_t seed = 1;
    const uint64_t shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {17, 300, 129}, {2, 513, 260}};
    for (int k = 0; k < 4; k++) {
        uint64_t rows = shapes[k][0], in = shapes[k][1], out = shapes[k][2];
        layer l = {.name = "fc", .type = LAYER_LINEAR, .out_ch = out, .in_ch = in, .kh = 1,
                   .kw = 1, .groups = 1, .weight_size = out * in};
        float *w = malloc(out * in * 4), *b = malloc(out * 4), *x = malloc(rows * in * 4);
        float *packed = malloc(out * in * 4), *y = malloc(rows * out * 4);
        double *ref = malloc(rows * out * 8);
        fill(w, out * in, &seed), fill(b, out, &seed), fill(x, rows * in, &seed);
        l.weight = w, l.bias = k % 2 ? b : NULL;
        uint64_t dims[2] = {rows, in};
        layer_geom g;
        qerror e = {0};
        cr_assert_eq(layer_geometry(&l, "x", dims, 2, &g, &e), 0, "%s", e.msg);
        cr_expect_eq(g.rows, rows);
        cr_expect_eq(g.out_size, rows * out);
        layer_pack(&l, w, packed);
        layer_forward(&l, &g, packed, x, y, NULL);
        ref_linear(x, rows, in, w, l.bias, out, ref);
        expect_close(y, ref, rows * out, in, "linear");
        free(w), free(b), free(x), free(packed), free(y), free(ref);
    }
}

Test(layer, conv2d_matches_the_textbook_loops)
{
    /* C, H, W, O, kh, kw, stride h, stride w, pad h, pad w, groups */
    const uint64_t cases[][11] = {
        {1, 5, 5, 1, 3, 3, 1, 1, 0, 0, 1},   {3, 8, 7, 4, 3, 3, 1, 1, 1, 1, 1},
        {4, 9, 9, 6, 3, 2, 2, 1, 1, 0, 2},   {6, 11, 10, 6, 3, 3, 2, 2, 1, 1, 6}, /* depthwise */
        {8, 6, 6, 16, 1, 1, 1, 1, 0, 0, 4},  {16, 20, 20, 32, 5, 5, 3, 3, 2, 2, 1},
        {2, 3, 3, 2, 3, 3, 1, 1, 2, 2, 1},   /* padding larger than half the kernel */
    };
    uint64_t seed = 2;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const uint64_t *c = cases[k];
        uint64_t C = c[0], H = c[1], W = c[2], O = c[3], kh = c[4], kw = c[5], G = c[10];
        layer l = {.name = "conv", .type = LAYER_CONV2D, .out_ch = O, .in_ch = C, .kh = kh,
                   .kw = kw, .stride = {c[6], c[7]}, .padding = {c[8], c[9]}, .groups = G,
                   .weight_size = O * (C / G) * kh * kw};
        float *w = malloc(l.weight_size * 4), *b = malloc(O * 4), *x = malloc(C * H * W * 4);
        fill(w, l.weight_size, &seed), fill(b, O, &seed), fill(x, C * H * W, &seed);
        l.weight = w, l.bias = k % 2 ? NULL : b;
        uint64_t dims[3] = {C, H, W}, oh, ow;
        layer_geom g;
        qerror e = {0};
        cr_assert_eq(layer_geometry(&l, "x", dims, 3, &g, &e), 0, "%s", e.msg);
        /* the output is never larger than the padded input */
        double *ref = malloc(O * (H + 2 * c[8]) * (W + 2 * c[9]) * 8);
        ref_conv2d(x, C, H, W, w, l.bias, O, kh, kw, l.stride, l.padding, G, ref, &oh, &ow);
        cr_assert(g.out_h == oh && g.out_w == ow, "case %zu: output %llux%llu, want %llux%llu", k,
                  (unsigned long long)g.out_h, (unsigned long long)g.out_w,
                  (unsigned long long)oh, (unsigned long long)ow);
        float *packed = malloc(l.weight_size * 4), *y = malloc(g.out_size * 4);
        float *scratch = malloc((g.scratch + 1) * 4);
        layer_pack(&l, w, packed);
        layer_forward(&l, &g, packed, x, y, scratch);
        char what[32];
        snprintf(what, sizeof what, "conv case %zu", k);
        expect_close(y, ref, g.out_size, (C / G) * kh * kw, what);
        free(w), free(b), free(x), free(ref), free(packed), free(y), free(scratch);
    }
}

Test(layer, geometry_refuses_shapes_that_do_not_fit)
{
    layer lin = {.name = "fc", .type = LAYER_LINEAR, .out_ch = 4, .in_ch = 8, .kh = 1, .kw = 1, .groups = 1};
    layer conv = {.name = "c", .type = LAYER_CONV2D, .out_ch = 4, .in_ch = 3, .kh = 5, .kw = 5,
                  .stride = {1, 1}, .groups = 1};
    layer_geom g;
    qerror e = {0};
    uint64_t d1[2] = {10, 7};
    cr_expect_eq(layer_geometry(&lin, "act", d1, 2, &g, &e), -1);
    cr_expect(strstr(e.msg, "'fc'") && strstr(e.msg, "'act'") && strstr(e.msg, "7"), "%s", e.msg);
    uint64_t d2[3] = {4, 8, 8}, d3[3] = {3, 3, 3}, d4[2] = {3, 8};
    cr_expect_eq(layer_geometry(&conv, "act", d2, 3, &g, &e), -1);
    cr_expect(strstr(e.msg, "C = 3"), "%s", e.msg);
    cr_expect_eq(layer_geometry(&conv, "act", d3, 3, &g, &e), -1);
    cr_expect(strstr(e.msg, "larger than the padded input"), "%s", e.msg);
    cr_expect_eq(layer_geometry(&conv, "act", d4, 2, &g, &e), -1);
    /* padding that would ask for terabytes: bad data naming the layer, not out of memory */
    layer padded = conv;
    padded.padding[0] = padded.padding[1] = (uint64_t)1 << 40;
    uint64_t d5[3] = {3, 16, 16};
    cr_expect_eq(layer_geometry(&padded, "act", d5, 3, &g, &e), -1);
    cr_expect(e.code == QERR_DATA && strstr(e.msg, "'c'") && strstr(e.msg, "padding"), "%s", e.msg);
    padded.padding[0] = padded.padding[1] = 40000; /* sides fine, the product too large */
    cr_expect_eq(layer_geometry(&padded, "act", d5, 3, &g, &e), -1);
    cr_expect(e.code == QERR_DATA && strstr(e.msg, "at most 2^31 each"), "%s", e.msg);
}

/* ---- /layers in a file ---------------------------------------------------------------------- */

static void put_str(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8); /* as h5py and the sample writer do */
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &value);
    H5Aclose(a), H5Sclose(sp), H5Tclose(t);
}

static void put_ints(hid_t obj, const char *name, const long long *v, hsize_t n)
{
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, v);
    H5Aclose(a), H5Sclose(sp);
}

static void put_floats(hid_t grp, const char *name, const hsize_t *dims, int rank, const float *v)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(grp, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d), H5Sclose(sp);
}

/* A file with one layer, written as `variant` says (0: good conv2d, others: one defect). */
static void write_layer_file(const char *path, int variant)
{
    static const float w[2 * 3 * 3 * 3] = {0.5f}, b[3] = {1, 2, 3}; /* variant 4 writes 3 */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t root = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(root, "conv1", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    put_str(g, "type", variant == 1 ? "deconv" : "conv2d");
    if (variant != 2)
        put_str(g, "input", "conv1.input");
    long long stride[2] = {2, 1}, pad = 1, groups = variant == 3 ? 4 : 1;
    put_ints(g, "stride", stride, 2), put_ints(g, "padding", &pad, 1), put_ints(g, "groups", &groups, 1);
    hsize_t wd[4] = {2, 3, 3, 3}, bd[1] = {variant == 4 ? 3 : 2};
    put_floats(g, "weight", wd, variant == 5 ? 2 : 4, w);
    put_floats(g, "bias", bd, 1, b);
    H5Gclose(g), H5Gclose(root), H5Fclose(f);
}

Test(layer, reading_layers_and_their_defects)
{
    char *dir = fx_tmpdir(), *path = fx_path(dir, "layers.h5");
    write_layer_file(path, 0);
    layer *ls;
    size_t n;
    qerror e = {0};
    cr_assert_eq(layers_load(path, &ls, &n, &e), 0, "%s", e.msg);
    cr_assert_eq(n, 1u);
    cr_expect_str_eq(ls[0].name, "conv1");
    cr_expect_str_eq(ls[0].input, "conv1.input");
    cr_expect(ls[0].type == LAYER_CONV2D && ls[0].out_ch == 2 && ls[0].in_ch == 3 && ls[0].kh == 3);
    cr_expect(ls[0].stride[0] == 2 && ls[0].stride[1] == 1 && ls[0].padding[0] == 1 && ls[0].padding[1] == 1);
    cr_expect(ls[0].bias && ls[0].bias[1] == 2.0f);
    layers_free(ls, n);
    const char *expect[] = {NULL, "type must be", "attribute input", "groups must divide",
                            "bias must be", "conv2d weight must be"};
    for (int v = 1; v < 6; v++) {
        write_layer_file(path, v);
        cr_expect_eq(layers_load(path, &ls, &n, &e), -1, "variant %d loads", v);
        cr_expect(strstr(e.msg, "/layers/conv1") && strstr(e.msg, expect[v]), "variant %d: %s", v, e.msg);
        cr_expect_eq(n, 0u);
    }
    /* a file without /layers has none */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    cr_expect_eq(layers_load(path, &ls, &n, &e), 0);
    cr_expect_eq(n, 0u);
    layers_free(ls, n);
    free(path);
    fx_rmtree(dir);
    free(dir);
}
