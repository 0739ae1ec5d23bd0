/* error.c - host-side error values */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int qerror_set(qerror *e, int code, const char *fmt, ...)
{
    if (!e)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    for (char *p = e->msg; *p; p++) /* one line, whatever a library said */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return -1;
}

int qerror_prefix(qerror *e, const char *fmt, ...)
{
    if (!e)
        return -1;
    char prefix[QERROR_MSG_SIZE], old[QERROR_MSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s: %s", prefix, old);
    return -1;
}

void qerror_clear(qerror *e)
{
    if (e) {
        e->code = 0;
        e->msg[0] = '\0';
    }
}
