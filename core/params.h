/* params.h - validating user values against a plugin's parameter declarations */
#ifndef QCAL_PARAMS_H
#define QCAL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "qcal/plugin.h"

/* One value given by the user: from Lua (typed) or from key=value text (PARAM_IN_TEXT). */
enum { PARAM_IN_INT = 1, PARAM_IN_FLOAT, PARAM_IN_BOOL, PARAM_IN_STRING, PARAM_IN_TEXT };

typedef struct param_input {
    const char *key;
    int type;       /* PARAM_IN_* */
    int64_t i;      /* INT, BOOL */
    double f;       /* FLOAT */
    const char *s;  /* STRING, TEXT */
} param_input;

/* Checks a plugin's declarations themselves (names, types, defaults in bounds, flags 0). */
int params_check_decls(const qcal_param *decl, uint32_t n, qerror *e);

/* Fills out[n] with defaults, then the inputs. Refuses unknown keys (with a suggestion),
 * wrong types, non-finite or out-of-bounds values and unknown choices. `what` names the
 * method in messages ("observer 'histogram'"). */
int params_resolve(const char *what, const qcal_param *decl, uint32_t n,
                   const param_input *in, size_t n_in, qcal_value *out, qerror *e);

/* The error for `key`, none of names[n]: lists them and suggests the closest ("did you
 * mean"); QERR_USAGE. Returns -1. */
int params_unknown_key(const char *what, const char *const *names, size_t n, const char *key,
                       qerror *e);

/* Parses "key=value" into a PARAM_IN_TEXT input (key and value point into buf, modified). */
int params_parse_kv(char *buf, param_input *out, qerror *e);

/* Formats a value for display ("2048", "99.99", "true", "trt"). */
void params_format(const qcal_param *p, qcal_value v, char *buf, size_t size);
/* "bins=2048 abs=false": every value in declaration order; the form saved with statistics,
 * so a later run with the same parameters finds them. */
void params_format_all(const qcal_param *decl, uint32_t n, const qcal_value *values, char *buf,
                       size_t size);

#endif
