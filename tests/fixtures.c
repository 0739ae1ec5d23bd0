/* fixtures.c - writing test dumps and reference data, independently of the code under test */
#include "fixtures.h"

#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dump.h"

/* ---- temporary directories ------------------------------------------------------------ */

char *fx_tmpdir(void)
{
    char tmpl[] = "/tmp/qcal-test-XXXXXX";
    char *dir = mkdtemp(tmpl);
    return dir ? strdup(dir) : NULL;
}

char *fx_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void fx_rmtree(const char *dir)
{
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d)
        return;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, ".."))
            continue;
        char *p = fx_path(dir, ent->d_name);
        struct stat st;
        if (p && lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            fx_rmtree(p);
        else if (p)
            unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

/* ---- deterministic numbers ------------------------------------------------------------ */

uint64_t fx_rand_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double fx_rand_uniform(uint64_t *state)
{
    return (double)(fx_rand_u64(state) >> 11) * 0x1.0p-53;
}

void fx_fill_gauss(float *x, size_t n, uint64_t seed, float mean, float stddev)
{
    uint64_t st = seed;
    for (size_t i = 0; i < n; i += 2) {
        double u1 = 1.0 - fx_rand_uniform(&st), u2 = fx_rand_uniform(&st);
        double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
        x[i] = (float)(mean + stddev * r * cos(a));
        if (i + 1 < n)
            x[i + 1] = (float)(mean + stddev * r * sin(a));
    }
}

const char *const fx_dist_names[FX_N_DISTS] = {"gaussian", "relu", "gelu", "laplace+outliers",
                                               "bimodal", "nan/inf"};

void fx_fill_dist(float *x, size_t n, int kind, uint64_t seed)
{
    fx_fill_gauss(x, n, seed, 0.2f, 1.0f);
    uint64_t st = seed ^ 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        double g = x[i], u = fx_rand_uniform(&st);
        switch (kind) {
        case FX_RELU: x[i] = g > 0 ? (float)g : 0.0f; break;
        case FX_GELU: x[i] = (float)(g * 0.5 * (1 + erf(g / sqrt(2.0)))); break;
        case FX_LAPLACE_OUTLIERS:
            x[i] = (float)((u < 0.5 ? 1 : -1) * log(1 - fabs(2 * u - 1)) * (fx_rand_uniform(&st) < 1e-3 ? 40 : 1));
            break;
        case FX_BIMODAL: x[i] = (float)(g + (u < 0.5 ? -3.0 : 6.0)); break;
        case FX_NONFINITE:
            if (u < 0.002) x[i] = u < 0.001 ? NAN : u < 0.0015 ? INFINITY : -INFINITY;
            break;
        default: break;
        }
    }
}

size_t fx_finite(const float *x, size_t n, float *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i]))
            out[m++] = x[i];
    return m;
}

/* ---- float -> 16-bit patterns (round to nearest even) --------------------------------- */

uint16_t fx_float_to_half(float f)
{
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (isnan(f))
        return sign | 0x7e00;
    if (a >= 65520.0) /* 65504 + half an ulp rounds to infinity */
        return sign | 0x7c00;
    if (a < 0x1.0p-14) { /* subnormal: multiples of 2^-24 */
        double q = nearbyint(a * 0x1.0p24);
        return sign | (uint16_t)q; /* q == 1024 becomes the smallest normal, as it should */
    }
    int e;
    double m = frexp(a, &e);          /* a = m * 2^e, m in [0.5, 1) */
    double q = nearbyint(m * 2048.0); /* 11 significant bits */
    if (q == 2048.0) {
        q = 1024.0;
        e++;
    }
    return sign | (uint16_t)(((e + 14) << 10) | ((uint16_t)q - 1024));
}

uint16_t fx_float_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if (isnan(f))
        return (uint16_t)((bits >> 16) | 0x40);
    uint32_t lower = bits & 0xffff, upper = bits >> 16;
    if (lower > 0x8000 || (lower == 0x8000 && (upper & 1)))
        upper++;
    return (uint16_t)upper;
}

/* ---- writing dumps -------------------------------------------------------------------- */

static hid_t bf16_type(void)
{
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 7, 8, 0, 7);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 127);
    return t;
}

static hid_t half_type(void)
{
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

/* The stored (file) type and the matching in-memory type of the raw data. */
static void types_of(const fx_dataset *ds, hid_t *file, hid_t *mem)
{
    switch (ds->dtype) {
    case DUMP_F32: *file = H5Tcopy(H5T_IEEE_F32LE); *mem = H5Tcopy(H5T_NATIVE_FLOAT); break;
    case DUMP_F64: *file = H5Tcopy(H5T_IEEE_F64LE); *mem = H5Tcopy(H5T_NATIVE_DOUBLE); break;
    case DUMP_F16: *file = half_type(); *mem = half_type(); break;
    case DUMP_BF16:
        *file = ds->bf16_as_uint16 ? H5Tcopy(H5T_STD_U16LE) : bf16_type();
        *mem = ds->bf16_as_uint16 ? H5Tcopy(H5T_NATIVE_UINT16) : bf16_type();
        break;
    case DUMP_I8: *file = H5Tcopy(H5T_STD_I8LE); *mem = H5Tcopy(H5T_NATIVE_INT8); break;
    case DUMP_U8: *file = H5Tcopy(H5T_STD_U8LE); *mem = H5Tcopy(H5T_NATIVE_UINT8); break;
    case DUMP_I16: *file = H5Tcopy(H5T_STD_I16LE); *mem = H5Tcopy(H5T_NATIVE_INT16); break;
    case DUMP_U16: *file = H5Tcopy(H5T_STD_U16LE); *mem = H5Tcopy(H5T_NATIVE_UINT16); break;
    case DUMP_I32: *file = H5Tcopy(H5T_STD_I32LE); *mem = H5Tcopy(H5T_NATIVE_INT32); break;
    case DUMP_U32: *file = H5Tcopy(H5T_STD_U32LE); *mem = H5Tcopy(H5T_NATIVE_UINT32); break;
    case DUMP_I64: *file = H5Tcopy(H5T_STD_I64LE); *mem = H5Tcopy(H5T_NATIVE_INT64); break;
    default: *file = H5Tcopy(H5T_STD_U64LE); *mem = H5Tcopy(H5T_NATIVE_UINT64); break;
    }
}

static int attr_string(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (a < 0 || H5Awrite(a, t, &value) < 0) ? -1 : 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

static int attr_int(hid_t obj, const char *name, long long value)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (a < 0 || H5Awrite(a, H5T_NATIVE_LLONG, &value) < 0) ? -1 : 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static hid_t creation_plist(const fx_dataset *ds)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (!ds->chunk_rows)
        return dcpl;
    hsize_t chunk[8];
    for (int i = 0; i < ds->rank; i++)
        chunk[i] = !i ? ds->chunk_rows : ds->chunk_cut[i] ? ds->chunk_cut[i] : ds->dims[i];
    H5Pset_chunk(dcpl, ds->rank, chunk);
    if (ds->shuffle)
        H5Pset_shuffle(dcpl);
    if (ds->gzip)
        H5Pset_deflate(dcpl, (unsigned)ds->gzip);
    return dcpl;
}

static int write_attrs(hid_t d, const fx_dataset *ds)
{
    int rc = 0;
    if (ds->channel_axis != FX_NO_ATTR)
        rc |= attr_int(d, "channel_axis", ds->channel_axis);
    if (ds->op_type)
        rc |= attr_string(d, "op_type", ds->op_type);
    if (ds->orig_name)
        rc |= attr_string(d, "name", ds->orig_name);
    if (ds->dtype == DUMP_BF16 && ds->bf16_as_uint16)
        rc |= attr_string(d, "dtype", "bfloat16");
    return rc;
}

static int write_one(hid_t group, const fx_dataset *ds)
{
    hsize_t dims[8];
    for (int i = 0; i < ds->rank; i++)
        dims[i] = ds->dims[i];
    hid_t ftype, mtype, space = H5Screate_simple(ds->rank, dims, NULL);
    types_of(ds, &ftype, &mtype);
    hid_t dcpl = creation_plist(ds), lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(group, ds->name, ftype, space, lcpl, dcpl, H5P_DEFAULT);
    int empty = H5Sget_simple_extent_npoints(space) == 0;
    int rc = d < 0 ? -1 : 0;
    if (!rc && !empty && ds->data)
        rc = H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->data) < 0 ? -1 : 0;
    if (!rc)
        rc = write_attrs(d, ds);
    if (d >= 0)
        H5Dclose(d);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Tclose(ftype);
    H5Tclose(mtype);
    H5Sclose(space);
    return rc;
}

int fx_write_dump(const char *path, const fx_dataset *ds, size_t n, int at_root)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return -1;
    hid_t g = at_root ? f : H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = g < 0 ? -1 : 0;
    for (size_t i = 0; !rc && i < n; i++)
        rc = write_one(g, &ds[i]);
    if (!at_root && g >= 0)
        H5Gclose(g);
    H5Fclose(f);
    return rc;
}

static int write_floats(hid_t grp, const char *name, int rank, const hsize_t *dims, const float *v)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(grp, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d < 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0 ? -1 : 0;
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

static int attr_pair(hid_t obj, const char *name, const long long v[2])
{
    hsize_t two = 2;
    hid_t sp = H5Screate_simple(1, &two, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (a < 0 || H5Awrite(a, H5T_NATIVE_LLONG, v) < 0) ? -1 : 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

int fx_write_layer(const char *path, const fx_layer *l)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return -1;
    hid_t root = H5Lexists(f, "layers", H5P_DEFAULT) > 0
                     ? H5Gopen2(f, "layers", H5P_DEFAULT)
                     : H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(root, l->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t wd[4], bd = l->weight_dims[0];
    for (int i = 0; i < l->weight_rank; i++)
        wd[i] = l->weight_dims[i];
    int rc = g < 0 || attr_string(g, "type", l->type) || attr_string(g, "input", l->input) ||
             attr_pair(g, "stride", l->stride) || attr_pair(g, "padding", l->padding) ||
             attr_int(g, "groups", l->groups) ||
             write_floats(g, "weight", l->weight_rank, wd, l->weight) ||
             (l->bias && write_floats(g, "bias", 1, &bd, l->bias));
    if (g >= 0)
        H5Gclose(g);
    H5Gclose(root);
    H5Fclose(f);
    return rc ? -1 : 0;
}

void fx_read_text(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

char *fx_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0)
        n = ftell(f);
    char *buf = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (f)
        fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (size)
            *size = (size_t)n;
    }
    return buf;
}
