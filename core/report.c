/* report.c - the HTML report (see report.h) */
#include "report.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "dump.h"
#include "params.h"
#include "recipe.h"
#include "report_page.h"

/* One tensor's histogram as drawn: `bins` counts from lo in steps of width. */
typedef struct display_hist {
    double lo, width;
    int abs;
    uint64_t *counts;
    size_t bins;
} display_hist;

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* A string from the results file as JSON, which must be UTF-8: where it is not (a damaged
 * file, or names written in another encoding), its bytes beyond ASCII show as '?'. */
static json_t *text(const char *s)
{
    json_t *j = json_string(s);
    if (j || !s)
        return j;
    char *ascii = strdup(s);
    for (char *p = ascii; p && *p; p++)
        *p = (unsigned char)*p < 0x80 ? *p : '?';
    j = ascii ? json_string(ascii) : NULL;
    free(ascii);
    return j;
}

static int set(json_t *obj, const char *key, json_t *value)
{
    return !value || json_object_set_new(obj, key, value) != 0;
}

/* ---- histograms ------------------------------------------------------------------------------ */

static const void *array_of(const hstat *st, const char *name, int dtype, uint64_t *n)
{
    const qcal_array *a = hstat_find(&st->view, name);
    if (!a || (int)a->dtype != dtype)
        return NULL;
    *n = hstat_array_count(a);
    return a->data;
}

/* A qcal.histogram statistic, its empty ends trimmed, merged into at most `bins` bins. */
static int to_display(const hstat *st, int bins, display_hist *out)
{
    uint64_t n = 0, one = 0;
    const uint64_t *counts = array_of(st, "counts", QCAL_DTYPE_U64, &n);
    const double *lo = array_of(st, "lo", QCAL_DTYPE_F64, &one), *width = array_of(st, "width", QCAL_DTYPE_F64, &one);
    const uint64_t *abs = array_of(st, "abs", QCAL_DTYPE_U64, &one);
    if (!counts || !lo || !width || !abs || n == 0)
        return -1;
    uint64_t first = 0, last = n;
    while (first < n && !counts[first])
        first++;
    while (last > first && !counts[last - 1])
        last--;
    if (first == last) /* no finite value: one empty bin */
        first = 0, last = 1;
    uint64_t group = (last - first + (uint64_t)bins - 1) / (uint64_t)bins;
    out->bins = (size_t)((last - first + group - 1) / group);
    out->counts = calloc(out->bins, sizeof *out->counts);
    if (!out->counts)
        return -1;
    for (uint64_t i = first; i < last; i++)
        out->counts[(i - first) / group] += counts[i];
    out->lo = *lo + (double)first * *width, out->width = *width * (double)group, out->abs = *abs != 0;
    return 0;
}

static int is_activation(const result_tensor *t) { return !dump_is_weight_name(t->tensor); }

/* The histogram observer with its defaults (2048 bins of x). */
static int default_histogram(const registry *reg, const reg_observer **obs, qcal_value *values,
                             qerror *e)
{
    *obs = registry_observer(reg, "histogram");
    if (!*obs)
        return qerror_set(e, QERR_UNAVAILABLE, "report: the histogram observer is not loaded "
                          "(is the qcal-histogram plugin installed?)");
    return params_resolve("observer 'histogram'", (*obs)->desc.params, (*obs)->desc.n_params,
                          NULL, 0, values, e);
}

/* Declares, per activation of r found in d, the histogram observer; handles[i] = -1 if not. */
static int declare_from_dump(pass *p, dump *d, const results *r, const registry *reg,
                             int *handles, qerror *e)
{
    const reg_observer *obs;
    qcal_value values[16];
    if (default_histogram(reg, &obs, values, e))
        return -1;
    for (size_t i = 0; i < r->n_tensors; i++) {
        long ti = is_activation(&r->tensors[i]) ? dump_find(d, r->tensors[i].tensor) : -1;
        if (is_activation(&r->tensors[i]) && ti < 0) /* another dump: histograms of nothing */
            return qerror_set(e, QERR_DATA, "%s: expected tensor '%s' (the results hold it), "
                              "found none", dump_source(d), r->tensors[i].tensor);
        handles[i] = ti < 0 ? -1 : pass_observe(p, (size_t)ti, obs, values, PASS_AXIS_DEFAULT, e);
        if (ti >= 0 && handles[i] < 0)
            return -1;
    }
    return 0;
}

static const result_stat *saved_histogram(const results *r, const char *tensor)
{
    for (size_t i = 0; i < r->n_stats; i++)
        if (!strcmp(r->stats[i].tensor, tensor) && (!strcmp(r->stats[i].observer, "histogram") ||
                                                    !strcmp(r->stats[i].observer, "fixed_histogram")))
            return &r->stats[i];
    return NULL;
}

/* The observer of a saved state re-declared with the parameters it was saved with. */
static int declare_saved(pass *p, dump *d, const registry *reg, const result_stat *st)
{
    const reg_observer *obs = registry_observer(reg, st->observer);
    long ti = dump_find(d, st->tensor);
    char text[1024];
    snprintf(text, sizeof text, "%s", st->params ? st->params : "");
    param_input in[16];
    size_t n_in = 0;
    qcal_value values[16];
    qerror e = {0};
    for (char *tok = strtok(text, " "); tok && n_in < 16; tok = strtok(NULL, " "))
        if (params_parse_kv(tok, &in[n_in], &e) == 0)
            n_in++;
    if (!obs || ti < 0 || obs->desc.n_params > 16 ||
        params_resolve(st->observer, obs->desc.params, obs->desc.n_params, in, n_in, values, &e))
        return -1;
    return pass_observe(p, (size_t)ti, obs, values, PASS_AXIS_DEFAULT, &e);
}

static int declare_from_saved(pass *p, dump *d, const results *r, const registry *reg, int *handles)
{
    int any = 0;
    for (size_t i = 0; i < r->n_tensors; i++) {
        const result_stat *st = saved_histogram(r, r->tensors[i].tensor);
        handles[i] = st ? declare_saved(p, d, reg, st) : -1;
        any |= handles[i] >= 0;
    }
    return any;
}

/* hists[i] for every tensor of r (counts NULL where none could be had). */
/* The dump must be the one the results came from (by its file's name, as shares are), with
 * the shapes the results saw: histograms of other data against these ranges would mislead. */
static int same_dump(const results *r, const dump *d, qerror *e)
{
    if (!results_same_source(r->source, dump_source(d)))
        return qerror_set(e, QERR_USAGE, "report: expected the dump of the results (%s), found %s",
                          r->source, dump_source(d));
    for (size_t i = 0; i < r->n_infos; i++) {
        long t = dump_find(d, r->infos[i].tensor);
        const dump_tensor *dt = t < 0 ? NULL : dump_get(d, (size_t)t);
        if (dt && (dt->rank != r->infos[i].rank ||
                   memcmp(dt->dims, r->infos[i].shape, (size_t)dt->rank * sizeof *dt->dims)))
            return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected the shape the results "
                              "saw, found another", dump_source(d), dt->name);
    }
    return 0;
}

static int collect_histograms(const report_options *o, const results *r, display_hist *hists,
                              qerror *e)
{
    dump *d = NULL;
    int *handles = calloc(r->n_tensors ? r->n_tensors : 1, sizeof *handles);
    if (!handles)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    int rc = 0, run = 0;
    pass *p = NULL;
    if (o->dump_path) {
        rc = dump_open(o->dump_path, &d, e) || same_dump(r, d, e) || !(p = pass_new(d)) ||
             declare_from_dump(p, d, r, o->reg, handles, e) || pass_run(p, &o->pass, e);
        run = !rc;
    } else if (r->n_infos && recipe_saved_dump(r, o->results_path, &d, e) == 0 && (p = pass_new(d))) {
        qerror ignored = {0};
        run = declare_from_saved(p, d, r, o->reg, handles) &&
              pass_load(p, r, o->results_path, NULL, &ignored) == 0;
    }
    for (size_t i = 0; run && i < r->n_tensors; i++) {
        hstat *st = NULL;
        qerror ignored = {0};
        if (handles[i] >= 0 && pass_finalize(p, handles[i], &st, &ignored) == 0)
            to_display(st, o->display_bins > 0 ? o->display_bins : 160, &hists[i]);
        hstat_free(st);
    }
    pass_free(p);
    dump_close(d);
    free(handles);
    return rc ? -1 : 0;
}

/* ---- the data ------------------------------------------------------------------------------- */

static json_t *hist_json(const display_hist *h)
{
    if (!h->counts)
        return json_null();
    json_t *o = json_object(), *c = json_array();
    for (size_t i = 0; c && i < h->bins; i++)
        if (json_array_append_new(c, json_integer((json_int_t)h->counts[i])))
            json_decref(c), c = NULL;
    if (!o || set(o, "lo", num(h->lo)) || set(o, "width", num(h->width)) ||
        set(o, "abs", json_boolean(h->abs)) || set(o, "counts", c)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *candidates_json(const result_candidates *c)
{
    json_t *list = json_array();
    for (uint64_t k = 0; c && list && k < c->n; k++) {
        json_t *o = json_object();
        if (!o || set(o, "method", text(c->method[k])) || set(o, "lo", num(c->lo[k])) ||
            set(o, "hi", num(c->hi[k])) || set(o, "mse", num(c->mse[k])) ||
            set(o, "sqnr_db", num(c->sqnr_db[k])) || set(o, "cosine", num(c->cosine[k])) ||
            set(o, "layer_error", num(c->layer_error[k])) || json_array_append_new(list, o))
            json_decref(list), list = NULL;
    }
    return list;
}

static json_t *tensor_json(const results *r, const result_tensor *t, const display_hist *h)
{
    const result_candidates *c = results_find_candidates(r, t->tensor);
    char scheme[48], gran[32];
    result_scheme_text(&t->spec, scheme, sizeof scheme);
    snprintf(gran, sizeof gran, t->channels > 1 ? "per channel (%llu)" : "per tensor",
             (unsigned long long)t->channels);
    double lo, hi;
    result_overall_range(t, &lo, &hi);
    json_t *o = json_object();
    int bad = !o || set(o, "name", text(t->tensor)) || set(o, "method", text(t->method)) ||
              set(o, "scheme", text(scheme)) || set(o, "granularity", text(gran)) ||
              set(o, "lo", num(lo)) || set(o, "hi", num(hi)) || set(o, "scale", num(t->scale[0])) ||
              set(o, "zp", json_integer(t->zero_point[0])) ||
              set(o, "mse", t->has_metrics ? num(t->mse) : json_null()) ||
              set(o, "sqnr", t->has_metrics ? num(t->sqnr_db) : json_null()) ||
              set(o, "note", t->note ? text(t->note) : json_null()) ||
              set(o, "hist", hist_json(h)) || set(o, "cands", candidates_json(c)) ||
              set(o, "chosen", json_integer(c ? c->chosen : -1)) ||
              set(o, "criterion", text(c ? c->criterion : "mse"));
    if (bad)
        json_decref(o);
    return bad ? NULL : o;
}

static json_t *report_json(const results *r, const display_hist *hists)
{
    json_t *root = json_object(), *list = json_array();
    for (size_t i = 0; list && i < r->n_tensors; i++)
        if (json_array_append_new(list, tensor_json(r, &r->tensors[i], &hists[i])))
            json_decref(list), list = NULL;
    if (!root || set(root, "recipe", text(r->recipe)) ||
        set(root, "source", text(r->source)) || set(root, "created", text(r->created)) ||
        set(root, "qcal_version", text(r->qcal_version)) || set(root, "tensors", list)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* The page is kept as short strings (ISO C's limit on one literal is 4095 characters). */
static void put_lines(const char *const *lines, FILE *out)
{
    for (; *lines; lines++)
        fputs(*lines, out);
}

/* Writes JSON text into the page's script with every '<' as \u003c (it can only be inside a
 * string there): no "</script>" can close the data block early, and no "<!--" followed by
 * "<script" can switch the HTML parser into the state where "</script>" no longer closes it
 * (a tensor named so emptied the page). */
static int put_script_text(const char *buffer, size_t size, void *data)
{
    FILE *out = data;
    for (size_t start = 0, i = 0; i <= size; i++) {
        if (i < size && buffer[i] != '<')
            continue;
        if (fwrite(buffer + start, 1, i - start, out) != i - start ||
            (i < size && fputs("\\u003c", out) < 0))
            return -1;
        start = i + 1;
    }
    return 0;
}

int report_write(const report_options *o, FILE *out, qerror *e)
{
    results *r;
    if (results_read(o->results_path, &r, e))
        return -1;
    if (!r->n_tensors) { /* a page of nothing, from statistics-only files (observe, merge) */
        qerror_set(e, QERR_DATA, "%s: expected calibration results, found none%s",
                   o->results_path, results_empty_hint(r));
        results_free(r);
        return -1;
    }
    display_hist *hists = calloc(r->n_tensors ? r->n_tensors : 1, sizeof *hists);
    int rc = !hists ? qerror_set(e, QERR_SOFTWARE, "out of memory") : collect_histograms(o, r, hists, e);
    json_t *root = rc ? NULL : report_json(r, hists);
    if (!rc && !root)
        rc = qerror_set(e, QERR_SOFTWARE, "out of memory while building the report");
    if (!rc) {
        put_lines(page_head, out);
        rc = json_dump_callback(root, put_script_text, out,
                                JSON_COMPACT | JSON_ESCAPE_SLASH | JSON_REAL_PRECISION(9)) ? -1 : 0;
        put_lines(page_tail, out);
        if (rc)
            qerror_set(e, QERR_IO, "writing the report failed: %s", strerror(errno));
    }
    json_decref(root);
    for (size_t i = 0; hists && i < r->n_tensors; i++)
        free(hists[i].counts);
    free(hists);
    results_free(r);
    return rc;
}
