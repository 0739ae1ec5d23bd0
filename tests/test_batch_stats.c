/* test_batch_stats.c - the batch_stats observer and the quantile estimator (POT / NNCF),
 * against references written here: sorting instead of selection, brute-force pair sums,
 * and values worked out by hand (POT's edge-case table). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "references.h"
#include "registry.h"

static registry *reg;
static const qcal_observer *obs;
static const qcal_estimator *est;

static void setup(void)
{
    reg = registry_new(NULL, NULL);
    qerror e = {0};
    cr_assert_eq(registry_load_file(reg, TEST_PLUGIN_DIR "/qcal-batch_stats.so", &e), 0, "%s", e.msg);
    obs = &registry_observer(reg, "batch_stats")->desc;
    est = &registry_estimator(reg, "quantile")->desc;
}

static void teardown(void) { registry_free(reg); }

TestSuite(batch_stats, .init = setup, .fini = teardown);

enum { UNIT_SAMPLE, UNIT_BATCH };

static void *make(const qcal_tensor *t, int unit, int per_channel, double q, int quantiles)
{
    qcal_value v[4] = {{.i = unit}, {.i = per_channel}, {.f = q}, {.i = quantiles}};
    void *s = NULL;
    qcal_err err = {{0}};
    cr_assert_eq(obs->create(t, v, &s, &err), QCAL_OK, "%s", err.msg);
    return s;
}

static void feed(void *s, const float *x, uint64_t rows, uint64_t row_size, uint64_t first)
{
    qcal_slab slab = {x + first * row_size, rows, row_size, first};
    qcal_err err = {{0}};
    cr_assert_eq(obs->observe(s, &slab, &err), QCAL_OK, "%s", err.msg);
}

static const float *array(const qcal_stat *st, const char *name)
{
    for (uint32_t i = 0; i < st->n_arrays; i++)
        if (!strcmp(st->arrays[i].name, name))
            return st->arrays[i].data;
    return NULL;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* numpy.quantile(v, q) with linear interpolation, by sorting a copy. */
static float np_quantile(const float *v, size_t n, double q)
{
    float *s = malloc(n * sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_float);
    float r = ref_quantile_sorted(s, n, q);
    free(s);
    return r;
}

/* The reference statistics of values v[0..n): min, max, absmax, quantiles of x and |x|. */
static void reference(const float *v, size_t n, double q, float out[7])
{
    float *a = malloc(n * sizeof *a);
    out[0] = INFINITY, out[1] = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        out[0] = fminf(out[0], v[i]), out[1] = fmaxf(out[1], v[i]);
        a[i] = fabsf(v[i]);
    }
    out[2] = fmaxf(-out[0], out[1]);
    out[3] = np_quantile(v, n, q), out[4] = np_quantile(v, n, 1 - q);
    out[5] = np_quantile(a, n, q), out[6] = np_quantile(a, n, 1 - q);
    free(a);
}

static const char *const names[7] = {"min", "max", "abs_max", "quantile_lo", "quantile_hi",
                                     "abs_quantile_lo", "abs_quantile_hi"};

/* Laplace values with a few large outliers: heavy tails make the quantiles matter. */
static void fill_laplace(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        double u = fx_rand_uniform(&seed) - 0.5;
        x[i] = (float)(-copysign(1.0, u) * log(1 - 2 * fabs(u)));
        if (fx_rand_uniform(&seed) < 0.001)
            x[i] *= 40;
    }
}

/* Laplace with outliers, then every fixture distribution (non-finite values left out). */
Test(batch_stats, per_sample_statistics_match_a_sorting_reference)
{
    enum { ROWS = 37, ROW = 3000 };
    static float x[ROWS * ROW], finite[ROW];
    for (int kind = -1; kind < FX_N_DISTS; kind++) {
        if (kind < 0)
            fill_laplace(x, ROWS * ROW, 3);
        else
            fx_fill_dist(x, ROWS * ROW, kind, 40 + (uint64_t)kind);
        qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {ROWS, ROW}, .batch_size = 5};
        void *s = make(&t, UNIT_SAMPLE, 0, 1e-3, 1);
        feed(s, x, 20, ROW, 0), feed(s, x, 17, ROW, 20);
        qcal_stat st;
        qcal_err err = {{0}};
        cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK, "%s", err.msg);
        cr_assert_eq(st.arrays[0].shape[0], ROWS);
        const char *what = kind < 0 ? "laplace" : fx_dist_names[kind];
        for (int r = 0; r < ROWS; r++) {
            float ref[7];
            reference(finite, fx_finite(x + r * ROW, ROW, finite), 1e-3, ref);
            for (int k = 0; k < 7; k++)
                cr_expect_float_eq(array(&st, names[k])[r], ref[k], 1e-6 * fabsf(ref[k]) + 1e-30,
                                   "%s sample %d %s: %g vs %g", what, r, names[k],
                                   array(&st, names[k])[r], ref[k]);
        }
        obs->destroy(s);
    }
}

/* Units large enough for the quantile filter (a threshold from a sample keeps the values
 * beyond it): exact against the sorting reference for data that could mislead a sample -
 * values repeating with the position (every 1024th alike), heavy ties at the quantile
 * (coarsely rounded values, a ReLU spike at 0), constants - and for quantiles near the ends,
 * in the middle (the filter declines) and at the very ends. */
Test(batch_stats, large_units_quantiles_exact_for_any_data)
{
    enum { ROWS = 16, ROW = 8192, BATCH = 8, SHAPES = 6 };
    static float x[ROWS * ROW], finite[BATCH * ROW];
    static const double qs[] = {1e-4, 1e-2, 0.3, 0.0, 1.0 / (BATCH * ROW - 1)};
    static const char *const shapes[SHAPES] = {"laplace", "periodic", "rounded", "relu",
                                               "constant", "two values"};
    uint64_t seed = 99;
    for (int shape = 0; shape < SHAPES; shape++) {
        fill_laplace(x, ROWS * ROW, 7 + (uint64_t)shape);
        for (int i = 0; i < ROWS * ROW; i++) {
            if (shape == 1) x[i] = (float)((i * 7919) % 1024) - (i % 1024 == 5 ? 1e4f : 0.0f);
            if (shape == 2) x[i] = roundf(x[i] * 2.0f) / 2.0f;
            if (shape == 3) x[i] = x[i] > 0 ? x[i] : 0.0f;
            if (shape == 4) x[i] = 2.5f;
            if (shape == 5) x[i] = fx_rand_uniform(&seed) < 0.999 ? -1.0f : 3.0f;
        }
        for (size_t k = 0; k < sizeof qs / sizeof *qs; k++) {
            qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {ROWS, ROW},
                             .batch_size = BATCH};
            void *s = make(&t, UNIT_BATCH, 0, qs[k], 1);
            feed(s, x, ROWS, ROW, 0);
            qcal_stat st;
            qcal_err err = {{0}};
            cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK, "%s", err.msg);
            for (int u = 0; u < ROWS / BATCH; u++) {
                float ref[7];
                reference(finite, fx_finite(x + u * BATCH * ROW, BATCH * ROW, finite), qs[k], ref);
                for (int j = 3; j < 7; j++)
                    cr_expect_eq(array(&st, names[j])[u], ref[j], "%s, q %g, unit %d, %s: %.9g "
                                 "vs %.9g", shapes[shape], qs[k], u, names[j],
                                 array(&st, names[j])[u], ref[j]);
            }
            obs->destroy(s);
        }
    }
}

Test(batch_stats, per_channel_and_per_batch_units_by_index_arithmetic)
{
    enum { ROWS = 10, C = 3, H = 4, W = 5, ROW = C * H * W, BATCH = 4 };
    static float x[ROWS * ROW];
    fx_fill_gauss(x, ROWS * ROW, 9, 0.5f, 2.0f);
    qcal_tensor t = {.name = "t", .rank = 4, .channel_axis = 1, .shape = {ROWS, C, H, W}, .batch_size = BATCH};
    void *s = make(&t, UNIT_BATCH, 1, 0.1, 1);
    feed(s, x, 8, ROW, 0), feed(s, x, 2, ROW, 8); /* batches 0, 1 and the short batch 2 */
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK, "%s", err.msg);
    cr_assert_eq(st.channels, C);
    cr_assert_eq(st.arrays[0].shape[0], 3, "three batches");
    for (int b = 0; b < 3; b++)
        for (int c = 0; c < C; c++) {
            float v[BATCH * H * W], ref[7];
            size_t n = 0;
            for (int r = b * BATCH; r < (b + 1) * BATCH && r < ROWS; r++)
                for (int i = 0; i < H * W; i++)
                    v[n++] = x[r * ROW + c * H * W + i];
            reference(v, n, 0.1, ref);
            for (int k = 0; k < 7; k++)
                cr_expect_float_eq(array(&st, names[k])[b * C + c], ref[k], 1e-6 * fabsf(ref[k]),
                                   "batch %d channel %d %s", b, c, names[k]);
        }
    obs->destroy(s);
}

Test(batch_stats, channel_last_layout)
{
    enum { ROWS = 6, T = 7, C = 4, ROW = T * C };
    float x[ROWS * ROW];
    fx_fill_gauss(x, ROWS * ROW, 4, 0, 1);
    qcal_tensor t = {.name = "t", .rank = 3, .channel_axis = 2, .shape = {ROWS, T, C}, .batch_size = 1};
    void *s = make(&t, UNIT_SAMPLE, 1, 0.25, 1);
    feed(s, x, ROWS, ROW, 0);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK, "%s", err.msg);
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < C; c++) {
            float v[T], ref[7];
            for (int i = 0; i < T; i++)
                v[i] = x[r * ROW + i * C + c];
            reference(v, T, 0.25, ref);
            for (int k = 0; k < 7; k++)
                cr_expect_float_eq(array(&st, names[k])[r * C + c], ref[k], 1e-6 * fabsf(ref[k]));
        }
    obs->destroy(s);
}

/* Slabs spread over two states in any order, merged: the same statistic, bit for bit. */
Test(batch_stats, independent_of_slabs_and_merge_order)
{
    enum { ROWS = 24, ROW = 500 };
    static float x[ROWS * ROW];
    fill_laplace(x, ROWS * ROW, 8);
    qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {ROWS, ROW}, .batch_size = 4};
    void *one = make(&t, UNIT_BATCH, 0, 1e-2, 1), *a = make(&t, UNIT_BATCH, 0, 1e-2, 1);
    void *b = make(&t, UNIT_BATCH, 0, 1e-2, 1);
    feed(one, x, ROWS, ROW, 0);
    feed(b, x, 8, ROW, 16), feed(a, x, 4, ROW, 12), feed(b, x, 8, ROW, 0), feed(a, x, 4, ROW, 8);
    qcal_err err = {{0}};
    cr_assert_eq(obs->merge(b, a, &err), QCAL_OK, "%s", err.msg);
    qcal_stat s1, s2;
    cr_assert_eq(obs->finalize(one, &s1, &err), QCAL_OK);
    cr_assert_eq(obs->finalize(b, &s2, &err), QCAL_OK);
    for (int k = 0; k < 7; k++)
        cr_expect_arr_eq(array(&s1, names[k]), array(&s2, names[k]), 6 * sizeof(float), "%s", names[k]);
    obs->destroy(one), obs->destroy(a), obs->destroy(b);
}

Test(batch_stats, nonfinite_values_are_left_out_and_counted)
{
    float x[3 * 4] = {1, NAN, -2, 5, INFINITY, NAN, -INFINITY, NAN, 0.5f, 0.25f, 4, 3};
    qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {3, 4}, .batch_size = 1};
    void *s = make(&t, UNIT_SAMPLE, 0, 0, 1);
    feed(s, x, 3, 4, 0);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK);
    const float *mn = array(&st, "min"), *mx = array(&st, "max");
    cr_expect(mn[0] == -2 && mx[0] == 5);
    cr_expect(isnan(mn[1]) && isnan(mx[1]), "a sample without finite values has NaN statistics");
    cr_expect(mn[2] == 0.25f && mx[2] == 4);
    const uint64_t *nf = (const uint64_t *)array(&st, "nonfinite");
    cr_expect(nf[0] == 3 && nf[1] == 2);
    /* the estimator skips the empty sample: mean of max over samples 0 and 2 = 4.5 */
    qcal_value p[8] = {{.i = 0}, {.i = 0}, {.i = 0}, {.i = 0}, {.i = 0}, {.f = 0.01}, {.i = 0}, {.i = 1}};
    qcal_qspec spec = {.bits = 8, .flags = 0, .qmin = 0, .qmax = 255, .axis = -1};
    qcal_range r;
    cr_assert_eq(est->estimate(&st, p, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    cr_expect_float_eq(r.hi, 4.5, 1e-6, "%g", r.hi);
    obs->destroy(s);
}

Test(batch_stats, state_round_trip_and_double_observation_refused)
{
    enum { ROWS = 8, ROW = 64 };
    float x[ROWS * ROW];
    fx_fill_gauss(x, ROWS * ROW, 2, 0, 1);
    qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {ROWS, ROW}, .batch_size = 2};
    void *a = make(&t, UNIT_SAMPLE, 0, 1e-2, 1), *b = make(&t, UNIT_SAMPLE, 0, 1e-2, 1);
    feed(a, x, ROWS, ROW, 0);
    qcal_stat saved, s1, s2;
    qcal_err err = {{0}};
    cr_assert_eq(obs->serialize(a, &saved, &err), QCAL_OK);
    cr_assert_eq(obs->deserialize(b, &saved, &err), QCAL_OK, "%s", err.msg);
    cr_assert_eq(obs->finalize(a, &s1, &err), QCAL_OK);
    cr_assert_eq(obs->finalize(b, &s2, &err), QCAL_OK);
    for (int k = 0; k < 7; k++)
        cr_expect_arr_eq(array(&s1, names[k]), array(&s2, names[k]), ROWS * sizeof(float));
    /* the same samples merged twice would be double counting: refused */
    cr_assert_eq(obs->merge(b, a, &err), QCAL_OK);
    cr_expect_eq(obs->finalize(b, &s2, &err), QCAL_E_DATA);
    cr_expect(strstr(err.msg, "observed twice"), "%s", err.msg);
    /* another outlier_prob's state does not fold in */
    void *c = make(&t, UNIT_SAMPLE, 0, 1e-3, 1);
    cr_assert_eq(obs->serialize(a, &saved, &err), QCAL_OK);
    cr_expect_eq(obs->deserialize(c, &saved, &err), QCAL_E_DATA);
    obs->destroy(a), obs->destroy(b), obs->destroy(c);
}

/* ---- the estimator ------------------------------------------------------------------------ */

enum { AUTO = 0, T_MIN = 1, T_MAX, T_ABS_MAX, T_QUANTILE, T_ABS_QUANTILE };
enum { A_MEAN = 1, A_MAX, A_MIN, A_MEDIAN, A_MEAN_NO, A_MEDIAN_NO, A_HL };

/* A statistic of m per-tensor units whose every statistic is values[u]. */
typedef struct fake {
    float v[7][4096];
    uint64_t unit[4096];
    double prob;
    uint64_t rows, nf[2], q;
    qcal_array arrays[12];
    qcal_stat st;
} fake;

static void fake_make(fake *f, const float *values, uint64_t m)
{
    memset(f, 0, sizeof *f);
    for (int k = 0; k < 7; k++) {
        memcpy(f->v[k], values, m * sizeof(float));
        f->arrays[k] = (qcal_array){names[k], QCAL_DTYPE_F32, 2, {m, 1}, f->v[k]};
    }
    for (uint64_t i = 0; i < m; i++)
        f->unit[i] = i;
    f->prob = 1e-4, f->rows = 1, f->q = 1;
    f->arrays[7] = (qcal_array){"unit", QCAL_DTYPE_U64, 1, {m}, f->unit};
    f->arrays[8] = (qcal_array){"outlier_prob", QCAL_DTYPE_F64, 1, {1}, &f->prob};
    f->arrays[9] = (qcal_array){"unit_rows", QCAL_DTYPE_U64, 1, {1}, &f->rows};
    f->arrays[10] = (qcal_array){"nonfinite", QCAL_DTYPE_U64, 1, {2}, f->nf};
    f->arrays[11] = (qcal_array){"quantiles", QCAL_DTYPE_U64, 1, {1}, &f->q};
    f->st = (qcal_stat){"qcal.batch_stats", 1, 12, 1, f->arrays};
}

/* The upper border with aggregator agg on max_type max (asymmetric, no POT fixes). */
static double upper(const fake *f, int agg, double cut, int self_pairs)
{
    qcal_value p[8] = {{.i = 0}, {.i = T_MIN}, {.i = A_MIN}, {.i = T_MAX}, {.i = agg},
                       {.f = cut}, {.i = self_pairs}, {.i = 0}};
    qcal_qspec spec = {.bits = 8, .flags = 0, .qmin = 0, .qmax = 255, .axis = -1};
    qcal_range r;
    qcal_err err = {{0}};
    cr_assert_eq(est->estimate(&f->st, p, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    return r.hi;
}

Test(batch_stats, aggregators_by_hand)
{
    static fake f;
    float v[5] = {4, 100, 1, 3, 2};
    fake_make(&f, v, 5);
    cr_expect_float_eq(upper(&f, A_MEAN, 0.01, 0), 22.0, 1e-12);
    cr_expect_eq(upper(&f, A_MAX, 0.01, 0), 100.0);
    cr_expect_eq(upper(&f, A_MIN, 0.01, 0), 1.0);
    cr_expect_eq(upper(&f, A_MEDIAN, 0.01, 0), 3.0);
    /* quantiles 0.01 and 0.99 of {1,2,3,4,100}: 1.04 and 96.16; inside: {2, 3, 4} */
    cr_expect_float_eq(upper(&f, A_MEAN_NO, 0.01, 0), 3.0, 1e-12);
    cr_expect_eq(upper(&f, A_MEDIAN_NO, 0.01, 0), 3.0);
    /* pair sums i<j: 3 4 5 5 6 7 101 102 103 104 -> median 6.5, halved 3.25 */
    cr_expect_eq(upper(&f, A_HL, 0.01, 0), 3.25);
    /* with i=j: + 2 4 6 8 200 -> 15 sums, the 8th is 6 -> 3 */
    cr_expect_eq(upper(&f, A_HL, 0.01, 1), 3.0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

Test(batch_stats, hodges_lehmann_matches_brute_force)
{
    static fake f;
    static float v[700];
    static double sums[700 * 701 / 2];
    for (int trial = 0; trial < 6; trial++) {
        int m = trial < 3 ? 700 - trial : 2 + trial;
        fill_laplace(v, (size_t)m, 30 + (uint64_t)trial);
        if (trial == 1)
            for (int i = 0; i < m; i++) v[i] = roundf(v[i]); /* many ties */
        for (int i = 0; i < m; i++)
            v[i] += 200; /* positive: the range always includes zero, the upper border is HL */
        fake_make(&f, v, (uint64_t)m);
        for (int self = 0; self < 2; self++) {
            size_t n = 0;
            for (int i = 0; i < m; i++)
                for (int j = self ? i : i + 1; j < m; j++)
                    sums[n++] = ((double)v[i] + (double)v[j]) / 2;
            qsort(sums, n, sizeof *sums, cmp_double);
            double median = n % 2 ? sums[n / 2] : (sums[n / 2 - 1] + sums[n / 2]) / 2;
            cr_expect_eq(upper(&f, A_HL, 0.01, self), median, "m %d self %d: %.9g vs %.9g", m,
                         self, upper(&f, A_HL, 0.01, self), median);
        }
    }
}

/* POT's table of edge cases (its §1.8), worked out by hand from its border rules. */
static qcal_range pot_range(const float *x, uint64_t rows, uint64_t row, int symmetric)
{
    qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {rows, row}, .batch_size = 1};
    void *s = make(&t, UNIT_SAMPLE, 0, 1e-4, 1);
    feed(s, x, rows, row, 0);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK);
    qcal_value p[8] = {{.i = 0}, {.i = 0}, {.i = 0}, {.i = 0}, {.i = 0}, {.f = 0.01}, {.i = 0}, {.i = 1}};
    qcal_qspec spec = {.bits = 8, .flags = symmetric ? QCAL_QSPEC_SYMMETRIC : 0, .qmin = 0, .qmax = 255, .axis = -1};
    qcal_range r;
    cr_assert_eq(est->estimate(&st, p, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    obs->destroy(s);
    return r;
}

Test(batch_stats, pot_edge_cases)
{
    float c[8], z[8] = {0}, neg[8];
    for (int i = 0; i < 8; i++)
        c[i] = 0.75f, neg[i] = -3.25f;
    qcal_range r = pot_range(c, 2, 4, 1);
    cr_expect(r.lo == 0 && r.hi == 0.75, "constant, symmetric: [%g, %g]", r.lo, r.hi);
    r = pot_range(c, 2, 4, 0); /* 0 width <= 8e-4: widened, zero included; zero at level 0 */
    cr_expect(r.lo == 0 && fabs(r.hi - 0.7508) < 1e-9, "constant, asymmetric: [%g, %g]", r.lo, r.hi);
    r = pot_range(z, 2, 4, 1);
    cr_expect(r.lo == 0 && r.hi == 8e-5, "zeros, symmetric: [%g, %g]", r.lo, r.hi);
    /* [-8e-4, 8e-4]: q = round(127.5) = 128 (half to even); lo moves to 128 * 8e-4 / -127 */
    r = pot_range(z, 2, 4, 0);
    cr_expect(fabs(r.lo - 128 * 8e-4 / -127.0) < 1e-12 && r.hi == 8e-4, "zeros: [%.9g, %g]", r.lo, r.hi);
    r = pot_range(neg, 2, 4, 1);
    cr_expect(r.lo == -3.25 && r.hi == 3.25, "negative constant: [%g, %g]", r.lo, r.hi);
    r = pot_range(neg, 2, 4, 0);
    cr_expect(fabs(r.lo + 3.2508) < 1e-9 && r.hi == 0, "negative constant: [%g, %g]", r.lo, r.hi);
}

/* tune_range on a general range: zero lands exactly on a level, a border only moves outwards. */
Test(batch_stats, asymmetric_range_puts_zero_on_a_level)
{
    float x[2 * 3] = {-1.0f, 0.3f, 2.9f, -0.5f, 0.1f, 3.1f};
    qcal_range r = pot_range(x, 2, 3, 0); /* mean of mins -0.75, mean of maxes 3.0 */
    double steps = 255, q = -r.lo * steps / (r.hi - r.lo);
    cr_expect_float_eq(q, nearbyint(q), 1e-9, "zero at level %.12g", q);
    cr_expect(r.lo <= -0.75 && r.hi >= 3.0, "[%g, %g]", r.lo, r.hi);
    /* by hand: q = round(0.75 * 255 / 3.75) = 51; lo' = 51 * 3 / (51 - 255) = -0.75 (already),
     * hi' = -204 * -0.75 / 51 = 3.0: both candidates equal the range */
    cr_expect_float_eq(r.lo, -0.75, 1e-12);
    cr_expect_float_eq(r.hi, 3.0, 1e-12);
}

Test(batch_stats, quantile_preset_means_per_sample_quantiles)
{
    enum { ROWS = 16, ROW = 4000 };
    static float x[ROWS * ROW];
    fill_laplace(x, ROWS * ROW, 77);
    qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {ROWS, ROW}, .batch_size = 1};
    void *s = make(&t, UNIT_SAMPLE, 0, 1e-3, 1);
    feed(s, x, ROWS, ROW, 0);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK);
    double lo = 0, hi = 0, abs_hi = 0;
    for (int r = 0; r < ROWS; r++) {
        float ref[7];
        reference(x + r * ROW, ROW, 1e-3, ref);
        lo += ref[3] / ROWS, hi += ref[4] / ROWS, abs_hi += ref[6] / ROWS;
    }
    qcal_value p[8] = {{.i = 1}, {.i = 0}, {.i = 0}, {.i = 0}, {.i = 0}, {.f = 0.01}, {.i = 0}, {.i = 0}};
    qcal_qspec spec = {.bits = 8, .flags = 0, .qmin = 0, .qmax = 255, .axis = -1};
    qcal_range r;
    cr_assert_eq(est->estimate(&st, p, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    cr_expect_float_eq(r.lo, lo, 1e-5, "%g vs %g", r.lo, lo);
    cr_expect_float_eq(r.hi, hi, 1e-5, "%g vs %g", r.hi, hi);
    spec.flags = QCAL_QSPEC_SYMMETRIC | QCAL_QSPEC_SIGNED, spec.qmin = -128, spec.qmax = 127;
    cr_assert_eq(est->estimate(&st, p, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    cr_expect_float_eq(r.hi, abs_hi, 1e-5, "%g vs %g", r.hi, abs_hi);
    cr_expect_eq(r.lo, -r.hi);
    obs->destroy(s);
}

Test(batch_stats, per_channel_symmetric_floors_weak_channels)
{
    enum { ROWS = 4, C = 3, ROW = C * 2 };
    /* channel 0 strong (up to 10), channel 1 weak (0.01), channel 2 all zero */
    float x[ROWS * ROW];
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < 2; i++)
                x[r * ROW + c * 2 + i] = c == 0 ? (float)(r + 7 + i) : c == 1 ? 0.01f * (float)i : 0;
    qcal_tensor t = {.name = "t", .rank = 3, .channel_axis = 1, .shape = {ROWS, C, 2}, .batch_size = 1};
    void *s = make(&t, UNIT_SAMPLE, 1, 1e-4, 0);
    feed(s, x, ROWS, ROW, 0);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, &st, &err), QCAL_OK);
    qcal_value p[8] = {{.i = 0}, {.i = 0}, {.i = 0}, {.i = 0}, {.i = 0}, {.f = 0.01}, {.i = 0}, {.i = 1}};
    qcal_qspec spec = {.bits = 8, .flags = QCAL_QSPEC_SYMMETRIC | QCAL_QSPEC_SIGNED | QCAL_QSPEC_PER_CHANNEL,
                       .qmin = -128, .qmax = 127, .axis = 1};
    qcal_range r[C];
    cr_assert_eq(est->estimate(&st, p, &spec, r, C, &err), QCAL_OK, "%s", err.msg);
    /* per channel symmetric: abs_max aggregated by max; floor max(8e-5, 1 % of 11) = 0.11 */
    cr_expect_eq(r[0].hi, 11.0);
    cr_expect_float_eq(r[1].hi, 0.11, 1e-12);
    cr_expect_float_eq(r[2].hi, 0.11, 1e-12);
    cr_expect_eq(r[1].lo, -r[1].hi);
    /* the quantile preset needs the quantiles this observer did not keep */
    p[0].i = 1;
    cr_expect_eq(est->estimate(&st, p, &spec, r, C, &err), QCAL_E_KIND);
    cr_expect(strstr(err.msg, "quantiles=true"), "%s", err.msg);
    /* a per-tensor spec on a per-channel statistic is refused */
    spec.flags &= ~QCAL_QSPEC_PER_CHANNEL;
    cr_expect_eq(est->estimate(&st, p, &spec, r, 1, &err), QCAL_E_KIND);
    obs->destroy(s);
}
