/* test_params.c - parameter declarations, user values and their messages */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "params.h"

static const char *const variants[] = {"trt", "nvpq", "ort", NULL};

/* What a histogram-like observer might declare. */
static const qcal_param decl[] = {
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 65536,
     .help = "bins"},
    {.name = "percentile", .type = QCAL_PARAM_FLOAT, .def = {.f = 99.99}, .min = 0, .max = 100,
     .help = "mass kept"},
    {.name = "symmetric", .type = QCAL_PARAM_BOOL, .def = {.i = 0}, .help = "on |x|"},
    {.name = "variant", .type = QCAL_PARAM_CHOICE, .def = {.i = 1}, .choices = variants,
     .help = "whose behaviour"},
};
#define N_DECL 4
#define WHAT "observer 'histogram'"

enum { BINS, PERCENTILE, SYMMETRIC, VARIANT };

/* ---- declarations ------------------------------------------------------------------------ */

static void expect_decl_error(const qcal_param *d, uint32_t n, const char *msg)
{
    qerror e = {0};
    cr_assert_eq(params_check_decls(d, n, &e), -1, "accepted; expected: %s", msg);
    cr_expect_str_eq(e.msg, msg);
    cr_expect_eq(e.code, QERR_CONFIG);
}

Test(params, good_declarations_pass)
{
    qerror e = {0};
    cr_expect_eq(params_check_decls(decl, N_DECL, &e), 0, "%s", e.msg);
    cr_expect_eq(params_check_decls(NULL, 0, &e), 0, "%s", e.msg);
}

Test(params, bad_names_refused)
{
    qcal_param d[2] = {decl[0], decl[1]};
    d[1].name = "Percentile";
    expect_decl_error(d, 2, "parameter 1: name 'Percentile' must match [a-z0-9_]+");
    d[1].name = "";
    expect_decl_error(d, 2, "parameter 1: name '' must match [a-z0-9_]+");
    d[1].name = NULL;
    expect_decl_error(d, 2, "parameter 1: name '(null)' must match [a-z0-9_]+");
    d[1].name = "bins";
    expect_decl_error(d, 2, "parameter 'bins' is declared twice");
}

Test(params, flags_type_and_help_checked)
{
    qcal_param d = decl[0];
    d.flags = 2;
    expect_decl_error(&d, 1, "parameter 'bins': flags 0x2 are reserved and must be 0");
    d = decl[0];
    d.type = 9;
    expect_decl_error(&d, 1, "parameter 'bins': unknown type 9");
    d = decl[0];
    d.help = NULL;
    expect_decl_error(&d, 1, "parameter 'bins': help is missing");
    expect_decl_error(NULL, 2, "2 parameters declared but the array is NULL");
}

Test(params, numeric_defaults_within_bounds)
{
    qcal_param d = decl[0];
    d.def.i = 3;
    expect_decl_error(&d, 1, "parameter 'bins': default 3 is outside [16, 65536]");
    d.def.i = 65537;
    expect_decl_error(&d, 1, "parameter 'bins': default 65537 is outside [16, 65536]");
    d = decl[0];
    d.min = 10, d.max = 5, d.def.i = 7;
    expect_decl_error(&d, 1, "parameter 'bins': min 10 is above max 5");
    d = decl[1];
    d.def.f = 100.5;
    expect_decl_error(&d, 1, "parameter 'percentile': default 100.5 is outside [0, 100]");
    d.def.f = NAN;
    expect_decl_error(&d, 1, "parameter 'percentile': default nan is outside [0, 100]");
    d = decl[1];
    d.min = NAN;
    expect_decl_error(&d, 1, "parameter 'percentile': bounds must be numbers");
    d = decl[1];
    d.def.f = 100.0; /* inclusive bounds */
    qerror e = {0};
    cr_expect_eq(params_check_decls(&d, 1, &e), 0, "%s", e.msg);
}

Test(params, bool_and_choice_defaults)
{
    qcal_param d = decl[2];
    d.def.i = 2;
    expect_decl_error(&d, 1, "parameter 'symmetric': a bool default must be 0 or 1, got 2");
    d = decl[3];
    d.def.i = 3;
    expect_decl_error(&d, 1, "parameter 'variant': default index 3 is not one of its 3 choices");
    d.def.i = -1;
    expect_decl_error(&d, 1, "parameter 'variant': default index -1 is not one of its 3 choices");
    d = decl[3];
    d.choices = NULL;
    expect_decl_error(&d, 1, "parameter 'variant': a choice needs at least one name");
    static const char *const none[] = {NULL};
    d.choices = none;
    expect_decl_error(&d, 1, "parameter 'variant': a choice needs at least one name");
    static const char *const empty[] = {"a", "", NULL};
    d.choices = empty;
    d.def.i = 0;
    expect_decl_error(&d, 1, "parameter 'variant': choice 1 is empty");
}

/* ---- resolving values -------------------------------------------------------------------- */

static void resolve_ok(const param_input *in, size_t n, qcal_value *out)
{
    qerror e = {0};
    cr_assert_eq(params_resolve(WHAT, decl, N_DECL, in, n, out, &e), 0, "%s", e.msg);
}

static void resolve_fails(const param_input *in, size_t n, const char *msg)
{
    qcal_value out[N_DECL];
    qerror e = {0};
    cr_assert_eq(params_resolve(WHAT, decl, N_DECL, in, n, out, &e), -1, "accepted: %s", msg);
    cr_expect_str_eq(e.msg, msg);
    cr_expect_eq(e.code, QERR_USAGE);
}

static param_input text(const char *key, const char *value)
{
    param_input p = {.key = key, .type = PARAM_IN_TEXT, .s = value};
    return p;
}

Test(params, defaults_fill_what_is_not_given)
{
    qcal_value out[N_DECL];
    resolve_ok(NULL, 0, out);
    cr_expect_eq(out[BINS].i, 2048);
    cr_expect_eq(out[PERCENTILE].f, 99.99);
    cr_expect_eq(out[SYMMETRIC].i, 0);
    cr_expect_eq(out[VARIANT].i, 1);
    param_input in[] = {text("symmetric", "on")};
    resolve_ok(in, 1, out);
    cr_expect_eq(out[SYMMETRIC].i, 1);
    cr_expect_eq(out[BINS].i, 2048);
}

Test(params, unknown_names_suggest_the_closest)
{
    param_input in[] = {text("binz", "3")};
    resolve_fails(in, 1, WHAT ": unknown parameter 'binz' (did you mean 'bins'?); known: bins, "
                         "percentile, symmetric, variant");
    in[0].key = "percentil";
    resolve_fails(in, 1, WHAT ": unknown parameter 'percentil' (did you mean 'percentile'?); "
                         "known: bins, percentile, symmetric, variant");
    in[0].key = "vrainat"; /* three edits away: no guess */
    resolve_fails(in, 1, WHAT ": unknown parameter 'vrainat'; known: bins, percentile, "
                         "symmetric, variant");
    qcal_value out[1];
    qerror e = {0};
    cr_assert_eq(params_resolve("observer 'minmax'", NULL, 0, in, 1, out, &e), -1);
    cr_expect_str_eq(e.msg, "observer 'minmax' takes no parameters, got 'vrainat'");
}

Test(params, duplicate_keys_refused)
{
    param_input in[] = {text("bins", "32"), text("symmetric", "1"), text("bins", "64")};
    resolve_fails(in, 3, WHAT ": parameter 'bins' is given twice");
}

Test(params, text_integers)
{
    qcal_value out[N_DECL];
    param_input in[] = {text("bins", "65536")};
    resolve_ok(in, 1, out);
    cr_expect_eq(out[BINS].i, 65536);
    in[0].s = "+16";
    resolve_ok(in, 1, out);
    cr_expect_eq(out[BINS].i, 16);
    const char *bad[] = {"12abc", "", " 12", "0x20", "2048.0", "99999999999999999999"};
    for (int k = 0; k < 6; k++) {
        char msg[200];
        snprintf(msg, sizeof msg, WHAT ": parameter 'bins' expects an integer, got '%s'",
                 bad[k]);
        in[0].s = bad[k];
        resolve_fails(in, 1, msg);
    }
    in[0].s = "3";
    resolve_fails(in, 1, WHAT ": parameter 'bins' must be in [16, 65536], got 3");
    in[0].s = "-9223372036854775808";
    resolve_fails(in, 1, WHAT ": parameter 'bins' must be in [16, 65536], got "
                         "-9223372036854775808");
}

Test(params, text_floats)
{
    qcal_value out[N_DECL];
    param_input in[] = {text("percentile", "99.999")};
    resolve_ok(in, 1, out);
    cr_expect_eq(out[PERCENTILE].f, 99.999);
    in[0].s = "1e1";
    resolve_ok(in, 1, out);
    cr_expect_eq(out[PERCENTILE].f, 10.0);
    const char *bad[] = {"nan", "inf", "-inf", "1e999", "abc", "5%", ""};
    for (int k = 0; k < 7; k++) {
        char msg[200];
        snprintf(msg, sizeof msg, WHAT ": parameter 'percentile' expects a finite number, "
                 "got '%s'", bad[k]);
        in[0].s = bad[k];
        resolve_fails(in, 1, msg);
    }
    in[0].s = "100.5";
    resolve_fails(in, 1, WHAT ": parameter 'percentile' must be in [0, 100], got 100.5");
    in[0].s = "-0.001";
    resolve_fails(in, 1, WHAT ": parameter 'percentile' must be in [0, 100], got -0.001");
}

Test(params, text_booleans)
{
    const char *yes[] = {"true", "1", "yes", "on"}, *no[] = {"false", "0", "no", "off"};
    qcal_value out[N_DECL];
    for (int k = 0; k < 4; k++) {
        param_input in[] = {text("symmetric", yes[k])};
        resolve_ok(in, 1, out);
        cr_expect_eq(out[SYMMETRIC].i, 1, "%s", yes[k]);
        in[0].s = no[k];
        out[SYMMETRIC].i = 7;
        resolve_ok(in, 1, out);
        cr_expect_eq(out[SYMMETRIC].i, 0, "%s", no[k]);
    }
    param_input in[] = {text("symmetric", "maybe")};
    resolve_fails(in, 1, WHAT ": parameter 'symmetric' expects a boolean (true/false, yes/no, "
                         "on/off, 1/0), got 'maybe'");
    in[0].s = "2";
    resolve_fails(in, 1, WHAT ": parameter 'symmetric' expects a boolean (true/false, yes/no, "
                         "on/off, 1/0), got '2'");
}

Test(params, text_choices)
{
    qcal_value out[N_DECL];
    param_input in[] = {text("variant", "ort")};
    resolve_ok(in, 1, out);
    cr_expect_eq(out[VARIANT].i, 2);
    in[0].s = "trt";
    resolve_ok(in, 1, out);
    cr_expect_eq(out[VARIANT].i, 0);
    in[0].s = "TRT";
    resolve_fails(in, 1, WHAT ": parameter 'variant' must be one of trt, nvpq, ort, got 'TRT'");
    in[0].s = "1";
    resolve_fails(in, 1, WHAT ": parameter 'variant' must be one of trt, nvpq, ort, got '1'");
}

Test(params, typed_values_convert_only_where_exact)
{
    qcal_value out[N_DECL];
    param_input in[] = {{.key = "percentile", .type = PARAM_IN_INT, .i = 90},
                        {.key = "bins", .type = PARAM_IN_FLOAT, .f = 4096.0},
                        {.key = "symmetric", .type = PARAM_IN_BOOL, .i = 1},
                        {.key = "variant", .type = PARAM_IN_STRING, .s = "nvpq"}};
    resolve_ok(in, 4, out);
    cr_expect_eq(out[PERCENTILE].f, 90.0);
    cr_expect_eq(out[BINS].i, 4096);
    cr_expect_eq(out[SYMMETRIC].i, 1);
    cr_expect_eq(out[VARIANT].i, 1);

    param_input one = {.key = "bins", .type = PARAM_IN_FLOAT, .f = 2.5};
    resolve_fails(&one, 1, WHAT ": parameter 'bins' expects an integer, got 2.5");
    one = (param_input){.key = "bins", .type = PARAM_IN_BOOL, .i = 1};
    resolve_fails(&one, 1, WHAT ": parameter 'bins' expects an integer, got a boolean");
    one = (param_input){.key = "bins", .type = PARAM_IN_STRING, .s = "64"};
    resolve_fails(&one, 1, WHAT ": parameter 'bins' expects an integer, got a string");
    one = (param_input){.key = "symmetric", .type = PARAM_IN_INT, .i = 1};
    resolve_fails(&one, 1, WHAT ": parameter 'symmetric' expects a boolean, got an integer");
    one = (param_input){.key = "variant", .type = PARAM_IN_INT, .i = 1};
    resolve_fails(&one, 1, WHAT ": parameter 'variant' expects a name, got an integer");
    one = (param_input){.key = "variant", .type = PARAM_IN_STRING, .s = "inc"};
    resolve_fails(&one, 1, WHAT ": parameter 'variant' must be one of trt, nvpq, ort, got 'inc'");
    one = (param_input){.key = "percentile", .type = PARAM_IN_FLOAT, .f = NAN};
    resolve_fails(&one, 1, WHAT ": parameter 'percentile' expects a finite number, got a "
                           "non-finite number");
    one = (param_input){.key = "percentile", .type = PARAM_IN_STRING, .s = "50"};
    resolve_fails(&one, 1, WHAT ": parameter 'percentile' expects a finite number, got a string");
}

Test(params, typed_values_bounded)
{
    param_input one = {.key = "bins", .type = PARAM_IN_INT, .i = 3};
    resolve_fails(&one, 1, WHAT ": parameter 'bins' must be in [16, 65536], got 3");
    one = (param_input){.key = "bins", .type = PARAM_IN_FLOAT, .f = 1e30};
    resolve_fails(&one, 1, WHAT ": parameter 'bins' expects an integer, got 1e+30");
    one = (param_input){.key = "percentile", .type = PARAM_IN_INT, .i = 101};
    resolve_fails(&one, 1, WHAT ": parameter 'percentile' must be in [0, 100], got 101");
    one = (param_input){.key = "percentile", .type = PARAM_IN_FLOAT, .f = 0.0};
    qcal_value out[N_DECL];
    resolve_ok(&one, 1, out); /* bounds are inclusive */
    cr_expect_eq(out[PERCENTILE].f, 0.0);
}

/* ---- key=value and display --------------------------------------------------------------- */

Test(params, parse_kv_splits_at_the_first_equals)
{
    char buf[] = "variant=a=b";
    param_input p;
    qerror e = {0};
    cr_assert_eq(params_parse_kv(buf, &p, &e), 0, "%s", e.msg);
    cr_expect_str_eq(p.key, "variant");
    cr_expect_str_eq(p.s, "a=b");
    cr_expect_eq(p.type, PARAM_IN_TEXT);
    char empty_value[] = "bins=";
    cr_assert_eq(params_parse_kv(empty_value, &p, &e), 0, "%s", e.msg);
    cr_expect_str_eq(p.s, "");
    char no_eq[] = "bins";
    cr_assert_eq(params_parse_kv(no_eq, &p, &e), -1);
    cr_expect_str_eq(e.msg, "expected key=value, got 'bins'");
    char no_key[] = "=3";
    cr_assert_eq(params_parse_kv(no_key, &p, &e), -1);
    cr_expect_str_eq(e.msg, "expected key=value with a name before '=', got '=3'");
    cr_expect_eq(e.code, QERR_USAGE);
}

Test(params, format_for_display)
{
    char buf[64];
    params_format(&decl[BINS], (qcal_value){.i = 2048}, buf, sizeof buf);
    cr_expect_str_eq(buf, "2048");
    params_format(&decl[PERCENTILE], (qcal_value){.f = 99.99}, buf, sizeof buf);
    cr_expect_str_eq(buf, "99.99");
    params_format(&decl[PERCENTILE], (qcal_value){.f = 0.01}, buf, sizeof buf);
    cr_expect_str_eq(buf, "0.01");
    params_format(&decl[PERCENTILE], (qcal_value){.f = 1e-7}, buf, sizeof buf);
    cr_expect_str_eq(buf, "1e-07");
    params_format(&decl[PERCENTILE], (qcal_value){.f = 0.1 + 0.2}, buf, sizeof buf);
    cr_expect_str_eq(buf, "0.30000000000000004");
    params_format(&decl[SYMMETRIC], (qcal_value){.i = 1}, buf, sizeof buf);
    cr_expect_str_eq(buf, "true");
    params_format(&decl[SYMMETRIC], (qcal_value){.i = 0}, buf, sizeof buf);
    cr_expect_str_eq(buf, "false");
    params_format(&decl[VARIANT], (qcal_value){.i = 0}, buf, sizeof buf);
    cr_expect_str_eq(buf, "trt");
    params_format(&decl[BINS], (qcal_value){.i = 123456}, buf, 4);
    cr_expect_str_eq(buf, "123");
}
