/* keyindex.h - finds an element of a growing array by its string key in O(1)
 *
 * The array stays the caller's: an index holds element positions only, and catches up with
 * elements appended since its last use. A key is one to three strings (`parts`), read from
 * an element by key_of. Reordering the array needs keyindex_forget. */
#ifndef QCAL_KEYINDEX_H
#define QCAL_KEYINDEX_H

#include <stddef.h>
#include <stdint.h>

#define KEYINDEX_MAX_PARTS 3

/* The key parts of element i of items. */
typedef void (*key_of_fn)(const void *items, size_t i, const char **parts);

typedef struct keyindex {
    size_t *slot;   /* element + 1 per slot, 0 for empty; cap slots, a power of two */
    size_t cap, n;  /* n: elements indexed so far (the array's first n) */
    int parts;
    key_of_fn key_of;
} keyindex;

void keyindex_init(keyindex *x, int parts, key_of_fn key_of);
void keyindex_free(keyindex *x);
/* The array was reordered or shrunk: the next find indexes it anew. */
void keyindex_forget(keyindex *x);
/* The first of items[0..n) whose key equals key, or SIZE_MAX. Out of memory, it scans. */
size_t keyindex_find(keyindex *x, const void *items, size_t n, const char *const *key);

#endif
