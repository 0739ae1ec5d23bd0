/* keyindex.c - open addressing over element positions (see keyindex.h) */
#include "keyindex.h"

#include <stdlib.h>
#include <string.h>

void keyindex_init(keyindex *x, int parts, key_of_fn key_of)
{
    memset(x, 0, sizeof *x);
    x->parts = parts;
    x->key_of = key_of;
}

void keyindex_free(keyindex *x)
{
    free(x->slot);
    keyindex_init(x, x->parts, x->key_of);
}

void keyindex_forget(keyindex *x)
{
    if (x->slot)
        memset(x->slot, 0, x->cap * sizeof *x->slot);
    x->n = 0;
}

/* FNV-1a over the parts, each followed by a byte no UTF-8 string holds. */
static uint64_t hash_of(const char *const *key, int parts)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int p = 0; p < parts; p++) {
        for (const unsigned char *c = (const unsigned char *)key[p]; *c; c++)
            h = (h ^ *c) * 0x100000001b3ull;
        h = (h ^ 0xffu) * 0x100000001b3ull;
    }
    return h;
}

static int same_key(const keyindex *x, const void *items, size_t i, const char *const *key)
{
    const char *have[KEYINDEX_MAX_PARTS];
    x->key_of(items, i, have);
    for (int p = 0; p < x->parts; p++)
        if (strcmp(have[p], key[p]) != 0)
            return 0;
    return 1;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t probe(const keyindex *x, const void *items, const char *const *key)
{
    size_t mask = x->cap - 1, at = (size_t)hash_of(key, x->parts) & mask;
    while (x->slot[at] && !same_key(x, items, x->slot[at] - 1, key))
        at = (at + 1) & mask;
    return at;
}

/* Indexes items[x->n .. n) (a key already indexed keeps its first element); -1 out of memory. */
static int catch_up(keyindex *x, const void *items, size_t n)
{
    if (2 * n > x->cap) { /* at most half full: probes stay short */
        size_t cap = x->cap ? x->cap : 64;
        while (2 * n > cap)
            cap *= 2;
        size_t *slot = calloc(cap, sizeof *slot);
        if (!slot)
            return -1;
        free(x->slot);
        x->slot = slot, x->cap = cap, x->n = 0;
    }
    for (; x->n < n; x->n++) {
        const char *key[KEYINDEX_MAX_PARTS];
        x->key_of(items, x->n, key);
        size_t at = probe(x, items, key);
        if (!x->slot[at])
            x->slot[at] = x->n + 1;
    }
    return 0;
}

size_t keyindex_find(keyindex *x, const void *items, size_t n, const char *const *key)
{
    if (n < x->n) /* shrunk: the positions past n mean nothing now */
        keyindex_forget(x);
    if (n == 0)
        return SIZE_MAX;
    if (catch_up(x, items, n)) {
        for (size_t i = 0; i < n; i++)
            if (same_key(x, items, i, key))
                return i;
        return SIZE_MAX;
    }
    size_t at = probe(x, items, key);
    return x->slot[at] ? x->slot[at] - 1 : SIZE_MAX;
}
