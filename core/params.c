/* params.c - validating user values against a plugin's parameter declarations */
#include "params.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUGGEST_DISTANCE 2 /* "did you mean" only for names this close */

/* ---- numbers as people write them -------------------------------------------------------- */

/* Integral values without exponent ("65536"), others in the shortest form that reads back
 * exactly ("0.01", not "0.01000000000000000021"). */
static void format_number(double x, char *buf, size_t size)
{
    if (x == floor(x) && fabs(x) < 1e15) {
        snprintf(buf, size, "%.0f", x);
        return;
    }
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(buf, size, "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            return;
    }
}

static int name_ok(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

static size_t choice_count(const char *const *choices)
{
    size_t n = 0;
    while (choices && choices[n])
        n++;
    return n;
}

/* ---- declarations ------------------------------------------------------------------------ */

static int bounds_check(const qcal_param *p, qerror *e)
{
    char lo[40], hi[40], def[40];
    if (isnan(p->min) || isnan(p->max))
        return qerror_set(e, QERR_CONFIG, "parameter '%s': bounds must be numbers", p->name);
    format_number(p->min, lo, sizeof lo);
    format_number(p->max, hi, sizeof hi);
    if (p->min > p->max)
        return qerror_set(e, QERR_CONFIG, "parameter '%s': min %s is above max %s", p->name, lo,
                          hi);
    double d = p->type == QCAL_PARAM_INT ? (double)p->def.i : p->def.f;
    format_number(d, def, sizeof def);
    if (!isfinite(d) || d < p->min || d > p->max)
        return qerror_set(e, QERR_CONFIG, "parameter '%s': default %s is outside [%s, %s]",
                          p->name, def, lo, hi);
    return 0;
}

static int choice_check(const qcal_param *p, qerror *e)
{
    size_t n = choice_count(p->choices);
    if (n == 0)
        return qerror_set(e, QERR_CONFIG, "parameter '%s': a choice needs at least one name",
                          p->name);
    for (size_t k = 0; k < n; k++)
        if (!p->choices[k][0])
            return qerror_set(e, QERR_CONFIG, "parameter '%s': choice %zu is empty", p->name, k);
    if (p->def.i < 0 || (uint64_t)p->def.i >= n)
        return qerror_set(e, QERR_CONFIG,
                          "parameter '%s': default index %lld is not one of its %zu choices",
                          p->name, (long long)p->def.i, n);
    return 0;
}

static int decl_check(const qcal_param *decl, uint32_t i, qerror *e)
{
    const qcal_param *p = &decl[i];
    if (!name_ok(p->name))
        return qerror_set(e, QERR_CONFIG, "parameter %u: name '%s' must match [a-z0-9_]+", i,
                          p->name ? p->name : "(null)");
    for (uint32_t k = 0; k < i; k++)
        if (!strcmp(decl[k].name, p->name))
            return qerror_set(e, QERR_CONFIG, "parameter '%s' is declared twice", p->name);
    if (p->flags)
        return qerror_set(e, QERR_CONFIG, "parameter '%s': flags 0x%x are reserved and must be 0",
                          p->name, p->flags);
    if (!p->help)
        return qerror_set(e, QERR_CONFIG, "parameter '%s': help is missing", p->name);
    switch (p->type) {
    case QCAL_PARAM_INT:
    case QCAL_PARAM_FLOAT:
        return bounds_check(p, e);
    case QCAL_PARAM_BOOL:
        if (p->def.i != 0 && p->def.i != 1)
            return qerror_set(e, QERR_CONFIG, "parameter '%s': a bool default must be 0 or 1, "
                              "got %lld", p->name, (long long)p->def.i);
        return 0;
    case QCAL_PARAM_CHOICE:
        return choice_check(p, e);
    default:
        return qerror_set(e, QERR_CONFIG, "parameter '%s': unknown type %u", p->name, p->type);
    }
}

int params_check_decls(const qcal_param *decl, uint32_t n, qerror *e)
{
    if (n > 0 && !decl)
        return qerror_set(e, QERR_CONFIG, "%u parameters declared but the array is NULL", n);
    for (uint32_t i = 0; i < n; i++)
        if (decl_check(decl, i, e))
            return -1;
    return 0;
}

/* ---- "did you mean" ---------------------------------------------------------------------- */

/* Levenshtein distance, capped: anything beyond `cap` reads as cap + 1. */
static size_t edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) > cap)
        return cap + 1;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] > cap ? cap + 1 : row[lb];
}

static const char *closest_name(const char *const *names, size_t n, const char *key)
{
    const char *best = NULL;
    size_t best_d = SUGGEST_DISTANCE + 1;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(key, names[i], SUGGEST_DISTANCE);
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    return best;
}

int params_unknown_key(const char *what, const char *const *names, size_t n, const char *key,
                       qerror *e)
{
    if (n == 0)
        return qerror_set(e, QERR_USAGE, "%s takes no parameters, got '%s'", what, key);
    char known[QERROR_MSG_SIZE / 2] = "", hint[160] = "";
    size_t len = 0;
    for (size_t i = 0; i < n && len < sizeof known; i++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "", names[i]);
    const char *near = closest_name(names, n, key);
    if (near)
        snprintf(hint, sizeof hint, " (did you mean '%s'?)", near);
    return qerror_set(e, QERR_USAGE, "%s: unknown parameter '%s'%s; known: %s", what, key, hint,
                      known);
}

static int unknown_key(const char *what, const qcal_param *decl, uint32_t n, const char *key,
                       qerror *e)
{
    const char **names = malloc((n ? n : 1) * sizeof *names);
    if (!names)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    for (uint32_t i = 0; i < n; i++)
        names[i] = decl[i].name;
    params_unknown_key(what, names, n, key, e);
    free(names);
    return -1;
}

/* ---- one value --------------------------------------------------------------------------- */

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || isspace((unsigned char)*s) || *end || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || isspace((unsigned char)*s) || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int64_t *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (int k = 0; k < 4; k++) {
        if (!strcmp(s, yes[k]))
            return *out = 1, 0;
        if (!strcmp(s, no[k]))
            return *out = 0, 0;
    }
    return -1;
}

static int parse_choice(const qcal_param *p, const char *s, int64_t *out)
{
    for (size_t k = 0; p->choices[k]; k++)
        if (!strcmp(p->choices[k], s))
            return *out = (int64_t)k, 0;
    return -1;
}

static int choice_error(const char *what, const qcal_param *p, const char *got, qerror *e)
{
    char list[QERROR_MSG_SIZE / 2] = "";
    size_t len = 0;
    for (size_t k = 0; p->choices[k] && len < sizeof list; k++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", k ? ", " : "",
                                p->choices[k]);
    return qerror_set(e, QERR_USAGE, "%s: parameter '%s' must be one of %s, got '%s'", what,
                      p->name, list, got);
}

static const char *type_word(uint32_t type)
{
    switch (type) {
    case QCAL_PARAM_INT:
        return "an integer";
    case QCAL_PARAM_FLOAT:
        return "a finite number";
    case QCAL_PARAM_BOOL:
        return "a boolean";
    default:
        return "a name";
    }
}

static const char *input_word(int type)
{
    switch (type) {
    case PARAM_IN_INT:
        return "an integer";
    case PARAM_IN_FLOAT:
        return "a number";
    case PARAM_IN_BOOL:
        return "a boolean";
    default:
        return "a string";
    }
}

/* TEXT input -> the declared type. */
static int from_text(const char *what, const qcal_param *p, const char *s, qcal_value *v,
                     qerror *e)
{
    int rc;
    switch (p->type) {
    case QCAL_PARAM_INT:
        rc = parse_int(s, &v->i);
        break;
    case QCAL_PARAM_FLOAT:
        rc = parse_float(s, &v->f);
        break;
    case QCAL_PARAM_BOOL:
        rc = parse_bool(s, &v->i);
        break;
    default:
        return parse_choice(p, s, &v->i) ? choice_error(what, p, s, e) : 0;
    }
    if (rc)
        return qerror_set(e, QERR_USAGE, "%s: parameter '%s' expects %s%s, got '%s'", what,
                          p->name, type_word(p->type),
                          p->type == QCAL_PARAM_BOOL ? " (true/false, yes/no, on/off, 1/0)" : "",
                          s);
    return 0;
}

/* Typed input (from Lua) -> the declared type. */
static int from_typed(const char *what, const qcal_param *p, const param_input *in,
                      qcal_value *v, qerror *e)
{
    int ok = 0;
    if (p->type == QCAL_PARAM_INT && in->type == PARAM_IN_INT) {
        v->i = in->i, ok = 1;
    } else if (p->type == QCAL_PARAM_INT && in->type == PARAM_IN_FLOAT) {
        ok = isfinite(in->f) && in->f == floor(in->f) && fabs(in->f) < 9.2e18;
        if (ok)
            v->i = (int64_t)in->f;
        else if (isfinite(in->f))
            return qerror_set(e, QERR_USAGE, "%s: parameter '%s' expects an integer, got %g",
                              what, p->name, in->f);
    } else if (p->type == QCAL_PARAM_FLOAT && in->type == PARAM_IN_INT) {
        v->f = (double)in->i, ok = 1;
    } else if (p->type == QCAL_PARAM_FLOAT && in->type == PARAM_IN_FLOAT) {
        ok = isfinite(in->f);
        v->f = in->f;
    } else if (p->type == QCAL_PARAM_BOOL && in->type == PARAM_IN_BOOL) {
        v->i = in->i != 0, ok = 1;
    } else if (p->type == QCAL_PARAM_CHOICE && in->type == PARAM_IN_STRING) {
        if (!in->s || parse_choice(p, in->s, &v->i))
            return choice_error(what, p, in->s ? in->s : "(null)", e);
        ok = 1;
    }
    if (!ok)
        return qerror_set(e, QERR_USAGE, "%s: parameter '%s' expects %s, got %s", what, p->name,
                          type_word(p->type),
                          in->type == PARAM_IN_FLOAT ? "a non-finite number"
                                                     : input_word(in->type));
    return 0;
}

static int in_bounds(const char *what, const qcal_param *p, qcal_value v, qerror *e)
{
    if (p->type != QCAL_PARAM_INT && p->type != QCAL_PARAM_FLOAT)
        return 0;
    double d = p->type == QCAL_PARAM_INT ? (double)v.i : v.f;
    if (d >= p->min && d <= p->max)
        return 0;
    char lo[40], hi[40], got[40];
    format_number(p->min, lo, sizeof lo);
    format_number(p->max, hi, sizeof hi);
    if (p->type == QCAL_PARAM_INT)
        snprintf(got, sizeof got, "%lld", (long long)v.i);
    else
        format_number(v.f, got, sizeof got);
    return qerror_set(e, QERR_USAGE, "%s: parameter '%s' must be in [%s, %s], got %s", what,
                      p->name, lo, hi, got);
}

static int find_decl(const qcal_param *decl, uint32_t n, const char *key)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(decl[i].name, key))
            return (int)i;
    return -1;
}

static int resolve_one(const char *what, const qcal_param *decl, uint32_t n,
                       const param_input *in, size_t k, qcal_value *out, qerror *e)
{
    const param_input *p = &in[k];
    if (!p->key)
        return qerror_set(e, QERR_USAGE, "%s: a parameter has no name", what);
    for (size_t j = 0; j < k; j++)
        if (in[j].key && !strcmp(in[j].key, p->key))
            return qerror_set(e, QERR_USAGE, "%s: parameter '%s' is given twice", what, p->key);
    int i = find_decl(decl, n, p->key);
    if (i < 0)
        return unknown_key(what, decl, n, p->key, e);
    qcal_value v = {0};
    int rc;
    if (p->type == PARAM_IN_TEXT)
        rc = from_text(what, &decl[i], p->s ? p->s : "", &v, e);
    else
        rc = from_typed(what, &decl[i], p, &v, e);
    if (rc || in_bounds(what, &decl[i], v, e))
        return -1;
    out[i] = v;
    return 0;
}

int params_resolve(const char *what, const qcal_param *decl, uint32_t n,
                   const param_input *in, size_t n_in, qcal_value *out, qerror *e)
{
    if (!what)
        what = "parameters";
    for (uint32_t i = 0; i < n; i++)
        out[i] = decl[i].def;
    for (size_t k = 0; k < n_in; k++)
        if (resolve_one(what, decl, n, in, k, out, e))
            return -1;
    return 0;
}

/* ---- text -------------------------------------------------------------------------------- */

int params_parse_kv(char *buf, param_input *out, qerror *e)
{
    char *eq = strchr(buf, '=');
    if (!eq)
        return qerror_set(e, QERR_USAGE, "expected key=value, got '%s'", buf);
    if (eq == buf)
        return qerror_set(e, QERR_USAGE, "expected key=value with a name before '=', got '%s'",
                          buf);
    *eq = '\0';
    memset(out, 0, sizeof *out);
    out->key = buf;
    out->type = PARAM_IN_TEXT;
    out->s = eq + 1;
    return 0;
}

void params_format(const qcal_param *p, qcal_value v, char *buf, size_t size)
{
    if (!size)
        return;
    switch (p->type) {
    case QCAL_PARAM_INT:
        snprintf(buf, size, "%lld", (long long)v.i);
        break;
    case QCAL_PARAM_FLOAT:
        format_number(v.f, buf, size);
        break;
    case QCAL_PARAM_BOOL:
        snprintf(buf, size, "%s", v.i ? "true" : "false");
        break;
    case QCAL_PARAM_CHOICE:
        if (v.i >= 0 && (uint64_t)v.i < choice_count(p->choices))
            snprintf(buf, size, "%s", p->choices[v.i]);
        else
            snprintf(buf, size, "#%lld", (long long)v.i);
        break;
    default:
        snprintf(buf, size, "?");
    }
}

void params_format_all(const qcal_param *decl, uint32_t n, const qcal_value *values, char *buf,
                       size_t size)
{
    size_t len = 0;
    if (size)
        buf[0] = '\0';
    for (uint32_t k = 0; k < n && len + 1 < size; k++) {
        char v[96];
        params_format(&decl[k], values[k], v, sizeof v);
        int w = snprintf(buf + len, size - len, "%s%s=%s", k ? " " : "", decl[k].name, v);
        len += w > 0 ? (size_t)w : 0;
    }
}
