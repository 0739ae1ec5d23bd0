/* outfile.h - text outputs (exports, reports) written whole or not at all
 *
 * outfile_open gives a stream on "<path>.tmp.XXXXXX" beside path (or, for path NULL or "-", on
 * memory copied to stdout at commit: a failed export prints nothing, not half a table);
 * outfile_commit flushes, fsyncs and renames it into place, outfile_abandon removes it. An
 * existing path is replaced only with force, and is untouched on any failure. */
#ifndef QCAL_OUTFILE_H
#define QCAL_OUTFILE_H

#include <stdio.h>

#include "error.h"

typedef struct outfile {
    FILE *f;
    char *path, *temp; /* NULL for stdout */
    char *memory;      /* for stdout: what was written so far (open_memstream) */
    size_t memory_len;
    int force;
} outfile;

int outfile_open(outfile *o, const char *path, int force, qerror *e);
int outfile_commit(outfile *o, qerror *e);
void outfile_abandon(outfile *o);

#endif
