/* bench_read.c - benchmark helper: make a large dump, read it with plain HDF5 calls (the
 * baseline), and time a command with its peak resident memory.
 *
 *   bench_read make DUMP GIB [TENSORS [KIND]]  write a dump of about GIB GiB of values (as
 *                      float32); KIND: f32 (default), f16, bf16, gzip (deflate level 1),
 *                      gzip-shuffle (shuffle, then deflate), small (2,000 tensors of 4 KiB rows),
 *                      f32-contiguous (float32, contiguous storage: what qcal maps)
 *   bench_read read DUMP    plain HDF5 read of every tensor in whole chunks (contiguous: in
 *                           slabs of about 4 MiB), in the file's own
 *                           type (16-bit values stay raw; filters run in HDF5's pipeline)
 *   bench_read inflate DUMP the chunks of a gzip dump read raw (H5Dread_chunk) and inflated with
 *                           zlib alone, unshuffled where shuffled: what decompression costs
 *   bench_read evict DUMP   drop the file's pages from the page cache (a cold read follows)
 *   bench_read time -- CMD ARGS...  run CMD (stdout discarded); print "seconds peak_rss_kib"
 */
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_ZLIB
#include <zlib.h>
#endif

enum { KIND_F32, KIND_F16, KIND_BF16, KIND_GZIP, KIND_GZIP_SHUFFLE, KIND_SMALL, KIND_CONTIG };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A block of GELU-like, ReLU'd or heavy-tailed values, reused with per-chunk scaling. */
static void fill_block(float *x, size_t n, int kind, uint64_t seed)
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((double)(rng(&seed) >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (double)(rng(&seed) >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        double g[2] = {r * cos(6.283185307179586 * u2), r * sin(6.283185307179586 * u2)};
        for (int k = 0; k < 2 && i + (size_t)k < n; k++) {
            double v = g[k];
            if (kind == 0)
                v = v * 0.5 * (1.0 + erf(v / 1.4142135623730951)); /* GELU */
            else if (kind == 1)
                v = v > 0 ? v : 0; /* ReLU */
            else if ((rng(&seed) & 1023) == 0)
                v *= 20; /* rare outliers */
            x[i + (size_t)k] = (float)v;
        }
    }
}

/* float32 to IEEE binary16, rounding to nearest even (values here are far from its limits). */
static uint16_t to_f16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u, mag = b & 0x7fffffffu;
    if (mag >= 0x47800000u) /* overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (mag < 0x38800000u) { /* subnormal or zero: scale into place */
        float a = fabsf(f) * 16777216.0f; /* 2^24: units of the least subnormal */
        return (uint16_t)(sign | (uint32_t)lrintf(a));
    }
    uint32_t r = mag - 0x38000000u; /* rebias 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

static uint16_t to_bf16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

/* The file type of a kind: float32, or 16-bit floats described field by field. */
static hid_t file_type(int kind)
{
    if (kind != KIND_F16 && kind != KIND_BF16)
        return H5Tcopy(H5T_IEEE_F32LE);
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    int mant = kind == KIND_F16 ? 10 : 7, exp = kind == KIND_F16 ? 5 : 8;
    H5Tset_fields(t, 15, (size_t)mant, (size_t)exp, 0, (size_t)mant);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, kind == KIND_F16 ? 15 : 127);
    return t;
}

/* Writes one chunk-row block of values: float32 as is, 16-bit kinds converted here (HDF5's own
 * float16 conversion is far too slow to write gigabytes). */
static void write_rows(hid_t ds, hid_t space, hid_t ftype, int kind, const hsize_t start[3],
                       const hsize_t count[3], const float *x, size_t n, uint16_t *half)
{
    hid_t mem = H5Screate_simple(3, count, NULL);
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
    if (kind == KIND_F16 || kind == KIND_BF16) {
        for (size_t i = 0; i < n; i++)
            half[i] = kind == KIND_F16 ? to_f16(x[i]) : to_bf16(x[i]);
        H5Dwrite(ds, ftype, mem, space, H5P_DEFAULT, half);
    } else {
        H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, x);
    }
    H5Sclose(mem);
}

static hid_t creation_plist(int kind, const hsize_t chunk[3])
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (kind != KIND_CONTIG) /* contiguous: h5py's default layout, which qcal maps */
        H5Pset_chunk(dcpl, 3, chunk);
    if (kind == KIND_GZIP_SHUFFLE)
        H5Pset_shuffle(dcpl);
    if (kind == KIND_GZIP || kind == KIND_GZIP_SHUFFLE)
        H5Pset_deflate(dcpl, 1);
    return dcpl;
}

static int make_tensor(hid_t group, const char *name, const hsize_t dims[3], int dist, int kind)
{
    hsize_t row = dims[1] * dims[2];
    hsize_t chunk_rows = row * 4 >= (1 << 20) ? 1 : (1 << 20) / (row * 4);
    chunk_rows = chunk_rows < dims[0] ? chunk_rows : dims[0]; /* about 1 MiB, within the tensor */
    hsize_t chunk[3] = {chunk_rows, dims[1], dims[2]};
    hid_t space = H5Screate_simple(3, dims, NULL), dcpl = creation_plist(kind, chunk);
    hid_t ftype = file_type(kind);
    hid_t ds = H5Dcreate2(group, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds < 0)
        return -1;
    size_t n = (size_t)(chunk_rows * row);
    float *block = malloc(n * sizeof *block), *scaled = malloc(n * sizeof *scaled);
    uint16_t *half = malloc(n * sizeof *half);
    fill_block(block, n, dist, (uint64_t)dist * 977 + dims[0]);
    for (hsize_t r0 = 0; r0 < dims[0]; r0 += chunk_rows) {
        hsize_t start[3] = {r0, 0, 0}, count[3] = {dims[0] - r0 < chunk_rows ? dims[0] - r0 : chunk_rows, dims[1], dims[2]};
        float s = 1.0f + 0.001f * (float)(r0 % 97);
        for (size_t i = 0; i < n; i++)
            scaled[i] = block[i] * s;
        write_rows(ds, space, ftype, kind, start, count, scaled, (size_t)(count[0] * row), half);
    }
    hid_t aspace = H5Screate(H5S_SCALAR), attr;
    long long axis = 1;
    attr = H5Acreate2(ds, "channel_axis", H5T_STD_I64LE, aspace, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, H5T_NATIVE_LLONG, &axis);
    H5Aclose(attr);
    H5Sclose(aspace);
    free(block);
    free(scaled);
    free(half);
    H5Dclose(ds);
    H5Tclose(ftype);
    H5Pclose(dcpl);
    H5Sclose(space);
    return 0;
}

static int kind_of(const char *name)
{
    static const char *const names[] = {"f32", "f16", "bf16", "gzip", "gzip-shuffle", "small",
                                        "f32-contiguous"};
    for (int k = 0; k < 7; k++)
        if (!strcmp(name, names[k]))
            return k;
    return -1;
}

static int cmd_make(const char *path, double gib, int tensors, int kind)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0 || kind < 0 || tensors < 1)
        return 1;
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double per_tensor = gib * 1073741824.0 / tensors;
    static const hsize_t shapes[3][2] = {{64, 28 * 28}, {128, 768}, {256, 196}};
    static const hsize_t small[3][2] = {{16, 64}, {8, 128}, {32, 32}}; /* 4 KiB rows */
    for (int t = 0; t < tensors; t++) {
        const hsize_t *s = kind == KIND_SMALL ? small[t % 3] : shapes[t % 3];
        hsize_t dims[3] = {(hsize_t)ceil(per_tensor / (4.0 * (double)(s[0] * s[1]))), s[0], s[1]};
        char name[64];
        snprintf(name, sizeof name, "layers.%d.%s", t, t % 3 == 0 ? "conv.input" : t % 3 == 1 ? "mlp.fc2.input" : "attn.out");
        if (make_tensor(g, name, dims, t % 3, kind == KIND_SMALL ? KIND_F32 : kind))
            return 1;
    }
    H5Gclose(g);
    return H5Fclose(f) < 0;
}

static herr_t read_one(hid_t group, const char *name, const H5L_info_t *info, void *total)
{
    (void)info;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 0, 0, 1.0); /* the fastest plain setting for unfiltered chunks */
    hid_t ds = H5Dopen2(group, name, dapl), space = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
    hsize_t dims[8], chunk[8];
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    hsize_t row = 1, step = 1;
    for (int i = 1; i < rank; i++)
        row *= dims[i];
    if (H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 8, chunk) > 0)
        step = chunk[0]; /* whole chunks; contiguous storage: any rows */
    hsize_t rows = step;
    while ((rows + step) * row * 4 <= (4u << 20))
        rows += step;
    hid_t type = H5Dget_type(ds); /* the file's own: no conversion, the read limit */
    size_t esize = H5Tget_size(type);
    char *buf = malloc(rows * row * esize);
    for (hsize_t r0 = 0; r0 < dims[0]; r0 += rows) {
        hsize_t start[8] = {r0}, count[8];
        for (int i = 0; i < rank; i++)
            count[i] = i ? dims[i] : (dims[0] - r0 < rows ? dims[0] - r0 : rows);
        hid_t mem = H5Screate_simple(rank, count, NULL);
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
        H5Dread(ds, type, mem, space, H5P_DEFAULT, buf);
        H5Sclose(mem);
        *(double *)total += (double)(count[0] * row * esize);
    }
    free(buf);
    H5Tclose(type);
    H5Pclose(dcpl);
    H5Pclose(dapl);
    H5Sclose(space);
    H5Dclose(ds);
    return 0;
}

/* Runs op on every tensor of the dump (op adds the bytes it produced), then says how many. */
static int each_tensor(const char *path, H5L_iterate_t op, const char *verb)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return 1;
    hid_t g = H5Gopen2(f, "activations", H5P_DEFAULT);
    double total = 0;
    herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, op, &total);
    H5Gclose(g);
    H5Fclose(f);
    if (rc < 0)
        return 1;
    fprintf(stderr, "%s %.0f MiB\n", verb, total / 1048576.0);
    return 0;
}

#ifdef HAVE_ZLIB
/* Undoes HDF5's shuffle filter: byte j of element i was stored at j * n + i. */
static void unshuffle(const unsigned char *in, unsigned char *out, size_t n, size_t esize)
{
    for (size_t j = 0; j < esize; j++)
        for (size_t i = 0; i < n; i++)
            out[i * esize + j] = in[j * n + i];
}

static herr_t inflate_one(hid_t group, const char *name, const H5L_info_t *info, void *total)
{
    (void)info;
    hid_t ds = H5Dopen2(group, name, H5P_DEFAULT), dcpl = H5Dget_create_plist(ds);
    hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
    hsize_t dims[8], chunk[8], n_chunks = 0;
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    H5Pget_chunk(dcpl, 8, chunk);
    int shuffled = H5Pget_nfilters(dcpl) > 1;
    size_t esize = H5Tget_size(type), values = 1;
    for (int i = 0; i < rank; i++)
        values *= chunk[i];
    unsigned char *raw = malloc(compressBound(values * esize)), *out = malloc(values * esize);
    unsigned char *tmp = malloc(values * esize);
    H5Dget_num_chunks(ds, space, &n_chunks);
    int failed = 0;
    for (hsize_t c = 0; c < n_chunks; c++) {
        hsize_t offset[8], size;
        unsigned mask;
        haddr_t addr;
        H5Dget_chunk_info(ds, space, c, offset, &mask, &addr, &size);
        uint32_t filters;
        H5Dread_chunk(ds, H5P_DEFAULT, offset, &filters, raw);
        uLongf len = values * esize;
        if (uncompress(shuffled ? tmp : out, &len, raw, size) != Z_OK) {
            fprintf(stderr, "bench_read: %s: a chunk that zlib cannot inflate (not gzip?)\n", name);
            failed = 1;
            break;
        }
        if (shuffled)
            unshuffle(tmp, out, len / esize, esize);
        *(double *)total += (double)len;
    }
    free(raw), free(out), free(tmp);
    H5Tclose(type), H5Sclose(space), H5Pclose(dcpl), H5Dclose(ds);
    return failed ? -1 : 0; /* negative: stops the iteration */
}

#endif

static int cmd_evict(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 1;
    fdatasync(fd);
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return rc != 0;
}

static int cmd_time(char **argv)
{
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) { /* stdout carries our figures only */
        if (!freopen("/dev/null", "w", stdout))
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    printf("%.3f %ld\n", now() - t0, ru.ru_maxrss);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "make"))
        return cmd_make(argv[2], atof(argv[3]), argc >= 5 ? atoi(argv[4]) : 12,
                        argc >= 6 ? kind_of(argv[5]) : KIND_F32);
    if (argc == 3 && !strcmp(argv[1], "read"))
        return each_tensor(argv[2], read_one, "read");
#ifdef HAVE_ZLIB
    if (argc == 3 && !strcmp(argv[1], "inflate"))
        return each_tensor(argv[2], inflate_one, "inflated");
#endif
    if (argc == 3 && !strcmp(argv[1], "evict"))
        return cmd_evict(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "time") && !strcmp(argv[2], "--"))
        return cmd_time(argv + 3);
    fprintf(stderr, "usage: bench_read make DUMP GIB [TENSORS [KIND]] | read DUMP | "
            "inflate DUMP | evict DUMP | time -- CMD...\n");
    return 64;
}
