#include "ref_bn.h"

#include <math.h>
#include <stdlib.h>

static void dims(int ndim, const size_t *shape, size_t *B, size_t *C, size_t *S) {
    *B = shape[0];
    *C = ndim > 1 ? shape[1] : 1;
    size_t s = 1;
    for (int i = 2; i < ndim; i++)
        s *= shape[i];
    *S = s;
}

size_t ref_groups(clnorm_bn_mode mode, int ndim, const size_t *shape) {
    size_t B, C, S;
    dims(ndim, shape, &B, &C, &S);
    return mode == CLNORM_BN_SPATIAL ? C : C * S;
}

size_t ref_group_size(clnorm_bn_mode mode, int ndim, const size_t *shape) {
    size_t B, C, S;
    dims(ndim, shape, &B, &C, &S);
    return mode == CLNORM_BN_SPATIAL ? B * S : B;
}

size_t ref_group_of(clnorm_bn_mode mode, int ndim, const size_t *shape, size_t i) {
    size_t B, C, S;
    dims(ndim, shape, &B, &C, &S);
    return mode == CLNORM_BN_SPATIAL ? (i / S) % C : i % (C * S);
}

/* Iterate over a dense NCHW tensor: element i belongs to group g. */
#define FOR_EACH(mode, ndim, shape, i, g)                                                                              \
    for (size_t i = 0, n_ = ref_groups(mode, ndim, shape) * ref_group_size(mode, ndim, shape); i < n_; i++)            \
        for (size_t g = ref_group_of(mode, ndim, shape, i), once_ = 1; once_; once_ = 0)

void ref_bn_stats(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, double *mean, double *var) {
    size_t G = ref_groups(mode, ndim, shape), M = ref_group_size(mode, ndim, shape);
    for (size_t g = 0; g < G; g++)
        mean[g] = var[g] = 0.0;
    FOR_EACH(mode, ndim, shape, i, g) mean[g] += x[i];
    for (size_t g = 0; g < G; g++)
        mean[g] /= (double)M;
    FOR_EACH(mode, ndim, shape, i, g) {
        double d = x[i] - mean[g];
        var[g] += d * d;
    }
    for (size_t g = 0; g < G; g++)
        var[g] /= (double)M;
}

void ref_bn_forward_training(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, const float *scale,
                             const float *bias, double factor, double epsilon, const float *running_mean_in,
                             const float *running_var_in, double *y, double *mean_out, double *var_out,
                             double *invstd_out, double *rm_out, double *rv_out) {
    size_t G = ref_groups(mode, ndim, shape), M = ref_group_size(mode, ndim, shape);
    double *mean = malloc(G * sizeof *mean), *var = malloc(G * sizeof *var), *inv = malloc(G * sizeof *inv);
    ref_bn_stats(mode, ndim, shape, x, mean, var);
    for (size_t g = 0; g < G; g++)
        inv[g] = 1.0 / sqrt(var[g] + epsilon);
    if (y)
        FOR_EACH(mode, ndim, shape, i, g) {
            double s = scale ? scale[g] : 1.0, b = bias ? bias[g] : 0.0;
            y[i] = (x[i] - mean[g]) * inv[g] * s + b;
        }
    for (size_t g = 0; g < G; g++) {
        if (mean_out)
            mean_out[g] = mean[g];
        if (var_out)
            var_out[g] = var[g];
        if (invstd_out)
            invstd_out[g] = inv[g];
        if (running_mean_in && rm_out)
            rm_out[g] = (1.0 - factor) * running_mean_in[g] + factor * mean[g];
        if (running_var_in && rv_out)
            rv_out[g] = (1.0 - factor) * running_var_in[g] + factor * var[g] * (double)M / (double)(M - 1);
    }
    free(mean);
    free(var);
    free(inv);
}

void ref_bn_forward_inference(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, const float *scale,
                              const float *bias, const float *mean, const float *var, double epsilon, double *y) {
    FOR_EACH(mode, ndim, shape, i, g) {
        double s = scale ? scale[g] : 1.0, b = bias ? bias[g] : 0.0;
        y[i] = (x[i] - (double)mean[g]) / sqrt((double)var[g] + epsilon) * s + b;
    }
}

void ref_bn_backward(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, const float *dy,
                     const float *scale, double epsilon, const float *save_mean, const float *save_invstd, double *dx,
                     double *dscale, double *dbias) {
    size_t G = ref_groups(mode, ndim, shape), M = ref_group_size(mode, ndim, shape);
    double *mean = malloc(G * sizeof *mean), *inv = malloc(G * sizeof *inv);
    double *sdy = calloc(G, sizeof *sdy), *sdyx = calloc(G, sizeof *sdyx);
    if (save_mean && save_invstd) {
        for (size_t g = 0; g < G; g++) {
            mean[g] = save_mean[g];
            inv[g] = save_invstd[g];
        }
    } else {
        double *var = malloc(G * sizeof *var);
        ref_bn_stats(mode, ndim, shape, x, mean, var);
        for (size_t g = 0; g < G; g++)
            inv[g] = 1.0 / sqrt(var[g] + epsilon);
        free(var);
    }
    FOR_EACH(mode, ndim, shape, i, g) {
        double xh = (x[i] - mean[g]) * inv[g];
        sdy[g] += dy[i];
        sdyx[g] += dy[i] * xh;
    }
    if (dx)
        FOR_EACH(mode, ndim, shape, i, g) {
            double s = scale ? scale[g] : 1.0;
            double xh = (x[i] - mean[g]) * inv[g];
            dx[i] = s * inv[g] / (double)M * ((double)M * dy[i] - sdy[g] - xh * sdyx[g]);
        }
    for (size_t g = 0; g < G; g++) {
        if (dscale)
            dscale[g] = sdyx[g];
        if (dbias)
            dbias[g] = sdy[g];
    }
    free(mean);
    free(inv);
    free(sdy);
    free(sdyx);
}

/* ---- fused activation (issue 12) ---------------------------------------------------------------- */

void ref_bn_activate(size_t n, const double *ybn, const float *z, clnorm_activation act, double *y) {
    for (size_t i = 0; i < n; i++) {
        double v = ybn[i] + (z ? (double)z[i] : 0.0);
        y[i] = (act == CLNORM_ACTIVATION_RELU && v < 0.0) ? 0.0 : v;
    }
}

void ref_bn_act_grad(size_t n, const float *dy, const float *y, clnorm_activation act, float *g) {
    for (size_t i = 0; i < n; i++)
        g[i] = (act == CLNORM_ACTIVATION_RELU && !(y[i] > 0.0f)) ? 0.0f : dy[i];
}
