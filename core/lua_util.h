/* lua_util.h - what the parts of the `qcal` Lua module share (lua_qcal.c, lua_eval.c) */
#ifndef QCAL_LUA_UTIL_H
#define QCAL_LUA_UTIL_H

#include <lauxlib.h>
#include <lua.h>

#include "lua_qcal.h"
#include "qcal/plugin.h"

lua_qcal_ctx *lq_ctx(lua_State *L);
/* Raises a Lua error carrying e's message, prefixed with the recipe's file:line. */
int lq_raise(lua_State *L, const qerror *e);
/* The dump index of the tensor named (or described by a tensor table) at idx; errors if none. */
size_t lq_check_tensor(lua_State *L, int idx, dump **d);
/* A spec table at idx; per-channel specs without axis take default_axis. */
void lq_check_spec(lua_State *L, int idx, int default_axis, qcal_qspec *out);
/* A userdata class: metatable `name` whose __index holds `methods`, with a __gc. */
void lq_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc);
/* options.key at idx (a table, or absent): a count >= 0, def when absent. */
uint64_t lq_opt_count(lua_State *L, int idx, const char *key, uint64_t def, const char *what);
/* range.lo / range.hi at idx (numbers, or per-channel tables) into arrays held by two
 * userdata pushed on the stack; returns the channel count. `what` names the caller. */
uint64_t lq_check_range(lua_State *L, int idx, double **lo, double **hi, const char *what);

/* lua_eval.c: qcal.evaluation(), qcal.layers(), qcal.candidates(), and their metatable. */
int lq_evaluation(lua_State *L);
int lq_layers(lua_State *L);
int lq_candidates(lua_State *L);
void lq_eval_metatable(lua_State *L);

#endif
