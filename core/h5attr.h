/* h5attr.h - HDF5 helpers shared by the readers of dumps and layers */
#ifndef QCAL_H5ATTR_H
#define QCAL_H5ATTR_H

#include <hdf5.h>

/* A scalar string attribute (fixed or variable length, ASCII or UTF-8), malloc'd; NULL when
 * absent. *bad is set when it is present but not a readable scalar string. */
char *h5_attr_string(hid_t obj, const char *name, int *bad);

/* The innermost description on HDF5's error stack, for one clear line (or the system's words
 * where HDF5 quotes an errno). */
void h5_reason(char *buf, size_t size);
/* What the system said (strerror) where HDF5's stack quotes an errno: 1, else 0. */
int h5_system_reason(char *buf, size_t size);
/* A file being written could not be closed: the process must then end without HDF5's
 * exit-time clean-up (h5_exit_must_skip_library), which would crash on it. */
void h5_file_left_open(void);
/* H5Fclose of a file opened for reading, noting a failure as h5_file_left_open does. */
void h5_close_read(hid_t file);
int h5_exit_must_skip_library(void);
/* h5_reason, and what the failure was: QERR_IO when the system refused a read (HDF5 quotes
 * an errno), else QERR_DATA: HDF5 found the file's structure or values damaged (an address
 * beyond the end, a bad signature or checksum, a chunk that does not inflate). */
int h5_reason_code(char *buf, size_t size);

/* Opens an HDF5 file read-only, evicting an object's metadata from HDF5's cache when the
 * object is closed (read once, as qcal reads dumps and results files; else the object headers
 * of thousands of tensors pile up: 480 MiB reading 16,000 saved states). Every opening of a
 * dump or results file for reading goes through here: HDF5 refuses to open one file twice
 * with different settings. On failure: -1, the innermost HDF5 reason in why. */
hid_t h5_open_read(const char *path, char *why, size_t size);

/* HDF5 itself can crash on a corrupt file (a damaged global heap sends H5Aread's memcpy past
 * its buffer, and malloc later aborts on the heap it overran: measured on mutated sample
 * dumps and results files). h5_guard_install (once, at start) makes a SIGSEGV, SIGBUS or
 * SIGABRT raised while the faulting thread is between h5_guard_enter and h5_guard_leave print
 * one line naming the file and exit with QERR_DATA; any other goes on to the handler that was
 * there before (a crash, or the sanitizer's report). enter returns the file guarded before,
 * for leave to restore (guards nest). The guarded code is HDF5 calls and qcal's readers
 * around them, which hold no assert. */
void h5_guard_install(void);

/* HDF5 1.10 can also loop for ever on a damaged global heap, where it keeps variable-length
 * data (an object of size 0 among a collection's objects never advances its parser), or clear
 * gigabytes for a damaged length (both measured on mutated sample dumps). Every read of variable-length data goes through these (H5Aread,
 * and H5Dread of a whole dataset): one that spends 2 s of CPU time without returning prints
 * one line naming the guarded file ("corrupt file") and exits with QERR_DATA (once
 * h5_guard_install has run). */
herr_t h5_read_attr_vlen(hid_t attr, hid_t mtype, void *buf);
herr_t h5_read_dataset_vlen(hid_t dataset, hid_t mtype, void *buf);
const char *h5_guard_enter(const char *path);
void h5_guard_leave(const char *previous);

/* While set (path) on a thread, a SIGBUS there, which reading a mapped file raises when the
 * file has shrunk, prints one line naming the file and exits with QERR_IO; NULL unsets. */
void h5_guard_mapped(const char *path);

#endif
