/* bench_estimators.c - time per tensor of each estimator, through the plugin ABI as qcal calls it.
 *
 *   bench_estimators PLUGIN_DIR [CALLS [ONLY]]   (ONLY: time only labels containing it)
 *
 * Histogram estimators get a 2048-bin histogram (the observer's defaults) of 1M gaussian
 * values, and of their ReLU for one-sided cases; quantile gets batch_stats of 300 samples
 * (POT's stat_subset_size). Prints "name  ms_per_call" lines (best of 5 batches); asserts
 * nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixtures.h"
#include "registry.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* An observer's finalized statistic over the given values (rows x row). */
static void *observe(const qcal_observer *obs, const qcal_value *params, const float *x,
                     uint64_t rows, uint64_t row, qcal_stat *st)
{
    qcal_tensor t = {.name = "t", .rank = 2, .channel_axis = -1, .shape = {rows, row}, .batch_size = 1};
    void *s = NULL;
    qcal_err err = {{0}};
    qcal_slab slab = {x, rows, row, 0};
    if (obs->create(&t, params, &s, &err) || obs->observe(s, &slab, &err) ||
        obs->finalize(s, st, &err)) {
        fprintf(stderr, "bench_estimators: %s: %s\n", obs->name, err.msg);
        exit(1);
    }
    return s;
}

/* Default parameter values of an estimator, with one choice parameter overridden. */
static void defaults(const qcal_estimator *e, const char *name, int choice, qcal_value *v)
{
    for (uint32_t i = 0; i < e->n_params; i++) {
        v[i] = e->params[i].def;
        if (name && !strcmp(e->params[i].name, name))
            v[i].i = choice;
    }
}

/* Prints the best of 5 batches of `calls` calls (this VM's neighbours add noise upwards only) */
static const char *only; /* a label filter, or NULL */

static void time_one(const char *label, const qcal_estimator *e, const qcal_value *v,
                     const qcal_stat *st, uint32_t flags, int calls)
{
    if (only && !strstr(label, only))
        return;
    qcal_qspec spec = {.bits = 8, .flags = flags, .qmin = (flags & QCAL_QSPEC_SIGNED) ? -128 : 0,
                       .qmax = (flags & QCAL_QSPEC_SIGNED) ? 127 : 255, .axis = -1};
    qcal_range r;
    qcal_err err = {{0}};
    double best = INFINITY;
    for (int batch = 0; batch < 5; batch++) {
        double t0 = now();
        for (int i = 0; i < calls; i++)
            if (e->estimate(st, v, &spec, &r, 1, &err)) {
                fprintf(stderr, "bench_estimators: %s: %s\n", label, err.msg);
                exit(1);
            }
        best = fmin(best, (now() - t0) / calls);
    }
    printf("%-28s %10.4f ms  [%g, %g]\n", label, 1e3 * best, r.lo, r.hi);
}

static const qcal_estimator *estimator(registry *reg, const char *name)
{
    const reg_estimator *e = registry_estimator(reg, name);
    return e ? &e->desc : NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_estimators PLUGIN_DIR [CALLS]\n");
        return 64;
    }
    int calls = argc > 2 ? atoi(argv[2]) : 20;
    only = argc > 3 ? argv[3] : NULL;
    registry *reg = registry_new(NULL, NULL);
    registry_load_dir(reg, argv[1]);
    enum { N = 1 << 20, ROWS = 300, ROW = 4096 };
    float *x = malloc(sizeof(float) * (N > ROWS * ROW ? N : ROWS * ROW));
    fx_fill_gauss(x, N, 1, 0.0f, 1.0f);

    const qcal_observer *hist = &registry_observer(reg, "histogram")->desc;
    qcal_value hp[3] = {{.i = 2048}, {.i = 0}, {.i = 4}}, ha[3] = {{.i = 2048}, {.i = 1}, {.i = 4}};
    qcal_stat signed_st, abs_st;
    void *s1 = observe(hist, hp, x, 1, N, &signed_st), *s2 = observe(hist, ha, x, 1, N, &abs_st);
    qcal_value v[16];
    const qcal_estimator *e;
    uint32_t sym = QCAL_QSPEC_SYMMETRIC | QCAL_QSPEC_SIGNED;
    if ((e = estimator(reg, "percentile")))
        defaults(e, NULL, 0, v), time_one("percentile (|x|)", e, v, &abs_st, sym, calls * 50);
    if ((e = estimator(reg, "kl"))) {
        const char *const *variant = e->params[0].choices;
        for (int k = 0; variant[k]; k++) {
            char label[64];
            snprintf(label, sizeof label, "kl variant=%s", variant[k]);
            defaults(e, "variant", k, v), time_one(label, e, v, &abs_st, sym, calls);
        }
    }
    if ((e = estimator(reg, "mse")))
        defaults(e, NULL, 0, v), time_one("mse (affine)", e, v, &signed_st, 0, calls);
    if ((e = estimator(reg, "l2_search")))
        defaults(e, NULL, 0, v), time_one("l2_search (affine)", e, v, &signed_st, 0, calls);

    fx_fill_gauss(x, ROWS * ROW, 2, 0.0f, 1.0f);
    const reg_observer *bo = registry_observer(reg, "batch_stats");
    if (bo && (e = estimator(reg, "quantile"))) {
        qcal_value bp[4] = {{.i = 0}, {.i = 0}, {.f = 1e-4}, {.i = 1}};
        qcal_stat bst;
        void *s3 = observe(&bo->desc, bp, x, ROWS, ROW, &bst);
        defaults(e, "preset", 1, v), time_one("quantile (300 samples)", e, v, &bst, 0, calls * 10);
        defaults(e, "max_aggregator", 7, v), time_one("quantile hl_estimator", e, v, &bst, 0, calls);
        bo->desc.destroy(s3);
    }
    hist->destroy(s1), hist->destroy(s2);
    free(x);
    registry_free(reg);
    return 0;
}
