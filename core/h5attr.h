/* h5attr.h - HDF5 attribute helpers shared by the readers of dumps and layers */
#ifndef QCAL_H5ATTR_H
#define QCAL_H5ATTR_H

#include <hdf5.h>

/* A scalar string attribute (fixed or variable length, ASCII or UTF-8), malloc'd; NULL when
 * absent. *bad is set when it is present but not a readable scalar string. */
char *h5_attr_string(hid_t obj, const char *name, int *bad);

#endif
