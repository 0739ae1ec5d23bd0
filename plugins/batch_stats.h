/* batch_stats.h - the "qcal.batch_stats" statistic, shared by the observer and the estimator.
 *
 * "qcal.batch_stats" v1, channels C (1 per tensor): one row per unit (a sample, or a batch of
 * batch_size samples), in unit order:
 *     min, max, abs_max f32[U, C]                   extrema of the unit's finite values
 *     quantile_lo, quantile_hi f32[U, C]            quantiles q and 1 - q of x   } only with
 *     abs_quantile_lo, abs_quantile_hi f32[U, C]    quantiles q and 1 - q of |x| } quantiles=true
 *     unit u64[U]                                   unit index (sample or batch number)
 *     outlier_prob f64[1]                           q
 *     unit_rows u64[1]                              samples per unit
 *     nonfinite u64[2]                              NaN, +-Inf values seen (ignored)
 * A unit without a finite value in a channel has NaN in every array for that channel.
 * Quantiles interpolate linearly between order statistics (numpy's default). */
#ifndef QCAL_PLUGINS_BATCH_STATS_H
#define QCAL_PLUGINS_BATCH_STATS_H

#define BATCH_STATS_KIND "qcal.batch_stats"

enum { S_MIN, S_MAX, S_ABS_MAX, S_Q_LO, S_Q_HI, S_ABS_Q_LO, S_ABS_Q_HI, N_STATS };
#define N_EXTREMA 3 /* S_MIN .. S_ABS_MAX: always present */

extern const char *const batch_stat_names[N_STATS];
extern const qcal_estimator batch_quantile;

#endif
