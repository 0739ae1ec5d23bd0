/* bench_read.c - benchmark helper: make a large dump, read it with plain HDF5 calls (the
 * baseline), and time a command with its peak resident memory.
 *
 *   bench_read make DUMP GIB [TENSORS]   write a float32 dump of about GIB GiB
 *   bench_read read DUMP                 plain HDF5 read of every tensor, in whole chunks
 *   bench_read time -- CMD ARGS...       run CMD (stdout discarded); print "seconds peak_rss_kib"
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

static int make_tensor(hid_t group, const char *name, const hsize_t dims[3], int kind)
{
    hsize_t row = dims[1] * dims[2];
    hsize_t chunk_rows = row * 4 >= (1 << 20) ? 1 : (1 << 20) / (row * 4);
    hsize_t chunk[3] = {chunk_rows, dims[1], dims[2]};
    hid_t space = H5Screate_simple(3, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    hid_t ds = H5Dcreate2(group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    size_t n = (size_t)(chunk_rows * row);
    float *block = malloc(n * sizeof *block), *scaled = malloc(n * sizeof *scaled);
    fill_block(block, n, kind, (uint64_t)kind * 977 + dims[0]);
    for (hsize_t r0 = 0; r0 < dims[0]; r0 += chunk_rows) {
        hsize_t start[3] = {r0, 0, 0}, count[3] = {dims[0] - r0 < chunk_rows ? dims[0] - r0 : chunk_rows, dims[1], dims[2]};
        float s = 1.0f + 0.001f * (float)(r0 % 97);
        for (size_t i = 0; i < n; i++)
            scaled[i] = block[i] * s;
        hid_t mem = H5Screate_simple(3, count, NULL);
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
        H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, scaled);
        H5Sclose(mem);
    }
    hid_t aspace = H5Screate(H5S_SCALAR), attr;
    long long axis = 1;
    attr = H5Acreate2(ds, "channel_axis", H5T_STD_I64LE, aspace, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, H5T_NATIVE_LLONG, &axis);
    H5Aclose(attr);
    H5Sclose(aspace);
    free(block);
    free(scaled);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    return 0;
}

static int cmd_make(const char *path, double gib, int tensors)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return 1;
    hid_t g = H5Gcreate2(f, "activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double per_tensor = gib * 1073741824.0 / tensors;
    static const hsize_t shapes[3][2] = {{64, 28 * 28}, {128, 768}, {256, 196}};
    for (int t = 0; t < tensors; t++) {
        const hsize_t *s = shapes[t % 3];
        hsize_t dims[3] = {(hsize_t)ceil(per_tensor / (4.0 * (double)(s[0] * s[1]))), s[0], s[1]};
        char name[64];
        snprintf(name, sizeof name, "layers.%d.%s", t, t % 3 == 0 ? "conv.input" : t % 3 == 1 ? "mlp.fc2.input" : "attn.out");
        make_tensor(g, name, dims, t % 3);
    }
    H5Gclose(g);
    H5Fclose(f);
    return 0;
}

static herr_t read_one(hid_t group, const char *name, const H5L_info_t *info, void *total)
{
    (void)info;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 0, 0, 1.0); /* the fastest plain setting for unfiltered chunks */
    hid_t ds = H5Dopen2(group, name, dapl), space = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
    hsize_t dims[8], chunk[8];
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    hsize_t row = 1, rows = 1;
    for (int i = 1; i < rank; i++)
        row *= dims[i];
    if (H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 8, chunk) > 0)
        rows = chunk[0];
    while ((rows + chunk[0]) * row * 4 <= (4u << 20))
        rows += chunk[0];
    float *buf = malloc(rows * row * sizeof *buf);
    for (hsize_t r0 = 0; r0 < dims[0]; r0 += rows) {
        hsize_t start[8] = {r0}, count[8];
        for (int i = 0; i < rank; i++)
            count[i] = i ? dims[i] : (dims[0] - r0 < rows ? dims[0] - r0 : rows);
        hid_t mem = H5Screate_simple(rank, count, NULL);
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
        H5Dread(ds, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, buf);
        H5Sclose(mem);
        *(double *)total += (double)(count[0] * row * 4);
    }
    free(buf);
    H5Pclose(dcpl);
    H5Pclose(dapl);
    H5Sclose(space);
    H5Dclose(ds);
    return 0;
}

static int cmd_read(const char *path)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return 1;
    hid_t g = H5Gopen2(f, "activations", H5P_DEFAULT);
    double total = 0;
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, read_one, &total);
    H5Gclose(g);
    H5Fclose(f);
    fprintf(stderr, "read %.0f MiB\n", total / 1048576.0);
    return 0;
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
        return cmd_make(argv[2], atof(argv[3]), argc >= 5 ? atoi(argv[4]) : 12);
    if (argc == 3 && !strcmp(argv[1], "read"))
        return cmd_read(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "time") && !strcmp(argv[2], "--"))
        return cmd_time(argv + 3);
    fprintf(stderr, "usage: bench_read make DUMP GIB [TENSORS] | read DUMP | time -- CMD...\n");
    return 64;
}
