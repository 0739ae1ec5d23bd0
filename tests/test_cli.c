/* test_cli.c - the qcal command end to end: run, list, info, show, errors and exit codes */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/wait.h>

#include "dump.h"
#include "fixtures.h"

static char *dir, *dump_file, *out_file;
static char out_text[65536], err_text[65536];

static void setup(void)
{
    static float v[20 * 4];
    fx_fill_gauss(v, 80, 3, 1.0f, 2.0f);
    fx_dataset ds = {.name = "block.0/fc.input", .dtype = DUMP_F32, .rank = 2, .dims = {20, 4},
                     .data = v, .channel_axis = FX_NO_ATTR, .op_type = "Gemm"};
    dir = fx_tmpdir();
    dump_file = fx_path(dir, "dump.h5");
    out_file = fx_path(dir, "out.h5");
    cr_assert_eq(fx_write_dump(dump_file, &ds, 1, 0), 0);
}

static void teardown(void)
{
    fx_rmtree(dir);
    free(dir);
    free(dump_file);
    free(out_file);
}

TestSuite(cli, .init = setup, .fini = teardown);

/* Runs `qcal ARGS` (ARGS already shell-quoted), returns the exit status. */
static int qcal(const char *env, const char *args)
{
    char cmd[4096], out[512], err[512];
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    snprintf(cmd, sizeof cmd, "%s '%s' %s > '%s' 2> '%s' < /dev/null", env ? env : "",
             TEST_QCAL_EXE, args, out, err);
    int status = system(cmd);
    fx_read_text(out, out_text, sizeof out_text);
    fx_read_text(err, err_text, sizeof err_text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int line_count(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

Test(cli, version_and_help)
{
    cr_assert_eq(qcal(NULL, "--version"), 0);
    cr_expect(strncmp(out_text, "qcal ", 5) == 0, "%s", out_text);
    cr_expect(strstr(out_text, "plugin ABI 1.0"), "%s", out_text);
    cr_assert_eq(qcal(NULL, "run --help"), 0);
    cr_expect(strstr(out_text, "usage: qcal run"), "%s", out_text);
    cr_assert_eq(qcal(NULL, "--help"), 0);
    cr_expect(strstr(out_text, "qcal info DUMP"), "%s", out_text);
    const char *const commands[] = {"run", "observe", "merge", "list", "info", "show", "export", "report"};
    for (int k = 0; k < 8; k++) {
        char args[64], usage[64];
        snprintf(args, sizeof args, "help %s", commands[k]);
        snprintf(usage, sizeof usage, "usage: qcal %s", commands[k]);
        cr_expect_eq(qcal(NULL, args), 0, "%s", args);
        cr_expect(strstr(out_text, usage), "%s: %s", args, out_text);
    }
    /* not show's help for anything unknown, with success (found by an audit) */
    cr_expect_eq(qcal(NULL, "help frob"), 64);
    cr_expect(strstr(err_text, "no command 'frob'") && line_count(err_text) == 1, "%s", err_text);
}

Test(cli, run_writes_results_and_prints_the_table)
{
    char args[1024];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", dump_file, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    cr_expect(strstr(out_text, "block.0/fc.input") && strstr(out_text, "minmax"), "%s", out_text);
    struct stat st;
    cr_assert_eq(stat(out_file, &st), 0);
    snprintf(args, sizeof args, "show '%s'", out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    cr_expect(strstr(out_text, "block.0/fc.input") && strstr(out_text, "uint8 aff"), "%s", out_text);
}

/* The row of each tensor in a printed table (the first column), in order. */
static int table_names(const char *text, char names[][32], int cap)
{
    int n = 0;
    for (const char *line = strchr(text, '\n'); line && line[1] && n < cap;
         line = strchr(line + 1, '\n')) {
        if (!strncmp(line + 1, "tensor ", 7))
            continue;
        sscanf(line + 1, "%31s", names[n++]);
    }
    return n;
}

Test(cli, run_prints_the_table_show_reads_back)
{
    static float v[8 * 3];
    fx_fill_gauss(v, 24, 5, 0.0f, 1.0f);
    /* names whose flat byte order differs from the file's group-by-group order */
    const char *const names[] = {"ab", "a.b", "a/c", "Z", "a/b"};
    fx_dataset ds[5];
    for (int i = 0; i < 5; i++)
        ds[i] = (fx_dataset){.name = names[i], .dtype = DUMP_F32, .rank = 2, .dims = {8, 3},
                             .data = v, .channel_axis = FX_NO_ATTR};
    char *many = fx_path(dir, "many.h5"), args[1024], run_text[65536];
    cr_assert_eq(fx_write_dump(many, ds, 5, 0), 0);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' per_channel=true", many, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    snprintf(run_text, sizeof run_text, "%s", strchr(out_text, '\n'));
    snprintf(args, sizeof args, "show '%s'", out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    cr_expect_str_eq(run_text, strchr(out_text, '\n'));
    char rows[8][32];
    const char *const file_order[] = {"Z", "a/b", "a/c", "a.b", "ab"};
    cr_assert_eq(table_names(run_text, rows, 8), 5, "%s", run_text);
    for (int i = 0; i < 5; i++)
        cr_expect_str_eq(rows[i], file_order[i]);
    free(many);
}

/* Columns line up by what a terminal shows, not by bytes: CJK characters take two columns,
 * an accented letter (two bytes) one. Widths worked out by hand: names pad to 6 columns. */
Test(cli, table_columns_align_names_beyond_ascii)
{
    static float v[8 * 3];
    fx_fill_gauss(v, 24, 5, 0.0f, 1.0f);
    const char *const names[] = {"ab", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "\xc3\xa9"};
    fx_dataset ds[3];
    for (int i = 0; i < 3; i++)
        ds[i] = (fx_dataset){.name = names[i], .dtype = DUMP_F32, .rank = 2, .dims = {8, 3},
                             .data = v, .channel_axis = FX_NO_ATTR};
    char *wide = fx_path(dir, "wide.h5"), args[1024];
    cr_assert_eq(fx_write_dump(wide, ds, 3, 0), 0);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", wide, out_file);
    cr_assert_eq(qcal("LC_ALL=C", args), 0, "%s", err_text);
    cr_expect(strstr(out_text, "\nab     minmax "), "%s", out_text);
    cr_expect(strstr(out_text, "\n\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e minmax "), "%s", out_text);
    cr_expect(strstr(out_text, "\n\xc3\xa9      minmax "), "%s", out_text);
    free(wide);
}

/* An export that fails part way prints nothing on stdout, not the table's first lines. */
Test(cli, failed_export_to_stdout_prints_nothing)
{
    static float v[8 * 3];
    fx_fill_gauss(v, 24, 5, 0.0f, 1.0f);
    fx_dataset ds[2] = {{.name = "a", .dtype = DUMP_F32, .rank = 2, .dims = {8, 3}, .data = v,
                         .channel_axis = FX_NO_ATTR},
                        {.name = "b c", .dtype = DUMP_F32, .rank = 2, .dims = {8, 3}, .data = v,
                         .channel_axis = FX_NO_ATTR}};
    char *spaced = fx_path(dir, "spaced.h5"), args[1024];
    cr_assert_eq(fx_write_dump(spaced, ds, 2, 0), 0);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", spaced, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    snprintf(args, sizeof args, "export '%s' --format tpu-mlir", out_file);
    cr_expect_eq(qcal(NULL, args), 65, "%s", err_text);
    cr_expect_str_eq(out_text, "");
    cr_expect(strstr(err_text, "b c") && line_count(err_text) == 1, "%s", err_text);
    snprintf(args, sizeof args, "export '%s' --format csv", out_file);
    cr_expect_eq(qcal(NULL, args), 0, "%s", err_text);
    cr_expect(strstr(out_text, "tensor,name,kind") == out_text, "%s", out_text);
    free(spaced);
}

Test(cli, existing_results_kept_without_force)
{
    char args[1024];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", dump_file, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    struct stat before, after;
    cr_assert_eq(stat(out_file, &before), 0);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' symmetric=true", dump_file, out_file);
    cr_expect_eq(qcal(NULL, args), 73);
    cr_expect(strstr(err_text, "--force"), "%s", err_text);
    cr_expect_eq(line_count(err_text), 1, "%s", err_text);
    cr_assert_eq(stat(out_file, &after), 0);
    cr_expect_eq(before.st_ino, after.st_ino);
    cr_expect_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' symmetric=true --force", dump_file, out_file);
    cr_expect_eq(qcal(NULL, args), 0, "%s", err_text);
    cr_expect(strstr(out_text, "int8 sym"), "%s", out_text);
}

/* -o naming an input would replace it (the dump, the results being exported, the recipe):
 * refused even with --force, whatever name reaches the file (here a symbolic link to the
 * dump); -o naming a symbolic link to the dump replaces the link only, so it is allowed. */
Test(cli, an_input_is_never_replaced_by_the_output)
{
    char args[2048], *link_path = fx_path(dir, "link.h5");
    cr_assert_eq(symlink(dump_file, link_path), 0);
    struct stat before, after;
    cr_assert_eq(stat(dump_file, &before), 0);
    const char *const attempts[][2] = {{"run minmax '%s' -o '%s' --force", "dump"},
                                       {"run minmax '%s' -o '%s' --force", "link"},
                                       {"observe minmax '%s' --shard 0/2 -o '%s' --force", "dump"},
                                       {"report '%s' -o '%s' --force", "dump"}};
    for (int k = 0; k < 4; k++) {
        const char *input = !strcmp(attempts[k][1], "link") ? link_path : dump_file;
        snprintf(args, sizeof args, attempts[k][0], input, dump_file);
        cr_expect_eq(qcal(NULL, args), 64, "%s: %s", args, err_text);
        cr_expect(strstr(err_text, "refusing to replace an input") && line_count(err_text) == 1,
                  "%s: %s", args, err_text);
    }
    cr_assert_eq(stat(dump_file, &after), 0);
    cr_expect(before.st_ino == after.st_ino && before.st_size == after.st_size &&
              before.st_mtim.tv_nsec == after.st_mtim.tv_nsec, "the dump is untouched");
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", dump_file, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    snprintf(args, sizeof args, "export '%s' --format csv -o '%s' --force", out_file, out_file);
    cr_expect_eq(qcal(NULL, args), 64, "%s", err_text);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --force", dump_file, link_path);
    cr_expect_eq(qcal(NULL, args), 0, "%s", err_text);
    struct stat link_now;
    cr_expect(lstat(link_path, &link_now) == 0 && S_ISREG(link_now.st_mode), "the link replaced");
    cr_expect(stat(dump_file, &after) == 0 && after.st_ino == before.st_ino &&
              after.st_size == before.st_size, "its target untouched");
    free(link_path);
}

Test(cli, info_lists_tensors)
{
    char args[1024];
    snprintf(args, sizeof args, "info '%s'", dump_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    cr_expect(strstr(out_text, "block.0/fc.input") && strstr(out_text, "20x4") &&
              strstr(out_text, "float32") && strstr(out_text, "Gemm"), "%s", out_text);
}

Test(cli, list_shows_methods_parameters_and_recipes)
{
    cr_assert_eq(qcal(NULL, "list"), 0, "%s", err_text);
    cr_expect(strstr(out_text, "moving_average_minmax"), "%s", out_text);
    cr_expect(strstr(out_text, "averaging_constant"), "%s", out_text);
    cr_expect(strstr(out_text, "estimators:"), "%s", out_text);
    cr_expect(strstr(out_text, "recipes"), "%s", out_text);
    cr_expect(strstr(out_text, "per_channel"), "%s", out_text);
}

Test(cli, bad_invocations_give_one_line_and_a_code)
{
    cr_expect_eq(qcal(NULL, "frobnicate"), 64);
    cr_expect_eq(line_count(err_text), 1, "%s", err_text);
    cr_expect_eq(qcal(NULL, "run minmax /nonexistent/dump.h5"), 66, "%s", err_text);
    cr_expect(strstr(err_text, "/nonexistent/dump.h5"), "%s", err_text);
    cr_expect_eq(line_count(err_text), 1, "%s", err_text);
    cr_expect_eq(qcal(NULL, "run minmax"), 64);
    cr_expect_eq(qcal(NULL, "run minmax x.h5 --threads 0"), 64);
    cr_expect(strstr(err_text, "--threads"), "%s", err_text);
    char args[1024];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' bits=eight", dump_file, out_file);
    cr_expect_neq(qcal(NULL, args), 0);
    cr_expect(strstr(err_text, "'bits'") && strstr(err_text, "integer"), "%s", err_text);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' bits=1", dump_file, out_file);
    cr_expect_neq(qcal(NULL, args), 0);
    cr_expect(strstr(err_text, "bits"), "%s", err_text);
    /* the value as given, not as it wrapped ("got -1", "got 1215752191" before) */
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' bits=99999999999", dump_file, out_file);
    cr_expect_eq(qcal(NULL, args), 64);
    cr_expect(strstr(err_text, "got 99999999999"), "%s", err_text);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' bits=99999999999999999999999", dump_file, out_file);
    cr_expect_eq(qcal(NULL, args), 64);
    cr_expect(strstr(err_text, "at most 19 digits"), "%s", err_text);
    struct stat st;
    cr_expect_neq(stat(out_file, &st), 0, "no output after failures");
}

/* Parameter values a recipe or an estimator cannot use are usage errors (64) in one line:
 * a negative count (was a traceback of a format-string error, 78), more tuning steps than an
 * evaluation takes (a traceback, 78), levels above bins (an "internal error", 70). */
Test(cli, unusable_parameter_values_are_usage_errors)
{
    const char *const runs[][2] = {
        {"mix", "max_samples=-1"}, {"pot", "stat_subset_size=-1"}, {"kl", "bins=-5"},
        {"autotune", "steps=5000"}, {"kl", "levels=4096 bins=16"}, {"percentile", "side=nope"},
        {"pot", "max_samples=3"}, {"percentile", "per_channel=true"},
    };
    const char *const said[] = {"max_samples must be >= 0", "stat_subset_size must be >= 0",
                                "bins must be >= 0", "steps must be in [1, 4095]",
                                "levels must not exceed bins", "side must be auto, two_sided or abs",
                                "stat_subset_size (POT's name), not max_samples",
                                "percentile ranges are per tensor: per_channel=true is not available"};
    char args[1024];
    for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
        snprintf(args, sizeof args, "run %s '%s' -o '%s' %s", runs[k][0], dump_file, out_file,
                 runs[k][1]);
        cr_expect_eq(qcal(NULL, args), 64, "%s %s: %s", runs[k][0], runs[k][1], err_text);
        cr_expect(strstr(err_text, said[k]) && line_count(err_text) == 1, "%s", err_text);
    }
    /* a side other than auto's: the recipe observes the histogram that side reads (it failed
     * after the pass, 'an internal error', 70) */
    const char *const sides[] = {"side=abs", "side=two_sided symmetric=true"};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "run percentile '%s' -o '%s' --force %s", dump_file, out_file,
                 sides[k]);
        cr_expect_eq(qcal(NULL, args), 0, "%s: %s", sides[k], err_text);
    }
}

/* Inputs and outputs that cannot be what they are named as: a FIFO as the dump (HDF5 blocked
 * reading it for ever), one dump file given twice (its samples counted twice), and "-o -" for
 * results, which are an HDF5 file (a file named "-" was written). Found by an audit. */
Test(cli, fifo_dumps_repeated_dumps_and_results_to_stdout_are_refused, .timeout = 60)
{
    char *fifo = fx_path(dir, "fifo.h5"), args[2048];
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    snprintf(args, sizeof args, "info '%s'", fifo);
    cr_expect_eq(qcal(NULL, args), 66, "%s", err_text);
    cr_expect(strstr(err_text, "found a FIFO") && line_count(err_text) == 1, "%s", err_text);
    snprintf(args, sizeof args, "run minmax '%s' '%s' -o '%s'", dump_file, dump_file, out_file);
    cr_expect_eq(qcal(NULL, args), 64, "%s", err_text);
    cr_expect(strstr(err_text, "are the same dump file"), "%s", err_text);
    char cwd[1024];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    snprintf(args, sizeof args, "run minmax '%s' -o -", dump_file);
    int rc = qcal(NULL, args);
    struct stat st;
    int dash_written = stat("-", &st) == 0;
    cr_assert_eq(chdir(cwd), 0);
    cr_expect_eq(rc, 64, "%s", err_text);
    cr_expect(strstr(err_text, "-o -: results are an HDF5 file"), "%s", err_text);
    cr_expect(!dash_written, "no file named '-'");
    free(fifo);
}

/* Arguments mean one thing each: a path with '=' is a path unless a parameter name stands
 * before it, "--" ends the options (a dump named "-x.h5"), and an option or parameter given
 * twice is refused rather than the last one winning silently. Found by an audit. */
Test(cli, paths_with_equals_signs_double_dash_and_repeats)
{
    char *odd = fx_path(dir, "a=b.h5"), *dash = fx_path(dir, "-x.h5"), args[4096], cmd[4096];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && cp '%s' '%s'", dump_file, odd, dump_file, dash);
    cr_assert_eq(system(cmd), 0);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", odd, out_file);
    cr_expect_eq(qcal(NULL, args), 0, "%s", err_text);
    snprintf(args, sizeof args, "run minmax -o '%s' --force -- '%s'", out_file, dash);
    cr_expect_eq(qcal(NULL, args), 0, "%s", err_text);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --output '%s'", dump_file, out_file, out_file);
    cr_expect_eq(qcal(NULL, args), 64);
    cr_expect(strstr(err_text, "option --output given twice"), "%s", err_text);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --force symmetric=true symmetric=false",
             dump_file, out_file);
    cr_expect_eq(qcal(NULL, args), 64);
    cr_expect(strstr(err_text, "parameter 'symmetric' given twice"), "%s", err_text);
    /* an option the command does not take is refused, not ignored ("show -o" wrote nothing) */
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --force", dump_file, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    const char *const misplaced[][2] = {
        {"show '%s' -o x.txt", "show: option --output does not apply"},
        {"info '%s' -j 2", "info: option --threads does not apply"},
        {"export '%s' --format csv --trt-version 8601", "--trt-version and --trt-algorithm apply to --format tensorrt"},
    };
    for (int k = 0; k < 3; k++) {
        snprintf(args, sizeof args, misplaced[k][0], k == 1 ? dump_file : out_file);
        cr_expect_eq(qcal(NULL, args), 64, "%s", args);
        cr_expect(strstr(err_text, misplaced[k][1]), "%s", err_text);
    }
    free(odd), free(dash);
}

Test(cli, refused_plugin_is_reported_and_the_run_goes_on)
{
    char args[2048];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --plugin-path '%s/variant_bad_major.so'",
             dump_file, out_file, TEST_VARIANT_DIR);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    cr_expect(strstr(err_text, "variant_bad_major.so") && strstr(err_text, "ABI"), "%s", err_text);
}

Test(cli, plugins_found_through_the_environment_path)
{
    char env[1024], args[1024];
    snprintf(env, sizeof env, "QCAL_NO_DEFAULT_PLUGINS=1 QCAL_PLUGIN_PATH=':%s:'", TEST_PLUGIN_DIR);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", dump_file, out_file);
    cr_expect_eq(qcal(env, args), 0, "%s", err_text);
    cr_expect_neq(qcal("QCAL_NO_DEFAULT_PLUGINS=1 QCAL_PLUGIN_PATH=", args), 0);
    cr_expect(strstr(err_text, "minmax"), "%s", err_text);
    /* a --plugin-path that is not there is said to be so (it read as an unrelated error) */
    cr_expect_eq(qcal(NULL, "list --plugin-path /nonexistent/plugins"), 0, "%s", err_text);
    cr_expect(strstr(err_text, "plugin path /nonexistent/plugins: No such file or directory "
                               "(nothing loaded from it)"), "%s", err_text);
}

static int count_temp_files(void)
{
    char cmd[1024], out[64];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '\\.tmp\\.' || true", dir);
    FILE *p = popen(cmd, "r");
    int n = p && fgets(out, sizeof out, p) ? atoi(out) : -1;
    if (p)
        pclose(p);
    return n;
}

/* SIGTERM, SIGINT or SIGKILL while a run is under way: the earlier results file at the
 * target stays as it was and no temporary file is left. */
Test(cli, interrupted_run_keeps_the_earlier_results)
{
    char args[2048];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", dump_file, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    struct stat before, after;
    cr_assert_eq(stat(out_file, &before), 0);
    char *recipe = fx_path(dir, "slow.lua");
    FILE *f = fopen(recipe, "w");
    fputs("local qcal = require('qcal')\nlocal p = qcal.pass()\n"
          "for _, t in ipairs(qcal.tensors()) do p:observe(t, 'minmax') end\np:run()\n"
          "local x = 0\nwhile true do x = x + 1 end\n", f);
    fclose(f);
    const char *signals[3] = {"TERM", "INT", "KILL"};
    const int numbers[3] = {15, 2, 9};
    for (int k = 0; k < 3; k++) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "'%s' run '%s' '%s' -o '%s' --force --max-instructions "
                 "100000000000 2>/dev/null & pid=$!; sleep 0.4; kill -%s $pid; wait $pid; echo $?",
                 TEST_QCAL_EXE, recipe, dump_file, out_file, signals[k]);
        FILE *p = popen(cmd, "r");
        char status[32] = "";
        cr_assert(p && fgets(status, sizeof status, p));
        pclose(p);
        cr_expect_eq(atoi(status), 128 + numbers[k], "SIG%s: status %s", signals[k], status);
        cr_assert_eq(stat(out_file, &after), 0);
        cr_expect_eq(before.st_ino, after.st_ino, "SIG%s replaced the results file", signals[k]);
        cr_expect_eq(before.st_size, after.st_size);
        cr_expect_eq(count_temp_files(), 0, "SIG%s left a temporary file", signals[k]);
    }
    free(recipe);
}

/* The byte offset of the first object's size in the file's first global heap collection
 * (where HDF5 keeps variable-length strings such as op_type): "GCOL", version, 3 reserved
 * bytes, the collection's size (8), then the object's index (2), reference count (2), 4
 * reserved bytes and its size (8). -1 when there is none. */
/* The first MiB of a file (where the fixture's metadata lives), in a buffer of the test's. */
static const unsigned char *head_of(const char *path, size_t *n)
{
    static unsigned char bytes[1 << 20];
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    *n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    return bytes;
}

static long first_heap_object_size_at(const char *path)
{
    size_t n;
    const unsigned char *bytes = head_of(path, &n);
    for (size_t i = 0; i + 32 <= n; i++)
        if (!memcmp(bytes + i, "GCOL", 4))
            return (long)i + 24;
    return -1;
}

/* The byte offset of the length of the first variable-length string stored in the first
 * global heap collection: where an attribute's value holds the length (4 bytes), then the
 * collection's address (8), then the object's index (4). -1 when there is none. */
static long first_vlen_length_at(const char *path)
{
    long heap = first_heap_object_size_at(path) - 24;
    size_t n;
    const unsigned char *bytes = head_of(path, &n);
    unsigned char address[8];
    for (int k = 0; k < 8; k++)
        address[k] = (unsigned char)((unsigned long)heap >> (8 * k));
    for (size_t i = 4; heap >= 0 && i + 12 <= n; i++)
        if (!memcmp(bytes + i, address, 8))
            return (long)i - 4;
    return -1;
}

/* A copy of the fixture dump with `n` bytes written `offset` bytes after the place `locate`
 * finds: `info` and `run` must each say, in one line, that the file is corrupt, exit 65 (data
 * error) and write no output. */
static void expect_corrupt_heap_refused(const char *file, long (*locate)(const char *), long offset,
                                        const unsigned char *bytes, size_t n, const char *env)
{
    char *bad = fx_path(dir, file), args[1024];
    snprintf(args, sizeof args, "cp '%s' '%s'", dump_file, bad);
    cr_assert_eq(system(args), 0);
    long at = locate(bad);
    cr_assert_gt(at, 0, "the fixture's op_type is a variable-length string in a global heap");
    FILE *f = fopen(bad, "r+b");
    cr_assert_not_null(f);
    fseek(f, at + offset, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
    const char *commands[2] = {"info '%s'", "run minmax '%s' -o '%s'"};
    for (int k = 0; k < 2; k++) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, commands[k], bad, out_file);
        cr_expect_eq(qcal(env, cmd), 65, "%s: %s", cmd, err_text);
        cr_expect_eq(line_count(err_text), 1, "%s", err_text);
        cr_expect(strstr(err_text, bad) && strstr(err_text, "corrupt file"), "%s", err_text);
    }
    struct stat st;
    cr_expect_neq(stat(out_file, &st), 0, "no output");
    free(bad);
}

/* HDF5 1.10 copies a variable-length string with the length its global heap states: a damaged
 * length makes it read past its buffer and crash (found by mutating the sample dump). qcal
 * says which file is corrupt instead of dying of the signal. (Under AddressSanitizer its
 * memcpy check would report first: replace_intrin=0 leaves the copy to fault as it does in a
 * plain build.) */
/* A table that cannot be printed (stdout on a full device) is an I/O error, not a success. */
Test(cli, show_to_a_full_device_fails)
{
    char args[1024];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", dump_file, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    char cmd[4096], err[512];
    snprintf(err, sizeof err, "%s/stderr", dir);
    snprintf(cmd, sizeof cmd, "'%s' show '%s' > /dev/full 2> '%s'", TEST_QCAL_EXE, out_file, err);
    int status = system(cmd);
    fx_read_text(err, err_text, sizeof err_text);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 74, "status %d: %s", status, err_text);
    cr_expect(strstr(err_text, "standard output") && line_count(err_text) == 1, "%s", err_text);
}

/* A write the system refuses part way (here a file size limit, as a full disk would) is one
 * line with the system's words and exit 74; the earlier results stay, no temporary file is
 * left, and HDF5's exit-time clean-up does not crash on the file it could not close (it did:
 * exit 139 after the line; found by an audit on a full tmpfs). */
Test(cli, results_the_disk_refuses_are_one_line_and_no_crash)
{
    char args[1024];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", dump_file, out_file);
    cr_assert_eq(qcal(NULL, args), 0, "%s", err_text);
    struct stat before;
    cr_assert_eq(stat(out_file, &before), 0);
    snprintf(args, sizeof args, "run kl '%s' -o '%s' --force", dump_file, out_file);
    cr_expect_eq(qcal("trap '' XFSZ; ulimit -f 8;", args), 74, "%s", err_text);
    cr_expect(strstr(err_text, "File too large") && line_count(err_text) == 1, "%s", err_text);
    struct stat after;
    cr_assert_eq(stat(out_file, &after), 0, "the earlier results are kept");
    cr_expect(after.st_ino == before.st_ino && after.st_size == before.st_size);
    cr_expect_eq(count_temp_files(), 0);
    /* a report the disk refuses: one line naming the file and the system's words */
    char *page = fx_path(dir, "r.html");
    snprintf(args, sizeof args, "report '%s' '%s' -o '%s'", out_file, dump_file, page);
    cr_expect_eq(qcal("trap '' XFSZ; ulimit -f 8;", args), 74, "%s", err_text);
    cr_expect(strstr(err_text, "r.html") && strstr(err_text, "File too large") &&
              line_count(err_text) == 1, "%s", err_text);
    cr_expect_eq(access(page, F_OK), -1, "no report left");
    cr_expect_eq(count_temp_files(), 0);
    free(page);
}

Test(cli, hdf5_crashing_on_a_corrupt_file_is_one_line)
{
    const unsigned char huge[8] = {0, 0, 0, 0x10, 0, 0, 0, 0}; /* 2^28 bytes, little-endian */
    expect_corrupt_heap_refused("heap.h5", first_heap_object_size_at, 0, huge, sizeof huge,
                                "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}replace_intrin=0");
}

/* An object of size 0 at index 0 in a global heap never advances HDF5 1.10's parser of the
 * collection: it loops for ever (found by mutating the sample dump). qcal's watch ends the
 * read after 2 s of CPU time. */
Test(cli, hdf5_spinning_on_a_corrupt_file_is_one_line, .timeout = 60)
{
    const unsigned char zeros[16] = {0}; /* index, references, reserved, size: all 0 */
    expect_corrupt_heap_refused("spin.h5", first_heap_object_size_at, -8, zeros, sizeof zeros, "");
}

/* A string's stated length of 4 GiB makes HDF5 allocate that much and clear it, in system
 * time (found by mutating a results file): the watch counts that too. (Where the allocation
 * fails instead, HDF5 says so: still one line, exit 65.) */
Test(cli, hdf5_clearing_gigabytes_for_a_damaged_length_is_one_line, .timeout = 60)
{
    const unsigned char length[4] = {0xff, 0xff, 0xff, 0xff};
    expect_corrupt_heap_refused("length.h5", first_vlen_length_at, 0, length, sizeof length, "");
}
