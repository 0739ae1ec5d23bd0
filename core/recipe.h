/* recipe.h - running Lua recipes: the sandbox, limits, and the `qcal` module */
#ifndef QCAL_RECIPE_H
#define QCAL_RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "params.h"
#include "pass.h"
#include "registry.h"
#include "results.h"

typedef struct recipe_options {
    const char *recipe;          /* a bundled name ("minmax") or a path to a .lua file */
    const char *dump_path;       /* the dump the recipe calibrates, or NULL with: */
    const char *const *dump_paths; /* or several files read as one (dump_open_many) */
    size_t n_dump_paths;
    const char *from_statistics; /* a results file whose saved observer states passes load
                                    instead of reading a dump (re-estimation) */
    const char *output;          /* results file; NULL: the recipe writes nothing */
    int observe;                 /* `qcal observe`: stream the first pass the statistics do not
                                    hold (over pass.share_*), save the states, stop */
    int force;                   /* overwrite an existing output */
    int unsafe;                  /* lift the sandbox */
    const param_input *params;   /* key=value parameters from the command line */
    size_t n_params;
    results **written;           /* when set: receives what was written to output (the
                                    caller frees it), NULL when nothing was */
    pass_options pass;           /* threads, slab size, batch size for every pass */
    registry *reg;
    size_t memory_limit;         /* bytes the Lua state may hold; 0: default (1 GiB) */
    uint64_t instruction_limit;  /* Lua VM instructions; 0: default (10^9) */
    /* Receives print() output and error tracebacks, one chunk of text at a time. */
    void (*log)(void *ud, const char *text);
    void *log_ud;
} recipe_options;

void recipe_defaults(recipe_options *o);

/* The path of a recipe: a name is looked up in the recipe directory, a path is taken as is.
 * Writes into buf; returns -1 with an error when no such recipe exists. */
int recipe_resolve(const char *recipe, char *buf, size_t size, qerror *e);
/* The directory of bundled recipes. */
const char *recipe_dir(void);

/* Runs a recipe. On success the results (if any) are in o->output. On failure nothing is
 * written; e holds one line ("minmax.lua:12: ..."), the traceback goes to o->log. */
int recipe_run(const recipe_options *o, qerror *e);

/* The tensors a results file's saved statistics describe, as a dump without values (what
 * passes load saved observer states against). */
int recipe_saved_dump(const results *saved, const char *path, dump **d, qerror *e);

/* One declared recipe parameter, as `qcal list` shows it. */
typedef struct recipe_param {
    char name[64];
    char type[16];   /* "integer", "number", "boolean", "string" */
    char value[128]; /* the default, formatted */
} recipe_param;

/* Reads a recipe's parameters (its qcal.params{...} call) without running its passes. */
int recipe_describe(const char *path, recipe_param *out, size_t cap, size_t *n, qerror *e);

#endif
