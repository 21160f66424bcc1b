/* The functional operations as the layer uses them (bn_ops.c). */
#ifndef CLNORM_BN_OPS_H
#define CLNORM_BN_OPS_H
#include "internal.h"

clnorm_status cn_forward_training(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                  const clnorm_tensor *y, cl_mem scale, cl_mem bias, double factor, double epsilon,
                                  cl_mem running_mean, cl_mem running_var, cl_mem save_mean, cl_mem save_invstd);
/* dscale/dbias = alpha * gradient + beta * dscale/dbias (beta == 0: the old values are not read) */
clnorm_status cn_backward(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, const clnorm_tensor *dy,
                          const clnorm_tensor *dx, cl_mem scale, cl_mem dscale, cl_mem dbias, double epsilon,
                          cl_mem save_mean, cl_mem save_invstd, double alpha, double beta);
/* the fused backward (issue 12): clnorm_bn_backward_ex with the layer's alpha / beta */
clnorm_status cn_backward_ex(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, const clnorm_tensor *y,
                             const clnorm_tensor *dy, const clnorm_tensor *dx, const clnorm_tensor *dz, cl_mem scale,
                             cl_mem bias, cl_mem dscale, cl_mem dbias, double epsilon, cl_mem save_mean,
                             cl_mem save_invstd, clnorm_activation activation, double alpha, double beta);
#endif
