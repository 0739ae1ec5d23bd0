/* test_export.c - `qcal export`: each format written by the command and parsed back here
 * independently (text by hand, JSON with jansson), values checked against torch's grid
 * computed in references.c */
#include <criterion/criterion.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <hdf5.h>

#include "dump.h" /* DUMP_F32 */
#include "fixtures.h"
#include "references.h"

static char *dir, *dump_file, *results_file;
static char text[1 << 16], err_text[4096];

/* Known ranges: an affine activation, a symmetric one, per-channel symmetric narrow weights. */
static const char *const recipe =
    "local qcal = require('qcal')\n"
    "local aff = qcal.spec{ bits = 8 }\n"
    "local sym = qcal.spec{ bits = 8, symmetric = true }\n"
    "local wsp = qcal.spec{ bits = 8, symmetric = true, narrow_range = true, per_channel = true, axis = 1 }\n"
    "qcal.put('a', { method = 'minmax', spec = aff, range = { lo = -1.5, hi = 3.0 } })\n"
    "qcal.put('b', { method = 'kl', spec = sym, range = { lo = -2, hi = 2 } })\n"
    "qcal.put('c', { method = 'minmax', spec = sym, range = { lo = 0, hi = 0 } })\n"
    "qcal.put(qcal.weights()[1], { method = 'minmax', spec = wsp,\n"
    "                              range = { lo = { -3, -7, -0.5 }, hi = { 3, 7, 0.5 } } })\n";

static const double w_t[3] = {3, 7, 0.5};

/* Runs `qcal ARGS`; stdout into text, stderr into err_text; returns the exit status. */
static int qcal(const char *args)
{
    char cmd[4096], out[512], err[512];
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2> '%s' < /dev/null", TEST_QCAL_EXE, args, out, err);
    int status = system(cmd);
    fx_read_text(out, text, sizeof text);
    fx_read_text(err, err_text, sizeof err_text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void setup(void)
{
    static const float a[4 * 3] = {0}, b[4 * 2] = {0}, c[4] = {0}, w[3 * 4] = {0};
    dir = fx_tmpdir();
    dump_file = fx_path(dir, "dump.h5");
    results_file = fx_path(dir, "results.h5");
    fx_dataset ds[] = {
        {.name = "activations/a", .dtype = DUMP_F32, .rank = 2, .dims = {4, 3}, .data = a,
         .channel_axis = FX_NO_ATTR, .orig_name = "/model/conv/Conv_output_0"},
        {.name = "activations/b", .dtype = DUMP_F32, .rank = 2, .dims = {4, 2}, .data = b,
         .channel_axis = FX_NO_ATTR},
        {.name = "activations/c", .dtype = DUMP_F32, .rank = 1, .dims = {4}, .data = c,
         .channel_axis = FX_NO_ATTR},
        {.name = "weights/l1", .dtype = DUMP_F32, .rank = 2, .dims = {3, 4}, .data = w,
         .channel_axis = FX_NO_ATTR},
    };
    cr_assert_eq(fx_write_dump(dump_file, ds, 4, 1), 0);
    char *path = fx_path(dir, "known.lua");
    FILE *f = fopen(path, "w");
    fputs(recipe, f);
    fclose(f);
    char args[2048];
    snprintf(args, sizeof args, "run '%s' '%s' -o '%s'", path, dump_file, results_file);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    free(path);
}

static void teardown(void)
{
    fx_rmtree(dir);
    free(dir), free(dump_file), free(results_file);
}

TestSuite(export, .init = setup, .fini = teardown);

static void export_to_text(const char *format_args)
{
    char args[2048];
    snprintf(args, sizeof args, "export '%s' %s", results_file, format_args);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
}

/* torch's grid for the three results, independently */
static void grid_a(float *s, long long *zp) { ref_grid(-1.5, 3.0, 0, 0, 0, 8, 0, 255, s, zp); }
static void grid_b(float *s, long long *zp) { ref_grid(-2, 2, 1, 1, 0, 8, -128, 127, s, zp); }

/* ---- tpu-mlir ----------------------------------------------------------------------------- */

/* tpu-mlir's reader: a line is a comment or matches \S+\s+[-0-9.e]+\s+[-0-9.e]+\s+[-0-9.e]+ */
static int tpu_line_ok(const char *line)
{
    if (line[0] == '#')
        return 1;
    const char *p = line;
    if (!*p || *p == ' ')
        return 0;
    while (*p && *p != ' ')
        p++;
    for (int field = 0; field < 3; field++) {
        if (*p != ' ')
            return 0;
        while (*p == ' ')
            p++;
        if (!*p || !strchr("-0123456789.e", *p))
            return 0;
        while (*p && strchr("-0123456789.e", *p))
            p++;
    }
    return *p == '\0';
}

Test(export, tpu_mlir_table_parses_as_tpu_mlir_reads_it)
{
    export_to_text("--format tpu-mlir");
    char *save, *line = strtok_r(text, "\n", &save);
    int rows = 0, comments = 0;
    for (; line; line = strtok_r(NULL, "\n", &save)) {
        cr_expect(tpu_line_ok(line), "tpu-mlir would reject: '%s'", line);
        if (line[0] == '#') {
            comments++;
            continue;
        }
        char name[256];
        double t, lo, hi;
        cr_assert_eq(sscanf(line, "%255s %lf %lf %lf", name, &t, &lo, &hi), 4);
        cr_expect(strchr(strchr(line, ' '), 'e') == NULL, "no exponents: %s", line);
        if (!strcmp(name, "/model/conv/Conv_output_0"))
            cr_expect(t == 3.0 && lo == -1.5 && hi == 3.0, "%s", line);
        else if (!strcmp(name, "c")) /* all zero: scale eps on the int8 grid, not a 0 it skips */
            cr_expect(fabs(t - 127.0 * FLT_EPSILON) < 1e-7 && lo == 0 && hi == 0, "%s", line);
        else { /* torch's symmetric int8 grid: the threshold that deploys it is 127 scale */
            float s;
            long long zp;
            grid_b(&s, &zp);
            cr_expect(!strcmp(name, "b") && fabs(t - 127.0 * s) < 1e-7 && lo == -2.0 && hi == 2.0,
                      "%s (127 scale %.7f)", line, 127.0 * s);
        }
        rows++;
    }
    cr_expect_eq(rows, 3, "activations only");
    cr_expect_geq(comments, 2);
}

static double attr_f64_of(const char *file, const char *group, const char *name)
{
    double v = NAN;
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t a = H5Aopen_by_name(f, group, name, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0, "%s %s", group, name);
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    H5Fclose(f);
    return v;
}

/* The values' extremes go to the results (data_min, data_max) from the recipe's statistics,
 * and tpu-mlir's table says a symmetric tensor with no negative value is unsigned (its
 * symmetric import reads only the sign of the min column), as its own tables say of ReLU
 * outputs. An all-zero affine tensor gets tpu-mlir's 1e-5 floor. */
Test(export, tpu_mlir_min_column_is_zero_where_no_value_is_negative)
{
    enum { N = 64 * 8 };
    static float relu[N], gauss[N], zeros[N];
    fx_fill_gauss(gauss, N, 11, 0.5f, 2.0f);
    float relu_max = 0, gauss_min = INFINITY;
    for (int i = 0; i < N; i++) {
        relu[i] = gauss[i] > 0 ? gauss[i] : 0.0f;
        relu_max = fmaxf(relu_max, relu[i]), gauss_min = fminf(gauss_min, gauss[i]);
    }
    fx_dataset ds[] = {
        {.name = "relu", .dtype = DUMP_F32, .rank = 2, .dims = {64, 8}, .data = relu, .channel_axis = FX_NO_ATTR},
        {.name = "signed", .dtype = DUMP_F32, .rank = 2, .dims = {64, 8}, .data = gauss, .channel_axis = FX_NO_ATTR},
        {.name = "zeros", .dtype = DUMP_F32, .rank = 2, .dims = {64, 8}, .data = zeros, .channel_axis = FX_NO_ATTR},
    };
    char *d = fx_path(dir, "signs.h5"), *out = fx_path(dir, "signs_kl.h5"), args[2048];
    cr_assert_eq(fx_write_dump(d, ds, 3, 0), 0);
    snprintf(args, sizeof args, "run kl '%s' -o '%s'", d, out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    cr_expect_eq(attr_f64_of(out, "/calibration/relu", "data_min"), 0.0);
    cr_expect_eq(attr_f64_of(out, "/calibration/relu", "data_max"), (double)relu_max);
    cr_expect_eq(attr_f64_of(out, "/calibration/signed", "data_min"), (double)gauss_min);
    snprintf(args, sizeof args, "export '%s' --format tpu-mlir", out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    char name[64];
    double t, lo, hi;
    const char *line = strstr(text, "\nrelu ");
    cr_assert(line && sscanf(line + 1, "%63s %lf %lf %lf", name, &t, &lo, &hi) == 4, "%s", text);
    cr_expect(lo == 0 && hi > 0 && t > 0, "unsigned: %s", line + 1);
    line = strstr(text, "\nsigned ");
    cr_assert(line && sscanf(line + 1, "%63s %lf %lf %lf", name, &t, &lo, &hi) == 4, "%s", text);
    cr_expect(lo < 0 && lo == -hi, "signed: %s", line + 1);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --force", d, out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "export '%s' --format tpu-mlir", out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    cr_expect(strstr(text, "\nzeros 0.0000100 0.0000000 0.0000000\n"), "%s", text);
    free(d), free(out);
}

/* ---- TensorRT ----------------------------------------------------------------------------- */

static float hex_float(const char *hex)
{
    uint32_t bits = (uint32_t)strtoul(hex, NULL, 16);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

Test(export, tensorrt_cache_holds_the_float32_bits_of_the_scale)
{
    export_to_text("--format tensorrt");
    char *save, *line = strtok_r(text, "\n", &save);
    cr_assert_str_eq(line, "TRT-8601-EntropyCalibration2");
    int rows = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        const char *colon = strchr(line, ':'); /* ONNX Runtime's reader splits at the first ':' */
        cr_assert_not_null(colon, "%s", line);
        cr_assert_eq(strlen(colon + 2), 8u, "eight hex digits: %s", line);
        float scale = hex_float(colon + 2);
        if (!strncmp(line, "/model/conv/Conv_output_0:", 26))
            cr_expect_eq(scale, (float)(3.0 / 127), "%s", line);
        else if (!strncmp(line, "c:", 2)) /* all zero: never a zero scale */
            cr_expect_eq(scale, FLT_EPSILON, "%s", line);
        else { /* a signed 8-bit grid with zero-point 0 is TensorRT's: its own scale */
            float s;
            long long zp;
            grid_b(&s, &zp);
            cr_expect(!strncmp(line, "b:", 2) && scale == s && s == (float)(2.0 / 127.5), "%s", line);
        }
        rows++;
    }
    cr_expect_eq(rows, 3);
    /* 1/127 is 3c010204, as in real caches */
    cr_expect_eq(hex_float("3c010204"), (float)(1.0 / 127));
    export_to_text("--format tensorrt --trt-version 100300 --trt-algorithm MinMaxCalibration");
    cr_expect(!strncmp(text, "TRT-100300-MinMaxCalibration\n", 29), "%s", text);
}

Test(export, tensorrt_refuses_a_name_with_a_colon)
{
    static const float v[4] = {1, 2, 3, 4};
    fx_dataset ds = {.name = "relu", .dtype = DUMP_F32, .rank = 1, .dims = {4}, .data = v,
                     .channel_axis = FX_NO_ATTR, .orig_name = "conv/Relu:0"};
    cr_assert_eq(fx_write_dump(dump_file, &ds, 1, 0), 0);
    char args[2048];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --force", dump_file, results_file);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "export '%s' --format tensorrt -o '%s/cache'", results_file, dir);
    cr_expect_eq(qcal(args), 65, "%s", err_text);
    cr_expect(strstr(err_text, "conv/Relu:0") && strstr(err_text, "':'"), "%s", err_text);
    char cache[512];
    snprintf(cache, sizeof cache, "%s/cache", dir);
    cr_expect(fopen(cache, "r") == NULL, "nothing written");
}

/* JSON holds UTF-8 only: a tensor named in another encoding (here Latin-1's "caf\xe9") is
 * refused with one line by both JSON exports, not written mangled (the toolchain would not find
 * it); the text formats take its bytes, and the report (for people) shows them as '?'. */
Test(export, json_formats_refuse_a_name_that_is_not_utf8)
{
    static const float v[4] = {1, 2, 3, 4};
    fx_dataset ds = {.name = "caf\xe9", .dtype = DUMP_F32, .rank = 1, .dims = {4}, .data = v,
                     .channel_axis = FX_NO_ATTR};
    cr_assert_eq(fx_write_dump(dump_file, &ds, 1, 0), 0);
    char args[2048], path[512];
    snprintf(args, sizeof args, "run minmax '%s' -o '%s' --force", dump_file, results_file);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    const char *formats[2] = {"qnn", "onnxruntime"};
    snprintf(path, sizeof path, "%s/out.json", dir);
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "export '%s' --format %s -o '%s'", results_file, formats[k], path);
        cr_expect_eq(qcal(args), 65, "%s: %s", formats[k], err_text);
        cr_expect(strstr(err_text, "UTF-8") && strstr(err_text, formats[k]) &&
                      strchr(err_text, '\n') == err_text + strlen(err_text) - 1,
                  "one line: %s", err_text);
    }
    cr_expect(fopen(path, "r") == NULL, "nothing written");
    snprintf(args, sizeof args, "export '%s' --format csv", results_file);
    cr_expect_eq(qcal(args), 0, "%s", err_text);
    cr_expect(strstr(text, "\ncaf\xe9,caf\xe9,activation,minmax,"), "%s", text);
    snprintf(path, sizeof path, "%s/r.html", dir);
    snprintf(args, sizeof args, "report '%s' -o '%s'", results_file, path);
    cr_expect_eq(qcal(args), 0, "%s", err_text);
    char *html = fx_read_file(path, NULL);
    cr_expect(html && strstr(html, "\"caf?\""), "the name in the page's data");
    free(html);
}

/* ---- AIMET / QNN ------------------------------------------------------------------------------ */

static json_t *parse(void)
{
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    cr_assert_not_null(root, "line %d: %s", je.line, je.text);
    return root;
}

static double real_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_number(v), "%s is not a number", key);
    return json_number_value(v);
}

/* AIMET: real = (q + offset) scale on [0, 2^bw - 1]: offset = qmin - zp. */
static void expect_legacy(json_t *enc, double scale, long long offset, const char *sym)
{
    cr_expect_eq(json_integer_value(json_object_get(enc, "bitwidth")), 8);
    cr_expect_str_eq(json_string_value(json_object_get(enc, "dtype")), "int");
    cr_expect_str_eq(json_string_value(json_object_get(enc, "is_symmetric")), sym);
    cr_expect_eq(real_of(enc, "scale"), scale);
    cr_expect_eq(json_integer_value(json_object_get(enc, "offset")), offset);
    cr_expect(fabs(real_of(enc, "min") - (double)offset * scale) < 1e-12);
    cr_expect(fabs(real_of(enc, "max") - (double)(offset + 255) * scale) < 1e-12);
}

Test(export, qnn_encodings_legacy_and_1_0_0)
{
    float sa, sb;
    long long za, zb;
    grid_a(&sa, &za), grid_b(&sb, &zb);
    cr_assert_eq(za, 85, "torch: (0.0176, 85)");
    export_to_text("--format qnn");
    json_t *root = parse();
    cr_expect_str_eq(json_string_value(json_object_get(root, "version")), "0.6.1");
    json_t *act = json_object_get(root, "activation_encodings");
    cr_assert_eq(json_object_size(act), 3u);
    json_t *a = json_object_get(act, "/model/conv/Conv_output_0"), *b = json_object_get(act, "b");
    cr_assert(json_array_size(a) == 1 && json_array_size(b) == 1);
    expect_legacy(json_array_get(a, 0), sa, -85, "False");
    expect_legacy(json_array_get(b, 0), sb, -128, "True");
    json_t *w = json_object_get(json_object_get(root, "param_encodings"), "l1.weight");
    cr_assert_eq(json_array_size(w), 3u, "one encoding per output channel");
    for (size_t c = 0; c < 3; c++) {
        json_t *enc = json_array_get(w, c);
        cr_expect_eq(real_of(enc, "scale"), (double)(float)(w_t[c] / 127));
        cr_expect_eq(json_integer_value(json_object_get(enc, "offset")), -127);
        cr_expect(fabs(real_of(enc, "min") + w_t[c]) < 1e-6 && fabs(real_of(enc, "max") - w_t[c]) < 1e-6);
    }
    json_decref(root);

    export_to_text("--format qnn --qnn-version 1.0.0");
    root = parse();
    cr_expect_str_eq(json_string_value(json_object_get(root, "version")), "1.0.0");
    json_t *list = json_object_get(root, "activation_encodings");
    cr_assert_eq(json_array_size(list), 3u);
    json_t *e0 = json_array_get(list, 0);
    cr_expect_str_eq(json_string_value(json_object_get(e0, "name")), "/model/conv/Conv_output_0");
    cr_expect_str_eq(json_string_value(json_object_get(e0, "enc_type")), "PER_TENSOR");
    cr_expect(json_is_false(json_object_get(e0, "is_sym")));
    cr_expect_eq(json_number_value(json_array_get(json_object_get(e0, "scale"), 0)), sa);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(e0, "offset"), 0)), -85);
    json_t *p0 = json_array_get(json_object_get(root, "param_encodings"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(p0, "name")), "l1.weight");
    cr_expect_str_eq(json_string_value(json_object_get(p0, "enc_type")), "PER_CHANNEL");
    cr_expect_eq(json_array_size(json_object_get(p0, "scale")), 3u);
    json_decref(root);
}

/* ---- ONNX Runtime ----------------------------------------------------------------------------- */

Test(export, onnxruntime_calibration_json)
{
    export_to_text("--format onnxruntime");
    json_t *root = parse();
    cr_expect_str_eq(json_string_value(json_object_get(root, "CLS")), "TensorsData");
    json_t *data = json_object_get(root, "data");
    cr_assert_eq(json_object_size(data), 3u, "activations only");
    json_t *a = json_object_get(data, "/model/conv/Conv_output_0");
    cr_expect_str_eq(json_string_value(json_object_get(a, "CLS")), "TensorData");
    json_t *lowest = json_object_get(a, "lowest"), *highest = json_object_get(a, "highest");
    cr_expect_str_eq(json_string_value(json_object_get(lowest, "CLS")), "numpy.array");
    cr_expect_str_eq(json_string_value(json_object_get(lowest, "dtype")), "float32");
    cr_expect_eq(real_of(lowest, "data"), -1.5);
    cr_expect_eq(real_of(highest, "data"), 3.0);
    json_t *m = json_object_get(root, "calibration_method");
    cr_expect_str_eq(json_string_value(json_object_get(m, "CLS")), "CalibrationMethod");
    cr_expect_str_eq(json_string_value(json_object_get(m, "value")), "CalibrationMethod.MinMax");
    json_decref(root);
}

/* ---- CSV ------------------------------------------------------------------------------------ */

/* Splits an unquoted CSV line into fields (the test data has no quotes). */
static int fields(char *line, char **out, int max)
{
    int n = 0;
    for (char *p = line; n < max; n++) {
        out[n] = p;
        char *comma = strchr(p, ',');
        if (!comma)
            return n + 1;
        *comma = '\0';
        p = comma + 1;
    }
    return n;
}

Test(export, csv_one_row_per_tensor_and_channel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/table.csv", dir);
    char args[1024];
    snprintf(args, sizeof args, "--format csv -o '%s'", path);
    export_to_text(args);
    fx_read_text(path, text, sizeof text);
    char *save, *line = strtok_r(text, "\n", &save);
    char *f[32];
    cr_assert_eq(fields(line, f, 32), 18);
    cr_expect_str_eq(f[0], "tensor");
    cr_expect_str_eq(f[13], "scale");
    float sa;
    long long za;
    grid_a(&sa, &za);
    int rows = 0, weight_rows = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        cr_assert_eq(fields(line, f, 32), 18, "%s", line);
        rows++;
        if (!strcmp(f[0], "a")) {
            cr_expect_str_eq(f[1], "/model/conv/Conv_output_0");
            cr_expect_str_eq(f[4], "", "per tensor: no channel");
            cr_expect(strtod(f[10], NULL) == -1.5 && strtod(f[11], NULL) == 3.0);
            cr_expect_eq((float)strtod(f[13], NULL), sa);
            cr_expect_eq(strtoll(f[14], NULL, 10), za);
        } else if (!strcmp(f[2], "weight")) {
            int c = atoi(f[4]);
            cr_expect_eq(c, weight_rows, "channels in order");
            cr_expect_eq(strtod(f[11], NULL), w_t[c]);
            cr_expect_eq((float)strtod(f[13], NULL), (float)(w_t[c] / 127));
            weight_rows++;
        }
    }
    cr_expect_eq(rows, 6, "a, b, c and three weight channels");
    cr_expect_eq(weight_rows, 3);
}

/* ---- the command ---------------------------------------------------------------------------- */

Test(export, bad_requests_exit_with_one_line)
{
    char args[2048];
    snprintf(args, sizeof args, "export '%s' --format onnx", results_file);
    cr_expect_eq(qcal(args), 64);
    cr_expect(strstr(err_text, "'onnx'") && strstr(err_text, "tpu-mlir"), "%s", err_text);
    snprintf(args, sizeof args, "export '%s'", results_file);
    cr_expect_eq(qcal(args), 64);
    cr_expect(strstr(err_text, "--format is required"), "%s", err_text);
    snprintf(args, sizeof args, "export '%s' --format qnn --qnn-version 2.0", results_file);
    cr_expect_eq(qcal(args), 64);
    snprintf(args, sizeof args, "export '%s' --format tensorrt --trt-version 8.6", results_file);
    cr_expect_eq(qcal(args), 64);
    const char *versions[] = {"0", "00008601", "12345678901234567890", "86"}; /* no build's */
    for (int k = 0; k < 4; k++) {
        snprintf(args, sizeof args, "export '%s' --format tensorrt --trt-version %s", results_file,
                 versions[k]);
        cr_expect_eq(qcal(args), 64, "%s", versions[k]);
        cr_expect(strstr(err_text, "TensorRT's version number"), "%s", err_text);
    }
    snprintf(args, sizeof args, "export '%s' --format csv", dump_file);
    cr_expect_eq(qcal(args), 65, "a dump is not a results file: %s", err_text);
    /* an existing file is kept without --force */
    snprintf(args, sizeof args, "export '%s' --format csv -o '%s'", results_file, dump_file);
    cr_expect_eq(qcal(args), 73);
    cr_expect(strstr(err_text, "--force"), "%s", err_text);
    for (const char *e = err_text; *e; e++)
        cr_expect(*e != '\n' || e[1] == '\0', "one line: %s", err_text);
}

/* Two tensors under one framework name: every table keyed by name refuses them in one line
 * naming both (qnn and onnxruntime kept one silently, tpu-mlir and tensorrt listed both;
 * found by an audit); csv, a row per tensor, writes both. */
Test(export, two_tensors_with_one_name_are_refused)
{
    static float v[8 * 2];
    fx_fill_gauss(v, 16, 3, 0.0f, 1.0f);
    fx_dataset ds[2] = {
        {.name = "a", .dtype = DUMP_F32, .rank = 2, .dims = {8, 2}, .data = v, .channel_axis = FX_NO_ATTR, .orig_name = "same"},
        {.name = "b", .dtype = DUMP_F32, .rank = 2, .dims = {8, 2}, .data = v, .channel_axis = FX_NO_ATTR, .orig_name = "same"},
    };
    char *d = fx_path(dir, "dup.h5"), *out = fx_path(dir, "dup_out.h5"), args[2048];
    cr_assert_eq(fx_write_dump(d, ds, 2, 0), 0);
    snprintf(args, sizeof args, "run minmax '%s' -o '%s'", d, out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    const char *formats[] = {"tpu-mlir", "tensorrt", "qnn", "onnxruntime"};
    for (int k = 0; k < 4; k++) {
        snprintf(args, sizeof args, "export '%s' --format %s", out, formats[k]);
        cr_expect_eq(qcal(args), 65, "%s: %s", formats[k], err_text);
        cr_expect(strstr(err_text, "'a' and 'b' are both named 'same'"), "%s", err_text);
        cr_expect_str_eq(text, "");
    }
    snprintf(args, sizeof args, "export '%s' --format csv", out);
    cr_expect_eq(qcal(args), 0, "%s", err_text);
    cr_expect(strstr(text, "\na,same,") && strstr(text, "\nb,same,"), "%s", text);
    free(d), free(out);
}

/* Per-channel activations on torch's symmetric int8 grid go to the per-tensor formats as the
 * widest channel's grid, as a per-tensor one would (audited: amax was max|range| there, 127 x
 * scale for the same grid per tensor). Channels [-2, 2] and [-4, 4]: scale 4 / 127.5. */
Test(export, per_channel_int8_activations_export_their_widest_grid)
{
    const char *text_recipe =
        "local qcal = require('qcal')\n"
        "local pc = qcal.spec{ bits = 8, symmetric = true, per_channel = true, axis = 1 }\n"
        "qcal.put('b', { method = 'minmax', spec = pc, range = { lo = { -2, -4 }, hi = { 2, 4 } } })\n";
    char *path = fx_path(dir, "pc.lua"), *out = fx_path(dir, "pc.h5"), args[2048];
    FILE *f = fopen(path, "w");
    fputs(text_recipe, f);
    fclose(f);
    snprintf(args, sizeof args, "run '%s' '%s' -o '%s'", path, dump_file, out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "export '%s' --format tensorrt", out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    const char *line = strstr(text, "\nb: ");
    cr_assert_not_null(line, "%s", text);
    cr_expect_eq(hex_float(line + 4), (float)(4.0 / 127.5), "%s", line + 1);
    snprintf(args, sizeof args, "export '%s' --format tpu-mlir", out);
    cr_assert_eq(qcal(args), 0, "%s", err_text);
    line = strstr(text, "\nb ");
    double t = 0;
    cr_assert(line && sscanf(line + 3, "%lf", &t) == 1, "%s", text);
    cr_expect(fabs(t - 127.0 * (double)(float)(4.0 / 127.5)) < 1e-7, "%s", line + 1); /* a float32 scale */
    free(path), free(out);
}
