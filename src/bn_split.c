/* Split-phase statistics: the building blocks of synchronised BatchNorm (several devices, MPI ranks, a framework's
 * own collective). Validate everything, plan with bn_ops.c's plan, then enqueue the existing partial kernels and
 * the finishing kernels of cl/bn_split.cl:
 *   clnorm_bn_stats                        partials -> (count, mean, m2) block
 *   clnorm_bn_stats_merge                  blocks -> one block (Chan, part order)
 *   clnorm_bn_forward_training_from_stats  merged block -> running / saved statistics, coefficients -> bn_apply
 *   clnorm_bn_backward_reduce              backward partials -> (sum dy, sum dy * xhat) block
 *   clnorm_bn_backward_from_sums           global sums -> dscale / dbias, dx coefficients -> bn_apply
 * Each call: validate, split_plan, choose_path with its cn_op (OP_SPLIT_STATS, OP_SPLIT_APPLY, OP_SPLIT_REDUCE,
 * OP_SPLIT_DX; their sizes are in bn_ops.c's path_tuning), then switch on the path, always a split one:
 *   PATH_SPLIT_ROWS (NCHW SPATIAL, S > 1): bn_stats_partial / bn_bwd_partial over p.G slices per map, then bn_apply;
 *   PATH_SPLIT_COLUMNS (everything else): bn_col_partial / bn_col_bwd_partial over p.R row chunks, then bn_col_apply.
 * The partial kernels are used even when G or R is 1 (the one-launch kernels do not give partials).
 * A batch of 0 is allowed: blocks of zeros, and only the running / saved statistics or parameter gradients. */
#include "bn_ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- validation ------------------------------------------------------------------------------------ */

/* make_plan, but a view with batch 0 is allowed (*empty = 1: only groups, M = 0 and the shape are meaningful) */
static clnorm_status split_plan(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, plan *p, int *empty) {
    *empty = 0;
    if (!(x && x->ndim >= 2 && x->ndim <= CLNORM_MAX_DIMS && x->shape[0] == 0))
        return make_plan(ctx, mode, x, "x", p);
    if (!ctx)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "ctx is NULL");
    clnorm_status st = check_mode(mode);
    if (st == CLNORM_SUCCESS)
        st = cn_check_tensor_empty(ctx, x, "x");
    if (st != CLNORM_SUCCESS)
        return st;
    memset(p, 0, sizeof *p);
    p->C = x->shape[1];
    p->S = 1;
    for (int i = 2; i < x->ndim; ++i)
        p->S *= x->shape[i];
    p->groups = mode == CLNORM_BN_SPATIAL ? p->C : p->C * p->S;
    *empty = 1;
    return CLNORM_SUCCESS;
}

/* groups * per floats; NULL (validate only) is fine when optional */
static clnorm_status check_block(clnorm_context *ctx, cl_mem m, size_t groups, size_t per, const char *name) {
    if (groups > SIZE_MAX / sizeof(float) / per)
        return cn_fail(CLNORM_ERROR_SHAPE, "%s: %zu groups of %zu floats overflow size_t", name, groups, per);
    return cn_check_param(ctx, m, groups * per, name);
}

static cn_region region_block(cl_mem m, size_t groups, size_t per, const char *name, int out) {
    return cn_region_param(m, groups * per, name, out);
}

/* the partials' layout (see cl/bn_split.cl): group stride, second-value offset, part stride, shift stride */
typedef struct {
    cl_ulong gs, vo, ps, shs;
    cl_uint P;
} parts_layout;

static parts_layout rows_layout(const plan *p, cl_uint G) {
    parts_layout l = {2 * (cl_ulong)G, 1, 2, p->S, G};
    return l;
}
static parts_layout cols_layout(const plan *p, cl_uint R) {
    parts_layout l = {1, p->groups, 2 * (cl_ulong)p->groups, 1, R};
    return l;
}

/* a path choose_path does not give a split-phase operation */
static clnorm_status bad_path(const plan *p, const char *call) {
    return cn_fail(CLNORM_ERROR_OPENCL, "internal error: %s: the plan's path %d is not a split path", call,
                   (int)p->path);
}

/* The tensors counted for the program variant (cn_variant) of every split-phase call: those of the sequence's
 * elementwise passes (x, dy, dx), whatever the call, so that its calls share one program (bn_split.cl's kernels are
 * one program per variant). */
#define SPLIT_TENSORS 3

/* The kernels of a split-phase apply (op OP_SPLIT_APPLY or OP_SPLIT_DX) on the path choose_path gives p: the
 * coefficients kernel coef_kernel, then (n == 2) the elementwise pass of that path. An empty plan (batch 0, no
 * columns) takes PATH_SPLIT_ROWS and only fetches the coefficients kernel (n == 1). */
static clnorm_status apply_kernels(clnorm_context *ctx, plan *p, cn_op op, cn_kernel_id coef_kernel, clnorm_dtype dt,
                                   cl_kernel *k, int n, const char *call) {
    cn_kernel_id ids[2] = {coef_kernel, K_APPLY};
    choose_path(ctx, p, op);
    switch (p->path) {
    case PATH_SPLIT_COLUMNS:
        ids[1] = K_COL_APPLY;
        break;
    case PATH_SPLIT_ROWS:
        break;
    default:
        return bad_path(p, call);
    }
    return kernels(ctx, cn_variant(ctx, dt, p->numel, SPLIT_TENSORS), ids, k, n);
}

static clnorm_status fill_zero(clnorm_context *ctx, cl_mem m, size_t bytes) {
    cl_float zero = 0.0f;
    cl_int err = clEnqueueFillBuffer(ctx->queue, m, &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
    return err == CL_SUCCESS ? CLNORM_SUCCESS : cn_cl_fail(err, "clEnqueueFillBuffer");
}

/* ---- statistics -------------------------------------------------------------------------------------- */

clnorm_status clnorm_bn_stats(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, cl_mem stats) {
    plan p;
    int empty;
    clnorm_status st = split_plan(ctx, mode, x, &p, &empty);
    if (st == CLNORM_SUCCESS && stats)
        st = check_block(ctx, stats, p.groups, 3, "stats");
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {cn_region_view(empty ? NULL : x, "x", 0), region_block(stats, p.groups, 3, "stats", 1)};
        st = cn_check_regions(r, 2);
    }
    if (st != CLNORM_SUCCESS || !stats)
        return st;
    if (empty)
        return fill_zero(ctx, stats, p.groups * 3 * sizeof(float));

    cl_kernel k[2];
    cl_mem part;
    parts_layout l;
    choose_path(ctx, &p, OP_SPLIT_STATS);
    switch (p.path) {
    case PATH_SPLIT_COLUMNS: {
        static const cn_kernel_id ids[] = {K_COL_PARTIAL, K_SPLIT_STATS};
        const cl_uint R = p.R;
        if ((st = kernels(ctx, cn_variant(ctx, x->dtype, p.numel, SPLIT_TENSORS), ids, k, 2)) != CLNORM_SUCCESS ||
            (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, R * p.groups * 2 * sizeof(float), &part)) != CLNORM_SUCCESS)
            return st;
        karg a1[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_U64(p.rows), A_U64(p.groups), A_U32(R), A_MEM(part)};
        if ((st = launch_col_grid(ctx, k[0], &p, R, a1, NARGS(a1))) != CLNORM_SUCCESS)
            return st;
        l = cols_layout(&p, R);
        break;
    }
    case PATH_SPLIT_ROWS: {
        static const cn_kernel_id ids[] = {K_STATS_PARTIAL, K_SPLIT_STATS};
        const cl_uint G = p.G;
        if ((st = kernels(ctx, cn_variant(ctx, x->dtype, p.numel, SPLIT_TENSORS), ids, k, 2)) != CLNORM_SUCCESS ||
            (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, p.C * G * 2 * sizeof(float), &part)) != CLNORM_SUCCESS)
            return st;
        size_t gp[2] = {G * ctx->wg, p.C}, lp[2] = {ctx->wg, 1};
        karg a1[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_U64(p.B), A_U64(p.C), A_U64(p.S), A_U32(G),
                     A_MEM(part)};
        if ((st = launch(ctx, k[0], 2, gp, lp, a1, NARGS(a1))) != CLNORM_SUCCESS)
            return st;
        l = rows_layout(&p, G);
        break;
    }
    default:
        return bad_path(&p, "clnorm_bn_stats");
    }
    karg a2[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_MEM(part),   A_U32(l.P),  A_U64(p.M),
                 A_U64(p.groups),  A_U64(l.gs),           A_U64(l.vo),   A_U64(l.ps), A_U64(l.shs),
                 A_U64(p.pC),      A_U64(p.pS),           A_U32(p.pmap), A_MEM(stats)};
    return launch_finalize(ctx, k[1], p.groups, a2, NARGS(a2));
}

clnorm_status clnorm_bn_stats_merge(clnorm_context *ctx, size_t parts, size_t groups, cl_mem blocks, cl_mem merged) {
    if (!ctx)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "ctx is NULL");
    if (parts == 0 || parts > 0xffffffffu)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "parts must be 1..4294967295, got %zu", parts);
    if (groups == 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "groups must be at least 1, got 0");
    if (groups > SIZE_MAX / 3 / sizeof(float) / parts)
        return cn_fail(CLNORM_ERROR_SHAPE, "blocks: %zu parts of %zu groups overflow size_t", parts, groups);
    clnorm_status st = check_block(ctx, blocks, parts * groups, 3, "blocks");
    if (st == CLNORM_SUCCESS)
        st = check_block(ctx, merged, groups, 3, "merged");
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {region_block(blocks, parts * groups, 3, "blocks", 0),
                               region_block(merged, groups, 3, "merged", 1)};
        st = cn_check_regions(r, 2);
    }
    if (st != CLNORM_SUCCESS)
        return st;
    cl_kernel k;
    static const cn_kernel_id ids[] = {K_SPLIT_MERGE};
    /* no tensor written: either F32 split program will do, the plain-store one when it is built already */
    int variant = CLNORM_F32;
    for (int id = K_SPLIT_STATS; id <= K_SPLIT_BWD_COEF; ++id)
        if (ctx->kernel_table[CN_PLAIN_VARIANT(CLNORM_F32)][id])
            variant = CN_PLAIN_VARIANT(CLNORM_F32);
    if ((st = kernels(ctx, variant, ids, &k, 1)) != CLNORM_SUCCESS)
        return st;
    karg a[] = {A_MEM(blocks), A_U32(parts), A_U64(groups), A_MEM(merged)};
    return launch_1d(ctx, k, groups, 64, a, NARGS(a));
}

clnorm_status clnorm_bn_stats_merge_host(size_t parts, size_t groups, const float *blocks, float *merged) {
    if (!blocks || !merged)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s is NULL", !blocks ? "blocks" : "merged");
    if (parts == 0 || groups == 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s must be at least 1, got 0", parts == 0 ? "parts" : "groups");
    if (groups > SIZE_MAX / 3 / sizeof(float) / parts)
        return cn_fail(CLNORM_ERROR_SHAPE, "blocks: %zu parts of %zu groups overflow size_t", parts, groups);
    for (size_t q = 0; q < parts; ++q)
        for (size_t j = 0; j < groups; ++j) {
            float n = blocks[(q * groups + j) * 3];
            if (!(n >= 0.0f) || isinf(n) || n != floorf(n))
                return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                               "blocks: part %zu, group %zu has count %g (expected a whole number >= 0)", q, j,
                               (double)n);
        }
    for (size_t j = 0; j < groups; ++j) {
        /* Chan's merge in double, shifted by the first non-empty part's mean; part order, empty parts skipped */
        double n = 0.0, mean = 0.0, m2 = 0.0, K = 0.0;
        for (size_t q = 0; q < parts; ++q) {
            const float *b = blocks + (q * groups + j) * 3;
            double nb = b[0];
            if (nb == 0.0)
                continue;
            if (n == 0.0)
                K = b[1];
            double nt = n + nb, d = ((double)b[1] - K) - mean;
            mean += d * (nb / nt);
            m2 += (double)b[2] + d * d * (n * nb / nt);
            n = nt;
        }
        merged[3 * j] = (float)n;
        merged[3 * j + 1] = n > 0.0 ? (float)(K + mean) : 0.0f;
        merged[3 * j + 2] = n > 0.0 ? (float)(m2 < 0.0 ? 0.0 : m2) : 0.0f;
    }
    return CLNORM_SUCCESS;
}

/* ---- forward ----------------------------------------------------------------------------------------- */

clnorm_status clnorm_bn_forward_training_from_stats(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                    const clnorm_tensor *y, cl_mem stats, cl_mem scale, cl_mem bias,
                                                    double factor, double epsilon, cl_mem running_mean,
                                                    cl_mem running_var, cl_mem save_mean, cl_mem save_invstd) {
    plan p;
    int empty, affine, running, save, same = 0;
    clnorm_status st = split_plan(ctx, mode, x, &p, &empty);
    if (st == CLNORM_SUCCESS)
        st = check_like(ctx, x, y, "y");
    if (st == CLNORM_SUCCESS && !empty)
        st = cn_check_overlap(x, "x", y, "y", &same);
    if (st == CLNORM_SUCCESS)
        st = check_epsilon(epsilon);
    if (st == CLNORM_SUCCESS && (!(factor >= 0.0 && factor <= 1.0)))
        st = cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "factor must be in [0, 1], got %g", factor);
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, scale, bias, "scale", "bias", p.groups, &affine);
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, running_mean, running_var, "running_mean", "running_var", p.groups, &running);
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, save_mean, save_invstd, "save_mean", "save_invstd", p.groups, &save);
    if (st == CLNORM_SUCCESS && stats)
        st = check_block(ctx, stats, p.groups, 3, "stats");
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {cn_region_view(empty ? NULL : x, "x", 0),
                               cn_region_view(empty ? NULL : y, "y", 1),
                               region_block(stats, p.groups, 3, "stats", 0),
                               cn_region_param(scale, p.groups, "scale", 0),
                               cn_region_param(bias, p.groups, "bias", 0),
                               cn_region_param(running_mean, p.groups, "running_mean", 1),
                               cn_region_param(running_var, p.groups, "running_var", 1),
                               cn_region_param(save_mean, p.groups, "save_mean", 1),
                               cn_region_param(save_invstd, p.groups, "save_invstd", 1)};
        st = cn_check_regions(r, (int)(sizeof r / sizeof r[0]));
    }
    if (st != CLNORM_SUCCESS || !stats)
        return st;
    /* the counts: read back (blocking) and checked before anything is enqueued */
    float *host = malloc(p.groups * 3 * sizeof(float));
    if (!host)
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory reading the statistics block");
    cl_int err = clEnqueueReadBuffer(ctx->queue, stats, CL_TRUE, 0, p.groups * 3 * sizeof(float), host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        st = cn_cl_fail(err, "clEnqueueReadBuffer(stats)");
    for (size_t j = 0; st == CLNORM_SUCCESS && j < p.groups; ++j) {
        float n = host[3 * j];
        if (!(n >= 2.0f) || isinf(n))
            st = cn_fail(CLNORM_ERROR_SHAPE,
                         "stats: group %zu counts %g values: training needs at least 2 values per statistic over "
                         "all parts",
                         j, (double)n);
        else if (n < (float)p.M) /* counts are floats: compare the rounded values (monotonic) */
            st = cn_fail(CLNORM_ERROR_SHAPE,
                         "stats: group %zu counts %g values, fewer than x's own %zu (a merged block of every part, "
                         "this one included, is expected)",
                         j, (double)n, p.M);
    }
    free(host);
    if (st != CLNORM_SUCCESS)
        return st;

    cl_kernel k[2];
    cl_mem scoef = NULL;
    if ((st = apply_kernels(ctx, &p, OP_SPLIT_APPLY, K_SPLIT_COEF, x->dtype, k, empty ? 1 : 2,
                            "clnorm_bn_forward_training_from_stats")) != CLNORM_SUCCESS ||
        (!empty &&
         (st = cn_scratch(ctx, CN_SCRATCH_STATS, p.groups * CN_COEF_STRIDE * sizeof(float), &scoef)) != CLNORM_SUCCESS))
        return st;
    unsigned flags =
        (affine ? F_AFFINE : 0) | (running ? F_RUNNING : 0) | (save ? F_SAVE : 0) | (empty ? 0 : F_COEF | p.pmap);
    if (empty && !running && !save)
        return CLNORM_SUCCESS;
    karg a[] = {A_MEM(stats),
                A_U64(p.groups),
                A_MEM(scale),
                A_MEM(bias),
                A_MEM(running_mean),
                A_MEM(running_var),
                A_MEM(save_mean),
                A_MEM(save_invstd),
                A_MEM(scoef),
                A_F32(factor),
                A_F32(epsilon),
                A_U64(empty ? p.groups : p.pC),
                A_U64(empty ? 1 : p.pS),
                A_U32(flags)};
    if ((st = launch_1d(ctx, k[0], p.groups, 64, a, NARGS(a))) != CLNORM_SUCCESS || empty)
        return st;
    if (p.path == PATH_SPLIT_COLUMNS) /* (the path was checked above) */
        return enqueue_col_apply(ctx, &p, p.R, k[1], x, NULL, y, NULL, NULL, NULL, NULL, scoef, epsilon, F_COEF, NULL);
    return enqueue_apply(ctx, &p, k[1], x, NULL, y, NULL, NULL, NULL, NULL, scoef, epsilon, F_COEF, NULL);
}

/* ---- backward ---------------------------------------------------------------------------------------- */

/* save_mean and save_invstd: required (the global statistics of the forward) */
static clnorm_status check_saved(clnorm_context *ctx, cl_mem save_mean, cl_mem save_invstd, size_t groups) {
    if (!save_mean || !save_invstd)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                       "%s is NULL: the split-phase backward needs the global statistics the forward saved",
                       !save_mean ? "save_mean" : "save_invstd");
    clnorm_status st = cn_check_param(ctx, save_mean, groups, "save_mean");
    return st != CLNORM_SUCCESS ? st : cn_check_param(ctx, save_invstd, groups, "save_invstd");
}

clnorm_status clnorm_bn_backward_reduce(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                        const clnorm_tensor *dy, cl_mem save_mean, cl_mem save_invstd, cl_mem sums) {
    plan p;
    int empty;
    clnorm_status st = split_plan(ctx, mode, x, &p, &empty);
    if (st == CLNORM_SUCCESS)
        st = check_like(ctx, x, dy, "dy");
    if (st == CLNORM_SUCCESS)
        st = check_saved(ctx, save_mean, save_invstd, p.groups);
    if (st == CLNORM_SUCCESS && sums)
        st = check_block(ctx, sums, p.groups, 2, "sums");
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {cn_region_view(empty ? NULL : x, "x", 0), cn_region_view(empty ? NULL : dy, "dy", 0),
                               cn_region_param(save_mean, p.groups, "save_mean", 0),
                               cn_region_param(save_invstd, p.groups, "save_invstd", 0),
                               region_block(sums, p.groups, 2, "sums", 1)};
        st = cn_check_regions(r, (int)(sizeof r / sizeof r[0]));
    }
    if (st != CLNORM_SUCCESS || !sums)
        return st;
    if (empty)
        return fill_zero(ctx, sums, p.groups * 2 * sizeof(float));

    cl_kernel k[2];
    cl_mem part;
    parts_layout l;
    choose_path(ctx, &p, OP_SPLIT_REDUCE);
    switch (p.path) {
    case PATH_SPLIT_COLUMNS: {
        static const cn_kernel_id ids[] = {K_COL_BWD_PARTIAL, K_SPLIT_SUMS};
        const cl_uint R = p.R;
        if ((st = kernels(ctx, cn_variant(ctx, x->dtype, p.numel, SPLIT_TENSORS), ids, k, 2)) != CLNORM_SUCCESS ||
            (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, R * p.groups * 2 * sizeof(float), &part)) != CLNORM_SUCCESS)
            return st;
        karg a1[] = {A_MEM(x->buffer),   A_U64(elem_offset(x)),
                     A_MEM(dy->buffer),  A_U64(elem_offset(dy)),
                     A_MEM(NULL),        A_U64(0), /* y, dz: no activation mask, no dz */
                     A_MEM(NULL),        A_U64(0),
                     A_U64(p.rows),      A_U64(p.groups),
                     A_U32(R),           A_MEM(save_mean),
                     A_MEM(save_invstd), A_MEM(NULL),
                     A_U64(p.pC),        A_U64(p.pS),
                     A_U32(p.pmap),      A_MEM(part)};
        if ((st = launch_col_grid(ctx, k[0], &p, R, a1, NARGS(a1))) != CLNORM_SUCCESS)
            return st;
        l = cols_layout(&p, R);
        break;
    }
    case PATH_SPLIT_ROWS: {
        static const cn_kernel_id ids[] = {K_BWD_PARTIAL, K_SPLIT_SUMS};
        const cl_uint G = p.G;
        if ((st = kernels(ctx, cn_variant(ctx, x->dtype, p.numel, SPLIT_TENSORS), ids, k, 2)) != CLNORM_SUCCESS ||
            (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, p.C * G * 2 * sizeof(float), &part)) != CLNORM_SUCCESS)
            return st;
        size_t gp[2] = {G * ctx->wg, p.C}, lp[2] = {ctx->wg, 1};
        karg a1[] = {A_MEM(x->buffer),  A_U64(elem_offset(x)),
                     A_MEM(dy->buffer), A_U64(elem_offset(dy)),
                     A_MEM(NULL),       A_U64(0), /* y, dz: no activation mask, no dz */
                     A_MEM(NULL),       A_U64(0),
                     A_U64(p.B),        A_U64(p.C),
                     A_U64(p.S),        A_U32(G),
                     A_MEM(save_mean),  A_MEM(save_invstd),
                     A_MEM(NULL),       A_U32(0),
                     A_MEM(part)};
        if ((st = launch(ctx, k[0], 2, gp, lp, a1, NARGS(a1))) != CLNORM_SUCCESS)
            return st;
        l = rows_layout(&p, G);
        break;
    }
    default:
        return bad_path(&p, "clnorm_bn_backward_reduce");
    }
    karg a2[] = {A_MEM(part),        A_U32(l.P),  A_U64(p.groups), A_U64(l.gs),   A_U64(l.vo), A_U64(l.ps),
                 A_MEM(save_invstd), A_U64(p.pC), A_U64(p.pS),     A_U32(p.pmap), A_MEM(sums)};
    return launch_finalize(ctx, k[1], p.groups, a2, NARGS(a2));
}

clnorm_status cn_backward_from_sums(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                    const clnorm_tensor *dy, const clnorm_tensor *dx, cl_mem scale, cl_mem save_mean,
                                    cl_mem save_invstd, cl_mem sums, double count, cl_mem dscale, cl_mem dbias,
                                    double alpha, double beta) {
    plan p;
    int empty, grads, same;
    clnorm_status st = split_plan(ctx, mode, x, &p, &empty);
    if (st == CLNORM_SUCCESS)
        st = check_like(ctx, x, dy, "dy");
    if (st == CLNORM_SUCCESS && dx)
        st = check_like(ctx, x, dx, "dx");
    if (st == CLNORM_SUCCESS && dx && !empty)
        st = cn_check_overlap(x, "x", dx, "dx", &same);
    if (st == CLNORM_SUCCESS && dx && !empty)
        st = cn_check_overlap(dy, "dy", dx, "dx", &same);
    if (st == CLNORM_SUCCESS && scale)
        st = cn_check_param(ctx, scale, p.groups, "scale");
    if (st == CLNORM_SUCCESS)
        st = check_saved(ctx, save_mean, save_invstd, p.groups);
    if (st == CLNORM_SUCCESS && sums)
        st = check_block(ctx, sums, p.groups, 2, "sums");
    if (st == CLNORM_SUCCESS && (!isfinite(count) || count != floor(count)))
        st = cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "count must be a finite whole number, got %g", count);
    if (st == CLNORM_SUCCESS && (count < 2.0 || (float)count < (float)p.M))
        st = cn_fail(CLNORM_ERROR_SHAPE,
                     "count %g: the global values per statistic must be at least 2 and at least x's own %zu", count,
                     p.M);
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, dscale, dbias, "dscale", "dbias", p.groups, &grads);
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {cn_region_view(empty ? NULL : x, "x", 0),
                               cn_region_view(empty ? NULL : dy, "dy", 0),
                               cn_region_view(empty ? NULL : dx, "dx", 1),
                               cn_region_param(scale, p.groups, "scale", 0),
                               cn_region_param(save_mean, p.groups, "save_mean", 0),
                               cn_region_param(save_invstd, p.groups, "save_invstd", 0),
                               region_block(sums, p.groups, 2, "sums", 0),
                               cn_region_param(dscale, p.groups, "dscale", 1),
                               cn_region_param(dbias, p.groups, "dbias", 1)};
        st = cn_check_regions(r, (int)(sizeof r / sizeof r[0]));
    }
    if (st != CLNORM_SUCCESS || !sums)
        return st;
    int want_dx = dx && !empty;
    if (!want_dx && !grads)
        return CLNORM_SUCCESS; /* nothing asked for */
    cl_kernel k[2];
    cl_mem coef = NULL;
    if ((st = apply_kernels(ctx, &p, OP_SPLIT_DX, K_SPLIT_BWD_COEF, x->dtype, k, want_dx ? 2 : 1,
                            "clnorm_bn_backward_from_sums")) != CLNORM_SUCCESS ||
        (want_dx &&
         (st = cn_scratch(ctx, CN_SCRATCH_COEF, p.groups * CN_COEF_STRIDE * sizeof(float), &coef)) != CLNORM_SUCCESS))
        return st;
    unsigned flags =
        (scale ? F_AFFINE : 0) | (grads ? F_GRADS : 0) | (want_dx ? F_DX | p.pmap : 0) | (beta != 0.0 ? F_ACCUM : 0);
    karg a[] = {A_MEM(sums),
                A_U64(p.groups),
                A_F32(count),
                A_MEM(scale),
                A_MEM(save_mean),
                A_MEM(save_invstd),
                A_MEM(dscale),
                A_MEM(dbias),
                A_MEM(coef),
                A_F32(alpha),
                A_F32(beta),
                A_U64(want_dx ? p.pC : p.groups),
                A_U64(want_dx ? p.pS : 1),
                A_U32(flags)};
    if ((st = launch_1d(ctx, k[0], p.groups, 64, a, NARGS(a))) != CLNORM_SUCCESS || !want_dx)
        return st;
    if (p.path == PATH_SPLIT_COLUMNS) /* (the path was checked above) */
        return enqueue_col_apply(ctx, &p, p.R, k[1], x, dy, dx, NULL, NULL, NULL, NULL, coef, 1.0, F_DX | F_COEF, NULL);
    return enqueue_apply(ctx, &p, k[1], x, dy, dx, NULL, NULL, NULL, NULL, coef, 1.0, F_DX | F_COEF, NULL);
}

clnorm_status clnorm_bn_backward_from_sums(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                           const clnorm_tensor *dy, const clnorm_tensor *dx, cl_mem scale,
                                           cl_mem save_mean, cl_mem save_invstd, cl_mem sums, double count,
                                           cl_mem dscale, cl_mem dbias) {
    return cn_backward_from_sums(ctx, mode, x, dy, dx, scale, save_mean, save_invstd, sums, count, dscale, dbias, 1.0,
                                 0.0);
}
