/* recipe.c - running Lua recipes in a sandbox with memory and instruction limits */
#include "recipe.h"

#include "dist.h"

#include "layer.h"

#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lua_qcal.h"

#define DEFAULT_MEMORY_LIMIT ((size_t)1 << 30)
#define DEFAULT_INSTRUCTION_LIMIT 1000000000ull
#define HOOK_EVERY 1000 /* instructions between two budget checks */

typedef struct limits {
    size_t used, limit;
    uint64_t instructions, instruction_limit;
    int memory_hit;
} limits;

void recipe_defaults(recipe_options *o)
{
    memset(o, 0, sizeof *o);
    pass_defaults(&o->pass);
}

/* ---- where recipes live --------------------------------------------------------------- */

/* Running from the build tree, recipes come from the source tree; installed, from datadir. */
const char *recipe_dir(void)
{
    static char dir[PATH_MAX];
    if (dir[0])
        return dir;
    const char *env = getenv("QCAL_RECIPE_DIR");
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    int in_build = n > 0 && !strncmp(exe, QCAL_BUILD_ROOT "/", strlen(QCAL_BUILD_ROOT "/"));
    snprintf(dir, sizeof dir, "%s",
             env && *env ? env : in_build ? QCAL_SOURCE_RECIPE_DIR : QCAL_RECIPE_DIR);
    return dir;
}

static int is_path(const char *recipe)
{
    size_t n = strlen(recipe);
    return strchr(recipe, '/') || (n > 4 && !strcmp(recipe + n - 4, ".lua"));
}

int recipe_resolve(const char *recipe, char *buf, size_t size, qerror *e)
{
    if (is_path(recipe))
        snprintf(buf, size, "%s", recipe);
    else
        snprintf(buf, size, "%s/%s.lua", recipe_dir(), recipe);
    struct stat st;
    if (stat(buf, &st) || !S_ISREG(st.st_mode))
        return qerror_set(e, QERR_NOINPUT,
                          is_path(recipe) ? "%s: no such recipe file" : "no bundled recipe '%s' "
                          "(looked for %s; `qcal list` shows the recipes)", recipe, buf);
    return 0;
}

static void recipe_name_of(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    snprintf(buf, size, "%s", slash ? slash + 1 : path);
    size_t n = strlen(buf);
    if (n > 4 && !strcmp(buf + n - 4, ".lua"))
        buf[n - 4] = '\0';
}

/* ---- limits --------------------------------------------------------------------------- */

/* A capped allocator: refusing an allocation makes Lua raise a memory error. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    limits *lim = ud;
    size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag, not a size */
    if (nsize == 0) {
        free(ptr);
        lim->used -= old;
        return NULL;
    }
    if (nsize > old && lim->used - old + nsize > lim->limit) {
        lim->memory_hit = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p)
        lim->used = lim->used - old + nsize;
    return p;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    limits *lim;
    lua_getallocf(L, (void **)&lim);
    lim->instructions += HOOK_EVERY;
    if (lim->instructions <= lim->instruction_limit)
        return;
    /* from now on before every instruction: a pcall that catches the error returns to code
     * that raises it again at once, so no loop of pcalls outlives the budget */
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
    lua_Debug where; /* level 0 is the interrupted Lua function: name its line */
    int line = -1;
    const char *source = "?";
    if (lua_getstack(L, 0, &where) && lua_getinfo(L, "Sl", &where)) {
        line = where.currentline;
        source = where.short_src;
    }
    lua_pushfstring(L, "%s:%d: instruction budget of %I exceeded (raise it with "
                    "--max-instructions)", source, line, (lua_Integer)lim->instruction_limit);
    lua_error(L);
}

/* ---- the sandbox ---------------------------------------------------------------------- */

/* load() that only ever accepts text chunks. */
static int text_load(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, s);
    int env = !lua_isnone(L, 4) ? 4 : 0;
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (env) {
        lua_pushvalue(L, env);
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    }
    return 1;
}

static int log_print(lua_State *L)
{
    lua_getglobal(L, "qcal_internal_log");
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 0);
    return 0;
}

static void remove_field(lua_State *L, const char *table, const char *field)
{
    if (lua_getglobal(L, table) == LUA_TTABLE) {
        lua_pushnil(L);
        lua_setfield(L, -2, field);
    }
    lua_pop(L, 1);
}

static void open_safe_libs(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_LOADLIBNAME, luaopen_package},
        {LUA_COLIBNAME, luaopen_coroutine}, {LUA_TABLIBNAME, luaopen_table},
        {LUA_OSLIBNAME, luaopen_os},      {LUA_STRLIBNAME, luaopen_string},
        {LUA_MATHLIBNAME, luaopen_math},  {LUA_UTF8LIBNAME, luaopen_utf8},
        {NULL, NULL},
    };
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
}

/* Leaves only what cannot reach outside the process: no io, debug, C modules, bytecode,
 * commands, environment, or file system writes. */
static void apply_sandbox(lua_State *L)
{
    static const char *const os_removed[] = {"execute", "exit", "getenv", "remove", "rename",
                                             "tmpname", "setlocale", NULL};
    for (const char *const *f = os_removed; *f; f++)
        remove_field(L, LUA_OSLIBNAME, *f);
    remove_field(L, LUA_STRLIBNAME, "dump");
    remove_field(L, LUA_LOADLIBNAME, "loadlib");
    static const char *const globals_removed[] = {"dofile", "loadfile", "collectgarbage", NULL};
    for (const char *const *g = globals_removed; *g; g++) {
        lua_pushnil(L);
        lua_setglobal(L, *g);
    }
    lua_pushcfunction(L, text_load);
    lua_setglobal(L, "load");
    lua_getglobal(L, LUA_LOADLIBNAME);
    lua_pushstring(L, "");
    lua_setfield(L, -2, "cpath");
    lua_getfield(L, -1, "searchers"); /* keep preload and the Lua searcher only */
    lua_pushnil(L);
    lua_rawseti(L, -2, 4);
    lua_pushnil(L);
    lua_rawseti(L, -2, 3);
    lua_pop(L, 2);
}

typedef struct setup_args {
    lua_qcal_ctx *ctx;
    const char *path;
    int unsafe;
} setup_args;

/* Runs protected (lua_pcall), so a memory error while setting up is an error, not a panic. */
static int setup_state(lua_State *L)
{
    const setup_args *a = lua_touserdata(L, 1);
    lua_qcal_ctx *ctx = a->ctx;
    const char *path = a->path;
    int unsafe = a->unsafe;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    if (unsafe)
        luaL_openlibs(L);
    else {
        open_safe_libs(L);
        apply_sandbox(L);
    }
    /* Modules: beside the recipe, then the bundled helpers (scripts/lib). */
    lua_getglobal(L, LUA_LOADLIBNAME);
    lua_pushfstring(L, "%s/?.lua;%s/lib/?.lua", dir, recipe_dir());
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    lua_qcal_install(L, ctx);
    lua_getglobal(L, "require");
    lua_pushstring(L, "qcal");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "log");
    lua_setglobal(L, "qcal_internal_log");
    lua_pop(L, 1);
    lua_pushcfunction(L, log_print); /* print goes to the log (stderr), never to stdout */
    lua_setglobal(L, "print");
    lua_getglobal(L, LUA_MATHLIBNAME); /* reproducible math.random */
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, 42);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 0;
}

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (lua_qcal_is_stop(L, 1))
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ---- running -------------------------------------------------------------------------- */

static void log_text(const recipe_options *o, const char *text)
{
    if (o->log)
        o->log(o->log_ud, text);
}

/* Whether the first line of msg (len bytes) ends with the text of host error `raised`. */
static int ends_with_host_error(const char *msg, int len, const qerror *raised)
{
    size_t n = strlen(raised->msg);
    return raised->code && n && (size_t)len >= n && !memcmp(msg + len - n, raised->msg, n);
}

/* Turns a failed pcall into one error line (first line of the message; the traceback too
 * with QCAL_DEBUG set). A
 * host error that ended the script (a corrupt dump, a failing plugin, a full disk) keeps its
 * exit code and comes as its one line, after the recipe's file:line, without a traceback: it
 * is about the input, not the script. */
static int script_failed(lua_State *L, int status, const char *name, const limits *lim,
                         const recipe_options *o, const lua_qcal_ctx *ctx, qerror *e)
{
    if (status == LUA_ERRMEM || lim->memory_hit)
        return qerror_set(e, QERR_CONFIG, "recipe '%s': memory limit of %zu MiB exceeded "
                          "(raise it with --max-memory)", name, lim->limit >> 20);
    const char *msg = lua_tostring(L, -1);
    if (!msg)
        msg = "error object is not a string";
    const char *newline = strchr(msg, '\n');
    int first_len = newline ? (int)(newline - msg) : (int)strlen(msg);
    if (ends_with_host_error(msg, first_len, &ctx->raised))
        return qerror_set(e, ctx->raised.code, "%.*s", first_len, msg);
    if (newline && getenv("QCAL_DEBUG")) { /* else the error stays one line */
        log_text(o, newline + 1);
        log_text(o, "\n");
    }
    return qerror_set(e, QERR_CONFIG, "recipe error: %.*s", first_len, msg);
}

static int run_chunk(lua_State *L, const char *path, const char *name, const limits *lim,
                     const recipe_options *o, lua_qcal_ctx *ctx, qerror *e)
{
    lua_pushcfunction(L, traceback_handler);
    int handler = lua_gettop(L);
    int status = luaL_loadfilex(L, path, "t");
    if (status == LUA_OK)
        status = lua_pcall(L, 0, 0, handler);
    if (status != LUA_OK) {
        if ((ctx->describing || ctx->observed) && lua_qcal_is_stop(L, -1))
            return 0;
        return script_failed(L, status, name, lim, o, ctx, e);
    }
    return 0;
}

static lua_State *new_state(limits *lim, const recipe_options *o)
{
    lim->limit = o->memory_limit ? o->memory_limit : DEFAULT_MEMORY_LIMIT;
    lim->instruction_limit = o->instruction_limit ? o->instruction_limit : DEFAULT_INSTRUCTION_LIMIT;
    lua_State *L = lua_newstate(limited_alloc, lim);
    if (L)
        lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    return L;
}

/* With several processes every rank's outcome is agreed on before rank 0 writes. */
static int agree_and_commit(lua_qcal_ctx *ctx, int rc, qerror *e)
{
    const dist *d = ctx->o->pass.dist;
    if (rc && d)
        d->agree(d, rc, e);
    return rc ? rc : lua_qcal_commit(ctx, e);
}

/* Runs the script at `path` with ctx; closes the state before returning. */
static int execute(const char *path, lua_qcal_ctx *ctx, const recipe_options *o, qerror *e)
{
    limits lim;
    memset(&lim, 0, sizeof lim);
    lua_State *L = new_state(&lim, o);
    if (!L)
        return qerror_set(e, QERR_SOFTWARE, "cannot create a Lua state");
    setup_args args = {ctx, path, o->unsafe};
    lua_pushcfunction(L, setup_state);
    lua_pushlightuserdata(L, &args);
    int rc = 0;
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        rc = script_failed(L, LUA_ERRRUN, ctx->recipe_name, &lim, o, ctx, e);
    else
        rc = run_chunk(L, path, ctx->recipe_name, &lim, o, ctx, e);
    if (!rc && ctx->o->observe && !ctx->observed)
        rc = qerror_set(e, QERR_DATA, "observe: the statistics already hold every pass of "
                        "recipe '%s': finish with `qcal run %s --from-statistics FILE`",
                        ctx->recipe_name, ctx->recipe_name);
    if (!ctx->describing)
        rc = agree_and_commit(ctx, rc, e);
    lua_close(L);
    return rc;
}

static int dtype_by_name(const char *name)
{
    for (int t = DUMP_F32; t <= DUMP_U64; t++)
        if (!strcmp(dump_dtype_name(t), name))
            return t;
    return DUMP_F32;
}

int recipe_saved_dump(const results *saved, const char *path, dump **d, qerror *e)
{
    *d = NULL;
    if (saved->n_infos == 0)
        return qerror_set(e, QERR_DATA, "%s: expected saved statistics with tensor descriptions "
                          "(/statistics/<tensor> with a shape attribute), found none", path);
    if (dump_new_virtual(path, d, e))
        return -1;
    for (size_t i = 0; i < saved->n_infos; i++) {
        const result_info *in = &saved->infos[i];
        dump_tensor t = {.name = in->tensor, .orig_name = in->orig_name, .op_type = in->op_type,
                         .rank = in->rank, .channel_axis = in->channel_axis,
                         .dtype = dtype_by_name(in->dtype)};
        memcpy(t.dims, in->shape, sizeof t.dims);
        t.row_size = 1;
        for (int k = 1; k < in->rank; k++)
            t.row_size *= in->shape[k];
        if (dump_add_virtual(*d, &t, e))
            return -1;
    }
    return 0;
}

/* The tensors the saved statistics describe, as a dump without values. */
static int open_saved(const char *path, results **saved, dump **d, qerror *e)
{
    if (results_read(path, saved, e))
        return -1;
    if ((*saved)->share_count > 1) /* one share's statistics cover only its samples */
        return qerror_set(e, QERR_USAGE, "--from-statistics %s: expected the statistics of the "
                          "whole dump, found share %llu of %llu (fold the %llu shares with `qcal "
                          "merge` first)", path, (unsigned long long)(*saved)->share_index,
                          (unsigned long long)(*saved)->share_count,
                          (unsigned long long)(*saved)->share_count);
    return recipe_saved_dump(*saved, path, d, e);
}

/* The dump, and the saved statistics: instead of the dump to re-estimate, or besides it for
 * `qcal observe` (whose passes load what the statistics hold and stream the next one). */
static int open_inputs(const recipe_options *o, results **saved, dump **d, qerror *e)
{
    if (o->from_statistics && !o->observe)
        return open_saved(o->from_statistics, saved, d, e);
    if (o->from_statistics && results_read(o->from_statistics, saved, e))
        return -1;
    int rc = o->dump_paths ? dump_open_many(o->dump_paths, o->n_dump_paths, d, e)
                           : dump_open(o->dump_path, d, e);
    /* statistics of another dump would steer this one's next pass (kl's bins) */
    if (!rc && *saved && !results_same_source((*saved)->source, dump_source(*d)))
        rc = qerror_set(e, QERR_USAGE, "--from-statistics %s: expected statistics of %s, found "
                        "statistics of %s", o->from_statistics, dump_source(*d), (*saved)->source);
    return rc;
}

static int start_results(lua_qcal_ctx *ctx, const char *name, qerror *e)
{
    const recipe_options *o = ctx->o;
    ctx->res = results_new(name, ctx->saved ? ctx->saved->source : dump_source(ctx->d));
    if (!ctx->res)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    ctx->res->dump_has_weights = ctx->reestimating ? ctx->saved->dump_has_weights
                                                   : dump_has_weights(ctx->d);
    if (o->observe) {
        ctx->res->share_index = o->pass.share_count ? o->pass.share_index : 0;
        ctx->res->share_count = o->pass.share_count ? o->pass.share_count : 1;
    }
    return 0;
}

int recipe_run(const recipe_options *o, qerror *e)
{
    char path[PATH_MAX], name[256];
    if (recipe_resolve(o->recipe, path, sizeof path, e))
        return -1;
    recipe_name_of(path, name, sizeof name);
    lua_qcal_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.o = o;
    ctx.recipe_name = name;
    results *saved = NULL;
    int rc = open_inputs(o, &saved, &ctx.d, e);
    ctx.saved = saved;
    ctx.reestimating = o->from_statistics && !o->observe;
    if (!rc) /* statistics keep the dumps they came from as their source */
        rc = start_results(&ctx, name, e);
    if (!rc)
        rc = execute(path, &ctx, o, e);
    else if (o->pass.dist)
        o->pass.dist->agree(o->pass.dist, rc, e);
    if (o->written)
        *o->written = NULL;
    if (!rc && o->written && o->output) {
        *o->written = ctx.res;
        ctx.res = NULL;
    }
    results_free(ctx.res);
    results_free(saved);
    layers_free(ctx.layers, ctx.n_layers);
    if (ctx.weights != ctx.d)
        dump_close(ctx.weights);
    dump_close(ctx.d);
    return rc;
}

static int by_param_name(const void *a, const void *b)
{
    return strcmp(((const recipe_param *)a)->name, ((const recipe_param *)b)->name);
}

int recipe_describe(const char *path, recipe_param *out, size_t cap, size_t *n, qerror *e)
{
    recipe_options o;
    recipe_defaults(&o);
    char name[256];
    recipe_name_of(path, name, sizeof name);
    lua_qcal_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.o = &o;
    ctx.recipe_name = name;
    ctx.describing = 1;
    ctx.described = out;
    ctx.cap_described = cap;
    ctx.res = results_new(name, "");
    int rc = execute(path, &ctx, &o, e);
    results_free(ctx.res);
    *n = ctx.n_described;
    qsort(out, *n, sizeof *out, by_param_name); /* Lua tables have no order: sort for people */
    return rc;
}
