/* outfile.c - text outputs written to a temporary file and renamed into place */
#include "outfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_stdout(const char *path) { return !path || !strcmp(path, "-"); }

int outfile_open(outfile *o, const char *path, int force, qerror *e)
{
    memset(o, 0, sizeof *o);
    o->force = force;
    if (is_stdout(path)) {
        o->f = open_memstream(&o->memory, &o->memory_len);
        return o->f ? 0 : qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    struct stat st;
    if (!force && stat(path, &st) == 0)
        return qerror_set(e, QERR_CANTCREAT, "%s: exists (use --force to replace it)", path);
    size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
    o->path = strdup(path);
    o->temp = malloc(n);
    if (!o->path || !o->temp) {
        outfile_abandon(o);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    snprintf(o->temp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(o->temp);
    if (fd < 0 || !(o->f = fdopen(fd, "w"))) {
        int err = errno;
        if (fd >= 0)
            close(fd), unlink(o->temp);
        free(o->temp), o->temp = NULL;
        outfile_abandon(o);
        return qerror_set(e, QERR_CANTCREAT, "%s: cannot create: %s", path, strerror(err));
    }
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    return 0;
}

int outfile_commit(outfile *o, qerror *e)
{
    if (!o->temp) {
        int full = fclose(o->f) == 0; /* sets memory and memory_len */
        o->f = NULL;
        int bad = !full || fwrite(o->memory, 1, o->memory_len, stdout) != o->memory_len ||
                  fflush(stdout) != 0;
        free(o->memory), o->memory = NULL;
        if (!full)
            return qerror_set(e, QERR_SOFTWARE, "out of memory");
        return bad ? qerror_set(e, QERR_IO, "writing to standard output failed") : 0;
    }
    int bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    int err = errno;
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (!bad && !o->force && link(o->temp, o->path) != 0)
        bad = 1, err = errno;
    else if (!bad && o->force && rename(o->temp, o->path) != 0)
        bad = 1, err = errno;
    if (bad) {
        qerror_set(e, QERR_IO, "%s: cannot write: %s", o->path, strerror(err));
        outfile_abandon(o);
        return -1;
    }
    if (!o->force)
        unlink(o->temp);
    free(o->temp), free(o->path);
    o->temp = o->path = NULL;
    return 0;
}

void outfile_abandon(outfile *o)
{
    if (o->f)
        fclose(o->f);
    free(o->memory);
    if (o->temp)
        unlink(o->temp);
    free(o->temp), free(o->path);
    memset(o, 0, sizeof *o);
}
