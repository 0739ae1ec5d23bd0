/* export.c - calibration tables for deployment toolchains (see export.h) */
#include "export.h"

#include <ctype.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"

const char *const export_formats[] = {"tpu-mlir", "tensorrt", "qnn", "onnxruntime", "csv", NULL};

static int is_weight(const result_tensor *t) { return dump_is_weight_name(t->tensor); }

/* The name toolchains know the tensor by. */
static const char *export_name(const result_tensor *t)
{
    return t->orig_name && *t->orig_name ? t->orig_name : t->tensor;
}

/* The amax (threshold) of TensorRT's and tpu-mlir's int8 grid, [-128, 127] * amax / 127,
 * for a result: 127 * scale where the result's grid is such a grid (signed 8-bit, zero-point
 * 0: torch's symmetric int8, POT's signed activations, TensorRT's narrow grid; per channel,
 * the widest channel's scale), so
 * the toolchain deploys the result's own grid; else max(|min|, |max|), the least symmetric
 * range holding the result's range. */
/* Every channel on a signed 8-bit grid with zero-point 0. */
static int int8_grid(const result_tensor *t)
{
    if (t->spec.bits != 8 || t->spec.qmin >= 0)
        return 0;
    for (uint64_t c = 0; c < t->channels; c++)
        if (t->zero_point[c] != 0)
            return 0;
    return 1;
}

/* The largest scale: a per-channel result goes to these per-tensor formats as its widest
 * channel's grid. */
static double widest_scale(const result_tensor *t)
{
    double s = t->scale[0];
    for (uint64_t c = 1; c < t->channels; c++)
        s = fmax(s, t->scale[c]);
    return s;
}

static double amax_of(const result_tensor *t)
{
    if (int8_grid(t))
        return 127.0 * widest_scale(t);
    double lo, hi;
    result_overall_range(t, &lo, &hi);
    return fmax(fabs(lo), fabs(hi));
}

/* AIMET's grids are unsigned with an offset: offset -2^(bits - 1) is the symmetric signed
 * grid whatever the producer called it (POT's signed activations are affine in qcal). */
static int aimet_symmetric(const result_tensor *t, uint64_t c)
{
    return (t->spec.flags & QCAL_QSPEC_SYMMETRIC) ||
           t->spec.qmin - t->zero_point[c] == -((int64_t)1 << (t->spec.bits - 1));
}

static int aimet_all_symmetric(const result_tensor *t)
{
    for (uint64_t c = 0; c < t->channels; c++)
        if (!aimet_symmetric(t, c))
            return 0;
    return 1;
}

static int has_space(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s))
            return 1;
    return 0;
}

/* ---- tpu-mlir ------------------------------------------------------------------------------ */

/* tpu-mlir's own floor for a threshold (its tuned tables write 1e-5 for anything at or below):
 * a 0.0000000 would leave the tensor uncalibrated there. */
#define TPU_MIN_THRESHOLD 1e-5

/* The header keeps tpu-mlir's own spelling ("genetated"): readers skip '#' lines, but people
 * diff tables. Values are %.7f: its parser rejects exponents, inf and nan. */
static int export_tpu(const results *r, FILE *out, qerror *e)
{
    fprintf(out, "# mlir version: qcal %s\n# mlir: %s\n# genetated time: %s\n"
                 "# quantization threshold calculation method: %s\n###\n"
                 "# op_name    threshold    min    max\n",
            r->qcal_version, r->source, r->created, r->recipe);
    for (size_t i = 0; i < r->n_tensors; i++) {
        const result_tensor *t = &r->tensors[i];
        if (is_weight(t))
            continue;
        if (has_space(export_name(t)))
            return qerror_set(e, QERR_DATA, "tensor '%s': tpu-mlir tables cannot hold a name "
                              "with white space", export_name(t));
        double lo, hi;
        result_overall_range(t, &lo, &hi);
        /* symmetric import reads only the sign of min: unsigned where no value is negative,
         * as tpu-mlir's own tables say of ReLU outputs */
        if ((t->spec.flags & QCAL_QSPEC_SYMMETRIC) && t->has_data_range && t->data_min >= 0)
            lo = 0;
        fprintf(out, "%s %.7f %.7f %.7f\n", export_name(t), fmax(amax_of(t), TPU_MIN_THRESHOLD), lo, hi);
    }
    return 0;
}

/* ---- TensorRT ------------------------------------------------------------------------------ */

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

static int export_trt(const results *r, const export_options *o, FILE *out, qerror *e)
{
    const char *version = o->trt_version ? o->trt_version : "8601";
    const char *algorithm = o->trt_algorithm ? o->trt_algorithm : "EntropyCalibration2";
    /* TensorRT's own number: major 1000 + minor 100 + patch (10.x: major 10000): 3 to 6
     * digits, no leading zero (a header that matches no build makes TensorRT skip the cache) */
    size_t digits = strlen(version);
    if (!all_digits(version) || version[0] == '0' || digits < 3 || digits > 6)
        return qerror_set(e, QERR_USAGE, "--trt-version: expected TensorRT's version number "
                          "such as 8601 (8.6.1) or 100300 (10.3.0), found '%s'", version);
    if (!*algorithm || has_space(algorithm) || strchr(algorithm, ':'))
        return qerror_set(e, QERR_USAGE, "--trt-algorithm: expected a name such as "
                          "EntropyCalibration2 or MinMaxCalibration, found '%s'", algorithm);
    fprintf(out, "TRT-%s-%s\n", version, algorithm);
    for (size_t i = 0; i < r->n_tensors; i++) {
        const result_tensor *t = &r->tensors[i];
        if (is_weight(t))
            continue;
        const char *name = export_name(t);
        if (strchr(name, ':') || strchr(name, '\n'))
            return qerror_set(e, QERR_DATA, "tensor '%s': a TensorRT cache line is split at "
                              "its first ':', so a name cannot contain one", name);
        double amax_scale = int8_grid(t) ? widest_scale(t) : amax_of(t) / 127.0;
        float scale = fmaxf((float)amax_scale, FLT_EPSILON); /* qcal's scale floor */
        uint32_t bits;
        memcpy(&bits, &scale, sizeof bits);
        fprintf(out, "%s: %08x\n", name, (unsigned)bits);
    }
    return 0;
}

/* ---- JSON helpers ---------------------------------------------------------------------------- */

static int set(json_t *obj, const char *key, json_t *value)
{
    return !value || json_object_set_new(obj, key, value) != 0;
}

/* JSON holds UTF-8 only: a name that is not (a damaged file, another encoding) is refused
 * rather than mangled, as the toolchain would not find the tensor by a mangled name. */
static int names_are_utf8(const results *r, const char *format, qerror *e)
{
    for (size_t i = 0; i < r->n_tensors; i++) {
        json_t *name = json_string(export_name(&r->tensors[i]));
        if (!name)
            return qerror_set(e, QERR_DATA, "tensor '%s': expected a UTF-8 name (%s files are "
                              "JSON), found other bytes", export_name(&r->tensors[i]), format);
        json_decref(name);
    }
    return 0;
}

static int dump_json(json_t *root, FILE *out, qerror *e)
{
    int bad = !root || json_dumpf(root, out, JSON_REAL_PRECISION(17)) != 0;
    json_decref(root);
    if (!bad)
        fputc('\n', out);
    return bad ? qerror_set(e, QERR_SOFTWARE, "out of memory while building JSON") : 0;
}

/* ---- AIMET / QNN ----------------------------------------------------------------------------- */

/* AIMET's grid is unsigned, [0, 2^bw - 1], with real = (q + offset) scale; ours is
 * real = (q - zp) scale on [qmin, qmax], so offset = qmin - zp (-zp for uint8, -128 for
 * symmetric int8), min = (qmin - zp) scale, max = (qmax - zp) scale. */
static json_t *aimet_legacy(const result_tensor *t, uint64_t c)
{
    double s = t->scale[c];
    int64_t zp = t->zero_point[c], qmin = t->spec.qmin, qmax = t->spec.qmax;
    json_t *enc = json_object();
    int bad = !enc || set(enc, "bitwidth", json_integer(t->spec.bits)) ||
              set(enc, "dtype", json_string("int")) ||
              set(enc, "is_symmetric", json_string(aimet_symmetric(t, c) ? "True" : "False")) ||
              set(enc, "max", json_real((double)(qmax - zp) * s)) ||
              set(enc, "min", json_real((double)(qmin - zp) * s)) ||
              set(enc, "offset", json_integer(qmin - zp)) || set(enc, "scale", json_real(s));
    if (bad)
        json_decref(enc);
    return bad ? NULL : enc;
}

static json_t *aimet_v1(const result_tensor *t)
{
    json_t *enc = json_object(), *scales = json_array(), *offsets = json_array();
    int bad = !enc || !scales || !offsets;
    for (uint64_t c = 0; !bad && c < t->channels; c++)
        bad = json_array_append_new(scales, json_real(t->scale[c])) ||
              json_array_append_new(offsets, json_integer(t->spec.qmin - t->zero_point[c]));
    bad = bad || set(enc, "name", json_string(export_name(t))) ||
          set(enc, "dtype", json_string("INT")) || set(enc, "bw", json_integer(t->spec.bits)) ||
          set(enc, "enc_type", json_string(t->channels > 1 ? "PER_CHANNEL" : "PER_TENSOR")) ||
          set(enc, "is_sym", json_boolean(aimet_all_symmetric(t)));
    if (!bad) {
        bad = set(enc, "scale", scales) || set(enc, "offset", offsets);
        scales = offsets = NULL;
    }
    json_decref(scales), json_decref(offsets);
    if (bad)
        json_decref(enc);
    return bad ? NULL : enc;
}

/* AIMET names parameters "<layer>.weight"; a weight's framework name wins where known. */
static void param_name(const result_tensor *t, char *buf, size_t size)
{
    if (t->orig_name && *t->orig_name)
        snprintf(buf, size, "%s", t->orig_name);
    else
        snprintf(buf, size, "%s.weight", t->tensor + strlen(DUMP_WEIGHT_PREFIX));
}

static int add_legacy(json_t *group, const result_tensor *t)
{
    char name[1024];
    json_t *list = json_array();
    int bad = !list;
    for (uint64_t c = 0; !bad && c < t->channels; c++)
        bad = json_array_append_new(list, aimet_legacy(t, c));
    if (is_weight(t))
        param_name(t, name, sizeof name);
    else
        snprintf(name, sizeof name, "%s", export_name(t));
    return bad ? (json_decref(list), 1) : set(group, name, list);
}

static int export_qnn(const results *r, const export_options *o, FILE *out, qerror *e)
{
    const char *version = o->qnn_version ? o->qnn_version : "0.6.1";
    int v1 = !strcmp(version, "1.0.0");
    if (!v1 && strcmp(version, "0.6.1"))
        return qerror_set(e, QERR_USAGE, "--qnn-version: expected 0.6.1 or 1.0.0, found '%s'", version);
    if (names_are_utf8(r, "qnn", e))
        return -1;
    json_t *root = json_object();
    json_t *act = v1 ? json_array() : json_object(), *par = v1 ? json_array() : json_object();
    int bad = !root || !act || !par;
    for (size_t i = 0; !bad && i < r->n_tensors; i++) {
        const result_tensor *t = &r->tensors[i];
        json_t *group = is_weight(t) ? par : act;
        if (!v1) {
            bad = add_legacy(group, t);
            continue;
        }
        json_t *enc = aimet_v1(t);
        if (enc && is_weight(t)) {
            char name[1024];
            param_name(t, name, sizeof name);
            bad = set(enc, "name", json_string(name));
        }
        bad = bad || !enc || json_array_append_new(group, enc);
    }
    if (bad) {
        json_decref(act), json_decref(par), json_decref(root);
        return qerror_set(e, QERR_SOFTWARE, "out of memory while building JSON");
    }
    set(root, "version", json_string(version));
    set(root, "activation_encodings", act);
    set(root, "param_encodings", par);
    return dump_json(root, out, e);
}

/* ---- ONNX Runtime ------------------------------------------------------------------------------ */

/* A numpy array as ONNX Runtime's encoder writes one: a scalar for a 0-d array (one range),
 * a list per channel otherwise. */
static json_t *numpy_array(const double *v, uint64_t n)
{
    json_t *a = json_object(), *data = NULL;
    if (n == 1) {
        data = json_real((double)(float)v[0]);
    } else {
        data = json_array();
        for (uint64_t c = 0; data && c < n; c++)
            if (json_array_append_new(data, json_real((double)(float)v[c])))
                json_decref(data), data = NULL;
    }
    int bad = !a || set(a, "data", data) || set(a, "dtype", json_string("float32")) ||
              set(a, "CLS", json_string("numpy.array"));
    if (bad)
        json_decref(a);
    return bad ? NULL : a;
}

/* CalibrationMethod of the method that made most tensors. */
static const char *ort_method(const results *r)
{
    size_t kl = 0, pct = 0, all = 0;
    for (size_t i = 0; i < r->n_tensors; i++) {
        if (is_weight(&r->tensors[i]))
            continue;
        all++;
        kl += strstr(r->tensors[i].method, "kl") != NULL;
        pct += strstr(r->tensors[i].method, "percentile") != NULL;
    }
    if (kl * 2 > all)
        return "CalibrationMethod.Entropy";
    return pct * 2 > all ? "CalibrationMethod.Percentile" : "CalibrationMethod.MinMax";
}

static int export_ort(const results *r, FILE *out, qerror *e)
{
    if (names_are_utf8(r, "onnxruntime", e))
        return -1;
    json_t *root = json_object(), *data = json_object(), *method = json_object();
    int bad = !root || !data || !method;
    for (size_t i = 0; !bad && i < r->n_tensors; i++) {
        const result_tensor *t = &r->tensors[i];
        if (is_weight(t))
            continue;
        json_t *td = json_object();
        bad = !td || set(td, "lowest", numpy_array(t->lo, t->channels)) ||
              set(td, "highest", numpy_array(t->hi, t->channels)) ||
              set(td, "CLS", json_string("TensorData")) || set(data, export_name(t), td);
    }
    bad = bad || set(method, "CLS", json_string("CalibrationMethod")) ||
          set(method, "value", json_string(ort_method(r)));
    if (bad || set(root, "CLS", json_string("TensorsData")) || set(root, "data", data)) {
        json_decref(method), json_decref(root);
        return qerror_set(e, QERR_SOFTWARE, "out of memory while building JSON");
    }
    set(root, "calibration_method", method);
    return dump_json(root, out, e);
}

/* ---- CSV ---------------------------------------------------------------------------------- */

/* RFC 4180: quoted when it holds a comma, quote or line break; quotes doubled. */
static void csv_text(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void csv_number(FILE *out, int known, double v)
{
    if (known)
        fprintf(out, "%.17g", v);
}

static void csv_row(FILE *out, const result_tensor *t, uint64_t c)
{
    csv_text(out, t->tensor), fputc(',', out);
    csv_text(out, export_name(t)), fputc(',', out);
    fputs(is_weight(t) ? "weight," : "activation,", out);
    csv_text(out, t->method), fputc(',', out);
    if (t->channels > 1)
        fprintf(out, "%llu", (unsigned long long)c);
    fprintf(out, ",%u,%lld,%lld,%d,%d,", t->spec.bits, (long long)t->spec.qmin,
            (long long)t->spec.qmax, (t->spec.flags & QCAL_QSPEC_SYMMETRIC) != 0,
            (t->spec.flags & QCAL_QSPEC_NARROW) != 0);
    fprintf(out, "%.17g,%.17g,%.17g,%.9g,%lld,", t->lo[c], t->hi[c],
            fmax(fabs(t->lo[c]), fabs(t->hi[c])), t->scale[c], (long long)t->zero_point[c]);
    csv_number(out, t->has_metrics, t->mse), fputc(',', out);
    csv_number(out, t->has_metrics, t->sqnr_db), fputc(',', out);
    csv_number(out, t->has_metrics, t->cosine), fputc('\n', out);
}

static int export_csv(const results *r, FILE *out)
{
    fputs("tensor,name,kind,method,channel,bits,qmin,qmax,symmetric,narrow_range,min,max,"
          "threshold,scale,zero_point,mse,sqnr_db,cosine\n", out);
    for (size_t i = 0; i < r->n_tensors; i++)
        for (uint64_t c = 0; c < r->tensors[i].channels; c++)
            csv_row(out, &r->tensors[i], c);
    return 0;
}

typedef struct named {
    const char *name, *tensor;
} named;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* Two tensors of one kind (activations, or weights) under one framework name (the dump's name
 * attributes): a table keyed by name would keep one of them, or list both, silently. */
static int names_unique(const results *r, qerror *e)
{
    named *list = malloc((r->n_tensors ? r->n_tensors : 1) * sizeof *list);
    if (!list)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    int rc = 0;
    for (int weights = 0; weights < 2 && !rc; weights++) {
        size_t n = 0;
        for (size_t i = 0; i < r->n_tensors; i++)
            if (is_weight(&r->tensors[i]) == weights)
                list[n++] = (named){export_name(&r->tensors[i]), r->tensors[i].tensor};
        qsort(list, n, sizeof *list, by_name);
        for (size_t i = 1; i < n && !rc; i++)
            if (!strcmp(list[i - 1].name, list[i].name))
                rc = qerror_set(e, QERR_DATA, "tensors '%s' and '%s' are both named '%s' (the "
                                "dump's name attributes): a calibration table holds one entry "
                                "per name", list[i - 1].tensor, list[i].tensor, list[i].name);
    }
    free(list);
    return rc;
}

int export_results(const results *r, const export_options *o, FILE *out, qerror *e)
{
    const char *f = o->format ? o->format : "";
    int known = 0;
    for (size_t k = 0; export_formats[k]; k++)
        known |= !strcmp(f, export_formats[k]);
    if (known && strcmp(f, "csv") != 0 && names_unique(r, e)) /* csv: a row per tensor */
        return -1;
    if (!strcmp(f, "tpu-mlir"))
        return export_tpu(r, out, e);
    if (!strcmp(f, "tensorrt"))
        return export_trt(r, o, out, e);
    if (!strcmp(f, "qnn"))
        return export_qnn(r, o, out, e);
    if (!strcmp(f, "onnxruntime"))
        return export_ort(r, out, e);
    if (!strcmp(f, "csv"))
        return export_csv(r, out);
    return qerror_set(e, QERR_USAGE, "--format: expected tpu-mlir, tensorrt, qnn, onnxruntime "
                      "or csv, found '%s'", f);
}
