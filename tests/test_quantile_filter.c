/* test_quantile_filter.c - batch_stats' quantile filter (plugins/batch_stats.c, included):
 * whatever threshold it is given, it either declines or gives numpy's linear quantile exactly.
 * The observer's own thresholds come from a sample and land far beyond the ranks it reads, so
 * the edges of its rule (ranks at the end of a run of ties, a threshold short of them) are
 * reached here by handing it every threshold there is. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../plugins/batch_stats.c"
#include "fixtures.h"
#include "references.h"

/* Every distinct value of v (and one beyond each end) as the threshold, for each q: the
 * result is declined or exact; returns how many were not declined. */
static int check_all_thresholds(const float *v, size_t n, const double *qs, size_t n_q,
                                const char *what)
{
    float *sorted = malloc(n * sizeof *sorted), *keep = malloc(keep_size(n) * sizeof *keep);
    memcpy(sorted, v, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_f); /* batch_stats.c's */
    int answered = 0;
    for (size_t k = 0; k < n_q; k++) {
        float want = ref_quantile_sorted(sorted, n, qs[k]);
        for (size_t j = 0; j <= n + 1; j++) {
            if (j > 0 && j < n && sorted[j] == sorted[j - 1])
                continue;
            float t = j == n ? sorted[n - 1] + 1 : j == n + 1 ? sorted[0] - 1 : sorted[j], got;
            if (!quantile_beyond(v, n, qs[k], t, keep, &got))
                continue;
            answered++;
            cr_expect(got == want, "%s, q %g, threshold %g: %.9g, numpy says %.9g", what,
                      qs[k], t, got, want);
        }
    }
    free(sorted), free(keep);
    return answered;
}

Test(quantile_filter, every_threshold_declines_or_is_exact)
{
    enum { N = 4000 };
    static float v[N];
    uint64_t seed = 5;
    static const double qs[] = {0, 1e-4, 0.002, 0.0101, 0.25, 0.5, 0.75, 0.9899, 0.998, 1};
    for (int shape = 0; shape < 4; shape++) {
        for (int i = 0; i < N; i++) {
            double u = fx_rand_uniform(&seed);
            v[i] = (float)(u * 100);
            if (shape == 1) v[i] = floorf(v[i] / 10);                     /* 10 values: ties */
            if (shape == 2) v[i] = u < 0.3 ? 0.0f : v[i];                 /* a spike at 0 */
            if (shape == 3) v[i] = i < 3 ? -1.0f : i > N - 5 ? 7.0f : 2.0f; /* runs at the ends */
        }
        static const char *const names[] = {"uniform", "ten values", "spike", "runs"};
        int answered = check_all_thresholds(v, N, qs, sizeof qs / sizeof *qs, names[shape]);
        cr_expect_gt(answered, 0, "%s: the filter never answered", names[shape]);
    }
}

/* Rank i at the last tie with i + 1 beyond the ties: the tie run does not reach rank i + 1,
 * so the filter must decline or read rank i + 1 from the kept values, not take t for it. */
Test(quantile_filter, quantile_at_the_end_of_a_tie_run)
{
    enum { N = 1000 };
    static float v[N];
    for (int i = 0; i < N; i++)
        v[i] = i < 10 ? 0.0f : (float)i; /* ranks 0..9 are 0, rank 10 is 10 */
    double q = 9.5 / (N - 1);            /* i = 9, f = 1/2: 0 + (10 - 0) / 2 */
    float keep[N + FILTER_BLOCK], got;
    if (quantile_beyond(v, N, q, 0.0f, keep, &got))
        cr_expect_eq(got, 5.0f, "%g", got);
    cr_expect(quantile_beyond(v, N, q, 10.0f, keep, &got) && got == 5.0f, "t = 10: %g", got);
    for (int i = 0; i < N; i++)
        v[i] = -v[i];                    /* the same at the top */
    q = 1 - q;
    if (quantile_beyond(v, N, q, 0.0f, keep, &got))
        cr_expect_eq(got, -5.0f, "%g", got);
    cr_expect(quantile_beyond(v, N, q, -10.0f, keep, &got) && got == -5.0f, "t = -10: %g", got);
}
