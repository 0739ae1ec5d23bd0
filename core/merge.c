/* merge.c - `qcal merge`: the statistics files of K shares folded into one */
#include "merge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "pass.h"
#include "recipe.h"
#include "results.h"

typedef struct shares {
    const char **paths;  /* by share index */
    results **files;     /* by share index */
    size_t k;
} shares;

static void shares_free(shares *s)
{
    for (size_t i = 0; s->files && i < s->k; i++)
        results_free(s->files[i]);
    free(s->files);
    free(s->paths);
}

/* Places file `r` at its share index; refuses another count, a repeated or missing share. */
static int place_share(shares *s, const char *path, results *r, qerror *e)
{
    if (!r->share_count)
        return qerror_set(e, QERR_DATA, "%s: expected the statistics of one share (made by `qcal "
                          "observe --shard i/K`), found a file without share_index/share_count",
                          path);
    if (r->share_count != s->k)
        return qerror_set(e, QERR_DATA, "%s: expected share i/%zu like the others, found share "
                          "%llu/%llu", path, s->k, (unsigned long long)r->share_index,
                          (unsigned long long)r->share_count);
    if (s->files[r->share_index])
        return qerror_set(e, QERR_DATA, "%s: share %llu/%zu is also %s", path,
                          (unsigned long long)r->share_index, s->k, s->paths[r->share_index]);
    s->files[r->share_index] = r;
    s->paths[r->share_index] = path;
    return 0;
}

static int read_shares(const char *const *paths, size_t n, shares *s, qerror *e)
{
    results *first = NULL;
    if (results_read(paths[0], &first, e))
        return -1;
    s->k = first->share_count ? (size_t)first->share_count : 1;
    s->files = calloc(s->k, sizeof *s->files);
    s->paths = calloc(s->k, sizeof *s->paths);
    if (!s->files || !s->paths) {
        results_free(first);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    if (place_share(s, paths[0], first, e)) {
        results_free(first);
        return -1;
    }
    if (n != s->k)
        return qerror_set(e, QERR_USAGE, "merge: expected the %zu shares of %s, found %zu file%s",
                          s->k, paths[0], n, n == 1 ? "" : "s");
    for (size_t i = 1; i < n; i++) {
        results *r = NULL;
        if (results_read(paths[i], &r, e))
            return -1;
        if (place_share(s, paths[i], r, e)) {
            results_free(r);
            return -1;
        }
    }
    return 0;
}

/* Every share must come from the same recipe on the same dump, with the same states. */
static int check_alike(const shares *s, qerror *e)
{
    const results *a = s->files[0];
    for (size_t i = 1; i < s->k; i++) {
        const results *b = s->files[i];
        if (strcmp(a->recipe, b->recipe) || strcmp(a->source, b->source) ||
            a->dump_has_weights != b->dump_has_weights)
            return qerror_set(e, QERR_DATA, "%s: expected recipe '%s' on '%s' as in %s, found "
                              "recipe '%s' on '%s'", s->paths[i], a->recipe, a->source,
                              s->paths[0], b->recipe, b->source);
        if (b->n_stats != a->n_stats || b->n_infos != a->n_infos)
            return qerror_set(e, QERR_DATA, "%s: expected %zu saved states as in %s, found %zu",
                              s->paths[i], a->n_stats, s->paths[0], b->n_stats);
    }
    return 0;
}

/* The state of `st` in share i, checked to be the same kind of entry. */
static const result_stat *state_in(const shares *s, size_t i, const result_stat *st, qerror *e)
{
    const result_stat *o = results_find_stat(s->files[i], st->tensor, st->observer, st->params);
    if (!o)
        qerror_set(e, QERR_DATA, "%s: expected a state of observer '%s' (%s) on tensor '%s' as "
                   "in %s, found none", s->paths[i], st->observer, st->params, st->tensor,
                   s->paths[0]);
    else if (o->on_share != st->on_share || o->batch_size != st->batch_size || o->axis != st->axis)
        qerror_set(e, QERR_DATA, "%s: observer '%s' on tensor '%s': expected it observed as in "
                   "%s (share, batch size, axis), found it otherwise", s->paths[i], st->observer,
                   st->tensor, s->paths[0]);
    else if (!st->on_share && !hstat_equal(&o->state->view, &st->state->view))
        qerror_set(e, QERR_DATA, "%s: observer '%s' on tensor '%s': expected the same whole "
                   "state as in %s (loaded from the same statistics), found another", s->paths[i],
                   st->observer, st->tensor, s->paths[0]);
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

/* The merged state of `st`: the shares folded in share order (or the agreed whole state). */
static int merge_one(const shares *s, pass *p, dump *d, registry *reg, const result_stat *st,
                     results *out, qerror *e)
{
    const result_stat *per[s->k];
    for (size_t i = 0; i < s->k; i++)
        if (!(per[i] = state_in(s, i, st, e)))
            return -1;
    hstat *state = NULL;
    if (st->on_share) {
        int h = declare(p, d, reg, st, s->paths[0], e);
        if (h < 0)
            return -1;
        for (size_t i = 0; i < s->k; i++)
            if (pass_fold(p, h, &per[i]->state->view, 0, e))
                return qerror_prefix(e, "%s", s->paths[i]);
        if (pass_serialize(p, h, &state, e))
            return -1;
    } else if (hstat_copy(&st->state->view, &state, e)) {
        return -1;
    }
    if (results_add_stat(out, st->tensor, st->observer, st->params, state, e))
        return -1;
    result_stat *kept = results_find_stat(out, st->tensor, st->observer, st->params);
    kept->batch_size = st->batch_size, kept->axis = st->axis;
    return 0;
}

static int merge_all(const shares *s, registry *reg, results *out, qerror *e)
{
    const results *first = s->files[0];
    dump *d = NULL;
    if (recipe_saved_dump(first, s->paths[0], &d, e))
        return -1;
    pass *p = pass_new(d);
    int rc = p ? 0 : qerror_set(e, QERR_SOFTWARE, "out of memory");
    for (size_t i = 0; !rc && i < first->n_stats; i++)
        rc = merge_one(s, p, d, reg, &first->stats[i], out, e);
    for (size_t i = 0; !rc && i < first->n_infos; i++)
        rc = results_add_info(out, &first->infos[i], e);
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
    int rc = read_shares(paths, n, &s, e) || check_alike(&s, e);
    results *out = rc ? NULL : results_new(s.files[0]->recipe, s.files[0]->source);
    if (!rc && !out)
        rc = qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (!rc)
        out->dump_has_weights = s.files[0]->dump_has_weights;
    if (!rc)
        rc = merge_all(&s, reg, out, e) || results_write(out, output, force, e);
    results_free(out);
    shares_free(&s);
    return rc ? -1 : 0;
}
