/* test_minmax_plugin.c - the minmax family through adopted vtables, against slow references */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "registry.h"

#define MAXC 64

static registry *reg;

static void load(void)
{
    qerror e = {0};
    reg = registry_new(NULL, NULL);
    cr_assert_eq(registry_load_file(reg, TEST_PLUGIN_DIR "/qcal-minmax.so", &e), 0, "%s", e.msg);
}

static void unload(void) { registry_free(reg); }

TestSuite(minmax, .init = load, .fini = unload);

/* ---- helpers ----------------------------------------------------------------------------- */

static const qcal_observer *observer(const char *name)
{
    const reg_observer *o = registry_observer(reg, name);
    cr_assert_not_null(o, "no observer %s", name);
    return &o->desc;
}

/* Parameters from "k=v,k=v" through the host's own validation. */
static void params_for(const qcal_observer *o, const char *kvs, qcal_value *out)
{
    param_input in[8];
    size_t n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", kvs ? kvs : "");
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        qerror e = {0};
        cr_assert_eq(params_parse_kv(tok, &in[n++], &e), 0, "%s", e.msg);
    }
    qerror e = {0};
    cr_assert_eq(params_resolve(o->name, o->params, o->n_params, in, n, out, &e), 0, "%s", e.msg);
}

static uint64_t next_random(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Values in [-50, 50) on a 1/64 grid (so ties and zeros of both signs occur), with NaN and
 * +-Inf sprinkled in when `specials`. */
static void fill(float *x, size_t n, uint64_t seed, int specials)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = next_random(&seed);
        x[i] = (float)((int64_t)(r % 6400) - 3200) / 64.0f;
        if (x[i] == 0.0f && (r >> 32) % 2)
            x[i] = -0.0f;
        if (specials && (r >> 40) % 29 == 0)
            x[i] = (r >> 50) % 3 == 0 ? NAN : ((r >> 50) % 3 == 1 ? INFINITY : -INFINITY);
    }
}

static qcal_tensor tensor(uint32_t rank, const uint64_t *shape, int32_t axis, uint64_t batch)
{
    qcal_tensor t = {.name = "t", .rank = rank, .channel_axis = axis, .batch_size = batch};
    memcpy(t.shape, shape, rank * sizeof *shape);
    return t;
}

static uint64_t row_size_of(const qcal_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 1; d < t->rank; d++)
        n *= t->shape[d];
    return n;
}

static const qcal_array *array_named(const qcal_stat *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_arrays; i++)
        if (!strcmp(s->arrays[i].name, name))
            return &s->arrays[i];
    return NULL;
}

typedef struct mm_result {
    uint64_t channels;
    float lo[MAXC], hi[MAXC];
    uint64_t count[MAXC], nonfinite[2];
} mm_result;

/* A "qcal.minmax" statistic, checked for shape and copied out. */
static void read_minmax(const qcal_stat *s, mm_result *r)
{
    cr_assert_str_eq(s->kind, "qcal.minmax");
    cr_assert_eq(s->kind_version, 1);
    cr_assert_leq(s->channels, MAXC);
    r->channels = s->channels;
    const char *names[] = {"lo", "hi", "count", "nonfinite"};
    void *dst[] = {r->lo, r->hi, r->count, r->nonfinite};
    for (int k = 0; k < 4; k++) {
        const qcal_array *a = array_named(s, names[k]);
        cr_assert_not_null(a, "array %s", names[k]);
        uint64_t n = k == 3 ? 2 : s->channels;
        cr_assert_eq(a->rank, 1);
        cr_assert_eq(a->shape[0], n, "%s", names[k]);
        cr_assert_eq(a->dtype, k < 2 ? QCAL_DTYPE_F32 : QCAL_DTYPE_U64);
        memcpy(dst[k], a->data, n * (k < 2 ? 4 : 8));
    }
}

static void *make_state(const qcal_observer *o, const qcal_tensor *t, const qcal_value *p)
{
    void *s = NULL;
    qcal_err err = {{0}};
    cr_assert_eq(o->create(t, p, &s, &err), QCAL_OK, "create: %s", err.msg);
    return s;
}

static void feed(const qcal_observer *o, void *s, const float *x, uint64_t first, uint64_t rows,
                 uint64_t row_size)
{
    qcal_slab slab = {x + first * row_size, rows, row_size, first};
    qcal_err err = {{0}};
    cr_assert_eq(o->observe(s, &slab, &err), QCAL_OK, "observe: %s", err.msg);
}

/* One state over all rows in one slab, finalized into r. */
static void run_whole(const qcal_observer *o, const qcal_tensor *t, const qcal_value *p,
                      const float *x, mm_result *r)
{
    void *s = make_state(o, t, p);
    feed(o, s, x, 0, t->shape[0], row_size_of(t));
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(o->finalize(s, &st, &err), QCAL_OK, "finalize: %s", err.msg);
    read_minmax(&st, r);
    o->destroy(s);
}

/* ---- slow references --------------------------------------------------------------------- */

/* The channel of flat element i (axis 0: per tensor). */
static uint64_t channel_of(const qcal_tensor *t, int axis, uint64_t i)
{
    if (axis <= 0)
        return 0;
    uint64_t inner = 1;
    for (uint32_t d = (uint32_t)axis + 1; d < t->rank; d++)
        inner *= t->shape[d];
    return (i % row_size_of(t)) / inner % t->shape[axis];
}

static void naive_minmax(const qcal_tensor *t, int axis, const float *x, uint64_t row_first,
                         uint64_t row_end, mm_result *r)
{
    uint64_t rs = row_size_of(t);
    r->channels = axis > 0 ? t->shape[axis] : 1;
    for (uint64_t c = 0; c < r->channels; c++)
        r->lo[c] = INFINITY, r->hi[c] = -INFINITY, r->count[c] = 0;
    r->nonfinite[0] = r->nonfinite[1] = 0;
    for (uint64_t i = row_first * rs; i < row_end * rs; i++) {
        if (isnan(x[i])) {
            r->nonfinite[0]++;
        } else if (isinf(x[i])) {
            r->nonfinite[1]++;
        } else {
            uint64_t c = channel_of(t, axis, i);
            r->lo[c] = fminf(r->lo[c], x[i]);
            r->hi[c] = fmaxf(r->hi[c], x[i]);
            r->count[c]++;
        }
    }
}

static void expect_same(const mm_result *got, const mm_result *want)
{
    cr_assert_eq(got->channels, want->channels);
    for (uint64_t c = 0; c < want->channels; c++) {
        cr_expect_eq(got->count[c], want->count[c], "count[%llu]", (unsigned long long)c);
        if (want->count[c]) {
            cr_expect_eq(got->lo[c], want->lo[c], "lo[%llu]", (unsigned long long)c);
            cr_expect_eq(got->hi[c], want->hi[c], "hi[%llu]", (unsigned long long)c);
        }
    }
    cr_expect_eq(got->nonfinite[0], want->nonfinite[0]);
    cr_expect_eq(got->nonfinite[1], want->nonfinite[1]);
}

/* torch's MovingAverageMinMaxObserver, batch by batch, as its float32 tensors compute it:
 * the first batch with a finite value sets (min, max); each later one moves them by
 * c * (batch - m), c a float32 and every operation rounded to float32 (by storing each into
 * a volatile float). */
static void moving_reference(const qcal_tensor *t, int axis, const float *x, uint64_t batch,
                             double c, mm_result *r)
{
    uint64_t n = t->shape[0];
    mm_result per_batch, total;
    naive_minmax(t, axis, x, 0, n, &total);
    *r = total;
    for (uint64_t ch = 0; ch < total.channels; ch++) {
        volatile float lo = 0, hi = 0, cf = (float)c, d;
        int started = 0;
        for (uint64_t first = 0; first < n; first += batch) {
            naive_minmax(t, axis, x, first, first + batch < n ? first + batch : n, &per_batch);
            if (!per_batch.count[ch])
                continue;
            if (!started) {
                lo = per_batch.lo[ch], hi = per_batch.hi[ch], started = 1;
            } else {
                d = per_batch.lo[ch] - lo, d = cf * d, lo = lo + d;
                d = per_batch.hi[ch] - hi, d = cf * d, hi = hi + d;
            }
        }
        r->lo[ch] = lo;
        r->hi[ch] = hi;
    }
}

/* ---- minmax and minmax_per_channel against the naive loop -------------------------------- */

static void check_layout(const char *name, uint32_t rank, const uint64_t *shape, int axis,
                         uint64_t seed)
{
    qcal_tensor t = tensor(rank, shape, axis, 1);
    uint64_t n = shape[0] * row_size_of(&t);
    float *x = malloc(n * sizeof *x);
    fill(x, n, seed, 1);
    mm_result got, want;
    run_whole(observer(name), &t, NULL, x, &got);
    naive_minmax(&t, !strcmp(name, "minmax") ? 0 : axis, x, 0, shape[0], &want);
    expect_same(&got, &want);
    cr_expect_gt(want.nonfinite[0] + want.nonfinite[1], 0); /* the data did have some */
    free(x);
}

Test(minmax, per_tensor_matches_naive)
{
    const uint64_t shape[] = {9, 8, 7};
    check_layout("minmax", 3, shape, 1, 1);
    const uint64_t flat[] = {1000};
    check_layout("minmax", 1, flat, -1, 2);
    setenv("QCAL_NO_SIMD", "1", 1); /* the scalar extrema scan */
    check_layout("minmax", 1, flat, -1, 3);
    unsetenv("QCAL_NO_SIMD");
}

Test(minmax, per_channel_nchw_axis_1)
{
    const uint64_t shape[] = {5, 6, 7, 3};
    check_layout("minmax_per_channel", 4, shape, 1, 3);
}

Test(minmax, per_channel_channel_last)
{
    const uint64_t shape[] = {7, 5, 9};
    check_layout("minmax_per_channel", 3, shape, 2, 4);
    const uint64_t nhwc[] = {3, 4, 5, 16};
    check_layout("minmax_per_channel", 4, nhwc, 3, 5);
}

Test(minmax, per_channel_rank_2_and_middle_axis)
{
    const uint64_t rank2[] = {200, 12};
    check_layout("minmax_per_channel", 2, rank2, 1, 6);
    const uint64_t middle[] = {4, 3, 10, 6};
    check_layout("minmax_per_channel", 4, middle, 2, 7);
}

Test(minmax, nonfinite_values_skipped_and_counted)
{
    float x[] = {NAN, 2.5f, -INFINITY, -1.25f, INFINITY, NAN, 0.5f, NAN};
    const uint64_t shape[] = {4, 2};
    qcal_tensor t = tensor(2, shape, 1, 1);
    mm_result r;
    run_whole(observer("minmax"), &t, NULL, x, &r);
    cr_expect_eq(r.lo[0], -1.25f);
    cr_expect_eq(r.hi[0], 2.5f);
    cr_expect_eq(r.count[0], 3);
    cr_expect_eq(r.nonfinite[0], 3);
    cr_expect_eq(r.nonfinite[1], 2);
    run_whole(observer("minmax_per_channel"), &t, NULL, x, &r);
    cr_expect_eq(r.lo[0], 0.5f); /* column 0: NaN, -Inf, Inf, 0.5 */
    cr_expect_eq(r.hi[0], 0.5f);
    cr_expect_eq(r.count[0], 1);
    cr_expect_eq(r.lo[1], -1.25f); /* column 1: 2.5, -1.25, NaN, NaN */
    cr_expect_eq(r.hi[1], 2.5f);
    cr_expect_eq(r.count[1], 2);
}

Test(minmax, no_finite_value_is_a_data_error)
{
    float x[] = {NAN, INFINITY, NAN, NAN};
    const uint64_t shape[] = {2, 2};
    qcal_tensor t = tensor(2, shape, 1, 1);
    const char *names[] = {"minmax", "minmax_per_channel", "moving_average_minmax"};
    for (int k = 0; k < 3; k++) {
        const qcal_observer *o = observer(names[k]);
        qcal_value p[8];
        params_for(o, NULL, p);
        void *s = make_state(o, &t, p);
        feed(o, s, x, 0, 2, 2);
        qcal_stat st;
        qcal_err err = {{0}};
        cr_expect_eq(o->finalize(s, &st, &err), QCAL_E_DATA, "%s", names[k]);
        cr_expect_str_eq(err.msg, "no finite value (3 NaN, 1 Inf)", "%s", names[k]);
        o->destroy(s);
    }
}

Test(minmax, empty_channel_reads_zero_with_count_zero)
{
    float x[] = {NAN, 1.0f, NAN, -3.0f};
    const uint64_t shape[] = {2, 2};
    qcal_tensor t = tensor(2, shape, 1, 1);
    mm_result r;
    run_whole(observer("minmax_per_channel"), &t, NULL, x, &r);
    cr_expect_eq(r.count[0], 0);
    cr_expect_eq(r.lo[0], 0.0f);
    cr_expect_eq(r.hi[0], 0.0f);
    cr_expect_eq(r.lo[1], -3.0f);
    cr_expect_eq(r.hi[1], 1.0f);
}

Test(minmax, unsuitable_tensors_refused_at_create)
{
    const uint64_t shape[] = {4, 3, 2};
    qcal_tensor t = tensor(3, shape, -1, 1);
    void *s = NULL;
    qcal_err err = {{0}};
    const qcal_observer *pc = observer("minmax_per_channel");
    cr_expect_eq(pc->create(&t, NULL, &s, &err), QCAL_E_INVAL);
    cr_expect(strstr(err.msg, "no channel axis") != NULL, "%s", err.msg);
    t.channel_axis = 3;
    memset(&err, 0, sizeof err);
    cr_expect_eq(pc->create(&t, NULL, &s, &err), QCAL_E_INVAL);
    cr_expect_str_eq(err.msg, "channel axis 3 is outside 1..2 for a rank-3 tensor");

    const qcal_observer *ma = observer("moving_average_minmax");
    qcal_value p[8];
    params_for(ma, "per_channel=true", p);
    t.channel_axis = -1;
    cr_expect_eq(ma->create(&t, p, &s, &err), QCAL_E_INVAL);
    params_for(ma, "averaging_constant=0", p);
    memset(&err, 0, sizeof err);
    cr_expect_eq(ma->create(&t, p, &s, &err), QCAL_E_INVAL);
    cr_expect(strstr(err.msg, "averaging_constant") != NULL, "%s", err.msg);
    t.batch_size = 0;
    params_for(ma, NULL, p);
    cr_expect_eq(ma->create(&t, p, &s, &err), QCAL_E_INVAL);
}

Test(minmax, slab_of_another_shape_refused)
{
    const uint64_t shape[] = {4, 3};
    qcal_tensor t = tensor(2, shape, 1, 1);
    const qcal_observer *o = observer("minmax");
    void *s = make_state(o, &t, NULL);
    float x[8] = {0};
    qcal_slab slab = {x, 2, 4, 0};
    qcal_err err = {{0}};
    cr_expect_eq(o->observe(s, &slab, &err), QCAL_E_INVAL);
    cr_expect_gt(strlen(err.msg), 0);
    o->destroy(s);
}

/* ---- exact under any split into slabs and states, and any merge order -------------------- */

/* Bytes of a statistic: kind, and every array's name, dtype, shape and data. */
static size_t blob(const qcal_stat *s, unsigned char *out, size_t cap)
{
    size_t len = (size_t)snprintf((char *)out, cap, "%s/%u/%llu", s->kind, s->kind_version,
                                  (unsigned long long)s->channels) + 1;
    for (uint32_t i = 0; i < s->n_arrays; i++) {
        const qcal_array *a = &s->arrays[i];
        uint64_t n = 1;
        for (uint32_t d = 0; d < a->rank; d++)
            n *= a->shape[d];
        size_t bytes = n * (a->dtype == QCAL_DTYPE_F32 ? 4 : 8);
        cr_assert_lt(len + bytes + 128, cap);
        len += (size_t)snprintf((char *)out + len, cap - len, "%s:%u:%u:%llu:%llu", a->name,
                                a->dtype, a->rank, (unsigned long long)a->shape[0],
                                (unsigned long long)a->shape[1]) + 1;
        memcpy(out + len, a->data, bytes);
        len += bytes;
    }
    return len;
}

/* The serialized state followed by the statistic. */
static size_t state_blob(const qcal_observer *o, void *s, unsigned char *out, size_t cap)
{
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(o->serialize(s, &st, &err), QCAL_OK, "%s", err.msg);
    size_t len = blob(&st, out, cap);
    cr_assert_eq(o->finalize(s, &st, &err), QCAL_OK, "%s", err.msg);
    return len + blob(&st, out + len, cap - len);
}

static void merge_into(const qcal_observer *o, void *into, void *from, int via_serialize)
{
    qcal_err err = {{0}};
    if (via_serialize) {
        qcal_stat st;
        cr_assert_eq(o->serialize(from, &st, &err), QCAL_OK, "%s", err.msg);
        cr_assert_eq(o->deserialize(into, &st, &err), QCAL_OK, "%s", err.msg);
    } else {
        cr_assert_eq(o->merge(into, from, &err), QCAL_OK, "%s", err.msg);
    }
}

/* Feeds x to k states in random slabs, shuffled, each to a random state; merges them in one
 * of three orders (0: into the first, 1: into the last backwards, 2: pairwise tree). */
static size_t run_split(const qcal_observer *o, const qcal_tensor *t, const qcal_value *p,
                        const float *x, uint64_t seed, int k, int order, unsigned char *out,
                        size_t cap)
{
    uint64_t n = t->shape[0], first[512], rows[512];
    int slabs = 0;
    for (uint64_t r = 0; r < n; slabs++) {
        first[slabs] = r;
        rows[slabs] = 1 + next_random(&seed) % 7;
        if (r + rows[slabs] > n)
            rows[slabs] = n - r;
        r += rows[slabs];
    }
    for (int i = slabs - 1; i > 0; i--) { /* shuffle */
        int j = (int)(next_random(&seed) % (uint64_t)(i + 1));
        uint64_t f = first[i], q = rows[i];
        first[i] = first[j], rows[i] = rows[j], first[j] = f, rows[j] = q;
    }
    void *states[8] = {0};
    for (int i = 0; i < k; i++)
        states[i] = make_state(o, t, p);
    for (int i = 0; i < slabs; i++)
        feed(o, states[next_random(&seed) % (uint64_t)k], x, first[i], rows[i], row_size_of(t));
    int root = 0;
    if (order == 0) {
        for (int i = 1; i < k; i++)
            merge_into(o, states[0], states[i], i % 2);
    } else if (order == 1) {
        for (int i = k - 2; i >= 0; i--)
            merge_into(o, states[k - 1], states[i], i % 2);
        root = k - 1;
    } else {
        for (int step = 1; step < k; step *= 2)
            for (int i = 0; i + step < k; i += 2 * step)
                merge_into(o, states[i], states[i + step], 0);
    }
    size_t len = state_blob(o, states[root], out, cap);
    for (int i = 0; i < k; i++)
        o->destroy(states[i]);
    return len;
}

static void check_split_invariance(const char *name, const char *kvs, uint32_t rank,
                                   const uint64_t *shape, int axis, uint64_t batch)
{
    static unsigned char ref[1 << 18], got[1 << 18];
    const qcal_observer *o = observer(name);
    qcal_tensor t = tensor(rank, shape, axis, batch);
    qcal_value p[8];
    params_for(o, kvs, p);
    uint64_t n = shape[0] * row_size_of(&t);
    float *x = malloc(n * sizeof *x);
    fill(x, n, 99, 1);
    void *s = make_state(o, &t, p);
    feed(o, s, x, 0, shape[0], row_size_of(&t));
    size_t ref_len = state_blob(o, s, ref, sizeof ref);
    o->destroy(s);
    for (int trial = 0; trial < 12; trial++) {
        size_t len = run_split(o, &t, p, x, 1000 + (uint64_t)trial, 1 + trial % 5, trial % 3,
                               got, sizeof got);
        cr_assert_eq(len, ref_len, "%s trial %d", name, trial);
        cr_assert(memcmp(ref, got, len) == 0, "%s trial %d differs", name, trial);
    }
    free(x);
}

Test(minmax, splits_and_merge_orders_give_identical_results)
{
    const uint64_t shape[] = {41, 4, 3, 5};
    check_split_invariance("minmax", NULL, 4, shape, 1, 1);
    check_split_invariance("minmax_per_channel", NULL, 4, shape, 1, 1);
    const uint64_t last[] = {41, 6, 8};
    check_split_invariance("minmax_per_channel", NULL, 3, last, 2, 1);
}

Test(minmax, moving_average_split_invariant)
{
    const uint64_t shape[] = {41, 4, 3, 5};
    check_split_invariance("moving_average_minmax", "batch_size=4,averaging_constant=0.5", 4,
                           shape, 1, 4);
    check_split_invariance("moving_average_minmax",
                           "batch_size=3,averaging_constant=0.01,per_channel=1", 4, shape, 1, 8);
    check_split_invariance("moving_average_minmax", "per_channel=yes", 4, shape, 2, 1);
}

/* ---- saved states ------------------------------------------------------------------------ */

Test(minmax, serialize_deserialize_round_trip)
{
    static unsigned char a[1 << 16], b[1 << 16];
    const char *names[] = {"minmax", "minmax_per_channel", "moving_average_minmax"};
    const char *kvs[] = {NULL, NULL, "batch_size=2,per_channel=on"};
    const uint64_t shape[] = {11, 3, 4};
    qcal_tensor t = tensor(3, shape, 1, 2);
    float x[11 * 12];
    fill(x, 11 * 12, 5, 1);
    for (int k = 0; k < 3; k++) {
        const qcal_observer *o = observer(names[k]);
        qcal_value p[8];
        params_for(o, kvs[k], p);
        void *s = make_state(o, &t, p), *copy = make_state(o, &t, p);
        feed(o, s, x, 0, 11, 12);
        qcal_stat st;
        qcal_err err = {{0}};
        cr_assert_eq(o->serialize(s, &st, &err), QCAL_OK);
        cr_assert_eq(o->deserialize(copy, &st, &err), QCAL_OK, "%s: %s", names[k], err.msg);
        size_t la = state_blob(o, s, a, sizeof a), lb = state_blob(o, copy, b, sizeof b);
        cr_expect(la == lb && memcmp(a, b, la) == 0, "%s: round trip differs", names[k]);
        o->destroy(s);
        o->destroy(copy);
    }
}

/* Serialized state arrays copied into buffers the test may corrupt. */
typedef struct saved {
    qcal_stat st;
    qcal_array arrays[8];
    unsigned char data[8][4096];
} saved;

static void save(const qcal_observer *o, void *s, saved *out)
{
    qcal_err err = {{0}};
    cr_assert_eq(o->serialize(s, &out->st, &err), QCAL_OK);
    cr_assert_leq(out->st.n_arrays, 8);
    for (uint32_t i = 0; i < out->st.n_arrays; i++) {
        out->arrays[i] = out->st.arrays[i];
        uint64_t n = 1;
        for (uint32_t d = 0; d < out->arrays[i].rank; d++)
            n *= out->arrays[i].shape[d];
        cr_assert_leq(n * 8, sizeof out->data[i]);
        memcpy(out->data[i], out->arrays[i].data, n * (out->arrays[i].dtype == 1 ? 4 : 8));
        out->arrays[i].data = out->data[i];
    }
    out->st.arrays = out->arrays;
}

static qcal_array *saved_array(saved *s, const char *name)
{
    for (uint32_t i = 0; i < s->st.n_arrays; i++)
        if (!strcmp(s->arrays[i].name, name))
            return &s->arrays[i];
    cr_assert_fail("no array %s", name);
    return NULL;
}

/* Deserializing `bad` fails with `code` and leaves `into` as it was. */
static void expect_refused(const qcal_observer *o, void *into, const saved *bad, int code,
                           const char *what)
{
    static unsigned char before[1 << 16], after[1 << 16];
    size_t lb = state_blob(o, into, before, sizeof before);
    qcal_err err = {{0}};
    cr_expect_eq(o->deserialize(into, &bad->st, &err), code, "%s: %s", what, err.msg);
    cr_expect_gt(strlen(err.msg), 0, "%s: no sentence", what);
    size_t la = state_blob(o, into, after, sizeof after);
    cr_expect(la == lb && memcmp(before, after, la) == 0, "%s: state changed", what);
}

Test(minmax, malformed_minmax_state_refused)
{
    const uint64_t shape[] = {3, 2};
    qcal_tensor t = tensor(2, shape, 1, 1);
    float x[6] = {1, 2, 3, -4, 5, 6};
    const qcal_observer *o = observer("minmax_per_channel");
    void *s = make_state(o, &t, NULL), *into = make_state(o, &t, NULL);
    feed(o, s, x, 0, 3, 2);
    feed(o, into, x, 0, 1, 2);
    saved good, bad;
    save(o, s, &good);

    bad = good, bad.st.arrays = bad.arrays;
    bad.st.kind = "qcal.histogram.state";
    expect_refused(o, into, &bad, QCAL_E_KIND, "kind");
    bad = good, bad.st.arrays = bad.arrays;
    bad.st.n_arrays = 3; /* drops nonfinite */
    expect_refused(o, into, &bad, QCAL_E_DATA, "missing array");
    bad = good, bad.st.arrays = bad.arrays;
    saved_array(&bad, "lo")->dtype = QCAL_DTYPE_F64;
    expect_refused(o, into, &bad, QCAL_E_DATA, "dtype");
    bad = good, bad.st.arrays = bad.arrays;
    saved_array(&bad, "hi")->shape[0] = 3;
    expect_refused(o, into, &bad, QCAL_E_DATA, "shape");
    bad = good, bad.st.arrays = bad.arrays;
    bad.st.channels = 3;
    expect_refused(o, into, &bad, QCAL_E_DATA, "channels");
    bad = good, bad.st.arrays = bad.arrays;
    ((float *)saved_array(&bad, "lo")->data)[1] = 100.0f; /* lo above hi */
    expect_refused(o, into, &bad, QCAL_E_DATA, "lo > hi");
    bad = good, bad.st.arrays = bad.arrays;
    ((float *)saved_array(&bad, "hi")->data)[0] = NAN;
    expect_refused(o, into, &bad, QCAL_E_DATA, "NaN");
    bad = good, bad.st.arrays = bad.arrays;
    saved_array(&bad, "count")->data = NULL;
    expect_refused(o, into, &bad, QCAL_E_DATA, "no data");
    bad = good, bad.st.arrays = bad.arrays;
    ((uint64_t *)saved_array(&bad, "nonfinite")->data)[0] = UINT64_MAX;
    feed(o, into, (const float[]){NAN, 0}, 0, 1, 2);
    expect_refused(o, into, &bad, QCAL_E_DATA, "overflow");
    o->destroy(s);
    o->destroy(into);
}

Test(minmax, malformed_moving_average_state_refused)
{
    const uint64_t shape[] = {6, 2};
    qcal_tensor t = tensor(2, shape, 1, 2);
    float x[12] = {1, 2, 3, -4, 5, 6, 0, 1, 2, 3, 4, 5};
    const qcal_observer *o = observer("moving_average_minmax");
    qcal_value p[8];
    params_for(o, "per_channel=1", p);
    void *s = make_state(o, &t, p), *into = make_state(o, &t, p);
    feed(o, s, x, 0, 6, 2);
    feed(o, into, x, 0, 2, 2);
    saved good, bad;
    save(o, s, &good);
    cr_assert_eq(saved_array(&good, "batch")->shape[0], 3);
    cr_assert_eq(saved_array(&good, "lo")->shape[1], 2);

    bad = good, bad.st.arrays = bad.arrays;
    ((uint64_t *)saved_array(&bad, "batch")->data)[2] = 1; /* 0, 1, 1 */
    expect_refused(o, into, &bad, QCAL_E_DATA, "batch order");
    bad = good, bad.st.arrays = bad.arrays;
    saved_array(&bad, "lo")->shape[0] = 2;
    expect_refused(o, into, &bad, QCAL_E_DATA, "lo rows");
    bad = good, bad.st.arrays = bad.arrays;
    saved_array(&bad, "count")->rank = 1;
    expect_refused(o, into, &bad, QCAL_E_DATA, "count rank");
    bad = good, bad.st.arrays = bad.arrays;
    *(uint64_t *)saved_array(&bad, "batch_size")->data = 3;
    expect_refused(o, into, &bad, QCAL_E_DATA, "batch size");
    bad = good, bad.st.arrays = bad.arrays;
    ((float *)saved_array(&bad, "lo")->data)[3] = INFINITY;
    expect_refused(o, into, &bad, QCAL_E_DATA, "infinite lo");
    bad = good, bad.st.arrays = bad.arrays;
    bad.st.kind_version = 2;
    expect_refused(o, into, &bad, QCAL_E_KIND, "version");
    bad = good, bad.st.arrays = bad.arrays;
    bad.st.arrays = NULL;
    expect_refused(o, into, &bad, QCAL_E_DATA, "no arrays");
    o->destroy(s);
    o->destroy(into);
}

/* ---- moving average against torch's formula ---------------------------------------------- */

Test(minmax, moving_average_by_hand)
{
    /* batches of 2: [1, 3], [NaN, NaN] (skipped), [-1, 5], [2, 2]; c = 0.5:
     * lo: 1 -> 1 + 0.5 (-1 - 1) = 0 -> 0 + 0.5 (2 - 0) = 1
     * hi: 3 -> 3 + 0.5 (5 - 3) = 4 -> 4 + 0.5 (2 - 4) = 3 */
    float x[] = {1, 3, NAN, NAN, -1, 5, 2, 2};
    const uint64_t shape[] = {8};
    qcal_tensor t = tensor(1, shape, -1, 2);
    const qcal_observer *o = observer("moving_average_minmax");
    qcal_value p[8];
    params_for(o, "averaging_constant=0.5", p);
    mm_result r;
    run_whole(o, &t, p, x, &r);
    cr_expect_eq(r.lo[0], 1.0f);
    cr_expect_eq(r.hi[0], 3.0f);
    cr_expect_eq(r.count[0], 6);
    cr_expect_eq(r.nonfinite[0], 2);
}

static void check_moving(const char *kvs, uint64_t param_batch, double c, int per_channel,
                         uint64_t tensor_batch)
{
    const uint64_t shape[] = {23, 3, 5}; /* batches of 4: the last one holds 3 samples */
    qcal_tensor t = tensor(3, shape, 1, tensor_batch);
    float x[23 * 15];
    fill(x, 23 * 15, 77, 1);
    for (int i = 4 * 15; i < 8 * 15; i++)
        x[i] = NAN; /* batch 1 of 4 is all NaN: skipped */
    const qcal_observer *o = observer("moving_average_minmax");
    qcal_value p[8];
    params_for(o, kvs, p);
    mm_result got, want;
    run_whole(o, &t, p, x, &got);
    moving_reference(&t, per_channel ? 1 : 0, x, param_batch, c, &want);
    expect_same(&got, &want);
}

Test(minmax, moving_average_matches_torch_formula)
{
    check_moving("batch_size=4,averaging_constant=0.01", 4, 0.01, 0, 1);
    check_moving("batch_size=4,averaging_constant=0.5", 4, 0.5, 0, 1);
    check_moving("averaging_constant=0.5", 4, 0.5, 0, 4); /* batch size from the tensor */
    check_moving("batch_size=4,averaging_constant=0.5,per_channel=1", 4, 0.5, 1, 1);
    check_moving("per_channel=1", 4, 0.01, 1, 4);
    check_moving("averaging_constant=1", 4, 1.0, 0, 4); /* c = 1: the last batch's range */
}

/* ---- the minmax estimator ---------------------------------------------------------------- */

typedef struct stat_buf {
    float lo[MAXC], hi[MAXC];
    uint64_t count[MAXC], nonfinite[2];
    qcal_array arrays[4];
    qcal_stat st;
} stat_buf;

/* A "qcal.minmax" statistic written by hand. */
static void make_stat(stat_buf *b, uint64_t c, const float *lo, const float *hi,
                      const uint64_t *count)
{
    memset(b, 0, sizeof *b);
    memcpy(b->lo, lo, c * 4), memcpy(b->hi, hi, c * 4), memcpy(b->count, count, c * 8);
    b->arrays[0] = (qcal_array){"lo", QCAL_DTYPE_F32, 1, {c, 0, 0, 0}, b->lo};
    b->arrays[1] = (qcal_array){"hi", QCAL_DTYPE_F32, 1, {c, 0, 0, 0}, b->hi};
    b->arrays[2] = (qcal_array){"count", QCAL_DTYPE_U64, 1, {c, 0, 0, 0}, b->count};
    b->arrays[3] = (qcal_array){"nonfinite", QCAL_DTYPE_U64, 1, {2, 0, 0, 0}, b->nonfinite};
    b->st = (qcal_stat){"qcal.minmax", 1, 4, c, b->arrays};
}

static int estimate(const qcal_stat *st, uint32_t flags, qcal_range *r, uint64_t n, char *msg)
{
    const reg_estimator *est = registry_estimator(reg, "minmax");
    cr_assert_not_null(est);
    qcal_qspec spec = {.bits = 8, .flags = flags, .qmin = (flags & 1) ? -128 : 0,
                       .qmax = (flags & 1) ? 127 : 255, .axis = (flags & 8) ? 1 : -1};
    qcal_err err = {{0}};
    int rc = est->desc.estimate(st, NULL, &spec, r, n, &err);
    if (msg)
        snprintf(msg, QCAL_ERR_MSG_SIZE, "%s", err.msg);
    if (rc != QCAL_OK)
        cr_expect_gt(strlen(err.msg), 0, "no sentence for code %d", rc);
    return rc;
}

#define SIGNED QCAL_QSPEC_SIGNED
#define SYM QCAL_QSPEC_SYMMETRIC
#define PER_CHANNEL QCAL_QSPEC_PER_CHANNEL

Test(minmax, estimator_per_tensor_schemes)
{
    stat_buf b;
    make_stat(&b, 1, (const float[]){-2.0f}, (const float[]){3.0f}, (const uint64_t[]){10});
    qcal_range r;
    cr_assert_eq(estimate(&b.st, 0, &r, 1, NULL), QCAL_OK);
    cr_expect(r.lo == -2.0 && r.hi == 3.0, "affine [%g, %g]", r.lo, r.hi);
    cr_assert_eq(estimate(&b.st, SIGNED, &r, 1, NULL), QCAL_OK);
    cr_expect(r.lo == -2.0 && r.hi == 3.0, "signed affine [%g, %g]", r.lo, r.hi);
    cr_assert_eq(estimate(&b.st, SIGNED | SYM, &r, 1, NULL), QCAL_OK);
    cr_expect(r.lo == -3.0 && r.hi == 3.0, "symmetric [%g, %g]", r.lo, r.hi);
    cr_assert_eq(estimate(&b.st, SIGNED | SYM | QCAL_QSPEC_NARROW, &r, 1, NULL), QCAL_OK);
    cr_expect(r.lo == -3.0 && r.hi == 3.0, "narrow [%g, %g]", r.lo, r.hi);
    cr_assert_eq(estimate(&b.st, SYM, &r, 1, NULL), QCAL_OK);
    cr_expect(r.lo == 0.0 && r.hi == 3.0, "unsigned symmetric [%g, %g]", r.lo, r.hi);
    make_stat(&b, 1, (const float[]){-5.5f}, (const float[]){1.0f}, (const uint64_t[]){2});
    cr_assert_eq(estimate(&b.st, SIGNED | SYM, &r, 1, NULL), QCAL_OK);
    cr_expect(r.lo == -5.5 && r.hi == 5.5, "symmetric [%g, %g]", r.lo, r.hi);
}

Test(minmax, estimator_per_channel_and_reduction)
{
    stat_buf b;
    const float lo[] = {-1.0f, -4.0f, 0.5f, 0.0f}, hi[] = {2.0f, 1.0f, 0.75f, 0.0f};
    uint64_t count[] = {5, 5, 5, 0};
    make_stat(&b, 3, lo, hi, count);
    qcal_range r[4];
    cr_assert_eq(estimate(&b.st, PER_CHANNEL, r, 3, NULL), QCAL_OK);
    for (int c = 0; c < 3; c++)
        cr_expect(r[c].lo == lo[c] && r[c].hi == hi[c], "channel %d", c);
    cr_assert_eq(estimate(&b.st, PER_CHANNEL | SIGNED | SYM, r, 3, NULL), QCAL_OK);
    const double t[] = {2.0, 4.0, 0.75};
    for (int c = 0; c < 3; c++)
        cr_expect(r[c].lo == -t[c] && r[c].hi == t[c], "channel %d", c);
    cr_assert_eq(estimate(&b.st, 0, r, 1, NULL), QCAL_OK);
    cr_expect(r[0].lo == -4.0 && r[0].hi == 2.0, "reduced [%g, %g]", r[0].lo, r[0].hi);
    cr_assert_eq(estimate(&b.st, SIGNED | SYM, r, 1, NULL), QCAL_OK);
    cr_expect(r[0].lo == -4.0 && r[0].hi == 4.0);

    make_stat(&b, 4, lo, hi, count); /* channel 3 saw nothing */
    char msg[QCAL_ERR_MSG_SIZE];
    cr_expect_eq(estimate(&b.st, PER_CHANNEL, r, 4, msg), QCAL_E_DATA);
    cr_expect_str_eq(msg, "channel 3 saw no finite value");
    cr_assert_eq(estimate(&b.st, 0, r, 1, NULL), QCAL_OK); /* a per-tensor range skips it */
    cr_expect(r[0].lo == -4.0 && r[0].hi == 2.0);
}

Test(minmax, estimator_on_observed_per_channel_statistic)
{
    const uint64_t shape[] = {6, 5, 4};
    qcal_tensor t = tensor(3, shape, 2, 1);
    float x[6 * 20];
    fill(x, 6 * 20, 31, 0);
    const qcal_observer *o = observer("minmax_per_channel");
    void *s = make_state(o, &t, NULL);
    feed(o, s, x, 0, 6, 20);
    qcal_stat st;
    qcal_err err = {{0}};
    cr_assert_eq(o->finalize(s, &st, &err), QCAL_OK);
    qcal_range r[4];
    cr_assert_eq(estimate(&st, PER_CHANNEL, r, 4, NULL), QCAL_OK);
    mm_result want;
    naive_minmax(&t, 2, x, 0, 6, &want);
    for (int c = 0; c < 4; c++)
        cr_expect(r[c].lo == want.lo[c] && r[c].hi == want.hi[c], "channel %d", c);
    o->destroy(s);
}

Test(minmax, estimator_refuses_malformed_statistics)
{
    stat_buf b;
    const float lo[] = {-1.0f, -4.0f}, hi[] = {2.0f, 1.0f};
    const uint64_t count[] = {1, 1};
    qcal_range r[2];
    char msg[QCAL_ERR_MSG_SIZE];

    make_stat(&b, 2, lo, hi, count);
    cr_expect_eq(estimate(&b.st, 16, r, 1, msg), QCAL_E_UNSUP, "unknown spec flag");
    make_stat(&b, 2, lo, hi, count);
    b.st.kind = "qcal.histogram";
    cr_expect_eq(estimate(&b.st, 0, r, 1, msg), QCAL_E_KIND);
    make_stat(&b, 2, lo, hi, count);
    b.st.n_arrays = 1; /* only lo */
    cr_expect_eq(estimate(&b.st, 0, r, 1, msg), QCAL_E_DATA);
    cr_expect_str_eq(msg, "array 'hi' is missing");
    make_stat(&b, 2, lo, hi, count);
    b.arrays[2].name = "counts";
    cr_expect_eq(estimate(&b.st, 0, r, 1, msg), QCAL_E_DATA);
    make_stat(&b, 2, lo, hi, count);
    b.arrays[0].dtype = QCAL_DTYPE_F64;
    cr_expect_eq(estimate(&b.st, 0, r, 1, msg), QCAL_E_DATA);
    make_stat(&b, 2, lo, hi, count);
    b.arrays[1].shape[0] = 1;
    cr_expect_eq(estimate(&b.st, PER_CHANNEL, r, 2, msg), QCAL_E_DATA);
    make_stat(&b, 2, lo, hi, count);
    b.arrays[1].data = NULL;
    cr_expect_eq(estimate(&b.st, 0, r, 1, msg), QCAL_E_DATA);
    make_stat(&b, 2, lo, hi, count);
    b.st.channels = 0;
    cr_expect_eq(estimate(&b.st, 0, r, 1, msg), QCAL_E_DATA);
    make_stat(&b, 2, lo, hi, count);
    b.lo[1] = 3.0f; /* above hi */
    cr_expect_eq(estimate(&b.st, PER_CHANNEL, r, 2, msg), QCAL_E_DATA);
    make_stat(&b, 2, lo, hi, count);
    b.hi[0] = INFINITY;
    cr_expect_eq(estimate(&b.st, 0, r, 1, msg), QCAL_E_DATA);
    make_stat(&b, 2, lo, hi, count);
    cr_expect_eq(estimate(&b.st, PER_CHANNEL, r, 1, msg), QCAL_E_INVAL, "wrong range count");
}
