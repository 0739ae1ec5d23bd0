/* test_strategy.c - the evaluation pass, mix, autotune and `qcal show`, checked against
 * errors computed here from the raw values (torch's fake-quantize and naive layers written in
 * references.c), never against qcal's own output */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "dump.h" /* DUMP_F32 */
#include "fixtures.h"
#include "params.h"
#include "recipe.h"
#include "references.h"
#include "registry.h"
#include "results.h"

/* The fixture dump: a conv input with a NaN in sample 7, a linear input consumed by two
 * layers, a bimodal tensor with no layer and a constant one. */
#define N 40
#define CV_C 4
#define CV_H 7
#define CV_W 6
#define CV_O 6
#define CV_G 2
#define FC_IN 20
#define SOLO 300
#define FLAT 8

static float cv_x[N * CV_C * CV_H * CV_W], fc_x[N * FC_IN], solo_x[N * SOLO], flat_x[N * FLAT];
static float cv_w[CV_O * (CV_C / CV_G) * 3 * 2], cv_b[CV_O];
static float fa_w[9 * FC_IN], fa_b[9], fb_w[5 * FC_IN];
static const uint64_t cv_stride[2] = {2, 1}, cv_pad[2] = {1, 0};

static char *dir, *dump_file, *out_file;
static registry *reg;
static char log_text[16384];

static void collect_log(void *ud, const char *text)
{
    (void)ud;
    strncat(log_text, text, sizeof log_text - strlen(log_text) - 1);
}

static void fill_uniform(float *v, size_t n, uint64_t seed, float half_width)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(fx_rand_uniform(&seed) * 2 - 1) * half_width;
}

static void write_fixture(void)
{
    fx_fill_gauss(cv_x, sizeof cv_x / sizeof *cv_x, 5, 0.3f, 1.2f);
    cv_x[7 * CV_C * CV_H * CV_W + 3] = NAN;
    fx_fill_dist(fc_x, sizeof fc_x / sizeof *fc_x, FX_LAPLACE_OUTLIERS, 6);
    fx_fill_dist(solo_x, sizeof solo_x / sizeof *solo_x, FX_BIMODAL, 7);
    for (size_t i = 0; i < sizeof flat_x / sizeof *flat_x; i++)
        flat_x[i] = 0.75f;
    fill_uniform(cv_w, sizeof cv_w / sizeof *cv_w, 8, 0.4f);
    fill_uniform(cv_b, CV_O, 9, 0.2f);
    fill_uniform(fa_w, sizeof fa_w / sizeof *fa_w, 10, 0.3f);
    fill_uniform(fa_b, 9, 11, 0.1f);
    fill_uniform(fb_w, sizeof fb_w / sizeof *fb_w, 12, 0.5f);
    fx_dataset ds[] = {
        {.name = "cv.input", .dtype = DUMP_F32, .rank = 4, .dims = {N, CV_C, CV_H, CV_W},
         .chunk_rows = 6, .data = cv_x, .channel_axis = 1},
        {.name = "fc.input", .dtype = DUMP_F32, .rank = 2, .dims = {N, FC_IN}, .chunk_rows = 7,
         .data = fc_x, .channel_axis = FX_NO_ATTR},
        {.name = "solo", .dtype = DUMP_F32, .rank = 2, .dims = {N, SOLO}, .chunk_rows = 5,
         .data = solo_x, .channel_axis = FX_NO_ATTR},
        {.name = "flat", .dtype = DUMP_F32, .rank = 2, .dims = {N, FLAT}, .data = flat_x,
         .channel_axis = FX_NO_ATTR},
    };
    cr_assert_eq(fx_write_dump(dump_file, ds, 4, 0), 0);
    fx_layer cv = {.name = "cv", .type = "conv2d", .input = "cv.input", .stride = {2, 1},
                   .padding = {1, 0}, .groups = CV_G, .weight_rank = 4,
                   .weight_dims = {CV_O, CV_C / CV_G, 3, 2}, .weight = cv_w, .bias = cv_b};
    fx_layer fa = {.name = "fc_a", .type = "linear", .input = "fc.input", .stride = {1, 1},
                   .groups = 1, .weight_rank = 2, .weight_dims = {9, FC_IN}, .weight = fa_w,
                   .bias = fa_b};
    fx_layer fb = {.name = "fc_b", .type = "linear", .input = "fc.input", .stride = {1, 1},
                   .groups = 1, .weight_rank = 2, .weight_dims = {5, FC_IN}, .weight = fb_w};
    cr_assert_eq(fx_write_layer(dump_file, &cv), 0);
    cr_assert_eq(fx_write_layer(dump_file, &fa), 0);
    cr_assert_eq(fx_write_layer(dump_file, &fb), 0);
}

static void setup(void)
{
    dir = fx_tmpdir();
    dump_file = fx_path(dir, "dump.h5");
    out_file = fx_path(dir, "out.h5");
    write_fixture();
    reg = registry_new(NULL, NULL);
    registry_load_dir(reg, TEST_PLUGIN_DIR);
    log_text[0] = '\0';
}

static void teardown(void)
{
    registry_free(reg);
    fx_rmtree(dir);
    free(dir);
    free(dump_file);
    free(out_file);
}

TestSuite(strategy, .init = setup, .fini = teardown);

/* ---- running recipes ------------------------------------------------------------------------ */

typedef struct run_opts {
    const char *dump;            /* NULL: the fixture */
    const char *from_statistics;
    const char *output;          /* NULL: out_file */
    int threads;                 /* 0: default */
    size_t slab_bytes;
} run_opts;

static int run_with(const char *recipe, const char *const *kv, size_t n_kv, const run_opts *ro,
                    qerror *e)
{
    recipe_options o;
    recipe_defaults(&o);
    param_input in[16];
    char bufs[16][160];
    for (size_t i = 0; i < n_kv; i++) {
        snprintf(bufs[i], sizeof bufs[i], "%s", kv[i]);
        cr_assert_eq(params_parse_kv(bufs[i], &in[i], e), 0);
    }
    o.recipe = recipe;
    o.dump_path = ro && ro->from_statistics ? NULL : ro && ro->dump ? ro->dump : dump_file;
    o.from_statistics = ro ? ro->from_statistics : NULL;
    o.output = ro && ro->output ? ro->output : out_file;
    o.force = 1;
    o.reg = reg;
    o.params = in;
    o.n_params = n_kv;
    o.log = collect_log;
    if (ro && ro->threads)
        o.pass.threads = ro->threads;
    if (ro && ro->slab_bytes)
        o.pass.slab_bytes = ro->slab_bytes;
    return recipe_run(&o, e);
}

static char *write_text(const char *name, const char *text)
{
    char *path = fx_path(dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void run_text_ok(const char *text, const run_opts *ro)
{
    char *path = write_text("strategy.lua", text);
    qerror e = {0};
    cr_assert_eq(run_with(path, NULL, 0, ro, &e), 0, "%s\n%s", e.msg, log_text);
    free(path);
}

static results *read_results(const char *path)
{
    results *r;
    qerror e = {0};
    cr_assert_eq(results_read(path, &r, &e), 0, "%s", e.msg);
    return r;
}

static const result_tensor *find_tensor(const results *r, const char *name)
{
    for (size_t i = 0; i < r->n_tensors; i++)
        if (!strcmp(r->tensors[i].tensor, name))
            return &r->tensors[i];
    cr_assert_fail("no calibration of %s", name);
    return NULL;
}

/* ---- references ----------------------------------------------------------------------------- */

typedef struct grid {
    int symmetric, is_signed, narrow, bits;
    long long qmin, qmax;
} grid;

static const grid U8 = {0, 0, 0, 8, 0, 255}, S8N = {1, 1, 1, 8, -127, 127};

static grid grid_of(const qcal_qspec *s)
{
    return (grid){(s->flags & QCAL_QSPEC_SYMMETRIC) != 0, (s->flags & QCAL_QSPEC_SIGNED) != 0,
                  (s->flags & QCAL_QSPEC_NARROW) != 0, (int)s->bits, s->qmin, s->qmax};
}

typedef struct sums {
    double n, se, sr, sq, dot;
} sums;

static void fq_values(const float *x, float *q, size_t n, const grid *g, double lo, double hi)
{
    float scale;
    long long zp;
    ref_grid(lo, hi, g->symmetric, g->is_signed, g->narrow, g->bits, g->qmin, g->qmax, &scale, &zp);
    for (size_t i = 0; i < n; i++)
        q[i] = ref_fake_quant(x[i], scale, zp, g->qmin, g->qmax);
}

static void add_sums(sums *s, const float *x, const float *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            continue;
        double a = x[i], b = q[i];
        s->n += 1, s->se += (a - b) * (a - b), s->sr += a * a, s->sq += b * b, s->dot += a * b;
    }
}

/* The tensor error of one per-tensor range over the first `rows` samples. */
static sums tensor_sums(const float *x, size_t rows, size_t row, const grid *g, double lo, double hi)
{
    float *q = malloc(rows * row * sizeof *q);
    fq_values(x, q, rows * row, g, lo, hi);
    sums s = {0};
    add_sums(&s, x, q, rows * row);
    free(q);
    return s;
}

static double rel_diff(double a, double b)
{
    if (a == b)
        return 0;
    return fabs(a - b) / fmax(fabs(a), fabs(b));
}

static void expect_metrics(const sums *s, double mse, double sqnr, double cosine, const char *what)
{
    /* the pass sums products in float32 within blocks of 64 values: ~1e-7 relative */
    cr_expect(rel_diff(mse, s->se / s->n) < 1e-6, "%s: mse %.12g, reference %.12g", what, mse, s->se / s->n);
    cr_expect(rel_diff(sqnr, 10 * log10(s->sr / s->se)) < 1e-6, "%s: sqnr %.12g, reference %.12g",
              what, sqnr, 10 * log10(s->sr / s->se));
    double cos_ref = s->dot / sqrt(s->sr * s->sq);
    cr_expect(fabs(cosine - cos_ref) < 1e-7, "%s: cosine %.15g, reference %.15g", what, cosine, cos_ref);
}

/* Weights fake-quantized per output channel, int8 symmetric on [-127, 127] (scale max|w|/127). */
static void fq_weights(const float *w, float *wq, size_t out, size_t per_out)
{
    for (size_t o = 0; o < out; o++) {
        float m = 0;
        for (size_t i = 0; i < per_out; i++)
            m = fmaxf(m, fabsf(w[o * per_out + i]));
        fq_values(w + o * per_out, wq + o * per_out, per_out, &S8N, -m, m);
    }
}

static double ratio(const double *y, const double *yq, size_t n)
{
    double l2 = 0, l1 = 0;
    for (size_t i = 0; i < n; i++)
        l2 += (y[i] - yq[i]) * (y[i] - yq[i]), l1 += fabs(y[i]);
    return sqrt(l2) / l1;
}

static int sample_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* tpu-mlir's distance of the conv layer for the first `rows` samples, the input
 * fake-quantized by fq (a function of one sample). */
typedef void (*sample_fq)(const float *x, float *q, size_t n, const void *ud);

static double conv_distance(size_t rows, sample_fq fq, const void *ud, int *used)
{
    size_t in = CV_C * CV_H * CV_W, per_out = (CV_C / CV_G) * 3 * 2;
    float wq[sizeof cv_w / sizeof *cv_w], xq[CV_C * CV_H * CV_W];
    double y[CV_O * CV_H * CV_W * 2], yq[CV_O * CV_H * CV_W * 2], total = 0;
    uint64_t oh, ow;
    fq_weights(cv_w, wq, CV_O, per_out);
    *used = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *x = cv_x + r * in;
        if (!sample_finite(x, in))
            continue;
        fq(x, xq, in, ud);
        ref_conv2d(x, CV_C, CV_H, CV_W, cv_w, cv_b, CV_O, 3, 2, cv_stride, cv_pad, CV_G, y, &oh, &ow);
        ref_conv2d(xq, CV_C, CV_H, CV_W, wq, cv_b, CV_O, 3, 2, cv_stride, cv_pad, CV_G, yq, &oh, &ow);
        total += ratio(y, yq, CV_O * oh * ow);
        (*used)++;
    }
    return total / *used;
}

/* The same for a linear layer on fc.input with the input fake-quantized on g over [lo, hi]. */
static double linear_distance(const float *w, const float *b, size_t out, size_t rows,
                              const grid *g, double lo, double hi)
{
    float *wq = malloc(out * FC_IN * sizeof *wq), xq[FC_IN];
    double y[16], yq[16], total = 0;
    fq_weights(w, wq, out, FC_IN);
    for (size_t r = 0; r < rows; r++) {
        fq_values(fc_x + r * FC_IN, xq, FC_IN, g, lo, hi);
        ref_linear(fc_x + r * FC_IN, 1, FC_IN, w, b, out, y);
        ref_linear(xq, 1, FC_IN, wq, b, out, yq);
        total += ratio(y, yq, out);
    }
    free(wq);
    return total / (double)rows;
}

/* ---- the evaluation pass -------------------------------------------------------------------- */

/* Three candidates on the conv input, judged on the tensor and on the conv layer's output;
 * the errors go to /candidates for the test to read. */
static const char *const conv_strategy =
    "local qcal = require('qcal')\n"
    "local t = qcal.tensor('cv.input')\n"
    "local specs = { qcal.spec{ bits = 8 },\n"
    "                qcal.spec{ bits = 8, symmetric = true, narrow_range = true },\n"
    "                qcal.spec{ bits = 4, per_channel = true, axis = 1 } }\n"
    "local ranges = { { lo = -1.5, hi = 2.25 }, { lo = -1.1, hi = 1.1 },\n"
    "                 { lo = { -1, -2, -0.5, -1 }, hi = { 1, 0.5, 2, 3 } } }\n"
    "local ev = qcal.evaluation()\n"
    "local list = {}\n"
    "for k = 1, 3 do list[k] = { range = ranges[k], spec = specs[k] } end\n"
    "local id = ev:add(t, list, { layer = 'cv' })\n"
    "ev:run{ max_rows = 30 }\n"
    "for k, e in ipairs(ev:errors(id)) do\n"
    "  assert(e.layer_samples_skipped == 1, 'sample 7 holds a NaN')\n"
    "  list[k].method = 'c' .. k\n"
    "  list[k].mse, list[k].sqnr_db, list[k].cosine = e.mse, e.sqnr_db, e.cosine\n"
    "  list[k].layer_error = e.layer_error\n"
    "end\n"
    "qcal.candidates(t, list, 1, 'mse')\n"
    "qcal.put(t, { method = 'c1', spec = specs[1], range = ranges[1] })\n";

static const double pc_lo[CV_C] = {-1, -2, -0.5, -1}, pc_hi[CV_C] = {1, 0.5, 2, 3};

static void fq_per_channel(const float *x, float *q, size_t n, const void *ud)
{
    (void)ud;
    const grid u4 = {0, 0, 0, 4, 0, 15};
    size_t plane = CV_H * CV_W;
    for (size_t at = 0; at < n; at += plane) {
        size_t ch = (at / plane) % CV_C;
        fq_values(x + at, q + at, plane, &u4, pc_lo[ch], pc_hi[ch]);
    }
}

typedef struct tensor_grid {
    double lo, hi;
    const grid *g;
} tensor_grid;

static void fq_tensor(const float *x, float *q, size_t n, const void *ud)
{
    const tensor_grid *tg = ud;
    fq_values(x, q, n, tg->g, tg->lo, tg->hi);
}

Test(strategy, evaluation_errors_match_torch_fake_quant_and_naive_layers)
{
    run_text_ok(conv_strategy, NULL);
    results *r = read_results(out_file);
    const result_candidates *c = results_find_candidates(r, "cv.input");
    cr_assert_not_null(c);
    cr_assert_eq(c->n, 3u);
    size_t row = CV_C * CV_H * CV_W, rows = 30;
    /* tensor errors: per-tensor candidates over every finite value of the first 30 samples */
    sums s1 = tensor_sums(cv_x, rows, row, &U8, -1.5, 2.25);
    sums s2 = tensor_sums(cv_x, rows, row, &S8N, -1.1, 1.1);
    float *q = malloc(rows * row * sizeof *q);
    fq_per_channel(cv_x, q, rows * row, NULL);
    sums s3 = {0};
    add_sums(&s3, cv_x, q, rows * row);
    free(q);
    cr_expect_eq(s1.n, (double)(rows * row - 1), "the NaN is left out");
    expect_metrics(&s1, c->mse[0], c->sqnr_db[0], c->cosine[0], "affine uint8");
    expect_metrics(&s2, c->mse[1], c->sqnr_db[1], c->cosine[1], "symmetric int8");
    expect_metrics(&s3, c->mse[2], c->sqnr_db[2], c->cosine[2], "per-channel uint4");
    /* layer errors: tpu-mlir's distance through the naive conv (stride 2x1, padding 1x0,
     * 2 groups), the NaN sample left out */
    int used;
    tensor_grid g1 = {-1.5, 2.25, &U8}, g2 = {-1.1, 1.1, &S8N};
    double d1 = conv_distance(rows, fq_tensor, &g1, &used);
    cr_expect_eq(used, 29);
    double d2 = conv_distance(rows, fq_tensor, &g2, &used);
    double d3 = conv_distance(rows, fq_per_channel, NULL, &used);
    cr_expect(rel_diff(c->layer_error[0], d1) < 1e-4, "layer 1: %.9g vs %.9g", c->layer_error[0], d1);
    cr_expect(rel_diff(c->layer_error[1], d2) < 1e-4, "layer 2: %.9g vs %.9g", c->layer_error[1], d2);
    cr_expect(rel_diff(c->layer_error[2], d3) < 1e-4, "layer 3: %.9g vs %.9g", c->layer_error[2], d3);
    results_free(r);
}

Test(strategy, evaluation_is_identical_across_threads_and_slab_sizes)
{
    char *one = fx_path(dir, "one.h5"), *many = fx_path(dir, "many.h5");
    run_opts a = {.output = one, .threads = 1}, b = {.output = many, .threads = 3, .slab_bytes = 4096};
    run_text_ok(conv_strategy, &a);
    run_text_ok(conv_strategy, &b);
    results *ra = read_results(one), *rb = read_results(many);
    const result_candidates *ca = results_find_candidates(ra, "cv.input");
    const result_candidates *cb = results_find_candidates(rb, "cv.input");
    for (uint64_t k = 0; k < 3; k++) {
        cr_expect_eq(memcmp(&ca->mse[k], &cb->mse[k], sizeof(double)), 0, "mse %llu", (unsigned long long)k);
        cr_expect_eq(memcmp(&ca->layer_error[k], &cb->layer_error[k], sizeof(double)), 0);
        cr_expect_eq(memcmp(&ca->cosine[k], &cb->cosine[k], sizeof(double)), 0);
    }
    results_free(ra), results_free(rb);
    free(one), free(many);
}

static void expect_refused(const char *text, const char *why, const char *line)
{
    char *path = write_text("bad.lua", text);
    qerror e = {0};
    cr_expect_neq(run_with(path, NULL, 0, NULL, &e), 0, "should fail: %s", why);
    cr_expect(strstr(e.msg, why) != NULL, "'%s' not in: %s", why, e.msg);
    cr_expect(strstr(e.msg, line) != NULL, "'%s' (file:line) not in: %s", line, e.msg);
    free(path);
}

Test(strategy, evaluation_refuses_bad_requests_with_the_recipe_line)
{
    const char *head = "local qcal = require('qcal')\nlocal ev = qcal.evaluation()\n";
    char text[1024];
    snprintf(text, sizeof text, "%s%s", head,
             "ev:add('cv.input', { { range = { lo = { 0, 0 }, hi = { 1, 1 } },\n"
             "  spec = qcal.spec{ per_channel = true, axis = 1 } } })\n");
    expect_refused(text, "2 ranges for a per-channel spec", "bad.lua:3:");
    snprintf(text, sizeof text, "%s%s", head,
             "ev:add('solo', { { range = { lo = 0, hi = 1 }, spec = qcal.spec{} } }, { layer = 'fc_a' })\n");
    expect_refused(text, "solo", "bad.lua:3:");
    snprintf(text, sizeof text, "%s%s", head,
             "ev:add('solo', { { range = { lo = 0, hi = 1 }, spec = qcal.spec{} } }, { layer = 'nope' })\n");
    expect_refused(text, "no layer 'nope'", "bad.lua:3:");
    snprintf(text, sizeof text, "%s%s", head,
             "local id = ev:add('solo', { { range = { lo = 1, hi = 0 }, spec = qcal.spec{} } })\n");
    expect_refused(text, "inverted", "bad.lua:3:");
    snprintf(text, sizeof text, "%s%s", head,
             "local id = ev:add('solo', { { range = { lo = 0, hi = 1 }, spec = qcal.spec{} } })\n"
             "local e = ev:errors(id)\n");
    expect_refused(text, "before evaluation:run", "bad.lua:4:");
    snprintf(text, sizeof text, "%s%s", head, "ev:add('solo', {})\n");
    expect_refused(text, "1 to 4096 candidates", "bad.lua:3:");
}

Test(strategy, evaluation_needs_the_dump_not_saved_statistics)
{
    qerror e = {0};
    cr_assert_eq(run_with("minmax", NULL, 0, NULL, &e), 0, "%s", e.msg);
    char *stats = fx_path(dir, "stats.h5"), *again = fx_path(dir, "again.h5");
    cr_assert_eq(rename(out_file, stats), 0);
    char *path = write_text("ev.lua", "local qcal = require('qcal')\nlocal ev = qcal.evaluation()\n");
    run_opts ro = {.from_statistics = stats, .output = again};
    cr_expect_neq(run_with(path, NULL, 0, &ro, &e), 0);
    cr_expect(strstr(e.msg, "ev.lua:2:") && strstr(e.msg, "--from-statistics"), "%s", e.msg);
    free(path), free(stats), free(again);
}

/* ---- mix ------------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    const float *x;
    size_t row;
} tensors[] = {
    {"cv.input", cv_x, CV_C * CV_H * CV_W}, {"fc.input", fc_x, FC_IN}, {"solo", solo_x, SOLO},
    {"flat", flat_x, FLAT},
};

static double ref_mse(size_t t, const grid *g, double lo, double hi)
{
    sums s = tensor_sums(tensors[t].x, N, tensors[t].row, g, lo, hi);
    return s.se / s.n;
}

/* For every tensor: each candidate's recorded mse is the reference's for its range; the kept
 * range is the candidate with the least of them, and no candidate has less. */
static void check_mix(const results *r, const grid *g, const char *criterion, uint64_t n_candidates)
{
    for (size_t t = 0; t < sizeof tensors / sizeof *tensors; t++) {
        const result_tensor *rt = find_tensor(r, tensors[t].name);
        const result_candidates *c = results_find_candidates(r, tensors[t].name);
        cr_assert_not_null(c, "%s: no candidates", tensors[t].name);
        cr_expect_eq(c->n, n_candidates, "%s: one candidate per percentile and method", tensors[t].name);
        double least = INFINITY;
        for (uint64_t k = 0; k < c->n; k++) {
            double want = ref_mse(t, g, c->lo[k], c->hi[k]);
            cr_expect(rel_diff(c->mse[k], want) < 1e-6 || (want < 1e-30 && c->mse[k] < 1e-30),
                      "%s %s: mse %.12g, reference %.12g", tensors[t].name, c->method[k], c->mse[k], want);
            least = fmin(least, want);
        }
        cr_assert(c->chosen >= 0 && (uint64_t)c->chosen < c->n);
        cr_expect_str_eq(c->criterion, criterion);
        cr_expect_eq(rt->lo[0], c->lo[c->chosen], "%s: the kept range is the chosen candidate's", tensors[t].name);
        cr_expect_eq(rt->hi[0], c->hi[c->chosen]);
        double kept = ref_mse(t, g, rt->lo[0], rt->hi[0]);
        cr_expect(kept <= least * (1 + 1e-6), "%s: mix error %.9g above the least candidate's %.9g",
                  tensors[t].name, kept, least);
    }
}

Test(strategy, mix_keeps_the_least_error_of_every_candidate)
{
    qerror e = {0};
    cr_assert_eq(run_with("mix", NULL, 0, NULL, &e), 0, "%s\n%s", e.msg, log_text);
    results *r = read_results(out_file);
    check_mix(r, &U8, "mse", 8);
    /* the candidates are the named methods, each once */
    const result_candidates *c = results_find_candidates(r, "solo");
    const char *expect[] = {"percentile:99", "percentile:99.9", "percentile:99.99",
                            "percentile:99.999", "percentile:100", "kl", "mse", "quantile"};
    cr_assert_eq(c->n, 8u);
    for (int k = 0; k < 8; k++)
        cr_expect_str_eq(c->method[k], expect[k]);
    results_free(r);
    /* symmetric int8, narrow */
    const char *kv[] = {"symmetric=true", "narrow_range=true", "methods=minmax,kl,mse,l2_search,quantile",
                        "percentiles=99.9,99.99"};
    cr_assert_eq(run_with("mix", kv, 4, NULL, &e), 0, "%s\n%s", e.msg, log_text);
    r = read_results(out_file);
    check_mix(r, &S8N, "mse", 7);
    results_free(r);
    /* 33 candidates a tensor: each left two arrays on the Lua stack, and past its 20
     * guaranteed slots 23 candidates corrupted the heap (found by an audit) */
    char many[160] = "percentiles=";
    for (int k = 70; k < 100; k++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s%d", k > 70 ? "," : "", k);
    const char *kv_many[] = {many};
    cr_assert_eq(run_with("mix", kv_many, 1, NULL, &e), 0, "%s\n%s", e.msg, log_text);
    r = read_results(out_file);
    check_mix(r, &U8, "mse", 33);
    results_free(r);
}

/* On an affine grid mix's kl candidate covers no more than the data: for values in [-6, -0.5]
 * it is [-t, 0], not [-t, t] with half the grid on values that never occur (audited). */
Test(strategy, mix_kl_candidate_stays_within_the_data_on_affine_grids)
{
    static float neg[64 * 8];
    for (int i = 0; i < 64 * 8; i++)
        neg[i] = -0.5f - 5.5f * (float)((i * 37) % 512) / 511.0f;
    fx_dataset ds = {.name = "neg", .dtype = DUMP_F32, .rank = 2, .dims = {64, 8}, .data = neg,
                     .channel_axis = FX_NO_ATTR};
    char *path = fx_path(dir, "neg.h5");
    cr_assert_eq(fx_write_dump(path, &ds, 1, 0), 0);
    run_opts ro = {.dump = path};
    qerror e = {0};
    cr_assert_eq(run_with("mix", NULL, 0, &ro, &e), 0, "%s\n%s", e.msg, log_text);
    results *r = read_results(out_file);
    const result_candidates *c = results_find_candidates(r, "neg");
    cr_assert_not_null(c);
    int seen = 0;
    for (uint64_t k = 0; k < c->n; k++)
        if (!strcmp(c->method[k], "kl")) {
            seen = 1;
            cr_expect(c->hi[k] == 0.0 && c->lo[k] >= -6.0 && c->lo[k] < 0, "kl [%g, %g]", c->lo[k], c->hi[k]);
        }
    cr_expect(seen, "a kl candidate");
    results_free(r);
    free(path);
}

Test(strategy, mix_by_layer_output_uses_the_consuming_layer)
{
    const char *kv[] = {"criterion=layer_error", "stat_subset_size=25"};
    qerror e = {0};
    cr_assert_eq(run_with("mix", kv, 2, NULL, &e), 0, "%s\n%s", e.msg, log_text);
    results *r = read_results(out_file);
    /* fc.input: its first listed consumer (fc_a) judges, over the first 25 samples */
    const result_candidates *c = results_find_candidates(r, "fc.input");
    cr_expect_str_eq(c->criterion, "layer_error");
    int64_t best = -1;
    double best_d = INFINITY;
    for (uint64_t k = 0; k < c->n; k++) {
        double d = linear_distance(fa_w, fa_b, 9, 25, &U8, c->lo[k], c->hi[k]);
        cr_expect(rel_diff(c->layer_error[k], d) < 1e-4, "%s: %.9g vs %.9g", c->method[k], c->layer_error[k], d);
        if (d < best_d * (1 - 1e-6))
            best = (int64_t)k, best_d = d;
    }
    cr_expect_eq(c->chosen, best);
    /* solo has no layer: its own mse decides */
    c = results_find_candidates(r, "solo");
    cr_expect_str_eq(c->criterion, "mse");
    cr_expect(isnan(c->layer_error[0]));
    results_free(r);
}

Test(strategy, mix_refuses_bad_parameters)
{
    const char *bad[][2] = {
        {"criterion=speed", "criterion must be"},
        {"methods=kl,magic", "unknown method 'magic'"},
        {"percentiles=99,101", "not a percent"},
        {"per_channel=true", "per_channel must be false"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        qerror e = {0};
        cr_expect_neq(run_with("mix", &bad[i][0], 1, NULL, &e), 0, "%s", bad[i][0]);
        cr_expect(strstr(e.msg, bad[i][1]) && strstr(e.msg, "mix.lua:"), "%s: %s", bad[i][0], e.msg);
    }
}

/* ---- the sample dump: mix against each single method ---------------------------------------- */

/* Mean over tensors of the relative error mse / mean(x^2) of a results file's ranges, from the
 * sample dump's raw values. */
static double mean_relative_error(const results *r, const char *sample)
{
    hid_t f = H5Fopen(sample, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    double total = 0;
    for (size_t i = 0; i < r->n_tensors; i++) {
        const result_tensor *t = &r->tensors[i];
        char path[512];
        snprintf(path, sizeof path, "/activations/%s", t->tensor);
        hid_t ds = H5Dopen2(f, path, H5P_DEFAULT), sp = H5Dget_space(ds);
        cr_assert_geq(ds, 0, "%s", path);
        size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
        float *x = malloc(n * sizeof *x), *q = malloc(n * sizeof *q);
        cr_assert_geq(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x), 0);
        H5Sclose(sp), H5Dclose(ds);
        grid g = grid_of(&t->spec);
        fq_values(x, q, n, &g, t->lo[0], t->hi[0]);
        sums s = {0};
        add_sums(&s, x, q, n);
        total += s.se / s.sr;
        free(x), free(q);
    }
    H5Fclose(f);
    return total / (double)r->n_tensors;
}

Test(strategy, mix_beats_every_single_method_on_the_sample_dump)
{
    char sample[1024];
    snprintf(sample, sizeof sample, "%s/data/sample.h5", TEST_SOURCE_ROOT);
    const char *affine[] = {"symmetric=false", "narrow_range=false"};
    const struct {
        const char *recipe;
        size_t n_kv;
    } singles[] = {{"minmax", 0}, {"percentile", 2}, {"kl", 2}, {"mse", 2}, {"l2_search", 0}};
    run_opts ro = {.dump = sample};
    qerror e = {0};
    cr_assert_eq(run_with("mix", NULL, 0, &ro, &e), 0, "%s", e.msg);
    results *r = read_results(out_file);
    double mix = mean_relative_error(r, sample);
    results_free(r);
    for (size_t i = 0; i < sizeof singles / sizeof *singles; i++) {
        cr_assert_eq(run_with(singles[i].recipe, affine, singles[i].n_kv, &ro, &e), 0, "%s", e.msg);
        r = read_results(out_file);
        double single = mean_relative_error(r, sample);
        cr_log_info("mean relative error: mix %.6g, %s %.6g", mix, singles[i].recipe, single);
        cr_expect(mix < single, "mix %.6g is not below %s's %.6g", mix, singles[i].recipe, single);
        results_free(r);
    }
}

/* ---- autotune ------------------------------------------------------------------------------- */

Test(strategy, autotune_keeps_the_largest_of_each_consumers_best_threshold)
{
    const char *kv[] = {"steps=4"};
    qerror e = {0};
    cr_assert_eq(run_with("autotune", kv, 1, NULL, &e), 0, "%s\n%s", e.msg, log_text);
    results *r = read_results(out_file);
    const result_candidates *c = results_find_candidates(r, "fc.input");
    cr_assert_not_null(c);
    cr_assert_eq(c->n, 5u, "t_KL and 4 steps to max|x|");
    float amax = 0;
    for (size_t i = 0; i < sizeof fc_x / sizeof *fc_x; i++)
        amax = fmaxf(amax, fabsf(fc_x[i]));
    double t_kl = c->hi[0];
    cr_assert(t_kl > 0 && t_kl < amax);
    double best[2] = {0, 0};
    for (int layer = 0; layer < 2; layer++) {
        double least = INFINITY;
        for (uint64_t k = 0; k < 5; k++) {
            double t = t_kl + (double)k * (amax - t_kl) / 4;
            cr_expect(rel_diff(c->hi[k], t) < 1e-12, "candidate %llu: %.9g, want %.9g", (unsigned long long)k, c->hi[k], t);
            cr_expect_eq(c->lo[k], -c->hi[k]);
            double d = layer == 0 ? linear_distance(fa_w, fa_b, 9, 32, &S8N, -t, t)
                                  : linear_distance(fb_w, NULL, 5, 32, &S8N, -t, t);
            if (d < least * (1 - 1e-6))
                least = d, best[layer] = t;
        }
    }
    const result_tensor *rt = find_tensor(r, "fc.input");
    double want = fmax(best[0], best[1]);
    cr_expect(rel_diff(rt->hi[0], want) < 1e-12, "kept %.9g; fc_a's best %.9g, fc_b's %.9g",
              rt->hi[0], best[0], best[1]);
    cr_expect_str_eq(c->criterion, "layer_error");
    /* solo has no consumer: the first least tensor mse of its candidates */
    c = results_find_candidates(r, "solo");
    cr_assert_not_null(c);
    double least = INFINITY, kept = NAN;
    for (uint64_t k = 0; k < c->n; k++) {
        double m = tensor_sums(solo_x, 32, SOLO, &S8N, c->lo[k], c->hi[k]).se;
        least = fmin(least, m);
        kept = (int64_t)k == c->chosen ? m : kept;
    }
    cr_expect(kept <= least * (1 + 1e-6), "solo: kept error %.9g, least %.9g", kept, least);
    cr_expect_str_eq(c->criterion, "mse");
    /* flat: max|x| = t_KL, nothing to tune, said so */
    const result_tensor *flat = find_tensor(r, "flat");
    cr_expect_null(results_find_candidates(r, "flat"));
    cr_expect(flat->note && strstr(flat->note, "not tuned"), "%s", flat->note ? flat->note : "(no note)");
    cr_expect_eq(flat->hi[0], 0.75);
    results_free(r);
}

/* ---- a strategy written here, as README.md builds it ---------------------------------------- */

/* Per tensor: min/max and its range shrunk to 90 %, kept by cosine similarity. */
static const char *const readme_strategy =
    "local qcal = require('qcal')\n"
    "local P = qcal.params{ shrink = 0.9 }\n"
    "local pass, ids = qcal.pass(), {}\n"
    "for _, t in ipairs(qcal.tensors()) do ids[t.name] = pass:observe(t, 'minmax') end\n"
    "pass:run()\n"
    "local spec = qcal.spec{ bits = 8 }\n"
    "local ev, tried = qcal.evaluation(), {}\n"
    "for _, t in ipairs(qcal.tensors()) do\n"
    "  local full = qcal.estimate('minmax', pass:statistic(ids[t.name]), spec)\n"
    "  local shrunk = { lo = full.lo * P.shrink, hi = full.hi * P.shrink }\n"
    "  tried[t.name] = { t = t, list = { { method = 'minmax', range = full },\n"
    "                                    { method = 'shrunk', range = shrunk } } }\n"
    "  tried[t.name].id = ev:add(t, { { range = full, spec = spec }, { range = shrunk, spec = spec } })\n"
    "end\n"
    "ev:run()\n"
    "for name, c in pairs(tried) do\n"
    "  local errors = ev:errors(c.id)\n"
    "  local best = errors[2].cosine > errors[1].cosine and 2 or 1\n"
    "  for k, e in ipairs(errors) do c.list[k].cosine, c.list[k].mse = e.cosine, e.mse end\n"
    "  qcal.put(c.t, { method = c.list[best].method, spec = spec, range = c.list[best].range })\n"
    "  qcal.candidates(c.t, c.list, best, 'cosine')\n"
    "end\n";

Test(strategy, a_strategy_written_in_the_test_file)
{
    run_text_ok(readme_strategy, NULL);
    results *r = read_results(out_file);
    for (size_t t = 0; t < 3; t++) { /* flat: both ranges reproduce 0.75 exactly */
        float lo = INFINITY, hi = -INFINITY;
        size_t n = N * tensors[t].row;
        for (size_t i = 0; i < n; i++)
            if (isfinite(tensors[t].x[i]))
                lo = fminf(lo, tensors[t].x[i]), hi = fmaxf(hi, tensors[t].x[i]);
        double cos[2];
        for (int k = 0; k < 2; k++) {
            double f = k ? 0.9 : 1.0;
            sums s = tensor_sums(tensors[t].x, N, tensors[t].row, &U8, lo * f, hi * f);
            cos[k] = s.dot / sqrt(s.sr * s.sq);
        }
        const result_tensor *rt = find_tensor(r, tensors[t].name);
        cr_expect_str_eq(rt->method, cos[1] > cos[0] ? "shrunk" : "minmax", "%s: cosines %.9f %.9f",
                         tensors[t].name, cos[0], cos[1]);
    }
    results_free(r);
}

/* ---- qcal show ------------------------------------------------------------------------------ */

static void capture(const char *args, char *out, size_t size)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", TEST_QCAL_EXE, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    cr_assert_eq(pclose(p), 0, "%s:\n%s", cmd, out);
}

Test(strategy, show_prints_the_error_the_runner_up_and_every_candidate)
{
    qerror e = {0};
    cr_assert_eq(run_with("mix", NULL, 0, NULL, &e), 0, "%s", e.msg);
    results *r = read_results(out_file);
    const result_candidates *c = results_find_candidates(r, "solo");
    int64_t second = -1;
    for (uint64_t k = 0; k < c->n; k++)
        if ((int64_t)k != c->chosen && (second < 0 || c->mse[k] < c->mse[second]))
            second = (int64_t)k;
    char want_second[128], chosen_line[128];
    snprintf(want_second, sizeof want_second, "%s (%.4g)", c->method[second], c->mse[second]);
    snprintf(chosen_line, sizeof chosen_line, "* %s", c->method[c->chosen]);
    static char out[65536];
    char args[1024];
    snprintf(args, sizeof args, "show '%s'", out_file);
    capture(args, out, sizeof out);
    const char *row = strstr(out, "\nsolo ");
    cr_assert_not_null(row, "%s", out);
    const char *end = strchr(row + 1, '\n');
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)(end - row - 1), row + 1);
    cr_expect(strstr(line, "mix:") && strstr(line, want_second), "runner-up '%s' not in: %s", want_second, line);
    cr_expect(strstr(out, "percentile:99.9 ") == NULL || strstr(out, "runner-up"), "%s", out);
    cr_expect(strstr(out, chosen_line) == NULL, "candidates only with --candidates");
    snprintf(args, sizeof args, "show '%s' --candidates", out_file);
    capture(args, out, sizeof out);
    cr_expect(strstr(out, chosen_line) != NULL, "'%s' not in:\n%s", chosen_line, out);
    for (uint64_t k = 0; k < c->n; k++)
        cr_expect(strstr(out, c->method[k]) != NULL, "%s not listed", c->method[k]);
    results_free(r);
}
