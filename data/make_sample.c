/* make_sample.c - writes data/sample.h5: the inputs of every layer of a tiny network (a small
 * CNN and a transformer-like block) run forward on 64 synthetic images, plus the layers'
 * weights, reproducibly (a fixed-seed generator, no clock).
 *
 *   make_sample OUT.h5
 *
 * Network: conv1 3->8 k3 p1 + ReLU, conv2 8->16 k3 s2 p1 groups 2 + ReLU, fc1 1024->64 + GELU,
 * fc2 64->10 + softmax; and a block on 16 tokens of width 64 whose layernormed input has two
 * outlier features (as LLM activations do): qkv 64->192, up 64->128 + GELU, down 128->64. */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 64   /* samples */
#define T 16   /* tokens */
#define D 64   /* model width */

static uint64_t rng_state = 20261123;

static double uniform(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static double gauss(void)
{
    double u1 = 1.0 - uniform(), u2 = uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static float *alloc(size_t n)
{
    float *p = calloc(n, sizeof *p);
    if (!p) {
        fprintf(stderr, "make_sample: out of memory\n");
        exit(1);
    }
    return p;
}

static float *he_weights(size_t n, size_t fan_in)
{
    float *w = alloc(n);
    double s = sqrt(2.0 / (double)fan_in);
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(s * gauss());
    return w;
}

static float *small_bias(size_t n)
{
    float *b = alloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (float)(0.05 * gauss());
    return b;
}

/* ---- the layers ----------------------------------------------------------------------- */

typedef struct conv {
    int cin, cout, k, stride, pad, groups;
    float *w, *b;
} conv;

/* x [N, cin, h, w] -> y [N, cout, ho, wo], then ReLU. */
static void conv_relu(const conv *c, const float *x, int h, int w, float *y, int *ho, int *wo)
{
    *ho = (h + 2 * c->pad - c->k) / c->stride + 1;
    *wo = (w + 2 * c->pad - c->k) / c->stride + 1;
    int cg = c->cin / c->groups, og = c->cout / c->groups;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < c->cout; o++)
            for (int i = 0; i < *ho; i++)
                for (int j = 0; j < *wo; j++) {
                    double acc = c->b[o];
                    int g = o / og;
                    for (int ci = 0; ci < cg; ci++)
                        for (int ki = 0; ki < c->k; ki++)
                            for (int kj = 0; kj < c->k; kj++) {
                                int yi = i * c->stride - c->pad + ki, xj = j * c->stride - c->pad + kj;
                                if (yi < 0 || yi >= h || xj < 0 || xj >= w)
                                    continue;
                                int cin = g * cg + ci;
                                acc += (double)c->w[((o * cg + ci) * c->k + ki) * c->k + kj] *
                                       x[((n * c->cin + cin) * h + yi) * w + xj];
                            }
                    y[((n * c->cout + o) * *ho + i) * *wo + j] = acc > 0 ? (float)acc : 0.0f;
                }
}

enum { ACT_NONE, ACT_GELU };

/* x [rows, in] -> y [rows, out] = x W^T + b, optionally GELU. */
static void linear(const float *x, size_t rows, int in, int out, const float *w, const float *b,
                   int act, float *y)
{
    for (size_t r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double acc = b[o];
            for (int i = 0; i < in; i++)
                acc += (double)w[o * in + i] * x[r * in + i];
            if (act == ACT_GELU)
                acc = 0.5 * acc * (1.0 + erf(acc / sqrt(2.0)));
            y[r * out + o] = (float)acc;
        }
}

static void softmax_rows(const float *x, size_t rows, int n, float *y)
{
    for (size_t r = 0; r < rows; r++) {
        double m = x[r * n], sum = 0;
        for (int i = 1; i < n; i++)
            m = fmax(m, x[r * n + i]);
        for (int i = 0; i < n; i++)
            sum += exp(x[r * n + i] - m);
        for (int i = 0; i < n; i++)
            y[r * n + i] = (float)(exp(x[r * n + i] - m) / sum);
    }
}

/* ---- inputs --------------------------------------------------------------------------- */

/* Smooth random images: a few oriented waves plus noise, normalised per channel. */
static float *make_images(void)
{
    float *img = alloc((size_t)N * 3 * 16 * 16);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < 3; c++) {
            double fx = 0.2 + 0.6 * uniform(), fy = 0.2 + 0.6 * uniform(), ph = 6.28 * uniform();
            double base = 0.5 * uniform(), amp = 0.3 + 0.2 * uniform();
            for (int i = 0; i < 256; i++)
                img[(n * 3 + c) * 256 + i] =
                    (float)(base + amp * sin(fx * (i / 16) + fy * (i % 16) + ph) + 0.05 * gauss());
        }
    static const double mean[3] = {0.485, 0.456, 0.406}, sd[3] = {0.229, 0.224, 0.225};
    for (int n = 0; n < N; n++)
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 256; i++)
                img[(n * 3 + c) * 256 + i] = (float)((img[(n * 3 + c) * 256 + i] - mean[c]) / sd[c]);
    return img;
}

/* Layernormed token features with two outlier features, as in LLM activations. */
static float *make_tokens(void)
{
    float *x = alloc((size_t)N * T * D);
    for (size_t r = 0; r < (size_t)N * T; r++) {
        double sum = 0, sq = 0;
        for (int d = 0; d < D; d++) {
            double v = gauss() + (d == 7 ? 12.0 : d == 41 ? -9.0 : 0.0) * (0.5 + uniform());
            x[r * D + d] = (float)v;
            sum += v;
        }
        double mean = sum / D;
        for (int d = 0; d < D; d++)
            sq += (x[r * D + d] - mean) * (x[r * D + d] - mean);
        double inv = 1.0 / sqrt(sq / D + 1e-5);
        for (int d = 0; d < D; d++)
            x[r * D + d] = (float)((x[r * D + d] - mean) * inv);
    }
    return x;
}

/* ---- writing -------------------------------------------------------------------------- */

static uint16_t to_half(float f) /* round to nearest even; inputs here are finite and small */
{
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a < 0x1.0p-14)
        return sign | (uint16_t)nearbyint(a * 0x1.0p24);
    int e;
    double q = nearbyint(frexp(a, &e) * 2048.0);
    if (q == 2048.0) {
        q = 1024.0;
        e++;
    }
    return sign | (uint16_t)(((e + 14) << 10) | ((uint16_t)q - 1024));
}

static void attr_str(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &value);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

static void attr_int(hid_t obj, const char *name, long long v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

/* A dataset of float32 (or float16 when half) values with chunks of 8 samples. */
static hid_t write_array(hid_t loc, const char *name, const float *x, int rank,
                         const hsize_t *dims, int half)
{
    hsize_t chunk[4];
    size_t n = 1;
    for (int i = 0; i < rank; i++) {
        chunk[i] = i ? dims[i] : (dims[0] < 8 ? dims[0] : 8);
        n *= dims[i];
    }
    hid_t sp = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    hid_t ftype = H5Tcopy(H5T_IEEE_F32LE);
    if (half) { /* IEEE half, the layout h5py writes for numpy float16 */
        H5Tset_fields(ftype, 15, 10, 5, 0, 10);
        H5Tset_size(ftype, 2);
        H5Tset_ebias(ftype, 15);
    }
    hid_t d = H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (half) {
        uint16_t *h = malloc(n * sizeof *h);
        for (size_t i = 0; i < n; i++)
            h[i] = to_half(x[i]);
        H5Dwrite(d, ftype, H5S_ALL, H5S_ALL, H5P_DEFAULT, h);
        free(h);
    } else {
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    }
    H5Tclose(ftype);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

static void activation(hid_t acts, const char *name, const float *x, int rank, const hsize_t *dims,
                       int channel_axis, const char *op_type, int half)
{
    hid_t d = write_array(acts, name, x, rank, dims, half);
    attr_int(d, "channel_axis", channel_axis);
    attr_str(d, "op_type", op_type);
    H5Dclose(d);
}

typedef struct layer_desc {
    const char *name, *type, *input;
    int stride, padding, groups;
    const float *w, *b;
    int w_rank;
    hsize_t w_dims[4], b_len;
} layer_desc;

static void layer(hid_t layers, hid_t weights, const layer_desc *l)
{
    hid_t g = H5Gcreate2(layers, l->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    attr_str(g, "type", l->type);
    attr_str(g, "input", l->input);
    attr_int(g, "stride", l->stride);
    attr_int(g, "padding", l->padding);
    attr_int(g, "groups", l->groups);
    H5Dclose(write_array(g, "weight", l->w, l->w_rank, l->w_dims, 0));
    H5Dclose(write_array(g, "bias", l->b, 1, &l->b_len, 0));
    H5Gclose(g);
    H5Dclose(write_array(weights, l->name, l->w, l->w_rank, l->w_dims, 0));
}

/* ---- the run -------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_sample OUT.h5\n");
        return 64;
    }
    conv c1 = {3, 8, 3, 1, 1, 1, he_weights(8 * 3 * 9, 27), small_bias(8)};
    conv c2 = {8, 16, 3, 2, 1, 2, he_weights(16 * 4 * 9, 36), small_bias(16)};
    float *fc1_w = he_weights(64 * 1024, 1024), *fc1_b = small_bias(64);
    float *fc2_w = he_weights(10 * 64, 64), *fc2_b = small_bias(10);
    float *qkv_w = he_weights(192 * D, D), *qkv_b = small_bias(192);
    float *up_w = he_weights(128 * D, D), *up_b = small_bias(128);
    float *down_w = he_weights(D * 128, 128), *down_b = small_bias(D);

    float *img = make_images(), *a1 = alloc((size_t)N * 8 * 256), *a2 = alloc((size_t)N * 16 * 64);
    int h, w;
    conv_relu(&c1, img, 16, 16, a1, &h, &w);
    conv_relu(&c2, a1, 16, 16, a2, &h, &w);
    float *hid = alloc((size_t)N * 64), *logits = alloc((size_t)N * 10), *probs = alloc((size_t)N * 10);
    linear(a2, N, 1024, 64, fc1_w, fc1_b, ACT_GELU, hid);
    linear(hid, N, 64, 10, fc2_w, fc2_b, ACT_NONE, logits);
    softmax_rows(logits, N, 10, probs);
    float *tok = make_tokens(), *qkv = alloc((size_t)N * T * 192), *up = alloc((size_t)N * T * 128);
    linear(tok, (size_t)N * T, D, 192, qkv_w, qkv_b, ACT_NONE, qkv);
    linear(tok, (size_t)N * T, D, 128, up_w, up_b, ACT_GELU, up);

    hid_t f = H5Fcreate(argv[1], H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "make_sample: cannot create %s\n", argv[1]);
        return 73;
    }
    hid_t acts = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t d_img[4] = {N, 3, 16, 16}, d_a1[4] = {N, 8, 16, 16}, d_fc1[2] = {N, 1024};
    hsize_t d_fc2[2] = {N, 64}, d_prob[2] = {N, 10}, d_tok[3] = {N, T, D}, d_up[3] = {N, T, 128};
    activation(acts, "conv1.input", img, 4, d_img, 1, "Conv", 0);
    activation(acts, "conv2.input", a1, 4, d_a1, 1, "Conv", 0);
    activation(acts, "fc1.input", a2, 2, d_fc1, 1, "Gemm", 0);
    activation(acts, "fc2.input", hid, 2, d_fc2, 1, "Gemm", 0);
    activation(acts, "softmax.output", probs, 2, d_prob, 1, "Softmax", 0);
    activation(acts, "block.qkv.input", tok, 3, d_tok, 2, "MatMul", 0);
    activation(acts, "block.up.input", tok, 3, d_tok, 2, "MatMul", 0);
    activation(acts, "block.down.input", up, 3, d_up, 2, "MatMul", 1); /* stored as float16 */
    H5Gclose(acts);

    hid_t layers = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t weights = H5Gcreate2(f, "weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const layer_desc descs[] = {
        {"conv1", "conv2d", "conv1.input", 1, 1, 1, c1.w, c1.b, 4, {8, 3, 3, 3}, 8},
        {"conv2", "conv2d", "conv2.input", 2, 1, 2, c2.w, c2.b, 4, {16, 4, 3, 3}, 16},
        {"fc1", "linear", "fc1.input", 1, 0, 1, fc1_w, fc1_b, 2, {64, 1024}, 64},
        {"fc2", "linear", "fc2.input", 1, 0, 1, fc2_w, fc2_b, 2, {10, 64}, 10},
        {"block.qkv", "linear", "block.qkv.input", 1, 0, 1, qkv_w, qkv_b, 2, {192, D}, 192},
        {"block.up", "linear", "block.up.input", 1, 0, 1, up_w, up_b, 2, {128, D}, 128},
        {"block.down", "linear", "block.down.input", 1, 0, 1, down_w, down_b, 2, {D, 128}, D},
    };
    for (size_t i = 0; i < sizeof descs / sizeof *descs; i++)
        layer(layers, weights, &descs[i]);
    H5Gclose(weights);
    H5Gclose(layers);
    H5Fclose(f);
    return 0;
}
