/* lua_qcal.h - the `qcal` Lua module that recipes use */
#ifndef QCAL_LUA_QCAL_H
#define QCAL_LUA_QCAL_H

#include <lua.h>

#include "dump.h"
#include "recipe.h"
#include "results.h"

/* What the module works on during one recipe run. */
typedef struct lua_qcal_ctx {
    const recipe_options *o;
    const char *recipe_name;  /* for messages and the results file */
    dump *d;                  /* NULL while describing; virtual when re-estimating */
    const results *saved;     /* passes load their states from here: re-estimating, or what
                                 `qcal observe` was given */
    int reestimating;         /* d is the statistics' description only: no values to read */
    dump *weights;            /* the /weights view, opened on first use (== d when virtual) */
    struct layer *layers;     /* /layers of the dump, read on first use (layers_loaded) */
    size_t n_layers;
    int layers_loaded;
    results *res;
    int committed;
    int describing;           /* qcal.params records its defaults, then stops the script */
    int observed;             /* `qcal observe` streamed its pass (and stopped the script) */
    recipe_param *described;
    size_t n_described, cap_described;
    qerror raised;            /* the last host error raised into the script (code 0: none):
                                 when the script dies of it, it is reported with its own code */
} lua_qcal_ctx;

/* Registers `qcal` in package.preload, bound to ctx (which must outlive the state). */
void lua_qcal_install(lua_State *L, lua_qcal_ctx *ctx);
/* The error objects that end a script successfully: qcal.params when describing, pass:run
 * after the observed pass of `qcal observe`. */
int lua_qcal_is_stop(lua_State *L, int idx);
/* Writes the results to o->output (once). */
int lua_qcal_commit(lua_qcal_ctx *ctx, qerror *e);

#endif
