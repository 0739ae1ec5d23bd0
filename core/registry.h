/* registry.h - finding, loading and adopting plugins */
#ifndef QCAL_REGISTRY_H
#define QCAL_REGISTRY_H

#include <stddef.h>

#include "error.h"
#include "qcal/plugin.h"

typedef struct reg_plugin {
    char *path;          /* realpath of the .so */
    qcal_plugin desc;    /* adopted copy */
    uint32_t abi_version;
} reg_plugin;

typedef struct reg_observer {
    qcal_observer desc;  /* adopted copy: zero-filled past the plugin's struct_size */
    const reg_plugin *plugin;
} reg_observer;

typedef struct reg_estimator {
    qcal_estimator desc;
    const reg_plugin *plugin;
} reg_estimator;

typedef struct registry registry;

/* `warn` receives one line per refused file; NULL sends them to stderr. */
registry *registry_new(void (*warn)(void *ud, const char *line), void *ud);
void registry_free(registry *r);

/* Loads one file. On refusal returns -1 with one line naming the file and the reason; the
 * registry is unchanged. */
int registry_load_file(registry *r, const char *path, qerror *e);
/* Loads every *.so directly in dir, in sorted name order; refusals go to `warn`. A missing
 * directory is skipped. */
void registry_load_dir(registry *r, const char *dir);
/* The whole search: built-in dir, then QCAL_PLUGIN_PATH (colon-separated, empty parts
 * ignored), then each extra path (files or directories). */
void registry_load_all(registry *r, const char *builtin_dir, const char *env_path,
                       const char *const *extra, size_t n_extra);

size_t registry_plugin_count(const registry *r);
const reg_plugin *registry_plugin(const registry *r, size_t i);
size_t registry_observer_count(const registry *r);
const reg_observer *registry_observer_at(const registry *r, size_t i);
size_t registry_estimator_count(const registry *r);
const reg_estimator *registry_estimator_at(const registry *r, size_t i);
const reg_observer *registry_observer(const registry *r, const char *name);
const reg_estimator *registry_estimator(const registry *r, const char *name);

/* The host struct handed to plugins. */
const qcal_host *registry_host(void);

#endif
