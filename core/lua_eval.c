/* lua_eval.c - the evaluation pass, layers and candidates in the `qcal` Lua module
 *
 *   local ev = qcal.evaluation()
 *   local id = ev:add(tensor, { {range = r1, spec = s1}, {range = r2, spec = s2}, ... }
 *                     [, {layer = "fc1", weight_spec = {bits = 8, symmetric = true,
 *                                                       per_channel = true}}])
 *   ev:run{ max_rows = 300 }              -- one read of the dump for every add()
 *   for k, r in ipairs(ev:errors(id)) do  -- per candidate: mse, sqnr_db, cosine, n and, with
 *   end                                   -- a layer: layer_error, layer_mse, layer_sqnr_db, ...
 *   qcal.layers()                         -- {name, type, input, in_channels, out_channels, ...}
 *   qcal.candidates(tensor, {{method=, range=, mse=, ...}, ...}, chosen, criterion)
 */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "layer.h"
#include "lua_util.h"
#include "pass.h"

#define EVAL_MT "qcal.Evaluation"

typedef struct leval {
    pass *p;
    eval_set **sets;    /* [n] owned; declaration k of the pass uses sets[k] */
    size_t n, cap;
    int ran;
} leval;

static int eval_gc(lua_State *L)
{
    leval *ev = luaL_checkudata(L, 1, EVAL_MT);
    pass_free(ev->p);
    for (size_t i = 0; i < ev->n; i++)
        eval_set_free(ev->sets[i]);
    free(ev->sets);
    memset(ev, 0, sizeof *ev);
    return 0;
}

int lq_evaluation(lua_State *L)
{
    lua_qcal_ctx *ctx = lq_ctx(L);
    if (!ctx->d)
        return luaL_error(L, "no dump is open");
    if (ctx->reestimating)
        return luaL_error(L, "qcal.evaluation needs the dump: an evaluation pass measures errors "
                          "on the data, which --from-statistics does not read");
    if (ctx->o->observe)
        return luaL_error(L, "qcal.evaluation: `qcal observe` reached an evaluation pass, which "
                          "statistics files do not carry: run this recipe on one machine or "
                          "under MPI (mpirun -n K qcal run ...)");
    leval *ev = lua_newuserdatauv(L, sizeof *ev, 0);
    memset(ev, 0, sizeof *ev);
    luaL_setmetatable(L, EVAL_MT);
    if (!(ev->p = pass_new(ctx->d)))
        return luaL_error(L, "out of memory");
    return 1;
}

static const layer *load_layers(lua_State *L, size_t *n)
{
    lua_qcal_ctx *ctx = lq_ctx(L);
    if (!ctx->layers_loaded && ctx->d && !ctx->reestimating) {
        qerror e = {0};
        if (layers_load(dump_path(ctx->d), &ctx->layers, &ctx->n_layers, &e))
            lq_raise(L, &e);
        ctx->layers_loaded = 1;
    }
    *n = ctx->n_layers;
    return ctx->layers;
}

static const layer *find_layer(lua_State *L, const char *name)
{
    size_t n;
    const layer *ls = load_layers(L, &n);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(ls[i].name, name))
            return &ls[i];
    luaL_error(L, "no layer '%s' under /layers of the dump", name);
    return NULL;
}

static void set_int(lua_State *L, const char *key, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, key);
}

int lq_layers(lua_State *L)
{
    size_t n;
    const layer *ls = load_layers(L, &n);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 8);
        lua_pushstring(L, ls[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, ls[i].type == LAYER_LINEAR ? "linear" : "conv2d");
        lua_setfield(L, -2, "type");
        lua_pushstring(L, ls[i].input);
        lua_setfield(L, -2, "input");
        set_int(L, "in_channels", ls[i].in_ch);
        set_int(L, "out_channels", ls[i].out_ch);
        set_int(L, "groups", ls[i].groups);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* Reads the candidate list at idx into specs / channels / lo / hi (userdata kept on the stack). */
static uint64_t check_candidates(lua_State *L, int idx, const dump_tensor *t, qcal_qspec **specs,
                                 uint64_t **channels, const double ***lo, const double ***hi)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Unsigned n = lua_rawlen(L, idx);
    if (n == 0 || n > 4096)
        luaL_error(L, "evaluation:add: tensor '%s': 1 to 4096 candidates, got %d", t->name, (int)n);
    *specs = lua_newuserdatauv(L, n * sizeof **specs, 0);
    *channels = lua_newuserdatauv(L, n * sizeof **channels, 0);
    *lo = lua_newuserdatauv(L, n * sizeof **lo, 0);
    *hi = lua_newuserdatauv(L, n * sizeof **hi, 0);
    for (lua_Unsigned k = 0; k < n; k++) {
        /* each candidate leaves its two range arrays on the stack: room for them and the
         * candidate's fields (past Lua's 20 guaranteed slots, 23 candidates wrote beyond the
         * stack and corrupted the heap) */
        luaL_checkstack(L, 8, "evaluation:add: candidates");
        lua_rawgeti(L, idx, (lua_Integer)k + 1);
        int c = lua_gettop(L);
        luaL_checktype(L, c, LUA_TTABLE);
        lua_getfield(L, c, "spec");
        lq_check_spec(L, lua_gettop(L), t->channel_axis, &(*specs)[k]);
        lua_getfield(L, c, "range");
        luaL_checktype(L, -1, LUA_TTABLE);
        double *l, *h;
        (*channels)[k] = lq_check_range(L, lua_gettop(L), &l, &h, "evaluation:add");
        (*lo)[k] = l, (*hi)[k] = h;
        lua_rotate(L, c, 2); /* keep the two range arrays below, drop the rest */
        lua_settop(L, c + 1);
    }
    return n;
}

static eval_set *make_set(lua_State *L, const dump_tensor *t)
{
    qcal_qspec *specs;
    uint64_t *channels;
    const double **lo, **hi;
    uint64_t n = check_candidates(L, 3, t, &specs, &channels, &lo, &hi);
    eval_set *set;
    qerror e = {0};
    if (eval_set_new(t->name, t->rank, t->dims, n, specs, channels, lo, hi, &set, &e))
        lq_raise(L, &e);
    return set;
}

/* Attaches the layer named in opts (at idx) to set; on error frees set. */
static void attach_layer(lua_State *L, int idx, eval_set *set, const dump_tensor *t)
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "layer");
    if (lua_isnil(L, -1))
        return;
    const char *name = luaL_checkstring(L, -1);
    qcal_qspec wspec;
    lua_getfield(L, idx, "weight_spec");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L); /* int8 symmetric per output channel, tpu-mlir's choice */
        lua_pushboolean(L, 1), lua_setfield(L, -2, "symmetric");
        lua_pushboolean(L, 1), lua_setfield(L, -2, "per_channel");
        lua_pushboolean(L, 1), lua_setfield(L, -2, "narrow_range"); /* scale max|w| / 127 */
    }
    lq_check_spec(L, lua_gettop(L), 1, &wspec);
    qerror e = {0};
    if (eval_set_layer(set, find_layer(L, name), &wspec, t->rank, t->dims, &e))
        lq_raise(L, &e);
}

static int eval_add(lua_State *L)
{
    leval *ev = luaL_checkudata(L, 1, EVAL_MT);
    lua_settop(L, 4); /* options at 4 (nil when absent), working values above */
    if (ev->ran)
        return luaL_error(L, "evaluation:add after evaluation:run");
    dump *d;
    size_t ti = lq_check_tensor(L, 2, &d);
    if (d != lq_ctx(L)->d)
        return luaL_error(L, "evaluation:add: weights are evaluated by their own pass");
    const dump_tensor *t = dump_get(d, ti);
    if (ev->n == ev->cap) {
        size_t cap = ev->cap ? 2 * ev->cap : 16;
        eval_set **grown = realloc(ev->sets, cap * sizeof *grown);
        if (!grown)
            return luaL_error(L, "out of memory");
        ev->sets = grown, ev->cap = cap;
    }
    eval_set *set = make_set(L, t);
    ev->sets[ev->n++] = set; /* owned by ev from here, also if the rest fails */
    attach_layer(L, 4, set, t);
    qcal_value param = {.i = (int64_t)(intptr_t)set};
    qerror e = {0};
    int h = pass_observe(ev->p, ti, eval_observer(), &param, PASS_AXIS_DEFAULT, &e);
    if (h < 0)
        return lq_raise(L, &e);
    lua_pushinteger(L, h + 1);
    return 1;
}

static int eval_run(lua_State *L)
{
    leval *ev = luaL_checkudata(L, 1, EVAL_MT);
    if (ev->ran)
        return luaL_error(L, "evaluation:run twice");
    pass_options o = lq_ctx(L)->o->pass;
    o.max_rows = lq_opt_count(L, 2, "max_rows", o.max_rows, "evaluation:run");
    o.threads = (int)lq_opt_count(L, 2, "threads", (uint64_t)o.threads, "evaluation:run");
    qerror e = {0};
    if (pass_run(ev->p, &o, &e))
        return lq_raise(L, &e);
    ev->ran = 1;
    return 0;
}

static void set_num(lua_State *L, const char *key, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

static void push_errors(lua_State *L, const eval_result *r, int with_layer)
{
    lua_createtable(L, 0, 9);
    set_num(L, "mse", qmath_mse(&r->tensor));
    set_num(L, "sqnr_db", qmath_sqnr_db(&r->tensor));
    set_num(L, "cosine", qmath_cosine(&r->tensor));
    set_int(L, "n", r->tensor.n);
    if (!with_layer)
        return;
    set_num(L, "layer_error", eval_layer_error(r));
    set_num(L, "layer_mse", qmath_mse(&r->layer));
    set_num(L, "layer_sqnr_db", qmath_sqnr_db(&r->layer));
    set_num(L, "layer_cosine", qmath_cosine(&r->layer));
    set_int(L, "layer_samples_skipped", r->skipped);
}

static int eval_errors(lua_State *L)
{
    leval *ev = luaL_checkudata(L, 1, EVAL_MT);
    lua_Integer id = luaL_checkinteger(L, 2);
    if (!ev->ran)
        return luaL_error(L, "evaluation:errors before evaluation:run");
    if (id < 1 || (size_t)id > ev->n)
        return luaL_error(L, "no evaluation #%d", (int)id);
    const eval_set *set = ev->sets[id - 1];
    hstat *st = NULL;
    qerror e = {0};
    eval_result *r = lua_newuserdatauv(L, set->n * sizeof *r, 0);
    int rc = pass_finalize(ev->p, (int)id - 1, &st, &e) || eval_results(st, set->n, r, &e);
    hstat_free(st);
    if (rc)
        return lq_raise(L, &e);
    lua_createtable(L, (int)set->n, 0);
    for (uint64_t k = 0; k < set->n; k++) {
        push_errors(L, &r[k], set->layer != NULL);
        lua_rawseti(L, -2, (lua_Integer)k + 1);
    }
    return 1;
}

/* ---- qcal.candidates -------------------------------------------------------------------- */

static double field_num(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : NAN;
    lua_pop(L, 1);
    return v;
}

/* Overall range of a candidate's range table (per channel: min of lo, max of hi). */
static void overall_range(lua_State *L, int idx, double *lo, double *hi)
{
    lua_getfield(L, idx, "range");
    luaL_checktype(L, -1, LUA_TTABLE);
    double *l, *h;
    uint64_t n = lq_check_range(L, lua_gettop(L), &l, &h, "qcal.candidates");
    *lo = l[0], *hi = h[0];
    for (uint64_t i = 1; i < n; i++)
        *lo = l[i] < *lo ? l[i] : *lo, *hi = h[i] > *hi ? h[i] : *hi;
    lua_pop(L, 5); /* range, lo, hi, two arrays */
}

/* qcal.candidates(tensor, list, chosen [, criterion]): what a strategy tried, for the results
 * file's /candidates/<tensor> (each entry: method, range, and any of mse, sqnr_db, cosine,
 * layer_error); chosen is the 1-based index kept (0: none). */
int lq_candidates(lua_State *L)
{
    lua_qcal_ctx *ctx = lq_ctx(L);
    dump *d;
    size_t ti = lq_check_tensor(L, 1, &d);
    const dump_tensor *t = dump_get(d, ti);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer chosen = luaL_checkinteger(L, 3);
    const char *criterion = luaL_optstring(L, 4, "mse");
    lua_Unsigned n = lua_rawlen(L, 2);
    result_candidates c = {.tensor = t->name, .n = n, .chosen = chosen - 1, .criterion = (char *)criterion};
    c.method = lua_newuserdatauv(L, (n ? n : 1) * sizeof *c.method, 0);
    c.lo = lua_newuserdatauv(L, 6 * (n ? n : 1) * sizeof *c.lo, 0);
    c.hi = c.lo + n, c.mse = c.hi + n, c.sqnr_db = c.mse + n, c.cosine = c.sqnr_db + n;
    c.layer_error = c.cosine + n;
    for (lua_Unsigned k = 0; k < n; k++) {
        lua_rawgeti(L, 2, (lua_Integer)k + 1);
        int idx = lua_gettop(L);
        luaL_checktype(L, idx, LUA_TTABLE);
        lua_getfield(L, idx, "method");
        /* the list's own string (kept alive by the list): a number would be converted into a
         * new string that the pop below leaves to the collector */
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "qcal.candidates: candidate %d: expected method to be a string, "
                              "found a %s", (int)k + 1, luaL_typename(L, -1));
        c.method[k] = (char *)luaL_optstring(L, -1, "candidate");
        lua_pop(L, 1);
        overall_range(L, idx, &c.lo[k], &c.hi[k]);
        c.mse[k] = field_num(L, idx, "mse"), c.sqnr_db[k] = field_num(L, idx, "sqnr_db");
        c.cosine[k] = field_num(L, idx, "cosine"), c.layer_error[k] = field_num(L, idx, "layer_error");
        lua_pop(L, 1);
    }
    qerror e = {0};
    if (results_add_candidates(ctx->res, &c, &e))
        return lq_raise(L, &e);
    return 0;
}

void lq_eval_metatable(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", eval_add}, {"run", eval_run}, {"errors", eval_errors}, {NULL, NULL},
    };
    lq_new_class(L, EVAL_MT, methods, eval_gc);
}
