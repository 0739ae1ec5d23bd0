/* layer.c - /layers/<name>: reading them, and linear / conv2d forward by im2col + GEMM */
#include "layer.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5attr.h"

/* ---- the forward math ------------------------------------------------------------------ */

/* C[M x N] += A[M x K] B[K x N], all row-major. Tiles of B (KB rows x NB columns, 128 KiB)
 * stay in cache while every row of A passes over them; each C[m][n] still sums its K products
 * in order k = 0, 1, ..., so the result does not depend on the tiling. */
static void gemm(uint64_t M, uint64_t N, uint64_t K, const float *A, const float *B, float *C)
{
    enum { NB = 256, KB = 128 };
    for (uint64_t n0 = 0; n0 < N; n0 += NB) {
        uint64_t n1 = n0 + NB < N ? n0 + NB : N;
        for (uint64_t k0 = 0; k0 < K; k0 += KB) {
            uint64_t k1 = k0 + KB < K ? k0 + KB : K;
            for (uint64_t m = 0; m < M; m++) {
                float *c = C + m * N;
                const float *a = A + m * K;
                for (uint64_t k = k0; k < k1; k++) {
                    float av = a[k];
                    const float *b = B + k * N;
                    for (uint64_t n = n0; n < n1; n++)
                        c[n] += av * b[n];
                }
            }
        }
    }
}

/* cols[(c kh + i) kw + j][oh OW + ow] = x[c0 + c][oh sh - ph + i][ow sw - pw + j] (0 outside),
 * for the cg channels of one group. */
static void im2col(const layer *l, const layer_geom *g, const float *x, uint64_t c0, uint64_t cg,
                   float *cols)
{
    uint64_t P = g->out_h * g->out_w;
    for (uint64_t c = 0; c < cg; c++)
        for (uint64_t i = 0; i < l->kh; i++)
            for (uint64_t j = 0; j < l->kw; j++) {
                float *row = cols + ((c * l->kh + i) * l->kw + j) * P;
                const float *plane = x + (c0 + c) * g->in_h * g->in_w;
                for (uint64_t oh = 0; oh < g->out_h; oh++) {
                    int64_t ih = (int64_t)(oh * l->stride[0] + i) - (int64_t)l->padding[0];
                    for (uint64_t ow = 0; ow < g->out_w; ow++) {
                        int64_t iw = (int64_t)(ow * l->stride[1] + j) - (int64_t)l->padding[1];
                        int inside = ih >= 0 && ih < (int64_t)g->in_h && iw >= 0 && iw < (int64_t)g->in_w;
                        row[oh * g->out_w + ow] = inside ? plane[ih * (int64_t)g->in_w + iw] : 0.0f;
                    }
                }
            }
}

uint64_t layer_packed_size(const layer *l) { return l->weight_size; }

void layer_pack(const layer *l, const float *w, float *packed)
{
    if (l->type == LAYER_CONV2D) {
        memcpy(packed, w, l->weight_size * sizeof *w);
        return;
    }
    for (uint64_t o = 0; o < l->out_ch; o++)
        for (uint64_t i = 0; i < l->in_ch; i++)
            packed[i * l->out_ch + o] = w[o * l->in_ch + i];
}

void layer_forward(const layer *l, const layer_geom *g, const float *packed, const float *x,
                   float *y, float *scratch)
{
    uint64_t rows = l->type == LAYER_LINEAR ? g->rows : l->out_ch;
    uint64_t per_row = l->type == LAYER_LINEAR ? l->out_ch : g->out_h * g->out_w;
    for (uint64_t r = 0; r < rows; r++) /* start from the bias */
        for (uint64_t k = 0; k < per_row; k++)
            y[r * per_row + k] = !l->bias ? 0.0f : l->bias[l->type == LAYER_LINEAR ? k : r];
    if (l->type == LAYER_LINEAR) {
        gemm(g->rows, l->out_ch, l->in_ch, x, packed, y);
        return;
    }
    uint64_t cg = l->in_ch / l->groups, og = l->out_ch / l->groups, K = cg * l->kh * l->kw;
    for (uint64_t grp = 0; grp < l->groups; grp++) {
        im2col(l, g, x, grp * cg, cg, scratch);
        gemm(og, per_row, K, packed + grp * og * K, scratch, y + grp * og * per_row);
    }
}

int layer_geometry(const layer *l, const char *activation, const uint64_t *dims, int rank,
                   layer_geom *g, qerror *e)
{
    memset(g, 0, sizeof *g);
    g->in_size = 1;
    for (int i = 0; i < rank; i++)
        g->in_size *= dims[i];
    if (l->type == LAYER_LINEAR) {
        if (rank < 1 || dims[rank - 1] != l->in_ch)
            return qerror_set(e, QERR_DATA, "layer '%s': linear with %llu inputs cannot take "
                              "'%s' (last dimension %llu)", l->name, (unsigned long long)l->in_ch,
                              activation, (unsigned long long)(rank ? dims[rank - 1] : 0));
        g->rows = g->in_size / l->in_ch;
        g->out_size = g->rows * l->out_ch;
        return 0;
    }
    if (rank != 3 || dims[0] != l->in_ch)
        return qerror_set(e, QERR_DATA, "layer '%s': conv2d over %llu channels takes samples "
                          "[C, H, W] with C = %llu, '%s' has samples of rank %d, first "
                          "dimension %llu", l->name, (unsigned long long)l->in_ch,
                          (unsigned long long)l->in_ch, activation, rank,
                          (unsigned long long)(rank ? dims[0] : 0));
    g->in_h = dims[1], g->in_w = dims[2];
    const uint64_t most = (uint64_t)1 << 31; /* per sample: the output and the unfolded input */
    if (l->padding[0] > most || l->padding[1] > most || g->in_h > most || g->in_w > most)
        return qerror_set(e, QERR_DATA, "layer '%s': expected padding and input sides of at most "
                          "2^31, found padding %llux%llu over %llux%llu", l->name,
                          (unsigned long long)l->padding[0], (unsigned long long)l->padding[1],
                          (unsigned long long)g->in_h, (unsigned long long)g->in_w);
    uint64_t ph = g->in_h + 2 * l->padding[0], pw = g->in_w + 2 * l->padding[1];
    if (ph < l->kh || pw < l->kw)
        return qerror_set(e, QERR_DATA, "layer '%s': kernel %llux%llu larger than the padded "
                          "input %llux%llu of '%s'", l->name, (unsigned long long)l->kh,
                          (unsigned long long)l->kw, (unsigned long long)ph,
                          (unsigned long long)pw, activation);
    g->out_h = (ph - l->kh) / l->stride[0] + 1, g->out_w = (pw - l->kw) / l->stride[1] + 1;
    double out = (double)l->out_ch * (double)g->out_h * (double)g->out_w;
    double unfolded = (double)(l->in_ch / l->groups) * (double)l->kh * (double)l->kw *
                      (double)g->out_h * (double)g->out_w;
    if (out > (double)most || unfolded > (double)most)
        return qerror_set(e, QERR_DATA, "layer '%s': padding %llux%llu and stride %llux%llu over "
                          "%llux%llu give %.0f outputs and %.0f unfolded inputs per sample "
                          "(expected at most 2^31 each)", l->name,
                          (unsigned long long)l->padding[0], (unsigned long long)l->padding[1],
                          (unsigned long long)l->stride[0], (unsigned long long)l->stride[1],
                          (unsigned long long)g->in_h, (unsigned long long)g->in_w, out, unfolded);
    g->out_size = l->out_ch * g->out_h * g->out_w;
    g->scratch = (l->in_ch / l->groups) * l->kh * l->kw * g->out_h * g->out_w;
    return 0;
}

/* ---- reading /layers ------------------------------------------------------------------- */

/* An int or int[2] attribute into v[2] (a scalar fills both); def when absent. 0 if bad. */
static int attr_pair(hid_t obj, const char *name, uint64_t def, uint64_t v[2])
{
    v[0] = v[1] = def;
    if (H5Aexists(obj, name) <= 0)
        return 1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    long long got[2] = {0, 0};
    int ok = H5Tget_class(t) == H5T_INTEGER && (n == 1 || n == 2) &&
             H5Aread(a, H5T_NATIVE_LLONG, got) >= 0 && got[0] >= 0 && got[n - 1] >= 0;
    if (ok)
        v[0] = (uint64_t)got[0], v[1] = (uint64_t)got[n - 1];
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return ok;
}

/* Dataset `name` of group as float32 (HDF5 converts); dims into d. NULL if absent or bad. */
static float *read_floats(hid_t grp, const char *name, int *rank, hsize_t d[4], uint64_t *count)
{
    if (H5Lexists(grp, name, H5P_DEFAULT) <= 0)
        return NULL;
    hid_t ds = H5Dopen2(grp, name, H5P_DEFAULT), sp = H5Dget_space(ds), t = H5Dget_type(ds);
    float *out = NULL;
    *rank = H5Sget_simple_extent_ndims(sp);
    if (H5Tget_class(t) == H5T_FLOAT && *rank >= 1 && *rank <= 4) {
        H5Sget_simple_extent_dims(sp, d, NULL);
        *count = 1;
        for (int i = 0; i < *rank; i++)
            *count *= d[i];
        out = *count ? malloc(*count * sizeof *out) : NULL;
        if (out && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
            free(out);
            out = NULL;
        }
    }
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(ds);
    return out;
}

static int bad_layer(const char *path, const char *name, const char *what, qerror *e)
{
    return qerror_set(e, QERR_DATA, "%s: /layers/%s: %s", path, name, what);
}

/* Shapes and attributes agree; fills the derived sizes. */
static int check_layer(layer *l, int wrank, const hsize_t *wd, int brank, const hsize_t *bd,
                       uint64_t bias_count, const char *path, qerror *e)
{
    if (l->type == LAYER_LINEAR) {
        if (wrank != 2)
            return bad_layer(path, l->name, "a linear weight must be [out, in]", e);
        l->out_ch = wd[0], l->in_ch = wd[1], l->kh = l->kw = 1;
    } else {
        if (wrank != 4)
            return bad_layer(path, l->name, "a conv2d weight must be [O, C/groups, kh, kw]", e);
        if (l->groups == 0 || wd[0] % l->groups)
            return bad_layer(path, l->name, "groups must divide the output channels", e);
        if (l->stride[0] == 0 || l->stride[1] == 0)
            return bad_layer(path, l->name, "stride must be at least 1", e);
        l->out_ch = wd[0], l->in_ch = wd[1] * l->groups, l->kh = wd[2], l->kw = wd[3];
    }
    if (l->bias && (brank != 1 || bd[0] != l->out_ch || bias_count != l->out_ch))
        return bad_layer(path, l->name, "bias must be [out channels]", e);
    return 0;
}

static int load_one(hid_t root, const char *name, const char *path, layer *l, qerror *e)
{
    memset(l, 0, sizeof *l);
    l->name = strdup(name);
    hid_t g = H5Gopen2(root, name, H5P_DEFAULT);
    if (g < 0)
        return bad_layer(path, name, "not a group", e);
    int bad;
    char *type = h5_attr_string(g, "type", &bad);
    l->input = h5_attr_string(g, "input", &bad);
    uint64_t groups[2];
    int ok = attr_pair(g, "stride", 1, l->stride) && attr_pair(g, "padding", 0, l->padding) &&
             attr_pair(g, "groups", 1, groups);
    l->groups = groups[0];
    l->type = !type ? 0 : !strcmp(type, "linear") ? LAYER_LINEAR : !strcmp(type, "conv2d") ? LAYER_CONV2D : 0;
    int wrank = 0, brank = 0;
    hsize_t wd[4], bd[4];
    uint64_t bias_count = 0;
    l->weight = read_floats(g, "weight", &wrank, wd, &l->weight_size);
    l->bias = read_floats(g, "bias", &brank, bd, &bias_count);
    int has_bias = H5Lexists(g, "bias", H5P_DEFAULT) > 0;
    H5Gclose(g);
    int rc = 0;
    if (!l->type)
        rc = bad_layer(path, name, "attribute type must be \"linear\" or \"conv2d\"", e);
    else if (!l->input)
        rc = bad_layer(path, name, "missing string attribute input (the activation it consumes)", e);
    else if (!ok)
        rc = bad_layer(path, name, "stride, padding and groups must be non-negative integers", e);
    else if (!l->weight)
        rc = bad_layer(path, name, "missing or non-float dataset weight", e);
    else if (has_bias && !l->bias)
        rc = bad_layer(path, name, "bias must be a float dataset", e);
    else
        rc = check_layer(l, wrank, wd, brank, bd, bias_count, path, e);
    free(type);
    return rc;
}

static int load_layers(const char *path, layer **out, size_t *n, qerror *e)
{
    *out = NULL, *n = 0;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char why[256];
    hid_t f = h5_open_read(path, why, sizeof why);
    if (f < 0)
        return qerror_set(e, QERR_NOINPUT, "%s: cannot open as HDF5: %s", path, why);
    int rc = 0;
    if (H5Lexists(f, "layers", H5P_DEFAULT) > 0) {
        hid_t root = H5Gopen2(f, "layers", H5P_DEFAULT);
        H5G_info_t info;
        if (root < 0 || H5Gget_info(root, &info) < 0) {
            rc = qerror_set(e, QERR_DATA, "%s: /layers is not a group", path);
        } else {
            layer *ls = calloc(info.nlinks ? info.nlinks : 1, sizeof *ls);
            for (hsize_t i = 0; ls && !rc && i < info.nlinks; i++) {
                char name[512];
                H5Lget_name_by_idx(root, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
                rc = load_one(root, name, path, &ls[i], e);
                *n = i + 1;
            }
            *out = ls;
            if (!ls)
                rc = qerror_set(e, QERR_SOFTWARE, "out of memory");
        }
        if (root >= 0)
            H5Gclose(root);
    }
    h5_close_read(f);
    if (rc) {
        layers_free(*out, *n);
        *out = NULL, *n = 0;
    }
    return rc;
}

int layers_load(const char *path, layer **out, size_t *n, qerror *e)
{
    const char *guard = h5_guard_enter(path);
    int rc = load_layers(path, out, n, e);
    h5_guard_leave(guard);
    return rc;
}

void layers_free(layer *layers, size_t n)
{
    for (size_t i = 0; layers && i < n; i++) {
        free(layers[i].name);
        free(layers[i].input);
        free(layers[i].weight);
        free(layers[i].bias);
    }
    free(layers);
}
