/* The PuzzleLib-style layer (BatchNorm, BatchNorm1D/2D/3D) on top of the functional operations:
 * owns its parameters, running and saved statistics and accumulated gradients; applies the factor schedule
 * factor = max(init_factor / n, min_factor) and the gradient accumulation grad = scale*g + momentum*grad. */
#include "bn_ops.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_FIELDS 8

struct clnorm_batchnorm {
    clnorm_context *ctx;
    clnorm_batchnorm_config cfg; /* cfg.name points at name */
    char *name;
    cl_mem buf[N_FIELDS];  /* NULL: the field is absent (non-affine: the two gradients) */
    int written[N_FIELDS]; /* holds meaningful values (an 'empty' layer starts with none) */
    uint64_t n;            /* training forwards since create / reset */
    int last_ndim;         /* x shape of the last training forward (the saved statistics belong to it); 0: none
                              (no training forward, or the saved statistics last written by the host) */
    size_t last_shape[CLNORM_MAX_DIMS];
};

static const char *const field_names[N_FIELDS] = {"CLNORM_SCALE",       "CLNORM_BIAS",      "CLNORM_RUNNING_MEAN",
                                                  "CLNORM_RUNNING_VAR", "CLNORM_SAVE_MEAN", "CLNORM_SAVE_INVSTD",
                                                  "CLNORM_SCALE_GRAD",  "CLNORM_BIAS_GRAD"};

void clnorm_batchnorm_config_init(clnorm_batchnorm_config *cfg, int nd, size_t maps) {
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->nd = nd;
    cfg->maps = maps;
    cfg->epsilon = 1e-5f;
    cfg->init_factor = 1.0f;
    cfg->min_factor = 0.1f;
    cfg->sscale = 0.01f;
    cfg->affine = 1;
    cfg->name = NULL;
    cfg->empty = 0;
    cfg->inplace = 0;
    cfg->seed = 0;
    cfg->dtype = CLNORM_F32;
    cfg->layout = CLNORM_NCHW;
    cfg->activation = CLNORM_ACTIVATION_NONE;
}

static const char *dtype_name(clnorm_dtype d) {
    return d == CLNORM_F32 ? "CLNORM_F32" : d == CLNORM_F16 ? "CLNORM_F16" : d == CLNORM_BF16 ? "CLNORM_BF16" : "?";
}
static const char *layout_name(clnorm_layout l) {
    return l == CLNORM_NCHW ? "CLNORM_NCHW" : l == CLNORM_NHWC ? "CLNORM_NHWC" : "?";
}

static clnorm_status check_config(const clnorm_batchnorm_config *c) {
    if (c->nd < 0 || c->nd > 3)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.nd must be 0 (BatchNorm), 1, 2 or 3, got %d", c->nd);
    if (c->maps == 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.maps must be at least 1");
    if (c->maps > SIZE_MAX / sizeof(float))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.maps %zu is too large", c->maps);
    if (!(c->epsilon > 0.0f) || !isfinite(c->epsilon))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.epsilon must be finite and > 0, got %g", (double)c->epsilon);
    if (c->epsilon < FLT_MIN)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                       "cfg.epsilon %g is below FLT_MIN (%g): the operations refuse a subnormal epsilon",
                       (double)c->epsilon, (double)FLT_MIN);
    if (!(c->init_factor >= 0.0f && c->init_factor <= 1.0f))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.init_factor must be in [0, 1], got %g",
                       (double)c->init_factor);
    if (!(c->min_factor >= 0.0f && c->min_factor <= 1.0f))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.min_factor must be in [0, 1], got %g",
                       (double)c->min_factor);
    if (!(c->sscale >= 0.0f) || !isfinite(c->sscale))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.sscale must be finite and >= 0, got %g", (double)c->sscale);
    if (c->dtype != CLNORM_F32 && c->dtype != CLNORM_F16 && c->dtype != CLNORM_BF16)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.dtype %d is not a clnorm_dtype", (int)c->dtype);
    if (c->layout != CLNORM_NCHW && c->layout != CLNORM_NHWC)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.layout %d is not a clnorm_layout", (int)c->layout);
    if (c->activation != CLNORM_ACTIVATION_NONE && c->activation != CLNORM_ACTIVATION_RELU)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "cfg.activation %d is not a clnorm_activation",
                       (int)c->activation);
    return CLNORM_SUCCESS;
}

static int field_present(const clnorm_batchnorm *bn, clnorm_field f) {
    return (int)f >= 0 && (int)f < N_FIELDS && bn->buf[f] != NULL;
}

static clnorm_status write_field(clnorm_batchnorm *bn, clnorm_field f, const float *host) {
    cl_int err =
        clEnqueueWriteBuffer(bn->ctx->queue, bn->buf[f], CL_TRUE, 0, bn->cfg.maps * sizeof(float), host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clEnqueueWriteBuffer");
    bn->written[f] = 1;
    if (f == CLNORM_SAVE_MEAN || f == CLNORM_SAVE_INVSTD)
        bn->last_ndim = 0; /* statistics of no forward the layer saw: any batch may use them */
    return CLNORM_SUCCESS;
}

clnorm_status clnorm_batchnorm_create(clnorm_context *ctx, const clnorm_batchnorm_config *cfg, clnorm_batchnorm **out) {
    clnorm_status st;
    float *init = NULL;
    if (!out)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_batchnorm_create: out is NULL");
    *out = NULL;
    if (!ctx || !cfg)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_batchnorm_create: %s is NULL", ctx ? "cfg" : "ctx");
    if ((st = check_config(cfg)) != CLNORM_SUCCESS)
        return st;
    clnorm_batchnorm *bn = calloc(1, sizeof *bn);
    if (!bn)
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory creating a layer");
    bn->ctx = ctx;
    bn->cfg = *cfg;
    bn->cfg.name = NULL;
    if (cfg->name) {
        if (!(bn->name = malloc(strlen(cfg->name) + 1))) {
            st = cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory copying the name");
            goto fail;
        }
        strcpy(bn->name, cfg->name);
        bn->cfg.name = bn->name;
    }
    size_t bytes = cfg->maps * sizeof(float);
    if (bytes > ctx->max_alloc) {
        st = cn_fail(CLNORM_ERROR_DEVICE_MEMORY,
                     "cfg.maps %zu: %zu bytes per parameter exceed the device's "
                     "CL_DEVICE_MAX_MEM_ALLOC_SIZE",
                     cfg->maps, bytes);
        goto fail;
    }
    for (int f = 0; f < N_FIELDS; ++f) {
        /* a non-affine layer keeps scale (1) and bias (0), as PuzzleLib does, but never trains them */
        int affine_only = f == CLNORM_SCALE_GRAD || f == CLNORM_BIAS_GRAD;
        if (affine_only && !cfg->affine)
            continue;
        cl_int err;
        bn->buf[f] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (err != CL_SUCCESS) {
            bn->buf[f] = NULL;
            st = cn_cl_fail(err, "clCreateBuffer(layer parameter)");
            goto fail;
        }
    }
    if (!(init = malloc(bytes))) {
        st = cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory initialising the layer");
        goto fail;
    }
    /* gradients are accumulators: zero even for an 'empty' layer */
    for (size_t i = 0; i < cfg->maps; ++i)
        init[i] = 0.0f;
    if (cfg->affine && ((st = write_field(bn, CLNORM_SCALE_GRAD, init)) != CLNORM_SUCCESS ||
                        (st = write_field(bn, CLNORM_BIAS_GRAD, init)) != CLNORM_SUCCESS))
        goto fail;
    if (!cfg->empty) {
        if ((st = write_field(bn, CLNORM_RUNNING_MEAN, init)) != CLNORM_SUCCESS)
            goto fail;
        if ((st = write_field(bn, CLNORM_BIAS, init)) != CLNORM_SUCCESS)
            goto fail;
        for (size_t i = 0; i < cfg->maps; ++i)
            init[i] = 1.0f;
        if ((st = write_field(bn, CLNORM_RUNNING_VAR, init)) != CLNORM_SUCCESS)
            goto fail;
        if (cfg->affine) {
            cn_rng rng;
            cn_rng_seed(&rng, cfg->seed);
            for (size_t i = 0; i < cfg->maps; ++i)
                init[i] = (float)(1.0 + (double)cfg->sscale * cn_rng_normal(&rng));
        } /* else: all 1, as the running variance above */
        if ((st = write_field(bn, CLNORM_SCALE, init)) != CLNORM_SUCCESS)
            goto fail;
    }
    free(init);
    *out = bn;
    return CLNORM_SUCCESS;
fail:
    free(init);
    clnorm_batchnorm_destroy(bn);
    return st;
}

void clnorm_batchnorm_destroy(clnorm_batchnorm *bn) {
    if (!bn)
        return;
    for (int f = 0; f < N_FIELDS; ++f)
        if (bn->buf[f])
            clReleaseMemObject(bn->buf[f]);
    free(bn->name);
    free(bn);
}

/* ndim and maps as PuzzleLib checks them */
static clnorm_status check_data(const clnorm_batchnorm *bn, const clnorm_tensor *t, const char *what) {
    if (!t)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s is NULL", what);
    int want = bn->cfg.nd + 2;
    if (t->ndim != want)
        return cn_fail(CLNORM_ERROR_SHAPE, "Data must be %dd tensor (%s has ndim %d)", want, what, t->ndim);
    if (t->shape[1] != bn->cfg.maps)
        return cn_fail(CLNORM_ERROR_SHAPE, "Data has %zu maps (expected: %zu)", t->shape[1], bn->cfg.maps);
    if (t->dtype != bn->cfg.dtype || t->layout != bn->cfg.layout)
        return cn_fail(
            CLNORM_ERROR_INVALID_ARGUMENT, "%s: dtype %s, layout %s; the layer's (cfg.dtype, cfg.layout) are %s, %s",
            what, dtype_name(t->dtype), layout_name(t->layout), dtype_name(bn->cfg.dtype), layout_name(bn->cfg.layout));
    return CLNORM_SUCCESS;
}

static clnorm_status need(const clnorm_batchnorm *bn, clnorm_field f, const char *why) {
    if (bn->buf[f] && !bn->written[f])
        return cn_fail(CLNORM_ERROR_INVALID_STATE, "%s: %s has not been written (the layer was created 'empty')", why,
                       field_names[f]);
    return CLNORM_SUCCESS;
}

static void dims_text(int ndim, const size_t *shape, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && used < n; ++i)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %zu" : "%zu", shape[i]);
    if (used < n)
        snprintf(buf + used, n - used, ")");
}

static clnorm_bn_mode layer_mode(const clnorm_batchnorm *bn) {
    return bn->cfg.nd == 0 ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
}

/* a successful training forward (plain, _ex or from_stats): its statistics are saved, for the batch x */
static void saved_for(clnorm_batchnorm *bn, const clnorm_tensor *x) {
    bn->n++;
    bn->written[CLNORM_SAVE_MEAN] = bn->written[CLNORM_SAVE_INVSTD] = 1;
    bn->last_ndim = x->ndim;
    memcpy(bn->last_shape, x->shape, sizeof bn->last_shape);
}

/* every backward (plain, _ex, split-phase): x is the batch of the training forward whose statistics are saved */
static clnorm_status check_backward_shape(const clnorm_batchnorm *bn, const clnorm_tensor *x) {
    if (bn->last_ndim == 0)
        return CLNORM_SUCCESS;
    int same_shape = x->ndim == bn->last_ndim;
    for (int i = 0; same_shape && i < x->ndim; ++i)
        same_shape = x->shape[i] == bn->last_shape[i];
    if (same_shape)
        return CLNORM_SUCCESS;
    char got[160], want[160];
    dims_text(x->ndim, x->shape, got, sizeof got);
    dims_text(bn->last_ndim, bn->last_shape, want, sizeof want);
    return cn_fail(CLNORM_ERROR_SHAPE,
                   "backward: x has shape %s but the last training forward's x had %s (the saved statistics "
                   "belong to that batch)",
                   got, want);
}

clnorm_status clnorm_batchnorm_forward(clnorm_batchnorm *bn, int train, const clnorm_tensor *x,
                                       const clnorm_tensor *y) {
    return clnorm_batchnorm_forward_ex(bn, train, x, NULL, y);
}

clnorm_status clnorm_batchnorm_forward_ex(clnorm_batchnorm *bn, int train, const clnorm_tensor *x,
                                          const clnorm_tensor *z, const clnorm_tensor *y) {
    clnorm_status st;
    if (!bn)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "bn is NULL");
    if ((st = check_data(bn, x, "x")) != CLNORM_SUCCESS || (st = check_data(bn, y, "y")) != CLNORM_SUCCESS ||
        (z && (st = check_data(bn, z, "z")) != CLNORM_SUCCESS))
        return st;
    int same = x->buffer && cn_same_view(x, y);
    const char *why = train ? "training forward" : "inference forward";
    static const clnorm_field needed[] = {CLNORM_SCALE, CLNORM_BIAS, CLNORM_RUNNING_MEAN, CLNORM_RUNNING_VAR};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; ++i)
        if ((st = need(bn, needed[i], why)) != CLNORM_SUCCESS)
            return st;
    if (!train) {
        if (same && !bn->cfg.inplace)
            return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                           "y is x but the layer is not inplace (cfg.inplace = 1 allows writing y over x)");
        return clnorm_bn_forward_inference_ex(bn->ctx, layer_mode(bn), x, z, y, bn->buf[CLNORM_SCALE],
                                              bn->buf[CLNORM_BIAS], bn->buf[CLNORM_RUNNING_MEAN],
                                              bn->buf[CLNORM_RUNNING_VAR], bn->cfg.epsilon, bn->cfg.activation);
    }
    if (same)
        return cn_fail(CLNORM_ERROR_INVALID_STATE, "inplace in training: y is x, but backward needs x as it was");
    double factor = (double)bn->cfg.init_factor / (double)(bn->n + 1);
    if (factor < bn->cfg.min_factor)
        factor = bn->cfg.min_factor;
    st = clnorm_bn_forward_training_ex(bn->ctx, layer_mode(bn), x, z, y, bn->buf[CLNORM_SCALE], bn->buf[CLNORM_BIAS],
                                       factor, bn->cfg.epsilon, bn->buf[CLNORM_RUNNING_MEAN],
                                       bn->buf[CLNORM_RUNNING_VAR], bn->buf[CLNORM_SAVE_MEAN],
                                       bn->buf[CLNORM_SAVE_INVSTD], bn->cfg.activation);
    if (st == CLNORM_SUCCESS)
        saved_for(bn, x);
    return st;
}

clnorm_status clnorm_batchnorm_backward(clnorm_batchnorm *bn, const clnorm_tensor *x, const clnorm_tensor *dy,
                                        const clnorm_tensor *dx, float scale, float momentum) {
    return clnorm_batchnorm_backward_ex(bn, x, NULL, dy, dx, NULL, scale, momentum);
}

clnorm_status clnorm_batchnorm_backward_ex(clnorm_batchnorm *bn, const clnorm_tensor *x, const clnorm_tensor *y,
                                           const clnorm_tensor *dy, const clnorm_tensor *dx, const clnorm_tensor *dz,
                                           float scale, float momentum) {
    clnorm_status st;
    if (!bn)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "bn is NULL");
    if ((st = check_data(bn, x, "x")) != CLNORM_SUCCESS || (st = check_data(bn, dy, "dy")) != CLNORM_SUCCESS ||
        (dx && (st = check_data(bn, dx, "dx")) != CLNORM_SUCCESS) ||
        (y && (st = check_data(bn, y, "y")) != CLNORM_SUCCESS) ||
        (dz && (st = check_data(bn, dz, "dz")) != CLNORM_SUCCESS))
        return st;
    if (bn->cfg.activation == CLNORM_ACTIVATION_RELU && !y)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "y is NULL: the layer's activation is RELU and its backward "
                                                      "needs the forward's output (clnorm_batchnorm_backward_ex)");
    if (!isfinite(scale) || !isfinite(momentum))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "scale and momentum must be finite, got %g and %g", (double)scale,
                       (double)momentum);
    if (!bn->written[CLNORM_SAVE_MEAN] || !bn->written[CLNORM_SAVE_INVSTD])
        return cn_fail(CLNORM_ERROR_INVALID_STATE,
                       "backward before a training forward: no saved statistics (since create or reset)");
    if ((st = check_backward_shape(bn, x)) != CLNORM_SUCCESS ||
        (st = need(bn, CLNORM_SCALE, "backward")) != CLNORM_SUCCESS)
        return st;
    int affine = bn->cfg.affine != 0; /* non-affine: dx still uses the (never trained) scale */
    return cn_backward_ex(bn->ctx, layer_mode(bn), x, y, dy, dx, dz, bn->buf[CLNORM_SCALE], bn->buf[CLNORM_BIAS],
                          affine ? bn->buf[CLNORM_SCALE_GRAD] : NULL, affine ? bn->buf[CLNORM_BIAS_GRAD] : NULL,
                          bn->cfg.epsilon, bn->buf[CLNORM_SAVE_MEAN], bn->buf[CLNORM_SAVE_INVSTD], bn->cfg.activation,
                          scale, momentum);
}

static clnorm_status check_field(const clnorm_batchnorm *bn, clnorm_field f, const void *host, size_t count,
                                 const char *fn) {
    if (!bn || !host)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !bn ? "bn" : "host");
    if ((int)f < 0 || (int)f >= N_FIELDS)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s: field %d is not a clnorm_field", fn, (int)f);
    if (!field_present(bn, f))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                       "%s: the layer is not affine: it has no %s (its scale and bias "
                       "are never trained)",
                       fn, field_names[f]);
    if (count != bn->cfg.maps)
        return cn_fail(CLNORM_ERROR_SHAPE, "%s: count %zu, but %s holds %zu values", fn, count, field_names[f],
                       bn->cfg.maps);
    return CLNORM_SUCCESS;
}

clnorm_status clnorm_batchnorm_read(clnorm_batchnorm *bn, clnorm_field f, float *host, size_t count) {
    clnorm_status st = check_field(bn, f, host, count, "clnorm_batchnorm_read");
    if (st != CLNORM_SUCCESS || (unsigned)f >= N_FIELDS)
        return st;
    if (!bn->written[f])
        return cn_fail(CLNORM_ERROR_INVALID_STATE, "clnorm_batchnorm_read: %s holds nothing yet (%s)", field_names[f],
                       f == CLNORM_SAVE_MEAN || f == CLNORM_SAVE_INVSTD ? "no training forward since create or reset"
                                                                        : "the layer was created 'empty'");
    cl_int err =
        clEnqueueReadBuffer(bn->ctx->queue, bn->buf[f], CL_TRUE, 0, count * sizeof(float), host, 0, NULL, NULL);
    return err == CL_SUCCESS ? CLNORM_SUCCESS : cn_cl_fail(err, "clEnqueueReadBuffer");
}

clnorm_status clnorm_batchnorm_write(clnorm_batchnorm *bn, clnorm_field f, const float *host, size_t count) {
    clnorm_status st = check_field(bn, f, host, count, "clnorm_batchnorm_write");
    if (st != CLNORM_SUCCESS)
        return st;
    if (f == CLNORM_RUNNING_VAR)
        for (size_t i = 0; i < count; ++i)
            if (!(host[i] >= 0.0f))
                return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                               "clnorm_batchnorm_write: CLNORM_RUNNING_VAR[%zu] is %g; a variance must be >= 0 "
                               "(not negative, not NaN)",
                               i, (double)host[i]);
    return write_field(bn, f, host);
}

cl_mem clnorm_batchnorm_buffer(const clnorm_batchnorm *bn, clnorm_field f) {
    return bn && field_present(bn, f) ? bn->buf[f] : NULL;
}

size_t clnorm_batchnorm_param_count(const clnorm_batchnorm *bn) {
    return bn ? bn->cfg.maps : 0;
}
uint64_t clnorm_batchnorm_batches(const clnorm_batchnorm *bn) {
    return bn ? bn->n : 0;
}

clnorm_status clnorm_batchnorm_set_batches(clnorm_batchnorm *bn, uint64_t n) {
    if (!bn)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "bn is NULL");
    bn->n = n;
    return CLNORM_SUCCESS;
}
clnorm_status clnorm_batchnorm_config_get(const clnorm_batchnorm *bn, clnorm_batchnorm_config *out) {
    if (!bn || !out)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s is NULL", bn ? "out" : "bn");
    *out = bn->cfg;
    return CLNORM_SUCCESS;
}

const char *clnorm_batchnorm_name(const clnorm_batchnorm *bn) {
    return bn ? bn->name : NULL;
}

void clnorm_batchnorm_reset(clnorm_batchnorm *bn) {
    if (!bn)
        return;
    bn->n = 0;
    bn->written[CLNORM_SAVE_MEAN] = bn->written[CLNORM_SAVE_INVSTD] = 0;
}

/* ---- split-phase training (synchronised BatchNorm: clnorm_mpi, several devices) --------------------- */

clnorm_status clnorm_batchnorm_stats(clnorm_batchnorm *bn, const clnorm_tensor *x, cl_mem stats) {
    clnorm_status st;
    if (!bn)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "bn is NULL");
    if ((st = check_data(bn, x, "x")) != CLNORM_SUCCESS)
        return st;
    return clnorm_bn_stats(bn->ctx, layer_mode(bn), x, stats);
}

clnorm_status clnorm_batchnorm_forward_from_stats(clnorm_batchnorm *bn, const clnorm_tensor *x, const clnorm_tensor *y,
                                                  cl_mem stats) {
    clnorm_status st;
    if (!bn)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "bn is NULL");
    if ((st = check_data(bn, x, "x")) != CLNORM_SUCCESS || (st = check_data(bn, y, "y")) != CLNORM_SUCCESS)
        return st;
    static const clnorm_field needed[] = {CLNORM_SCALE, CLNORM_BIAS, CLNORM_RUNNING_MEAN, CLNORM_RUNNING_VAR};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; ++i)
        if ((st = need(bn, needed[i], "training forward")) != CLNORM_SUCCESS)
            return st;
    if (x->buffer && x->shape[0] > 0 && cn_same_view(x, y))
        return cn_fail(CLNORM_ERROR_INVALID_STATE, "inplace in training: y is x, but backward needs x as it was");
    double factor = (double)bn->cfg.init_factor / (double)(bn->n + 1);
    if (factor < bn->cfg.min_factor)
        factor = bn->cfg.min_factor;
    st = clnorm_bn_forward_training_from_stats(bn->ctx, layer_mode(bn), x, y, stats, bn->buf[CLNORM_SCALE],
                                               bn->buf[CLNORM_BIAS], factor, bn->cfg.epsilon,
                                               bn->buf[CLNORM_RUNNING_MEAN], bn->buf[CLNORM_RUNNING_VAR],
                                               bn->buf[CLNORM_SAVE_MEAN], bn->buf[CLNORM_SAVE_INVSTD]);
    if (st == CLNORM_SUCCESS && stats)
        saved_for(bn, x);
    return st;
}

/* the backward's common checks: data, saved statistics (of a forward of x's shape), scale written */
static clnorm_status check_split_backward(clnorm_batchnorm *bn, const clnorm_tensor *x, const clnorm_tensor *dy,
                                          const clnorm_tensor *dx) {
    clnorm_status st;
    if (!bn)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "bn is NULL");
    if ((st = check_data(bn, x, "x")) != CLNORM_SUCCESS || (st = check_data(bn, dy, "dy")) != CLNORM_SUCCESS ||
        (dx && (st = check_data(bn, dx, "dx")) != CLNORM_SUCCESS))
        return st;
    if (!bn->written[CLNORM_SAVE_MEAN] || !bn->written[CLNORM_SAVE_INVSTD])
        return cn_fail(CLNORM_ERROR_INVALID_STATE,
                       "backward before a training forward: no saved statistics (since create or reset)");
    if ((st = check_backward_shape(bn, x)) != CLNORM_SUCCESS)
        return st;
    return need(bn, CLNORM_SCALE, "backward");
}

clnorm_status clnorm_batchnorm_backward_reduce(clnorm_batchnorm *bn, const clnorm_tensor *x, const clnorm_tensor *dy,
                                               cl_mem sums) {
    clnorm_status st = check_split_backward(bn, x, dy, NULL);
    if (st != CLNORM_SUCCESS)
        return st;
    return clnorm_bn_backward_reduce(bn->ctx, layer_mode(bn), x, dy, bn->buf[CLNORM_SAVE_MEAN],
                                     bn->buf[CLNORM_SAVE_INVSTD], sums);
}

clnorm_status clnorm_batchnorm_backward_from_sums(clnorm_batchnorm *bn, const clnorm_tensor *x, const clnorm_tensor *dy,
                                                  const clnorm_tensor *dx, cl_mem sums, double count, float scale,
                                                  float momentum) {
    clnorm_status st = check_split_backward(bn, x, dy, dx);
    if (st != CLNORM_SUCCESS)
        return st;
    if (!isfinite(scale) || !isfinite(momentum))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "scale and momentum must be finite, got %g and %g", (double)scale,
                       (double)momentum);
    int affine = bn->cfg.affine != 0;
    return cn_backward_from_sums(bn->ctx, layer_mode(bn), x, dy, dx, bn->buf[CLNORM_SCALE], bn->buf[CLNORM_SAVE_MEAN],
                                 bn->buf[CLNORM_SAVE_INVSTD], sums, count, affine ? bn->buf[CLNORM_SCALE_GRAD] : NULL,
                                 affine ? bn->buf[CLNORM_BIAS_GRAD] : NULL, scale, momentum);
}

clnorm_context *clnorm_batchnorm_context(const clnorm_batchnorm *bn) {
    return bn ? bn->ctx : NULL;
}
