/* merge.c - `qcal merge`: the statistics files of K shares folded into one */
#include "merge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "pass.h"
#include "recipe.h"
#include "results.h"

/* The shares' files by share index, known from their headers; each is read whole only while
 * it is folded, so memory holds two files at a time, whatever K. */
typedef struct shares {
    const char **paths;  /* by share index */
    size_t k;
} shares;

/* Places file `path` (header r) at its share index; refuses another count, a repeated share. */
static int place_share(shares *s, const char *path, const results *r, qerror *e)
{
    if (!r->share_count)
        return qerror_set(e, QERR_DATA, "%s: expected the statistics of one share (made by `qcal "
                          "observe --shard i/K`), found a file without share_index/share_count",
                          path);
    if (r->share_count != s->k)
        return qerror_set(e, QERR_DATA, "%s: expected share i/%zu like the others, found share "
                          "%llu/%llu", path, s->k, (unsigned long long)r->share_index,
                          (unsigned long long)r->share_count);
    if (s->paths[r->share_index])
        return qerror_set(e, QERR_DATA, "%s: share %llu/%zu is also %s", path,
                          (unsigned long long)r->share_index, s->k, s->paths[r->share_index]);
    s->paths[r->share_index] = path;
    return 0;
}

/* Share `b` must come from the same recipe on the same dump as the first. */
static int same_origin(const results *a, const char *a_path, const results *b, const char *b_path,
                       qerror *e)
{
    if (strcmp(a->recipe, b->recipe) || !results_same_source(a->source, b->source) ||
        a->dump_has_weights != b->dump_has_weights)
        return qerror_set(e, QERR_DATA, "%s: expected recipe '%s' on '%s' as in %s, found recipe "
                          "'%s' on '%s'", b_path, a->recipe, a->source, a_path, b->recipe,
                          b->source);
    return 0;
}

/* Each file at its share index, once the recipe and dump are known to be the first's (else a
 * share of another recipe at a taken index was called a repeat of that share). */
static int order_shares(const char *const *paths, size_t n, shares *s, qerror *e)
{
    int rc = 0;
    results *first = NULL;
    for (size_t i = 0; i < n && !rc; i++) {
        results *head = NULL;
        rc = results_read_header(paths[i], &head, e);
        if (!rc && i == 0) {
            s->k = head->share_count ? (size_t)head->share_count : 1;
            if (!(s->paths = calloc(s->k, sizeof *s->paths)))
                rc = qerror_set(e, QERR_SOFTWARE, "out of memory");
        }
        if (!rc && i > 0)
            rc = same_origin(first, paths[0], head, paths[i], e);
        if (!rc)
            rc = place_share(s, paths[i], head, e);
        if (!rc && i == 0 && n != s->k)
            rc = qerror_set(e, QERR_USAGE, "merge: expected the %zu shares of %s, found %zu "
                            "file%s", s->k, paths[0], n, n == 1 ? "" : "s");
        if (i == 0)
            first = head;
        else
            results_free(head);
    }
    results_free(first);
    return rc;
}

/* Share `b` must come from the same recipe on the same dump as the first, with as many states. */
static int check_alike(const results *a, const char *a_path, const results *b, const char *b_path,
                       qerror *e)
{
    if (same_origin(a, a_path, b, b_path, e))
        return -1;
    if (b->n_stats != a->n_stats || b->n_infos != a->n_infos)
        return qerror_set(e, QERR_DATA, "%s: expected %zu saved states as in %s, found %zu",
                          b_path, a->n_stats, a_path, b->n_stats);
    return 0;
}

/* Folds saved state st of r into observer h of p. */
static int fold_saved(const results *r, const result_stat *st, pass *p, int h, qerror *e)
{
    hstat *loaded;
    const qcal_stat *state = results_stat_view(r, st, &loaded, e);
    int rc = !state || pass_fold(p, h, state, 0, e);
    hstat_free(loaded);
    return rc ? -1 : 0;
}

/* Whether saved states a (of ra) and b (of rb) are the same; -1 when one cannot be read. */
static int same_saved(const results *ra, const result_stat *a, const results *rb,
                      const result_stat *b, qerror *e)
{
    hstat *loaded_a, *loaded_b = NULL;
    const qcal_stat *x = results_stat_view(ra, a, &loaded_a, e);
    const qcal_stat *y = x ? results_stat_view(rb, b, &loaded_b, e) : NULL;
    int same = x && y ? hstat_equal(x, y) : -1;
    hstat_free(loaded_a);
    hstat_free(loaded_b);
    return same;
}

/* The state of `st` (of the first share) in share file `r`, checked to be the same entry. */
static const result_stat *state_in(results *r, const char *path, const results *first,
                                   const result_stat *st, const char *first_path, qerror *e)
{
    const result_stat *o = results_find_stat(r, st->tensor, st->observer, st->params);
    int same = 1;
    if (!o)
        qerror_set(e, QERR_DATA, "%s: expected a state of observer '%s' (%s) on tensor '%s' as "
                   "in %s, found none", path, st->observer, st->params, st->tensor, first_path);
    else if (o->on_share != st->on_share || o->batch_size != st->batch_size ||
             o->axis != st->axis || o->max_rows != st->max_rows)
        qerror_set(e, QERR_DATA, "%s: observer '%s' on tensor '%s': expected it observed as in "
                   "%s (share, batch size, axis, sample limit), found it otherwise", path,
                   st->observer, st->tensor, first_path);
    else if (!st->on_share && (same = same_saved(r, o, first, st, e)) < 0)
        qerror_prefix(e, "%s", path);
    else if (!same)
        qerror_set(e, QERR_DATA, "%s: observer '%s' on tensor '%s': expected the same whole "
                   "state as in %s (loaded from the same statistics), found another", path,
                   st->observer, st->tensor, first_path);
    else
        return o;
    return NULL;
}

/* The observer of `st` declared on the description-only dump d: handle, or -1. */
static int declare(pass *p, dump *d, registry *reg, const result_stat *st, const char *path,
                   qerror *e)
{
    const reg_observer *obs = registry_observer(reg, st->observer);
    if (!obs)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': observer '%s' is not loaded (give its "
                          "plugin with --plugin-path)", path, st->tensor, st->observer);
    char text[1024];
    snprintf(text, sizeof text, "%s", st->params);
    param_input in[64];
    size_t n_in = 0;
    for (char *tok = strtok(text, " "); tok && n_in < 64; tok = strtok(NULL, " "))
        if (params_parse_kv(tok, &in[n_in++], e))
            return -1;
    qcal_value values[64];
    char what[128];
    snprintf(what, sizeof what, "observer '%s'", st->observer);
    if (obs->desc.n_params > 64 ||
        params_resolve(what, obs->desc.params, obs->desc.n_params, in, n_in, values, e))
        return qerror_prefix(e, "%s: tensor '%s'", path, st->tensor);
    long t = dump_find(d, st->tensor);
    if (t < 0)
        return qerror_set(e, QERR_DATA, "%s: expected a description of tensor '%s' under "
                          "/statistics, found none", path, st->tensor);
    int h = pass_observe(p, (size_t)t, obs, values, st->batch_size ? st->axis : PASS_AXIS_DEFAULT, e);
    if (h >= 0 && st->batch_size)
        pass_set_batch_size(p, h, st->batch_size);
    return h;
}

/* Keeps observer h's state (the shares folded so far) serialized in acc, as state st, and
 * drops it from the pass: merging holds one live state at a time, however many tensors (acc
 * keeps what its memory budget does not hold in a temporary file). */
static int stash(results *acc, const result_stat *st, pass *p, int h, qerror *e)
{
    hstat *state;
    if (pass_serialize(p, h, &state, e) ||
        results_add_stat(acc, st->tensor, st->observer, st->params, state, e))
        return -1;
    pass_release(p, h);
    return 0;
}

/* Brings observer h's state back from acc (stash). */
static int unstash(results *acc, const result_stat *st, pass *p, int h, qerror *e)
{
    const result_stat *kept = results_find_stat(acc, st->tensor, st->observer, st->params);
    if (!kept)
        return qerror_set(e, QERR_SOFTWARE, "merge: lost the state of observer '%s' on tensor "
                          "'%s'", st->observer, st->tensor);
    hstat *loaded;
    const qcal_stat *state = results_stat_view(acc, kept, &loaded, e);
    int rc = !state || pass_fold(p, h, state, 1, e);
    hstat_free(loaded);
    return rc ? -1 : 0;
}

/* The states of the first share: the observers of its share states declared (handles[i],
 * -1 for whole states) and the first share's states stashed in acc. */
static int start_merge(const results *first, const char *path, pass *p, dump *d, registry *reg,
                       int *handles, results *acc, qerror *e)
{
    for (size_t i = 0; i < first->n_stats; i++) {
        const result_stat *st = &first->stats[i];
        handles[i] = -1;
        if (!st->on_share)
            continue;
        if ((handles[i] = declare(p, d, reg, st, path, e)) < 0)
            return -1;
        if (fold_saved(first, st, p, handles[i], e) || stash(acc, st, p, handles[i], e))
            return qerror_prefix(e, "%s", path);
    }
    return 0;
}

/* Share file `path` folded into the states in acc (after checking it against the first). */
static int fold_share(const results *first, const char *first_path, const char *path, pass *p,
                      const int *handles, results *acc, qerror *e)
{
    results *r = NULL;
    int rc = results_read(path, &r, e) || check_alike(first, first_path, r, path, e);
    for (size_t i = 0; !rc && i < first->n_stats; i++) {
        const result_stat *st = &first->stats[i], *o = state_in(r, path, first, st, first_path, e);
        if (!o)
            rc = -1;
        else if (handles[i] >= 0 &&
                 (unstash(acc, st, p, handles[i], e) || fold_saved(r, o, p, handles[i], e) ||
                  stash(acc, st, p, handles[i], e)))
            rc = qerror_prefix(e, "%s", path);
    }
    results_free(r);
    return rc ? -1 : 0;
}

/* A copy of saved state st of r. */
static int copy_saved(const results *r, const result_stat *st, hstat **out, qerror *e)
{
    hstat *loaded;
    const qcal_stat *state = results_stat_view(r, st, &loaded, e);
    if (loaded) /* already a copy of its own */
        return *out = loaded, 0;
    return state ? hstat_copy(state, out, e) : -1;
}

/* The merged statistics, in the first share's order: folded share states (from acc), whole
 * states kept. */
static int collect(const results *first, results *acc, const int *handles, results *out,
                   qerror *e)
{
    for (size_t i = 0; i < first->n_stats; i++) {
        const result_stat *st = &first->stats[i], *from = st;
        if (handles[i] >= 0 &&
            !(from = results_find_stat(acc, st->tensor, st->observer, st->params)))
            return qerror_set(e, QERR_SOFTWARE, "merge: lost the state of observer '%s' on "
                              "tensor '%s'", st->observer, st->tensor);
        hstat *state = NULL;
        if (copy_saved(handles[i] >= 0 ? acc : first, from, &state, e))
            return -1;
        if (results_add_stat(out, st->tensor, st->observer, st->params, state, e))
            return -1;
        result_stat *kept = results_find_stat(out, st->tensor, st->observer, st->params);
        kept->batch_size = st->batch_size, kept->axis = st->axis, kept->max_rows = st->max_rows;
    }
    for (size_t i = 0; i < first->n_infos; i++)
        if (results_add_info(out, &first->infos[i], e))
            return -1;
    return 0;
}

static int merge_all(const shares *s, const results *first, registry *reg, results *out,
                     qerror *e)
{
    dump *d = NULL;
    if (recipe_saved_dump(first, s->paths[0], &d, e))
        return -1;
    pass *p = pass_new(d);
    int *handles = calloc(first->n_stats ? first->n_stats : 1, sizeof *handles);
    results *acc = results_new("", ""); /* the shares folded so far */
    int rc = p && handles && acc ? 0 : qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (!rc)
        rc = start_merge(first, s->paths[0], p, d, reg, handles, acc, e);
    for (size_t i = 1; !rc && i < s->k; i++) /* share order */
        rc = fold_share(first, s->paths[0], s->paths[i], p, handles, acc, e);
    if (!rc)
        rc = collect(first, acc, handles, out, e);
    results_free(acc);
    free(handles);
    pass_free(p);
    dump_close(d);
    return rc;
}

int stats_merge(const char *const *paths, size_t n, registry *reg, const char *output, int force,
                qerror *e)
{
    if (n == 0)
        return qerror_set(e, QERR_USAGE, "merge: expected the statistics files of every share");
    shares s = {0};
    results *first = NULL, *out = NULL;
    int rc = order_shares(paths, n, &s, e) || results_read(s.paths[0], &first, e);
    if (!rc && !(out = results_new(first->recipe, first->source)))
        rc = qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (!rc) {
        out->dump_has_weights = first->dump_has_weights;
        rc = merge_all(&s, first, reg, out, e) || results_write(out, output, force, e);
    }
    results_free(out);
    results_free(first);
    free(s.paths);
    return rc ? -1 : 0;
}
