/* export.h - calibration tables in the formats deployment toolchains read
 *
 *   tpu-mlir     the calibration table: "# ..." header, then "name threshold min max" (%.7f)
 *   tensorrt     the INT8 calibration cache: "TRT-<version>-<algorithm>", then
 *                "name: <hex of the big-endian float32 scale amax / 127>"
 *   qnn          AIMET / Qualcomm encodings JSON (0.6.1, or 1.0.0): activation_encodings,
 *                and param_encodings for calibrated weights
 *   onnxruntime  calibration.json as ONNX Runtime's write_calibration_table writes it
 *   csv          one row per tensor (per channel for per-channel ranges)
 * Tensors are named by their framework name (the dump's `name` attribute) where known. The
 * symmetric formats (tpu-mlir, tensorrt) take amax = max(|min|, |max|) of any range; the
 * activation formats (tpu-mlir, tensorrt, onnxruntime) leave weights out. */
#ifndef QCAL_EXPORT_H
#define QCAL_EXPORT_H

#include <stdio.h>

#include "error.h"
#include "results.h"

typedef struct export_options {
    const char *format;
    const char *trt_version;   /* NULL: "8601" (TensorRT 8.6.1) */
    const char *trt_algorithm; /* NULL: "EntropyCalibration2" */
    const char *qnn_version;   /* NULL: "0.6.1" */
} export_options;

/* The format names, NULL-terminated. */
extern const char *const export_formats[];

/* Writes r in o->format to out. QERR_USAGE for an unknown format or option, QERR_DATA for a
 * tensor the format cannot carry (the line names it and why). */
int export_results(const results *r, const export_options *o, FILE *out, qerror *e);

#endif
