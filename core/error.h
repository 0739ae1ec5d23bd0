/* error.h - host-side errors: a sysexits-style code plus one line of text */
#ifndef QCAL_ERROR_H
#define QCAL_ERROR_H

#include <stddef.h>

/* Codes are <sysexits.h> values, so `qcal` can exit with them directly. */
#define QERR_USAGE 64       /* bad command line or recipe parameter */
#define QERR_DATA 65        /* malformed dump, wrong dtype or rank, bad value */
#define QERR_NOINPUT 66     /* cannot open an input */
#define QERR_UNAVAILABLE 69 /* missing plugin, method or HDF5 filter */
#define QERR_SOFTWARE 70    /* internal error, or a plugin breaking its contract */
#define QERR_CANTCREAT 73   /* cannot create the output */
#define QERR_IO 74          /* read or write failure */
#define QERR_CONFIG 78      /* plugin ABI mismatch, recipe error */

#define QERROR_MSG_SIZE 1024

typedef struct qerror {
    int code;                   /* 0 when no error */
    char msg[QERROR_MSG_SIZE];  /* one line, no trailing newline */
} qerror;

/* Sets e (if non-NULL) and returns -1, so callers can write `return qerror_set(...)`. */
int qerror_set(qerror *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message: "<prefix>: <old message>". Returns -1. */
int qerror_prefix(qerror *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qerror_clear(qerror *e);

#endif
