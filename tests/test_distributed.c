/* test_distributed.c - one calibration from many files, shares and MPI ranks: the same bits
 *
 * The reference is always the single process on the whole dump; the others must give the
 * same results file byte for byte (the creation time fixed by SOURCE_DATE_EPOCH), or, for
 * several files against one (whose `source` differs), the same values read back. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "dump.h"
#include "fixtures.h"
#include "results.h"

#define SAMPLES 60
#define ENV "SOURCE_DATE_EPOCH=1700000000"

static char *dir;
static char out_text[65536], err_text[65536];
static float act[SAMPLES * 24], conv[SAMPLES * 3 * 4 * 4];
static uint16_t half[SAMPLES * 8];

/* Three tensors: a Gemm input, a conv input with channels, a float16 tensor. */
static void datasets(fx_dataset *ds, uint64_t row0, uint64_t rows)
{
    ds[0] = (fx_dataset){.name = "fc.input", .dtype = DUMP_F32, .rank = 2, .dims = {rows, 24},
                         .data = act + row0 * 24, .channel_axis = FX_NO_ATTR, .op_type = "Gemm"};
    ds[1] = (fx_dataset){.name = "conv.input", .dtype = DUMP_F32, .rank = 4,
                         .dims = {rows, 3, 4, 4}, .chunk_rows = 4, .data = conv + row0 * 48,
                         .channel_axis = 1, .op_type = "Conv"};
    ds[2] = (fx_dataset){.name = "attn.input", .dtype = DUMP_F16, .rank = 2, .dims = {rows, 8},
                         .data = half + row0 * 8, .channel_axis = FX_NO_ATTR};
}

static void write_part(const char *name, uint64_t row0, uint64_t rows)
{
    fx_dataset ds[3];
    datasets(ds, row0, rows);
    char *path = fx_path(dir, name);
    cr_assert_eq(fx_write_dump(path, ds, 3, 0), 0);
    free(path);
}

static void setup(void)
{
    dir = fx_tmpdir();
    fx_fill_dist(act, SAMPLES * 24, 2, 11);       /* a heavy tail */
    fx_fill_gauss(conv, SAMPLES * 48, 12, 0.5f, 2.0f);
    float h[SAMPLES * 8];
    fx_fill_gauss(h, SAMPLES * 8, 13, -1.0f, 3.0f);
    for (int i = 0; i < SAMPLES * 8; i++)
        half[i] = fx_float_to_half(h[i]);
    write_part("whole.h5", 0, SAMPLES);
    write_part("part0.h5", 0, 23); /* unequal parts, not on batch or chunk boundaries */
    write_part("part1.h5", 23, 30);
    write_part("part2.h5", 53, 7);
}

static void teardown(void)
{
    fx_rmtree(dir);
    free(dir);
}

TestSuite(distributed, .init = setup, .fini = teardown, .timeout = 300);

/* Runs `PREFIX qcal ARGS` in dir (ARGS shell-quoted by the caller); the exit status. */
static int sh(const char *prefix, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && " ENV " %s '%s' %s > stdout 2> stderr < /dev/null",
             dir, prefix ? prefix : "", TEST_QCAL_EXE, args);
    int status = system(cmd);
    char path[1024];
    snprintf(path, sizeof path, "%s/stdout", dir);
    fx_read_text(path, out_text, sizeof out_text);
    snprintf(path, sizeof path, "%s/stderr", dir);
    fx_read_text(path, err_text, sizeof err_text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int qcal(const char *args) { return sh(NULL, args); }

static int exists(const char *name)
{
    char *path = fx_path(dir, name);
    struct stat st;
    int ok = stat(path, &st) == 0;
    free(path);
    return ok;
}

/* Whether two files in dir hold the same bytes. */
static int same_bytes(const char *a, const char *b)
{
    char *pa = fx_path(dir, a), *pb = fx_path(dir, b);
    size_t na = 0, nb = 0;
    char *x = fx_read_file(pa, &na), *y = fx_read_file(pb, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x), free(y), free(pa), free(pb);
    return same;
}

static results *read_in_dir(const char *name)
{
    char *path = fx_path(dir, name);
    results *r = NULL;
    qerror e = {0};
    cr_assert_eq(results_read(path, &r, &e), 0, "%s", e.msg);
    free(path);
    return r;
}

/* Same calibration and same saved states (everything but the source). */
static void expect_same_values(const results *a, const results *b)
{
    cr_assert_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const result_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        cr_assert_str_eq(x->tensor, y->tensor);
        cr_assert_eq(x->channels, y->channels);
        cr_expect_eq(memcmp(x->lo, y->lo, x->channels * sizeof *x->lo), 0, "%s lo", x->tensor);
        cr_expect_eq(memcmp(x->hi, y->hi, x->channels * sizeof *x->hi), 0, "%s hi", x->tensor);
    }
    cr_assert_eq(a->n_stats, b->n_stats);
    for (size_t i = 0; i < a->n_stats; i++)
        cr_expect(hstat_equal(&a->stats[i].state->view, &b->stats[i].state->view), "state %s/%s",
                  a->stats[i].tensor, a->stats[i].observer);
}

/* ---- many files as one -------------------------------------------------------------------- */

Test(distributed, several_files_calibrate_as_their_concatenation)
{
    const char *recipes[] = {"minmax", "percentile", "pot", "kl"};
    for (size_t i = 0; i < sizeof recipes / sizeof *recipes; i++) {
        char args[1024];
        snprintf(args, sizeof args, "run %s whole.h5 -o one.h5 --force --batch-size 8", recipes[i]);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
        snprintf(args, sizeof args, "run %s part0.h5 part1.h5 part2.h5 -o three.h5 --force "
                 "--batch-size 8 --slab-mib 1", recipes[i]);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
        results *one = read_in_dir("one.h5"), *three = read_in_dir("three.h5");
        expect_same_values(one, three);
        cr_expect(strstr(three->source, "part0.h5, part1.h5, part2.h5"), "%s", three->source);
        results_free(one), results_free(three);
    }
}

Test(distributed, a_quoted_glob_is_expanded_in_sorted_order)
{
    cr_assert_eq(qcal("run minmax whole.h5 -o one.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("run minmax 'part*.h5' -o glob.h5"), 0, "%s", err_text);
    results *one = read_in_dir("one.h5"), *glob = read_in_dir("glob.h5");
    expect_same_values(one, glob);
    cr_expect_str_eq(glob->source, "part0.h5, part1.h5, part2.h5");
    results_free(one), results_free(glob);
    cr_expect_eq(qcal("run minmax 'nothing*.h5' -o x.h5"), 66);
    cr_expect(strstr(err_text, "nothing*.h5: no file matches"), "%s", err_text);
}

/* A file that does not match the first: one line naming the file and the tensor. */
static void expect_refused(const fx_dataset *ds, size_t n, const char *what)
{
    char *path = fx_path(dir, "odd.h5");
    cr_assert_eq(fx_write_dump(path, ds, n, 0), 0);
    free(path);
    cr_expect_eq(qcal("run minmax part0.h5 odd.h5 -o x.h5"), 65, "%s", what);
    cr_expect(strstr(err_text, "odd.h5: ") && strstr(err_text, what), "%s: %s", what, err_text);
    cr_expect(strchr(err_text, '\n') == err_text + strlen(err_text) - 1, "one line: %s", err_text);
    cr_expect(!exists("x.h5"));
}

Test(distributed, files_that_disagree_are_refused_naming_file_and_tensor)
{
    fx_dataset ds[3];
    datasets(ds, 0, 5);
    expect_refused(ds, 2, "expected tensor 'attn.input' (it is in part0.h5)");
    datasets(ds, 0, 5);
    ds[1].dims[3] = 2; /* another trailing shape (values: the first 5 rows' worth suffice) */
    expect_refused(ds, 3, "tensor 'conv.input': expected the trailing shape [3, 4, 4] of part0.h5, found [3, 4, 2]");
    datasets(ds, 0, 5);
    ds[2].dtype = DUMP_F32;
    ds[2].data = act;
    expect_refused(ds, 3, "tensor 'attn.input': expected dtype float16 as in part0.h5, found float32");
    datasets(ds, 0, 5);
    fx_dataset more[4] = {ds[0], ds[1], ds[2], ds[0]};
    more[3].name = "extra.input";
    expect_refused(more, 4, "tensor 'extra.input' is not in part0.h5");
    /* a framework name the files disagree on would make the exports depend on their order */
    datasets(ds, 0, 5);
    ds[1].orig_name = "model/conv:0";
    expect_refused(ds, 3, "tensor 'conv.input': expected the name 'conv.input' as in part0.h5, found 'model/conv:0'");
}

/* ---- shares and merge --------------------------------------------------------------------- */

static const char *batch_option = "--batch-size 8";
static const char *merge_option = "";

/* Observes every share of `recipe` (rounds: passes the recipe needs), merges them in a
 * scrambled order, finishes from the statistics into `out`. */
static void by_shares(const char *recipe, int k, int rounds, const char *dumps, const char *out)
{
    char args[2048], merged[64] = "";
    for (int round = 0; round < rounds; round++) {
        char from[96] = "";
        if (round)
            snprintf(from, sizeof from, "--from-statistics %s", merged);
        char files[512] = "";
        for (int i = k - 1; i >= 0; i--) { /* merge order: last share first */
            snprintf(args, sizeof args, "observe %s %s --shard %d/%d -o s%d.h5 --force %s %s",
                     recipe, dumps, i, k, i, batch_option, from);
            cr_assert_eq(qcal(args), 0, "%s", err_text);
            size_t len = strlen(files);
            snprintf(files + len, sizeof files - len, " s%d.h5", i);
        }
        snprintf(merged, sizeof merged, "merged%d.h5", round);
        snprintf(args, sizeof args, "merge%s -o %s --force %s", files, merged, merge_option);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
    }
    snprintf(args, sizeof args, "run %s --from-statistics %s -o %s --force %s", recipe, merged,
             out, batch_option);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
}

Test(distributed, shares_merged_give_the_single_run_byte_for_byte)
{
    struct { const char *recipe; int rounds; } cases[] = {
        {"minmax", 1}, {"pot", 1}, {"mse", 1}, {"kl", 2}, /* kl: max|x| first, then its bins */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char args[1024];
        snprintf(args, sizeof args, "run %s whole.h5 -o single.h5 --force --batch-size 8",
                 cases[c].recipe);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
        for (int k = 1; k <= 3; k++) {
            by_shares(cases[c].recipe, k, cases[c].rounds, "whole.h5", "sharded.h5");
            cr_expect(same_bytes("single.h5", "sharded.h5"), "%s, %d shares", cases[c].recipe, k);
        }
    }
}

Test(distributed, more_shares_than_batches_leaves_some_empty)
{
    /* 60 samples in batches of 32: 2 batches over 5 shares, so 3 shares observe nothing and
     * their (empty) states must merge as nothing */
    batch_option = "--batch-size 32";
    const char *recipes[] = {"percentile", "pot", "minmax"};
    for (size_t r = 0; r < 3; r++) {
        char args[512];
        snprintf(args, sizeof args, "run %s whole.h5 -o single.h5 --force --batch-size 32",
                 recipes[r]);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
        by_shares(recipes[r], 5, 1, "whole.h5", "sharded.h5");
        cr_expect(same_bytes("single.h5", "sharded.h5"), "%s", recipes[r]);
    }
}

/* --state-mib 0 keeps every observer state in a temporary file instead of memory: run,
 * observe, merge and re-estimation then read each one back from there, and no bit changes. */
Test(distributed, states_kept_in_a_temporary_file_change_no_bit)
{
    const char *recipes[] = {"minmax", "pot", "mse", "kl", "percentile"};
    for (size_t r = 0; r < sizeof recipes / sizeof *recipes; r++) {
        char args[512];
        snprintf(args, sizeof args, "run %s whole.h5 -o single.h5 --force --batch-size 8",
                 recipes[r]);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
        snprintf(args, sizeof args, "run %s whole.h5 -o spilled.h5 --force --batch-size 8 "
                 "--state-mib 0 -j 3", recipes[r]);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
        cr_expect(same_bytes("single.h5", "spilled.h5"), "%s", recipes[r]);
    }
    batch_option = "--batch-size 8 --state-mib 0";
    merge_option = "--state-mib 0";
    by_shares("kl", 3, 2, "whole.h5", "sharded.h5");
    merge_option = "";
    cr_assert_eq(qcal("run kl whole.h5 -o single.h5 --force --batch-size 8"), 0, "%s", err_text);
    cr_expect(same_bytes("single.h5", "sharded.h5"), "kl by 3 shares, states in a file");
}

/* When the temporary file cannot be made, the run says where and why (at the recipe line of
 * the pass, as every error of a pass), and writes nothing. */
Test(distributed, no_place_for_the_temporary_file_is_one_clear_error)
{
    int rc = sh("TMPDIR=/nonexistent/qcal", "run minmax whole.h5 -o out.h5 --state-mib 0");
    cr_expect_neq(rc, 0, "exit %d: %s", rc, err_text);
    cr_expect(strstr(err_text, "/nonexistent/qcal") && strstr(err_text, "TMPDIR"), "%s", err_text);
    cr_expect(strstr(err_text, "No such file or directory"), "%s", err_text);
    cr_expect(!exists("out.h5"));
}

Test(distributed, shares_of_several_files)
{
    cr_assert_eq(qcal("run pot part0.h5 part1.h5 part2.h5 -o single.h5 --batch-size 8"), 0, "%s",
                 err_text);
    by_shares("pot", 2, 1, "part0.h5 part1.h5 part2.h5", "sharded.h5");
    cr_expect(same_bytes("single.h5", "sharded.h5"));
}

Test(distributed, a_missing_pass_is_named_not_skipped)
{
    cr_assert_eq(qcal("observe kl whole.h5 --shard 0/1 -o s0.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("merge s0.h5 -o m.h5"), 0, "%s", err_text);
    cr_expect_neq(qcal("run kl --from-statistics m.h5 -o out.h5"), 0);
    cr_expect(strstr(err_text, "no saved state of observer 'fixed_histogram'"), "%s", err_text);
    cr_expect(!exists("out.h5"));
    /* the statistics already hold every pass: observing again has nothing to do */
    cr_assert_eq(qcal("observe minmax whole.h5 --shard 0/1 -o a.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("merge a.h5 -o b.h5"), 0, "%s", err_text);
    cr_expect_neq(qcal("observe minmax whole.h5 --shard 0/1 -o c.h5 --from-statistics b.h5"), 0);
    cr_expect(strstr(err_text, "already hold every pass"), "%s", err_text);
}

/* Statistics answer only for the samples and batches they were observed with: re-estimating
 * with another max_samples, stat_subset_size or --batch-size, or merging shares observed with
 * different limits, gave another run's ranges silently (found by an audit). */
Test(distributed, statistics_are_refused_for_other_sample_limits_or_batches)
{
    cr_assert_eq(qcal("run kl whole.h5 -o full.h5"), 0, "%s", err_text);
    cr_expect_eq(qcal("run kl --from-statistics full.h5 -o r.h5 max_samples=10"), 64, "%s", err_text);
    cr_expect(strstr(err_text, "observed over its first") && strstr(err_text, "asks for 10"), "%s", err_text);
    cr_expect(!exists("r.h5"));
    cr_assert_eq(qcal("run kl whole.h5 -o ten.h5 max_samples=10"), 0, "%s", err_text);
    cr_expect_eq(qcal("run kl --from-statistics ten.h5 -o r.h5"), 64, "%s", err_text);
    cr_expect_eq(qcal("run kl --from-statistics ten.h5 -o r.h5 max_samples=10"), 0, "%s", err_text);
    cr_assert_eq(qcal("run pot whole.h5 -o pb.h5 unit=batch"), 0, "%s", err_text);
    cr_expect_eq(qcal("run pot --from-statistics pb.h5 -o pb8.h5 unit=batch --batch-size 8"), 64,
                 "%s", err_text);
    cr_expect(strstr(err_text, "batches of 32 samples, this run asks for 8"), "%s", err_text);
    cr_assert_eq(qcal("observe percentile whole.h5 --shard 0/2 -o a0.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("observe percentile whole.h5 --shard 1/2 -o a1.h5 max_samples=10"), 0, "%s", err_text);
    cr_expect_eq(qcal("merge a0.h5 a1.h5 -o m.h5"), 65, "%s", err_text);
    cr_expect(strstr(err_text, "sample limit"), "%s", err_text);
    cr_expect(!exists("m.h5"));
}

/* Shares name their dump by its file: the same file written from two folders ("whole.h5",
 * "DIR/whole.h5") merges (it was refused), and statistics of another dump are refused when
 * observing this one's next pass (kl's bins came from the other dump; found by an audit). */
Test(distributed, shares_know_their_dump_by_its_file_name)
{
    char args[4096];
    cr_assert_eq(qcal("observe percentile whole.h5 --shard 0/2 -o r0.h5"), 0, "%s", err_text);
    snprintf(args, sizeof args, "observe percentile '%s/whole.h5' --shard 1/2 -o r1.h5", dir);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    cr_expect_eq(qcal("merge r0.h5 r1.h5 -o rm.h5"), 0, "%s", err_text);
    /* statistics are not calibration: no table or page of nothing from them */
    cr_expect_eq(qcal("export rm.h5 --format tpu-mlir -o t.txt"), 65, "%s", err_text);
    cr_expect(strstr(err_text, "expected calibration results, found none (only statistics"),
              "%s", err_text);
    cr_expect_eq(qcal("report r0.h5 -o r.html"), 65, "%s", err_text);
    cr_expect(!exists("t.txt") && !exists("r.html"));
    cr_assert_eq(qcal("run minmax part0.h5 -o other.h5"), 0, "%s", err_text);
    cr_expect_eq(qcal("observe kl whole.h5 --shard 0/2 --from-statistics other.h5 -o k0.h5"), 64,
                 "%s", err_text);
    cr_expect(strstr(err_text, "expected statistics of whole.h5, found statistics of part0.h5"),
              "%s", err_text);
    cr_expect(!exists("k0.h5"));
}

/* A share with no samples of a gzip tensor (20 rows, one batch of 32: share 1 of 2 is empty)
 * divided by zero planning its slabs (SIGFPE; found by an audit); its shares merge into the
 * single run's ranges. */
Test(distributed, an_empty_share_of_a_gzip_tensor)
{
    static float v[20 * 64];
    fx_fill_gauss(v, 20 * 64, 31, 0.0f, 1.0f);
    fx_dataset ds = {.name = "g", .dtype = DUMP_F32, .rank = 2, .dims = {20, 64}, .data = v,
                     .channel_axis = FX_NO_ATTR, .chunk_rows = 4, .gzip = 4};
    char *path = fx_path(dir, "gz20.h5");
    cr_assert_eq(fx_write_dump(path, &ds, 1, 0), 0);
    free(path);
    cr_assert_eq(qcal("observe minmax gz20.h5 --shard 0/2 -o g0.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("observe minmax gz20.h5 --shard 1/2 -o g1.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("merge g0.h5 g1.h5 -o gm.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("run minmax --from-statistics gm.h5 -o gr.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("run minmax gz20.h5 -o gd.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("show gr.h5"), 0);
    char merged[4096];
    snprintf(merged, sizeof merged, "%s", strchr(out_text, '\n'));
    cr_assert_eq(qcal("show gd.h5"), 0);
    cr_expect_str_eq(merged, strchr(out_text, '\n'), "the shares give the single run's table");
}

Test(distributed, merge_refuses_wrong_sets_of_shares)
{
    for (int i = 0; i < 3; i++) {
        char args[256];
        snprintf(args, sizeof args, "observe minmax whole.h5 --shard %d/3 -o s%d.h5", i, i);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
    }
    cr_assert_eq(qcal("observe percentile whole.h5 --shard 2/3 -o p2.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("observe minmax whole.h5 --shard 1/2 -o h1.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("run minmax whole.h5 -o results.h5"), 0, "%s", err_text);

    cr_expect_eq(qcal("merge s0.h5 s1.h5 -o m.h5"), 64);
    cr_expect(strstr(err_text, "expected the 3 shares of s0.h5, found 2 files"), "%s", err_text);
    cr_expect_eq(qcal("merge s0.h5 s1.h5 s1.h5 -o m.h5"), 65);
    cr_expect(strstr(err_text, "s1.h5: share 1/3 is also s1.h5"), "%s", err_text);
    cr_expect_eq(qcal("merge s0.h5 s1.h5 h1.h5 -o m.h5"), 65);
    cr_expect(strstr(err_text, "h1.h5: expected share i/3 like the others, found share 1/2"), "%s", err_text);
    cr_expect_eq(qcal("merge s0.h5 s1.h5 p2.h5 -o m.h5"), 65);
    cr_expect(strstr(err_text, "expected recipe 'minmax'"), "%s", err_text);
    /* another recipe's share at a taken index: the recipe is named, not a repeated share */
    cr_expect_eq(qcal("merge s0.h5 p2.h5 s2.h5 -o m.h5"), 65);
    cr_expect(strstr(err_text, "p2.h5: expected recipe 'minmax'"), "%s", err_text);
    cr_assert_eq(qcal("observe percentile whole.h5 --shard 0/3 -o p0.h5"), 0, "%s", err_text);
    cr_expect_eq(qcal("merge s0.h5 s1.h5 p0.h5 -o m.h5"), 65);
    cr_expect(strstr(err_text, "p0.h5: expected recipe 'minmax'"), "%s", err_text);
    cr_expect_eq(qcal("merge results.h5 -o m.h5"), 65);
    cr_expect(strstr(err_text, "results.h5: expected the statistics of one share"), "%s", err_text);
    cr_expect(!exists("m.h5"));
    cr_expect_eq(qcal("observe minmax whole.h5 --shard 3/3 -o x.h5"), 64);
    cr_expect(strstr(err_text, "--shard: expected i/K with 0 <= i < K"), "%s", err_text);
    cr_expect_eq(qcal("observe minmax whole.h5 --shard 0/2"), 64);
    cr_expect(strstr(err_text, "-o STATS.h5 is required"), "%s", err_text);
    /* one share's statistics cover a third of the samples: re-estimating from it alone gave
     * ranges of that third, silently (found by an audit) */
    cr_expect_eq(qcal("run minmax --from-statistics s1.h5 -o one.h5"), 64, "%s", err_text);
    cr_expect(strstr(err_text, "found share 1 of 3") && strstr(err_text, "qcal merge"), "%s", err_text);
    cr_expect(!exists("one.h5"));
}

Test(distributed, observe_stops_at_an_evaluation_pass)
{
    /* mix's first pass (its candidates' statistics) shards; its evaluation pass cannot */
    cr_assert_eq(qcal("observe mix whole.h5 --shard 0/1 -o s.h5"), 0, "%s", err_text);
    cr_assert_eq(qcal("merge s.h5 -o m.h5"), 0, "%s", err_text);
    cr_expect_neq(qcal("observe mix whole.h5 --shard 0/1 -o s2.h5 --from-statistics m.h5"), 0);
    cr_expect(strstr(err_text, "reached an evaluation pass") && strstr(err_text, "MPI"), "%s",
              err_text);
    cr_expect(!exists("s2.h5"));
}

/* ---- MPI ---------------------------------------------------------------------------------- */

#ifdef TEST_HAVE_MPI
/* Ranks inherit the environment; LeakSanitizer (in the sanitizer build) would fail every rank
 * on Open MPI's own allocations at exit, which are not ours to fix. */
static int mpirun(int k, const char *args)
{
    char prefix[512];
    snprintf(prefix, sizeof prefix, "ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_rmaps_base_oversubscribe=1 "
             "%s --allow-run-as-root --oversubscribe --bind-to none -x ASAN_OPTIONS "
             "-x SOURCE_DATE_EPOCH -n %d", TEST_MPIRUN, k);
    return sh(prefix, args);
}

Test(distributed, mpi_ranks_give_the_single_run_byte_for_byte)
{
    /* kl: two passes, the second built from the first's folded states; mix and autotune: an
     * evaluation pass (with layers on the bundled sample) distributed the same way. */
    const char *recipes[] = {"kl", "pot", "mix", "autotune"};
    for (size_t r = 0; r < sizeof recipes / sizeof *recipes; r++) {
        const char *dump = r < 2 ? "whole.h5" : "'" TEST_SOURCE_ROOT "/data/sample.h5'";
        char args[1024];
        snprintf(args, sizeof args, "run %s %s -o single.h5 --force --batch-size 8", recipes[r], dump);
        cr_assert_eq(qcal(args), 0, "%s", err_text);
        for (int k = 1; k <= 3; k++) {
            snprintf(args, sizeof args, "run %s %s -o ranks.h5 --force --batch-size 8",
                     recipes[r], dump);
            cr_assert_eq(mpirun(k, args), 0, "%s with %d ranks: %s", recipes[r], k, err_text);
            cr_expect(same_bytes("single.h5", "ranks.h5"), "%s with %d ranks", recipes[r], k);
        }
    }
}

Test(distributed, mpi_rank_failure_fails_every_rank_without_output)
{
    /* variant_fails refuses samples from 8 on: with 16 samples in batches of 8, rank 0 streams
     * samples 0-7 (fine) and rank 1 samples 8-15 (refused). */
    fx_dataset ds[3];
    datasets(ds, 0, 16);
    char *path = fx_path(dir, "small.h5");
    cr_assert_eq(fx_write_dump(path, ds, 1, 0), 0);
    free(path);
    path = fx_path(dir, "fails.lua");
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("local qcal = require('qcal')\n"
          "local p = qcal.pass()\n"
          "local id = p:observe(qcal.tensors()[1], 'variant_fails')\n"
          "p:run()\n"
          "qcal.put(qcal.tensors()[1], { method = 'x', spec = qcal.spec{}, range = { lo = 0, hi = 1 } })\n",
          f);
    fclose(f);
    free(path);
    char args[1024];
    snprintf(args, sizeof args, "run fails.lua small.h5 -o out.h5 --batch-size 8 "
             "--plugin-path '%s/variant_fails.so'", TEST_VARIANT_DIR);
    cr_expect_neq(mpirun(2, args), 0);
    cr_expect(strstr(err_text, "rank 1 of 2: ") && strstr(err_text, "refusing samples from 8 on"),
              "%s", err_text);
    cr_expect(strstr(err_text, "rank 0 of 2: ") && strstr(err_text, "rank 1 of 2 failed"), "%s",
              err_text);
    cr_expect(!exists("out.h5"));
}
#else
Test(distributed, mpi_not_built, .disabled = true) {}
#endif
