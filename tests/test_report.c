/* test_report.c - `qcal report`: a self-contained page, rendered by a real browser (Debian's
 * chromium, headless: installed by the test set-up, `bash tests/dev.sh check`), with its
 * script run to the end without an error, the tensors on it, and a screenshot taken */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dump.h" /* DUMP_F32 */
#include "fixtures.h"

#define TENSORS 1000
#define ROWS 12
#define COLS 10

static char *dir, *dump_file, *results_file, *page;
static char err_text[8192];
static char *dom; /* the page as the browser left it */

static int sh(const char *cmd)
{
    char full[8192];
    snprintf(full, sizeof full, "%s 2> '%s/stderr' < /dev/null", cmd, dir);
    int status = system(full);
    char path[512];
    snprintf(path, sizeof path, "%s/stderr", dir);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(err_text, 1, sizeof err_text - 1, f) : 0;
    err_text[n] = '\0';
    if (f)
        fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* 1000 tensors t0000..t0999 of different scales, calibrated by mix (so every tensor has
 * candidates and saved histograms). */
static void setup(void)
{
    dir = fx_tmpdir();
    dump_file = fx_path(dir, "dump.h5");
    results_file = fx_path(dir, "results.h5");
    page = fx_path(dir, "report.html");
    static float values[TENSORS][ROWS * COLS];
    static char names[TENSORS][16];
    static fx_dataset ds[TENSORS];
    for (int i = 0; i < TENSORS; i++) {
        fx_fill_gauss(values[i], ROWS * COLS, (uint64_t)i + 1, 0.1f * (float)(i % 7), 1.0f + (float)(i % 13));
        snprintf(names[i], sizeof names[i], "t%04d", i);
        ds[i] = (fx_dataset){.name = names[i], .dtype = DUMP_F32, .rank = 2, .dims = {ROWS, COLS},
                             .data = values[i], .channel_axis = FX_NO_ATTR};
    }
    cr_assert_eq(fx_write_dump(dump_file, ds, TENSORS, 0), 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' run mix '%s' -o '%s' methods=mse > /dev/null", TEST_QCAL_EXE,
             dump_file, results_file);
    cr_assert_eq(sh(cmd), 0, "%s", err_text);
}

static void teardown(void)
{
    fx_rmtree(dir);
    free(dir), free(dump_file), free(results_file), free(page), free(dom);
    dom = NULL;
}

TestSuite(report, .init = setup, .fini = teardown, .timeout = 300);

static const char *browser(void)
{
    static const char *const names[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser",
                                        "/usr/bin/google-chrome", NULL};
    for (int i = 0; names[i]; i++)
        if (access(names[i], X_OK) == 0)
            return names[i];
    cr_assert_fail("no chromium: `bash tests/dev.sh check` installs Debian's chromium");
    return NULL;
}

/* Loads the page at `fragment` headless and keeps the DOM after its scripts ran. */
static void render(const char *fragment)
{
    char cmd[4096], out[512];
    snprintf(out, sizeof out, "%s/dom.html", dir);
    snprintf(cmd, sizeof cmd, "'%s' --headless --no-sandbox --disable-gpu --no-first-run "
             "--user-data-dir='%s/profile' --virtual-time-budget=10000 --dump-dom "
             "'file://%s%s' > '%s'", browser(), dir, page, fragment, out);
    cr_assert_eq(sh(cmd), 0, "%s", err_text);
    free(dom);
    dom = fx_read_file(out, NULL);
    cr_assert_not_null(dom, "cannot read the file");
}

static void make_report(const char *extra)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' report '%s' %s -o '%s' --force", TEST_QCAL_EXE, results_file,
             extra, page);
    cr_assert_eq(sh(cmd), 0, "%s", err_text);
}

Test(report, page_is_self_contained_and_the_same_from_saved_statistics_or_the_dump)
{
    make_report(dump_file);
    size_t n_dump, n_saved;
    char *from_dump = fx_read_file(page, &n_dump);
    cr_assert_not_null(from_dump, "cannot read the file");
    make_report("");
    char *from_saved = fx_read_file(page, &n_saved);
    cr_assert_not_null(from_saved, "cannot read the file");
    cr_expect(n_dump == n_saved && !memcmp(from_dump, from_saved, n_dump),
              "the saved histogram states give the page the dump gives");
    /* nothing fetched from elsewhere */
    cr_expect_null(strstr(from_saved, "http://"));
    cr_expect_null(strstr(from_saved, "https://"));
    cr_expect_null(strstr(from_saved, " src="));
    cr_expect_null(strstr(from_saved, "<link"));
    cr_expect(strstr(from_saved, "\"t0999\""), "every tensor's data is in the page");
    free(from_dump), free(from_saved);
}

Test(report, browser_runs_the_page_without_errors_and_shows_the_tensors)
{
    make_report(dump_file);
    render("#tensor=t0500");
    cr_assert(strstr(dom, "data-state=\"ready\""), "the script did not finish: %.2000s", dom);
    cr_expect(strstr(dom, "data-errors=\"0\""), "script errors: %.600s", strstr(dom, "qcal-status"));
    /* the first page of the table (sorted by name), paged at 100 of 1000 */
    for (int i = 0; i < 100; i += 11) {
        char cell[32];
        snprintf(cell, sizeof cell, ">t%04d</td>", i);
        cr_expect(strstr(dom, cell), "%s not on the first page", cell);
    }
    cr_expect_null(strstr(dom, ">t0100</td>"), "one page at a time");
    cr_expect(strstr(dom, "page 1 of 10, 1000 of 1000 tensors"), "pager");
    /* the tensor named in the address is open: its histogram and its candidates */
    cr_expect(strstr(dom, "<h2>t0500</h2>"), "detail of t0500");
    cr_expect(strstr(dom, "id=\"hist\""), "histogram canvas");
    cr_expect(strstr(dom, "candidates (chosen by mse)"), "candidates table");
    cr_expect(strstr(dom, ">percentile:99.99</td>") && strstr(dom, ">mse</td>"), "candidate rows");
}

Test(report, screenshot_of_the_rendered_page)
{
    make_report("");
    char cmd[4096], shot[512];
    snprintf(shot, sizeof shot, "%s/report.png", dir);
    snprintf(cmd, sizeof cmd, "'%s' --headless --no-sandbox --disable-gpu --no-first-run "
             "--user-data-dir='%s/profile' --window-size=1280,1000 --virtual-time-budget=10000 "
             "--screenshot='%s' 'file://%s#tensor=t0003' > /dev/null", browser(), dir, shot, page);
    cr_assert_eq(sh(cmd), 0, "%s", err_text);
    size_t n;
    char *png = fx_read_file(shot, &n);
    cr_assert_not_null(png, "cannot read the file");
    cr_expect(n > 20000, "a screenshot of a drawn page, not a blank one (%zu bytes)", n);
    cr_expect(!memcmp(png, "\x89PNG\r\n\x1a\n", 8), "PNG signature");
    free(png);
}

Test(report, bad_inputs_give_one_line)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' report '%s' -o '%s/r.html'", TEST_QCAL_EXE, dump_file, dir);
    cr_expect_eq(sh(cmd), 65, "a dump is not a results file");
    cr_expect(strstr(err_text, dump_file), "%s", err_text);
    snprintf(cmd, sizeof cmd, "'%s' report '%s' '%s/missing.h5' -o '%s/r.html'", TEST_QCAL_EXE,
             results_file, dir, dir);
    cr_expect_eq(sh(cmd), 66, "missing dump: %s", err_text);
    struct stat st;
    snprintf(cmd, sizeof cmd, "%s/r.html", dir);
    cr_expect_neq(stat(cmd, &st), 0, "nothing written");
}

/* ---- names that look like markup ------------------------------------------------------- */

static void setup_small(void)
{
    dir = fx_tmpdir();
    dump_file = fx_path(dir, "dump.h5");
    results_file = fx_path(dir, "results.h5");
    page = fx_path(dir, "report.html");
}

/* No .timeout here: a second suite with one makes Criterion 2.4.1 leak 48 bytes in its
 * runner, which the sanitizer build reports (measured); meson's timeout bounds the binary. */
TestSuite(report_names, .init = setup_small, .fini = teardown);

/* Tensor names are data, never markup: "<!--<script>" in the page's data block put the HTML
 * parser in the state where "</script>" no longer ends it, and the page came out empty
 * (found by an audit). The names show as text, and the page's script runs. */
Test(report_names, names_like_markup_stay_text)
{
    static float v[3][8 * 4];
    const char *const names[3] = {"<!--<script>", "</script><b>x", "a&b"};
    fx_dataset ds[3];
    for (int i = 0; i < 3; i++) {
        fx_fill_gauss(v[i], 32, (uint64_t)i + 7, 0.0f, 1.0f);
        ds[i] = (fx_dataset){.name = names[i], .dtype = DUMP_F32, .rank = 2, .dims = {8, 4},
                             .data = v[i], .channel_axis = FX_NO_ATTR};
    }
    cr_assert_eq(fx_write_dump(dump_file, ds, 3, 0), 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' run minmax '%s' -o '%s' > /dev/null", TEST_QCAL_EXE,
             dump_file, results_file);
    cr_assert_eq(sh(cmd), 0, "%s", err_text);
    make_report("");
    char *text = fx_read_file(page, NULL);
    cr_assert_not_null(text);
    cr_expect_null(strstr(text, "<!--<script>"), "raw in the page");
    free(text);
    render("");
    cr_assert(strstr(dom, "data-state=\"ready\""), "the script did not finish: %.2000s", dom);
    cr_expect(strstr(dom, "data-errors=\"0\""), "script errors");
    cr_expect(strstr(dom, ">&lt;!--&lt;script&gt;</td>"), "first name as text: %.3000s", dom);
    cr_expect(strstr(dom, ">&lt;/script&gt;&lt;b&gt;x</td>"), "second name as text");
    cr_expect(strstr(dom, ">a&amp;b</td>"), "third name as text");
}

/* The dump given to a report must be the results' own (by file name, and with the shapes the
 * results saw): another one gave histograms of other data against these ranges, or none,
 * without a word (found by an audit). */
Test(report_names, another_dump_is_refused)
{
    static float v[8 * 4];
    fx_fill_gauss(v, 32, 9, 0.0f, 1.0f);
    fx_dataset ds = {.name = "x", .dtype = DUMP_F32, .rank = 2, .dims = {8, 4}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    cr_assert_eq(fx_write_dump(dump_file, &ds, 1, 0), 0);
    char *other = fx_path(dir, "other.h5"), cmd[4096];
    cr_assert_eq(fx_write_dump(other, &ds, 1, 0), 0);
    snprintf(cmd, sizeof cmd, "'%s' run minmax '%s' -o '%s' > /dev/null", TEST_QCAL_EXE,
             dump_file, results_file);
    cr_assert_eq(sh(cmd), 0, "%s", err_text);
    snprintf(cmd, sizeof cmd, "'%s' report '%s' '%s' -o '%s'", TEST_QCAL_EXE, results_file, other,
             page);
    cr_expect_eq(sh(cmd), 64, "%s", err_text);
    cr_expect(strstr(err_text, "expected the dump of the results"), "%s", err_text);
    cr_expect_neq(access(page, F_OK), 0, "no page");
    make_report(dump_file); /* its own dump: fine */
    free(other);
}
