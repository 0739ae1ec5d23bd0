/* lua_qcal.c - the `qcal` Lua module: recipes declare work, the C engine does it */
#include "lua_qcal.h"

#include "dist.h"

#include <lauxlib.h>
#include <limits.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hstat.h"
#include "lua_util.h"
#include "params.h"
#include "pass.h"
#include "qmath.h"

#define CTX_KEY "qcal.ctx"
#define PASS_MT "qcal.Pass"
#define STAT_MT "qcal.Stat"
#define GUARD_RANGES 4
#define GUARD_VALUE -0x1.5ca1eb0a5ca1ep+777 /* no estimator writes this by accident */

static char describe_stop; /* its address is the error object that ends a describe run */
static char observe_stop;  /* ... and the one that ends `qcal observe` after its pass */

typedef struct lpass {
    pass *p;
    dump *d; /* the activations, or the weights view */
    int ran;
} lpass;

typedef struct lstat {
    hstat *s;
    char tensor[256]; /* the tensor it was observed on, for messages */
} lstat;

static lua_qcal_ctx *get_ctx(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    lua_qcal_ctx *ctx = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return ctx;
}

/* Raises a Lua error from a host error, after every host resource is released. */
static int raise(lua_State *L, const qerror *e)
{
    get_ctx(L)->raised = *e;
    luaL_where(L, 1);
    lua_pushstring(L, e->msg);
    lua_concat(L, 2);
    return lua_error(L);
}

static lua_qcal_ctx *need_dump(lua_State *L)
{
    lua_qcal_ctx *ctx = get_ctx(L);
    if (!ctx->d)
        luaL_error(L, "no dump is open");
    return ctx;
}

/* ---- qcal.params ---------------------------------------------------------------------- */

static const char *lua_kind(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TBOOLEAN)
        return "boolean";
    if (lua_isinteger(L, idx))
        return "integer";
    if (lua_type(L, idx) == LUA_TNUMBER)
        return "number";
    return "string";
}

static int is_true_word(const char *s) { return !strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "on"); }
static int is_false_word(const char *s) { return !strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "off"); }

/* Pushes the command-line text converted to the type of the default at index def. */
static int push_typed(lua_State *L, int def, const char *key, const char *text, qerror *e)
{
    const char *kind = lua_kind(L, def);
    char *end = NULL;
    if (!strcmp(kind, "boolean")) {
        if (!is_true_word(text) && !is_false_word(text))
            return qerror_set(e, QERR_USAGE, "parameter '%s': expected a boolean, found '%s'", key, text);
        lua_pushboolean(L, is_true_word(text));
    } else if (!strcmp(kind, "integer")) {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (!*text || *end)
            return qerror_set(e, QERR_USAGE, "parameter '%s': expected an integer, found '%s'", key, text);
        if (errno == ERANGE)
            return qerror_set(e, QERR_USAGE, "parameter '%s': expected an integer of at most 19 "
                              "digits, found '%s'", key, text);
        lua_pushinteger(L, (lua_Integer)v);
    } else if (!strcmp(kind, "number")) {
        double v = strtod(text, &end);
        if (!*text || *end || !isfinite(v))
            return qerror_set(e, QERR_USAGE, "parameter '%s': expected a number, found '%s'", key, text);
        lua_pushnumber(L, v);
    } else {
        lua_pushstring(L, text);
    }
    return 0;
}

static void record_param(lua_State *L, lua_qcal_ctx *ctx, const char *key, int val)
{
    if (ctx->n_described == ctx->cap_described)
        return;
    recipe_param *rp = &ctx->described[ctx->n_described++];
    snprintf(rp->name, sizeof rp->name, "%s", key);
    snprintf(rp->type, sizeof rp->type, "%s", lua_kind(L, val));
    if (lua_type(L, val) == LUA_TBOOLEAN)
        snprintf(rp->value, sizeof rp->value, "%s", lua_toboolean(L, val) ? "true" : "false");
    else
        snprintf(rp->value, sizeof rp->value, "%s", lua_tostring(L, val));
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The usage error for a key the recipe's qcal.params table (at 1) does not declare: its names
 * in order, and the closest one suggested. */
static int unknown_recipe_param(lua_State *L, const lua_qcal_ctx *ctx, const char *key)
{
    const char *names[128];
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        if (n < sizeof names / sizeof *names)
            names[n++] = lua_tostring(L, -1); /* the keys stay in the table: no copies needed */
    }
    qsort(names, n, sizeof *names, by_name);
    char what[300];
    snprintf(what, sizeof what, "recipe '%s'", ctx->recipe_name);
    qerror e = {0};
    params_unknown_key(what, names, n, key, &e);
    return raise(L, &e);
}

static int l_params(lua_State *L)
{
    lua_qcal_ctx *ctx = get_ctx(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_newtable(L); /* 2: the result */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "qcal.params: parameter names must be strings");
        int t = lua_type(L, -1);
        if (t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING)
            return luaL_error(L, "qcal.params: default of '%s' must be a boolean, number or string",
                              lua_tostring(L, -2));
        if (ctx->describing)
            record_param(L, ctx, lua_tostring(L, -2), lua_gettop(L));
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, 2);
    }
    if (ctx->describing) {
        lua_pushlightuserdata(L, &describe_stop);
        return lua_error(L);
    }
    for (size_t i = 0; i < ctx->o->n_params; i++) {
        const param_input *in = &ctx->o->params[i];
        lua_getfield(L, 1, in->key);
        if (lua_isnil(L, -1))
            return unknown_recipe_param(L, ctx, in->key);
        qerror e = {0};
        if (push_typed(L, lua_gettop(L), in->key, in->s, &e)) {
            e.code = QERR_USAGE;
            qerror_prefix(&e, "recipe '%s'", ctx->recipe_name);
            return raise(L, &e);
        }
        lua_setfield(L, 2, in->key);
        lua_pop(L, 1);
    }
    return 1;
}

int lua_qcal_is_stop(lua_State *L, int idx)
{
    void *p = lua_touserdata(L, idx);
    return p == &describe_stop || p == &observe_stop;
}

/* ---- tensors -------------------------------------------------------------------------- */


/* The /weights view of the dump, opened on first use. */
static int opt_bool(lua_State *L, int idx, const char *key, int def);

static dump *weights_dump(lua_State *L)
{
    lua_qcal_ctx *ctx = need_dump(L);
    if (ctx->weights)
        return ctx->weights;
    if (ctx->reestimating) { /* the saved descriptions hold both */
        ctx->weights = ctx->d;
        return ctx->weights;
    }
    qerror e = {0};
    if (dump_open_weights(ctx->o->dump_path, &ctx->weights, &e))
        raise(L, &e);
    return ctx->weights;
}

static void push_tensor(lua_State *L, const dump_tensor *t, size_t index)
{
    lua_createtable(L, 0, 10);
    lua_pushstring(L, t->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, t->orig_name);
    lua_setfield(L, -2, "orig_name");
    lua_pushstring(L, dump_dtype_name(t->dtype));
    lua_setfield(L, -2, "dtype");
    lua_pushinteger(L, t->rank);
    lua_setfield(L, -2, "rank");
    lua_createtable(L, t->rank, 0);
    double numel = 1;
    for (int i = 0; i < t->rank; i++) {
        lua_pushinteger(L, (lua_Integer)t->dims[i]);
        lua_rawseti(L, -2, i + 1);
        numel *= (double)t->dims[i];
    }
    lua_setfield(L, -2, "shape");
    lua_pushinteger(L, (lua_Integer)t->dims[0]);
    lua_setfield(L, -2, "samples");
    lua_pushnumber(L, numel);
    lua_setfield(L, -2, "numel");
    if (t->channel_axis >= 0) {
        lua_pushinteger(L, t->channel_axis);
        lua_setfield(L, -2, "channel_axis");
    }
    if (t->op_type) {
        lua_pushstring(L, t->op_type);
        lua_setfield(L, -2, "op_type");
    }
    lua_pushinteger(L, (lua_Integer)index + 1);
    lua_setfield(L, -2, "index");
    lua_pushstring(L, dump_is_weight_name(t->name) ? "weight" : "activation");
    lua_setfield(L, -2, "kind");
}

static int list_tensors(lua_State *L, dump *d, int weights)
{
    lua_newtable(L);
    lua_Integer k = 0;
    for (size_t i = 0; i < dump_count(d); i++)
        if (dump_is_weight_name(dump_get(d, i)->name) == weights) {
            push_tensor(L, dump_get(d, i), i);
            lua_rawseti(L, -2, ++k);
        }
    return 1;
}

/* qcal.weights([{optional = true}]): optional gives {} for a dump without /weights. */
static int l_weights(lua_State *L)
{
    lua_qcal_ctx *ctx = need_dump(L);
    if (lua_istable(L, 1) && opt_bool(L, 1, "optional", 0) && !ctx->weights && !ctx->reestimating &&
        !dump_has_weights(ctx->d)) {
        lua_newtable(L);
        return 1;
    }
    list_tensors(L, weights_dump(L), 1);
    if (ctx->reestimating && ctx->saved->dump_has_weights && lua_rawlen(L, -1) == 0)
        return luaL_error(L, "%s: the dump has /weights but these statistics hold no weight "
                          "states: the recipe's weights pass was not observed (run `qcal observe` "
                          "again with --from-statistics %s, then merge)", ctx->o->from_statistics,
                          ctx->o->from_statistics);
    return 1;
}

static int l_tensors(lua_State *L)
{
    return list_tensors(L, need_dump(L)->d, 0);
}

/* The tensor named by argument idx (a name, or a table with a `name` field): its index in
 * *d, the activations or (for "weights/<layer>") the weights view. */
static size_t check_tensor(lua_State *L, int idx, dump **d)
{
    lua_qcal_ctx *ctx = need_dump(L);
    const char *name;
    if (lua_istable(L, idx)) {
        lua_getfield(L, idx, "name");
        name = lua_tostring(L, -1);
        lua_pop(L, 1);
    } else {
        name = lua_tostring(L, idx);
    }
    if (!name)
        luaL_argerror(L, idx, "tensor name or tensor table expected");
    *d = dump_is_weight_name(name) ? weights_dump(L) : ctx->d;
    long i = dump_find(*d, name);
    if (i < 0)
        luaL_error(L, "%s: no tensor '%s' in the dump", dump_path(*d), name);
    return (size_t)i;
}

static int l_tensor(lua_State *L)
{
    dump *d;
    size_t i = check_tensor(L, 1, &d);
    push_tensor(L, dump_get(d, i), i);
    return 1;
}

/* ---- plugin parameters from a Lua table ----------------------------------------------- */

/* Converts table idx (or nil) to inputs and resolves them against the declarations. */
static void check_plugin_params(lua_State *L, int idx, const char *what, const qcal_param *decl,
                                uint32_t n_decl, qcal_value *out)
{
    param_input in[64];
    size_t n = 0;
    if (!lua_isnoneornil(L, idx)) {
        luaL_checktype(L, idx, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (n == 64)
                luaL_error(L, "%s: too many parameters", what);
            param_input *p = &in[n++];
            memset(p, 0, sizeof *p);
            p->key = lua_tostring(L, -2); /* the key stays referenced by the table */
            if (!p->key || lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "%s: parameter names must be strings", what);
            int t = lua_type(L, -1);
            if (t == LUA_TBOOLEAN)
                p->type = PARAM_IN_BOOL, p->i = lua_toboolean(L, -1);
            else if (lua_isinteger(L, -1))
                p->type = PARAM_IN_INT, p->i = lua_tointeger(L, -1);
            else if (t == LUA_TNUMBER)
                p->type = PARAM_IN_FLOAT, p->f = lua_tonumber(L, -1);
            else if (t == LUA_TSTRING)
                p->type = PARAM_IN_STRING, p->s = lua_tostring(L, -1);
            else
                luaL_error(L, "%s: parameter '%s' has a %s value", what, p->key, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    }
    qerror e = {0};
    if (params_resolve(what, decl, n_decl, in, n, out, &e))
        raise(L, &e);
}

/* ---- statistics ----------------------------------------------------------------------- */

static lstat *push_stat(lua_State *L, const char *tensor)
{
    lstat *ls = lua_newuserdatauv(L, sizeof *ls, 0);
    ls->s = NULL;
    snprintf(ls->tensor, sizeof ls->tensor, "%s", tensor ? tensor : "");
    luaL_setmetatable(L, STAT_MT);
    return ls;
}

/* A statistic's arrays live outside Lua's heap, so its collector does not see them: report
 * them as if Lua had allocated them, or a loop over 2,000 tensors keeps every histogram until
 * the collector happens to run. */
static void account_stat(lua_State *L, const hstat *s)
{
    size_t bytes = 0;
    for (uint32_t i = 0; s && i < s->view.n_arrays; i++)
        bytes += (size_t)hstat_array_count(&s->view.arrays[i]) *
                 hstat_dtype_size(s->view.arrays[i].dtype);
    if (bytes >= 1024)
        lua_gc(L, LUA_GCSTEP, (int)(bytes / 1024 > INT_MAX ? INT_MAX : bytes / 1024));
}

static int stat_gc(lua_State *L)
{
    lstat *ls = luaL_checkudata(L, 1, STAT_MT);
    hstat_free(ls->s);
    ls->s = NULL;
    return 0;
}

static lstat *check_stat(lua_State *L, int idx)
{
    lstat *ls = luaL_checkudata(L, idx, STAT_MT);
    if (!ls->s)
        luaL_argerror(L, idx, "statistic already released");
    return ls;
}

static void push_array_values(lua_State *L, const qcal_array *a)
{
    uint64_t n = hstat_array_count(a);
    lua_createtable(L, n < INT32_MAX ? (int)n : 0, 0);
    for (uint64_t i = 0; i < n; i++) {
        switch (a->dtype) {
        case QCAL_DTYPE_F32: lua_pushnumber(L, ((const float *)a->data)[i]); break;
        case QCAL_DTYPE_F64: lua_pushnumber(L, ((const double *)a->data)[i]); break;
        case QCAL_DTYPE_I64: lua_pushinteger(L, ((const int64_t *)a->data)[i]); break;
        default: lua_pushinteger(L, (lua_Integer)((const uint64_t *)a->data)[i]); break;
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int stat_array(lua_State *L)
{
    lstat *ls = check_stat(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const qcal_array *a = hstat_find(&ls->s->view, name);
    if (!a)
        return luaL_error(L, "statistic '%s' has no array '%s'", ls->s->view.kind, name);
    push_array_values(L, a);
    return 1;
}

static int stat_shape(lua_State *L)
{
    lstat *ls = check_stat(L, 1);
    const qcal_array *a = hstat_find(&ls->s->view, luaL_checkstring(L, 2));
    if (!a)
        return luaL_error(L, "statistic '%s' has no array '%s'", ls->s->view.kind, lua_tostring(L, 2));
    lua_createtable(L, (int)a->rank, 0);
    for (uint32_t i = 0; i < a->rank; i++) {
        lua_pushinteger(L, (lua_Integer)a->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int stat_names(lua_State *L)
{
    lstat *ls = check_stat(L, 1);
    lua_createtable(L, (int)ls->s->view.n_arrays, 0);
    for (uint32_t i = 0; i < ls->s->view.n_arrays; i++) {
        lua_pushstring(L, ls->s->view.arrays[i].name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int stat_index(lua_State *L)
{
    lstat *ls = check_stat(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (!strcmp(key, "kind"))
        lua_pushstring(L, ls->s->view.kind);
    else if (!strcmp(key, "kind_version"))
        lua_pushinteger(L, ls->s->view.kind_version);
    else if (!strcmp(key, "channels"))
        lua_pushinteger(L, (lua_Integer)ls->s->view.channels);
    else if (!strcmp(key, "tensor"))
        lua_pushstring(L, ls->tensor);
    else if (luaL_getmetafield(L, 1, "methods") == LUA_TTABLE)
        lua_getfield(L, -1, key);
    else
        lua_pushnil(L);
    return 1;
}

/* ---- passes --------------------------------------------------------------------------- */

/* qcal.pass([{weights = true}]): a pass over the activations, or over the layers' weights. */
static int l_pass(lua_State *L)
{
    lua_qcal_ctx *ctx = need_dump(L);
    int weights = 0;
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "weights");
        weights = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    dump *d = weights ? weights_dump(L) : ctx->d;
    lpass *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    lp->p = NULL;
    lp->d = d;
    lp->ran = 0;
    luaL_setmetatable(L, PASS_MT);
    if (!(lp->p = pass_new(d)))
        return luaL_error(L, "out of memory");
    return 1;
}

static int pass_gc(lua_State *L)
{
    lpass *lp = luaL_checkudata(L, 1, PASS_MT);
    pass_free(lp->p);
    lp->p = NULL;
    return 0;
}

static lpass *check_pass(lua_State *L, int idx)
{
    lpass *lp = luaL_checkudata(L, idx, PASS_MT);
    if (!lp->p)
        luaL_argerror(L, idx, "pass already released");
    return lp;
}

/* pass:observe(tensor, observer [, params [, {axis = n}]]) -> id */
static int pass_observe_l(lua_State *L)
{
    lpass *lp = check_pass(L, 1);
    lua_qcal_ctx *ctx = get_ctx(L);
    dump *d;
    size_t tensor = check_tensor(L, 2, &d);
    if (d != lp->d)
        return luaL_error(L, "tensor '%s' is %s; observe it on a pass made with qcal.pass%s",
                          dump_get(d, tensor)->name, d == ctx->d ? "an activation" : "a weight",
                          d == ctx->d ? "()" : "{weights = true}");
    const char *name = luaL_checkstring(L, 3);
    const reg_observer *obs = registry_observer(ctx->o->reg, name);
    if (!obs)
        return luaL_error(L, "no observer '%s' (see `qcal list`)", name);
    if (lp->ran)
        return luaL_error(L, "pass:observe after pass:run; make a new pass with qcal.pass()");
    char what[160];
    snprintf(what, sizeof what, "observer '%s'", name);
    qcal_value values[64];
    if (obs->desc.n_params > 64)
        return luaL_error(L, "%s declares too many parameters", what);
    check_plugin_params(L, 4, what, obs->desc.params, obs->desc.n_params, values);
    int axis = PASS_AXIS_DEFAULT;
    if (lua_istable(L, 5)) {
        lua_getfield(L, 5, "axis");
        if (!lua_isnil(L, -1))
            axis = (int)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    qerror e = {0};
    int h = pass_observe(lp->p, tensor, obs, values, axis, &e);
    if (h < 0)
        return raise(L, &e);
    lua_pushinteger(L, h + 1);
    return 1;
}

/* options.key at idx (a table, or absent): a count >= 0, def when absent. `what` names the
 * call in the message. */
static uint64_t opt_count(lua_State *L, int idx, const char *key, uint64_t def, const char *what)
{
    if (!lua_istable(L, idx))
        return def;
    lua_getfield(L, idx, key);
    uint64_t v = def;
    if (!lua_isnil(L, -1)) {
        lua_Integer i = luaL_checkinteger(L, -1);
        if (i < 0)
            luaL_error(L, "%s: '%s' must be >= 0, got %I", what, key, (lua_Integer)i);
        v = (uint64_t)i;
    }
    lua_pop(L, 1);
    return v;
}

/* Observer h's serialized state in the results, or NULL. */
static result_stat *saved_state(lua_qcal_ctx *ctx, const lpass *lp, int h)
{
    const reg_observer *obs = pass_observer(lp->p, h);
    char params[1024];
    params_format_all(obs->desc.params, obs->desc.n_params, pass_params(lp->p, h), params,
                      sizeof params);
    return results_find_stat(ctx->res, dump_get(lp->d, pass_tensor(lp->p, h))->name,
                             obs->desc.name, params);
}

/* How a pass hands its states to the results (pass_set_keep). */
typedef struct keeper {
    lua_qcal_ctx *ctx;
    const lpass *lp;
    int on_share;
    uint64_t max_rows; /* the pass's sample limit, saved with each state */
} keeper;

/* Keeps observer h's serialized state for /statistics, with how the observer was made and
 * the tensor's description; restore_state brings it back on demand. Runs on a pass's worker
 * threads (one call at a time), so it touches no Lua state. */
static int keep_state(void *ud, int h, hstat *state, qerror *e)
{
    const keeper *k = ud;
    pass *p = k->lp->p;
    const reg_observer *obs = pass_observer(p, h);
    char params[1024];
    params_format_all(obs->desc.params, obs->desc.n_params, pass_params(p, h), params,
                      sizeof params);
    const dump_tensor *t = dump_get(k->lp->d, pass_tensor(p, h));
    result_info info = {.tensor = t->name, .rank = t->rank, .channel_axis = t->channel_axis,
                        .orig_name = t->orig_name, .op_type = t->op_type,
                        .dtype = (char *)dump_dtype_name(t->dtype)};
    memcpy(info.shape, t->dims, sizeof info.shape);
    if (results_add_stat(k->ctx->res, t->name, obs->desc.name, params, state, e) ||
        results_add_info(k->ctx->res, &info, e))
        return -1;
    result_stat *saved = results_find_stat(k->ctx->res, t->name, obs->desc.name, params);
    const qcal_tensor *desc = pass_desc(p, h);
    saved->on_share = k->on_share;
    saved->batch_size = desc->batch_size, saved->axis = desc->channel_axis;
    saved->max_rows = (int64_t)k->max_rows;
    return 0;
}

/* Brings back observer h's state from its serialized copy in the results (keep_state). */
static int restore_state(lua_qcal_ctx *ctx, const lpass *lp, int h, qerror *e)
{
    pass *p = lp->p;
    if (pass_has_state(p, h))
        return 0;
    const reg_observer *obs = pass_observer(p, h);
    const char *tensor = dump_get(lp->d, pass_tensor(p, h))->name;
    result_stat *saved = saved_state(ctx, lp, h);
    if (!saved)
        return qerror_set(e, QERR_SOFTWARE, "pass: the state of observer '%s' on tensor '%s' "
                          "is no longer held", obs->desc.name, tensor);
    hstat *loaded;
    const qcal_stat *state = results_stat_view(ctx->res, saved, &loaded, e);
    int rc = !state || pass_fold(p, h, state, 1, e);
    hstat_free(loaded);
    return rc ? -1 : 0;
}

static int pass_run_l(lua_State *L)
{
    lpass *lp = check_pass(L, 1);
    lua_qcal_ctx *ctx = get_ctx(L);
    pass_options o = ctx->o->pass;
    o.threads = (int)opt_count(L, 2, "threads", (uint64_t)o.threads, "pass:run");
    o.max_rows = opt_count(L, 2, "max_rows", o.max_rows, "pass:run");
    o.batch_size = opt_count(L, 2, "batch_size", o.batch_size, "pass:run");
    if (o.threads < 1 || o.threads > 256)
        return luaL_error(L, "pass:run: threads must be in [1, 256], got %d", o.threads);
    qerror e = {0};
    /* `qcal observe` loads the passes its statistics already hold and streams the first
     * one they do not, then stops: later passes may depend on this one's merged result. */
    int load = ctx->saved && (!ctx->o->observe || pass_saved_all(lp->p, ctx->saved));
    keeper k = {ctx, lp, ctx->o->observe && !load, o.max_rows};
    pass_set_keep(lp->p, keep_state, &k);
    int rc = load ? pass_load(lp->p, ctx->saved, ctx->o->from_statistics, &o, &e)
                  : pass_run(lp->p, &o, &e);
    pass_set_keep(lp->p, NULL, NULL);
    if (rc)
        return raise(L, &e);
    lp->ran = 1;
    if (ctx->o->observe && !load) {
        ctx->observed = 1;
        lua_pushlightuserdata(L, &observe_stop);
        return lua_error(L);
    }
    return 0;
}

/* The least and largest finite values of a float array. */
static int array_extremes(const qcal_array *a, double *lo, double *hi)
{
    if (!a || (a->dtype != QCAL_DTYPE_F32 && a->dtype != QCAL_DTYPE_F64))
        return 0;
    int found = 0;
    for (uint64_t i = 0, n = hstat_array_count(a); i < n; i++) {
        double v = a->dtype == QCAL_DTYPE_F32 ? ((const float *)a->data)[i] : ((const double *)a->data)[i];
        if (isfinite(v))
            *lo = found ? fmin(*lo, v) : v, *hi = found ? fmax(*hi, v) : v, found = 1;
    }
    return found;
}

/* The extremes of the values a statistic of a bundled kind records: qcal.minmax's lo and hi
 * (for moving averages, the averaged ones), qcal.histogram's signed smin and smax (when it
 * counted a value), qcal.batch_stats' per-unit min and max. Other kinds: 0. */
static int statistic_extremes(const qcal_stat *s, double *lo, double *hi)
{
    double ignored;
    if (!strcmp(s->kind, "qcal.minmax"))
        return array_extremes(hstat_find(s, "lo"), lo, &ignored) &&
               array_extremes(hstat_find(s, "hi"), &ignored, hi);
    if (!strcmp(s->kind, "qcal.batch_stats"))
        return array_extremes(hstat_find(s, "min"), lo, &ignored) &&
               array_extremes(hstat_find(s, "max"), &ignored, hi);
    const qcal_array *count = hstat_find(s, "count");
    if (strcmp(s->kind, "qcal.histogram") || !count || count->dtype != QCAL_DTYPE_U64 ||
        hstat_array_count(count) != 1 || *(const uint64_t *)count->data == 0)
        return 0;
    return array_extremes(hstat_find(s, "smin"), lo, &ignored) &&
           array_extremes(hstat_find(s, "smax"), &ignored, hi);
}

static int pass_stat_l(lua_State *L, int serialized)
{
    lpass *lp = check_pass(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    if (!lp->ran)
        return luaL_error(L, "pass:statistic before pass:run");
    if (id < 1 || (size_t)id > pass_count(lp->p))
        return luaL_error(L, "no observation #%d in this pass", (int)id);
    int h = (int)id - 1;
    const char *tensor = dump_get(lp->d, pass_tensor(lp->p, h))->name;
    lstat *ls = push_stat(L, tensor);
    qerror e = {0};
    int rc = restore_state(get_ctx(L), lp, h, &e);
    if (!rc)
        rc = serialized ? pass_serialize(lp->p, h, &ls->s, &e) : pass_finalize(lp->p, h, &ls->s, &e);
    pass_release(lp->p, h);
    double lo, hi;
    if (!rc && !serialized && statistic_extremes(&ls->s->view, &lo, &hi))
        rc = results_note_data_range(get_ctx(L)->res, tensor, lo, hi, &e);
    if (rc)
        return raise(L, &e);
    account_stat(L, ls->s);
    return 1;
}

static int pass_statistic_l(lua_State *L) { return pass_stat_l(L, 0); }
static int pass_state_l(lua_State *L) { return pass_stat_l(L, 1); }

/* ---- specs, estimators, results ------------------------------------------------------- */

static int opt_bool(lua_State *L, int idx, const char *key, int def)
{
    lua_getfield(L, idx, key);
    int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static lua_Integer opt_int(lua_State *L, int idx, const char *key, lua_Integer def)
{
    lua_getfield(L, idx, key);
    lua_Integer v = lua_isnil(L, -1) ? def : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Reads a spec table. Per-channel specs without `axis` take default_axis. */
static void check_spec(lua_State *L, int idx, int default_axis, qcal_qspec *out)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int symmetric = opt_bool(L, idx, "symmetric", 0);
    uint32_t flags = (opt_bool(L, idx, "signed", symmetric) ? QCAL_QSPEC_SIGNED : 0) |
                     (symmetric ? QCAL_QSPEC_SYMMETRIC : 0) |
                     (opt_bool(L, idx, "narrow_range", 0) ? QCAL_QSPEC_NARROW : 0) |
                     (opt_bool(L, idx, "per_channel", 0) ? QCAL_QSPEC_PER_CHANNEL : 0);
    lua_Integer axis = opt_int(L, idx, "axis", default_axis);
    lua_Integer bits = opt_int(L, idx, "bits", 8);
    qerror e = {0};
    if (bits < 2 || bits > 16) { /* from the command line (bits=) as a rule: a usage error */
        qerror_set(&e, QERR_USAGE, "spec: bits must be in [2, 16], got %lld", (long long)bits);
        raise(L, &e);
    }
    if (qmath_spec(out, (int)bits, flags, (flags & QCAL_QSPEC_PER_CHANNEL) ? (int)axis : -1, &e))
        raise(L, &e);
}

static int l_spec(lua_State *L)
{
    qcal_qspec s;
    check_spec(L, 1, 1, &s);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, s.bits);
    lua_setfield(L, -2, "bits");
    lua_pushboolean(L, (s.flags & QCAL_QSPEC_SIGNED) != 0);
    lua_setfield(L, -2, "signed");
    lua_pushboolean(L, (s.flags & QCAL_QSPEC_SYMMETRIC) != 0);
    lua_setfield(L, -2, "symmetric");
    lua_pushboolean(L, (s.flags & QCAL_QSPEC_NARROW) != 0);
    lua_setfield(L, -2, "narrow_range");
    lua_pushboolean(L, (s.flags & QCAL_QSPEC_PER_CHANNEL) != 0);
    lua_setfield(L, -2, "per_channel");
    lua_getfield(L, 1, "axis");
    lua_setfield(L, -2, "axis");
    lua_pushinteger(L, (lua_Integer)s.qmin);
    lua_setfield(L, -2, "qmin");
    lua_pushinteger(L, (lua_Integer)s.qmax);
    lua_setfield(L, -2, "qmax");
    return 1;
}

static int accepts_kind(const reg_estimator *est, const char *kind)
{
    for (const char *const *k = est->desc.accepts; *k; k++)
        if (!strcmp(*k, kind))
            return 1;
    return 0;
}

static void push_ranges(lua_State *L, const qcal_range *r, uint64_t n, int per_channel)
{
    lua_createtable(L, 0, 3);
    if (!per_channel) {
        lua_pushnumber(L, r[0].lo);
        lua_setfield(L, -2, "lo");
        lua_pushnumber(L, r[0].hi);
        lua_setfield(L, -2, "hi");
        return;
    }
    for (int side = 0; side < 2; side++) {
        lua_createtable(L, (int)n, 0);
        for (uint64_t i = 0; i < n; i++) {
            lua_pushnumber(L, side ? r[i].hi : r[i].lo);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, side ? "hi" : "lo");
    }
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, "channels");
}

/* Calls the plugin; returns 0 (with its note, if any, in note: the size of qcal_err.msg) or fills e.
 * Ranges are checked: never a NaN or inverted one. */
static int call_estimator(const reg_estimator *est, const lstat *ls, const qcal_value *params,
                          const qcal_qspec *spec, qcal_range *out, uint64_t n, char *note,
                          qerror *e)
{
    qcal_err perr;
    memset(&perr, 0, sizeof perr);
    const char *file = strrchr(est->plugin->path, '/') ? strrchr(est->plugin->path, '/') + 1 : est->plugin->path;
    int rc = est->desc.estimate(&ls->s->view, params, spec, out, n, &perr);
    perr.msg[sizeof perr.msg - 1] = '\0';
    /* the parameters and spec come from the user: a combination the estimator refuses
     * (levels above bins, a per-channel spec it lacks) is a usage error */
    int code = rc == QCAL_E_DATA                          ? QERR_DATA
               : rc == QCAL_E_INVAL || rc == QCAL_E_UNSUP ? QERR_USAGE
                                                          : QERR_SOFTWARE;
    if (rc != QCAL_OK)
        return qerror_set(e, code, "%s: estimator '%s' on tensor '%s': %s", file, est->desc.name,
                          ls->tensor, perr.msg[0] ? perr.msg : "failed");
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(out[i].lo) || !isfinite(out[i].hi) || out[i].lo > out[i].hi)
            return qerror_set(e, QERR_SOFTWARE,
                              "%s: estimator '%s' on tensor '%s' returned an invalid range "
                              "[%g, %g] (channel %llu)", file, est->desc.name, ls->tensor,
                              out[i].lo, out[i].hi, (unsigned long long)i);
    memcpy(note, perr.msg, sizeof perr.msg);
    return 0;
}

/* How many NaN and Inf values the statistic left out ("nonfinite", kept by every bundled
 * observer), said on the result so that they are not dropped unseen: "" when none. */
static void left_out_note(const qcal_stat *s, char *buf, size_t size)
{
    const qcal_array *a = hstat_find(s, "nonfinite");
    buf[0] = '\0';
    if (!a || a->dtype != QCAL_DTYPE_U64 || a->rank != 1 || a->shape[0] != 2)
        return;
    const unsigned long long nan = ((const uint64_t *)a->data)[0], inf = ((const uint64_t *)a->data)[1];
    if (nan && inf)
        snprintf(buf, size, "%llu NaN and %llu Inf values left out", nan, inf);
    else if (nan || inf)
        snprintf(buf, size, "%llu %s values left out", nan ? nan : inf, nan ? "NaN" : "Inf");
}

/* qcal.estimate(estimator, stat, spec [, params]) -> {lo=, hi=} or per channel {lo={}, hi={}},
 * and a note on the result when the estimator left one or values were left out */
static int l_estimate(lua_State *L)
{
    lua_qcal_ctx *ctx = get_ctx(L);
    const char *name = luaL_checkstring(L, 1);
    lstat *ls = check_stat(L, 2);
    const reg_estimator *est = registry_estimator(ctx->o->reg, name);
    if (!est)
        return luaL_error(L, "no estimator '%s' (see `qcal list`)", name);
    if (!accepts_kind(est, ls->s->view.kind))
        return luaL_error(L, "estimator '%s' does not take '%s' statistics (tensor '%s')", name,
                          ls->s->view.kind, ls->tensor);
    qcal_qspec spec;
    check_spec(L, 3, 1, &spec);
    char what[160];
    snprintf(what, sizeof what, "estimator '%s'", name);
    qcal_value values[64];
    if (est->desc.n_params > 64)
        return luaL_error(L, "%s declares too many parameters", what);
    check_plugin_params(L, 4, what, est->desc.params, est->desc.n_params, values);
    int per_channel = (spec.flags & QCAL_QSPEC_PER_CHANNEL) != 0;
    uint64_t n = per_channel ? ls->s->view.channels : 1;
    if (n == 0 || n > ((uint64_t)1 << 24))
        return luaL_error(L, "statistic of tensor '%s' has %I channels", ls->tensor,
                          (lua_Integer)n);
    /* Guard ranges after the n the plugin may write: a plugin writing past them is caught
     * (freed by the GC, even on error). */
    qcal_range *r = lua_newuserdatauv(L, (n + GUARD_RANGES) * sizeof *r, 0);
    for (uint64_t i = n; i < n + GUARD_RANGES; i++)
        r[i].lo = r[i].hi = GUARD_VALUE;
    qerror e = {0};
    char note[sizeof(((qcal_err *)0)->msg)];
    if (call_estimator(est, ls, values, &spec, r, n, note, &e))
        return raise(L, &e);
    for (uint64_t i = n; i < n + GUARD_RANGES; i++)
        if (memcmp(&r[i].lo, &(double){GUARD_VALUE}, sizeof(double)) ||
            memcmp(&r[i].hi, &(double){GUARD_VALUE}, sizeof(double)))
            return luaL_error(L, "estimator '%s' on tensor '%s' wrote past the %d range(s) it was "
                              "given: its results are not used", name, ls->tensor, (int)n);
    push_ranges(L, r, n, per_channel);
    char left_out[96];
    left_out_note(&ls->s->view, left_out, sizeof left_out);
    if (!note[0] && !left_out[0])
        return 1;
    lua_pushfstring(L, "%s: %s%s%s", name, note, note[0] && left_out[0] ? "; " : "", left_out);
    return 2;
}

static int l_qparams(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    qcal_qspec spec;
    check_spec(L, 2, 1, &spec);
    lua_getfield(L, 1, "lo");
    lua_getfield(L, 1, "hi");
    double lo = luaL_checknumber(L, -2), hi = luaL_checknumber(L, -1);
    double scale;
    int64_t zp;
    qerror e = {0};
    if (qmath_qparams(&spec, lo, hi, &scale, &zp, &e))
        return raise(L, &e);
    lua_pushnumber(L, scale);
    lua_pushinteger(L, (lua_Integer)zp);
    return 2;
}

/* Reads range.lo / range.hi (numbers, or tables of n numbers) into malloc'd arrays held by
 * two userdata on the stack. Returns the channel count. */
static uint64_t check_range(lua_State *L, int idx, double **lo, double **hi, const char *what)
{
    lua_getfield(L, idx, "lo");
    lua_getfield(L, idx, "hi");
    int lo_i = lua_gettop(L) - 1, hi_i = lua_gettop(L);
    if (lua_type(L, lo_i) == LUA_TNUMBER && lua_type(L, hi_i) == LUA_TNUMBER) {
        *lo = lua_newuserdatauv(L, sizeof(double), 0);
        *hi = lua_newuserdatauv(L, sizeof(double), 0);
        **lo = lua_tonumber(L, lo_i);
        **hi = lua_tonumber(L, hi_i);
        return 1;
    }
    if (!lua_istable(L, lo_i) || !lua_istable(L, hi_i))
        luaL_error(L, "%s: range needs numbers lo and hi (or tables of them per channel)", what);
    lua_Unsigned n = lua_rawlen(L, lo_i);
    if (n == 0 || n != lua_rawlen(L, hi_i))
        luaL_error(L, "%s: per-channel lo and hi must have the same non-zero length", what);
    *lo = lua_newuserdatauv(L, n * sizeof(double), 0);
    *hi = lua_newuserdatauv(L, n * sizeof(double), 0);
    for (lua_Unsigned i = 0; i < n; i++) {
        lua_rawgeti(L, lo_i, (lua_Integer)i + 1);
        lua_rawgeti(L, hi_i, (lua_Integer)i + 1);
        (*lo)[i] = luaL_checknumber(L, -2);
        (*hi)[i] = luaL_checknumber(L, -1);
        lua_pop(L, 2);
    }
    return n;
}

static void put_metrics(lua_State *L, int idx, result_tensor *rt)
{
    lua_getfield(L, idx, "metrics");
    if (lua_istable(L, -1)) {
        int t = lua_gettop(L);
        rt->has_metrics = 1;
        lua_getfield(L, t, "mse");
        rt->mse = luaL_optnumber(L, -1, NAN);
        lua_getfield(L, t, "sqnr_db");
        rt->sqnr_db = luaL_optnumber(L, -1, NAN);
        lua_getfield(L, t, "cosine");
        rt->cosine = luaL_optnumber(L, -1, NAN);
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
}

/* qcal.put(tensor, {method=, range=, spec=, note=, metrics=}) */
static int l_put(lua_State *L)
{
    lua_qcal_ctx *ctx = need_dump(L);
    dump *d;
    size_t ti = check_tensor(L, 1, &d);
    const dump_tensor *t = dump_get(d, ti);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (ctx->committed)
        return luaL_error(L, "qcal.put after qcal.commit");
    lua_getfield(L, 2, "method");
    const char *method = luaL_optstring(L, -1, "custom");
    lua_getfield(L, 2, "spec");
    qcal_qspec spec;
    check_spec(L, lua_gettop(L), t->channel_axis, &spec);
    lua_getfield(L, 2, "range");
    if (!lua_istable(L, -1))
        return luaL_error(L, "qcal.put: tensor '%s': expected range = {lo = ..., hi = ...}, found "
                          "%s", t->name, luaL_typename(L, -1));
    double *lo, *hi;
    uint64_t n = check_range(L, lua_gettop(L), &lo, &hi, "qcal.put");
    int per_channel = (spec.flags & QCAL_QSPEC_PER_CHANNEL) != 0;
    if (per_channel && (spec.axis < 1 || spec.axis >= t->rank))
        return luaL_error(L, "qcal.put: tensor '%s': expected a per-channel axis in [1, %d], found "
                          "%d", t->name, t->rank - 1, spec.axis);
    if (per_channel && n != t->dims[spec.axis])
        return luaL_error(L, "qcal.put: tensor '%s': per-channel range has %d values, expected "
                          "one per channel of axis %d", t->name, (int)n, spec.axis);
    if (!per_channel && n != 1)
        return luaL_error(L, "qcal.put: tensor '%s': per-tensor spec with %d ranges", t->name, (int)n);
    qerror e = {0};
    if (results_put(ctx->res, t->name, t->orig_name, method, &spec, n, lo, hi, &e))
        return raise(L, &e);
    result_tensor *rt = results_find(ctx->res, t->name);
    put_metrics(L, 2, rt);
    lua_getfield(L, 2, "note");
    if (lua_isstring(L, -1) && !(rt->note = strdup(lua_tostring(L, -1))))
        return luaL_error(L, "out of memory");
    return 0;
}

int lua_qcal_commit(lua_qcal_ctx *ctx, qerror *e)
{
    const dist *d = ctx->o->pass.dist; /* every rank gets here: rank 0 writes once all agree */
    if (!ctx->committed && d && d->agree(d, 0, e))
        return -1;
    if (ctx->committed || !ctx->o->output)
        return 0;
    ctx->committed = 1;
    return results_write(ctx->res, ctx->o->output, ctx->o->force, e);
}

static int l_commit(lua_State *L)
{
    lua_qcal_ctx *ctx = get_ctx(L);
    qerror e = {0};
    if (lua_qcal_commit(ctx, &e))
        return raise(L, &e);
    return 0;
}

/* qcal.param_error(message): a recipe refusing a parameter's value ends the run as a usage
 * error (exit 64): one line with its file:line, no traceback, nothing written. */
static int l_param_error(lua_State *L)
{
    qerror e = {0};
    qerror_set(&e, QERR_USAGE, "%s", luaL_checkstring(L, 1));
    return raise(L, &e);
}

static int l_log(lua_State *L)
{
    lua_qcal_ctx *ctx = get_ctx(L);
    int n = lua_gettop(L); /* before the buffer takes a stack slot */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    if (ctx->o->log)
        ctx->o->log(ctx->o->log_ud, lua_tostring(L, -1));
    return 0;
}

/* ---- for the other parts of the module (lua_util.h) -------------------------------------- */

lua_qcal_ctx *lq_ctx(lua_State *L) { return get_ctx(L); }
int lq_raise(lua_State *L, const qerror *e) { return raise(L, e); }
size_t lq_check_tensor(lua_State *L, int idx, dump **d) { return check_tensor(L, idx, d); }
void lq_check_spec(lua_State *L, int idx, int default_axis, qcal_qspec *out)
{
    check_spec(L, idx, default_axis, out);
}
void lq_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}
uint64_t lq_opt_count(lua_State *L, int idx, const char *key, uint64_t def, const char *what)
{
    return opt_count(L, idx, key, def, what);
}
uint64_t lq_check_range(lua_State *L, int idx, double **lo, double **hi, const char *what)
{
    return check_range(L, idx, lo, hi, what);
}

/* ---- the module ----------------------------------------------------------------------- */

static const luaL_Reg module_fns[] = {
    {"params", l_params},     {"tensors", l_tensors}, {"tensor", l_tensor},
    {"weights", l_weights},
    {"pass", l_pass},         {"spec", l_spec},       {"estimate", l_estimate},
    {"qparams", l_qparams},   {"put", l_put},         {"commit", l_commit},
    {"log", l_log},           {"param_error", l_param_error},
    {"evaluation", lq_evaluation}, {"layers", lq_layers},
    {"candidates", lq_candidates}, {NULL, NULL},
};

static const luaL_Reg pass_methods[] = {
    {"observe", pass_observe_l}, {"run", pass_run_l}, {"statistic", pass_statistic_l},
    {"state", pass_state_l},     {NULL, NULL},
};

static const luaL_Reg stat_methods[] = {
    {"array", stat_array}, {"shape", stat_shape}, {"names", stat_names}, {NULL, NULL},
};

static int open_module(lua_State *L)
{
    lua_qcal_ctx *ctx = get_ctx(L);
    luaL_newlib(L, module_fns);
    lua_pushstring(L, QCAL_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, ctx->recipe_name);
    lua_setfield(L, -2, "recipe");
    if (ctx->d) {
        lua_pushstring(L, dump_path(ctx->d));
        lua_setfield(L, -2, "source");
    }
    return 1;
}

static void make_metatables(lua_State *L)
{
    lq_eval_metatable(L);
    lq_new_class(L, PASS_MT, pass_methods, pass_gc);
    luaL_newmetatable(L, STAT_MT); /* its __index also serves fields, so built by hand */
    luaL_newlib(L, stat_methods);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, stat_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, stat_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

void lua_qcal_install(lua_State *L, lua_qcal_ctx *ctx)
{
    lua_pushlightuserdata(L, ctx);
    lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    make_metatables(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open_module);
    lua_setfield(L, -2, "qcal");
    lua_pop(L, 1);
}
