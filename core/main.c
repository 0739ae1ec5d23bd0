/* main.c - the qcal command: run, list, info, show */
#include <ctype.h>
#include <errno.h>
#include <hdf5.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <lua.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <glob.h>
#include <unistd.h>
#include <wchar.h>

#include "dist.h"
#include "dump.h"
#include "merge.h"
#ifdef QCAL_WITH_MPI
#include "dist_mpi.h"
#endif
#include "export.h"
#include "h5attr.h"
#include "outfile.h"
#include "report.h"
#include "params.h"
#include "recipe.h"
#include "registry.h"
#include "results.h"

#define MAX_PLUGIN_PATHS 16
#define MAX_KV 64
#define MAX_POSITIONAL 4096

typedef struct cli {
    const char *command;
    const char *positional[MAX_POSITIONAL];
    int n_positional;
    char *kv_text[MAX_KV];
    param_input kv[MAX_KV];
    int n_kv;
    const char *plugin_paths[MAX_PLUGIN_PATHS];
    int n_plugin_paths;
    const char *output;
    const char *from_statistics;
    const char *format, *trt_version, *trt_algorithm, *qnn_version;
    int force, unsafe, help, candidates;
    int has_shard;
    uint64_t shard_index, shard_count;
    int threads;
    size_t slab_bytes, memory_limit;
    uint64_t batch_size, instruction_limit;
    int has_state_budget;
    size_t state_budget;
    int options_done;         /* after "--": every argument is a path */
    char seen[32][64];        /* the options given, by their long name */
    int n_seen;
} cli;

/* Set when running as one rank of several (MPI); NULL in a single process. */
static const dist *the_dist;

static const char *const usage_text =
    "usage: qcal COMMAND [options]\n"
    "\n"
    "  qcal run RECIPE DUMP... [-o OUT.h5] [key=value ...]  calibrate DUMP (several files: one\n"
    "                                                     dump, samples in the order given)\n"
    "  qcal observe RECIPE DUMP... --shard i/K -o S.h5    observer states of share i of K\n"
    "  qcal merge S.h5... -o STATS.h5                     fold the K shares' states into one\n"
    "  qcal list                                          plugins, methods, parameters, recipes\n"
    "  qcal info DUMP                                     tensors, shapes, dtypes, sizes\n"
    "  qcal show RESULTS.h5 [--candidates]                per-tensor ranges, errors, runner-up\n"
    "  qcal export RESULTS.h5 --format FMT [-o FILE]      tables for deployment toolchains\n"
    "  qcal report RESULTS.h5 [DUMP] [-o REPORT.html]     one self-contained HTML page\n"
    "\n"
    "  qcal COMMAND --help   options of a command;   qcal --version\n";

static const char *const run_help =
    "usage: qcal run RECIPE DUMP... [-o OUT.h5] [options] [key=value ...]\n"
    "       qcal run RECIPE --from-statistics RESULTS.h5 [-o OUT.h5] [key=value ...]\n"
    "\n"
    "RECIPE is a bundled recipe name (see `qcal list`) or a path to a .lua file.\n"
    "Several DUMP files (or a quoted glob, expanded in sorted order) are one dump: their\n"
    "samples concatenated in the order given; every file must hold the same tensors.\n"
    "Under `mpirun -n K` the ranks share the samples and rank 0 writes the results.\n"
    "key=value pairs are the recipe's parameters (typed by its defaults).\n"
    "--from-statistics re-estimates from the observer states saved in a results file,\n"
    "without reading the dump (the recipe must declare the same observers and parameters).\n"
    "\n"
    "  -o, --output FILE        results file (default: DUMP-stem.RECIPE.h5 here)\n"
    "  -f, --force              overwrite an existing results file\n"
    "  -j, --threads N          worker threads (default: online cores)\n"
    "      --slab-mib N         slab size in MiB of float32 (default 4)\n"
    "      --batch-size N       samples per calibration batch (default 32)\n"
    "      --plugin-path P      more plugins (file or directory; repeatable)\n"
    "      --unsafe             run the recipe without the sandbox\n"
    "      --max-memory MIB     memory the recipe may use (default 1024)\n"
    "      --max-instructions N Lua instructions the recipe may run (default 1000000000)\n"
    "      --state-mib N        observer states held in memory before the rest go to a\n"
    "                           temporary file in $TMPDIR (default 64; 0: all of them)\n";

static const char *const observe_help =
    "usage: qcal observe RECIPE DUMP... --shard i/K -o STATS-i.h5 [--from-statistics S.h5]\n"
    "                    [options] [key=value ...]\n\n"
    "Streams share i of K (0 <= i < K; each tensor's batches cut into K consecutive runs) through\n"
    "the first observation pass of the recipe that the --from-statistics file does not hold,\n"
    "and saves the observer states. Merge the K files with `qcal merge`, then finish with\n"
    "`qcal run RECIPE --from-statistics STATS.h5`, or, for a recipe whose next pass depends\n"
    "on this one (kl), observe again with --from-statistics STATS.h5. Same options as run.\n";
static const char *const merge_help =
    "usage: qcal merge STATS-0.h5 ... STATS-(K-1).h5 -o STATS.h5 [--force] [--plugin-path P]\n"
    "                  [--state-mib N]\n\n"
    "Folds the observer states of the K shares (any order of files; every share exactly once)\n"
    "into one statistics file, the same as one `qcal observe` over the whole dump.\n";

static const char *const list_help =
    "usage: qcal list [--plugin-path P]\n\n"
    "Lists plugins (with file and ABI version), observers and estimators with their\n"
    "parameters and defaults, and the bundled recipes with theirs.\n";
static const char *const info_help =
    "usage: qcal info DUMP\n\nLists the tensors of a dump: name, shape, dtype, size, "
    "channel axis, op type.\n";
static const char *const show_help =
    "usage: qcal show RESULTS.h5 [--candidates]\n\n"
    "Prints per tensor the method, scheme, range, scale and zero-point, the error that\n"
    "decided (for strategies such as mix and autotune) and the runner-up candidate.\n"
    "  --candidates   also list every candidate a strategy tried, with its errors\n";

static const char *const export_help =
    "usage: qcal export RESULTS.h5 --format FMT [-o FILE] [--force] [options]\n\n"
    "Writes the calibration in a format a deployment toolchain reads (to FILE, written whole\n"
    "or not at all, or to standard output):\n"
    "  tpu-mlir      calibration table: name threshold min max (%.7f)\n"
    "  tensorrt      INT8 calibration cache: name: hex of the float32 scale amax/127\n"
    "                  --trt-version N (8601)   --trt-algorithm NAME (EntropyCalibration2)\n"
    "  qnn           AIMET / QNN encodings JSON   --qnn-version 0.6.1|1.0.0 (0.6.1)\n"
    "  onnxruntime   calibration.json as ONNX Runtime's write_calibration_table\n"
    "  csv           one row per tensor (per channel for per-channel ranges)\n";

static const char *const report_help =
    "usage: qcal report RESULTS.h5 [DUMP] [-o REPORT.html] [--force]\n\n"
    "Writes one self-contained HTML page (no network, no external assets): a sortable,\n"
    "filterable table of every tensor, and per tensor its histogram (log scale) with the\n"
    "chosen range and every candidate marked, and each candidate's error. Histograms come\n"
    "from DUMP when given (one pass), else from the histogram states saved in RESULTS.\n"
    "Default output: RESULTS with .html for .h5.\n";

/* ---- parsing -------------------------------------------------------------------------- */

static int usage_error(qerror *e, const char *fmt, const char *arg)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    return qerror_set(e, QERR_USAGE, "%s (see `qcal --help`)", msg);
}

static int parse_count(const char *opt, const char *text, uint64_t min, uint64_t max,
                       uint64_t *out, qerror *e)
{
    char *end;
    unsigned long long v = text ? strtoull(text, &end, 10) : 0;
    if (!text || !*text || *end || text[0] == '-' || v < min || v > max)
        return qerror_set(e, QERR_USAGE, "%s: expected an integer in [%llu, %llu], found '%s'",
                          opt, (unsigned long long)min, (unsigned long long)max,
                          text ? text : "nothing");
    *out = v;
    return 0;
}

/* --shard i/K: share i (0-based) of K. */
static int parse_shard(cli *c, const char *opt, const char *val, qerror *e)
{
    char *end = NULL;
    unsigned long long i = val ? strtoull(val, &end, 10) : 0, k = 0;
    if (val && end != val && *end == '/' && val[0] != '-' && end[1] != '-')
        k = strtoull(end + 1, &end, 10);
    if (!val || *end || k < 1 || k > 1000000 || i >= k)
        return qerror_set(e, QERR_USAGE, "%s: expected i/K with 0 <= i < K (share i of K, "
                          "counted from 0), found '%s'", opt, val ? val : "nothing");
    c->has_shard = 1, c->shard_index = i, c->shard_count = k;
    return 0;
}

static const char *long_name(const char *opt)
{
    return !strcmp(opt, "-o") ? "--output" : !strcmp(opt, "-j") ? "--threads"
         : !strcmp(opt, "-f") ? "--force"  : !strcmp(opt, "-h") ? "--help" : opt;
}

/* Notes an option as given; a single-valued one given twice would silently keep the last. */
static int once(cli *c, const char *opt, int repeatable, qerror *e)
{
    const char *name = long_name(opt);
    for (int k = 0; k < c->n_seen; k++)
        if (!strcmp(c->seen[k], name))
            return repeatable ? 0 : usage_error(e, "option %s given twice", name);
    if (c->n_seen < 32)
        snprintf(c->seen[c->n_seen++], sizeof c->seen[0], "%s", name);
    return 0;
}

/* Options that take a value: returns 1 if consumed (with *i advanced), 0 if not ours. */
static int parse_valued(cli *c, const char *opt, const char *val, qerror *e, int *bad)
{
    uint64_t v = 0;
    *bad = 0;
    if (!strcmp(opt, "-o") || !strcmp(opt, "--output")) {
        c->output = val;
        *bad = !val ? usage_error(e, "%s needs a file", opt) : 0;
    } else if (!strcmp(opt, "--format") || !strcmp(opt, "--trt-version") ||
               !strcmp(opt, "--trt-algorithm") || !strcmp(opt, "--qnn-version")) {
        const char **slot = !strcmp(opt, "--format") ? &c->format
                             : !strcmp(opt, "--trt-version") ? &c->trt_version
                             : !strcmp(opt, "--trt-algorithm") ? &c->trt_algorithm : &c->qnn_version;
        *slot = val;
        *bad = !val ? usage_error(e, "%s needs a value", opt) : 0;
    } else if (!strcmp(opt, "--shard")) {
        *bad = parse_shard(c, opt, val, e);
    } else if (!strcmp(opt, "--from-statistics")) {
        c->from_statistics = val;
        *bad = !val ? usage_error(e, "%s needs a results file", opt) : 0;
    } else if (!strcmp(opt, "--plugin-path")) {
        if (!val || c->n_plugin_paths == MAX_PLUGIN_PATHS)
            *bad = usage_error(e, "%s needs a path (at most 16)", opt);
        else
            c->plugin_paths[c->n_plugin_paths++] = val;
    } else if (!strcmp(opt, "-j") || !strcmp(opt, "--threads")) {
        *bad = parse_count(opt, val, 1, 256, &v, e);
        c->threads = (int)v;
    } else if (!strcmp(opt, "--slab-mib")) {
        *bad = parse_count(opt, val, 1, 4096, &v, e);
        c->slab_bytes = (size_t)v << 20;
    } else if (!strcmp(opt, "--batch-size")) {
        *bad = parse_count(opt, val, 1, UINT32_MAX, &c->batch_size, e);
    } else if (!strcmp(opt, "--max-memory")) {
        *bad = parse_count(opt, val, 1, 1 << 20, &v, e);
        c->memory_limit = (size_t)v << 20;
    } else if (!strcmp(opt, "--state-mib")) {
        *bad = parse_count(opt, val, 0, 1 << 20, &v, e);
        c->state_budget = (size_t)v << 20, c->has_state_budget = 1;
    } else if (!strcmp(opt, "--max-instructions")) {
        *bad = parse_count(opt, val, 1000, UINT64_MAX / 2, &c->instruction_limit, e);
    } else {
        return 0;
    }
    return 1;
}

static int parse_flag(cli *c, const char *opt)
{
    if (!strcmp(opt, "-f") || !strcmp(opt, "--force"))
        c->force = 1;
    else if (!strcmp(opt, "--unsafe"))
        c->unsafe = 1;
    else if (!strcmp(opt, "-h") || !strcmp(opt, "--help"))
        c->help = 1;
    else if (!strcmp(opt, "--candidates"))
        c->candidates = 1;
    else
        return 0;
    return 1;
}

static int add_kv(cli *c, const char *arg, qerror *e)
{
    if (c->n_kv == MAX_KV)
        return usage_error(e, "too many key=value parameters (at most 64): '%s'", arg);
    char *copy = strdup(arg);
    if (!copy)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (params_parse_kv(copy, &c->kv[c->n_kv], e)) {
        free(copy);
        return -1;
    }
    for (int k = 0; k < c->n_kv; k++)
        if (!strcmp(c->kv[k].key, c->kv[c->n_kv].key)) { /* else the last one would win */
            qerror_set(e, QERR_USAGE, "parameter '%s' given twice (the second: '%s')",
                       c->kv[k].key, arg);
            free(copy);
            return -1;
        }
    c->kv_text[c->n_kv++] = copy;
    return 0;
}

/* key=value when what stands before '=' is a parameter name; "./a=b.h5" is a path. */
static int is_key_value(const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !(isalpha((unsigned char)arg[0]) || arg[0] == '_'))
        return 0;
    for (const char *p = arg; p < eq; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return 0;
    return 1;
}

static int parse_arg(cli *c, int argc, char **argv, int *i, qerror *e)
{
    char *arg = argv[*i];
    if (!c->options_done && !strcmp(arg, "--")) {
        c->options_done = 1;
        return 0;
    }
    if (!c->options_done && arg[0] == '-' && arg[1]) {
        char opt[64];
        const char *eq = strchr(arg, '=');
        const char *val = eq ? eq + 1 : (*i + 1 < argc ? argv[*i + 1] : NULL);
        snprintf(opt, sizeof opt, "%.*s", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
        int bad;
        if (parse_valued(c, opt, val, e, &bad)) {
            if (!eq && val)
                (*i)++;
            return bad || once(c, opt, !strcmp(opt, "--plugin-path"), e);
        }
        if (!eq && parse_flag(c, opt))
            return once(c, opt, 1, e);
        return usage_error(e, "unknown option '%s'", arg);
    }
    if (!c->options_done && is_key_value(arg) &&
        (!strcmp(c->command, "run") || !strcmp(c->command, "observe")))
        return add_kv(c, arg, e);
    if (c->n_positional == MAX_POSITIONAL)
        return usage_error(e, "too many arguments at '%s'", arg);
    c->positional[c->n_positional++] = arg;
    return 0;
}

static int parse_cli(cli *c, int argc, char **argv, qerror *e)
{
    memset(c, 0, sizeof *c);
    c->command = argv[1];
    for (int i = 2; i < argc; i++)
        if (parse_arg(c, argc, argv, &i, e))
            return -1;
    return 0;
}

/* ---- plugins -------------------------------------------------------------------------- */

static void warn_line(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "qcal: %s\n", line);
}

/* From the build tree, the build's plugins; installed, the installed ones. */
static const char *builtin_plugin_dir(void)
{
    if (getenv("QCAL_NO_DEFAULT_PLUGINS"))
        return NULL;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    if (n > 0 && !strncmp(exe, QCAL_BUILD_ROOT "/", strlen(QCAL_BUILD_ROOT "/")))
        return QCAL_BUILD_PLUGIN_DIR;
    return QCAL_PLUGIN_DIR;
}

static registry *load_plugins(const cli *c)
{
    registry *r = registry_new(warn_line, NULL);
    if (r)
        registry_load_all(r, builtin_plugin_dir(), getenv("QCAL_PLUGIN_PATH"),
                          c->plugin_paths, (size_t)c->n_plugin_paths);
    return r;
}

/* ---- qcal show ------------------------------------------------------------------------ */

/* ---- candidates: the error that decided, and the runner-up ---------------------------- */

static double candidate_value(const result_candidates *c, uint64_t k, const char *criterion)
{
    if (!strcmp(criterion, "sqnr_db"))
        return c->sqnr_db[k];
    if (!strcmp(criterion, "cosine"))
        return c->cosine[k];
    if (!strcmp(criterion, "layer_error"))
        return c->layer_error[k];
    return c->mse[k];
}

static int higher_is_better(const char *criterion)
{
    return !strcmp(criterion, "sqnr_db") || !strcmp(criterion, "cosine");
}

/* The best candidate other than the chosen one by the deciding criterion; -1 if none. */
static int64_t runner_up(const result_candidates *c)
{
    int64_t best = -1;
    int higher = higher_is_better(c->criterion);
    for (uint64_t k = 0; k < c->n; k++) {
        double v = candidate_value(c, k, c->criterion);
        if ((int64_t)k == c->chosen || isnan(v))
            continue;
        double b = best < 0 ? NAN : candidate_value(c, (uint64_t)best, c->criterion);
        if (best < 0 || (higher ? v > b : v < b))
            best = (int64_t)k;
    }
    return best;
}

/* ---- the table ----------------------------------------------------------------------- */

typedef struct widths {
    int name, method;
} widths;

/* The terminal columns text takes: wide characters (CJK) take two, combining marks none, and
 * a byte that is not UTF-8 one (print_table sets a UTF-8 character type). printf pads by
 * bytes, which shifts every column after a name with characters beyond ASCII. */
static int text_columns(const char *text)
{
    mbstate_t state;
    memset(&state, 0, sizeof state);
    int columns = 0;
    for (size_t left = strlen(text); left;) {
        wchar_t wc;
        size_t len = mbrtowc(&wc, text, left, &state);
        int invalid = len == (size_t)-1 || len == (size_t)-2 || len == 0;
        int w = invalid ? 1 : wcwidth(wc);
        if (invalid) /* one byte, one column; start afresh after it */
            len = 1, memset(&state, 0, sizeof state);
        columns += w < 0 ? 1 : w;
        text += len, left -= len;
    }
    return columns;
}

/* text, then spaces up to width columns */
static void print_padded(const char *text, int width)
{
    int pad = width - text_columns(text);
    printf("%s%*s", text, pad > 0 ? pad : 0, "");
}

/* "error" column: the deciding criterion of the chosen candidate, else the recorded mse. */
static void error_text(const result_tensor *t, const result_candidates *c, char *buf, size_t size)
{
    if (c && c->chosen >= 0)
        snprintf(buf, size, "%s %.4g", c->criterion, candidate_value(c, (uint64_t)c->chosen, c->criterion));
    else if (t->has_metrics)
        snprintf(buf, size, "mse %.4g", t->mse);
    else
        snprintf(buf, size, "-");
}

static void runner_up_text(const result_candidates *c, char *buf, size_t size)
{
    int64_t k = c ? runner_up(c) : -1;
    if (k < 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%s (%.4g)", c->method[k], candidate_value(c, (uint64_t)k, c->criterion));
}

static void print_candidates(const result_candidates *c, const widths *w)
{
    for (uint64_t k = 0; k < c->n; k++) {
        printf("    %c ", (int64_t)k == c->chosen ? '*' : ' ');
        print_padded(c->method[k], w->method);
        printf(" [%.6g, %.6g]  mse %.4g  sqnr %.2f dB  cosine %.6f", c->lo[k], c->hi[k],
               c->mse[k], c->sqnr_db[k], c->cosine[k]);
        if (!isnan(c->layer_error[k]))
            printf("  layer_error %.4g", c->layer_error[k]);
        printf("\n");
    }
}

static void print_row(const results *r, const result_tensor *t, const widths *w, int all)
{
    char scheme[48], granularity[32], error[64], second[160];
    result_scheme_text(&t->spec, scheme, sizeof scheme);
    double lo, hi;
    result_overall_range(t, &lo, &hi);
    snprintf(granularity, sizeof granularity, t->channels > 1 ? "ch[%llu]" : "tensor",
             (unsigned long long)t->channels);
    const result_candidates *c = results_find_candidates(r, t->tensor);
    error_text(t, c, error, sizeof error);
    runner_up_text(c, second, sizeof second);
    print_padded(t->tensor, w->name);
    printf(" ");
    print_padded(t->method, w->method);
    printf(" %-16s %-8s %13.6g %13.6g %13.6g %6lld  %-20s %s", scheme, granularity, lo, hi,
           t->scale[0], (long long)t->zero_point[0], error, second);
    if (t->note)
        printf("  (%s)", t->note);
    printf("\n");
    if (all && c)
        print_candidates(c, w);
}

static void measure(const results *r, widths *w)
{
    w->name = 6, w->method = 6;
    for (size_t i = 0; i < r->n_tensors; i++) {
        int n = text_columns(r->tensors[i].tensor), m = text_columns(r->tensors[i].method);
        w->name = n > w->name ? n : w->name, w->method = m > w->method ? m : w->method;
    }
    for (size_t i = 0; i < r->n_cands; i++)
        for (uint64_t k = 0; k < r->cands[i].n; k++) {
            int m = text_columns(r->cands[i].method[k]);
            w->method = m > w->method ? m : w->method;
        }
    w->name = w->name > 60 ? 60 : w->name, w->method = w->method > 40 ? 40 : w->method;
}

/* Per tensor: method, scheme, range, scale, zero-point, the error that decided and the
 * runner-up; with all, every candidate below its tensor (* marks the chosen one). */
static void print_table(const results *r, int all)
{
    char before[64] = "C";
    const char *ctype = setlocale(LC_CTYPE, NULL);
    snprintf(before, sizeof before, "%s", ctype ? ctype : "C");
    setlocale(LC_CTYPE, "C.UTF-8"); /* h5py writes names in UTF-8, whatever the locale */
    widths w;
    measure(r, &w);
    printf("%-*s %-*s %-16s %-8s %13s %13s %13s %6s  %-20s %s\n", w.name, "tensor", w.method,
           "method", "scheme", "granul.", "min", "max", "scale", "zp", "error", "runner-up");
    for (size_t i = 0; i < r->n_tensors; i++)
        print_row(r, &r->tensors[i], &w, all);
    setlocale(LC_CTYPE, before);
}

static int cmd_show(const cli *c, qerror *e)
{
    if (c->n_positional != 1)
        return usage_error(e, "show: expected one results file, got %s",
                           c->n_positional ? "more" : "none");
    results *r;
    if (results_read(c->positional[0], &r, e))
        return -1;
    printf("# %s: recipe %s, source %s, created %s\n", c->positional[0], r->recipe, r->source,
           r->created);
    print_table(r, c->candidates);
    results_free(r);
    return 0;
}

/* ---- qcal export ---------------------------------------------------------------------- */

static int cmd_export(const cli *c, qerror *e)
{
    if (c->n_positional != 1)
        return usage_error(e, "export: expected one results file, got %s",
                           c->n_positional ? "more" : "none");
    if (!c->format)
        return usage_error(e, "export: --format is required (%s)",
                           "tpu-mlir, tensorrt, qnn, onnxruntime or csv");
    if ((c->trt_version || c->trt_algorithm) && strcmp(c->format, "tensorrt"))
        return usage_error(e, "export: --trt-version and --trt-algorithm apply to --format "
                           "tensorrt, not %s", c->format);
    if (c->qnn_version && strcmp(c->format, "qnn"))
        return usage_error(e, "export: --qnn-version applies to --format qnn, not %s", c->format);
    results *r;
    if (results_read(c->positional[0], &r, e))
        return -1;
    if (!r->n_tensors) { /* a table with nothing calibrated in it would deploy as if complete */
        qerror_set(e, QERR_DATA, "%s: expected calibration results, found none%s",
                   c->positional[0], results_empty_hint(r));
        results_free(r);
        return -1;
    }
    export_options o = {c->format, c->trt_version, c->trt_algorithm, c->qnn_version};
    outfile out;
    int rc = outfile_open(&out, c->output, c->force, e);
    if (!rc && (rc = export_results(r, &o, out.f, e)) != 0)
        outfile_abandon(&out);
    else if (!rc)
        rc = outfile_commit(&out, e);
    results_free(r);
    return rc;
}

/* ---- qcal report ---------------------------------------------------------------------- */

static int cmd_report(const cli *c, qerror *e)
{
    if (c->n_positional < 1 || c->n_positional > 2)
        return usage_error(e, "report: expected RESULTS.h5 [DUMP], got %s",
                           c->n_positional ? "more" : "nothing");
    char fallback[PATH_MAX];
    const char *path = c->output;
    if (!path) {
        const char *res = c->positional[0];
        size_t n = strlen(res);
        int h5 = n > 3 && !strcmp(res + n - 3, ".h5");
        snprintf(fallback, sizeof fallback, "%.*s.html", (int)(h5 ? n - 3 : n), res);
        path = fallback;
    }
    registry *reg = load_plugins(c);
    if (!reg)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    report_options o = {.results_path = c->positional[0],
                        .dump_path = c->n_positional == 2 ? c->positional[1] : NULL, .reg = reg};
    pass_defaults(&o.pass);
    if (c->threads)
        o.pass.threads = c->threads;
    outfile out;
    int rc = outfile_open(&out, path, c->force, e);
    if (!rc && (rc = report_write(&o, out.f, e)) != 0) {
        outfile_abandon(&out);
        if (e->code == QERR_IO) /* which file the disk refused */
            qerror_prefix(e, "%s", path ? path : "standard output");
    }
    else if (!rc && (rc = outfile_commit(&out, e)) == 0 && path != c->output)
        fprintf(stderr, "qcal: wrote %s\n", path);
    registry_free(reg);
    return rc;
}

/* ---- qcal info ------------------------------------------------------------------------ */

static void print_tensor_info(const dump_tensor *t)
{
    char shape[160] = "";
    size_t len = 0;
    double bytes = (double)t->elem_size;
    for (int d = 0; d < t->rank; d++) {
        len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%llu", d ? "x" : "",
                                (unsigned long long)t->dims[d]);
        bytes *= (double)t->dims[d];
    }
    char axis[16] = "-";
    if (t->channel_axis >= 0)
        snprintf(axis, sizeof axis, "%d", t->channel_axis);
    printf("%-40s %-20s %-8s %10.2f %4s %s\n", t->name, shape, dump_dtype_name(t->dtype),
           bytes / (1 << 20), axis, t->op_type ? t->op_type : "-");
}

static int cmd_info(const cli *c, qerror *e)
{
    if (c->n_positional != 1)
        return usage_error(e, "info: expected one dump, got %s", c->n_positional ? "more" : "none");
    dump *d;
    if (dump_open(c->positional[0], &d, e))
        return -1;
    printf("%-40s %-20s %-8s %10s %4s %s\n", "tensor", "shape", "dtype", "MiB", "axis", "op_type");
    for (size_t i = 0; i < dump_count(d); i++)
        print_tensor_info(dump_get(d, i));
    dump_close(d);
    return 0;
}

/* ---- qcal list ------------------------------------------------------------------------ */

static void print_params(const qcal_param *p, uint32_t n)
{
    static const char *const type_names[] = {"?", "int", "float", "bool", "choice"};
    for (uint32_t i = 0; i < n; i++) {
        char value[96];
        params_format(&p[i], p[i].def, value, sizeof value);
        printf("      %-22s %-6s = %-10s %s", p[i].name, type_names[p[i].type <= 4 ? p[i].type : 0],
               value, p[i].help);
        if (p[i].type == QCAL_PARAM_CHOICE) {
            printf(" {");
            for (const char *const *ch = p[i].choices; *ch; ch++)
                printf("%s%s", ch == p[i].choices ? "" : "|", *ch);
            printf("}");
        } else if (p[i].type != QCAL_PARAM_BOOL) {
            printf(" [%g, %g]", p[i].min, p[i].max);
        }
        printf("\n");
    }
}

static void list_plugins(const registry *r)
{
    printf("plugins:\n");
    for (size_t i = 0; i < registry_plugin_count(r); i++) {
        const reg_plugin *p = registry_plugin(r, i);
        printf("  %-14s %s (ABI %u.%u) %s\n", p->desc.name, p->desc.version ? p->desc.version : "",
               QCAL_ABI_MAJOR_OF(p->abi_version), QCAL_ABI_MINOR_OF(p->abi_version), p->path);
    }
    printf("\nobservers:\n");
    for (size_t i = 0; i < registry_observer_count(r); i++) {
        const reg_observer *o = registry_observer_at(r, i);
        printf("  %-24s -> %-16s %s\n", o->desc.name, o->desc.stat_kind, o->desc.help);
        print_params(o->desc.params, o->desc.n_params);
    }
    printf("\nestimators:\n");
    for (size_t i = 0; i < registry_estimator_count(r); i++) {
        const reg_estimator *est = registry_estimator_at(r, i);
        printf("  %-24s <- %-16s %s\n", est->desc.name, est->desc.accepts[0], est->desc.help);
        print_params(est->desc.params, est->desc.n_params);
    }
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void list_recipes(void)
{
    printf("\nrecipes (%s):\n", recipe_dir());
    struct dirent **entries;
    int n = scandir(recipe_dir(), &entries, NULL, by_name);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(entries[i]->d_name);
        if (len > 4 && !strcmp(entries[i]->d_name + len - 4, ".lua")) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", recipe_dir(), entries[i]->d_name);
            recipe_param ps[64];
            size_t np = 0;
            qerror e = {0};
            printf("  %.*s\n", (int)(len - 4), entries[i]->d_name);
            if (recipe_describe(path, ps, 64, &np, &e))
                printf("      (parameters unknown: %s)\n", e.msg);
            for (size_t k = 0; k < np; k++)
                printf("      %-22s %-7s = %s\n", ps[k].name, ps[k].type, ps[k].value);
        }
        free(entries[i]);
    }
    if (n >= 0)
        free(entries);
}

static int cmd_list(const cli *c, qerror *e)
{
    registry *r = load_plugins(c);
    if (!r)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    list_plugins(r);
    list_recipes();
    registry_free(r);
    return 0;
}

/* ---- qcal run ------------------------------------------------------------------------- */

static void log_stderr(void *ud, const char *text)
{
    (void)ud;
    fputs(text, stderr);
}

static void progress_tty(void *ud, uint64_t done, uint64_t total)
{
    (void)ud;
    static int last = -1;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (pct != last) {
        fprintf(stderr, "\rqcal: reading %3d%%%s", pct, done >= total ? "\n" : "");
        last = pct;
    }
}

static void default_output(const cli *c, char *buf, size_t size)
{
    const char *dump = c->from_statistics ? c->from_statistics : c->positional[1];
    const char *slash = strrchr(dump, '/');
    const char *recipe = c->positional[0], *rslash = strrchr(recipe, '/');
    char stem[256], rstem[128];
    snprintf(stem, sizeof stem, "%s", slash ? slash + 1 : dump);
    snprintf(rstem, sizeof rstem, "%s", rslash ? rslash + 1 : recipe);
    char *dot = strrchr(stem, '.');
    if (dot)
        *dot = '\0';
    if ((dot = strrchr(rstem, '.')))
        *dot = '\0';
    snprintf(buf, size, "%s.%s.h5", stem, rstem);
}

/* The dump files named from positional[first] on; a pattern that names no file itself
 * (the shell left it unexpanded, e.g. quoted) is expanded here, in sorted order. */
typedef struct file_list {
    char **paths;
    size_t n, cap;
} file_list;

static int list_add(file_list *l, const char *path)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **grown = realloc(l->paths, cap * sizeof *grown);
        if (!grown)
            return -1;
        l->paths = grown, l->cap = cap;
    }
    if (!(l->paths[l->n] = strdup(path)))
        return -1;
    l->n++;
    return 0;
}

static void list_free(file_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->paths[i]);
    free(l->paths);
}

static int expand_files(const cli *c, int first, file_list *out, qerror *e)
{
    memset(out, 0, sizeof *out);
    for (int i = first; i < c->n_positional; i++) {
        const char *arg = c->positional[i];
        glob_t g;
        if (access(arg, F_OK) == 0 || !strpbrk(arg, "*?[")) {
            if (list_add(out, arg))
                return qerror_set(e, QERR_SOFTWARE, "out of memory");
            continue;
        }
        if (glob(arg, 0, NULL, &g) != 0)
            return qerror_set(e, QERR_NOINPUT, "%s: no file matches this pattern", arg);
        for (size_t k = 0; k < g.gl_pathc; k++)
            if (list_add(out, g.gl_pathv[k])) {
                globfree(&g);
                return qerror_set(e, QERR_SOFTWARE, "out of memory");
            }
        globfree(&g);
    }
    return 0;
}

static void fill_recipe_options(const cli *c, registry *reg, const char *out, recipe_options *o)
{
    recipe_defaults(o);
    o->recipe = c->positional[0];
    o->from_statistics = c->from_statistics;
    o->output = out;
    o->force = c->force;
    o->unsafe = c->unsafe;
    o->params = c->kv;
    o->n_params = (size_t)c->n_kv;
    o->reg = reg;
    o->memory_limit = c->memory_limit;
    o->instruction_limit = c->instruction_limit;
    o->log = log_stderr;
    if (c->threads)
        o->pass.threads = c->threads;
    if (c->slab_bytes)
        o->pass.slab_bytes = c->slab_bytes;
    if (c->batch_size)
        o->pass.batch_size = c->batch_size;
    o->pass.dist = the_dist;
    const char *term = getenv("TERM");
    if (isatty(STDERR_FILENO) && !(term && !strcmp(term, "dumb")) &&
        (!the_dist || the_dist->rank == 0))
        o->pass.progress = progress_tty;
}

/* Runs the recipe for run and observe: DUMP... from positional[1] on (none with
 * --from-statistics for run). */
static int run_recipe(const cli *c, const char *out, int observe, results **written, qerror *e)
{
    file_list dumps = {0};
    if (c->n_positional > 1 && expand_files(c, 1, &dumps, e)) {
        list_free(&dumps);
        return -1;
    }
    registry *reg = load_plugins(c);
    if (!reg) {
        list_free(&dumps);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    recipe_options o;
    fill_recipe_options(c, reg, out, &o);
    if (dumps.n) {
        o.dump_paths = (const char *const *)dumps.paths;
        o.n_dump_paths = dumps.n;
        o.dump_path = dumps.paths[0];
    }
    o.observe = observe;
    if (observe && c->has_shard)
        o.pass.share_index = c->shard_index, o.pass.share_count = c->shard_count;
    if (the_dist && the_dist->rank != 0)
        o.output = NULL; /* rank 0 writes */
    o.written = written;
    int rc = recipe_run(&o, e);
    registry_free(reg);
    list_free(&dumps);
    return rc;
}

static int cmd_run(const cli *c, qerror *e)
{
    if (c->from_statistics ? c->n_positional != 1 : c->n_positional < 2)
        return usage_error(e, "run: expected RECIPE and %s", c->from_statistics
                           ? "no DUMP with --from-statistics" : "DUMP... (or --from-statistics FILE)");
    if (c->has_shard)
        return usage_error(e, "run: %s", "--shard belongs to `qcal observe` (see qcal observe --help)");
    char out[PATH_MAX];
    if (c->output)
        snprintf(out, sizeof out, "%s", c->output);
    else
        default_output(c, out, sizeof out);
    results *r = NULL; /* printed from memory: reading 2,000 tensors back took a second */
    int rc = run_recipe(c, out, 0, &r, e);
    if (!rc && r) {
        results_sort_as_file(r);
        printf("# %s\n", out);
        print_table(r, 0);
    }
    results_free(r);
    return rc;
}

/* ---- qcal observe, qcal merge --------------------------------------------------------- */

static int cmd_observe(const cli *c, qerror *e)
{
    if (c->n_positional < 2)
        return usage_error(e, "observe: expected RECIPE and DUMP..., got %s",
                           c->n_positional ? "no DUMP" : "nothing");
    if (!c->output)
        return usage_error(e, "observe: %s", "-o STATS.h5 is required (one file per share)");
    if (the_dist)
        return usage_error(e, "observe: %s", "under MPI use `qcal run`: ranks are the shares");
    if (run_recipe(c, c->output, 1, NULL, e))
        return -1;
    fprintf(stderr, "qcal: saved the states of share %llu/%llu of the next pass to %s: merge the "
            "shares, then `qcal run %s --from-statistics MERGED` (if it asks for another pass, "
            "observe again with --from-statistics MERGED)\n",
            (unsigned long long)(c->has_shard ? c->shard_index : 0),
            (unsigned long long)(c->has_shard ? c->shard_count : 1), c->output, c->positional[0]);
    return 0;
}

static int cmd_merge(const cli *c, qerror *e)
{
    if (c->n_positional < 1 || !c->output)
        return usage_error(e, "merge: expected %s", c->n_positional ? "-o STATS.h5"
                                                                    : "STATS... -o STATS.h5");
    file_list files = {0};
    registry *reg = NULL;
    int rc = expand_files(c, 0, &files, e);
    if (!rc && !(reg = load_plugins(c)))
        rc = qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (!rc)
        rc = stats_merge((const char *const *)files.paths, files.n, reg, c->output, c->force, e);
    if (!rc)
        fprintf(stderr, "qcal: merged %zu shares into %s\n", files.n, c->output);
    registry_free(reg);
    list_free(&files);
    return rc;
}

/* ---- main ----------------------------------------------------------------------------- */

static void print_version(void)
{
    unsigned maj, min, rel;
    H5get_libversion(&maj, &min, &rel);
    printf("qcal %s\nplugin ABI %d.%d, HDF5 %u.%u.%u, %s\n", QCAL_VERSION, QCAL_ABI_MAJOR,
           QCAL_ABI_MINOR, maj, min, rel, LUA_RELEASE);
}

typedef struct command {
    const char *name;
    int (*fn)(const cli *c, qerror *e);
    const char *options; /* the options it takes (--help: all), each followed by a space */
} command;

#define PASS_OPTIONS "--plugin-path --threads --slab-mib --batch-size --state-mib "
#define RECIPE_OPTIONS "--output --force --from-statistics --max-memory --max-instructions --unsafe "
static const command commands[] = {
    {"run", cmd_run, RECIPE_OPTIONS PASS_OPTIONS},
    {"observe", cmd_observe, RECIPE_OPTIONS PASS_OPTIONS "--shard "},
    {"merge", cmd_merge, "--output --force --plugin-path --state-mib "},
    {"list", cmd_list, "--plugin-path "},
    {"info", cmd_info, ""},
    {"show", cmd_show, "--candidates "},
    {"export", cmd_export, "--output --force --format --trt-version --trt-algorithm --qnn-version "},
    {"report", cmd_report, "--output --force --plugin-path --threads --slab-mib "},
    {NULL, NULL, NULL},
};

/* An option the command does not take would be ignored silently (`show -o x.txt`). */
static int options_taken(const command *cmd, const cli *c, qerror *e)
{
    for (int k = 0; k < c->n_seen; k++) {
        char word[72];
        snprintf(word, sizeof word, "%s ", c->seen[k]);
        if (strcmp(c->seen[k], "--help") && !strstr(cmd->options, word))
            return qerror_set(e, QERR_USAGE, "%s: option %s does not apply (see `qcal %s --help`)",
                              cmd->name, c->seen[k], cmd->name);
    }
    return 0;
}

static const char *help_of(const char *name)
{
    if (!strcmp(name, "run"))
        return run_help;
    if (!strcmp(name, "observe"))
        return observe_help;
    if (!strcmp(name, "merge"))
        return merge_help;
    if (!strcmp(name, "list"))
        return list_help;
    if (!strcmp(name, "info"))
        return info_help;
    if (!strcmp(name, "export"))
        return export_help;
    if (!strcmp(name, "report"))
        return report_help;
    if (!strcmp(name, "show"))
        return show_help;
    return NULL;
}

/* Replacing an input (a dump, a recipe, a results file) would lose it: refused even with
 * --force. What -o replaces is its directory entry (lstat: a symbolic link itself, which
 * leaves its target alone), compared with the file each input names. */
/* The results of run, observe and merge are HDF5 files: "-" (stdout for export and report)
 * would become a file named "-". */
static int results_to_stdout(const char *command, const cli *c, qerror *e)
{
    int writes_results = !strcmp(command, "run") || !strcmp(command, "observe") ||
                         !strcmp(command, "merge");
    if (writes_results && c->output && !strcmp(c->output, "-"))
        return qerror_set(e, QERR_USAGE, "%s: -o -: results are an HDF5 file, which cannot go "
                          "to standard output (give a path)", command);
    return 0;
}

static int output_replaces_an_input(const cli *c, qerror *e)
{
    struct stat out, in;
    if (!c->output || lstat(c->output, &out) != 0)
        return 0;
    for (int i = 0; i <= c->n_positional; i++) {
        const char *input = i < c->n_positional ? c->positional[i] : c->from_statistics;
        if (input && stat(input, &in) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino)
            return qerror_set(e, QERR_USAGE, "-o '%s' is the input '%s': refusing to replace an "
                              "input, even with --force", c->output, input);
    }
    return 0;
}

static int dispatch(int argc, char **argv, qerror *e)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        const char *topic = argc >= 3 && !strcmp(argv[1], "help") ? argv[2] : NULL;
        if (topic && !help_of(topic))
            return usage_error(e, "help: no command '%s' (run, observe, merge, list, info, show, "
                               "export, report)", topic);
        fputs(topic ? help_of(topic) : usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? qerror_set(e, QERR_USAGE, "no command given") : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        print_version();
        return 0;
    }
    for (const command *cmd = commands; cmd->name; cmd++) {
        if (strcmp(argv[1], cmd->name))
            continue;
        cli c;
        int rc = parse_cli(&c, argc, argv, e);
        rc = rc || options_taken(cmd, &c, e) || results_to_stdout(cmd->name, &c, e) ||
             output_replaces_an_input(&c, e);
        if (!rc && c.help)
            fputs(help_of(cmd->name), stdout);
        else if (!rc) {
            if (c.has_state_budget)
                results_set_state_budget(c.state_budget);
            rc = cmd->fn(&c, e);
        }
        for (int i = 0; i < c.n_kv; i++)
            free(c.kv_text[i]);
        return rc;
    }
    return usage_error(e, "unknown command '%s'", argv[1]);
}

/* An interrupted run leaves no partial results: the temporary file goes, the target was never
 * touched; then the signal takes its default course. */
static void on_signal(int sig)
{
    results_abandon_temp();
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    qerror e = {0};
#ifdef QCAL_WITH_MPI
    if (dist_mpi_launched() && !(the_dist = dist_mpi_init(&argc, &argv))) {
        fprintf(stderr, "qcal: started by an MPI launcher, but MPI does not initialize\n");
        return 70;
    }
#endif
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    h5_guard_install();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* HDF5 keeps freed objects on free lists without bound (tens of MiB after opening 2,000
     * datasets and writing their results): cap them at 1 MiB per kind, 64 KiB per list. */
    H5set_free_list_limits(1 << 20, 64 << 10, 1 << 20, 64 << 10, 1 << 20, 64 << 10);
#ifdef __GLIBC__
    /* One malloc arena: observer states are made on worker threads and freed, serialized, on
     * the main one; with an arena per thread the two high-water marks add up (2,000 tensors:
     * 282 MiB instead of 184). Nothing allocates in the inner loops, so nothing contends. */
    mallopt(M_ARENA_MAX, 1);
#endif
    int rc = dispatch(argc, argv, &e) == 0 ? 0 : (e.code ? e.code : 1);
    if (!rc && (fflush(stdout) != 0 || ferror(stdout))) { /* `qcal show > /dev/full` */
        qerror_set(&e, QERR_IO, "writing to standard output failed: %s", strerror(errno));
        rc = QERR_IO;
    }
    if (rc && the_dist) /* every rank reports its own error */
        fprintf(stderr, "qcal: rank %d of %d: %s\n", the_dist->rank, the_dist->size, e.msg);
    else if (rc)
        fprintf(stderr, "qcal: %s\n", e.msg);
#ifdef QCAL_WITH_MPI
    if (the_dist)
        dist_mpi_finish(the_dist, rc);
#endif
    if (h5_exit_must_skip_library()) { /* HDF5's clean-up would crash on the half-closed file */
        fflush(NULL);
        _exit(rc);
    }
    return rc;
}
