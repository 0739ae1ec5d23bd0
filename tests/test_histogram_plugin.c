/* test_histogram_plugin.c - the histogram observer: exact counts, resolution, split invariance */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "hstat.h"
#include "params.h"
#include "registry.h"

static registry *reg;
static const qcal_observer *obs;

static void setup(void)
{
    reg = registry_new(NULL, NULL);
    qerror e = {0};
    cr_assert_eq(registry_load_file(reg, TEST_PLUGIN_DIR "/qcal-histogram.so", &e), 0, "%s", e.msg);
    obs = &registry_observer(reg, "histogram")->desc;
}

static void teardown(void) { registry_free(reg); }

TestSuite(histogram, .init = setup, .fini = teardown);

static void *make_state(int bins, int abs, int factor)
{
    qcal_value v[3] = {{.i = bins}, {.i = abs}, {.i = factor}};
    qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = 1, .shape = {1000, 10}, .batch_size = 4};
    void *s = NULL;
    qcal_err err = {{0}};
    cr_assert_eq(obs->create(&t, v, &s, &err), QCAL_OK, "%s", err.msg);
    return s;
}

static void feed(void *s, const float *x, uint64_t rows, uint64_t row_size, uint64_t first)
{
    qcal_slab slab = {x, rows, row_size, first};
    qcal_err err = {{0}};
    cr_assert_eq(obs->observe(s, &slab, &err), QCAL_OK, "%s", err.msg);
}

static const qcal_array *get(const qcal_stat *st, const char *name)
{
    for (uint32_t i = 0; i < st->n_arrays; i++)
        if (!strcmp(st->arrays[i].name, name))
            return &st->arrays[i];
    cr_assert_fail("no array %s", name);
    return NULL;
}

static double f64(const qcal_stat *st, const char *name) { return *(const double *)get(st, name)->data; }
static uint64_t u64(const qcal_stat *st, const char *name) { return *(const uint64_t *)get(st, name)->data; }

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Values of x (finite; |x| when abs) in [lo, hi): by binary search over the sorted values. */
static uint64_t count_in(const float *sorted, size_t n, double lo, double hi)
{
    size_t a = 0, b = n;
    while (a < b) { /* first >= lo */
        size_t m = (a + b) / 2;
        if ((double)sorted[m] < lo) a = m + 1; else b = m;
    }
    size_t c = a, d = n;
    while (c < d) { /* first >= hi */
        size_t m = (c + d) / 2;
        if ((double)sorted[m] < hi) c = m + 1; else d = m;
    }
    return c - a;
}

/* Checks every bin of the statistic against the raw values, and the guaranteed resolution. */
static void expect_exact(const qcal_stat *st, const float *x, size_t n, int abs, uint64_t capacity)
{
    float *v = malloc(n * sizeof *v);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i]))
            v[m++] = abs ? fabsf(x[i]) : x[i] + 0.0f;
    qsort(v, m, sizeof *v, cmp_float);
    const qcal_array *counts = get(st, "counts");
    double lo = f64(st, "lo"), w = f64(st, "width");
    uint64_t total = 0;
    for (uint64_t i = 0; i < counts->shape[0]; i++) {
        uint64_t c = ((const uint64_t *)counts->data)[i];
        cr_assert_eq(c, count_in(v, m, lo + (double)i * w, lo + (double)(i + 1) * w), "bin %llu",
                     (unsigned long long)i);
        total += c;
    }
    cr_expect_eq(total, m, "every finite value counted once");
    cr_expect_eq(u64(st, "count"), m);
    cr_expect_eq(f64(st, "min"), (double)v[0]);
    cr_expect_eq(f64(st, "max"), (double)v[m - 1]);
    if (v[m - 1] > v[0])
        cr_expect_leq(w, 2.0 * ((double)v[m - 1] - (double)v[0]) / (double)capacity, "resolution");
    cr_expect_leq(counts->shape[0], capacity);
    free(v);
}

static void finalize(void *s, qcal_stat *st)
{
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, st, &err), QCAL_OK, "%s", err.msg);
}

Test(histogram, counts_are_exact_for_each_distribution)
{
    enum { N = 20000 };
    static float x[N];
    uint64_t seed = 5;
    for (int kind = 0; kind < 5; kind++) {
        fx_fill_gauss(x, N, 11 + (uint64_t)kind, 0.0f, 1.0f);
        for (int i = 0; i < N; i++) {
            double u = fx_rand_uniform(&seed);
            if (kind == 1) x[i] = x[i] > 0 ? x[i] : 0.0f;                        /* ReLU spike */
            if (kind == 2) x[i] = (float)(x[i] * 0.5 * (1 + erf(x[i] / sqrt(2.0)))); /* GELU */
            if (kind == 3) x[i] = (float)((u < 0.5 ? 1 : -1) * log(1 - fabs(2 * u - 1)) * (u < 1e-3 ? 50 : 1));
            if (kind == 4) x[i] = x[i] + (i % 2 ? 6.0f : -3.0f);                  /* bimodal */
        }
        x[3] = NAN, x[4] = INFINITY, x[5] = -INFINITY;
        for (int abs = 0; abs < 2; abs++) {
            void *s = make_state(2048, abs, 4);
            feed(s, x, N / 10, 10, 0);
            qcal_stat st;
            finalize(s, &st);
            expect_exact(&st, x, N, abs, 8192);
            const uint64_t *nf = get(&st, "nonfinite")->data;
            cr_expect(nf[0] == 1 && nf[1] == 2, "NaN and Inf counted apart");
            obs->destroy(s);
        }
    }
}

Test(histogram, degenerate_tensors)
{
    static float constant[64], zeros[64];
    for (int i = 0; i < 64; i++)
        constant[i] = 0.75f;
    const float *data[3] = {constant, zeros, constant};
    const uint64_t n[3] = {64, 64, 1};
    for (int k = 0; k < 3; k++) {
        void *s = make_state(2048, 0, 4);
        feed(s, data[k], n[k], 1, 0);
        qcal_stat st;
        finalize(s, &st);
        expect_exact(&st, data[k], n[k], 0, 8192);
        cr_expect(f64(&st, "width") > 0 && isfinite(f64(&st, "lo")));
        cr_expect_eq(get(&st, "counts")->shape[0], 1u, "one occupied bin");
        obs->destroy(s);
    }
    static const float nan_only[4] = {NAN, NAN, INFINITY, NAN};
    void *s = make_state(2048, 0, 4);
    feed(s, nan_only, 4, 1, 0);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_expect_eq(obs->finalize(s, &st, &err), QCAL_E_DATA);
    cr_expect(strstr(err.msg, "3 NaN") && strstr(err.msg, "1 Inf"), "%s", err.msg);
    obs->destroy(s);
}

/* Serialized bytes of a state, for comparing. */
static size_t state_bytes(void *s, unsigned char *out, size_t cap)
{
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->serialize(s, &st, &err), QCAL_OK, "%s", err.msg);
    size_t len = 0;
    for (uint32_t i = 0; i < st.n_arrays; i++) {
        size_t bytes = hstat_array_count(&st.arrays[i]) * hstat_dtype_size(st.arrays[i].dtype);
        cr_assert_leq(len + bytes, cap);
        memcpy(out + len, st.arrays[i].data, bytes);
        len += bytes;
    }
    return len;
}

Test(histogram, independent_of_slabs_states_and_merge_order)
{
    enum { ROWS = 400, COLS = 25 };
    static float x[ROWS * COLS];
    fx_fill_gauss(x, ROWS * COLS, 3, 1.0f, 4.0f);
    x[7777] = 900.0f; /* a late outlier forces merging bins */
    static unsigned char ref[1 << 20], got[1 << 20];
    for (int abs = 0; abs < 2; abs++) {
        void *whole = make_state(256, abs, 2);
        feed(whole, x, ROWS, COLS, 0);
        size_t ref_len = state_bytes(whole, ref, sizeof ref);
        uint64_t seed = 99;
        for (int trial = 0; trial < 6; trial++) {
            void *states[4];
            for (int k = 0; k < 4; k++)
                states[k] = make_state(256, abs, 2);
            for (uint64_t row = 0; row < ROWS;) { /* random slabs to random states */
                uint64_t rows = 1 + fx_rand_u64(&seed) % 37;
                rows = rows > ROWS - row ? ROWS - row : rows;
                feed(states[fx_rand_u64(&seed) % 4], x + row * COLS, rows, COLS, row);
                row += rows;
            }
            int order[4] = {0, 1, 2, 3};
            for (int k = 3; k > 0; k--) { /* a random merge order */
                int j = (int)(fx_rand_u64(&seed) % (uint64_t)(k + 1)), t = order[k];
                order[k] = order[j], order[j] = t;
            }
            qcal_err err = {{0}};
            for (int k = 1; k < 4; k++)
                cr_assert_eq(obs->merge(states[order[0]], states[order[k]], &err), QCAL_OK, "%s", err.msg);
            size_t len = state_bytes(states[order[0]], got, sizeof got);
            cr_assert(len == ref_len && !memcmp(ref, got, len), "abs %d trial %d differs", abs, trial);
            for (int k = 0; k < 4; k++)
                obs->destroy(states[k]);
        }
        obs->destroy(whole);
    }
}

Test(histogram, saved_state_round_trip_and_malformed_states)
{
    enum { N = 3000 };
    static float x[N];
    fx_fill_gauss(x, N, 8, -2.0f, 0.5f);
    void *a = make_state(512, 0, 4);
    feed(a, x, N, 1, 0);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(obs->serialize(a, &st, &err), QCAL_OK);
    hstat *saved;
    qerror e = {0};
    cr_assert_eq(hstat_copy(&st, &saved, &e), 0, "%s", e.msg);
    void *b = make_state(512, 0, 4);
    cr_assert_eq(obs->deserialize(b, &saved->view, &err), QCAL_OK, "%s", err.msg);
    static unsigned char ba[1 << 16], bb[1 << 16];
    size_t la = state_bytes(a, ba, sizeof ba), lb = state_bytes(b, bb, sizeof bb);
    cr_expect(la == lb && !memcmp(ba, bb, la), "round trip changed the state");
    /* a count that no longer adds up, and a state of other parameters, are refused */
    for (uint32_t i = 0; i < saved->view.n_arrays; i++)
        if (!strcmp(saved->view.arrays[i].name, "count"))
            ((uint64_t *)saved->data[i])[0] += 1;
    void *c = make_state(512, 0, 4);
    cr_expect_eq(obs->deserialize(c, &saved->view, &err), QCAL_E_DATA);
    void *other = make_state(1024, 0, 4);
    cr_expect_eq(obs->deserialize(other, &st, &err), QCAL_E_DATA);
    cr_expect(strstr(err.msg, "2048") && strstr(err.msg, "4096"), "%s", err.msg);
    hstat_free(saved);
    obs->destroy(a), obs->destroy(b), obs->destroy(c), obs->destroy(other);
}

/* ---- percentile ------------------------------------------------------------------------ */

/* The order statistic at rank ceil(q n) of the sorted values: the reference. */
static double order_stat(const float *sorted, size_t n, double q)
{
    size_t r = (size_t)ceil(q * (double)n);
    return sorted[r ? r - 1 : 0];
}

static int estimate(void *state, double p, int side, uint32_t flags, qcal_range *r, qcal_err *err)
{
    const qcal_estimator *est = &registry_estimator(reg, "percentile")->desc;
    qcal_stat st;
    finalize(state, &st);
    qcal_value v[2] = {{.f = p}, {.i = side}};
    qcal_qspec spec = {.bits = 8, .flags = flags, .qmin = 0, .qmax = 255, .axis = -1};
    memset(err, 0, sizeof *err);
    return est->estimate(&st, v, &spec, r, 1, err);
}

static float *sorted_copy(const float *x, size_t n, int abs)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = abs ? fabsf(x[i]) : x[i];
    qsort(v, n, sizeof *v, cmp_float);
    return v;
}

Test(histogram, percentile_matches_order_statistics_within_a_bin)
{
    enum { N = 50000 };
    static float x[N], relu[N];
    fx_fill_gauss(x, N, 21, 0.3f, 2.0f);
    for (int i = 0; i < N; i++)
        relu[i] = x[i] > 0 ? x[i] : 0.0f;
    qcal_range r;
    qcal_err err;
    const double ps[3] = {99.0, 99.99, 99.9};
    for (int k = 0; k < 3; k++) {
        double q = ps[k] / 100;
        void *s = make_state(2048, 0, 4);
        feed(s, x, N, 1, 0);
        qcal_stat st;
        finalize(s, &st);
        double w = f64(&st, "width");
        float *v = sorted_copy(x, N, 0);
        cr_assert_eq(estimate(s, ps[k], 0, 0, &r, &err), QCAL_OK, "%s", err.msg);
        cr_expect(fabs(r.hi - order_stat(v, N, q)) <= w, "two-sided hi %g vs %g", r.hi, order_stat(v, N, q));
        cr_expect(fabs(r.lo - order_stat(v, N, 1 - q)) <= w, "two-sided lo %g vs %g", r.lo, order_stat(v, N, 1 - q));
        free(v);
        obs->destroy(s);
        s = make_state(2048, 0, 4); /* ReLU'd: one-sided, the minimum kept */
        feed(s, relu, N, 1, 0);
        finalize(s, &st);
        v = sorted_copy(relu, N, 0);
        cr_assert_eq(estimate(s, ps[k], 0, 0, &r, &err), QCAL_OK, "%s", err.msg);
        cr_expect_eq(r.lo, 0.0);
        cr_expect(fabs(r.hi - order_stat(v, N, q)) <= f64(&st, "width"));
        free(v);
        obs->destroy(s);
        s = make_state(2048, 1, 4); /* symmetric on |x| */
        feed(s, x, N, 1, 0);
        finalize(s, &st);
        v = sorted_copy(x, N, 1);
        cr_assert_eq(estimate(s, ps[k], 0, QCAL_QSPEC_SYMMETRIC | QCAL_QSPEC_SIGNED, &r, &err), QCAL_OK, "%s", err.msg);
        cr_expect(r.lo == -r.hi && fabs(r.hi - order_stat(v, N, q)) <= f64(&st, "width"),
                  "abs %g vs %g", r.hi, order_stat(v, N, q));
        free(v);
        obs->destroy(s);
    }
}

Test(histogram, percentile_edges_and_refusals)
{
    static float x[1000];
    fx_fill_gauss(x, 1000, 4, 0.0f, 1.0f);
    float mx = -INFINITY;
    for (int i = 0; i < 1000; i++)
        mx = fmaxf(mx, x[i]);
    qcal_range r;
    qcal_err err;
    void *s = make_state(2048, 0, 4);
    feed(s, x, 1000, 1, 0);
    cr_assert_eq(estimate(s, 100.0, 0, 0, &r, &err), QCAL_OK);
    cr_expect_eq(r.hi, (double)mx, "100 %% is the exact maximum");
    cr_expect_eq(estimate(s, 99.9, 0, QCAL_QSPEC_SYMMETRIC | QCAL_QSPEC_SIGNED, &r, &err), QCAL_E_KIND);
    cr_expect(strstr(err.msg, "abs=true"), "%s", err.msg);
    cr_expect_eq(estimate(s, 99.9, 0, QCAL_QSPEC_PER_CHANNEL, &r, &err), QCAL_E_UNSUP);
    cr_expect_eq(estimate(s, 99.9, 0, 1u << 20, &r, &err), QCAL_E_UNSUP);
    obs->destroy(s);
    static float c[16];
    for (int i = 0; i < 16; i++)
        c[i] = -1.5f;
    s = make_state(2048, 0, 4); /* constant: a valid, non-inverted range, never NaN */
    feed(s, c, 16, 1, 0);
    cr_assert_eq(estimate(s, 99.99, 0, 0, &r, &err), QCAL_OK);
    cr_expect(r.lo == -1.5 && r.hi == -1.5, "[%g, %g]", r.lo, r.hi);
    obs->destroy(s);
}

/* ---- kl: against a literal transcription of the published algorithm ------------------- */

/* TensorRT's entropy threshold, literally, on a 2048-bin |x| histogram built here from the raw
 * values; Q is built level by level (bins [ceil(l i / L), ceil((l + 1) i / L))). nvpq: H[0] :=
 * H[1], i up to 2048 inclusive, last argmin, threshold i W. eps: ORT smoothing (trt only). */
static double kl_reference(const float *x, size_t n, int nvpq, double eps)
{
    enum { B = 2048, L = 128 };
    static double h[B], p[B], q[B];
    double amax = 0;
    for (size_t k = 0; k < n; k++)
        amax = fmax(amax, fabs((double)x[k]));
    double W = amax / B, best = INFINITY, t = amax;
    memset(h, 0, sizeof h);
    for (size_t k = 0; k < n; k++) {
        size_t j = (size_t)(fabs((double)x[k]) / W);
        h[j < B ? j : B - 1] += 1;
    }
    if (nvpq)
        h[0] = h[1];
    for (int i = 128; i <= (nvpq ? B : B - 1); i++) {
        double outliers = 0;
        for (int j = i; j < B; j++)
            outliers += h[j];
        for (int j = 0; j < i; j++)
            p[j] = h[j], q[j] = 0;
        p[i - 1] += outliers;
        for (int l = 0; l < L; l++) {
            int a = (int)ceil((double)l * i / L), b = (int)ceil((double)(l + 1) * i / L);
            double sum = 0;
            int used = 0;
            for (int j = a; j < b; j++)
                sum += h[j], used += h[j] > 0;
            for (int j = a; j < b; j++)
                q[j] = h[j] > 0 ? sum / used : 0;
        }
        for (int pass = 0; eps > 0 && pass < 2; pass++) { /* smooth p, then q */
            double *d = pass ? q : p;
            int zeros = 0;
            for (int j = 0; j < i; j++)
                zeros += d[j] == 0;
            for (int j = 0; j < i; j++)
                d[j] = d[j] == 0 ? eps : d[j] - eps * zeros / (i - zeros);
        }
        double sp = 0, sq = 0, kl = 0;
        for (int j = 0; j < i; j++)
            sp += p[j], sq += q[j];
        for (int j = 0; j < i && isfinite(kl); j++)
            if (p[j] > 0)
                kl = q[j] > 0 ? kl + p[j] / sp * log(p[j] / sp * sq / q[j]) : INFINITY;
        if (isfinite(kl) && (nvpq ? kl <= best : kl < best)) {
            best = kl;
            t = nvpq ? i * W : (i + 0.5) * W;
        }
    }
    return t;
}

static double kl_threshold_of(const float *x, size_t n, int variant, double eps)
{
    void *s = make_state(2048, 1, 4);
    feed(s, x, n, 1, 0);
    qcal_stat st;
    finalize(s, &st);
    const qcal_estimator *est = &registry_estimator(reg, "kl")->desc;
    qcal_value v[5] = {{.i = variant}, {.i = 2048}, {.i = 128}, {.i = 128}, {.f = eps}};
    qcal_qspec spec = {.bits = 8, .flags = QCAL_QSPEC_SIGNED | QCAL_QSPEC_SYMMETRIC,
                       .qmin = -127, .qmax = 127, .axis = -1};
    qcal_range r;
    qcal_err err = {{0}};
    cr_assert_eq(est->estimate(&st, v, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    cr_assert(r.lo == -r.hi && r.hi >= 0);
    obs->destroy(s);
    return r.hi;
}

Test(histogram, kl_matches_the_published_algorithm_within_a_bin)
{
    enum { N = 200000 };
    static float x[N];
    uint64_t seed = 17;
    for (int kind = 0; kind < 3; kind++) {
        fx_fill_gauss(x, N, 31 + (uint64_t)kind, 0.0f, 1.0f);
        for (int i = 0; i < N; i++) {
            double u = fx_rand_uniform(&seed);
            if (kind == 1) x[i] = x[i] > 0 ? x[i] : 0.0f;
            if (kind == 2) x[i] = (float)((u < 0.5 ? 1 : -1) * log(1 - fabs(2 * u - 1)));
        }
        double amax = 0;
        for (int i = 0; i < N; i++)
            amax = fmax(amax, fabs((double)x[i]));
        double W = amax / 2048;
        for (int variant = 0; variant < 2; variant++) {
            double eps = variant ? 0.0 : 0.0001;
            double got = kl_threshold_of(x, N, variant, eps), want = kl_reference(x, N, variant, eps);
            cr_expect(fabs(got - want) <= W, "kind %d variant %d: %g vs %g (bin %g)", kind, variant,
                      got, want, W);
        }
    }
}

Test(histogram, kl_degenerate_inputs_give_valid_thresholds)
{
    static float c[256], z[256];
    for (int i = 0; i < 256; i++)
        c[i] = 0.75f;
    for (int variant = 0; variant < 2; variant++) {
        double t = kl_threshold_of(c, 256, variant, 0.0);
        cr_expect(t > 0 && t <= 0.75 && isfinite(t), "constant: %g", t);
        cr_expect_eq(kl_threshold_of(z, 256, variant, 0.0), 0.0, "all zero");
    }
}

/* ---- mse: against brute force on the raw values ---------------------------------------- */

/* Sum of squared fake-quant errors of the raw values on the int8 grid (torch's rules). */
static double raw_error(const float *x, size_t n, double lo, double hi, int symmetric)
{
    double qmin = symmetric ? -128 : 0, qmax = symmetric ? 127 : 255, scale, zp;
    lo = fmin(lo, 0), hi = fmax(hi, 0);
    if (symmetric) {
        scale = fmax(-lo, hi) / 127.5, zp = 0;
    } else {
        scale = (hi - lo) / 255;
        zp = fmin(fmax(qmin - nearbyint(lo / scale), qmin), qmax);
    }
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double q = fmin(fmax(nearbyint(x[i] / scale) + zp, qmin), qmax), d = x[i] - (q - zp) * scale;
        e += d * d;
    }
    return e;
}

Test(histogram, mse_picks_a_candidate_as_good_as_brute_force)
{
    enum { N = 30000 };
    static float x[N];
    uint64_t seed = 41;
    for (int kind = 0; kind < 3; kind++) {
        fx_fill_gauss(x, N, 51 + (uint64_t)kind, 0.2f, 1.0f);
        for (int i = 0; i < N; i++) {
            double u = fx_rand_uniform(&seed);
            if (kind == 1) x[i] = (float)((u < 0.5 ? 1 : -1) * log(1 - fabs(2 * u - 1)) * (u < 1e-3 ? 30 : 1));
            if (kind == 2) x[i] = x[i] > 0 ? x[i] : 0.0f;
        }
        for (int symmetric = 0; symmetric < 2; symmetric++) {
            float lo = INFINITY, hi = -INFINITY;
            for (int i = 0; i < N; i++)
                lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
            double rlo = symmetric ? -fmax(-lo, hi) : lo, rhi = symmetric ? fmax(-lo, hi) : hi;
            double best = INFINITY;
            for (int k = 100; k > 0; k--) /* brute force over the same candidates */
                best = fmin(best, raw_error(x, N, rlo * k / 100, rhi * k / 100, symmetric));
            void *s = make_state(2048, 0, 4);
            feed(s, x, N, 1, 0);
            qcal_stat st;
            finalize(s, &st);
            const qcal_estimator *est = &registry_estimator(reg, "mse")->desc;
            qcal_value v[1] = {{.i = 1}};
            uint32_t flags = symmetric ? QCAL_QSPEC_SIGNED | QCAL_QSPEC_SYMMETRIC : 0;
            qcal_qspec spec = {.bits = 8, .flags = flags, .qmin = symmetric ? -128 : 0,
                               .qmax = symmetric ? 127 : 255, .axis = -1};
            qcal_range r;
            qcal_err err = {{0}};
            cr_assert_eq(est->estimate(&st, v, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
            double got = raw_error(x, N, r.lo, r.hi, symmetric);
            cr_expect(got <= best * 1.01, "kind %d symmetric %d: error %g, best %g", kind,
                      symmetric, got, best);
            cr_expect(r.lo <= r.hi && r.hi <= fmax(fabs(lo), hi) && isfinite(r.lo));
            obs->destroy(s);
        }
    }
}

/* ---- l2_search: torch's histogram and search, transcribed on the raw values -------------- */

/* Integral of (x - c)^2 over [a, b] (exact), times density. */
static double sq_integral(double a, double b, double c, double density)
{
    return density * (pow(b - c, 3) - pow(a - c, 3)) / 3;
}

/* Torch's error of window [s, e] (bin indices): each source bin is cut at the destination
 * bin edges and each piece integrated exactly around its destination centre; values left of
 * the window belong to destination 0, right of it to the last one. */
static double l2_reference_error(const double *h, int bins, double w, int s, int e, int levels)
{
    double dst = w * (e - s + 1) / levels, err = 0;
    for (int i = 0; i < bins; i++) {
        if (h[i] == 0)
            continue;
        double a = (i - s) * w, b = a + w, density = h[i] / w;
        for (int k = 0; k < levels; k++) { /* destination k covers [k dst, (k+1) dst) */
            double from = k == 0 ? -INFINITY : k * dst, to = k == levels - 1 ? INFINITY : (k + 1) * dst;
            double pa = fmax(a, from), pb = fmin(b, to);
            if (pb > pa)
                err += sq_integral(pa, pb, (k + 0.5) * dst, density);
        }
    }
    return err;
}

/* torch's HistogramObserver on all values at once: histc over [min, max], then the search. */
static void l2_reference(const float *x, size_t n, int levels, double *lo, double *hi)
{
    enum { B = 2048 };
    static double h[B], cum[B];
    double mn = INFINITY, mx = -INFINITY;
    for (size_t k = 0; k < n; k++)
        mn = fmin(mn, x[k]), mx = fmax(mx, x[k]);
    double w = (mx - mn) / B, total = (double)n;
    memset(h, 0, sizeof h);
    for (size_t k = 0; k < n; k++) {
        int j = (int)((x[k] - mn) / w);
        h[j >= B ? B - 1 : j] += 1;
    }
    for (int i = 0; i < B; i++)
        cum[i] = h[i] + (i ? cum[i - 1] : 0);
    double alpha = 0, beta = 1, best = INFINITY;
    int s = 0, e = B - 1;
    for (;;) {
        if (!(alpha < beta))
            break;
        double na = alpha + 1e-5, nb = beta - 1e-5;
        int l = s, r = e;
        while (l < e && cum[l] < na * total) l++;
        while (r > s && cum[r] > nb * total) r--;
        int ns = s, ne = e;
        if (l - s > e - r) ns = l, alpha = na; else ne = r, beta = nb;
        if (ns == s && ne == e)
            continue;
        double err = l2_reference_error(h, B, w, ns, ne, levels);
        if (err > best)
            break;
        best = err, s = ns, e = ne;
    }
    *lo = mn + w * s, *hi = mn + w * (e + 1);
}

static qcal_range l2_of(const float *x, size_t n, int levels, int qmax)
{
    void *s = make_state(2048, 0, 4);
    feed(s, x, n, 1, 0);
    qcal_stat st;
    finalize(s, &st);
    const qcal_estimator *est = &registry_estimator(reg, "l2_search")->desc;
    qcal_value v[2] = {{.i = 2048}, {.i = levels}};
    qcal_qspec spec = {.bits = 8, .flags = 0, .qmin = 0, .qmax = qmax, .axis = -1};
    qcal_range r;
    qcal_err err = {{0}};
    cr_assert_eq(est->estimate(&st, v, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    obs->destroy(s);
    return r;
}

Test(histogram, l2_search_matches_torch_within_a_bin)
{
    enum { N = 40000 };
    static float x[N], finite[N];
    for (int kind = 0; kind < FX_N_DISTS; kind++) {
        fx_fill_dist(x, N, kind, 70 + (uint64_t)kind);
        size_t m = fx_finite(x, N, finite);
        for (int levels = 0; levels < 2; levels++) { /* 256 (torch), then a 4-bit spec's 16 */
            double lo, hi;
            l2_reference(finite, m, levels ? 16 : 256, &lo, &hi);
            qcal_range r = levels ? l2_of(x, N, 0, 15) : l2_of(x, N, 256, 255);
            double w = (hi - lo) / 2048 + 1e-12;
            float mn = INFINITY, mx = -INFINITY;
            for (size_t i = 0; i < m; i++)
                mn = fminf(mn, finite[i]), mx = fmaxf(mx, finite[i]);
            w = ((double)mx - mn) / 2048;
            cr_expect(fabs(r.lo - lo) <= w && fabs(r.hi - hi) <= w,
                      "%s, %d levels: [%g, %g] vs torch [%g, %g] (bin %g)", fx_dist_names[kind],
                      levels ? 16 : 256, r.lo, r.hi, lo, hi, w);
        }
    }
}

Test(histogram, l2_search_degenerate_and_refusals)
{
    static float c[100], z[100];
    for (int i = 0; i < 100; i++)
        c[i] = -1.5f;
    qcal_range r = l2_of(c, 100, 0, 255);
    cr_expect(r.lo == -1.5 && r.hi == -1.5, "constant: [%g, %g]", r.lo, r.hi);
    r = l2_of(z, 100, 0, 255);
    cr_expect(r.lo == 0 && r.hi == 0, "zeros: [%g, %g]", r.lo, r.hi);
    void *s = make_state(2048, 1, 4); /* an |x| histogram is refused */
    feed(s, c, 100, 1, 0);
    qcal_stat st;
    finalize(s, &st);
    const qcal_estimator *est = &registry_estimator(reg, "l2_search")->desc;
    qcal_value v[2] = {{.i = 2048}, {.i = 0}};
    qcal_qspec spec = {.bits = 8, .flags = 0, .qmin = 0, .qmax = 255, .axis = -1};
    qcal_err err = {{0}};
    cr_expect_eq(est->estimate(&st, v, &spec, &r, 1, &err), QCAL_E_KIND);
    cr_expect(strstr(err.msg, "abs=false"), "%s", err.msg);
    obs->destroy(s);
}
