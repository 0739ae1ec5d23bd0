/* h5attr.c - reading string attributes, whatever their length kind and character set */
#include "h5attr.h"

#include <stdlib.h>
#include <string.h>

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
        if (H5Aread(a, mt, &s) >= 0 && s) {
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
