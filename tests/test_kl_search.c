/* test_kl_search.c - the kl estimator's search internals, against their definitions: the
 * log of the level terms against long double logl, the O(levels) divergence against the
 * O(bins) one for every candidate, and the vector loops against their scalar forms bit for
 * bit. The estimator's thresholds are tested against independent references in
 * test_histogram_plugin.c; a threshold hides small errors in the divergences, these do not. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../plugins/hist_kl.c"
#include "fixtures.h"

static double ulps_from(double got, long double want)
{
    double w = (double)want, ulp = nextafter(fabs(w), INFINITY) - fabs(w);
    return (double)fabsl((long double)got - want) / ulp;
}

Test(kl_search, log_within_three_ulps_of_logl)
{
    uint64_t seed = 17;
    double worst = 0, at = 0;
    for (int k = 0; k < 400000; k++) {
        double u = fx_rand_uniform(&seed), x;
        if (k % 4 == 0)
            x = 1 + (u - 0.5) * 1e-3;                     /* near 1: log near 0 */
        else if (k % 4 == 1)
            x = ldexp(0.5 + u, (int)(fx_rand_u64(&seed) % 2000) - 1000);
        else
            x = (double)(fx_rand_u64(&seed) % 100000 + 1) / (double)(k % 97 + 1); /* m / nz */
        double e = ulps_from(log_one(x), logl((long double)x));
        if (e > worst)
            worst = e, at = x;
    }
    cr_expect_leq(worst, 3.0, "worst %g ulps at %.17g", worst, at);
    cr_expect_eq(log_one(1.0), 0.0);
    for (double x = nextafter(M_SQRT2, 0), k = 0; k < 3; k++, x = nextafter(x, 2)) /* the edge */
        cr_expect_leq(ulps_from(log_one(x), logl((long double)x)), 3.0, "at %.17g", x);
    cr_expect(isinf(log_one(0.0)) && log_one(0.0) < 0);
    cr_expect(isnan(log_one(-1.0)) && isinf(log_one(INFINITY)));
    cr_expect_eq(log_one(DBL_MIN / 8), log(DBL_MIN / 8), "subnormals go to libm");
}

Test(kl_search, vector_logs_equal_the_scalar_ones)
{
    enum { N = 4099 };
    static double x[N], v[N], s[N];
    uint64_t seed = 23;
    for (int k = 0; k < N; k++)
        x[k] = ldexp(fx_rand_uniform(&seed) + 0.25, (int)(fx_rand_u64(&seed) % 600) - 300);
    x[7] = 0, x[100] = DBL_MIN / 3, x[2001] = INFINITY, x[3000] = -2, x[4000] = NAN, x[9] = 1;
    memcpy(v, x, sizeof x), memcpy(s, x, sizeof x);
    logs_of(v, N, simd_avx2()), logs_of(s, N, 0);
    for (int k = 0; k < N; k++)
        cr_expect(memcmp(&v[k], &s[k], sizeof v[k]) == 0 || (isnan(v[k]) && isnan(s[k])),
                  "x %.17g: %.17g with vectors, %.17g without", x[k], v[k], s[k]);
}

/* ref: integer counts of a gaussian (dense), a few point masses (sparse) or fractional counts
 * with tiny parts, as re-binning makes (which sends some candidates to divergence()) */
static void fill_ref(double *ref, int bins, int shape, uint64_t seed)
{
    memset(ref, 0, (size_t)bins * sizeof *ref);
    for (int k = 0; k < 200000; k++) {
        double u = fx_rand_uniform(&seed) + 1e-300, v = fx_rand_uniform(&seed);
        double g = sqrt(-2 * log(u)) * fabs(cos(2 * M_PI * v)) / 4.5; /* |gaussian| / 4.5 */
        int j = (int)(g * bins);
        if (shape == 1)
            j = (int)(fx_rand_u64(&seed) % 23) * 89 % bins;
        if (j < bins)
            ref[j] += shape == 2 ? 0.37 + 1e-9 * (double)(k % 3) : 1;
    }
    ref[bins - 1] += 3; /* an outlier at the top */
}

/* Every candidate of the search: the O(levels) divergence with and without the vector loops
 * (bit for bit) and against the O(i) definition. */
static void check_search(const double *ref, int bins, int levels, double eps, const char *what)
{
    kl_prefix vec = {0}, plain = {0};
    double *p = malloc(2 * (size_t)bins * sizeof *p), *q = p + bins;
    cr_assert(prefix_build(&vec, ref, (uint64_t)bins) && prefix_build(&plain, ref, (uint64_t)bins));
    plain.lv.avx2 = 0;
    int compared = 0;
    for (int i = levels < 128 ? 128 : levels; i < bins; i++) {
        if ((uint64_t)i / (uint64_t)levels != vec.lv.width) {
            terms_for_width(&vec, (uint64_t)i / (uint64_t)levels, (uint64_t)levels);
            terms_for_width(&plain, (uint64_t)i / (uint64_t)levels, (uint64_t)levels);
        }
        double fast = fast_divergence(&vec, ref, (uint64_t)i, (uint64_t)bins, (uint64_t)levels, eps);
        double fast_plain = fast_divergence(&plain, ref, (uint64_t)i, (uint64_t)bins,
                                            (uint64_t)levels, eps);
        cr_expect(memcmp(&fast, &fast_plain, sizeof fast) == 0 || (isnan(fast) && isnan(fast_plain)),
                  "%s, %d levels, i %d: %.17g with vectors, %.17g without", what, levels, i, fast,
                  fast_plain);
        if (isnan(fast))
            continue; /* the search takes divergence() itself there */
        double slow = divergence(ref, (uint64_t)i, (uint64_t)bins, (uint64_t)levels, eps, p, q);
        cr_expect(fast == slow || fabs(fast - slow) <= 1e-9 * slow + 1e-11,
                  "%s, %d levels, i %d: %.17g, by the definition %.17g", what, levels, i, fast,
                  slow);
        compared++;
    }
    cr_expect_gt(compared, 0, "%s: no candidate took the fast path", what);
    prefix_free(&vec), prefix_free(&plain);
    free(p);
}

Test(kl_search, divergences_match_the_definition_for_every_candidate)
{
    static double ref[2048];
    static const char *const shapes[] = {"dense", "sparse", "fractional"};
    static const int level_counts[] = {128, 100, 37};
    for (int shape = 0; shape < 3; shape++) {
        fill_ref(ref, 2048, shape, 40 + (uint64_t)shape);
        for (int j = 0; j < 3; j++) {
            check_search(ref, 2048, level_counts[j], 0.0, shapes[shape]);
            check_search(ref, 2048, level_counts[j], 0.0001, shapes[shape]);
        }
    }
}
