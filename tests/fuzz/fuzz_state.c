/* fuzz_state.c - libFuzzer target: arbitrary saved states (kind, arrays of any dtype, rank and
 * shape) through the host's validation (hstat_copy) and every bundled observer's deserialize,
 * then finalize and serialize. A malformed state must be refused, never crash. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hstat.h"

static const qcal_plugin *plugin;

static void load(void)
{
    void *h = dlopen(QCAL_FUZZ_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    qcal_plugin_entry_fn entry = h ? (qcal_plugin_entry_fn)dlsym(h, "qcal_plugin_entry") : NULL;
    plugin = entry ? entry(NULL) : NULL;
    if (!plugin)
        abort();
}

/* Reads the next n bytes of the input, or zeros past its end. */
static void take(const uint8_t **p, const uint8_t *end, void *out, size_t n)
{
    size_t k = (size_t)(end - *p) < n ? (size_t)(end - *p) : n;
    memset(out, 0, n);
    memcpy(out, *p, k);
    *p += k;
}

static const char *const kinds[] = {"qcal.minmax", "qcal.minmax.state",
                                    "qcal.moving_average_minmax.state", "x"};
static const char *const names[] = {"lo", "hi", "count", "nonfinite", "batch", "batch_size", "n"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!plugin)
        load();
    const uint8_t *p = data, *end = data + size;
    uint8_t head[4];
    take(&p, end, head, sizeof head);
    qcal_array arrays[6];
    void *buffers[6] = {0};
    uint32_t n_arrays = head[1] % 7;
    for (uint32_t i = 0; i < n_arrays && i < 6; i++) {
        uint8_t desc[6];
        take(&p, end, desc, sizeof desc);
        qcal_array *a = &arrays[i];
        a->name = names[desc[0] % 7];
        a->dtype = 1 + desc[1] % 4;
        a->rank = desc[2] % 3;
        a->shape[0] = desc[3] % 9, a->shape[1] = desc[4] % 9, a->shape[2] = a->shape[3] = 0;
        uint64_t count = a->rank == 0 ? 1 : a->rank == 1 ? a->shape[0] : a->shape[0] * a->shape[1];
        size_t bytes = (size_t)count * 8;
        buffers[i] = calloc(1, bytes ? bytes : 1);
        take(&p, end, buffers[i], bytes);
        a->data = buffers[i];
    }
    qcal_stat st = {.kind = kinds[head[0] % 4], .kind_version = 1 + head[2] % 2,
                    .n_arrays = n_arrays > 6 ? 6 : n_arrays, .channels = 1 + head[3] % 9,
                    .arrays = arrays};
    hstat *copy = NULL;
    qerror e = {0};
    if (hstat_copy(&st, &copy, &e) == 0) {
        qcal_tensor t = {.name = "t", .rank = 3, .channel_axis = 1, .shape = {8, 1 + head[3] % 9, 2},
                         .batch_size = 4};
        for (uint32_t k = 0; k < plugin->n_observers; k++) {
            const qcal_observer *o = plugin->observers[k];
            qcal_value params[8] = {{.f = 0.01}, {.i = 0}, {.i = 0}};
            void *s = NULL;
            qcal_err err = {{0}};
            if (o->create(&t, params, &s, &err) != QCAL_OK)
                continue;
            qcal_stat out;
            if (o->deserialize(s, &copy->view, &err) == QCAL_OK) {
                o->finalize(s, &out, &err);
                o->serialize(s, &out, &err);
            }
            o->destroy(s);
        }
        hstat_free(copy);
    }
    for (uint32_t i = 0; i < 6; i++)
        free(buffers[i]);
    return 0;
}
