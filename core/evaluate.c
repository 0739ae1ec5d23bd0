/* evaluate.c - the evaluation pass's internal observer (see evaluate.h) */
#include "evaluate.h"

#include "xsum.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 4096 /* values every candidate measures while they are in cache */
_Static_assert(CHUNK % QMATH_CLEAN_BLOCK == 0, "whole blocks of extrema per chunk");

/* ---- sets ------------------------------------------------------------------------------ */

void eval_set_free(eval_set *s)
{
    if (!s)
        return;
    for (uint64_t k = 0; s->cand && k < s->n; k++) {
        free(s->cand[k].scale);
        free(s->cand[k].zero_point);
    }
    free(s->cand);
    free(s->tensor);
    free(s->w_ref);
    free(s->w_q);
    free(s);
}

static int candidate_init(eval_candidate *c, const char *tensor, uint64_t index, int rank,
                          const uint64_t *dims, const qcal_qspec *spec, uint64_t channels,
                          const double *lo, const double *hi, qerror *e)
{
    c->spec = *spec;
    int per_channel = (spec->flags & QCAL_QSPEC_PER_CHANNEL) != 0;
    if (per_channel ? spec->axis < 1 || spec->axis >= rank || channels != dims[spec->axis]
                    : channels != 1)
        return qerror_set(e, QERR_DATA, "tensor '%s', candidate %llu: %llu ranges for a %s spec",
                          tensor, (unsigned long long)index + 1, (unsigned long long)channels,
                          per_channel ? "per-channel" : "per-tensor");
    c->channels = channels;
    c->inner = 1;
    for (int i = per_channel ? spec->axis + 1 : rank; i < rank; i++)
        c->inner *= dims[i];
    c->scale = malloc(channels * sizeof *c->scale);
    c->zero_point = malloc(channels * sizeof *c->zero_point);
    if (!c->scale || !c->zero_point)
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    for (uint64_t ch = 0; ch < channels; ch++) {
        double scale;
        qerror qe = {0};
        if (qmath_qparams(spec, lo[ch], hi[ch], &scale, &c->zero_point[ch], &qe))
            return qerror_set(e, QERR_DATA, "tensor '%s', candidate %llu, channel %llu: %s",
                              tensor, (unsigned long long)index + 1, (unsigned long long)ch, qe.msg);
        c->scale[ch] = (float)scale;
    }
    return 0;
}

int eval_set_new(const char *tensor, int rank, const uint64_t *dims, uint64_t n,
                 const qcal_qspec *specs, const uint64_t *channels, const double *const *lo,
                 const double *const *hi, eval_set **out, qerror *e)
{
    *out = NULL;
    eval_set *s = calloc(1, sizeof *s);
    if (!s || !(s->tensor = strdup(tensor)) || !(s->cand = calloc(n ? n : 1, sizeof *s->cand))) {
        eval_set_free(s);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    s->n = n;
    for (uint64_t k = 0; k < n; k++)
        if (candidate_init(&s->cand[k], tensor, k, rank, dims, &specs[k], channels[k], lo[k],
                           hi[k], e)) {
            eval_set_free(s);
            return -1;
        }
    *out = s;
    return 0;
}

/* Fake-quantizes the weights: per output channel (the leading axis) or as a whole, each part
 * with the range of its own min and max. */
static int quantize_weights(const layer *l, const qcal_qspec *spec, float *out, qerror *e)
{
    int per_channel = (spec->flags & QCAL_QSPEC_PER_CHANNEL) != 0;
    uint64_t parts = per_channel ? l->out_ch : 1, size = l->weight_size / parts;
    for (uint64_t p = 0; p < parts; p++) {
        const float *w = l->weight + p * size;
        float lo = w[0], hi = w[0];
        for (uint64_t i = 1; i < size; i++)
            lo = w[i] < lo ? w[i] : lo, hi = w[i] > hi ? w[i] : hi;
        double scale;
        int64_t zp;
        qcal_qspec one = *spec;
        one.flags &= ~QCAL_QSPEC_PER_CHANNEL;
        qerror qe = {0};
        if (qmath_qparams(&one, lo, hi, &scale, &zp, &qe))
            return qerror_set(e, QERR_DATA, "layer '%s': weights of output channel %llu: %s",
                              l->name, (unsigned long long)p, qe.msg);
        qmath_fake_quant_n(w, out + p * size, size, (float)scale, zp, spec->qmin, spec->qmax);
    }
    return 0;
}

int eval_set_layer(eval_set *s, const layer *l, const qcal_qspec *weight_spec, int rank,
                   const uint64_t *dims, qerror *e)
{
    if (layer_geometry(l, s->tensor, dims + 1, rank - 1, &s->geom, e))
        return -1;
    uint64_t size = layer_packed_size(l);
    float *wq = malloc(l->weight_size * sizeof *wq);
    s->w_ref = malloc(size * sizeof *s->w_ref);
    s->w_q = malloc(size * sizeof *s->w_q);
    if (!wq || !s->w_ref || !s->w_q) {
        free(wq);
        return qerror_set(e, QERR_SOFTWARE, "out of memory");
    }
    if (quantize_weights(l, weight_spec, wq, e)) {
        free(wq);
        return -1;
    }
    layer_pack(l, l->weight, s->w_ref);
    layer_pack(l, wq, s->w_q);
    free(wq);
    s->layer = l;
    return 0;
}

/* ---- the observer ---------------------------------------------------------------------- */

/* Sums over the pass, exact (xsum): the same in any split over threads, slabs or ranks. */
typedef struct exact_err {
    uint64_t n;
    xsum sum[4]; /* sum_sq_err, sum_sq_ref, sum_sq_q, dot */
} exact_err;

#define SUMS_PER_CANDIDATE 9 /* 4 tensor, 4 layer, the layer ratio */

typedef struct eval_state {
    const eval_set *set;
    exact_err *tensor, *layer;   /* [n] */
    xsum *ratio_sum;             /* [n]: sum over samples of ||y - y_q||_2 / ||y||_1 */
    uint64_t samples, skipped;   /* samples in the layer error, and left out of it */
    qmath_err *row;              /* [n]: one sample's tensor error, before it joins the sums */
    float *buf;                  /* the layer's buffers (NULL without a layer) */
    float *xq, *y_ref, *y_q, *cols;
    double *out;                 /* finalize: 11 n doubles (see sum_names) */
    double out_samples, out_skipped;
    uint64_t *ser_counts;        /* serialize: 2 n + 2 counts, 9 n specials, digits */
    int64_t *ser_digits;
    qcal_array arrays[13];
} eval_state;

static void exact_add(exact_err *x, const qmath_err *e)
{
    x->n += e->n;
    xsum_add(&x->sum[0], e->sum_sq_err);
    xsum_add(&x->sum[1], e->sum_sq_ref);
    xsum_add(&x->sum[2], e->sum_sq_q);
    xsum_add(&x->sum[3], e->dot);
}

/* The k-th of a candidate's SUMS_PER_CANDIDATE sums. */
static xsum *sum_at(const eval_state *s, uint64_t cand, int k)
{
    if (k < 4)
        return &s->tensor[cand].sum[k];
    if (k < 8)
        return &s->layer[cand].sum[k - 4];
    return &s->ratio_sum[cand];
}

static void e_destroy(void *state)
{
    eval_state *s = state;
    if (!s)
        return;
    free(s->tensor);
    free(s->ratio_sum);
    free(s->row);
    free(s->buf);
    free(s->out);
    free(s->ser_counts);
    free(s->ser_digits);
    free(s);
}

static int e_create(const qcal_tensor *t, const qcal_value *params, void **state, qcal_err *err)
{
    (void)t;
    const eval_set *set = (const eval_set *)(intptr_t)params[0].i;
    eval_state *s = calloc(1, sizeof *s);
    uint64_t n = set->n ? set->n : 1, lsize = 0;
    if (set->layer)
        lsize = set->geom.in_size + 2 * set->geom.out_size + set->geom.scratch;
    if (!s || !(s->tensor = calloc(2 * n, sizeof *s->tensor)) ||
        !(s->ratio_sum = calloc(n, sizeof *s->ratio_sum)) ||
        !(s->row = calloc(n, sizeof *s->row)) ||
        (lsize && !(s->buf = malloc(lsize * sizeof *s->buf)))) {
        e_destroy(s);
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return QCAL_E_NOMEM;
    }
    s->set = set;
    s->layer = s->tensor + n;
    if (lsize) { /* the layer's buffers; the tensor error needs none */
        s->xq = s->buf;
        s->y_ref = s->xq + set->geom.in_size;
        s->y_q = s->y_ref + set->geom.out_size;
        s->cols = s->y_q + set->geom.out_size;
    }
    *state = s;
    return QCAL_OK;
}

/* From flat offset j within a sample: the channel of candidate c there, and how many values
 * of that channel follow (n at most). Per-tensor candidates have a single run. */
static uint64_t channel_run(const eval_candidate *c, uint64_t j, uint64_t n, uint64_t *ch)
{
    if (c->channels == 1) {
        *ch = 0;
        return n;
    }
    *ch = (j / c->inner) % c->channels;
    uint64_t run = c->inner - j % c->inner;
    return run < n ? run : n;
}

/* Fake-quantizes n values of a sample starting at flat offset `at` into q. */
static void fake_quant_span(const eval_candidate *c, const float *x, float *q, uint64_t n,
                            uint64_t at)
{
    for (uint64_t i = 0, ch, run; i < n; i += run) {
        run = channel_run(c, at + i, n - i, &ch);
        qmath_fake_quant_n(x + i, q + i, run, c->scale[ch], c->zero_point[ch], c->spec.qmin,
                           c->spec.qmax);
    }
}

/* Adds the error of a chunk's n clean values (qmath_clean_run) to acc: the sums of the grid,
 * not the count or sum x^2. The chunk starts at flat offset `at` of its sample. */
static void error_span(const eval_candidate *c, const float *clean, const float *extrema,
                       uint64_t n, uint64_t at, qmath_err *acc)
{
    for (uint64_t i = 0, ch, run; i < n; i += run) {
        run = channel_run(c, at + i, n - i, &ch);
        qmath_grid_err(acc, clean, extrema, i, run, c->scale[ch], c->zero_point[ch],
                       c->spec.qmin, c->spec.qmax);
    }
}

/* Sample by sample (a sample's sums depend on it alone, whatever slab holds it), chunk by
 * chunk: the chunk cleaned of NaN and Inf once (with its count and sum x^2, the same for
 * every candidate), then every candidate on it while it is in cache; then into the exact
 * sums. */
static void tensor_errors(eval_state *s, const qcal_slab *slab)
{
    uint64_t n = s->set->n;
    float clean[CHUNK], extrema[2 * (CHUNK / QMATH_CLEAN_BLOCK)];
    for (uint64_t r = 0; r < slab->rows; r++) {
        const float *row = slab->data + r * slab->row_size;
        uint64_t used = 0;
        double sum_sq_ref = 0;
        memset(s->row, 0, n * sizeof *s->row);
        for (uint64_t at = 0; at < slab->row_size; at += CHUNK) {
            uint64_t len = slab->row_size - at < CHUNK ? slab->row_size - at : CHUNK;
            used += qmath_clean_run(row + at, len, clean, extrema, &sum_sq_ref);
            for (uint64_t k = 0; k < n; k++)
                error_span(&s->set->cand[k], clean, extrema, len, at, &s->row[k]);
        }
        for (uint64_t k = 0; k < n; k++) {
            s->row[k].n = used, s->row[k].sum_sq_ref = sum_sq_ref;
            exact_add(&s->tensor[k], &s->row[k]);
        }
    }
}

static int all_finite(const float *x, uint64_t n)
{
    int ok = 1;
    for (uint64_t i = 0; i < n; i++)
        ok &= isfinite(x[i]) != 0;
    return ok;
}

/* tpu-mlir's distance, per sample: ||y - y_q||_2 / ||y||_1 (averaged in eval_layer_error).
 * Samples with a non-finite input, or whose reference output is all zero (the ratio has no
 * meaning), are left out and counted. */
static void layer_errors(eval_state *s, const qcal_slab *slab)
{
    const eval_set *set = s->set;
    uint64_t out = set->geom.out_size;
    for (uint64_t r = 0; r < slab->rows; r++) {
        const float *x = slab->data + r * slab->row_size;
        double l1 = 0;
        if (all_finite(x, slab->row_size)) {
            layer_forward(set->layer, &set->geom, set->w_ref, x, s->y_ref, s->cols);
            for (uint64_t i = 0; i < out; i++)
                l1 += fabs((double)s->y_ref[i]);
        }
        if (!(l1 > 0) || !isfinite(l1)) {
            s->skipped++;
            continue;
        }
        s->samples++;
        for (uint64_t k = 0; k < set->n; k++) {
            fake_quant_span(&set->cand[k], x, s->xq, slab->row_size, 0);
            layer_forward(set->layer, &set->geom, set->w_q, s->xq, s->y_q, s->cols);
            qmath_err one = {0};
            qmath_err_add(&one, s->y_ref, s->y_q, out);
            xsum_add(&s->ratio_sum[k], sqrt(one.sum_sq_err) / l1);
            exact_add(&s->layer[k], &one);
        }
    }
}

static int e_observe(void *state, const qcal_slab *slab, qcal_err *err)
{
    eval_state *s = state;
    (void)err;
    tensor_errors(s, slab);
    if (s->set->layer)
        layer_errors(s, slab);
    return QCAL_OK;
}

static int e_merge(void *into, const void *from, qcal_err *err)
{
    eval_state *s = into;
    const eval_state *o = from;
    (void)err;
    for (uint64_t k = 0; k < s->set->n; k++) {
        s->tensor[k].n += o->tensor[k].n;
        s->layer[k].n += o->layer[k].n;
        for (int i = 0; i < SUMS_PER_CANDIDATE; i++)
            xsum_merge(sum_at(s, k, i), sum_at(o, k, i));
    }
    s->samples += o->samples;
    s->skipped += o->skipped;
    return QCAL_OK;
}

static const char *const sum_names[11] = {
    "n", "sum_sq_err", "sum_sq_ref", "sum_sq_q", "dot",
    "layer_n", "layer_sum_sq_err", "layer_sum_sq_ref", "layer_sum_sq_q", "layer_dot",
    "layer_ratio_sum",
};

static int e_finalize(void *state, qcal_stat *out, qcal_err *err)
{
    eval_state *s = state;
    uint64_t n = s->set->n;
    if (!s->out && !(s->out = malloc((11 * n + 1) * sizeof *s->out))) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return QCAL_E_NOMEM;
    }
    for (uint64_t k = 0; k < n; k++) {
        s->out[k] = (double)s->tensor[k].n;
        s->out[5 * n + k] = (double)s->layer[k].n;
        for (int i = 0; i < 4; i++) {
            s->out[(1 + (uint64_t)i) * n + k] = xsum_value(&s->tensor[k].sum[i]);
            s->out[(6 + (uint64_t)i) * n + k] = xsum_value(&s->layer[k].sum[i]);
        }
        s->out[10 * n + k] = xsum_value(&s->ratio_sum[k]);
    }
    for (int i = 0; i < 11; i++)
        s->arrays[i] = (qcal_array){sum_names[i], QCAL_DTYPE_F64, 1, {n, 0, 0, 0}, s->out + i * n};
    s->out_samples = (double)s->samples, s->out_skipped = (double)s->skipped;
    s->arrays[11] = (qcal_array){"layer_samples", QCAL_DTYPE_F64, 1, {1, 0, 0, 0}, &s->out_samples};
    s->arrays[12] = (qcal_array){"skipped", QCAL_DTYPE_F64, 1, {1, 0, 0, 0}, &s->out_skipped};
    *out = (qcal_stat){"qcal.evaluation", 1, 13, 1, s->arrays};
    return QCAL_OK;
}

/* The saved state ("qcal.evaluation_state", for MPI ranks): counts u64 [2n + 2] (tensor n,
 * layer n per candidate, samples, skipped), special u64 [9n] and digits i64 [9n, LIMBS]: the
 * canonical digits of every exact sum, candidate by candidate. */
static int e_serialize(const void *state, qcal_stat *out, qcal_err *err)
{
    eval_state *s = (eval_state *)state; /* the serialize buffers are the state's own */
    uint64_t n = s->set->n, sums = SUMS_PER_CANDIDATE * n;
    if (!s->ser_counts && !(s->ser_counts = malloc((2 * n + 2 + sums) * sizeof *s->ser_counts)))
        goto nomem;
    if (!s->ser_digits && !(s->ser_digits = malloc((sums ? sums : 1) * XSUM_LIMBS * sizeof *s->ser_digits)))
        goto nomem;
    uint64_t *counts = s->ser_counts, *special = counts + 2 * n + 2;
    for (uint64_t k = 0; k < n; k++) {
        counts[2 * k] = s->tensor[k].n, counts[2 * k + 1] = s->layer[k].n;
        for (int i = 0; i < SUMS_PER_CANDIDATE; i++) {
            xsum c = *sum_at(s, k, i);
            xsum_normalize(&c);
            uint64_t at = k * SUMS_PER_CANDIDATE + (uint64_t)i;
            special[at] = c.special;
            memcpy(s->ser_digits + at * XSUM_LIMBS, c.limb, sizeof c.limb);
        }
    }
    counts[2 * n] = s->samples, counts[2 * n + 1] = s->skipped;
    s->arrays[0] = (qcal_array){"counts", QCAL_DTYPE_U64, 1, {2 * n + 2, 0, 0, 0}, counts};
    s->arrays[1] = (qcal_array){"special", QCAL_DTYPE_U64, 1, {sums, 0, 0, 0}, special};
    s->arrays[2] = (qcal_array){"digits", QCAL_DTYPE_I64, 2, {sums, XSUM_LIMBS, 0, 0}, s->ser_digits};
    *out = (qcal_stat){"qcal.evaluation_state", 1, 3, 1, s->arrays};
    return QCAL_OK;
nomem:
    snprintf(err->msg, sizeof err->msg, "out of memory");
    return QCAL_E_NOMEM;
}

static const qcal_array *array_of(const qcal_stat *in, const char *name, uint32_t dtype,
                                  uint64_t count)
{
    const qcal_array *a = hstat_find(in, name);
    return a && a->dtype == dtype && hstat_array_count(a) == count && a->data ? a : NULL;
}

/* Canonical digits only: lower ones in [0, 2^32), the top one small (no overflow when added). */
static int digits_ok(const int64_t *d)
{
    for (int i = 0; i + 1 < XSUM_LIMBS; i++)
        if (d[i] < 0 || d[i] >= ((int64_t)1 << 32))
            return 0;
    return d[XSUM_LIMBS - 1] > -((int64_t)1 << 40) && d[XSUM_LIMBS - 1] < ((int64_t)1 << 40);
}

static int e_deserialize(void *state, const qcal_stat *in, qcal_err *err)
{
    eval_state *s = state;
    uint64_t n = s->set->n, sums = SUMS_PER_CANDIDATE * n;
    const qcal_array *c = array_of(in, "counts", QCAL_DTYPE_U64, 2 * n + 2);
    const qcal_array *sp = array_of(in, "special", QCAL_DTYPE_U64, sums);
    const qcal_array *dg = array_of(in, "digits", QCAL_DTYPE_I64, sums * XSUM_LIMBS);
    int ok = strcmp(in->kind, "qcal.evaluation_state") == 0 && c && (sp || !sums) && (dg || !sums);
    for (uint64_t at = 0; ok && at < sums; at++)
        ok = digits_ok((const int64_t *)dg->data + at * XSUM_LIMBS) &&
             ((const uint64_t *)sp->data)[at] < 8;
    if (!ok) {
        snprintf(err->msg, sizeof err->msg, "expected an evaluation state of %llu candidates",
                 (unsigned long long)n);
        return QCAL_E_DATA;
    }
    const uint64_t *counts = c->data;
    for (uint64_t k = 0; k < n; k++) {
        s->tensor[k].n += counts[2 * k], s->layer[k].n += counts[2 * k + 1];
        for (int i = 0; i < SUMS_PER_CANDIDATE; i++) {
            uint64_t at = k * SUMS_PER_CANDIDATE + (uint64_t)i;
            xsum x = {.special = (uint32_t)((const uint64_t *)sp->data)[at]};
            memcpy(x.limb, (const int64_t *)dg->data + at * XSUM_LIMBS, sizeof x.limb);
            xsum_merge(sum_at(s, k, i), &x);
        }
    }
    s->samples += counts[2 * n], s->skipped += counts[2 * n + 1];
    return QCAL_OK;
}

static const qcal_param eval_params[1] = {
    {.name = "set", .type = QCAL_PARAM_INT, .def = {.i = 0}, .min = 0, .max = 0,
     .help = "internal: the eval_set"},
};

static const reg_plugin core_plugin = {.path = "qcal (core)"};

static const reg_observer evaluation = {
    .desc = {
        .head = QCAL_HEAD(qcal_observer),
        .name = "evaluation",
        .help = "quantize-dequantize error of candidate ranges (internal)",
        .stat_kind = "qcal.evaluation",
        .n_params = 1,
        .params = eval_params,
        .create = e_create,
        .observe = e_observe,
        .merge = e_merge,
        .serialize = e_serialize,
        .deserialize = e_deserialize,
        .finalize = e_finalize,
        .destroy = e_destroy,
    },
    .plugin = &core_plugin,
};

const reg_observer *eval_observer(void) { return &evaluation; }

/* ---- reading results --------------------------------------------------------------------- */

int eval_results(const hstat *st, uint64_t n, eval_result *out, qerror *e)
{
    const double *a[11];
    for (int i = 0; i < 11; i++) {
        const qcal_array *arr = hstat_find(&st->view, sum_names[i]);
        if (!arr || arr->dtype != QCAL_DTYPE_F64 || hstat_array_count(arr) != n)
            return qerror_set(e, QERR_SOFTWARE, "evaluation statistic: array %s malformed", sum_names[i]);
        a[i] = arr->data;
    }
    const qcal_array *used = hstat_find(&st->view, "layer_samples"), *sk = hstat_find(&st->view, "skipped");
    if (!used || !sk)
        return qerror_set(e, QERR_SOFTWARE, "evaluation statistic: layer counts missing");
    for (uint64_t k = 0; k < n; k++) {
        out[k].tensor = (qmath_err){(uint64_t)a[0][k], a[1][k], a[2][k], a[3][k], a[4][k]};
        out[k].layer = (qmath_err){(uint64_t)a[5][k], a[6][k], a[7][k], a[8][k], a[9][k]};
        out[k].ratio_sum = a[10][k];
        out[k].samples = (uint64_t) * (const double *)used->data;
        out[k].skipped = (uint64_t) * (const double *)sk->data;
    }
    return 0;
}

double eval_layer_error(const eval_result *r)
{
    return r->samples ? r->ratio_sum / (double)r->samples : NAN;
}
