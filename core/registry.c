/* registry.c - finding, loading and adopting plugins (the host side of the plugin ABI) */
#include "registry.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "params.h"

#ifndef QCAL_VERSION
#define QCAL_VERSION "unknown"
#endif

#define METHODS_MAX 4096 /* per file: more is a corrupt descriptor */
#define NAME_MAX_LEN 63 /* observer and estimator names end up in HDF5 paths and tables */

typedef struct ptrvec {
    void **items;
    size_t n, cap;
} ptrvec;

struct registry {
    void (*warn)(void *ud, const char *line);
    void *ud;
    ptrvec plugins, observers, estimators; /* each item malloc'd alone: pointers stay valid */
};

/* One file being loaded: nothing reaches the registry until all of it has been accepted. */
typedef struct staged {
    void *handle;
    reg_plugin *plugin;
    reg_observer **observers;
    reg_estimator **estimators;
    uint32_t n_observers, n_estimators; /* adopted so far */
} staged;

/* ---- the host as plugins see it ---------------------------------------------------------- */

/* [any thread] One line to stderr; the stream lock keeps concurrent lines whole. Debug lines
 * only when QCAL_DEBUG is set. */
static void host_log(const qcal_host *host, uint32_t level, const char *line)
{
    (void)host;
    if (!line || (level >= QCAL_LOG_DEBUG && !getenv("QCAL_DEBUG")))
        return;
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    flockfile(stderr);
    fputs("qcal: plugin: ", stderr);
    fwrite(line, 1, len, stderr);
    fputc('\n', stderr);
    funlockfile(stderr);
}

static const qcal_host the_host = {
    .head = QCAL_HEAD(qcal_host),
    .version = QCAL_VERSION,
    .log = host_log,
};

const qcal_host *registry_host(void) { return &the_host; }

/* ---- small containers -------------------------------------------------------------------- */

static int vec_reserve(ptrvec *v, size_t extra)
{
    if (v->n + extra <= v->cap)
        return 0;
    size_t cap = v->cap ? v->cap : 8;
    while (cap < v->n + extra)
        cap *= 2;
    void **items = realloc(v->items, cap * sizeof *items);
    if (!items)
        return -1;
    v->items = items;
    v->cap = cap;
    return 0;
}

registry *registry_new(void (*warn)(void *ud, const char *line), void *ud)
{
    registry *r = calloc(1, sizeof *r);
    if (r) {
        r->warn = warn;
        r->ud = ud;
    }
    return r;
}

static void free_items(ptrvec *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->items[i]);
    free(v->items);
}

/* Plugins stay loaded: their strings and functions must outlive every user (see plugin.h). */
void registry_free(registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->plugins.n; i++)
        free(((reg_plugin *)r->plugins.items[i])->path);
    free_items(&r->plugins);
    free_items(&r->observers);
    free_items(&r->estimators);
    free(r);
}

static void warn_line(const registry *r, const char *line)
{
    if (r->warn)
        r->warn(r->ud, line);
    else
        fprintf(stderr, "qcal: %s\n", line);
}

/* ---- adopting a struct ------------------------------------------------------------------- */

/* Copies a plugin struct into `own` (own_size bytes, zero-filled beyond what the plugin has),
 * refusing another major and a size below the 1.0 minimum. `what` is "" or "observer 'x': ". */
static int adopt(const void *src, void *own, size_t own_size, size_t min_size, const char *file,
                 const char *what, qerror *e)
{
    const qcal_head *head = src;
    uint32_t major = QCAL_ABI_MAJOR_OF(head->abi_version);
    if (major != QCAL_ABI_MAJOR)
        return qerror_set(e, QERR_CONFIG, "%s: %sbuilt for qcal plugin ABI %u.%u, this qcal "
                          "supports %d.x", file, what, major,
                          QCAL_ABI_MINOR_OF(head->abi_version), QCAL_ABI_MAJOR);
    if (head->struct_size < min_size)
        return qerror_set(e, QERR_CONFIG, "%s: %sstruct_size %u is below the ABI 1.0 minimum %zu "
                          "(corrupt, or not built against qcal/plugin.h)", file, what,
                          head->struct_size, min_size);
    memset(own, 0, own_size);
    memcpy(own, src, head->struct_size < own_size ? head->struct_size : own_size);
    return 0;
}

/* How to call a descriptor in messages before adopting it: its name only when the plugin's
 * struct is of our major and long enough to hold one. */
static void describe(const void *src, const char *kind, uint32_t i, char *buf, size_t size)
{
    const qcal_head *head = src;
    const char *name = NULL;
    if (QCAL_ABI_MAJOR_OF(head->abi_version) == QCAL_ABI_MAJOR &&
        head->struct_size >= offsetof(qcal_observer, name) + sizeof(const char *))
        memcpy(&name, (const char *)src + offsetof(qcal_observer, name), sizeof name);
    if (name && *name && strlen(name) <= NAME_MAX_LEN)
        snprintf(buf, size, "%s '%s': ", kind, name);
    else
        snprintf(buf, size, "%s #%u: ", kind, i);
}

/* ---- checks after adopting --------------------------------------------------------------- */

static int method_name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return n > 0 && n <= NAME_MAX_LEN;
}

static int check_common(const char *name, uint32_t flags, const qcal_param *params,
                        uint32_t n_params, qerror *e)
{
    if (!name || !method_name_ok(name))
        return qerror_set(e, QERR_CONFIG, "name '%s' must be 1 to %d of [a-z0-9_.-]",
                          name ? name : "(null)", NAME_MAX_LEN);
    if (flags)
        return qerror_set(e, QERR_CONFIG, "flags 0x%x are reserved and must be 0", flags);
    return params_check_decls(params, n_params, e);
}

static const char *missing_observer_method(const qcal_observer *o)
{
    if (!o->create)
        return "create";
    if (!o->observe)
        return "observe";
    if (!o->merge)
        return "merge";
    if (!o->serialize)
        return "serialize";
    if (!o->deserialize)
        return "deserialize";
    if (!o->finalize)
        return "finalize";
    return o->destroy ? NULL : "destroy";
}

static int check_observer(qcal_observer *o, qerror *e)
{
    if (check_common(o->name, o->flags, o->params, o->n_params, e))
        return -1;
    const char *missing = missing_observer_method(o);
    if (missing)
        return qerror_set(e, QERR_CONFIG, "required method '%s' is missing (NULL)", missing);
    if (!o->stat_kind || !*o->stat_kind)
        return qerror_set(e, QERR_CONFIG, "stat_kind is missing");
    if (!o->help)
        o->help = ""; /* our copy: optional text reads as empty */
    return 0;
}

static int check_estimator(qcal_estimator *est, qerror *e)
{
    if (check_common(est->name, est->flags, est->params, est->n_params, e))
        return -1;
    if (!est->estimate)
        return qerror_set(e, QERR_CONFIG, "required method 'estimate' is missing (NULL)");
    if (!est->accepts || !est->accepts[0])
        return qerror_set(e, QERR_CONFIG, "accepts lists no statistic kind");
    for (const char *const *k = est->accepts; *k; k++)
        if (!**k)
            return qerror_set(e, QERR_CONFIG, "accepts lists an empty statistic kind");
    if (!est->help)
        est->help = "";
    return 0;
}

/* ---- staging one file -------------------------------------------------------------------- */

static const char *owner_of(const registry *r, const char *name, int observer)
{
    if (observer) {
        const reg_observer *o = registry_observer(r, name);
        return o ? o->plugin->path : NULL;
    }
    const reg_estimator *est = registry_estimator(r, name);
    return est ? est->plugin->path : NULL;
}

/* Refuses a name already in the registry or earlier in the same file. */
static int check_unique(const registry *r, const staged *s, const char *file, const char *name,
                        int observer, qerror *e)
{
    const char *kind = observer ? "observer" : "estimator";
    const char *owner = owner_of(r, name, observer);
    if (owner)
        return qerror_set(e, QERR_CONFIG, "%s: %s '%s' is already provided by %s", file, kind,
                          name, owner);
    uint32_t n = observer ? s->n_observers : s->n_estimators;
    for (uint32_t i = 0; i < n; i++) {
        const char *other = observer ? s->observers[i]->desc.name : s->estimators[i]->desc.name;
        if (!strcmp(other, name))
            return qerror_set(e, QERR_CONFIG, "%s: %s '%s' is declared twice in %s", file, kind,
                              name, file);
    }
    return 0;
}

static int stage_observer(const registry *r, staged *s, const char *file, uint32_t i, qerror *e)
{
    const qcal_observer *src = s->plugin->desc.observers[i];
    char what[96];
    if (!src)
        return qerror_set(e, QERR_CONFIG, "%s: observer #%u is NULL", file, i);
    describe(src, "observer", i, what, sizeof what);
    reg_observer *o = calloc(1, sizeof *o);
    if (!o)
        return qerror_set(e, QERR_SOFTWARE, "%s: out of memory", file);
    s->observers[s->n_observers] = o; /* owned by the stage from here on */
    if (adopt(src, &o->desc, sizeof o->desc, QCAL_OBSERVER_SIZE_1_0, file, what, e))
        return -1;
    if (check_observer(&o->desc, e)) {
        what[strlen(what) - 2] = '\0'; /* drop the ": " */
        return qerror_prefix(e, "%s: %s", file, what);
    }
    if (check_unique(r, s, file, o->desc.name, 1, e))
        return -1;
    o->plugin = s->plugin;
    s->n_observers++;
    return 0;
}

static int stage_estimator(const registry *r, staged *s, const char *file, uint32_t i,
                           qerror *e)
{
    const qcal_estimator *src = s->plugin->desc.estimators[i];
    char what[96];
    if (!src)
        return qerror_set(e, QERR_CONFIG, "%s: estimator #%u is NULL", file, i);
    describe(src, "estimator", i, what, sizeof what);
    reg_estimator *est = calloc(1, sizeof *est);
    if (!est)
        return qerror_set(e, QERR_SOFTWARE, "%s: out of memory", file);
    s->estimators[s->n_estimators] = est;
    if (adopt(src, &est->desc, sizeof est->desc, QCAL_ESTIMATOR_SIZE_1_0, file, what, e))
        return -1;
    if (check_estimator(&est->desc, e)) {
        what[strlen(what) - 2] = '\0';
        return qerror_prefix(e, "%s: %s", file, what);
    }
    if (check_unique(r, s, file, est->desc.name, 0, e))
        return -1;
    est->plugin = s->plugin;
    s->n_estimators++;
    return 0;
}

/* Resolves qcal_plugin_entry without a data-to-function pointer cast. */
static qcal_plugin_entry_fn find_entry(void *handle)
{
    qcal_plugin_entry_fn fn = NULL;
    void *sym = dlsym(handle, QCAL_PLUGIN_ENTRY_NAME);
    if (sym)
        memcpy(&fn, &sym, sizeof fn);
    return fn;
}

static int check_plugin(qcal_plugin *p, const char *file, qerror *e)
{
    if (!p->name || !*p->name)
        return qerror_set(e, QERR_CONFIG, "%s: the plugin has no name", file);
    if (p->n_observers > METHODS_MAX || p->n_estimators > METHODS_MAX)
        return qerror_set(e, QERR_CONFIG, "%s: declares %u observers and %u estimators (corrupt?)",
                          file, p->n_observers, p->n_estimators);
    if ((p->n_observers && !p->observers) || (p->n_estimators && !p->estimators))
        return qerror_set(e, QERR_CONFIG, "%s: declares %u observers and %u estimators but "
                          "their array is NULL", file, p->n_observers, p->n_estimators);
    if (!p->version)
        p->version = "";
    if (!p->help)
        p->help = "";
    return 0;
}

/* `real` is what dlopen sees: a name without '/' would send it searching the library path. */
static int open_plugin(const char *file, const char *real, staged *s, qerror *e)
{
    dlerror();
    s->handle = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!s->handle) {
        const char *why = dlerror();
        return qerror_set(e, QERR_CONFIG, "%s: cannot load: %s", file, why ? why : "dlopen failed");
    }
    qcal_plugin_entry_fn entry = find_entry(s->handle);
    if (!entry)
        return qerror_set(e, QERR_CONFIG, "%s: no %s symbol (not a qcal plugin?)", file,
                          QCAL_PLUGIN_ENTRY_NAME);
    const qcal_plugin *desc = entry(registry_host());
    if (!desc)
        return qerror_set(e, QERR_CONFIG, "%s: the plugin refused this host (qcal %s, ABI %d.%d)",
                          file, QCAL_VERSION, QCAL_ABI_MAJOR, QCAL_ABI_MINOR);
    s->plugin = calloc(1, sizeof *s->plugin);
    if (!s->plugin)
        return qerror_set(e, QERR_SOFTWARE, "%s: out of memory", file);
    if (adopt(desc, &s->plugin->desc, sizeof s->plugin->desc, QCAL_PLUGIN_SIZE_1_0, file, "", e))
        return -1;
    s->plugin->abi_version = desc->head.abi_version;
    return check_plugin(&s->plugin->desc, file, e);
}

static int stage_methods(const registry *r, staged *s, const char *file, qerror *e)
{
    const qcal_plugin *p = &s->plugin->desc;
    s->observers = calloc(p->n_observers + 1, sizeof *s->observers);
    s->estimators = calloc(p->n_estimators + 1, sizeof *s->estimators);
    if (!s->observers || !s->estimators)
        return qerror_set(e, QERR_SOFTWARE, "%s: out of memory", file);
    for (uint32_t i = 0; i < p->n_observers; i++)
        if (stage_observer(r, s, file, i, e))
            return -1;
    for (uint32_t i = 0; i < p->n_estimators; i++)
        if (stage_estimator(r, s, file, i, e))
            return -1;
    return 0;
}

/* Frees a refused stage. Refused files may be unloaded: nothing of theirs escaped. */
static void discard(staged *s)
{
    if (s->observers)
        for (uint32_t i = 0; i <= s->n_observers; i++)
            free(s->observers[i]);
    if (s->estimators)
        for (uint32_t i = 0; i <= s->n_estimators; i++)
            free(s->estimators[i]);
    free(s->observers);
    free(s->estimators);
    free(s->plugin);
    if (s->handle)
        dlclose(s->handle);
}

static int reserve_all(registry *r, const staged *s)
{
    return vec_reserve(&r->plugins, 1) || vec_reserve(&r->observers, s->n_observers) ||
           vec_reserve(&r->estimators, s->n_estimators);
}

static void commit(registry *r, staged *s, char *real)
{
    s->plugin->path = real;
    r->plugins.items[r->plugins.n++] = s->plugin;
    for (uint32_t i = 0; i < s->n_observers; i++)
        r->observers.items[r->observers.n++] = s->observers[i];
    for (uint32_t i = 0; i < s->n_estimators; i++)
        r->estimators.items[r->estimators.n++] = s->estimators[i];
    free(s->observers);
    free(s->estimators);
}

static int loaded(const registry *r, const char *real)
{
    for (size_t i = 0; i < r->plugins.n; i++)
        if (!strcmp(((const reg_plugin *)r->plugins.items[i])->path, real))
            return 1;
    return 0;
}

int registry_load_file(registry *r, const char *path, qerror *e)
{
    char *real = realpath(path, NULL);
    if (!real)
        return qerror_set(e, QERR_NOINPUT, "%s: %s", path, strerror(errno));
    if (loaded(r, real)) {
        free(real);
        return 0;
    }
    staged s = {0};
    if (open_plugin(path, real, &s, e) || stage_methods(r, &s, path, e)) {
        discard(&s);
        free(real);
        return -1;
    }
    if (reserve_all(r, &s)) {
        discard(&s);
        free(real);
        return qerror_set(e, QERR_SOFTWARE, "%s: out of memory", path);
    }
    commit(r, &s, real);
    return 0;
}

/* ---- searching --------------------------------------------------------------------------- */

static int is_so(const struct dirent *d)
{
    size_t len = strlen(d->d_name);
    return d->d_name[0] != '.' && len > 3 && !strcmp(d->d_name + len - 3, ".so");
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name); /* bytes, not the locale: same order everywhere */
}

static void load_entry(registry *r, const char *dir, const char *name)
{
    size_t need = strlen(dir) + strlen(name) + 2;
    char *path = malloc(need);
    if (!path) {
        warn_line(r, "out of memory while scanning plugins");
        return;
    }
    snprintf(path, need, "%s/%s", dir, name);
    struct stat st;
    qerror e = {0};
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && registry_load_file(r, path, &e))
        warn_line(r, e.msg);
    free(path);
}

void registry_load_dir(registry *r, const char *dir)
{
    struct dirent **list;
    int n = scandir(dir, &list, is_so, by_name);
    if (n < 0) {
        if (errno != ENOENT) {
            char line[QERROR_MSG_SIZE];
            snprintf(line, sizeof line, "%s: cannot read plugin directory: %s", dir,
                     strerror(errno));
            warn_line(r, line);
        }
        return;
    }
    for (int i = 0; i < n; i++) {
        load_entry(r, dir, list[i]->d_name);
        free(list[i]);
    }
    free(list);
}

/* A path given by the user: a directory to scan or one plugin file. */
static void load_path(registry *r, const char *path, int quiet_if_missing)
{
    struct stat st;
    qerror e = {0};
    if (stat(path, &st) != 0) {
        if (errno != ENOENT || !quiet_if_missing) {
            snprintf(e.msg, sizeof e.msg, "plugin path %s: %s (nothing loaded from it)", path,
                     strerror(errno));
            warn_line(r, e.msg);
        }
    } else if (S_ISDIR(st.st_mode)) {
        registry_load_dir(r, path);
    } else if (registry_load_file(r, path, &e)) {
        warn_line(r, e.msg);
    }
}

/* Colon-separated; an empty component is skipped, never read as the current directory. */
static void load_env_path(registry *r, const char *env_path)
{
    char *copy = strdup(env_path);
    if (!copy) {
        warn_line(r, "out of memory while reading QCAL_PLUGIN_PATH");
        return;
    }
    for (char *part = copy, *next; part; part = next) {
        next = strchr(part, ':');
        if (next)
            *next++ = '\0';
        if (*part)
            load_path(r, part, 1);
    }
    free(copy);
}

void registry_load_all(registry *r, const char *builtin_dir, const char *env_path,
                       const char *const *extra, size_t n_extra)
{
    if (builtin_dir && *builtin_dir)
        registry_load_dir(r, builtin_dir);
    if (env_path)
        load_env_path(r, env_path);
    for (size_t i = 0; i < n_extra; i++)
        if (extra[i] && *extra[i])
            load_path(r, extra[i], 0);
}

/* ---- lookups ----------------------------------------------------------------------------- */

size_t registry_plugin_count(const registry *r) { return r->plugins.n; }

const reg_plugin *registry_plugin(const registry *r, size_t i)
{
    return i < r->plugins.n ? r->plugins.items[i] : NULL;
}

size_t registry_observer_count(const registry *r) { return r->observers.n; }

const reg_observer *registry_observer_at(const registry *r, size_t i)
{
    return i < r->observers.n ? r->observers.items[i] : NULL;
}

size_t registry_estimator_count(const registry *r) { return r->estimators.n; }

const reg_estimator *registry_estimator_at(const registry *r, size_t i)
{
    return i < r->estimators.n ? r->estimators.items[i] : NULL;
}

const reg_observer *registry_observer(const registry *r, const char *name)
{
    for (size_t i = 0; i < r->observers.n; i++) {
        const reg_observer *o = r->observers.items[i];
        if (!strcmp(o->desc.name, name))
            return o;
    }
    return NULL;
}

const reg_estimator *registry_estimator(const registry *r, const char *name)
{
    for (size_t i = 0; i < r->estimators.n; i++) {
        const reg_estimator *est = r->estimators.items[i];
        if (!strcmp(est->desc.name, name))
            return est;
    }
    return NULL;
}
