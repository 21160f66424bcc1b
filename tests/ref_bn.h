/*
 * Double-precision host reference of SEMANTICS.md (shared/SEMANTICS.md): batch normalization
 * forward (training, inference) and backward, SPATIAL and PER_ACTIVATION, dense NCHW float input.
 * Every output is double; inputs are the float values the device sees.
 */
#ifndef CLNORM_REF_BN_H
#define CLNORM_REF_BN_H

#include <stddef.h>

#include "clnorm.h"

/* Number of independent groups (= length of the parameter vectors) and values per group (M). */
size_t ref_groups(clnorm_bn_mode mode, int ndim, const size_t *shape);
size_t ref_group_size(clnorm_bn_mode mode, int ndim, const size_t *shape);
/* Group of element i of a dense NCHW tensor. */
size_t ref_group_of(clnorm_bn_mode mode, int ndim, const size_t *shape, size_t i);

/* Batch statistics: mean and biased variance per group. */
void ref_bn_stats(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, double *mean, double *var);

/* Forward training. scale/bias NULL: 1/0. running_mean_in/var_in NULL: the running outputs are not computed
   (rm_out/rv_out may be NULL). mean/var (biased)/invstd outputs may be NULL. */
void ref_bn_forward_training(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, const float *scale,
                             const float *bias, double factor, double epsilon, const float *running_mean_in,
                             const float *running_var_in, double *y, double *mean, double *var, double *invstd,
                             double *rm_out, double *rv_out);

/* Forward inference with the given (float) statistics. */
void ref_bn_forward_inference(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, const float *scale,
                              const float *bias, const float *mean, const float *var, double epsilon, double *y);

/* Backward. save_mean/save_invstd NULL: recomputed from x in double. scale NULL: 1.
   dx, dscale, dbias may each be NULL. */
void ref_bn_backward(clnorm_bn_mode mode, int ndim, const size_t *shape, const float *x, const float *dy,
                     const float *scale, double epsilon, const float *save_mean, const float *save_invstd, double *dx,
                     double *dscale, double *dbias);

/* Fused activation (issue 12): y = act(ybn + z) (z NULL: 0; RELU: v < 0 gives 0, NaN stays NaN), and the
   backward's g = dy where the stored forward output y > 0 (RELU; y <= 0 or NaN gives 0), else dy. */
void ref_bn_activate(size_t n, const double *ybn, const float *z, clnorm_activation act, double *y);
void ref_bn_act_grad(size_t n, const float *dy, const float *y, clnorm_activation act, float *g);

#endif
