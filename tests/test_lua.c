/* test_lua.c - recipes: the qcal module, typed parameters, errors, the sandbox and its limits */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dump.h"
#include "fixtures.h"
#include "references.h"
#include "params.h"
#include "recipe.h"
#include "registry.h"
#include "results.h"

#define N 40
#define C 6

static float values[N * C];
static char *dir, *dump_file, *out_file;
static registry *reg;
static char log_text[8192];

static void collect_log(void *ud, const char *text)
{
    (void)ud;
    strncat(log_text, text, sizeof log_text - strlen(log_text) - 1);
}

static void setup(void)
{
    fx_fill_gauss(values, N * C, 21, 0.25f, 1.5f);
    fx_dataset ds = {.name = "layer.input", .dtype = DUMP_F32, .rank = 2, .dims = {N, C},
                     .chunk_rows = 8, .data = values, .channel_axis = FX_NO_ATTR,
                     .orig_name = "/layer/Gemm_input_0"};
    dir = fx_tmpdir();
    dump_file = fx_path(dir, "dump.h5");
    out_file = fx_path(dir, "out.h5");
    cr_assert_eq(fx_write_dump(dump_file, &ds, 1, 0), 0);
    reg = registry_new(NULL, NULL);
    registry_load_dir(reg, TEST_PLUGIN_DIR);
    log_text[0] = '\0';
}

static void teardown(void)
{
    registry_free(reg);
    fx_rmtree(dir);
    free(dir);
    free(dump_file);
    free(out_file);
}

TestSuite(lua, .init = setup, .fini = teardown);

static char *write_recipe(const char *name, const char *text)
{
    char *path = fx_path(dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Runs a recipe given as text, with optional key=value parameters. */
/* Runs a recipe (a bundled name or a path) on dump_file with key=value parameters. */
static int run_recipe(const char *recipe, const char *const *kv, size_t n_kv, int unsafe, qerror *e)
{
    recipe_options o;
    recipe_defaults(&o);
    param_input in[16];
    char bufs[16][128];
    for (size_t i = 0; i < n_kv; i++) {
        snprintf(bufs[i], sizeof bufs[i], "%s", kv[i]);
        cr_assert_eq(params_parse_kv(bufs[i], &in[i], e), 0);
    }
    o.recipe = recipe;
    o.dump_path = dump_file;
    o.output = out_file;
    o.force = 1;
    o.reg = reg;
    o.unsafe = unsafe;
    o.params = in;
    o.n_params = n_kv;
    o.log = collect_log;
    o.memory_limit = (size_t)64 << 20;
    o.instruction_limit = 20000000;
    return recipe_run(&o, e);
}

static int run_text(const char *text, const char *const *kv, size_t n_kv, int unsafe, qerror *e)
{
    char *path = write_recipe("recipe.lua", text);
    int rc = run_recipe(path, kv, n_kv, unsafe, e);
    free(path);
    return rc;
}

static double read_attr(const char *group, const char *attr)
{
    hid_t f = H5Fopen(out_file, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t a = H5Aopen_by_name(f, group, attr, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0, "attribute %s of %s", attr, group);
    double v;
    cr_assert_geq(H5Aread(a, H5T_NATIVE_DOUBLE, &v), 0);
    H5Aclose(a);
    H5Fclose(f);
    return v;
}

Test(lua, bundled_minmax_recipe_writes_the_observed_range)
{
    qerror e = {0};
    recipe_options o;
    recipe_defaults(&o);
    o.recipe = "minmax";
    o.dump_path = dump_file;
    o.output = out_file;
    o.reg = reg;
    o.log = collect_log;
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < N * C; i++) {
        lo = fminf(lo, values[i]);
        hi = fmaxf(hi, values[i]);
    }
    cr_expect_eq(read_attr("/calibration/layer.input", "min"), (double)lo);
    cr_expect_eq(read_attr("/calibration/layer.input", "max"), (double)hi);
    /* uint8 affine, torch's rule: scale = (hi - lo) / 255 in float32 */
    float scale = (hi - lo) / 255.0f;
    cr_expect_eq(read_attr("/calibration/layer.input", "scale"), (double)scale);
    cr_expect_eq(read_attr("/calibration/layer.input", "zero_point"),
                 (double)(0 - (long)nearbyintf(lo / scale)));
}

/* A small custom strategy, as README.md builds one: half the symmetric min/max threshold. */
static const char *const custom_strategy =
    "local qcal = require('qcal')\n"
    "local P = qcal.params{ shrink = 0.5 }\n"
    "local pass = qcal.pass()\n"
    "local ids = {}\n"
    "for _, t in ipairs(qcal.tensors()) do ids[t.name] = pass:observe(t, 'minmax') end\n"
    "pass:run{ threads = 2 }\n"
    "local spec = qcal.spec{ bits = 8, symmetric = true }\n"
    "for name, id in pairs(ids) do\n"
    "  local r = qcal.estimate('minmax', pass:statistic(id), spec)\n"
    "  local t = r.hi * P.shrink\n"
    "  qcal.put(name, { method = 'half', spec = spec, range = { lo = -t, hi = t } })\n"
    "end\n";

Test(lua, custom_strategy_written_in_the_test)
{
    qerror e = {0};
    const char *kv[] = {"shrink=0.25"};
    cr_assert_eq(run_text(custom_strategy, kv, 1, 0, &e), 0, "%s", e.msg);
    float amax = 0;
    for (int i = 0; i < N * C; i++)
        amax = fmaxf(amax, fabsf(values[i]));
    double t = (double)amax * 0.25;
    cr_expect_eq(read_attr("/calibration/layer.input", "max"), t);
    cr_expect_eq(read_attr("/calibration/layer.input", "min"), -t);
    cr_expect_eq(read_attr("/calibration/layer.input", "scale"), (double)((float)t / 127.5f));
}

Test(lua, parameters_are_typed_by_their_defaults)
{
    qerror e = {0};
    const char *text =
        "local qcal = require('qcal')\n"
        "local P = qcal.params{ bits = 8, sym = false, p = 99.9, name = 'x' }\n"
        "assert(math.type(P.bits) == 'integer' and P.bits == 4, 'bits')\n"
        "assert(P.sym == true, 'sym')\n"
        "assert(math.type(P.p) == 'float' and P.p == 99.0, 'p')\n"
        "assert(P.name == 'abc', 'name')\n";
    const char *kv[] = {"bits=4", "sym=yes", "p=99", "name=abc"};
    cr_expect_eq(run_text(text, kv, 4, 0, &e), 0, "%s", e.msg);
    const char *bad_int[] = {"bits=4.5"};
    cr_expect_neq(run_text(text, bad_int, 1, 0, &e), 0);
    cr_expect(strstr(e.msg, "'bits'") && strstr(e.msg, "expected an integer"), "%s", e.msg);
    const char *unknown[] = {"bitz=4"};
    log_text[0] = '\0';
    cr_expect_neq(run_text(text, unknown, 1, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:2:") && strstr(e.msg, "unknown parameter 'bitz'") &&
              strstr(e.msg, "did you mean 'bits'") && strstr(e.msg, "known: bits, name, p, sym"),
              "%s", e.msg);
    /* the command line's mistake: a usage error in one line, not a recipe error */
    cr_expect_eq(e.code, QERR_USAGE, "%d: %s", e.code, e.msg);
    cr_expect_null(strstr(log_text, "stack traceback"), "%s", log_text);
}

/* qcal.param_error: a recipe refusing a parameter's value ends the run as a usage error, one
 * line with its file:line, no traceback, nothing written. */
Test(lua, param_error_is_a_usage_error_in_one_line)
{
    qerror e = {0};
    const char *text = "local qcal = require('qcal')\n"
                       "local P = qcal.params{ mode = 'fast' }\n"
                       "if P.mode ~= 'fast' then qcal.param_error('mode must be fast, got ' .. P.mode) end\n";
    const char *kv[] = {"mode=slow"};
    log_text[0] = '\0';
    cr_assert_neq(run_text(text, kv, 1, 0, &e), 0);
    cr_expect_eq(e.code, QERR_USAGE, "%d: %s", e.code, e.msg);
    cr_expect(strstr(e.msg, "recipe.lua:3: mode must be fast, got slow"), "%s", e.msg);
    cr_expect_null(strstr(log_text, "stack traceback"), "%s", log_text);
    cr_expect_neq(access(out_file, F_OK), 0, "nothing written");
}

/* A host error the recipe caught, then an error of the recipe's own: that one is reported, as
 * a recipe error (one line; its traceback with QCAL_DEBUG set). */
Test(lua, recipe_error_after_a_caught_host_error_stays_a_recipe_error)
{
    qerror e = {0};
    const char *text = "local qcal = require('qcal')\n"
                       "assert(not pcall(qcal.weights), 'the fixture dump has no /weights')\n"
                       "error('giving up')\n";
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    cr_expect_eq(e.code, QERR_CONFIG, "%d: %s", e.code, e.msg);
    cr_expect(strstr(e.msg, "recipe.lua:3: giving up"), "%s", e.msg);
    cr_expect_null(strstr(log_text, "stack traceback"), "%s", log_text);
    setenv("QCAL_DEBUG", "1", 1);
    log_text[0] = '\0';
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    unsetenv("QCAL_DEBUG");
    cr_expect(strstr(log_text, "stack traceback"), "with QCAL_DEBUG: %s", log_text);
}

Test(lua, runtime_error_reports_file_line_and_writes_nothing)
{
    qerror e = {0};
    const char *text = "local qcal = require('qcal')\n"
                       "local x = nil\n"
                       "print(x.field)\n";
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:3:"), "%s", e.msg);
    cr_expect_null(strstr(log_text, "stack traceback"), "one line: %s", log_text);
    cr_expect_neq(access(out_file, F_OK), 0, "no results file after a failed recipe");
}

Test(lua, syntax_error_reports_file_line)
{
    qerror e = {0};
    cr_assert_neq(run_text("local a = \n\n = 3\n", NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:3:"), "%s", e.msg);
}

Test(lua, error_from_the_engine_names_the_recipe_line)
{
    qerror e = {0};
    const char *text = "local qcal = require('qcal')\n"
                       "local p = qcal.pass()\n"
                       "p:observe('layer.input', 'no_such_observer')\n";
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:3:") && strstr(e.msg, "no_such_observer"), "%s", e.msg);
}

/* Each escape attempt must fail inside the sandbox. */
static void expect_blocked(const char *code, const char *why)
{
    char text[512];
    qerror e = {0};
    snprintf(text, sizeof text, "%s\n", code);
    cr_expect_neq(run_text(text, NULL, 0, 0, &e), 0, "not blocked: %s", code);
    cr_expect(strstr(e.msg, why), "%s -> %s", code, e.msg);
}

Test(lua, sandbox_blocks_commands_files_c_modules_bytecode_environment)
{
    expect_blocked("os.execute('touch /tmp/qcal_pwned')", "execute");
    expect_blocked("io.open('/etc/passwd')", "io");
    expect_blocked("local f = io.popen('id')", "io");
    expect_blocked("require('lfs')", "lfs");
    expect_blocked("package.loadlib('/lib/x86_64-linux-gnu/libc.so.6', 'system')", "loadlib");
    expect_blocked("assert(load('\\27Lua\\84\\0'))", "binary");
    expect_blocked("string.dump(print)", "dump");
    expect_blocked("dofile('/etc/passwd')", "dofile");
    expect_blocked("loadfile('/etc/passwd')", "loadfile");
    expect_blocked("os.getenv('HOME')", "getenv");
    expect_blocked("os.remove('/tmp/x')", "remove");
    expect_blocked("debug.getinfo(1)", "debug");
    cr_expect_neq(access("/tmp/qcal_pwned", F_OK), 0);
}

Test(lua, unsafe_lifts_the_sandbox)
{
    qerror e = {0};
    cr_expect_eq(run_text("assert(os.getenv('PATH'))\nassert(io.open)\n", NULL, 0, 1, &e), 0,
                 "%s", e.msg);
}

Test(lua, endless_loop_stopped_by_instruction_budget)
{
    qerror e = {0};
    cr_assert_neq(run_text("local n = 0\nwhile true do\n  n = n + 1\nend\n", NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "instruction budget") && strstr(e.msg, "recipe.lua:"), "%s", e.msg);
}

/* Catching the budget's error does not buy a new budget: a loop of pcalls over endless loops
 * ends too (it ran for ever: each caught error let the next 1,000 instructions run). */
Test(lua, the_instruction_budget_cannot_be_caught, .timeout = 60)
{
    qerror e = {0};
    cr_assert_neq(run_text("while true do pcall(function() while true do end end) end\n", NULL, 0, 0, &e), 0);
    cr_expect_eq(e.code, QERR_CONFIG, "%s", e.msg);
    cr_expect(strstr(e.msg, "instruction budget") && strstr(e.msg, "recipe.lua:1"), "%s", e.msg);
}

Test(lua, memory_bomb_stopped_by_allocation_limit)
{
    qerror e = {0};
    const char *text = "local t = {}\nwhile true do t[#t + 1] = string.rep('x', 4096) .. #t end\n";
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "memory limit") && strstr(e.msg, "recipe"), "%s", e.msg);
}

Test(lua, describe_lists_recipe_parameters)
{
    char *path = write_recipe("described.lua",
                              "local qcal = require('qcal')\n"
                              "local P = qcal.params{ bits = 8, symmetric = false, p = 99.99 }\n"
                              "error('must not run past params')\n");
    recipe_param ps[8];
    size_t n = 0;
    qerror e = {0};
    cr_assert_eq(recipe_describe(path, ps, 8, &n, &e), 0, "%s", e.msg);
    cr_assert_eq(n, 3);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(ps[i].name, "bits"))
            seen += !strcmp(ps[i].type, "integer") && !strcmp(ps[i].value, "8");
        if (!strcmp(ps[i].name, "symmetric"))
            seen += !strcmp(ps[i].type, "boolean") && !strcmp(ps[i].value, "false");
        if (!strcmp(ps[i].name, "p"))
            seen += !strcmp(ps[i].type, "number");
    }
    cr_expect_eq(seen, 3);
    free(path);
}

Test(lua, missing_bundled_recipe_is_a_clear_error)
{
    recipe_options o;
    recipe_defaults(&o);
    o.recipe = "no_such_recipe";
    o.dump_path = dump_file;
    o.reg = reg;
    qerror e = {0};
    cr_assert_neq(recipe_run(&o, &e), 0);
    cr_expect(strstr(e.msg, "no bundled recipe 'no_such_recipe'"), "%s", e.msg);
}

Test(lua, re_estimates_from_saved_statistics_without_the_dump)
{
    qerror e = {0};
    recipe_options o;
    recipe_defaults(&o);
    o.recipe = "minmax";
    o.dump_path = dump_file;
    o.output = out_file;
    o.reg = reg;
    o.log = collect_log;
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    double lo = read_attr("/calibration/layer.input", "min");
    double hi = read_attr("/calibration/layer.input", "max");
    cr_assert_eq(unlink(dump_file), 0); /* the second run must not need it */
    char *second = fx_path(dir, "second.h5");
    char text[] = "symmetric=true";
    param_input in;
    cr_assert_eq(params_parse_kv(text, &in, &e), 0);
    o.dump_path = NULL;
    o.from_statistics = out_file;
    o.output = second;
    o.params = &in;
    o.n_params = 1;
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    char *saved_out = out_file;
    out_file = second;
    double t = fmax(-lo, hi);
    cr_expect_eq(read_attr("/calibration/layer.input", "max"), t);
    cr_expect_eq(read_attr("/calibration/layer.input", "min"), -t);
    out_file = saved_out;
    free(second);
}

Test(lua, print_goes_to_the_log_with_every_argument)
{
    qerror e = {0};
    cr_assert_eq(run_text("print('a', 1, true)\nprint()\n", NULL, 0, 0, &e), 0, "%s", e.msg);
    cr_expect_str_eq(log_text, "a\t1\ttrue\n\n");
}

static void read_dataset(const char *file, const char *name, double *out)
{
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(d, 0, "dataset %s", name);
    cr_assert_geq(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), 0);
    H5Dclose(d);
    H5Fclose(f);
}

/* Weights [out=3, in=4] give one range per output channel; /weights is not an activation. */
Test(lua, weights_calibrated_per_output_channel)
{
    static const float w[12] = {1, -2, 3, 0.5f, -7, 2, 2, 1, 0.25f, 0.5f, -0.125f, 0};
    static const float a[4] = {1, 2, 3, 4};
    fx_dataset ds[2] = {
        {.name = "act", .dtype = DUMP_F32, .rank = 1, .dims = {4}, .data = a, .channel_axis = FX_NO_ATTR},
        {.name = "weights/l1", .dtype = DUMP_F32, .rank = 2, .dims = {3, 4}, .data = w,
         .channel_axis = FX_NO_ATTR},
    };
    cr_assert_eq(fx_write_dump(dump_file, ds, 2, 1), 0);
    const char *text =
        "local qcal = require('qcal')\n"
        "assert(#qcal.tensors() == 1 and qcal.tensors()[1].name == 'act')\n"
        "local ws = qcal.weights()\n"
        "assert(#ws == 1 and ws[1].name == 'weights/l1' and ws[1].orig_name == 'l1.weight')\n"
        "local pass = qcal.pass{ weights = true }\n"
        "local id = pass:observe(ws[1], 'minmax_per_channel')\n"
        "pass:run()\n"
        "local spec = qcal.spec{ symmetric = true, per_channel = true, axis = 1 }\n"
        "qcal.put(ws[1], { spec = spec, range = qcal.estimate('minmax', pass:statistic(id), spec) })\n";
    qerror e = {0};
    cr_assert_eq(run_text(text, NULL, 0, 0, &e), 0, "%s", e.msg);
    double lo[3], hi[3];
    read_dataset(out_file, "/calibration/weights/l1/min", lo);
    read_dataset(out_file, "/calibration/weights/l1/max", hi);
    const double t[3] = {3, 7, 0.5}; /* max |w| of each row */
    for (int c = 0; c < 3; c++) {
        cr_expect_eq(lo[c], -t[c], "channel %d", c);
        cr_expect_eq(hi[c], t[c], "channel %d", c);
    }
}

/* NaN and Inf are skipped and counted, never folded into a range; a tensor with nothing
 * finite is an error naming it, and nothing is written. */
Test(lua, tensor_without_finite_values_is_named)
{
    static float bad[8] = {NAN, INFINITY, -INFINITY, NAN, NAN, NAN, INFINITY, NAN};
    static float good[8] = {1, NAN, -2, INFINITY, 3, 0, 0.5f, -1};
    fx_dataset ds[2] = {
        {.name = "all_nan", .dtype = DUMP_F32, .rank = 2, .dims = {4, 2}, .data = bad,
         .channel_axis = FX_NO_ATTR},
        {.name = "mixed", .dtype = DUMP_F32, .rank = 2, .dims = {4, 2}, .data = good,
         .channel_axis = FX_NO_ATTR},
    };
    cr_assert_eq(fx_write_dump(dump_file, &ds[1], 1, 0), 0);
    recipe_options o;
    recipe_defaults(&o);
    o.recipe = "minmax";
    o.dump_path = dump_file;
    o.output = out_file;
    o.reg = reg;
    o.log = collect_log;
    qerror e = {0};
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    cr_expect_eq(read_attr("/calibration/mixed", "min"), -2.0);
    cr_expect_eq(read_attr("/calibration/mixed", "max"), 3.0);
    results *r;
    cr_assert_eq(results_read(out_file, &r, &e), 0, "%s", e.msg);
    const result_tensor *t = results_find(r, "mixed");
    cr_expect(t && t->note && strstr(t->note, "1 NaN and 1 Inf values left out"),
              "the values left out are said on the result: %s", t && t->note ? t->note : "(none)");
    results_free(r);
    cr_assert_eq(unlink(out_file), 0);
    good[3] = 7; /* now NaN only */
    cr_assert_eq(fx_write_dump(dump_file, &ds[1], 1, 0), 0);
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    cr_assert_eq(results_read(out_file, &r, &e), 0, "%s", e.msg);
    t = results_find(r, "mixed");
    cr_expect(t && t->note && strstr(t->note, "minmax: 1 NaN values left out"), "%s",
              t && t->note ? t->note : "(none)");
    results_free(r);
    cr_assert_eq(unlink(out_file), 0);
    cr_assert_eq(fx_write_dump(dump_file, ds, 2, 0), 0);
    log_text[0] = '\0';
    cr_assert_neq(recipe_run(&o, &e), 0);
    cr_expect(strstr(e.msg, "'all_nan'") && strstr(e.msg, "no finite value") &&
              strstr(e.msg, "5 NaN") && strstr(e.msg, "3 Inf"), "%s", e.msg);
    /* an error about the data, raised into the recipe: its own code and one line that says
     * where in the recipe, no traceback */
    cr_expect_eq(e.code, QERR_DATA, "%d: %s", e.code, e.msg);
    cr_expect(strstr(e.msg, "minmax.lua:") && !strstr(e.msg, "recipe error"), "%s", e.msg);
    cr_expect_null(strstr(log_text, "stack traceback"), "%s", log_text);
    cr_expect_neq(access(out_file, F_OK), 0, "nothing written");
}

/* An estimator returning NaN is caught by the host: nothing is written as if valid. */
Test(lua, estimator_returning_nan_is_refused)
{
    qerror e = {0};
    cr_assert_eq(registry_load_file(reg, TEST_VARIANT_DIR "/variant_fails.so", &e), 0, "%s", e.msg);
    const char *text =
        "local qcal = require('qcal')\n"
        "local p = qcal.pass()\n"
        "local id = p:observe('layer.input', 'minmax')\n"
        "p:run()\n"
        "local spec = qcal.spec{}\n"
        "qcal.put('layer.input', { spec = spec, range = qcal.estimate('variant_nan', p:statistic(id), spec) })\n";
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:6:") && strstr(e.msg, "variant_nan") &&
              strstr(e.msg, "layer.input") && strstr(e.msg, "invalid range"), "%s", e.msg);
    cr_expect_neq(access(out_file, F_OK), 0);
}

/* An estimator writing past the ranges it was given is caught by guard values. */
Test(lua, estimator_writing_past_its_buffer_is_refused)
{
    qerror e = {0};
    cr_assert_eq(registry_load_file(reg, TEST_VARIANT_DIR "/variant_fails.so", &e), 0, "%s", e.msg);
    const char *text =
        "local qcal = require('qcal')\n"
        "local p = qcal.pass()\n"
        "local id = p:observe('layer.input', 'minmax')\n"
        "p:run()\n"
        "local r = qcal.estimate('variant_overrun', p:statistic(id), qcal.spec{})\n";
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "variant_overrun") && strstr(e.msg, "wrote past"), "%s", e.msg);
}

/* ---- determinism: the same inputs give the same results file, whatever the threads, the
 * slab size or the run (apart from the creation time) ----------------------------------- */

static void expect_same_results(const results *a, const results *b, const char *what)
{
    cr_assert_eq(a->n_tensors, b->n_tensors, "%s", what);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const result_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        cr_assert_str_eq(x->tensor, y->tensor, "%s", what);
        cr_assert_str_eq(x->method, y->method, "%s", what);
        cr_assert(memcmp(&x->spec, &y->spec, sizeof x->spec) == 0, "%s", what);
        cr_assert_eq(x->channels, y->channels, "%s", what);
        size_t n = x->channels * sizeof(double);
        cr_assert(!memcmp(x->lo, y->lo, n) && !memcmp(x->hi, y->hi, n) &&
                  !memcmp(x->scale, y->scale, n) && !memcmp(x->zero_point, y->zero_point, n),
                  "%s: tensor %s differs", what, x->tensor);
    }
    cr_assert_eq(a->n_stats, b->n_stats, "%s", what);
    for (size_t i = 0; i < a->n_stats; i++) {
        const qcal_stat *x = &a->stats[i].state->view, *y = &b->stats[i].state->view;
        cr_assert_str_eq(a->stats[i].params, b->stats[i].params, "%s", what);
        cr_assert_eq(x->n_arrays, y->n_arrays, "%s", what);
        for (uint32_t k = 0; k < x->n_arrays; k++) {
            size_t bytes = hstat_array_count(&x->arrays[k]) * hstat_dtype_size(x->arrays[k].dtype);
            cr_assert(hstat_array_count(&x->arrays[k]) == hstat_array_count(&y->arrays[k]) &&
                      !memcmp(x->arrays[k].data, y->arrays[k].data, bytes),
                      "%s: statistic %s/%s array %s differs", what, a->stats[i].tensor,
                      a->stats[i].observer, x->arrays[k].name);
        }
    }
}

/* The file's bytes with its `created` string blanked: the only thing allowed to differ. */
static unsigned char *file_bytes_without_created(const char *path, const results *r, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    unsigned char *b = malloc(*n);
    cr_assert_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    size_t len = strlen(r->created);
    unsigned char *hit = memmem(b, *n, r->created, len);
    cr_assert_not_null(hit, "created string not found in %s", path);
    memset(hit, '#', len);
    return b;
}

static results *run_config(const char *kv, int threads, size_t slab_bytes, const char *name)
{
    recipe_options o;
    recipe_defaults(&o);
    char buf[128];
    param_input in;
    qerror e = {0};
    o.recipe = "minmax";
    o.dump_path = dump_file;
    char *out = fx_path(dir, name);
    o.output = out;
    o.reg = reg;
    o.log = collect_log;
    o.pass.threads = threads;
    o.pass.slab_bytes = slab_bytes;
    o.pass.batch_size = 4;
    if (kv) {
        snprintf(buf, sizeof buf, "%s", kv);
        cr_assert_eq(params_parse_kv(buf, &in, &e), 0);
        o.params = &in;
        o.n_params = 1;
    }
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    results *r;
    cr_assert_eq(results_read(out, &r, &e), 0, "%s", e.msg);
    free(out);
    return r;
}

Test(lua, every_bundled_configuration_is_deterministic)
{
    static float v[61 * 3 * 5];
    fx_fill_gauss(v, sizeof v / sizeof *v, 77, 0.0f, 2.0f);
    v[100] = NAN;
    fx_dataset ds = {.name = "t", .dtype = DUMP_F32, .rank = 3, .dims = {61, 3, 5},
                     .chunk_rows = 3, .data = v, .channel_axis = FX_NO_ATTR};
    cr_assert_eq(fx_write_dump(dump_file, &ds, 1, 0), 0);
    const char *configs[] = {NULL, "per_channel=true", "average=true", "symmetric=true"};
    const int threads[] = {1, 2, 4, 1};
    const size_t slabs[] = {(size_t)4 << 20, 60, 200, (size_t)4 << 20};
    for (int c = 0; c < 4; c++) {
        results *ref = run_config(configs[c], 1, (size_t)4 << 20, "ref.h5");
        for (int k = 0; k < 4; k++) {
            char what[128], name[32];
            snprintf(what, sizeof what, "%s, %d threads, slab %zu", configs[c] ? configs[c] : "default",
                     threads[k], slabs[k]);
            snprintf(name, sizeof name, "run%d_%d.h5", c, k);
            results *r = run_config(configs[c], threads[k], slabs[k], name);
            expect_same_results(ref, r, what);
            size_t na, nb;
            char *pa = fx_path(dir, "ref.h5"), *pb = fx_path(dir, name);
            unsigned char *a = file_bytes_without_created(pa, ref, &na);
            unsigned char *b = file_bytes_without_created(pb, r, &nb);
            cr_expect(na == nb && !memcmp(a, b, na), "%s: files differ beyond 'created'", what);
            free(a), free(b), free(pa), free(pb);
            results_free(r);
        }
        results_free(ref);
        char *p = fx_path(dir, "ref.h5");
        unlink(p);
        free(p);
    }
}

/* The percentile recipe at 100 % gives the exact observed range (computed here naively). */
Test(lua, percentile_recipe_at_100_is_the_observed_range)
{
    qerror e = {0};
    recipe_options o;
    recipe_defaults(&o);
    char text[] = "percentile=100";
    param_input in;
    cr_assert_eq(params_parse_kv(text, &in, &e), 0);
    o.recipe = "percentile";
    o.dump_path = dump_file;
    o.output = out_file;
    o.reg = reg;
    o.log = collect_log;
    o.params = &in;
    o.n_params = 1;
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < N * C; i++)
        lo = fminf(lo, values[i]), hi = fmaxf(hi, values[i]);
    cr_expect_eq(read_attr("/calibration/layer.input", "min"), (double)lo);
    cr_expect_eq(read_attr("/calibration/layer.input", "max"), (double)hi);
}

/* After pass:run the pass keeps each state once, serialized in the results; asking for a
 * statistic again (of a histogram and of min/max) gives the same one. */
static const char *const statistic_twice =
    "local qcal = require('qcal')\n"
    "local pass = qcal.pass()\n"
    "local t = qcal.tensors()[1]\n"
    "local h = pass:observe(t, 'histogram', { bins = 2048 })\n"
    "local m = pass:observe(t, 'minmax')\n"
    "pass:run{ threads = 2 }\n"
    "local spec = qcal.spec{}\n"
    "local p = { percentile = 100 }\n"
    "local a = qcal.estimate('percentile', pass:statistic(h), spec, p)\n"
    "local am = qcal.estimate('minmax', pass:statistic(m), spec)\n"
    "local b = qcal.estimate('percentile', pass:statistic(h), spec, p)\n"
    "local bm = qcal.estimate('minmax', pass:statistic(m), spec)\n"
    "assert(a.lo == b.lo and a.hi == b.hi, 'histogram differs the second time')\n"
    "assert(am.lo == bm.lo and am.hi == bm.hi, 'min/max differs the second time')\n"
    "assert(a.lo == am.lo and a.hi == am.hi, 'percentile 100 is not the range')\n"
    "qcal.put(t, { method = 'twice', spec = spec, range = b })\n";

Test(lua, statistic_asked_twice_after_the_run_is_the_same)
{
    qerror e = {0};
    cr_assert_eq(run_text(statistic_twice, NULL, 0, 0, &e), 0, "%s\n%s", e.msg, log_text);
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < N * C; i++)
        lo = fminf(lo, values[i]), hi = fmaxf(hi, values[i]);
    cr_expect_eq(read_attr("/calibration/layer.input", "min"), (double)lo);
    cr_expect_eq(read_attr("/calibration/layer.input", "max"), (double)hi);
}

/* The kl recipe runs end to end: a symmetric threshold no larger than max |x|. */
Test(lua, kl_recipe_gives_a_symmetric_threshold_within_the_data)
{
    qerror e = {0};
    recipe_options o;
    recipe_defaults(&o);
    o.recipe = "kl";
    o.dump_path = dump_file;
    o.output = out_file;
    o.reg = reg;
    o.log = collect_log;
    cr_assert_eq(recipe_run(&o, &e), 0, "%s", e.msg);
    float amax = 0;
    for (int i = 0; i < N * C; i++)
        amax = fmaxf(amax, fabsf(values[i]));
    double t = read_attr("/calibration/layer.input", "max");
    cr_expect(t > 0 && t <= amax, "threshold %g, max |x| %g", t, (double)amax);
    cr_expect_eq(read_attr("/calibration/layer.input", "min"), -t);
    cr_expect_eq(read_attr("/calibration/layer.input", "scale"), (double)((float)t / 127.0f), "narrow int8");
}

/* The kl recipe, each variant, two passes, from the dump to the results file: the threshold of
 * the plain reference on the raw values, to the bin (ReLU'd data, sparse outliers, NaN/Inf). */
Test(lua, kl_recipe_variants_match_the_references_end_to_end)
{
    enum { ROWS = 500, COLS = 64, COUNT = ROWS * COLS };
    static float x[COUNT], finite[COUNT];
    const int kinds[3] = {FX_RELU, FX_LAPLACE_OUTLIERS, FX_NONFINITE};
    for (int k = 0; k < 3; k++) {
        fx_fill_dist(x, COUNT, kinds[k], 90 + (uint64_t)k);
        size_t m = fx_finite(x, COUNT, finite);
        fx_dataset ds = {.name = "t", .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS},
                         .chunk_rows = 64, .data = x, .channel_axis = FX_NO_ATTR};
        cr_assert_eq(fx_write_dump(dump_file, &ds, 1, 1), 0);
        float amax = 0;
        for (size_t i = 0; i < m; i++)
            amax = fmaxf(amax, fabsf(finite[i]));
        const char *variants[3] = {"variant=trt", "variant=nvpq", "variant=tpu"};
        double want[3] = {ref_kl_trt(finite, m, 0, 0.0001), ref_kl_trt(finite, m, 1, 0),
                          ref_kl_tpu(finite, m)};
        for (int v = 0; v < 3; v++) {
            qerror e = {0};
            cr_assert_eq(run_recipe("kl", &variants[v], 1, 0, &e), 0, "%s", e.msg);
            double got = read_attr("/calibration/t", "max"), bin = amax / 2047.0;
            cr_expect(fabs(got - want[v]) <= bin, "%s, %s: %g vs reference %g",
                      fx_dist_names[kinds[k]], variants[v], got, want[v]);
        }
    }
    qerror e = {0};
    const char *bad = "passes=3";
    cr_expect_neq(run_recipe("kl", &bad, 1, 0, &e), 0);
    cr_expect(strstr(e.msg, "passes must be 1 or 2"), "%s", e.msg);
}

/* Every bundled recipe runs with its defaults and writes a valid range for every tensor. */
Test(lua, every_bundled_recipe_runs_with_its_defaults)
{
    const char *recipes[] = {"minmax", "percentile", "kl", "mse", "pot", "l2_search"};
    float amax = 0;
    for (int i = 0; i < N * C; i++)
        amax = fmaxf(amax, fabsf(values[i]));
    for (int k = 0; k < 6; k++) {
        qerror e = {0};
        recipe_options o;
        recipe_defaults(&o);
        o.recipe = recipes[k];
        o.dump_path = dump_file;
        o.output = out_file;
        o.force = 1;
        o.reg = reg;
        o.log = collect_log;
        cr_assert_eq(recipe_run(&o, &e), 0, "%s: %s", recipes[k], e.msg);
        double lo = read_attr("/calibration/layer.input", "min");
        double hi = read_attr("/calibration/layer.input", "max");
        cr_expect(lo <= hi && -lo <= amax && hi <= amax && read_attr("/calibration/layer.input", "scale") > 0,
                  "%s: [%g, %g]", recipes[k], lo, hi);
    }
}

/* ---- pot.lua: POT's presets, worked out by hand ------------------------------------------ */

/* Four samples of three values, and a [2, 3] weight. Per sample: min -1 -3 0 -2, max 2 4 1 3,
 * abs max 2 4 1 3. */
static void write_pot_dump(void)
{
    static const float a[12] = {-1, 0.5f, 2, -3, 1, 4, 0, 0.25f, 1, -2, 0, 3};
    static const float w[6] = {1, -2, 3, 0.5f, -0.25f, 0.125f};
    fx_dataset ds[2] = {
        {.name = "act", .dtype = DUMP_F32, .rank = 2, .dims = {4, 3}, .data = a, .channel_axis = FX_NO_ATTR},
        {.name = "weights/l1", .dtype = DUMP_F32, .rank = 2, .dims = {2, 3}, .data = w,
         .channel_axis = FX_NO_ATTR},
    };
    cr_assert_eq(fx_write_dump(dump_file, ds, 2, 1), 0);
}

Test(lua, pot_performance_symmetric_activations_and_weights)
{
    write_pot_dump();
    qerror e = {0};
    cr_assert_eq(run_recipe("pot", NULL, 0, 0, &e), 0, "%s", e.msg);
    /* activations: min/min = -3 (signed), abs_max/mean = 2.5; POT's FQ range [-2.5*128/127, 2.5] */
    cr_expect_float_eq(read_attr("/calibration/act", "max"), 2.5, 1e-12);
    cr_expect_float_eq(read_attr("/calibration/act", "min"), -2.5 * 128 / 127, 1e-12);
    cr_expect_float_eq(read_attr("/calibration/act", "scale"), 2.5 / 127, 1e-8);
    cr_expect_eq(read_attr("/calibration/act", "zero_point"), 0);
    /* weights: per output channel, symmetric narrow: max |w| = 3 and 0.5 */
    double lo[2], hi[2];
    read_dataset(out_file, "/calibration/weights/l1/min", lo);
    read_dataset(out_file, "/calibration/weights/l1/max", hi);
    cr_expect(lo[0] == -3 && hi[0] == 3 && lo[1] == -0.5 && hi[1] == 0.5, "[%g %g] [%g %g]",
              lo[0], hi[0], lo[1], hi[1]);
}

Test(lua, pot_mixed_and_accuracy_tune_the_range)
{
    write_pot_dump();
    qerror e = {0};
    const char *mixed[] = {"preset=mixed"};
    cr_assert_eq(run_recipe("pot", mixed, 1, 0, &e), 0, "%s", e.msg);
    /* min/mean -1.5, max/mean 2.5; q = round(1.5 * 255 / 4) = 96; lo' = 96 * 2.5 / (96 - 255)
     * widens more than hi' = -159 * -1.5 / 96, so lo moves: zero point 96 */
    cr_expect_float_eq(read_attr("/calibration/act", "min"), 96 * 2.5 / (96 - 255.0), 1e-12);
    cr_expect_float_eq(read_attr("/calibration/act", "max"), 2.5, 1e-12);
    cr_expect_eq(read_attr("/calibration/act", "zero_point"), 96);
    const char *accuracy[] = {"preset=accuracy"};
    cr_assert_eq(run_recipe("pot", accuracy, 1, 0, &e), 0, "%s", e.msg);
    double lo[2], hi[2];
    read_dataset(out_file, "/calibration/weights/l1/min", lo);
    read_dataset(out_file, "/calibration/weights/l1/max", hi);
    /* asymmetric per channel min/min, max/max: [-2, 3] and [-0.25, 0.5] put zero on a level */
    cr_expect(lo[0] == -2 && hi[0] == 3, "[%g %g]", lo[0], hi[0]);
    cr_expect_float_eq(lo[1], -0.25, 1e-12);
    cr_expect_float_eq(hi[1], 0.5, 1e-12);
}

Test(lua, pot_stat_subset_ignored_scope_and_bad_preset)
{
    write_pot_dump();
    qerror e = {0};
    const char *subset[] = {"stat_subset_size=2", "weights=false"};
    cr_assert_eq(run_recipe("pot", subset, 2, 0, &e), 0, "%s", e.msg);
    cr_expect_float_eq(read_attr("/calibration/act", "max"), 3.0, 1e-12, "mean of 2 and 4");
    const char *ignored[] = {"ignore=act"};
    cr_assert_eq(run_recipe("pot", ignored, 1, 0, &e), 0, "%s", e.msg);
    cr_expect(strstr(log_text, "act: ignored"), "%s", log_text);
    const char *bad[] = {"preset=fast"};
    cr_expect_neq(run_recipe("pot", bad, 1, 0, &e), 0);
    cr_expect(strstr(e.msg, "pot.lua:") && strstr(e.msg, "preset must be"), "%s", e.msg);
}

/* A constant and an all-zero tensor: every bundled recipe gives a valid range and says why. */
Test(lua, degenerate_tensors_get_a_valid_range_and_a_note)
{
    static float c[64], z[64];
    for (int i = 0; i < 64; i++)
        c[i] = 0.75f;
    fx_dataset ds[2] = {
        {.name = "const", .dtype = DUMP_F32, .rank = 2, .dims = {16, 4}, .data = c, .channel_axis = FX_NO_ATTR},
        {.name = "zeros", .dtype = DUMP_F32, .rank = 2, .dims = {16, 4}, .data = z, .channel_axis = FX_NO_ATTR},
    };
    cr_assert_eq(fx_write_dump(dump_file, ds, 2, 0), 0);
    const char *recipes[] = {"minmax", "percentile", "mse", "pot"};
    const char *const_note[] = {"constant tensor", "constant tensor", "constant tensor", "constant tensor"};
    const char *zero_note[] = {"all-zero", "all-zero", "all-zero", "floor"};
    for (int k = 0; k < 4; k++) {
        qerror e = {0};
        cr_assert_eq(run_recipe(recipes[k], NULL, 0, 0, &e), 0, "%s: %s", recipes[k], e.msg);
        results *r = NULL;
        cr_assert_eq(results_read(out_file, &r, &e), 0, "%s", e.msg);
        result_tensor *tc = results_find(r, "const"), *tz = results_find(r, "zeros");
        cr_assert(tc && tz);
        cr_expect(tc->lo[0] <= 0.75 && tc->hi[0] >= 0.75, "%s: [%g, %g]", recipes[k], tc->lo[0], tc->hi[0]);
        cr_expect(tz->lo[0] <= 0 && tz->hi[0] >= 0, "%s", recipes[k]);
        cr_expect(tc->note && strstr(tc->note, const_note[k]), "%s: note '%s'", recipes[k], tc->note);
        cr_expect(tz->note && strstr(tz->note, zero_note[k]), "%s: note '%s'", recipes[k], tz->note);
        results_free(r);
    }
}

/* qcal.put's mistakes named as such (audited: "bad argument #-1 to 'put'" for a missing range,
 * "per-channel range has 1 values" for an axis the tensor does not have). */
Test(lua, put_mistakes_say_what_is_missing)
{
    qerror e = {0};
    const char *no_range = "local qcal = require('qcal')\n"
                           "qcal.put(qcal.tensors()[1], { spec = qcal.spec{} })\n";
    cr_assert_neq(run_text(no_range, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:2:") && strstr(e.msg, "expected range = {lo = ..., hi = ...}, found nil"),
              "%s", e.msg);
    const char *far_axis = "local qcal = require('qcal')\n"
                           "local s = qcal.spec{ per_channel = true, axis = 99 }\n"
                           "qcal.put(qcal.tensors()[1], { spec = s, range = { lo = {0}, hi = {1} } })\n";
    cr_assert_neq(run_text(far_axis, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:3:") && strstr(e.msg, "expected a per-channel axis in [1, "),
              "%s", e.msg);
    cr_expect(strstr(e.msg, "found 99"), "%s", e.msg);
}

/* qcal.candidates keeps pointers to the list's method strings: a number there was converted
 * into a string the collector freed before it was copied (use after free, found by an ASan
 * fuzz); it is refused. */
Test(lua, candidates_refuse_a_method_that_is_not_a_string)
{
    qerror e = {0};
    const char *text = "local qcal = require('qcal')\n"
                       "local t = qcal.tensors()[1]\n"
                       "qcal.put(t, { spec = qcal.spec{}, range = { lo = -1, hi = 1 } })\n"
                       "qcal.candidates(t, { { method = 1.5, range = { lo = -1, hi = 1 } } }, 1)\n";
    cr_assert_neq(run_text(text, NULL, 0, 0, &e), 0);
    cr_expect(strstr(e.msg, "recipe.lua:4:") && strstr(e.msg, "expected method to be a string"),
              "%s", e.msg);
}
