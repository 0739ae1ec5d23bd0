/* spill.c - an append-only, already unlinked temporary file */
#include "spill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct spill {
    int fd;        /* -1 until the first write */
    uint64_t size; /* bytes written */
    char folder[512];
};

spill *spill_new(void)
{
    spill *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(s->folder, sizeof s->folder, "%s", tmp && *tmp ? tmp : "/tmp");
    return s;
}

void spill_free(spill *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static int open_file(spill *s, qerror *e)
{
    char path[600];
    snprintf(path, sizeof path, "%s/qcal-states.XXXXXX", s->folder);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return qerror_set(e, QERR_IO, "cannot make a temporary file for observer states in "
                          "'%s' (set TMPDIR): %s", s->folder, strerror(errno));
    unlink(path); /* the descriptor keeps it while the process lives */
    s->fd = fd;
    return 0;
}

int spill_write(spill *s, const void *data, size_t n, uint64_t *at, qerror *e)
{
    if (s->fd < 0 && open_file(s, e))
        return -1;
    const char *p = data;
    for (size_t done = 0; done < n;) {
        ssize_t k = pwrite(s->fd, p + done, n - done, (off_t)(s->size + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return qerror_set(e, QERR_IO, "cannot write observer states to a temporary file "
                              "in '%s' (set TMPDIR): %s", s->folder,
                              k < 0 ? strerror(errno) : "no space written");
        done += (size_t)k;
    }
    *at = s->size;
    s->size += n;
    return 0;
}

int spill_read(const spill *s, uint64_t at, void *data, size_t n, qerror *e)
{
    if (s->fd < 0 || at > s->size || n > s->size - at)
        return qerror_set(e, QERR_SOFTWARE, "spill: %zu bytes at %llu are beyond the %llu "
                          "written", n, (unsigned long long)at, (unsigned long long)s->size);
    char *p = data;
    for (size_t done = 0; done < n;) {
        ssize_t k = pread(s->fd, p + done, n - done, (off_t)(at + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return qerror_set(e, QERR_IO, "cannot read observer states back from the "
                              "temporary file in '%s': %s", s->folder,
                              k < 0 ? strerror(errno) : "file shorter than written");
        done += (size_t)k;
    }
    return 0;
}

uint64_t spill_size(const spill *s) { return s->size; }
