/* dump.c - reading calibration dumps: tensors under /activations, streamed along axis 0 */
#include "dump.h"

#include <errno.h>
#include <hdf5.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5attr.h"
#include "packed.h"

#define MAX_DEPTH 32
#define MAX_ROW_ELEMS ((uint64_t)1 << 40)
#define LZF_FILTER_ID 32000

typedef struct dump_item {
    dump_tensor t;
    char *path;     /* the dataset's path in the file; NULL for virtual tensors */
    hid_t dataset;  /* open while its tensor is being read, else -1 (see open_item) */
    hid_t memtype;  /* stored type in native byte order: HDF5 does no conversion */
    hid_t space;    /* the file dataspace while open, reused for every hyperslab */
    size_t cache_slots, cache_bytes; /* its chunk cache (cache_bytes 0: HDF5's default) */
    int packable;       /* gzip'd chunks qcal inflates itself (packed.h), as `form` says */
    packed_form form;
    int64_t map_at;     /* contiguous storage the pass may map: the values' file offset;
                           MAP_BY_CHUNK: chunks of whole rows, mapped when adjacent; else -1 */
} dump_item;

#define MAP_BY_CHUNK (-2)
#define MAP_MIN_CHUNK_BYTES ((uint64_t)64 << 10) /* smaller chunks: a lookup each costs more
                                                     than the copy it saves */

struct dump {
    char *path;
    hid_t file;     /* -1 for a virtual dump (statistics only) */
    int weights;    /* /weights view: each dataset gets a leading axis of one sample */
    dump_item *items;
    size_t n, cap;
    dump **parts;   /* several files read as one (samples concatenated), or NULL */
    size_t n_parts;
    char *source;   /* every file, joined by ", " (results record it) */
    size_t open;    /* the item whose dataset is open, or SIZE_MAX */
    int fd;         /* HDF5's descriptor of the file, for mapping (dump_map_rows), or -1 */
};

/* A dump with nothing open yet. */
static dump *blank_dump(void)
{
    dump *d = calloc(1, sizeof *d);
    if (d)
        d->file = -1, d->fd = -1, d->open = SIZE_MAX;
    return d;
}

/* ---- errors --------------------------------------------------------------------------- */

/* ---- dtype ---------------------------------------------------------------------------- */

static const char *class_name(H5T_class_t c)
{
    switch (c) {
    case H5T_INTEGER: return "an integer type";
    case H5T_FLOAT: return "a float type";
    case H5T_STRING: return "a string type";
    case H5T_COMPOUND: return "a compound type";
    case H5T_REFERENCE: return "a reference type";
    case H5T_ENUM: return "an enum type";
    case H5T_OPAQUE: return "an opaque type (h5py's |V2 bfloat16 needs the attribute dtype=\"bfloat16\" on a uint16 dataset instead)";
    case H5T_ARRAY: return "an array type";
    case H5T_VLEN: return "a variable-length type";
    case H5T_BITFIELD: return "a bitfield type";
    case H5T_TIME: return "a time type";
    default: return "an unknown type";
    }
}

/* A 16-bit float laid out exactly as IEEE half (exponent bits 5, bias 15) or bfloat16 (8, 127):
 * qcal converts their bits itself, so any other layout (another bias, a moved sign, padding)
 * would be read as something it is not. */
static int standard_half(hid_t type, size_t esize, size_t msize)
{
    size_t spos, epos, got_esize, mpos, got_msize;
    H5Tget_fields(type, &spos, &epos, &got_esize, &mpos, &got_msize);
    return H5Tget_precision(type) == 16 && H5Tget_offset(type) == 0 && spos == 15 &&
           epos == msize && got_esize == esize && mpos == 0 && got_msize == msize &&
           H5Tget_ebias(type) == ((size_t)1 << (esize - 1)) - 1 &&
           H5Tget_norm(type) == H5T_NORM_IMPLIED;
}

static int float_dtype(hid_t type, int *dtype, hid_t *mem)
{
    size_t size = H5Tget_size(type), spos, epos, esize, mpos, msize;
    H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize);
    if (size == 4 && esize == 8 && msize == 23)
        return *dtype = DUMP_F32, *mem = H5Tcopy(H5T_NATIVE_FLOAT), 0;
    if (size == 8 && esize == 11 && msize == 52)
        return *dtype = DUMP_F64, *mem = H5Tcopy(H5T_NATIVE_DOUBLE), 0;
    if (size == 2 && (standard_half(type, 5, 10) || standard_half(type, 8, 7))) {
        *dtype = esize == 5 ? DUMP_F16 : DUMP_BF16;
        *mem = H5Tcopy(type); /* same layout, native order: HDF5 only swaps bytes if needed */
        H5Tset_order(*mem, H5T_ORDER_LE);
        return 0;
    }
    return -1;
}

/* tag: the dataset's dtype attribute naming 16-bit float bits kept in 16-bit integers
 * (DUMP_BF16 or DUMP_F16), else 0. */
static int int_dtype(hid_t type, int tag, int *dtype, hid_t *mem)
{
    int is_signed = H5Tget_sign(type) == H5T_SGN_2;
    static const int kinds[2][4] = {{DUMP_U8, DUMP_U16, DUMP_U32, DUMP_U64},
                                    {DUMP_I8, DUMP_I16, DUMP_I32, DUMP_I64}};
    hid_t natives[2][4] = {{H5T_NATIVE_UINT8, H5T_NATIVE_UINT16, H5T_NATIVE_UINT32, H5T_NATIVE_UINT64},
                           {H5T_NATIVE_INT8, H5T_NATIVE_INT16, H5T_NATIVE_INT32, H5T_NATIVE_INT64}};
    int slot;
    switch (H5Tget_size(type)) {
    case 1: slot = 0; break;
    case 2: slot = 1; break;
    case 4: slot = 2; break;
    case 8: slot = 3; break;
    default: return -1;
    }
    if (tag && slot == 1) { /* the bits of a 16-bit float: read as stored, no conversion */
        *dtype = tag;
        *mem = H5Tcopy(natives[is_signed][slot]);
        return 0;
    }
    *dtype = kinds[is_signed][slot];
    *mem = H5Tcopy(natives[is_signed][slot]);
    return 0;
}

size_t dump_elem_size(int dtype)
{
    switch (dtype) {
    case DUMP_F64: case DUMP_I64: case DUMP_U64: return 8;
    case DUMP_F32: case DUMP_I32: case DUMP_U32: return 4;
    case DUMP_F16: case DUMP_BF16: case DUMP_I16: case DUMP_U16: return 2;
    default: return 1;
    }
}

const char *dump_dtype_name(int dtype)
{
    static const char *const names[] = {"?", "float32", "float64", "float16", "bfloat16", "int8",
                                        "uint8", "int16", "uint16", "int32", "uint32", "int64",
                                        "uint64"};
    return dtype >= DUMP_F32 && dtype <= DUMP_U64 ? names[dtype] : names[0];
}

/* ---- attributes ----------------------------------------------------------------------- */

/* The channel_axis attribute: 1 when absent on rank >= 2 (-1 on rank 1), negative counts from
 * the end. Returns -2 (and sets e) when invalid. */
static int channel_axis_of(hid_t ds, const dump *d, const char *name, int rank, qerror *e)
{
    if (H5Aexists(ds, "channel_axis") <= 0)
        return rank >= 2 ? 1 : -1;
    hid_t a = H5Aopen(ds, "channel_axis", H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
    long long v = 0, count = (long long)H5Sget_simple_extent_npoints(sp);
    H5T_class_t cls = H5Tget_class(t);
    /* an unsigned value beyond LLONG_MAX would read clamped: take it as unsigned */
    int is_unsigned = cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE;
    unsigned long long u = 0;
    int ok = cls == H5T_INTEGER && count == 1 &&
             (is_unsigned ? H5Aread(a, H5T_NATIVE_ULLONG, &u) : H5Aread(a, H5T_NATIVE_LLONG, &v)) >= 0;
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    if (!ok)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected one integer in attribute "
                          "channel_axis, found %s with %lld value(s)", d->path, name,
                          class_name(cls), count), -2;
    if (rank < 2)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected no channel_axis on a tensor of "
                          "rank %d (axis 0 is the sample axis: a sample has no axes), found one",
                          d->path, name, rank), -2;
    if (is_unsigned && u >= (unsigned long long)rank)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected channel_axis in [1, %d] (axis "
                          "0 is the sample axis) for rank %d, found %llu", d->path, name,
                          rank - 1, rank, u), -2;
    if (is_unsigned)
        v = (long long)u;
    long long axis = v < 0 ? v + rank : v;
    if (axis < 1 || axis >= rank)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected channel_axis in [1, %d] (axis "
                          "0 is the sample axis) for rank %d, found %lld", d->path, name,
                          rank - 1, rank, v), -2;
    return (int)axis;
}

/* ---- classifying a dataset ------------------------------------------------------------ */

static int check_filters(hid_t dcpl, const dump *d, const char *name, qerror *e)
{
    int n = H5Pget_nfilters(dcpl);
    for (int i = 0; i < n; i++) {
        unsigned flags, conf;
        size_t nelem = 0;
        char fname[128] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelem, NULL, sizeof fname,
                                         fname, &conf);
        if (H5Zfilter_avail(id) > 0)
            continue;
        if (id == LZF_FILTER_ID)
            return qerror_set(e, QERR_UNAVAILABLE, "%s: tensor '%s': compressed with h5py's LZF "
                              "filter, which the HDF5 C library cannot read (install "
                              "hdf5-plugin-lzf, or write the dump with gzip or no compression)",
                              d->path, name);
        return qerror_set(e, QERR_UNAVAILABLE, "%s: tensor '%s': compressed with HDF5 filter %d "
                          "('%s'), which is not available here (use gzip or no compression)",
                          d->path, name, (int)id, fname[0] ? fname : "unnamed");
    }
    return 0;
}

static int check_shape(dump_tensor *t, hid_t space, const dump *d, qerror *e)
{
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    if (H5Sget_simple_extent_type(space) == H5S_NULL)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected a non-empty dataset, found an "
                          "empty (null) dataspace", d->path, t->name);
    if (rank == 0)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected an array with a sample axis, "
                          "found a scalar", d->path, t->name);
    if (rank < 0 || rank > QCAL_MAX_RANK)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected rank 1 to %d, found %d",
                          d->path, t->name, QCAL_MAX_RANK, rank);
    H5Sget_simple_extent_dims(space, dims, NULL);
    if (d->weights) { /* one "sample" holding the whole weight: axis 1 = output channels */
        if (rank + 1 > QCAL_MAX_RANK)
            return qerror_set(e, QERR_DATA, "%s: weight '%s': expected rank 1 to %d, found %d",
                              d->path, t->name, QCAL_MAX_RANK - 1, rank);
        memmove(dims + 1, dims, (size_t)rank * sizeof *dims);
        dims[0] = 1;
        rank++;
    }
    t->rank = rank;
    t->row_size = 1;
    for (int i = 0; i < rank; i++) {
        t->dims[i] = dims[i];
        if (!dims[i])
            return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected a non-empty dataset, "
                              "found axis %d of length 0", d->path, t->name, i);
        if (i && t->row_size > MAX_ROW_ELEMS / dims[i])
            return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected at most 2^40 values per "
                              "sample, found a declared shape beyond that", d->path, t->name);
        if (i)
            t->row_size *= dims[i];
    }
    return 0;
}

static int classify_type(dump_item *it, hid_t ds, const dump *d, qerror *e)
{
    hid_t type = H5Dget_type(ds);
    H5T_class_t cls = H5Tget_class(type);
    int bad = 0, rc = -1;
    char *tag = h5_attr_string(ds, "dtype", &bad);
    int bits_of = !tag ? 0 : !strcmp(tag, "bfloat16") ? DUMP_BF16 : !strcmp(tag, "float16") ? DUMP_F16 : 0;
    size_t size = H5Tget_size(type);
    if (bits_of && (cls != H5T_INTEGER || size != 2)) {
        H5Tclose(type);
        free(tag);
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': attribute dtype = \"%s\" expected "
                          "16-bit integers holding its bits, found %s of %zu bytes", d->path,
                          it->t.name, bits_of == DUMP_BF16 ? "bfloat16" : "float16",
                          class_name(cls), size);
    }
    char layout[128];
    if (cls == H5T_FLOAT) {
        size_t spos, epos, esize, mpos, msize;
        H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize);
        snprintf(layout, sizeof layout, "a %zu-bit float of unusual layout (%zu exponent bits, "
                 "bias %zu, %zu mantissa bits)", 8 * size, esize, H5Tget_ebias(type), msize);
        rc = float_dtype(type, &it->t.dtype, &it->memtype);
    } else if (cls == H5T_INTEGER)
        rc = int_dtype(type, bits_of, &it->t.dtype, &it->memtype);
    H5Tclose(type);
    free(tag);
    if (rc)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected a numeric dataset (float16, "
                          "bfloat16, float32, float64 or integers), found %s", d->path, it->t.name,
                          cls == H5T_FLOAT ? layout : class_name(cls));
    it->t.elem_size = dump_elem_size(it->t.dtype);
    return 0;
}

static int read_attrs(dump_item *it, hid_t ds, const dump *d, qerror *e)
{
    int bad;
    it->t.op_type = h5_attr_string(ds, "op_type", &bad);
    if (bad && H5Aexists(ds, "op_type") > 0)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected a string attribute op_type",
                          d->path, it->t.name);
    char *orig = h5_attr_string(ds, "name", &bad);
    if (bad) /* as op_type: a name the exports would have dropped silently */
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected a string attribute name (the "
                          "framework's name), found another type", d->path, it->t.name);
    if (orig && strlen(orig) > DUMP_MAX_NAME) {
        size_t n = strlen(orig);
        free(orig);
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected a name attribute of at most %d "
                          "bytes, found %zu", d->path, it->t.name, DUMP_MAX_NAME, n);
    }
    if (!orig && d->weights) { /* a layer's weight goes by its parameter name, "fc1.weight" */
        size_t n = strlen(it->t.name) + 8;
        if ((orig = malloc(n)))
            snprintf(orig, n, "%s.weight", it->t.name + strlen(DUMP_WEIGHT_PREFIX));
    }
    it->t.orig_name = orig ? orig : strdup(it->t.name);
    if (!it->t.orig_name)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    it->t.channel_axis = d->weights ? 1 : channel_axis_of(ds, d, it->t.name, it->t.rank, e);
    return it->t.channel_axis == -2 ? -1 : 0;
}

/* The chunk cache a dataset is read with: none for unfiltered chunks (measured fastest);
 * for filtered ones every chunk one slab touches, plus the row of chunks a slab boundary may
 * split, so no chunk is inflated twice. */
static void chunk_cache_of(hid_t dcpl, dump_item *it)
{
    it->cache_slots = it->cache_bytes = 0;
    if (H5Pget_layout(dcpl) != H5D_CHUNKED)
        return;
    if (H5Pget_nfilters(dcpl) == 0) {
        it->cache_slots = 1; /* no cache: 0 bytes */
        return;
    }
    const dump_tensor *t = &it->t;
    hsize_t chunk[H5S_MAX_RANK];
    int rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
    double per_block = 1, chunk_bytes = (double)t->elem_size;
    for (int i = 0; i < rank; i++) {
        chunk_bytes *= (double)chunk[i];
        if (i)
            per_block *= (double)((t->dims[i] + chunk[i] - 1) / chunk[i]);
    }
    double rows = (double)((4u << 20) / (t->row_size * 4) + 1), blocks = rows / (double)chunk[0] + 2;
    double bytes = blocks * per_block * chunk_bytes;
    bytes = bytes < (1 << 20) ? (1 << 20) : bytes > (256.0 * (1 << 20)) ? 256.0 * (1 << 20) : bytes;
    size_t slots = (size_t)(blocks * per_block * 100) | 1;
    it->cache_slots = slots < 521 ? 521 : slots;
    it->cache_bytes = (size_t)bytes;
}

static void close_item(dump_item *it)
{
    if (it->space >= 0)
        H5Sclose(it->space);
    if (it->dataset >= 0)
        H5Dclose(it->dataset);
    it->space = it->dataset = -1;
}

/* Opens item i for reading, closing the one open before: a dump keeps one dataset open, not
 * all of them (HDF5 holds ~46 KiB of metadata per open dataset: 90 MiB for 2,000 tensors).
 * A pass reads its tensors one after another, so each is opened once per pass. */
static int open_item(dump *d, size_t i, qerror *e)
{
    dump_item *it = &d->items[i];
    if (d->open == i)
        return 0;
    if (d->open != SIZE_MAX)
        close_item(&d->items[d->open]);
    d->open = SIZE_MAX;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0 && it->cache_slots)
        H5Pset_chunk_cache(dapl, it->cache_slots, it->cache_bytes, 1.0);
    char why[256] = "no dataset access property list";
    int code = QERR_SOFTWARE;
    it->dataset = dapl < 0 ? -1 : H5Dopen2(d->file, it->path, dapl);
    if (dapl >= 0 && it->dataset < 0) /* before H5Pclose: every call clears the error stack */
        code = h5_reason_code(why, sizeof why);
    if (dapl >= 0)
        H5Pclose(dapl);
    it->space = it->dataset < 0 ? -1 : H5Dget_space(it->dataset);
    if (it->dataset >= 0 && it->space < 0)
        code = h5_reason_code(why, sizeof why);
    if (it->space < 0) {
        close_item(it);
        return qerror_set(e, code, "%s: tensor '%s': cannot open: %s", d->path, it->t.name,
                          why);
    }
    d->open = i;
    return 0;
}

#define PACKED_CHUNK_MAX ((size_t)4 << 20) /* larger chunks: HDF5 inflates them */

/* Whether the pipeline is one qcal inflates itself: deflate, or shuffle then deflate. */
static int known_pipeline(hid_t dcpl, int *deflate_at, int *shuffle_at)
{
    int n = H5Pget_nfilters(dcpl);
    *deflate_at = *shuffle_at = -1;
    for (int i = 0; i < n; i++) {
        unsigned flags, conf;
        size_t nelem = 0;
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelem, NULL, 0, NULL, &conf);
        if (id == H5Z_FILTER_DEFLATE && *deflate_at < 0)
            *deflate_at = i;
        else if (id == H5Z_FILTER_SHUFFLE && *shuffle_at < 0 && *deflate_at < 0)
            *shuffle_at = i;
        else
            return 0;
    }
    return *deflate_at >= 0;
}

/* Whether tensor it's chunks can be read as stored and inflated by qcal (packed.h): a known
 * pipeline, the stored type byte for byte what reads deliver, chunks of at most 4 MiB and
 * blocks of chunk rows of at most 64 MiB (what a slab buffer must hold). */
static void packed_form_of(hid_t ds, hid_t dcpl, dump_item *it)
{
    const dump_tensor *t = &it->t;
    hsize_t chunk[H5S_MAX_RANK];
    int deflate_at, shuffle_at;
    it->packable = 0;
    unsigned chunk_opts = 0;
    if (H5Pget_layout(dcpl) != H5D_CHUNKED || H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk) != t->rank ||
        !known_pipeline(dcpl, &deflate_at, &shuffle_at))
        return;
    /* partial edge chunks stored unfiltered, with nothing in their filter mask to say so:
     * HDF5 reads those (qcal would inflate raw bytes) */
    if (H5Pget_chunk_opts(dcpl, &chunk_opts) >= 0 && (chunk_opts & H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS))
        return;
    hid_t stored = H5Dget_type(ds);
    int same = stored >= 0 && H5Tequal(stored, it->memtype) > 0;
    if (stored >= 0)
        H5Tclose(stored);
    packed_form f = {.rank = t->rank, .rows = t->dims[0], .chunk_rows = chunk[0], .per_block = 1,
                     .whole_rows = 1, .row_bytes = (size_t)t->row_size * t->elem_size,
                     .elem_size = t->elem_size, .deflate_at = deflate_at,
                     .shuffle_at = shuffle_at};
    double chunk_bytes = (double)t->elem_size;
    for (int k = 0; k < t->rank; k++) {
        f.dims[k] = t->dims[k], f.chunk[k] = chunk[k];
        chunk_bytes *= (double)chunk[k];
        if (k > 0) {
            f.per_block *= (t->dims[k] + chunk[k] - 1) / chunk[k];
            f.whole_rows &= chunk[k] == t->dims[k];
        }
    }
    if (!same || chunk_bytes > (double)PACKED_CHUNK_MAX ||
        chunk_bytes * (double)f.per_block > 16.0 * (double)PACKED_CHUNK_MAX)
        return;
    it->form = f;
    it->packable = 1;
}

/* Chunks a chunked dataset's dimensions need, and how many were written. 0, or -1 (why). */
static int count_chunks(hid_t ds, hid_t dcpl, hid_t space, hsize_t *need, hsize_t *written,
                        char *why)
{
    hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    if (rank < 0 || H5Pget_chunk(dcpl, rank, chunk) != rank ||
        H5Dget_num_chunks(ds, space, written) < 0) {
        h5_reason(why, 256);
        return -1;
    }
    *need = 1;
    for (int k = 0; k < rank; k++)
        *need *= chunk[k] ? (dims[k] + chunk[k] - 1) / chunk[k] : 0;
    return 0;
}

/* Every value stored: a dataset whose storage (or some of whose chunks) was never written
 * reads as its fill value, which would be calibrated as if a model had produced it (a dumper
 * that stopped early, dimensions that claim more samples than were written). Chunks are
 * counted: HDF5 1.10's H5Dget_space_status calls a chunked dataset whose dimensions are not
 * whole chunks partly allocated even when every chunk is there. */
static int check_written(hid_t ds, hid_t dcpl, hid_t space, const dump *d, const char *name,
                         qerror *e)
{
    char why[256];
    H5D_space_status_t status = H5D_SPACE_STATUS_ALLOCATED;
    hsize_t need = 0, written = 0;
    int chunked = H5Pget_layout(dcpl) == H5D_CHUNKED, failed;
    if (chunked) {
        failed = count_chunks(ds, dcpl, space, &need, &written, why);
    } else if ((failed = H5Dget_space_status(ds, &status) < 0)) {
        h5_reason(why, sizeof why);
    }
    if (failed)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': cannot tell whether its values were "
                          "written: %s", d->path, name, why);
    if (chunked && written < need)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected its %llu chunks written, found "
                          "%llu (the others would read as the fill value)", d->path, name,
                          (unsigned long long)need, (unsigned long long)written);
    if (!chunked && status != H5D_SPACE_STATUS_ALLOCATED)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected its values written, found no "
                          "storage (they would read as the fill value)", d->path, name);
    return 0;
}

/* ---- values kept in other files: external storage, virtual datasets -------------------- */

/* Where HDF5 looks for a file `name` that a dataset of the dump refers to: an absolute name
 * as it is; else below `prefix` (the dataset's external-file or virtual-dataset prefix,
 * "${ORIGIN}" standing for the dump's folder) when one is set; else beside the dump, or else
 * in the working directory. */
static void locate(const char *name, const char *dump_path, const char *prefix, char *out,
                   size_t size)
{
    const char *slash = strrchr(dump_path, '/');
    int dir_len = slash ? (int)(slash - dump_path) : 1;
    const char *dir = slash ? dump_path : ".";
    if (name[0] == '/') {
        snprintf(out, size, "%s", name);
    } else if (prefix[0] && !strncmp(prefix, "${ORIGIN}", 9)) {
        snprintf(out, size, "%.*s%s/%s", dir_len, dir, prefix + 9, name);
    } else if (prefix[0]) {
        snprintf(out, size, "%s/%s", prefix, name);
    } else {
        snprintf(out, size, "%.*s/%s", dir_len, dir, name);
        if (access(out, F_OK) != 0)
            snprintf(out, size, "%s", name);
    }
}

/* The folder prefix a dataset's access list gives for its external files or virtual sources
 * (get: H5Pget_efile_prefix or H5Pget_virtual_prefix); "" when none. 1 when it cannot be read
 * whole (too long for buf: HDF5 leaves it unterminated). */
static int search_prefix(hid_t ds, ssize_t (*get)(hid_t, char *, size_t), char *buf, size_t size)
{
    buf[0] = '\0';
    hid_t dapl = H5Dget_access_plist(ds);
    ssize_t len = dapl >= 0 ? get(dapl, buf, size) : 0;
    if (dapl >= 0)
        H5Pclose(dapl);
    return len < 0 || (size_t)len >= size;
}

/* External storage must hold every value: HDF5 reads the bytes a short external file lacks as
 * zeros, without a word. (A missing one HDF5 refuses itself when reading.) */
static int check_external(hid_t ds, hid_t dcpl, hid_t space, const dump_item *it,
                          const dump *d, qerror *e)
{
    int count = H5Pget_external_count(dcpl);
    if (count <= 0)
        return 0;
    char prefix[1024], name[1024], where[4096];
    if (search_prefix(ds, H5Pget_efile_prefix, prefix, sizeof prefix)) /* HDF5 will look */
        return 0;
    hssize_t n = H5Sget_simple_extent_npoints(space);
    uint64_t left = n > 0 ? (uint64_t)n * it->t.elem_size : 0;
    for (int i = 0; i < count && left; i++) {
        off_t offset = 0;
        hsize_t bytes = 0;
        struct stat st;
        /* HDF5 leaves a name it cut short without its NUL: one byte kept for it */
        name[sizeof name - 1] = '\0';
        if (H5Pget_external(dcpl, (unsigned)i, sizeof name - 1, name, &offset, &bytes) < 0)
            continue;
        uint64_t take = bytes < left ? bytes : left;
        locate(name, d->path, prefix, where, sizeof where);
        left -= take;
        if (stat(where, &st) != 0) /* not there: HDF5 says so when reading */
            continue;
        if (!S_ISREG(st.st_mode)) /* a FIFO blocks, devices are endless */
            return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected external file '%s' to be "
                              "a regular file, found %s", d->path, it->t.name, where,
                              S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a directory"
                                                                             : "a device");
        if ((uint64_t)st.st_size < (uint64_t)offset + take)
            return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected external file '%s' to "
                              "hold %llu bytes from offset %lld, found %lld bytes in all (the rest "
                              "would read as zeros)", d->path, it->t.name, where,
                              (unsigned long long)take, (long long)offset, (long long)st.st_size);
    }
    return 0;
}

/* Whether file `path` opens as HDF5 and holds a dataset at `dataset`. */
static int source_present(const char *path, const char *dataset)
{
    char why[256];
    struct stat st; /* a regular file: HDF5 would block reading a FIFO's signature */
    int readable = stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
    hid_t f = readable && H5Fis_hdf5(path) > 0 ? h5_open_read(path, why, sizeof why) : -1;
    if (f < 0)
        return 0;
    htri_t found = H5Oexists_by_name(f, dataset, H5P_DEFAULT);
    h5_close_read(f);
    return found > 0;
}

/* Every value of a virtual dataset must come from a source: the parts no mapping selects
 * read as the fill value (a declared shape of terabytes with a small source behind it).
 * Mappings are assumed not to overlap: their selections must add up to the whole. */
static int check_virtual_cover(hid_t ds, hid_t dcpl, size_t count, const dump_item *it,
                               const dump *d, qerror *e)
{
    hid_t space = H5Dget_space(ds);
    double whole = space >= 0 ? (double)H5Sget_simple_extent_npoints(space) : 0, mapped = 0;
    if (space >= 0)
        H5Sclose(space);
    for (size_t i = 0; i < count; i++) {
        hid_t v = H5Pget_virtual_vspace(dcpl, i);
        if (v < 0)
            return 0; /* HDF5 will say what it cannot read */
        hssize_t n = H5Sget_select_npoints(v); /* < 0 for unlimited selections */
        H5Sclose(v);
        if (n < 0)
            return 0;
        mapped += (double)n;
    }
    if (mapped < whole)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected its virtual dataset's %.0f "
                          "values mapped to sources, found %.0f (the rest would read as the fill "
                          "value)", d->path, it->t.name, whole, mapped);
    return 0;
}

/* A virtual dataset's sources must be there: HDF5 reads a missing source file or dataset as
 * the fill value, without a word. Sources named by a printf-like pattern are left to HDF5. */
static int check_virtual(hid_t ds, hid_t dcpl, const dump_item *it, const dump *d, qerror *e)
{
    size_t count = 0;
    if (H5Pget_layout(dcpl) != H5D_VIRTUAL || H5Pget_virtual_count(dcpl, &count) < 0)
        return 0;
    char prefix[1024], file[1024], dataset[1024], where[4096];
    if (search_prefix(ds, H5Pget_virtual_prefix, prefix, sizeof prefix)) /* HDF5 will look */
        return 0;
    for (size_t i = 0; i < count; i++) {
        ssize_t file_len = H5Pget_virtual_filename(dcpl, i, file, sizeof file);
        ssize_t dataset_len = H5Pget_virtual_dsetname(dcpl, i, dataset, sizeof dataset);
        /* names too long for the buffers (cut short without a NUL) are left to HDF5 */
        if (file_len < 0 || dataset_len < 0 || (size_t)file_len >= sizeof file ||
            (size_t)dataset_len >= sizeof dataset || strchr(file, '%') || strchr(dataset, '%'))
            continue;
        int own = !strcmp(file, ".");
        locate(file, d->path, prefix, where, sizeof where);
        int present = own ? H5Oexists_by_name(d->file, dataset, H5P_DEFAULT) > 0
                          : source_present(where, dataset);
        if (!present)
            return qerror_set(e, QERR_NOINPUT, "%s: tensor '%s': expected the virtual dataset's "
                              "source %s:%s, found none (it would read as the fill value)",
                              d->path, it->t.name, own ? d->path : where, dataset);
    }
    return check_virtual_cover(ds, dcpl, count, it, d, e);
}

/* ---- mapping: the pass reads uncompressed native-order values without a copy -------- */

static int no_userblock(hid_t file)
{
    hid_t fcpl = H5Fget_create_plist(file);
    hsize_t userblock = 1;
    if (fcpl >= 0) {
        H5Pget_userblock(fcpl, &userblock);
        H5Pclose(fcpl);
    }
    return userblock == 0;
}

/* Chunks that each hold whole rows (every axis but the first uncut), unfiltered and big
 * enough to be worth a lookup each. */
static int whole_row_chunks(hid_t dcpl, const dump_item *it)
{
    hsize_t chunk[H5S_MAX_RANK];
    if (H5Pget_nfilters(dcpl) != 0 || H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk) != it->t.rank)
        return 0;
    for (int k = 1; k < it->t.rank; k++)
        if (chunk[k] != it->t.dims[k])
            return 0;
    return chunk[0] * it->t.row_size * it->t.elem_size >= MAP_MIN_CHUNK_BYTES;
}

/* Whether the pass may map a dataset's values instead of reading them through HDF5: stored in
 * the byte order HDF5 would hand out (no conversion), not external, no user block; then
 * contiguous storage that is whole, aligned for its type and inside the file (as it is now: a
 * file that shrinks while being read is not supported) gives its offset, chunks of whole rows
 * MAP_BY_CHUNK (checked slab by slab, dump_map_rows). Else -1, and HDF5 reads it. */
/* Whether dataset ds is stored in the dump's own file: one reached through an external link
 * lies in another, where d->fd's offsets mean nothing. */
static int in_own_file(const dump *d, hid_t ds)
{
    H5O_info_t of_dataset, of_root;
    return H5Oget_info2(ds, &of_dataset, H5O_INFO_BASIC) >= 0 &&
           H5Oget_info_by_name2(d->file, "/", &of_root, H5O_INFO_BASIC, H5P_DEFAULT) >= 0 &&
           of_dataset.fileno == of_root.fileno;
}

static int64_t map_position(const dump *d, hid_t ds, hid_t dcpl, const dump_item *it)
{
    struct stat st;
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (d->fd < 0 || fstat(d->fd, &st) || H5Pget_external_count(dcpl) != 0 ||
        !no_userblock(d->file) || !in_own_file(d, ds))
        return -1;
    hid_t type = H5Dget_type(ds);
    int same = type >= 0 && H5Tequal(type, it->memtype) > 0;
    if (type >= 0)
        H5Tclose(type);
    if (same && layout == H5D_CHUNKED && whole_row_chunks(dcpl, it))
        return MAP_BY_CHUNK;
    if (layout != H5D_CONTIGUOUS)
        return -1;
    haddr_t at = H5Dget_offset(ds);
    uint64_t bytes = it->t.dims[0] * it->t.row_size * it->t.elem_size;
    if (!same || at == HADDR_UNDEF || at % it->t.elem_size || H5Dget_storage_size(ds) != bytes ||
        at > (uint64_t)st.st_size || bytes > (uint64_t)st.st_size - at)
        return -1;
    return (int64_t)at;
}

static int map_part(dump *d, size_t i, uint64_t row0, uint64_t nrows, dump_window *w);

/* The file offset of chunk c of item i (open), full size and unfiltered; 0 when not so. */
static uint64_t chunk_at(const dump_item *it, uint64_t c, uint64_t chunk_bytes)
{
    hsize_t offset[H5S_MAX_RANK] = {c * it->t.chunk_rows};
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    if (H5Dget_chunk_info_by_coord(it->dataset, offset, &mask, &addr, &size) < 0 || mask ||
        addr == HADDR_UNDEF || size != chunk_bytes)
        return 0;
    return addr;
}

/* Where rows [row0, row0 + nrows) of a chunked item start in the file when the chunks that
 * hold them lie end to end, as a dumper writing them in order leaves them; 0 when not. */
static uint64_t adjacent_chunks_at(dump *d, size_t i, uint64_t row0, uint64_t nrows)
{
    dump_item *it = &d->items[i];
    qerror ignored = {0};
    const char *guard = h5_guard_enter(d->path);
    uint64_t row_bytes = it->t.row_size * it->t.elem_size, per = it->t.chunk_rows;
    uint64_t chunk_bytes = per * row_bytes, first = row0 / per, last = (row0 + nrows - 1) / per;
    uint64_t at = open_item(d, i, &ignored) ? 0 : chunk_at(it, first, chunk_bytes);
    for (uint64_t c = first + 1; at && c <= last; c++)
        if (chunk_at(it, c, chunk_bytes) != at + (c - first) * chunk_bytes)
            at = 0;
    h5_guard_leave(guard);
    return at ? at + (row0 - first * per) * row_bytes : 0;
}

int dump_map_rows(dump *d, size_t i, uint64_t row0, uint64_t nrows, dump_window *w)
{
    memset(w, 0, sizeof *w);
    if (d->n_parts)
        return map_part(d, i, row0, nrows, w);
    const dump_item *it = &d->items[i];
    if (it->map_at == -1 || nrows == 0 || row0 > it->t.dims[0] || nrows > it->t.dims[0] - row0)
        return 1;
    uint64_t row_bytes = it->t.row_size * it->t.elem_size, page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t at = it->map_at == MAP_BY_CHUNK ? adjacent_chunks_at(d, i, row0, nrows)
                                             : (uint64_t)it->map_at + row0 * row_bytes;
    struct stat st;
    if (!at || at % it->t.elem_size || fstat(d->fd, &st) ||
        at + nrows * row_bytes > (uint64_t)st.st_size)
        return 1;
    uint64_t skip = at % page, len = nrows * row_bytes + skip;
    /* MAP_POPULATE: the page tables in one call, not a fault per few pages */
    void *base = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, d->fd, (off_t)(at - skip));
    if (base == MAP_FAILED)
        return 1;
    w->base = base, w->len = len, w->data = (const char *)base + skip, w->path = d->path;
    return 0;
}

/* A window inside one file of a dump of several; 1 (read instead) when it spans two. */
static int map_part(dump *d, size_t i, uint64_t row0, uint64_t nrows, dump_window *w)
{
    for (size_t k = 0; k < d->n_parts; k++) {
        uint64_t have = d->parts[k]->items[i].t.dims[0];
        if (row0 < have)
            return nrows <= have - row0 ? dump_map_rows(d->parts[k], i, row0, nrows, w) : 1;
        row0 -= have;
    }
    return 1;
}

void dump_unmap(dump_window *w)
{
    if (w->base)
        munmap(w->base, w->len);
    memset(w, 0, sizeof *w);
}

/* Reads a dataset's description and the chunk cache it will be read with. */
static int describe(dump *d, dump_item *it, const char *full, qerror *e)
{
    hid_t ds = H5Dopen2(d->file, full, H5P_DEFAULT);
    hid_t space = ds < 0 ? -1 : H5Dget_space(ds), dcpl = ds < 0 ? -1 : H5Dget_create_plist(ds);
    int rc = ds < 0 ? qerror_set(e, QERR_DATA, "%s: tensor '%s': cannot open", d->path, it->t.name)
                    : classify_type(it, ds, d, e);
    rc = rc ? rc : check_shape(&it->t, space, d, e);
    rc = rc ? rc : check_filters(dcpl, d, it->t.name, e);
    rc = rc ? rc : read_attrs(it, ds, d, e);
    rc = rc ? rc : check_written(ds, dcpl, space, d, it->t.name, e);
    rc = rc ? rc : check_external(ds, dcpl, space, it, d, e);
    rc = rc ? rc : check_virtual(ds, dcpl, it, d, e);
    if (!rc && !d->weights && H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t chunk[H5S_MAX_RANK];
        H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
        it->t.chunk_rows = chunk[0];
    }
    if (!rc)
        chunk_cache_of(dcpl, it);
    if (!rc && !d->weights)
        packed_form_of(ds, dcpl, it);
    if (!rc && !d->weights)
        it->map_at = map_position(d, ds, dcpl, it);
    if (!rc && !(it->path = strdup(full)))
        rc = qerror_set(e, QERR_SOFTWARE, "out of memory");
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    if (ds >= 0)
        H5Dclose(ds);
    return rc ? -1 : 0;
}

/* ---- walking the file ----------------------------------------------------------------- */

typedef struct walk_ctx {
    dump *d;
    const char *base;  /* "/activations" or "" */
    char prefix[4096]; /* path of the group being listed */
    int strict;        /* inside /activations every dataset must be a tensor */
    int depth;
    qerror *e;
    int failed;
} walk_ctx;

static dump_item *new_item(dump *d)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 32;
        dump_item *grown = realloc(d->items, cap * sizeof *grown);
        if (!grown)
            return NULL;
        d->items = grown;
        d->cap = cap;
    }
    dump_item *it = &d->items[d->n];
    memset(it, 0, sizeof *it);
    it->dataset = it->memtype = it->space = -1;
    it->map_at = -1;
    return it;
}

static void item_release(dump_item *it)
{
    free(it->t.name);
    free(it->t.orig_name);
    free(it->t.op_type);
    free(it->path);
    close_item(it);
    if (it->memtype >= 0)
        H5Tclose(it->memtype);
}

static int is_numeric(hid_t ds)
{
    hid_t t = H5Dget_type(ds);
    H5T_class_t c = H5Tget_class(t);
    H5Tclose(t);
    return c == H5T_FLOAT || c == H5T_INTEGER;
}

static int add_dataset(walk_ctx *w, const char *full, const char *rel)
{
    if (!w->strict) { /* whole-file mode: only numeric datasets are tensors */
        hid_t ds = H5Dopen2(w->d->file, full, H5P_DEFAULT);
        int numeric = ds >= 0 && is_numeric(ds);
        if (ds >= 0)
            H5Dclose(ds);
        if (!numeric)
            return 0;
    }
    const char *prefix = w->d->weights ? DUMP_WEIGHT_PREFIX : "";
    if (strlen(prefix) + strlen(rel) > DUMP_MAX_NAME)
        return qerror_set(w->e, QERR_DATA, "%s: tensor '%.120s...': expected a name of at most %d "
                          "bytes, found %zu", w->d->path, rel, DUMP_MAX_NAME,
                          strlen(prefix) + strlen(rel));
    dump_item *it = new_item(w->d);
    char name[DUMP_MAX_NAME + 1];
    snprintf(name, sizeof name, "%s%s", prefix, rel);
    if (!it || !(it->t.name = strdup(name)))
        return qerror_set(w->e, QERR_SOFTWARE, "out of memory");
    w->d->n++;
    return describe(w->d, it, full, w->e);
}

static herr_t visit(hid_t group, const char *name, const H5L_info_t *info, void *ud);

static int walk_group(walk_ctx *w, const char *full)
{
    if (++w->depth > MAX_DEPTH)
        return qerror_set(w->e, QERR_DATA, "%s: group '%.200s%s': expected groups nested at most %d "
                          "deep, found deeper", w->d->path, full, strlen(full) > 200 ? "..." : "",
                          MAX_DEPTH);
    char saved[sizeof w->prefix];
    memcpy(saved, w->prefix, sizeof saved);
    snprintf(w->prefix, sizeof w->prefix, "%s", full);
    hid_t g = H5Gopen2(w->d->file, full[0] ? full : "/", H5P_DEFAULT);
    herr_t rc = g < 0 ? -1 : H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, visit, w);
    char why[256];
    if (rc < 0) /* before H5Gclose clears HDF5's error stack */
        h5_reason(why, sizeof why);
    if (g >= 0)
        H5Gclose(g);
    memcpy(w->prefix, saved, sizeof saved);
    w->depth--;
    if (rc < 0 && !w->failed) {
        return qerror_set(w->e, QERR_DATA, "%s: cannot list '%s': %s", w->d->path,
                          full[0] ? full : "/", why);
    }
    return w->failed ? -1 : 0;
}

/* Whole-file mode skips what qcal itself or strategies keep beside the activations. */
static int reserved_root_group(const walk_ctx *w, const char *full)
{
    static const char *const skip[] = {"/weights", "/layers", "/calibration", "/statistics", NULL};
    for (const char *const *s = skip; !w->strict && *s; s++)
        if (!strcmp(full, *s))
            return 1;
    return 0;
}

static herr_t visit(hid_t group, const char *name, const H5L_info_t *info, void *ud)
{
    walk_ctx *w = ud;
    (void)info;
    char full[8192];
    snprintf(full, sizeof full, "%s/%s", w->prefix, name);
    hid_t o = H5Oopen(group, name, H5P_DEFAULT);
    char why[256] = "";
    if (o < 0)
        h5_reason(why, sizeof why);
    H5I_type_t type = o < 0 ? H5I_BADID : H5Iget_type(o);
    if (o >= 0)
        H5Oclose(o);
    const char *rel = full + strlen(w->base) + 1;
    int rc = 0;
    if (o < 0 && w->strict) { /* a dangling or looping link: a tensor the dump lost */
        w->failed = 1;
        qerror_set(w->e, QERR_DATA, "%s: '%.300s': expected a tensor or a group, found a link "
                   "that leads nowhere (%s)", w->d->path, full, why);
        return -1;
    }
    if (type == H5I_GROUP && !reserved_root_group(w, full))
        rc = walk_group(w, full);
    else if (type == H5I_DATASET)
        rc = add_dataset(w, full, rel);
    if (rc)
        w->failed = 1;
    return rc ? -1 : 0;
}

/* ---- /layers: the layers strategies judge ranges by, checked against the tensors ------- */

static long long attr_int_or(hid_t obj, const char *name, long long def)
{
    if (H5Aexists(obj, name) <= 0)
        return def;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    long long v = def;
    if (H5Aread(a, H5T_NATIVE_LLONG, &v) < 0)
        v = def;
    H5Aclose(a);
    return v;
}

/* Shape of dataset `name` in group g; returns its rank, or -1 when absent (what, if given,
 * then says "none") or not numeric (what names its type class). */
static int dataset_shape(hid_t g, const char *name, hsize_t *dims, const char **what)
{
    if (what)
        *what = "none";
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return -1;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0)
        return -1;
    hid_t sp = H5Dget_space(ds), type = H5Dget_type(ds);
    if (what)
        *what = class_name(H5Tget_class(type));
    H5Tclose(type);
    int rank = is_numeric(ds) ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rank > 0 && rank <= H5S_MAX_RANK)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    return rank;
}

/* The input feature count a weight must match: last axis (linear), channel axis (conv2d). */
static int check_weight(const dump *d, const char *layer, int conv, const dump_tensor *in,
                        hid_t g, qerror *e)
{
    hsize_t w[H5S_MAX_RANK], b[H5S_MAX_RANK];
    const char *what;
    int rank = dataset_shape(g, "weight", w, &what), want = conv ? 4 : 2;
    if (rank < 0)
        return qerror_set(e, QERR_DATA, "%s: layer '%s': expected a numeric dataset weight of rank "
                          "%d, found %s", d->path, layer, want, what);
    if (rank != want)
        return qerror_set(e, QERR_DATA, "%s: layer '%s': expected a numeric dataset weight of rank "
                          "%d, found rank %d", d->path, layer, want, rank);
    if (conv && in->rank != 4)
        return qerror_set(e, QERR_DATA, "%s: layer '%s': a conv2d takes samples [C, H, W]: expected "
                          "input '%s' of rank 4 (with its sample axis), found rank %d", d->path,
                          layer, in->name, in->rank);
    long long groups = conv ? attr_int_or(g, "groups", 1) : 1;
    uint64_t features = conv ? (in->rank == 4 ? in->dims[1] : 0) : in->dims[in->rank - 1];
    if (groups < 1 || (uint64_t)groups * w[1] != features || w[0] % (uint64_t)groups)
        return qerror_set(e, QERR_DATA, "%s: layer '%s': weight [%llu, %llu, ...] with groups %lld "
                          "does not fit input '%s' of %llu features", d->path, layer,
                          (unsigned long long)w[0], (unsigned long long)w[1], groups, in->name,
                          (unsigned long long)features);
    int brank = dataset_shape(g, "bias", b, NULL);
    if (H5Lexists(g, "bias", H5P_DEFAULT) > 0 && (brank != 1 || b[0] != w[0]))
        return qerror_set(e, QERR_DATA, "%s: layer '%s': expected bias [%llu], found another shape",
                          d->path, layer, (unsigned long long)w[0]);
    return 0;
}

static herr_t check_layer(hid_t layers, const char *name, const H5L_info_t *info, void *ud)
{
    (void)info;
    void **args = ud;
    const dump *d = args[0];
    qerror *e = args[1];
    hid_t g = H5Gopen2(layers, name, H5P_DEFAULT);
    if (g < 0)
        return qerror_set(e, QERR_DATA, "%s: /layers/%s: expected a group", d->path, name);
    int bad_type, bad_input;
    char *type = h5_attr_string(g, "type", &bad_type), *input = h5_attr_string(g, "input", &bad_input);
    int conv = type && !strcmp(type, "conv2d");
    long t = input ? dump_find(d, input) : -1;
    int rc = 0;
    if (!type || (!conv && strcmp(type, "linear")))
        rc = qerror_set(e, QERR_DATA, "%s: layer '%s': expected type 'linear' or 'conv2d', found "
                        "'%s'", d->path, name, type ? type : "none");
    else if (!input)
        rc = qerror_set(e, QERR_DATA, "%s: layer '%s': expected a string attribute input naming "
                        "a tensor of the dump, found %s", d->path, name,
                        H5Aexists(g, "input") > 0 ? "an attribute of another type" : "none");
    else if (t < 0)
        rc = qerror_set(e, QERR_DATA, "%s: layer '%s': expected input to name a tensor of the "
                        "dump, found '%s'", d->path, name, input);
    else
        rc = check_weight(d, name, conv, dump_get(d, (size_t)t), g, e);
    free(type);
    free(input);
    H5Gclose(g);
    return rc ? -1 : 0;
}

static int check_layers(dump *d, qerror *e)
{
    if (H5Lexists(d->file, "layers", H5P_DEFAULT) <= 0)
        return 0;
    hid_t g = H5Gopen2(d->file, "layers", H5P_DEFAULT);
    void *args[2] = {d, e};
    qerror_clear(e);
    herr_t rc = g < 0 ? -1 : H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, check_layer, args);
    if (g >= 0)
        H5Gclose(g);
    if (rc < 0 && (!e || !e->code))
        return qerror_set(e, QERR_DATA, "%s: /layers: expected a group of layer groups", d->path);
    return rc < 0 ? -1 : 0;
}

/* ---- opening -------------------------------------------------------------------------- */

static int cmp_items(const void *a, const void *b)
{
    return strcmp(((const dump_item *)a)->t.name, ((const dump_item *)b)->t.name);
}

/* The descriptor HDF5 reads the file through (its default driver, sec2), for mapping: a
 * second descriptor of our own would halve how many files a dump may span before the
 * process's limit. HDF5 owns it (closed with the file); -1, and values are read through
 * HDF5, under any other driver. */
static int hdf5_descriptor(hid_t file)
{
    hid_t fapl = H5Fget_access_plist(file);
    void *handle = NULL;
    int sec2 = fapl >= 0 && H5Pget_driver(fapl) == H5FD_SEC2;
    int fd = sec2 && H5Fget_vfd_handle(file, fapl, &handle) >= 0 && handle ? *(int *)handle : -1;
    if (fapl >= 0)
        H5Pclose(fapl);
    return fd;
}

static int open_file(dump *d, qerror *e)
{
    if (access(d->path, R_OK) != 0)
        return qerror_set(e, QERR_NOINPUT, "%s: cannot open: %s", d->path, strerror(errno));
    struct stat st;
    if (stat(d->path, &st) == 0 && S_ISDIR(st.st_mode))
        return qerror_set(e, QERR_NOINPUT, "%s: expected an HDF5 file, found a directory", d->path);
    if (stat(d->path, &st) == 0 && !S_ISREG(st.st_mode)) /* a FIFO would block for ever */
        return qerror_set(e, QERR_NOINPUT, "%s: expected an HDF5 file, found %s", d->path,
                          S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISSOCK(st.st_mode) ? "a socket"
                                                                  : "a device");
    htri_t is_h5 = H5Fis_hdf5(d->path);
    if (is_h5 <= 0)
        return qerror_set(e, QERR_DATA, "%s: expected an HDF5 file, found %s", d->path,
                          is_h5 == 0 ? "no HDF5 signature (file signature not found)"
                                     : "an unreadable file");
    char why[256];
    d->file = h5_open_read(d->path, why, sizeof why);
    if (d->file < 0) {
        return qerror_set(e, QERR_DATA, "%s: cannot open as HDF5: %s%s", d->path, why,
                          strstr(why, "unable to lock") ? " (is a writer still open? HDF5_USE_FILE_LOCKING="
                                                "FALSE skips the lock)" : "");
    }
    d->fd = hdf5_descriptor(d->file);
    return 0;
}

static int open_at(const char *path, int weights, dump **out, qerror *e);
static int open_guarded(const char *path, int weights, dump **out, qerror *e)
{
    const char *guard = h5_guard_enter(path);
    int rc = open_at(path, weights, out, e);
    h5_guard_leave(guard);
    return rc;
}

int dump_open(const char *path, dump **out, qerror *e)
{
    return open_guarded(path, 0, out, e);
}

int dump_open_weights(const char *path, dump **out, qerror *e)
{
    return open_guarded(path, 1, out, e);
}

int dump_has_weights(const dump *d)
{
    if (d->n_parts)
        return dump_has_weights(d->parts[0]);
    return d->file >= 0 && H5Lexists(d->file, "weights", H5P_DEFAULT) > 0;
}

static int open_at(const char *path, int weights, dump **out, qerror *e)
{
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    dump *d = blank_dump();
    if (!d || !(d->path = strdup(path))) {
        free(d);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    d->weights = weights;
    const char *group = weights ? "weights" : "activations";
    int rc = open_file(d, e);
    int has_group = !rc && H5Lexists(d->file, group, H5P_DEFAULT) > 0;
    if (!rc && weights && !has_group)
        rc = qerror_set(e, QERR_DATA, "%s: expected a /weights group (weights per layer), found "
                        "none", path);
    if (!rc) {
        walk_ctx w = {.d = d, .base = has_group ? (weights ? "/weights" : "/activations") : "",
                      .strict = has_group, .e = e};
        rc = walk_group(&w, w.base);
    }
    if (!rc && d->n == 0)
        rc = qerror_set(e, QERR_DATA, "%s: expected numeric datasets under /%s%s, found none",
                        path, group, weights ? "" : " (or anywhere in the file)");
    if (rc) {
        dump_close(d);
        return -1;
    }
    qsort(d->items, d->n, sizeof *d->items, cmp_items);
    if (!weights && check_layers(d, e)) {
        dump_close(d);
        return -1;
    }
    *out = d;
    return 0;
}

void dump_close(dump *d)
{
    if (!d)
        return;
    for (size_t k = 0; k < d->n_parts; k++)
        dump_close(d->parts[k]);
    free(d->parts);
    free(d->source);
    for (size_t i = 0; i < d->n; i++)
        item_release(&d->items[i]);
    if (d->file >= 0)
        h5_close_read(d->file);
    free(d->items);
    free(d->path);
    free(d);
}

/* ---- virtual dumps: tensors described by saved statistics, no values ------------------ */

int dump_new_virtual(const char *label, dump **out, qerror *e)
{
    dump *d = blank_dump();
    if (!d || !(d->path = strdup(label))) {
        free(d);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    *out = d;
    return 0;
}

int dump_add_virtual(dump *d, const dump_tensor *t, qerror *e)
{
    dump_item *it = new_item(d);
    if (!it)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    it->t = *t;
    it->t.name = strdup(t->name);
    it->t.orig_name = strdup(t->orig_name ? t->orig_name : t->name);
    it->t.op_type = t->op_type ? strdup(t->op_type) : NULL;
    it->t.elem_size = dump_elem_size(t->dtype);
    d->n++;
    if (!it->t.name || !it->t.orig_name || (t->op_type && !it->t.op_type))
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    /* tensors mostly come in name order: sort only when this one is not (2000 tensors) */
    if (d->n > 1 && cmp_items(&d->items[d->n - 2], &d->items[d->n - 1]) > 0)
        qsort(d->items, d->n, sizeof *d->items, cmp_items);
    return 0;
}

/* ---- access --------------------------------------------------------------------------- */

const char *dump_path(const dump *d) { return d->n_parts ? d->parts[0]->path : d->path; }
const char *dump_source(const dump *d) { return d->source ? d->source : d->path; }
size_t dump_file_count(const dump *d) { return d->n_parts ? d->n_parts : 1; }
size_t dump_count(const dump *d) { return d->n; }
const dump_tensor *dump_get(const dump *d, size_t i) { return &d->items[i].t; }

long dump_find(const dump *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->items[i].t.name, name))
            return (long)i;
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->items[i].t.orig_name, name))
            return (long)i;
    return -1;
}

uint64_t dump_slab_rows(const dump *d, size_t i, size_t slab_bytes)
{
    const dump_tensor *t = &d->items[i].t;
    uint64_t rows = slab_bytes / (t->row_size * sizeof(float));
    if (t->chunk_rows)
        rows = rows < t->chunk_rows ? t->chunk_rows : rows - rows % t->chunk_rows;
    if (rows < 1)
        rows = 1;
    return rows > t->dims[0] ? t->dims[0] : rows;
}

static int read_parts(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *raw, qerror *e);

static int read_raw(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *raw, qerror *e)
{
    dump_item *it = &d->items[i];
    if (d->n_parts)
        return read_parts(d, i, row0, nrows, raw, e);
    if (!it->path)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': only saved statistics, no values to "
                          "read", d->path, it->t.name);
    if (nrows == 0 || row0 > it->t.dims[0] || nrows > it->t.dims[0] - row0) /* no wrap */
        return qerror_set(e, QERR_SOFTWARE, "%s: tensor '%s': expected rows within [0, %llu), "
                          "found %llu rows from row %llu", d->path, it->t.name,
                          (unsigned long long)it->t.dims[0], (unsigned long long)nrows,
                          (unsigned long long)row0);
    if (open_item(d, i, e))
        return -1;
    hsize_t start[QCAL_MAX_RANK] = {row0}, count[QCAL_MAX_RANK];
    for (int k = 0; k < it->t.rank; k++)
        count[k] = k ? it->t.dims[k] : nrows;
    herr_t rc;
    char why[256];
    int code = QERR_DATA;
    if (d->weights) { /* the one sample is the whole dataset */
        rc = H5Dread(it->dataset, it->memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw);
        if (rc < 0)
            code = h5_reason_code(why, sizeof why);
    } else {
        hid_t mem = H5Screate_simple(it->t.rank, count, NULL);
        rc = H5Sselect_hyperslab(it->space, H5S_SELECT_SET, start, NULL, count, NULL);
        if (rc >= 0)
            rc = H5Dread(it->dataset, it->memtype, mem, it->space, H5P_DEFAULT, raw);
        if (rc < 0) /* before H5Sclose: every API call begins by clearing the error stack */
            code = h5_reason_code(why, sizeof why);
        H5Sclose(mem);
    }
    if (rc < 0) {
        return qerror_set(e, code, "%s: tensor '%s': cannot read samples %llu to %llu: %s",
                          d->path, it->t.name, (unsigned long long)row0,
                          (unsigned long long)(row0 + nrows - 1), why);
    }
    return 0;
}

int dump_read_raw(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *raw, qerror *e)
{
    const char *guard = h5_guard_enter(d->path);
    int rc = read_raw(d, i, row0, nrows, raw, e);
    h5_guard_leave(guard);
    return rc;
}

const packed_form *dump_packed_form(const dump *d, size_t i)
{
    return d->n_parts || d->weights || !d->items[i].packable ? NULL : &d->items[i].form;
}

/* One stored chunk of the slab into the buffer: 0, 1 when it is not there to copy (never
 * written: HDF5 supplies the fill value) or does not fit, -1 on error. */
static int copy_chunk(dump *d, dump_item *it, packed_chunk *c, unsigned char *data, size_t room,
                      qerror *e)
{
    hsize_t offset[QCAL_MAX_RANK], bytes = 0;
    for (int k = 0; k < it->t.rank; k++)
        offset[k] = c->offset[k];
    if (H5Dget_chunk_storage_size(it->dataset, offset, &bytes) < 0 || bytes == 0 || bytes > room)
        return 1;
    uint32_t mask = 0;
    if (H5Dread_chunk(it->dataset, H5P_DEFAULT, offset, &mask, data) < 0) {
        char why[256];
        int code = h5_reason_code(why, sizeof why);
        return qerror_set(e, code, "%s: tensor '%s': cannot read the chunk at sample %llu: %s",
                          d->path, it->t.name, (unsigned long long)offset[0], why);
    }
    c->bytes = bytes, c->mask = mask;
    return 0;
}

/* The offset of the j-th chunk of the block starting at row0 (last axis fastest). */
static void chunk_offset(const packed_form *f, uint64_t row0, uint64_t j, uint64_t *offset)
{
    memset(offset, 0, QCAL_MAX_RANK * sizeof *offset);
    offset[0] = row0;
    for (int k = f->rank - 1; k >= 1; k--) {
        uint64_t across = (f->dims[k] + f->chunk[k] - 1) / f->chunk[k];
        offset[k] = (j % across) * f->chunk[k];
        j /= across;
    }
}

static int read_packed(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *buf, size_t cap,
                       qerror *e)
{
    dump_item *it = &d->items[i];
    if (!dump_packed_form(d, i) || nrows == 0 || row0 > it->t.dims[0] ||
        nrows > it->t.dims[0] - row0)
        return 1;
    const packed_form *f = &it->form;
    uint64_t c0, c1;
    packed_chunk_span(f, row0, nrows, &c0, &c1);
    uint64_t n = (c1 - c0) * f->per_block;
    size_t used = packed_head_bytes(n);
    if (used > cap || open_item(d, i, e))
        return used > cap ? 1 : -1;
    packed_slab *head = buf;
    *head = (packed_slab){.row0 = row0, .nrows = nrows, .n_chunks = n};
    packed_chunk *chunks = (packed_chunk *)(head + 1);
    for (uint64_t k = 0; k < n; k++) {
        chunks[k] = (packed_chunk){0};
        chunk_offset(f, (c0 + k / f->per_block) * f->chunk_rows, k % f->per_block, chunks[k].offset);
        int rc = copy_chunk(d, it, &chunks[k], (unsigned char *)buf + used, cap - used, e);
        if (rc)
            return rc;
        used += chunks[k].bytes;
    }
    return 0;
}

int dump_read_packed(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *buf, size_t cap,
                     qerror *e)
{
    const char *guard = h5_guard_enter(d->path);
    int rc = read_packed(d, i, row0, nrows, buf, cap, e);
    h5_guard_leave(guard);
    return rc;
}

int dump_is_weight_name(const char *name)
{
    return !strncmp(name, DUMP_WEIGHT_PREFIX, strlen(DUMP_WEIGHT_PREFIX));
}

/* ---- several files as one dump --------------------------------------------------------- */

/* Rows [row0, row0 + nrows) of the concatenation: each file serves its share (tensor i is the
 * same tensor in every part: dump_open_many checked the names match one to one). */
static int read_parts(dump *d, size_t i, uint64_t row0, uint64_t nrows, void *raw, qerror *e)
{
    const dump_tensor *t = &d->items[i].t;
    if (nrows == 0 || row0 > t->dims[0] || nrows > t->dims[0] - row0)
        return qerror_set(e, QERR_SOFTWARE, "%s: tensor '%s': expected rows within [0, %llu), "
                          "found %llu rows from row %llu", d->source, t->name,
                          (unsigned long long)t->dims[0], (unsigned long long)nrows,
                          (unsigned long long)row0);
    char *out = raw;
    size_t row_bytes = (size_t)t->row_size * t->elem_size;
    for (size_t k = 0; k < d->n_parts && nrows; k++) {
        uint64_t have = d->parts[k]->items[i].t.dims[0];
        if (row0 >= have) {
            row0 -= have;
            continue;
        }
        uint64_t take = nrows < have - row0 ? nrows : have - row0;
        if (dump_read_raw(d->parts[k], i, row0, take, out, e))
            return -1;
        out += take * row_bytes;
        nrows -= take;
        row0 = 0;
    }
    return 0;
}

static void format_trailing(const dump_tensor *t, char *buf, size_t size)
{
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int k = 1; k < t->rank && len < size; k++)
        len += (size_t)snprintf(buf + len, size - len, "%s%llu", k > 1 ? ", " : "",
                                (unsigned long long)t->dims[k]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

/* Tensor `t` of file `path` against the same tensor of the first file. */
static int check_same_tensor(const dump_tensor *first, const dump_tensor *t, const char *path,
                             const char *first_path, qerror *e)
{
    char want[256], got[256];
    format_trailing(first, want, sizeof want);
    format_trailing(t, got, sizeof got);
    if (strcmp(want, got) || t->rank != first->rank)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected the trailing shape %s of %s, "
                          "found %s", path, t->name, want, first_path, got);
    if (t->dtype != first->dtype)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected dtype %s as in %s, found %s",
                          path, t->name, dump_dtype_name(first->dtype), first_path,
                          dump_dtype_name(t->dtype));
    if (t->channel_axis != first->channel_axis)
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected channel axis %d as in %s, "
                          "found %d", path, t->name, first->channel_axis, first_path,
                          t->channel_axis);
    const char *want_name = first->orig_name ? first->orig_name : first->name;
    const char *got_name = t->orig_name ? t->orig_name : t->name;
    if (strcmp(want_name, got_name)) /* else the exports' name would depend on the files' order */
        return qerror_set(e, QERR_DATA, "%s: tensor '%s': expected the name '%s' as in %s, found "
                          "'%s'", path, t->name, want_name, first_path, got_name);
    return 0;
}

static int has_tensor(const dump *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->items[i].t.name, name))
            return 1;
    return 0;
}

/* The first tensor name dump a has and b lacks, or NULL. */
static const char *missing_name(const dump *a, const dump *b)
{
    for (size_t i = 0; i < a->n; i++) {
        const char *name = a->items[i].t.name;
        if (!(i < b->n && !strcmp(name, b->items[i].t.name)) && !has_tensor(b, name))
            return name;
    }
    return NULL;
}

static int check_part(const dump *first, const dump *part, qerror *e)
{
    const char *name = missing_name(first, part);
    if (name)
        return qerror_set(e, QERR_DATA, "%s: expected tensor '%s' (it is in %s), found none",
                          part->path, name, first->path);
    if ((name = missing_name(part, first)))
        return qerror_set(e, QERR_DATA, "%s: tensor '%s' is not in %s (the first file): every "
                          "file must hold the same tensors", part->path, name, first->path);
    for (size_t i = 0; i < first->n; i++)
        if (check_same_tensor(&first->items[i].t, &part->items[i].t, part->path, first->path, e))
            return -1;
    return 0;
}

static char *join_paths(const char *const *paths, size_t n)
{
    size_t len = 1;
    for (size_t k = 0; k < n; k++)
        len += strlen(paths[k]) + 2;
    char *s = malloc(len);
    if (!s)
        return NULL;
    s[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        if (k)
            strcat(s, ", ");
        strcat(s, paths[k]);
    }
    return s;
}

/* The tensors of the concatenation: the first file's, with the summed sample counts. */
static int describe_whole(dump *d, qerror *e)
{
    const dump *first = d->parts[0];
    for (size_t i = 0; i < first->n; i++) {
        dump_tensor t = first->items[i].t;
        for (size_t k = 1; k < d->n_parts; k++) {
            uint64_t more = d->parts[k]->items[i].t.dims[0];
            if (t.dims[0] > UINT64_MAX / 2 - more)
                return qerror_set(e, QERR_DATA, "%s: tensor '%s': too many samples in all",
                                  d->source, t.name);
            t.dims[0] += more;
        }
        if (dump_add_virtual(d, &t, e))
            return -1;
    }
    return 0;
}

/* The same file named twice (or through a link) would count its samples twice. */
static int named_twice(const char *const *paths, size_t n, qerror *e)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            struct stat a, b;
            if (stat(paths[i], &a) == 0 && stat(paths[j], &b) == 0 && a.st_dev == b.st_dev &&
                a.st_ino == b.st_ino)
                return qerror_set(e, QERR_USAGE, "'%s' and '%s' are the same dump file: its "
                                  "samples would count twice", paths[i], paths[j]);
        }
    return 0;
}

int dump_open_many(const char *const *paths, size_t n, dump **out, qerror *e)
{
    *out = NULL;
    if (n == 0)
        return qerror_set(e, QERR_USAGE, "expected at least one dump file, found none");
    if (named_twice(paths, n, e))
        return -1;
    if (n == 1)
        return dump_open(paths[0], out, e);
    dump *d = blank_dump();
    if (!d || !(d->parts = calloc(n, sizeof *d->parts)) || !(d->source = join_paths(paths, n)) ||
        !(d->path = strdup(paths[0]))) {
        dump_close(d);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++, d->n_parts++)
        rc = dump_open(paths[k], &d->parts[k], e) || (k && check_part(d->parts[0], d->parts[k], e));
    if (!rc)
        rc = describe_whole(d, e);
    if (rc) {
        dump_close(d);
        return -1;
    }
    *out = d;
    return 0;
}
