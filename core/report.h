/* report.h - one self-contained HTML page about a calibration
 *
 * A sortable, filterable, paged table of every tensor (method, scheme, range, scale,
 * zero-point, error), and per tensor (drawn when opened, so 1000s of tensors stay quick) its
 * histogram on a log scale with the chosen range and every candidate marked, and the error of
 * each candidate. Histograms come from the dump when given (one pass of the `histogram`
 * observer), else from the results file's saved histogram states. No network, no external
 * assets: data, styles and script are inside the page. */
#ifndef QCAL_REPORT_H
#define QCAL_REPORT_H

#include <stdio.h>

#include "error.h"
#include "pass.h"
#include "registry.h"
#include "results.h"

typedef struct report_options {
    const char *results_path;
    const char *dump_path;  /* NULL: histograms from the saved statistics, where there are any */
    registry *reg;
    pass_options pass;
    int display_bins;       /* bins drawn per histogram (0: 160) */
} report_options;

int report_write(const report_options *o, FILE *out, qerror *e);

#endif
