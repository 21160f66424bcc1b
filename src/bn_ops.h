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

/* clnorm_bn_backward_from_sums with dscale/dbias = alpha * gradient + beta * dscale/dbias (bn_split.c) */
clnorm_status cn_backward_from_sums(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                    const clnorm_tensor *dy, const clnorm_tensor *dx, cl_mem scale, cl_mem save_mean,
                                    cl_mem save_invstd, cl_mem sums, double count, cl_mem dscale, cl_mem dbias,
                                    double alpha, double beta);

/* ---- shared with the split-phase calls (bn_split.c) ------------------------------------------- */
/* The helpers keep their short names in bn_ops.c and bn_split.c; their symbols carry the cn_ prefix, so that
 * libclnorm.a defines no generic global names. */
#define check_epsilon cn_check_epsilon
#define check_like cn_check_like
#define check_mode cn_check_mode
#define check_pair cn_check_pair
#define elem_offset cn_elem_offset
#define enqueue_apply cn_enqueue_apply
#define enqueue_col_apply cn_enqueue_col_apply
#define kernels cn_kernels
#define launch cn_launch
#define launch_1d cn_launch_1d
#define launch_col_grid cn_launch_col_grid
#define launch_finalize cn_launch_finalize
#define make_plan cn_make_plan
#define round_up cn_round_up
#define row_chunks cn_row_chunks
#define shape_text cn_shape_text
#define slices_per_map cn_slices_per_map
typedef enum cn_path { PATH_FUSED_ROWS, PATH_SPLIT_ROWS, PATH_COLUMNS, PATH_SPLIT_COLUMNS } cn_path;
/* the operations choose_path plans for (their tuning: path_tuning in bn_ops.c) */
typedef enum cn_op {
    OP_TRAIN,    /* forward training */
    OP_INFER,    /* forward inference */
    OP_BACKWARD, /* backward */
    /* split phase (bn_split.c): always a split path, the partial kernels even when R or G is 1 */
    OP_SPLIT_STATS,  /* clnorm_bn_stats: statistics partials */
    OP_SPLIT_APPLY,  /* clnorm_bn_forward_training_from_stats: y from the coefficients */
    OP_SPLIT_REDUCE, /* clnorm_bn_backward_reduce: gradient-sum partials */
    OP_SPLIT_DX      /* clnorm_bn_backward_from_sums: dx from the coefficients */
} cn_op;
/* A tensor is viewed as (B, C, S); see bn_ops.c's head comment for the paths. */
typedef struct plan {
    size_t B, C, S; /* the (B, C, S) view */
    size_t groups;  /* statistics (length of every parameter vector) */
    size_t M;       /* values per statistic */
    int columns;    /* column kernels: the tensor is a (rows, groups) matrix with one statistic per column */
    size_t rows;    /* rows of that matrix (== M) */
    size_t pC, pS;  /* column j's parameter index is (j % pC) * pS + j / pC (NHWC per-activation) */
    unsigned pmap;  /* F_PMAP when that index is not the identity */
    size_t numel;
    cn_path path; /* choose_path: which kernels, and their sizes below */
    cl_uint R;    /* PATH_SPLIT_COLUMNS: row chunks */
    cl_uint G;    /* PATH_SPLIT_ROWS: slices per map */
} plan;

typedef struct {
    size_t size;
    const void *ptr;
} karg;
#define A_MEM(m) ((karg){sizeof(cl_mem), &(cl_mem){(m)}})
#define A_U64(v) ((karg){sizeof(cl_ulong), &(cl_ulong){(cl_ulong)(v)}})
#define A_U32(v) ((karg){sizeof(cl_uint), &(cl_uint){(cl_uint)(v)}})
#define A_F32(v) ((karg){sizeof(cl_float), &(cl_float){(cl_float)(v)}})
#define NARGS(a) ((cl_uint)(sizeof(a) / sizeof((a)[0])))

clnorm_status check_mode(clnorm_bn_mode mode);
clnorm_status check_epsilon(double eps);
clnorm_status make_plan(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, const char *name, plan *p);
void shape_text(const clnorm_tensor *t, char *buf, size_t n);
clnorm_status check_like(clnorm_context *ctx, const clnorm_tensor *x, const clnorm_tensor *t, const char *name);
clnorm_status check_pair(clnorm_context *ctx, cl_mem a, cl_mem b, const char *na, const char *nb, size_t count,
                         int *present);
clnorm_status launch(clnorm_context *ctx, cl_kernel k, cl_uint dims, const size_t *global, const size_t *local,
                     const karg *args, cl_uint nargs);
size_t round_up(size_t v, size_t m);
clnorm_status launch_1d(clnorm_context *ctx, cl_kernel k, size_t items, size_t local, const karg *args, cl_uint nargs);
size_t elem_offset(const clnorm_tensor *t);
cl_uint slices_per_map(const clnorm_context *ctx, const plan *p);
/* the kernels of one call in a program variant (cn_variant: the dtype; streaming or plain stores by the bytes of the
 * call's tensors) */
clnorm_status kernels(clnorm_context *ctx, int variant, const cn_kernel_id *ids, cl_kernel *out, int n);
clnorm_status launch_finalize(clnorm_context *ctx, cl_kernel k, size_t C, const karg *args, cl_uint nargs);
clnorm_status enqueue_apply(clnorm_context *ctx, const plan *p, cl_kernel k, const clnorm_tensor *x,
                            const clnorm_tensor *dy, const clnorm_tensor *out, cl_mem scale, cl_mem bias, cl_mem mean,
                            cl_mem var, cl_mem coef, double eps, unsigned flags, const clnorm_tensor *aux);
#define choose_path cn_choose_path
void choose_path(const clnorm_context *ctx, plan *p, cn_op op);
cl_uint row_chunks(const clnorm_context *ctx, const plan *p, size_t gpu_rows, size_t gpu_min_chunks);
clnorm_status launch_col_grid(clnorm_context *ctx, cl_kernel k, const plan *p, cl_uint R, const karg *args,
                              cl_uint nargs);
clnorm_status enqueue_col_apply(clnorm_context *ctx, const plan *p, cl_uint R, cl_kernel k, const clnorm_tensor *x,
                                const clnorm_tensor *dy, const clnorm_tensor *out, cl_mem scale, cl_mem bias,
                                cl_mem mean, cl_mem var, cl_mem coef, double eps, unsigned flags,
                                const clnorm_tensor *aux);
#endif
