/* h5attr.c - reading string attributes (whatever their length kind and character set), opening dumps */
#include "h5attr.h"

#include "error.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

/* A string attribute (fixed or variable length), malloc'd; NULL when absent. *bad when it is
 * present but not a scalar string. */
char *h5_attr_string(hid_t obj, const char *name, int *bad)
{
    *bad = 0;
    if (H5Aexists(obj, name) <= 0)
        return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
    char *out = NULL;
    if (H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        *bad = 1;
    } else if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        hid_t mt = H5Tcopy(t);
        if (h5_read_attr_vlen(a, mt, &s) >= 0 && s) {
            out = strdup(s);
            H5free_memory(s);
        }
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(t);
        out = calloc(n + 1, 1);
        if (out && H5Aread(a, t, out) < 0) {
            free(out);
            out = NULL;
        }
    }
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    *bad = *bad || (!out && !*bad);
    return out;
}

static herr_t innermost(unsigned n, const H5E_error2_t *err, void *ud)
{
    (void)n;
    if (err->desc && *err->desc)
        snprintf(ud, 256, "%s", err->desc); /* walking downward: the last one is innermost */
    return 0;
}

/* The system's error number HDF5 quotes ("errno = 28") in a description on its stack. */
static herr_t quoted_errno(unsigned n, const H5E_error2_t *err, void *ud)
{
    (void)n;
    const char *at = err->desc ? strstr(err->desc, "errno = ") : NULL;
    if (at && *(int *)ud == 0)
        *(int *)ud = atoi(at + 8);
    return 0;
}

int h5_system_reason(char *buf, size_t size)
{
    int number = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, quoted_errno, &number);
    if (number > 0)
        snprintf(buf, size, "%s", strerror(number));
    return number > 0;
}

/* The innermost HDF5 error description, for one clear line; what the system said where HDF5
 * quotes it (a full disk: "No space left on device", not HDF5's layers of "failed"). */
void h5_reason(char *buf, size_t size)
{
    char inner[256] = "unknown HDF5 error";
    if (h5_system_reason(buf, size))
        return;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, inner);
    snprintf(buf, size, "%s", inner);
}

/* Set when a file HDF5 was writing could not be closed: HDF5 then keeps it half closed, and
 * its exit-time clean-up crashes on it (a full disk: exit 139 after the error line). */
static volatile int file_left_open;

void h5_file_left_open(void) { file_left_open = 1; }

void h5_close_read(hid_t file)
{
    if (H5Fclose(file) < 0) /* a damaged file HDF5 keeps half closed */
        h5_file_left_open();
}
int h5_exit_must_skip_library(void) { return file_left_open; }

static herr_t system_failed(unsigned n, const H5E_error2_t *err, void *ud)
{
    (void)n;
    if ((err->min_num == H5E_READERROR || err->min_num == H5E_SEEKERROR) && err->desc &&
        strstr(err->desc, "errno"))
        *(int *)ud = 1;
    return 0;
}

int h5_reason_code(char *buf, size_t size)
{
    int system = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, system_failed, &system);
    h5_reason(buf, size);
    return system ? QERR_IO : QERR_DATA;
}

hid_t h5_open_read(const char *path, char *why, size_t size)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0)
        H5Pset_evict_on_close(fapl, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (f < 0)
        h5_reason(why, size); /* before another call clears HDF5's error stack */
    if (fapl >= 0)
        H5Pclose(fapl);
    return f;
}

/* ---- a fault inside HDF5 on a corrupt file: one line, not a crash --------------------- */

static _Thread_local const char *guarded_path; /* the file this thread is reading, or NULL */
static _Thread_local const char *mapped_path;  /* the file whose mapped values it reads */
static struct sigaction before_segv, before_bus, before_abrt;
/* the file whose variable-length data is being read under the stall watch: a global, as the
 * timer's signal may reach any thread */
static const char *volatile watched_path;

static void say(const char *text) { (void)!write(STDERR_FILENO, text, strlen(text)); }

/* Only async-signal-safe calls here: write and _exit; else the fault is someone else's. */
static void on_fault(int sig)
{
    const char *path = guarded_path;
    if (sig == SIGBUS && mapped_path) { /* the mapped file lost the pages being read */
        say("qcal: ");
        say(mapped_path);
        say(": cannot read: the file shrank while its values were mapped\n");
        _exit(QERR_IO);
    }
    if (path) {
        say("qcal: ");
        say(path);
        say(": corrupt file: the HDF5 library crashed reading it\n");
        _exit(QERR_DATA);
    }
    sigaction(sig, sig == SIGBUS ? &before_bus : sig == SIGABRT ? &before_abrt : &before_segv,
              NULL); /* refault into it */
}

/* The stall watch's limit is CPU time (user and system: a damaged length also makes HDF5 clear
 * gigabytes it has just allocated, in page faults), not wall time: a slow or stalled disk uses
 * none. A sound read of a variable-length value takes microseconds. */
#define STALL_CPU_SECONDS 2

static void on_stall(int sig)
{
    (void)sig;
    const char *path = watched_path;
    say("qcal: ");
    say(path ? path : "an HDF5 file");
    say(": corrupt file: the HDF5 library did not return from reading a variable-length value "
        "(a damaged length or global heap)\n");
    _exit(QERR_DATA);
}

static void watch(const char *path, long seconds)
{
    watched_path = path;
    struct itimerval limit = {.it_value = {.tv_sec = seconds}};
    setitimer(ITIMER_PROF, &limit, NULL);
}

herr_t h5_read_attr_vlen(hid_t attr, hid_t mtype, void *buf)
{
    watch(guarded_path, STALL_CPU_SECONDS);
    herr_t rc = H5Aread(attr, mtype, buf);
    watch(NULL, 0);
    return rc;
}

herr_t h5_read_dataset_vlen(hid_t dataset, hid_t mtype, void *buf)
{
    watch(guarded_path, STALL_CPU_SECONDS);
    herr_t rc = H5Dread(dataset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    watch(NULL, 0);
    return rc;
}

void h5_guard_install(void)
{
    /* HDF5 recursing without end through a damaged B-tree overflows the stack: the handler
     * then needs a stack of its own (this thread's: every HDF5 call is made from it) */
    static char alternate[1 << 16];
    stack_t st = {.ss_sp = alternate, .ss_size = sizeof alternate};
    sigaltstack(&st, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_ONSTACK;
    sa.sa_handler = on_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &before_segv);
    sigaction(SIGBUS, &sa, &before_bus);
    sigaction(SIGABRT, &sa, &before_abrt); /* malloc's checks, on a heap HDF5 has overrun */
    sa.sa_handler = on_stall;
    sigaction(SIGPROF, &sa, NULL);
}

const char *h5_guard_enter(const char *path)
{
    const char *previous = guarded_path;
    guarded_path = path;
    return previous;
}

void h5_guard_leave(const char *previous) { guarded_path = previous; }

void h5_guard_mapped(const char *path) { mapped_path = path; }
