/* test_loader.c - loading plugins: search order, adoption, refusals, and the frozen ABI layout */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry.h"

#define VARIANT(name) TEST_VARIANT_DIR "/variant_" name ".so"
#define MINMAX_SO TEST_PLUGIN_DIR "/qcal-minmax.so"

/* ---- a private directory per test, and the warnings a registry gives --------------------- */

static char tmp[64];

static void make_tmp(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/qcal-loader-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tmp(void) { nftw(tmp, remove_one, 16, FTW_DEPTH | FTW_PHYS); }

TestSuite(loader, .init = make_tmp, .fini = remove_tmp);

typedef struct warnings {
    int n;
    char lines[16][QERROR_MSG_SIZE];
} warnings;

static void collect(void *ud, const char *line)
{
    warnings *w = ud;
    if (w->n < 16)
        snprintf(w->lines[w->n], sizeof w->lines[0], "%s", line);
    w->n++;
}

/* tmp/sub/name -> target (sub may be ""). Returns the link's path (static buffer per call). */
static const char *link_in(const char *sub, const char *name, const char *target)
{
    static char paths[8][PATH_MAX];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, PATH_MAX, "%s/%s", tmp, sub);
    mkdir(path, 0700);
    snprintf(path, PATH_MAX, "%s/%s%s%s", tmp, sub, *sub ? "/" : "", name);
    cr_assert_eq(symlink(target, path), 0, "symlink %s", path);
    return path;
}

static const char *real(const char *path)
{
    static char buf[4][PATH_MAX];
    static int next;
    char *out = buf[next++ % 4];
    cr_assert_not_null(realpath(path, out), "%s", path);
    return out;
}

/* ---- the bundled plugins ----------------------------------------------------------------- */

Test(loader, bundled_directory_loads_without_refusal)
{
    warnings w = {0};
    registry *r = registry_new(collect, &w);
    registry_load_dir(r, TEST_PLUGIN_DIR);
    for (int i = 0; i < w.n && i < 16; i++)
        cr_log_error("refused: %s", w.lines[i]);
    cr_expect_eq(w.n, 0);
    const char *observers[] = {"minmax", "minmax_per_channel", "moving_average_minmax"};
    for (int i = 0; i < 3; i++) {
        const reg_observer *o = registry_observer(r, observers[i]);
        cr_assert_not_null(o, "%s", observers[i]);
        cr_expect_str_eq(o->plugin->path, real(MINMAX_SO));
        cr_expect_str_eq(o->desc.stat_kind, "qcal.minmax");
    }
    const reg_estimator *est = registry_estimator(r, "minmax");
    cr_assert_not_null(est);
    cr_expect_str_eq(est->desc.accepts[0], "qcal.minmax");
    cr_expect_null(registry_observer(r, "no_such_observer"));
    registry_free(r);
}

/* Names defined in a file's dynamic symbol table, one per line. */
static int defined_symbols(const char *file, char names[][128], int max)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s'", file);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char line[512], addr[128], type[8], name[128];
    int n = 0;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "%127s %7s %127s", addr, type, name) == 3 && n < max)
            snprintf(names[n++], 128, "%s", name);
    cr_assert_eq(pclose(p), 0, "nm failed on %s", file);
    return n;
}

Test(loader, each_plugin_exports_only_its_entry)
{
    DIR *d = opendir(TEST_PLUGIN_DIR);
    cr_assert_not_null(d);
    int checked = 0;
    for (struct dirent *ent; (ent = readdir(d));) {
        size_t len = strlen(ent->d_name);
        if (len < 4 || strcmp(ent->d_name + len - 3, ".so"))
            continue;
        char path[PATH_MAX], names[8][128];
        snprintf(path, sizeof path, "%s/%s", TEST_PLUGIN_DIR, ent->d_name);
        int n = defined_symbols(path, names, 8);
        cr_expect_eq(n, 1, "%s exports %d symbols", ent->d_name, n);
        for (int i = 0; i < n; i++)
            cr_expect_str_eq(names[i], "qcal_plugin_entry", "%s", ent->d_name);
        checked++;
    }
    closedir(d);
    cr_expect_geq(checked, 1);
    char names[8][128];
    cr_expect_eq(defined_symbols(TEST_OOT_PLUGIN, names, 8), 1);
    cr_expect_str_eq(names[0], "qcal_plugin_entry");
}

/* ---- a third-party plugin, through the adopted vtable ------------------------------------ */

Test(loader, out_of_tree_plugin_runs)
{
    qerror e = {0};
    registry *r = registry_new(NULL, NULL);
    cr_assert_eq(registry_load_file(r, TEST_OOT_PLUGIN, &e), 0, "%s", e.msg);
    cr_assert_eq(registry_plugin_count(r), 1);
    const reg_plugin *p = registry_plugin(r, 0);
    cr_expect_str_eq(p->desc.name, "acme");
    cr_expect_str_eq(p->desc.version, "2.3.1");
    cr_expect_str_eq(p->path, real(TEST_OOT_PLUGIN));
    cr_expect_eq(p->abi_version, QCAL_ABI_VERSION);
    const reg_observer *o = registry_observer(r, "acme.absmax");
    cr_assert_not_null(o);
    cr_expect_eq(o->plugin, p);

    float data[3][4] = {{1.5f, -2.0f, 0.25f, NAN}, {-7.75f, 3.0f, INFINITY, 0.0f},
                        {6.5f, -INFINITY, -1.0f, 2.0f}};
    qcal_tensor t = {.name = "x", .rank = 2, .channel_axis = 1, .shape = {3, 4}, .batch_size = 1};
    qcal_err perr = {{0}};
    void *a, *b;
    cr_assert_eq(o->desc.create(&t, NULL, &a, &perr), QCAL_OK, "%s", perr.msg);
    cr_assert_eq(o->desc.create(&t, NULL, &b, &perr), QCAL_OK, "%s", perr.msg);
    qcal_slab first = {.data = data[0], .rows = 2, .row_size = 4, .first_row = 0};
    qcal_slab last = {.data = data[2], .rows = 1, .row_size = 4, .first_row = 2};
    cr_assert_eq(o->desc.observe(a, &first, &perr), QCAL_OK);
    cr_assert_eq(o->desc.observe(b, &last, &perr), QCAL_OK);
    cr_assert_eq(o->desc.merge(a, b, &perr), QCAL_OK);
    qcal_stat s;
    cr_assert_eq(o->desc.finalize(a, &s, &perr), QCAL_OK, "%s", perr.msg);
    cr_assert_str_eq(s.kind, "acme.absmax");
    cr_assert_eq(s.n_arrays, 1);
    cr_expect_eq(*(const float *)s.arrays[0].data, 7.75f); /* |-7.75|, by hand */

    const reg_estimator *est = registry_estimator(r, "acme.absmax");
    cr_assert_not_null(est);
    qcal_qspec spec = {.bits = 8, .flags = QCAL_QSPEC_SIGNED | QCAL_QSPEC_SYMMETRIC,
                       .qmin = -128, .qmax = 127, .axis = -1};
    qcal_range range;
    cr_assert_eq(est->desc.estimate(&s, NULL, &spec, &range, 1, &perr), QCAL_OK, "%s", perr.msg);
    cr_expect_eq(range.lo, -7.75);
    cr_expect_eq(range.hi, 7.75);
    o->desc.destroy(a);
    o->desc.destroy(b);
    registry_free(r);
}

/* ---- refusals ---------------------------------------------------------------------------- */

/* Loading `file` fails with a message naming the file and containing each of `parts`; the
 * registry keeps what it had. */
static void expect_refused(registry *r, const char *file, const char *const *parts, int n)
{
    size_t plugins = registry_plugin_count(r), observers = registry_observer_count(r);
    size_t estimators = registry_estimator_count(r);
    qerror e = {0};
    cr_assert_eq(registry_load_file(r, file, &e), -1, "%s was accepted", file);
    cr_expect_eq(strncmp(e.msg, file, strlen(file)), 0, "message does not start with the file: %s",
                 e.msg);
    for (int i = 0; i < n; i++)
        cr_expect(strstr(e.msg, parts[i]) != NULL, "'%s' not in: %s", parts[i], e.msg);
    cr_expect_eq(e.code, QERR_CONFIG);
    cr_expect_eq(registry_plugin_count(r), plugins);
    cr_expect_eq(registry_observer_count(r), observers);
    cr_expect_eq(registry_estimator_count(r), estimators);
}

Test(loader, each_broken_variant_refused_with_its_reason)
{
    registry *r = registry_new(NULL, NULL);
    qerror e = {0};
    cr_assert_eq(registry_load_file(r, MINMAX_SO, &e), 0, "%s", e.msg);
    const char *major[] = {": built for qcal plugin ABI 2.0, this qcal supports 1.x"};
    expect_refused(r, VARIANT("bad_major"), major, 1);
    const char *entry[] = {": no qcal_plugin_entry symbol"};
    expect_refused(r, VARIANT("no_entry"), entry, 1);
    const char *small[] = {": observer 'variant_small_size': struct_size 16 is below the ABI 1.0 "
                           "minimum 104"};
    expect_refused(r, VARIANT("small_size"), small, 1);
    const char *missing[] = {": observer 'variant_missing': required method 'merge' is missing"};
    expect_refused(r, VARIANT("missing_method"), missing, 1);
    const char *param[] = {": observer 'variant_bad_param': parameter 'level': default 100 is "
                           "outside [0, 10]"};
    expect_refused(r, VARIANT("bad_param"), param, 1);
    const char *dup[] = {": observer 'minmax' is already provided by ", real(MINMAX_SO)};
    expect_refused(r, VARIANT("dup_name"), dup, 2);
    cr_expect_str_eq(registry_observer(r, "minmax")->plugin->path, real(MINMAX_SO));
    registry_free(r);
}

Test(loader, duplicate_refuses_the_later_file_whole)
{
    /* good_extra first; a copy of it under another name declares the same two methods */
    qerror e = {0};
    registry *r = registry_new(NULL, NULL);
    cr_assert_eq(registry_load_file(r, VARIANT("good_extra"), &e), 0, "%s", e.msg);
    char copy[PATH_MAX], cmd[2 * PATH_MAX];
    snprintf(copy, sizeof copy, "%s/copy.so", tmp);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", VARIANT("good_extra"), copy);
    cr_assert_eq(system(cmd), 0);
    const char *dup[] = {": observer 'variant_obs' is already provided by ",
                         real(VARIANT("good_extra"))};
    expect_refused(r, copy, dup, 2);
    cr_expect_eq(registry_plugin_count(r), 1);
    registry_free(r);
}

Test(loader, newer_minor_accepted_and_its_extra_ignored)
{
    qerror e = {0};
    registry *r = registry_new(NULL, NULL);
    cr_assert_eq(registry_load_file(r, VARIANT("newer_minor"), &e), 0, "%s", e.msg);
    const reg_plugin *p = registry_plugin(r, 0);
    cr_expect_eq(p->abi_version, (uint32_t)(QCAL_ABI_MAJOR << 16 | 1));
    cr_expect_str_eq(p->desc.name, "variant_newer_minor");
    const reg_observer *o = registry_observer(r, "variant_newer");
    cr_assert_not_null(o);
    cr_expect_eq(o->desc.head.struct_size, sizeof(qcal_observer) + sizeof(void *));
    qcal_tensor t = {.name = "x", .rank = 2, .channel_axis = -1, .shape = {2, 3}, .batch_size = 1};
    float data[6] = {0};
    qcal_slab slab = {.data = data, .rows = 2, .row_size = 3};
    qcal_err perr = {{0}};
    void *s;
    cr_assert_eq(o->desc.create(&t, NULL, &s, &perr), QCAL_OK);
    cr_assert_eq(o->desc.observe(s, &slab, &perr), QCAL_OK);
    qcal_stat st;
    cr_assert_eq(o->desc.finalize(s, &st, &perr), QCAL_OK);
    cr_expect_eq(*(const uint64_t *)st.arrays[0].data, 6);
    o->desc.destroy(s);
    registry_free(r);
}

Test(loader, refusals_do_not_stop_a_directory_scan)
{
    const char *names[] = {"bad_major", "bad_param", "dup_name", "good_extra", "missing_method",
                           "newer_minor", "no_entry", "small_size"};
    char target[PATH_MAX], link[64];
    link_in("", "a_minmax.so", MINMAX_SO);
    for (int i = 7; i >= 0; i--) { /* created in reverse, loaded in name order */
        snprintf(target, sizeof target, "%s/variant_%s.so", TEST_VARIANT_DIR, names[i]);
        snprintf(link, sizeof link, "b%d_%s.so", i, names[i]);
        link_in("", link, target);
    }
    warnings w = {0};
    registry *r = registry_new(collect, &w);
    registry_load_dir(r, tmp);
    cr_assert_eq(w.n, 6);
    const char *reasons[] = {"ABI 2.0", "default 100", "already provided", "'merge'",
                             "no qcal_plugin_entry", "struct_size 16"};
    const char *files[] = {"b0_bad_major.so", "b1_bad_param.so", "b2_dup_name.so",
                           "b4_missing_method.so", "b6_no_entry.so", "b7_small_size.so"};
    for (int i = 0; i < 6; i++) {
        cr_expect(strstr(w.lines[i], files[i]) && strstr(w.lines[i], reasons[i]), "%d: %s", i,
                  w.lines[i]);
        cr_expect_null(strchr(w.lines[i], '\n'));
    }
    cr_assert_eq(registry_plugin_count(r), 3);
    cr_expect_str_eq(registry_plugin(r, 0)->desc.name, "minmax");
    cr_expect_str_eq(registry_plugin(r, 1)->desc.name, "variant");
    cr_expect_str_eq(registry_plugin(r, 2)->desc.name, "variant_newer_minor");
    cr_expect_not_null(registry_observer(r, "variant_obs"));
    cr_expect_not_null(registry_estimator(r, "variant_est"));
    cr_expect_not_null(registry_observer(r, "variant_newer"));
    registry_free(r);
}

/* ---- finding files ----------------------------------------------------------------------- */

Test(loader, directory_scan_is_sorted_flat_and_takes_only_so_files)
{
    link_in("d", "c.so", TEST_OOT_PLUGIN);
    link_in("d", "a.so", VARIANT("good_extra"));
    link_in("d", "b.so", VARIANT("newer_minor"));
    link_in("d", "ignored.so.1", MINMAX_SO);
    link_in("d", ".hidden.so", MINMAX_SO);
    link_in("d/nested", "minmax.so", MINMAX_SO);   /* not recursive */
    link_in("d", "dangling.so", "/nonexistent/x.so"); /* not a regular file */
    char dir_so[PATH_MAX];
    snprintf(dir_so, sizeof dir_so, "%s/d/sub.so", tmp);
    cr_assert_eq(mkdir(dir_so, 0700), 0);
    warnings w = {0};
    registry *r = registry_new(collect, &w);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/d", tmp);
    registry_load_dir(r, dir);
    cr_expect_eq(w.n, 0, "%s", w.lines[0]);
    cr_assert_eq(registry_plugin_count(r), 3);
    cr_expect_str_eq(registry_plugin(r, 0)->desc.name, "variant");
    cr_expect_str_eq(registry_plugin(r, 1)->desc.name, "variant_newer_minor");
    cr_expect_str_eq(registry_plugin(r, 2)->desc.name, "acme");
    cr_expect_null(registry_observer(r, "minmax"));
    registry_free(r);
}

Test(loader, bare_relative_name_is_the_file_here_not_a_library_search)
{
    cr_assert_eq(chdir(TEST_VARIANT_DIR), 0);
    qerror e = {0};
    registry *r = registry_new(NULL, NULL);
    cr_assert_eq(registry_load_file(r, "oot.so", &e), 0, "%s", e.msg);
    cr_expect_str_eq(registry_plugin(r, 0)->path, real(TEST_OOT_PLUGIN));
    registry_free(r);
}

Test(loader, file_that_is_not_a_shared_object_refused)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/notes.so", tmp);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("not an ELF file\n", f);
    fclose(f);
    link_in("", "ok.so", TEST_OOT_PLUGIN);
    warnings w = {0};
    registry *r = registry_new(collect, &w);
    registry_load_dir(r, tmp);
    cr_assert_eq(w.n, 1);
    cr_expect(strstr(w.lines[0], "notes.so: cannot load: ") == w.lines[0] + strlen(tmp) + 1,
              "%s", w.lines[0]);
    cr_expect_eq(registry_plugin_count(r), 1);
    registry_free(r);
}

Test(loader, missing_directory_is_skipped_silently)
{
    warnings w = {0};
    registry *r = registry_new(collect, &w);
    registry_load_dir(r, "/nonexistent/qcal/plugins");
    cr_expect_eq(w.n, 0);
    cr_expect_eq(registry_plugin_count(r), 0);
    registry_free(r);
}

Test(loader, same_file_loads_once_by_realpath)
{
    qerror e = {0};
    registry *r = registry_new(NULL, NULL);
    const char *link = link_in("", "alias.so", TEST_OOT_PLUGIN);
    char dotted[PATH_MAX];
    snprintf(dotted, sizeof dotted, "%s/../tests/oot.so", TEST_VARIANT_DIR);
    const char *paths[] = {TEST_OOT_PLUGIN, TEST_OOT_PLUGIN, link, dotted};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(registry_load_file(r, paths[i], &e), 0, "%s: %s", paths[i], e.msg);
    cr_expect_eq(registry_plugin_count(r), 1);
    cr_expect_eq(registry_observer_count(r), 1);
    cr_expect_str_eq(registry_plugin(r, 0)->path, real(TEST_OOT_PLUGIN));
    cr_expect_eq(registry_load_file(r, "/nonexistent/x.so", &e), -1);
    cr_expect(strstr(e.msg, "/nonexistent/x.so") && strstr(e.msg, "No such file"), "%s", e.msg);
    registry_free(r);
}

Test(loader, search_order_builtin_then_env_then_extras)
{
    link_in("builtin", "z.so", TEST_OOT_PLUGIN);
    link_in("env1", "y.so", VARIANT("good_extra"));
    link_in("env2", "x.so", VARIANT("newer_minor"));
    char builtin[PATH_MAX], env[3 * PATH_MAX], extra_dir[PATH_MAX];
    snprintf(builtin, sizeof builtin, "%s/builtin", tmp);
    snprintf(env, sizeof env, ":%s/env1::%s/nonexistent:%s/env2:", tmp, tmp, tmp);
    link_in("extra", "w.so", MINMAX_SO);
    snprintf(extra_dir, sizeof extra_dir, "%s/extra", tmp);
    const char *extras[] = {extra_dir, TEST_OOT_PLUGIN /* a file, already loaded */};
    warnings w = {0};
    registry *r = registry_new(collect, &w);
    registry_load_all(r, builtin, env, extras, 2);
    cr_expect_eq(w.n, 0, "%s", w.lines[0]);
    cr_assert_eq(registry_plugin_count(r), 4);
    const char *order[] = {"acme", "variant", "variant_newer_minor", "minmax"};
    for (int i = 0; i < 4; i++)
        cr_expect_str_eq(registry_plugin(r, (size_t)i)->desc.name, order[i]);
    registry_free(r);
}

Test(loader, empty_path_components_never_mean_the_current_directory)
{
    link_in("cwd", "here.so", VARIANT("good_extra"));
    char cwd[PATH_MAX];
    snprintf(cwd, sizeof cwd, "%s/cwd", tmp);
    cr_assert_eq(chdir(cwd), 0);
    warnings w = {0};
    registry *r = registry_new(collect, &w);
    registry_load_all(r, NULL, "::", NULL, 0);
    registry_load_all(r, "", "", NULL, 0);
    cr_expect_eq(registry_plugin_count(r), 0);
    cr_expect_eq(w.n, 0);
    const char *missing[] = {"/nonexistent/extra"};
    registry_load_all(r, NULL, NULL, missing, 1); /* an explicit path must exist */
    cr_expect_eq(w.n, 1);
    cr_expect(strstr(w.lines[0], "/nonexistent/extra") != NULL, "%s", w.lines[0]);
    registry_free(r);
}

/* ---- the host ---------------------------------------------------------------------------- */

Test(loader, host_struct_and_log, .init = cr_redirect_stderr)
{
    const qcal_host *h = registry_host();
    cr_assert_not_null(h);
    cr_expect_eq(h->head.abi_version, QCAL_ABI_VERSION);
    cr_expect_eq(h->head.struct_size, sizeof(qcal_host));
    cr_expect_gt(strlen(h->version), 0);
    h->log(h, QCAL_LOG_WARN, "acme: calibrating\n");
    h->log(h, QCAL_LOG_ERROR, "second line");
    fflush(stderr);
    cr_expect_stderr_eq_str("qcal: plugin: acme: calibrating\nqcal: plugin: second line\n");
}

/* ---- the frozen layout (x86_64 / LP64): a change here is an ABI break -------------------- */

#define PIN(type, member, off) cr_expect_eq(offsetof(type, member), off, #type "." #member)

Test(loader, abi_layout_is_pinned)
{
    cr_expect_eq(sizeof(qcal_head), 8);
    cr_expect_eq(sizeof(qcal_err), 256);
    cr_expect_eq(sizeof(qcal_value), 8);
    cr_expect_eq(sizeof(qcal_param), 56);
    PIN(qcal_param, name, 0); PIN(qcal_param, type, 8); PIN(qcal_param, flags, 12);
    PIN(qcal_param, def, 16); PIN(qcal_param, min, 24); PIN(qcal_param, max, 32);
    PIN(qcal_param, choices, 40); PIN(qcal_param, help, 48);
    cr_expect_eq(sizeof(qcal_array), 56);
    PIN(qcal_array, name, 0); PIN(qcal_array, dtype, 8); PIN(qcal_array, rank, 12);
    PIN(qcal_array, shape, 16); PIN(qcal_array, data, 48);
    cr_expect_eq(sizeof(qcal_stat), 32);
    PIN(qcal_stat, kind, 0); PIN(qcal_stat, kind_version, 8); PIN(qcal_stat, n_arrays, 12);
    PIN(qcal_stat, channels, 16); PIN(qcal_stat, arrays, 24);
    cr_expect_eq(sizeof(qcal_tensor), 88);
    PIN(qcal_tensor, name, 0); PIN(qcal_tensor, rank, 8); PIN(qcal_tensor, channel_axis, 12);
    PIN(qcal_tensor, shape, 16); PIN(qcal_tensor, batch_size, 80);
    cr_expect_eq(sizeof(qcal_slab), 32);
    PIN(qcal_slab, data, 0); PIN(qcal_slab, rows, 8); PIN(qcal_slab, row_size, 16);
    PIN(qcal_slab, first_row, 24);
    cr_expect_eq(sizeof(qcal_qspec), 32);
    PIN(qcal_qspec, bits, 0); PIN(qcal_qspec, flags, 4); PIN(qcal_qspec, qmin, 8);
    PIN(qcal_qspec, qmax, 16); PIN(qcal_qspec, axis, 24); PIN(qcal_qspec, reserved, 28);
    cr_expect_eq(sizeof(qcal_range), 16);
    PIN(qcal_range, lo, 0); PIN(qcal_range, hi, 8);
}

Test(loader, abi_1_0_sizes_are_pinned)
{
    cr_expect_eq(QCAL_OBSERVER_SIZE_1_0, 104);
    PIN(qcal_observer, name, 8); PIN(qcal_observer, stat_kind, 24);
    PIN(qcal_observer, n_params, 32); PIN(qcal_observer, params, 40);
    PIN(qcal_observer, create, 48); PIN(qcal_observer, merge, 64);
    PIN(qcal_observer, finalize, 88); PIN(qcal_observer, destroy, 96);
    cr_expect_eq(QCAL_ESTIMATOR_SIZE_1_0, 56);
    PIN(qcal_estimator, accepts, 24); PIN(qcal_estimator, params, 40);
    PIN(qcal_estimator, estimate, 48);
    cr_expect_eq(QCAL_HOST_SIZE_1_0, 24);
    PIN(qcal_host, version, 8); PIN(qcal_host, log, 16);
    cr_expect_eq(QCAL_PLUGIN_SIZE_1_0, 56);
    PIN(qcal_plugin, n_observers, 32); PIN(qcal_plugin, observers, 40);
    PIN(qcal_plugin, estimators, 48);
    cr_expect_eq(QCAL_ABI_VERSION, 0x10000u);
}
