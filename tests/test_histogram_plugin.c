/* test_histogram_plugin.c - the histogram observer: exact counts, resolution, split invariance */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "references.h"
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

/* The signed extrema and the zeros of the finite values, by their definitions. */
static void expect_signed_extrema_and_zeros(const qcal_stat *st, const float *x, size_t n, int abs)
{
    double lo = INFINITY, hi = -INFINITY;
    uint64_t zeros = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i])) {
            lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
            zeros += x[i] == 0.0f;
        }
    cr_expect_eq(f64(st, "smin"), lo + 0.0, "smin (abs %d)", abs);
    cr_expect_eq(f64(st, "smax"), hi + 0.0, "smax (abs %d)", abs);
    cr_expect_eq(u64(st, "zeros"), zeros, "zeros (abs %d)", abs);
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
    expect_signed_extrema_and_zeros(st, x, n, abs);
    free(v);
}

static void finalize(void *s, qcal_stat *st)
{
    qcal_err err = {{0}};
    cr_assert_eq(obs->finalize(s, st, &err), QCAL_OK, "%s", err.msg);
}

/* Slabs of 1 to 4,000 rows of 10: after the first, most fall inside the window and are
 * counted in one read (bin_in_window); a later one with a value beyond it, NaN or Inf takes
 * the general way from that value on. */
static void feed_in_slabs(void *s, const float *x, uint64_t rows, uint64_t *seed)
{
    for (uint64_t row = 0; row < rows;) {
        uint64_t take = 1 + fx_rand_u64(seed) % 4000;
        take = take < rows - row ? take : rows - row;
        feed(s, x + row * 10, take, 10, row);
        row += take;
    }
}

Test(histogram, counts_are_exact_for_each_distribution)
{
    enum { N = 100000 };
    static float x[N];
    uint64_t seed = 5;
    /* odd passes all finite: the vectorised counting runs only on blocks without NaN or Inf */
    for (int pass = 0; pass < 16; pass++) {
        int kind = pass / 2;
        fx_fill_gauss(x, N, 11 + (uint64_t)kind, 0.0f, 1.0f);
        for (int i = 0; i < N; i++) {
            double u = fx_rand_uniform(&seed);
            if (kind == 1) x[i] = x[i] > 0 ? x[i] : (i % 3 ? 0.0f : -0.0f);       /* ReLU spike */
            if (kind == 2) x[i] = (float)(x[i] * 0.5 * (1 + erf(x[i] / sqrt(2.0)))); /* GELU */
            if (kind == 3) x[i] = (float)((u < 0.5 ? 1 : -1) * log(1 - fabs(2 * u - 1)) * (u < 1e-3 ? 50 : 1));
            if (kind == 4) x[i] = x[i] + (i % 2 ? 6.0f : -3.0f);                  /* bimodal */
            if (kind == 5) x[i] = -1000.0f + x[i] * 0.01f;             /* far from 0: big bins */
            if (kind == 6) x[i] = x[i] * 3e7f;                         /* bins wider than 1 */
            if (kind == 7) x[i] = x[i] * 1e-30f * (i % 7 ? 1.0f : 1e-8f);  /* tiny, subnormal */
        }
        x[N - 9] = x[N - 9] * 40.0f; /* a late value that widens the window */
        if (pass % 2 == 0)
            x[3] = NAN, x[4] = INFINITY, x[5] = -INFINITY, x[N - 100] = NAN, x[N - 60] = -INFINITY;
        for (int abs = 0; abs < 6; abs++) { /* 2, 3: the scalar loops (QCAL_NO_SIMD); 4, 5: slabs */
            if (abs == 2 || abs == 3)
                setenv("QCAL_NO_SIMD", "1", 1);
            void *s = make_state(2048, abs % 2, 4);
            if (abs < 4)
                feed(s, x, N / 10, 10, 0);
            else
                feed_in_slabs(s, x, N / 10, &seed);
            unsetenv("QCAL_NO_SIMD");
            qcal_stat st;
            finalize(s, &st);
            expect_exact(&st, x, N, abs % 2, 8192);
            const uint64_t *nf = get(&st, "nonfinite")->data;
            cr_expect(pass % 2 ? nf[0] == 0 && nf[1] == 0 : nf[0] == 2 && nf[1] == 3,
                      "NaN and Inf counted apart");
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

/* ---- fixed_histogram: bins given in advance ---------------------------------------------- */

static void *make_fixed(int bins, int abs, double lo, double hi)
{
    const qcal_observer *fixed = &registry_observer(reg, "fixed_histogram")->desc;
    qcal_value v[4] = {{.i = bins}, {.i = abs}, {.f = lo}, {.f = hi}};
    qcal_tensor t = {.name = "t", .rank = 1, .channel_axis = -1, .shape = {1}, .batch_size = 1};
    void *s = NULL;
    qcal_err err = {{0}};
    cr_assert_eq(fixed->create(&t, v, &s, &err), QCAL_OK, "%s", err.msg);
    return s;
}

Test(histogram, fixed_histogram_counts_clamps_merges_and_saves)
{
    enum { N = 5000, B = 100 };
    static float x[N];
    fx_fill_dist(x, N, FX_NONFINITE, 12);
    const qcal_observer *fixed = &registry_observer(reg, "fixed_histogram")->desc;
    qcal_err err = {{0}};
    /* [-2, 3) in 100 bins of 0.05: counted here by the definition, values outside clamped */
    uint64_t want[B] = {0}, finite = 0, zeros = 0;
    for (int i = 0; i < N; i++) {
        if (!isfinite(x[i]))
            continue;
        double j = floor(((double)x[i] + 2.0) / 0.05);
        want[j < 0 ? 0 : j >= B ? B - 1 : (int)j]++, finite++, zeros += x[i] == 0;
    }
    void *parts[3] = {make_fixed(B, 0, -2.0, 3.0), make_fixed(B, 0, -2.0, 3.0), make_fixed(B, 0, -2.0, 3.0)};
    for (int k = 0; k < 5; k++) { /* five slabs over three states, merged in reverse */
        qcal_slab slab = {x + k * (N / 5), 1, N / 5, 0};
        cr_assert_eq(fixed->observe(parts[k % 3], &slab, &err), QCAL_OK, "%s", err.msg);
    }
    cr_assert_eq(fixed->merge(parts[2], parts[1], &err), QCAL_OK, "%s", err.msg);
    cr_assert_eq(fixed->merge(parts[2], parts[0], &err), QCAL_OK, "%s", err.msg);
    qcal_stat st;
    cr_assert_eq(fixed->finalize(parts[2], &st, &err), QCAL_OK, "%s", err.msg);
    const qcal_array *counts = get(&st, "counts");
    cr_assert_eq(counts->shape[0], (uint64_t)B);
    for (int j = 0; j < B; j++)
        cr_expect_eq(((const uint64_t *)counts->data)[j], want[j], "bin %d", j);
    cr_expect_eq(u64(&st, "count"), finite);
    cr_expect_eq(u64(&st, "zeros"), zeros);
    cr_expect(f64(&st, "lo") == -2.0 && fabs(f64(&st, "width") - 0.05) < 1e-15);
    cr_expect(f64(&st, "min") < -2.0, "the exact minimum survives clamping");
    /* a saved state restores into an observer of the same layout only */
    qcal_stat saved_view;
    cr_assert_eq(fixed->serialize(parts[2], &saved_view, &err), QCAL_OK);
    hstat *saved;
    qerror e = {0};
    cr_assert_eq(hstat_copy(&saved_view, &saved, &e), 0, "%s", e.msg);
    void *back = make_fixed(B, 0, -2.0, 3.0), *other = make_fixed(B, 0, -2.0, 4.0);
    cr_assert_eq(fixed->deserialize(back, &saved->view, &err), QCAL_OK, "%s", err.msg);
    qcal_stat again;
    cr_assert_eq(fixed->finalize(back, &again, &err), QCAL_OK);
    cr_expect(!memcmp(get(&again, "counts")->data, want, sizeof want), "round trip");
    cr_expect_eq(fixed->deserialize(other, &saved->view, &err), QCAL_E_DATA);
    cr_expect(strstr(err.msg, "[-2, 3]"), "%s", err.msg);
    cr_expect_eq(fixed->merge(other, back, &err), QCAL_E_INVAL);
    for (uint32_t i = 0; i < saved->view.n_arrays; i++) /* counts that no longer add up */
        if (!strcmp(saved->view.arrays[i].name, "count"))
            ((uint64_t *)saved->data[i])[0] += 1;
    void *bad = make_fixed(B, 0, -2.0, 3.0);
    cr_expect_eq(fixed->deserialize(bad, &saved->view, &err), QCAL_E_DATA);
    hstat_free(saved);
    for (int k = 0; k < 3; k++)
        fixed->destroy(parts[k]);
    fixed->destroy(back), fixed->destroy(other), fixed->destroy(bad);
    /* an empty or inverted range is refused at creation */
    qcal_value v[4] = {{.i = B}, {.i = 0}, {.f = 1.0}, {.f = 1.0}};
    qcal_tensor t = {.name = "t", .rank = 1, .channel_axis = -1, .shape = {1}, .batch_size = 1};
    void *s = NULL;
    cr_expect_eq(fixed->create(&t, v, &s, &err), QCAL_E_INVAL);
    cr_expect(strstr(err.msg, "lo < hi"), "%s", err.msg);
}

/* Slabs without NaN or Inf (the vectorised counting): every bin as the definition gives it,
 * with |x|, clamped values, zeros of both signs (a third of the values: they are counted
 * apart, then into their bin) and lengths that are not multiples of 4. */
Test(histogram, fixed_histogram_counts_finite_slabs_by_the_definition)
{
    enum { N = 4099, B = 64 };
    static float x[N];
    fx_fill_gauss(x, N, 31, 0.3f, 1.5f);
    for (int i = 5; i < N; i += 3) /* zeros of both signs, as in a ReLU's output */
        x[i] = i % 2 ? -0.0f : 0.0f;
    x[0] = -0.0f, x[1] = 0.0f, x[2] = 1e30f, x[3] = -1e30f, x[4] = 1.25f; /* 1.25: a bin edge */
    const qcal_observer *fixed = &registry_observer(reg, "fixed_histogram")->desc;
    for (int pass = 0; pass < 4; pass++) { /* 2, 3: the scalar loops (QCAL_NO_SIMD) */
        int abs = pass % 2;
        double lo = abs ? 0.0 : -2.5, hi = 2.5, w = (hi - lo) / B;
        uint64_t want[B] = {0}, zeros = 0;
        for (int i = 0; i < N; i++) {
            float v = abs ? fabsf(x[i]) : x[i];
            double j = floor(((double)v - lo) / w);
            want[j < 0 ? 0 : j >= B ? B - 1 : (int)j]++, zeros += v == 0;
        }
        void *st = make_fixed(B, abs, lo, hi);
        qcal_err err = {{0}};
        if (pass >= 2)
            setenv("QCAL_NO_SIMD", "1", 1);
        for (uint64_t at = 0, len = 1; at < N; at += len, len = len * 3 + 2) {
            qcal_slab slab = {x + at, 1, at + len <= N ? len : N - at, 0};
            cr_assert_eq(fixed->observe(st, &slab, &err), QCAL_OK, "%s", err.msg);
        }
        unsetenv("QCAL_NO_SIMD");
        qcal_stat out;
        cr_assert_eq(fixed->finalize(st, &out, &err), QCAL_OK, "%s", err.msg);
        for (int j = 0; j < B; j++)
            cr_expect_eq(((const uint64_t *)get(&out, "counts")->data)[j], want[j], "abs %d, bin %d",
                         abs, j);
        cr_expect_eq(u64(&out, "zeros"), zeros);
        cr_expect_eq(u64(&out, "count"), (uint64_t)N);
        fixed->destroy(st);
    }
}

/* Values on and next to every bin edge, with widths that are not binary fractions: the vector
 * loop gives the bins of the definition, floor((x - lo) / w), where multiplying by 1 / w would
 * not (the last three ranges). */
Test(histogram, fixed_histogram_bins_values_at_the_edges_as_the_division)
{
    enum { B = 2048, N = 6 * B };
    static float x[N];
    /* the last three hold edges where the product's floor differs from the quotient's (found
     * by a search: with lo = 0, a float edge can make (x - lo) / w an exact integer) */
    const double ranges[][2] = {{-2.0, 3.0}, {-0.1, 0.1}, {-1e-3, 6.1e4}, {0.0, 270.32222222222225},
                                {0.0, 281.87777777777779}, {0.0, 121.88378378378378}};
    const qcal_observer *fixed = &registry_observer(reg, "fixed_histogram")->desc;
    for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++) {
        double lo = ranges[r][0], hi = ranges[r][1], w = (hi - lo) / B;
        for (int k = 0; k < B; k++) { /* the edge rounded to float, each neighbour, twice */
            float edge = (float)(lo + k * w), down = nextafterf(edge, -INFINITY),
                  up = nextafterf(edge, INFINITY), up2 = nextafterf(up, INFINITY);
            const float six[6] = {edge, down, up, up2, nextafterf(down, -INFINITY), (float)(lo + (k + 0.5) * w)};
            memcpy(x + 6 * k, six, sizeof six);
        }
        uint64_t want[B] = {0};
        for (int i = 0; i < N; i++) {
            double j = floor(((double)x[i] - lo) / w);
            want[j < 0 ? 0 : j >= B ? B - 1 : (int)j]++;
        }
        void *st = make_fixed(B, 0, lo, hi);
        qcal_err err = {{0}};
        qcal_slab slab = {x, 1, N, 0};
        cr_assert_eq(fixed->observe(st, &slab, &err), QCAL_OK, "%s", err.msg);
        qcal_stat out;
        cr_assert_eq(fixed->finalize(st, &out, &err), QCAL_OK, "%s", err.msg);
        const uint64_t *got = get(&out, "counts")->data;
        for (int j = 0; j < B; j++)
            cr_assert_eq(got[j], want[j], "range %zu, bin %d: %llu, the division gives %llu", r, j,
                         (unsigned long long)got[j], (unsigned long long)want[j]);
        fixed->destroy(st);
    }
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

/* Every fixture distribution, percentiles from 99 to 99.999: two-sided, (100 - p) / 2 % of
 * the values outside on each side as ONNX Runtime cuts them (the exact minimum kept when no
 * value is negative), and on |x| for symmetric specs. */
Test(histogram, percentile_matches_order_statistics_within_a_bin)
{
    enum { N = 50000 };
    static float x[N], finite[N];
    const double ps[4] = {99.0, 99.9, 99.99, 99.999};
    for (int kind = 0; kind < FX_N_DISTS; kind++) {
        fx_fill_dist(x, N, kind, 21 + (uint64_t)kind);
        size_t m = fx_finite(x, N, finite);
        float *v = sorted_copy(finite, m, 0), *a = sorted_copy(finite, m, 1);
        int one_sided = v[0] >= 0;
        for (int k = 0; k < 4; k++) {
            double q = ps[k] / 100;
            qcal_range r;
            qcal_err err;
            for (int abs = 0; abs < 2; abs++) {
                void *s = make_state(2048, abs, 4);
                feed(s, x, N, 1, 0);
                qcal_stat st;
                finalize(s, &st);
                double w = f64(&st, "width");
                uint32_t flags = abs ? QCAL_QSPEC_SYMMETRIC | QCAL_QSPEC_SIGNED : 0;
                cr_assert_eq(estimate(s, ps[k], 0, flags, &r, &err), QCAL_OK, "%s", err.msg);
                double outside = (1 - q) / 2; /* each side, two-sided */
                double hi = abs ? order_stat(a, m, q) : order_stat(v, m, 1 - outside);
                double lo = abs ? -hi : one_sided ? v[0] : order_stat(v, m, outside);
                cr_expect(fabs(r.hi - hi) <= w && fabs(r.lo - lo) <= w,
                          "%s p%g abs %d: [%g, %g] vs [%g, %g] (bin %g)", fx_dist_names[kind],
                          ps[k], abs, r.lo, r.hi, lo, hi, w);
                obs->destroy(s);
            }
        }
        free(v), free(a);
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

static int count_below(const float *x, int n, double v)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += x[i] < v;
    return k;
}

static int count_above(const float *x, int n, double v)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += x[i] > v;
    return k;
}

/* p % of the values inside the range: of 1,000 evenly spaced values, p = 99 leaves five out
 * on each side (four when the cut lands on a value); a tensor with no positive value keeps
 * its maximum, as one with no negative value keeps its minimum. */
Test(histogram, percentile_keeps_p_percent_inside)
{
    static float x[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = (float)i - 499.5f; /* -499.5 .. 499.5 */
    qcal_range r;
    qcal_err err;
    void *s = make_state(2048, 0, 4);
    feed(s, x, 1000, 1, 0);
    cr_assert_eq(estimate(s, 99.0, 0, 0, &r, &err), QCAL_OK, "%s", err.msg);
    int below = count_below(x, 1000, r.lo), above = count_above(x, 1000, r.hi);
    cr_expect(below >= 4 && below <= 5 && above >= 4 && above <= 5, "[%g, %g]: %d below, %d above",
              r.lo, r.hi, below, above);
    obs->destroy(s);
    for (int i = 0; i < 1000; i++)
        x[i] = -(float)(i + 1); /* -1 .. -1000 */
    s = make_state(2048, 0, 4);
    feed(s, x, 1000, 1, 0);
    cr_assert_eq(estimate(s, 99.0, 0, 0, &r, &err), QCAL_OK, "%s", err.msg);
    below = count_below(x, 1000, r.lo);
    cr_expect(r.hi == -1.0 && below >= 4 && below <= 5, "[%g, %g]: %d below", r.lo, r.hi, below);
    obs->destroy(s);
}

/* ---- kl: against a literal transcription of the published algorithm ------------------- */

/* The kl estimator's threshold on x (any values: the observers skip non-finite ones), as the
 * kl recipe computes it: max|x| first, then a fixed_histogram over the variant's layout
 * ([0, amax] in 2048 bins; tpu: bins centred on k amax / 2047). one_pass: from the default
 * histogram observer instead. The estimator's note goes to note (may be NULL). */
static double kl_levels_once(const float *x, size_t n, int variant, double eps, int levels,
                             char *note, int one_pass)
{
    float amax = 0;
    for (size_t i = 0; i < n; i++)
        amax = isfinite(x[i]) && fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    double w = amax / 2047.0, lo = variant == 2 ? -0.5 * w : 0.0;
    double hi = amax == 0 ? 1.0 : variant == 2 ? 2047.5 * w : amax;
    const qcal_observer *fixed = &registry_observer(reg, "fixed_histogram")->desc;
    qcal_value fv[4] = {{.i = 2048}, {.i = 1}, {.f = lo}, {.f = hi}};
    qcal_tensor t = {.name = "t", .rank = 1, .channel_axis = -1, .shape = {n}, .batch_size = 1};
    void *s = NULL;
    qcal_err err = {{0}};
    if (one_pass)
        s = make_state(2048, 1, 4);
    else
        cr_assert_eq(fixed->create(&t, fv, &s, &err), QCAL_OK, "%s", err.msg);
    const qcal_observer *o = one_pass ? obs : fixed;
    qcal_slab slab = {x, 1, n, 0};
    cr_assert_eq(o->observe(s, &slab, &err), QCAL_OK, "%s", err.msg);
    qcal_stat st;
    cr_assert_eq(o->finalize(s, &st, &err), QCAL_OK, "%s", err.msg);
    const qcal_estimator *est = &registry_estimator(reg, "kl")->desc;
    qcal_value v[5] = {{.i = variant}, {.i = 2048}, {.i = levels}, {.i = 128}, {.f = eps}};
    qcal_qspec spec = {.bits = 8, .flags = QCAL_QSPEC_SIGNED | QCAL_QSPEC_SYMMETRIC,
                       .qmin = -127, .qmax = 127, .axis = -1};
    qcal_range r;
    cr_assert_eq(est->estimate(&st, v, &spec, &r, 1, &err), QCAL_OK, "%s", err.msg);
    cr_assert(r.lo == -r.hi && r.hi >= 0);
    if (note)
        strcpy(note, err.msg);
    o->destroy(s);
    return r.hi;
}

/* kl_levels_once with the vector loops (where the machine has them) and without: the two
 * must agree bit for bit, as every plugin's vector loop and its scalar form do. */
static double kl_levels_of(const float *x, size_t n, int variant, double eps, int levels,
                           char *note, int one_pass)
{
    double simd = kl_levels_once(x, n, variant, eps, levels, note, one_pass);
    setenv("QCAL_NO_SIMD", "1", 1);
    double scalar = kl_levels_once(x, n, variant, eps, levels, NULL, one_pass);
    unsetenv("QCAL_NO_SIMD");
    cr_expect(memcmp(&simd, &scalar, sizeof simd) == 0, "variant %d, %d levels: %.17g with "
              "the vector loops, %.17g without", variant, levels, simd, scalar);
    return simd;
}

static double kl_threshold_of(const float *x, size_t n, int variant, double eps, char *note,
                              int one_pass)
{
    return kl_levels_of(x, n, variant, eps, 128, note, one_pass);
}

enum { KL_TRT_SMOOTH, KL_TRT_LITERAL, KL_NVPQ, KL_TPU, KL_N_CASES };
static const char *const kl_case_names[] = {"trt", "trt smooth=0", "nvpq", "tpu"};

Test(histogram, kl_matches_each_reference_within_a_bin)
{
    enum { N = 200000 };
    static float x[N], finite[N];
    for (int kind = 0; kind < FX_N_DISTS; kind++) {
        fx_fill_dist(x, N, kind, 31 + (uint64_t)kind);
        size_t m = fx_finite(x, N, finite);
        double amax = 0;
        for (size_t i = 0; i < m; i++)
            amax = fmax(amax, fabs((double)finite[i]));
        for (int c = 0; c < KL_N_CASES; c++) {
            double want, got, bin = amax / 2048;
            if (c == KL_TPU) {
                want = ref_kl_tpu(finite, m), got = kl_threshold_of(x, N, 2, 0.0, NULL, 0);
                bin = amax / 2047;
            } else {
                double eps = c == KL_TRT_SMOOTH ? 0.0001 : 0.0;
                want = ref_kl_trt(finite, m, c == KL_NVPQ, eps);
                got = kl_threshold_of(x, N, c == KL_NVPQ, eps, NULL, 0);
            }
            cr_expect(fabs(got - want) <= bin, "%s, %s: %g vs reference %g (bin %g)",
                      fx_dist_names[kind], kl_case_names[c], got, want, bin);
        }
    }
}

/* Sparse histograms: a few point masses (and a little noise around them) leave most bins
 * empty, which exercises what dense data never reaches: smoothing that takes from bins
 * holding less than it, literal candidates with infinite divergence, ties between candidates. */
Test(histogram, kl_matches_each_reference_on_sparse_histograms)
{
    enum { N = 20000, ROUNDS = 40 };
    static float x[N];
    uint64_t seed = 12345;
    for (int round = 0; round < ROUNDS; round++) {
        int points = 1 + (int)(fx_rand_u64(&seed) % 40), n = 50 + (int)(fx_rand_u64(&seed) % (N - 50));
        float at[40], spread = round % 3 == 0 ? 0.0f : round % 3 == 1 ? 0.01f : 3.0f;
        for (int k = 0; k < points; k++)
            at[k] = (float)(fx_rand_u64(&seed) % 100000) / 1000.0f * (k % 2 ? 1.0f : -1.0f);
        for (int k = 0; k < n; k++)
            x[k] = at[fx_rand_u64(&seed) % (uint64_t)points] + spread * (float)fx_rand_uniform(&seed);
        double amax = 0;
        for (int k = 0; k < n; k++)
            amax = fmax(amax, fabs((double)x[k]));
        for (int c = KL_TRT_SMOOTH; c <= KL_NVPQ; c++) {
            double eps = c == KL_TRT_SMOOTH ? 0.0001 : 0.0, W = amax / 2048, curve[2049];
            for (int i = 0; i <= 2048; i++)
                curve[i] = INFINITY;
            double want = ref_kl_trt_curve(x, (size_t)n, c == KL_NVPQ, eps, curve);
            double got = kl_threshold_of(x, (size_t)n, c == KL_NVPQ, eps, NULL, 0);
            /* candidates whose divergences are equal but for rounding may go either way: then
             * the reference's divergence at qcal's candidate must equal its own minimum */
            double shift = c == KL_NVPQ ? 0.0 : 0.5;
            int i_got = (int)lround(got / W - shift), i_want = (int)lround(want / W - shift);
            int tie = i_got >= 0 && i_got <= 2048 && isfinite(curve[i_got]) &&
                      fabs(curve[i_got] - curve[i_want]) <= 1e-9 * curve[i_want] + 1e-12;
            cr_expect(fabs(got - want) <= W || tie, "round %d (%d points, spread %g), %s: %g "
                      "(KL %g) vs reference %g (KL %g)", round, points, spread, kl_case_names[c],
                      got, i_got >= 0 && i_got <= 2048 ? curve[i_got] : NAN, want, curve[i_want]);
            /* from the observer's finer histogram: fractional bins after re-binning */
            got = kl_threshold_of(x, (size_t)n, c == KL_NVPQ, eps, NULL, 1);
            cr_expect(got > 0 && got <= amax, "round %d, %s, one pass: %g", round,
                      kl_case_names[c], got);
        }
    }
}

/* Level counts that are not multiples of the vector width, nor divide the bins: the level
 * bounds ceil(l i / L) and the loops' tails. */
Test(histogram, kl_matches_the_reference_for_other_level_counts)
{
    enum { N = 60000 };
    static float x[N];
    static const int level_counts[] = {2, 37, 100, 127};
    for (int kind = 0; kind < FX_N_DISTS; kind += 2) {
        fx_fill_dist(x, N, kind, 71 + (uint64_t)kind);
        double amax = 0;
        for (int k = 0; k < N; k++)
            amax = isfinite(x[k]) ? fmax(amax, fabs((double)x[k])) : amax;
        for (int c = KL_TRT_SMOOTH; c <= KL_NVPQ; c++)
            for (int j = 0; j < 4; j++) {
                static float finite[N];
                size_t m = fx_finite(x, N, finite);
                int L = level_counts[j], nvpq = c == KL_NVPQ;
                double eps = c == KL_TRT_SMOOTH ? 0.0001 : 0.0, curve[2049], W = amax / 2048;
                for (int i = 0; i <= 2048; i++)
                    curve[i] = INFINITY;
                double want = ref_kl_trt_levels(finite, m, nvpq, eps, L, curve);
                double got = kl_levels_of(x, N, nvpq, eps, L, NULL, 0), shift = nvpq ? 0 : 0.5;
                int i_got = (int)lround(got / W - shift), i_want = (int)lround(want / W - shift);
                int tie = i_got >= 0 && i_got <= 2048 && isfinite(curve[i_got]) &&
                          fabs(curve[i_got] - curve[i_want]) <= 1e-9 * curve[i_want] + 1e-12;
                cr_expect(fabs(got - want) <= W || tie, "%s, %s, %d levels: %g vs reference %g",
                          fx_dist_names[kind], kl_case_names[c], L, got, want);
            }
    }
}

Test(histogram, kl_tpu_leaves_zeros_out_and_cuts_sparse_outliers)
{
    enum { N = 40000 };
    static float x[N], nonzero[N];
    fx_fill_dist(x, N, FX_RELU, 5);
    size_t m = 0;
    for (size_t i = 0; i < N; i++)
        if (x[i] != 0)
            nonzero[m++] = x[i];
    cr_assert(m < N * 7 / 10, "the ReLU fixture has a zero spike");
    double with = kl_threshold_of(x, N, 2, 0.0, NULL, 0);
    double without = kl_threshold_of(nonzero, m, 2, 0.0, NULL, 0);
    cr_expect_eq(with, without, "exact zeros are left out: %g vs %g", with, without);
    /* tpu-mlir's documented behaviour: a light (gaussian) tail is kept whole, sparse x40
     * outliers are cut hard. */
    fx_fill_dist(x, N, FX_GAUSS, 6);
    double amax = 0;
    for (size_t i = 0; i < N; i++)
        amax = fmax(amax, fabs((double)x[i]));
    cr_expect_eq(kl_threshold_of(x, N, 2, 0.0, NULL, 0), amax, "gaussian: the absolute max");
    fx_fill_dist(x, N, FX_LAPLACE_OUTLIERS, 7);
    amax = 0;
    for (size_t i = 0; i < N; i++)
        amax = fmax(amax, fabs((double)x[i]));
    double cut = kl_threshold_of(x, N, 2, 0.0, NULL, 0);
    /* Laplace with outliers in several proportions: where P's normalisation by the whole
     * count (and Q's by the in-range count only) decides the answer */
    static const double frac[3] = {0.001, 0.01, 0.1}, mult[3] = {15, 20, 20};
    static float y[100000];
    uint64_t seed = 4;
    for (int c = 0; c < 3; c++) {
        for (size_t i = 0; i < 100000; i++) {
            double u = fx_rand_uniform(&seed), v = -log(1 - fx_rand_uniform(&seed));
            y[i] = (float)((fx_rand_uniform(&seed) < 0.5 ? -v : v) * (u < frac[c] ? mult[c] : 1));
        }
        double want = ref_kl_tpu(y, 100000), got = kl_threshold_of(y, 100000, 2, 0.0, NULL, 0);
        cr_expect(fabs(got - want) <= want / 2047, "laplace %g x%g: %g vs reference %g", frac[c],
                  mult[c], got, want);
    }
    cr_expect_lt(cut, 0.6 * amax, "outliers are clipped: %g of %g", cut, amax); /* grid: k/16 */
}

Test(histogram, kl_degenerate_inputs_give_valid_thresholds_and_notes)
{
    static float c[256], z[256], one[1] = {-2.5f};
    char note[QCAL_ERR_MSG_SIZE];
    for (int i = 0; i < 256; i++)
        c[i] = 0.75f;
    for (int variant = 0; variant < 3; variant++) {
        double t = kl_threshold_of(c, 256, variant, 0.0, note, variant & 1);
        cr_expect(t > 0 && t <= 0.75 && isfinite(t), "constant: %g", t);
        cr_expect(strstr(note, "constant tensor"), "variant %d: note '%s'", variant, note);
        cr_expect_eq(kl_threshold_of(z, 256, variant, 0.0, note, variant & 1), 0.0, "all zero");
        cr_expect(strstr(note, "all-zero"), "variant %d: note '%s'", variant, note);
        t = kl_threshold_of(one, 1, variant, 0.0, note, variant & 1);
        cr_expect(t > 0 && t <= 2.5, "single value: %g", t);
        cr_expect(strstr(note, "constant tensor"), "variant %d: note '%s'", variant, note);
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
    static float x[N], finite[N];
    for (int kind = 0; kind < FX_N_DISTS; kind++) {
        fx_fill_dist(x, N, kind, 51 + (uint64_t)kind);
        size_t m = fx_finite(x, N, finite);
        for (int symmetric = 0; symmetric < 2; symmetric++) {
            float lo = INFINITY, hi = -INFINITY;
            for (size_t i = 0; i < m; i++)
                lo = fminf(lo, finite[i]), hi = fmaxf(hi, finite[i]);
            double rlo = symmetric ? -fmax(-lo, hi) : lo, rhi = symmetric ? fmax(-lo, hi) : hi;
            double best = INFINITY;
            for (int k = 100; k > 0; k--) /* brute force over the same candidates */
                best = fmin(best, raw_error(finite, m, rlo * k / 100, rhi * k / 100, symmetric));
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
            double got = raw_error(finite, m, r.lo, r.hi, symmetric);
            cr_expect(got <= best * 1.01, "%s symmetric %d: error %g, best %g",
                      fx_dist_names[kind], symmetric, got, best);
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
