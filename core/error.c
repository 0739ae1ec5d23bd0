/* error.c - host-side error values */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* One line, whatever a library said or a file held: line breaks and tabs become spaces, other
 * control characters \xNN (a damaged file's string can hold any byte), cut at the buffer. */
static void one_line(char *msg, size_t size, const char *text)
{
    size_t at = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p && at + 1 < size; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t')
            msg[at++] = ' ';
        else if (*p < 0x20 || *p == 0x7f) {
            if (at + 5 > size)
                break;
            snprintf(msg + at, 5, "\\x%02x", *p);
            at += 4;
        } else
            msg[at++] = (char)*p;
    }
    msg[at] = '\0';
}

int qerror_set(qerror *e, int code, const char *fmt, ...)
{
    if (!e)
        return -1;
    char text[QERROR_MSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    one_line(e->msg, sizeof e->msg, text);
    e->code = code;
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
    char text[2 * QERROR_MSG_SIZE + 2];
    snprintf(text, sizeof text, "%s: %s", prefix, old);
    one_line(e->msg, sizeof e->msg, text);
    return -1;
}

void qerror_clear(qerror *e)
{
    if (e) {
        e->code = 0;
        e->msg[0] = '\0';
    }
}
