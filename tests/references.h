/* references.h - plain reference implementations of calibration algorithms, for tests */
#ifndef QCAL_TEST_REFERENCES_H
#define QCAL_TEST_REFERENCES_H

#include <stddef.h>

/* TensorRT entropy threshold (nvpq = 0: Migacz 2017 as published, eps = smoothing; nvpq = 1:
 * NVIDIA pytorch-quantization) on 2048 bins of |x| over [0, max|x|], 128 levels. */
double ref_kl_trt(const float *x, size_t n, int nvpq, double eps);
/* tpu-mlir's KL threshold on |x| without exact zeros (2048 centred bins, 128 levels). */
double ref_kl_tpu(const float *x, size_t n);

#endif
