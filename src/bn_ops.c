/* The functional operations: validate everything, plan, then enqueue. A refused call enqueues nothing.
 *
 * A tensor is viewed as (B, C, S): B = batch, C = maps, S = d*h*w (1 for ndim 2). SPATIAL has C statistics of
 * B*S values each; PER_ACTIVATION has C*S statistics of B values each.
 * NCHW SPATIAL with S > 1 takes the row kernels (per-map slices of contiguous rows). Everything else is a matrix
 * with one statistic per column and takes the column kernels: NCHW PER_ACTIVATION and SPATIAL with S == 1
 * ((B, C*S) and (B, C)), NHWC SPATIAL ((B*S, C)) and NHWC PER_ACTIVATION ((B, S*C), parameters permuted). */
#include "bn_ops.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ---- validation ------------------------------------------------------------------------------- */

clnorm_status check_mode(clnorm_bn_mode mode) {
    if (mode != CLNORM_BN_SPATIAL && mode != CLNORM_BN_PER_ACTIVATION)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "mode: %d is not a clnorm_bn_mode", (int)mode);
    return CLNORM_SUCCESS;
}

clnorm_status check_epsilon(double eps) {
    if (!(eps > 0.0) || !isfinite(eps))
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "epsilon must be finite and > 0, got %g", eps);
    /* the kernels take it as a float: one that rounds to 0 (or a denormal a device may flush) gives NaN for
       constant groups */
    if ((float)eps < FLT_MIN)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "epsilon %g is below FLT_MIN (%g): it would be 0 in float", eps,
                       (double)FLT_MIN);
    return CLNORM_SUCCESS;
}

static clnorm_status check_activation(clnorm_activation act) {
    if (act != CLNORM_ACTIVATION_NONE && act != CLNORM_ACTIVATION_RELU)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                       "activation: %d is not a clnorm_activation (CLNORM_ACTIVATION_NONE or CLNORM_ACTIVATION_RELU)",
                       (int)act);
    return CLNORM_SUCCESS;
}

clnorm_status make_plan(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, const char *name,
                               plan *p) {
    if (!ctx)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "ctx is NULL");
    clnorm_status st = check_mode(mode);
    if (st == CLNORM_SUCCESS)
        st = cn_check_tensor(ctx, x, name, &p->numel);
    if (st != CLNORM_SUCCESS)
        return st;
    p->B = x->shape[0];
    p->C = x->shape[1];
    p->S = 1;
    for (int i = 2; i < x->ndim; ++i)
        p->S *= x->shape[i];
    p->groups = mode == CLNORM_BN_SPATIAL ? p->C : p->C * p->S;
    p->M = mode == CLNORM_BN_SPATIAL ? p->B * p->S : p->B;
    int nhwc = x->layout == CLNORM_NHWC;
    p->columns = mode == CLNORM_BN_PER_ACTIVATION || p->S == 1 || nhwc;
    p->rows = p->M;
    p->pC = p->groups;
    p->pS = 1;
    p->pmap = 0;
    if (nhwc && mode == CLNORM_BN_PER_ACTIVATION && p->S > 1) {
        p->pC = p->C;
        p->pS = p->S;
        p->pmap = F_PMAP;
    }
    return CLNORM_SUCCESS;
}

void shape_text(const clnorm_tensor *t, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < t->ndim && used < n; ++i)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %zu" : "%zu", t->shape[i]);
    if (used < n)
        snprintf(buf + used, n - used, ")");
}

/* t (when given) must be a valid view with x's shape and dtype (batch 0 only where x has it: split-phase calls) */
clnorm_status check_like(clnorm_context *ctx, const clnorm_tensor *x, const clnorm_tensor *t,
                                const char *name) {
    size_t numel;
    clnorm_status st = x->shape[0] == 0 ? cn_check_tensor_empty(ctx, t, name) : cn_check_tensor(ctx, t, name, &numel);
    if (st != CLNORM_SUCCESS)
        return st;
    int same = t->ndim == x->ndim;
    for (int i = 0; same && i < x->ndim; ++i)
        same = t->shape[i] == x->shape[i];
    if (!same) {
        char a[160], b[160];
        shape_text(x, a, sizeof a);
        shape_text(t, b, sizeof b);
        return cn_fail(CLNORM_ERROR_SHAPE, "%s has shape %s but x has %s", name, b, a);
    }
    if (t->dtype != x->dtype || t->layout != x->layout)
        return cn_fail(CLNORM_ERROR_UNSUPPORTED, "%s must have x's dtype and layout: mixing storage types or layouts "
                                                 "within one call is not supported",
                       name);
    return CLNORM_SUCCESS;
}

/* both or neither; *present = both */
clnorm_status check_pair(clnorm_context *ctx, cl_mem a, cl_mem b, const char *na, const char *nb, size_t count,
                                int *present) {
    *present = a && b;
    if (!a != !b)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s and %s go together: %s is NULL but %s is not", na, nb,
                       a ? nb : na, a ? na : nb);
    if (!*present)
        return CLNORM_SUCCESS;
    clnorm_status st = cn_check_param(ctx, a, count, na);
    return st != CLNORM_SUCCESS ? st : cn_check_param(ctx, b, count, nb);
}

static clnorm_status check_training_size(const plan *p, const clnorm_tensor *x) {
    if (p->M < 2) {
        char s[160];
        shape_text(x, s, sizeof s);
        return cn_fail(CLNORM_ERROR_SHAPE, "expected more than 1 value per statistic in training, got input shape %s",
                       s);
    }
    return CLNORM_SUCCESS;
}

/* ---- launching ------------------------------------------------------------------------------ */

/* The limits of kernel k, read from OpenCL the first time k is seen (then cached in the context). */
static clnorm_status kernel_info(clnorm_context *ctx, cl_kernel k, const cn_kernel_info **out) {
    for (int i = 0; i < ctx->kinfo_n; ++i)
        if (ctx->kinfo[i].kernel == k) {
            *out = &ctx->kinfo[i];
            return CLNORM_SUCCESS;
        }
    if (ctx->kinfo_n == ctx->kinfo_cap) {
        int cap = ctx->kinfo_cap ? 2 * ctx->kinfo_cap : 32;
        cn_kernel_info *grown = realloc(ctx->kinfo, (size_t)cap * sizeof *grown);
        if (!grown)
            return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory recording a kernel's limits");
        ctx->kinfo = grown;
        ctx->kinfo_cap = cap;
    }
    cn_kernel_info *ki = &ctx->kinfo[ctx->kinfo_n];
    memset(ki, 0, sizeof *ki);
    ki->kernel = k;
    cl_int err =
        clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof ki->max_wg, &ki->max_wg, NULL);
    if (err == CL_SUCCESS)
        err = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof ki->local_mem, &ki->local_mem,
                                       NULL);
    if (err == CL_SUCCESS)
        err = clGetKernelInfo(k, CL_KERNEL_NUM_ARGS, sizeof ki->nargs, &ki->nargs, NULL);
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clGetKernelWorkGroupInfo / clGetKernelInfo");
    if (clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof ki->name - 1, ki->name, NULL) != CL_SUCCESS)
        strcpy(ki->name, "?");
    ++ctx->kinfo_n;
    *out = ki;
    return CLNORM_SUCCESS;
}

/* Enqueues k after checking what host and kernel must agree on: the argument count against the kernel's
 * CL_KERNEL_NUM_ARGS, and the work-group against its CL_KERNEL_WORK_GROUP_SIZE (both read once per kernel). */
static clnorm_status launch_with(clnorm_context *ctx, cl_kernel k, const cn_kernel_info *ki, cl_uint dims,
                                 const size_t *global, const size_t *local, const karg *args, cl_uint nargs) {
    if (nargs != ki->nargs)
        return cn_fail(CLNORM_ERROR_OPENCL, "internal error: kernel %s takes %u arguments, the host passes %u",
                       ki->name, (unsigned)ki->nargs, (unsigned)nargs);
    size_t items = 1;
    for (cl_uint d = 0; local && d < dims; ++d)
        items *= local[d];
    if (items > ki->max_wg)
        return cn_fail(CLNORM_ERROR_UNSUPPORTED,
                       "kernel %s: a work-group of %zu items, but the device allows it %zu "
                       "(CL_KERNEL_WORK_GROUP_SIZE)",
                       ki->name, items, ki->max_wg);
    for (cl_uint i = 0; i < nargs; ++i) {
        cl_int err = clSetKernelArg(k, i, args[i].size, args[i].ptr);
        if (err != CL_SUCCESS)
            return cn_cl_fail(err, "clSetKernelArg");
    }
    cl_int err = clEnqueueNDRangeKernel(ctx->queue, k, dims, NULL, global, local, 0, NULL, NULL);
    return err == CL_SUCCESS ? CLNORM_SUCCESS : cn_cl_fail(err, "clEnqueueNDRangeKernel");
}

clnorm_status launch(clnorm_context *ctx, cl_kernel k, cl_uint dims, const size_t *global, const size_t *local,
                     const karg *args, cl_uint nargs) {
    const cn_kernel_info *ki = NULL;
    clnorm_status st = kernel_info(ctx, k, &ki);
    return st != CLNORM_SUCCESS ? st : launch_with(ctx, k, ki, dims, global, local, args, nargs);
}

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

/* items work-items in groups of local (the global size rounded up; kernels ignore the extra items). Local sizes
 * are always given: a runtime that picks one per global size (POCL) would compile the kernel once per shape.
 * local (a power of two) is a request: halved while above the context's cap (device, CLNORM_MAX_WORK_GROUP_SIZE)
 * or the kernel's CL_KERNEL_WORK_GROUP_SIZE. Launches whose kernels are compiled for WG pass ctx->wg, which
 * kernels() has already fitted to both, so only the kernels that do not depend on their group size (the per-item
 * finalize and coefficient kernels, 64 a group) ever shrink here. */
clnorm_status launch_1d(clnorm_context *ctx, cl_kernel k, size_t items, size_t local, const karg *args,
                               cl_uint nargs) {
    const cn_kernel_info *ki = NULL;
    clnorm_status st = kernel_info(ctx, k, &ki);
    if (st != CLNORM_SUCCESS)
        return st;
    while (local > 1 && (local > ctx->wg_cap || local > ki->max_wg))
        local /= 2;
    size_t global = round_up(items ? items : 1, local);
    return launch_with(ctx, k, ki, 1, &global, &local, args, nargs); /* (the limits looked up once) */
}

size_t elem_offset(const clnorm_tensor *t) { return t ? t->offset / cn_dtype_size(t->dtype) : 0; }

/* slices per map for the SPATIAL reductions: enough work-groups to fill the device, none tiny */
cl_uint slices_per_map(const clnorm_context *ctx, const plan *p) {
    size_t N = p->B * p->S;
    /* GPU: 16 groups per compute unit (measured on an H100: training forward 0.70 -> 0.77 of copy, backward
     * 0.88 -> 0.98 over 4 per unit; the merge of the partials is a work-group per map, so many slices cost little) */
    size_t target = (ctx->strategy == CN_STRATEGY_CPU ? 4 : 16) * (size_t)ctx->units;
    size_t min_slice = ctx->strategy == CN_STRATEGY_CPU ? 32768 : ctx->wg * 64;
    size_t g = (target + p->C - 1) / p->C;
    size_t gmax = N / min_slice;
    if (g > gmax)
        g = gmax;
    if (g > 1024)
        g = 1024;
    return (cl_uint)(g ? g : 1);
}

/* kernels needed by one call, fetched (and built) before anything is enqueued */
/* The kernels a call needs, built if need be, before anything is enqueued. A work-group size is a request: the GPU
 * strategy's reduction work-group (ctx->wg, compiled into the programs as WG) must fit every kernel's
 * CL_KERNEL_WORK_GROUP_SIZE and its local memory (CL_KERNEL_LOCAL_MEM_SIZE, which grows with WG) the device's
 * CL_DEVICE_LOCAL_MEM_SIZE; when a kernel does not take it, the context falls back to half of it, for good (the
 * programs are rebuilt for the smaller WG on the next fetch, their cache key includes it). Every launch size derived
 * from ctx->wg is computed after this call. */
clnorm_status kernels(clnorm_context *ctx, int variant, const cn_kernel_id *ids, cl_kernel *out, int n) {
    for (;;) {
        const cn_kernel_info *misfit = NULL;
        for (int i = 0; i < n; ++i) {
            const cn_kernel_info *ki = NULL;
            clnorm_status st = cn_get_kernel(ctx, variant, ids[i], &out[i]);
            if (st == CLNORM_SUCCESS)
                st = kernel_info(ctx, out[i], &ki);
            if (st != CLNORM_SUCCESS)
                return st;
            if (ctx->strategy == CN_STRATEGY_GPU && !misfit &&
                (ki->max_wg < ctx->wg || (ctx->local_mem && ki->local_mem > ctx->local_mem)))
                misfit = ki;
        }
        if (!misfit)
            return CLNORM_SUCCESS;
        if (ctx->wg <= 1)
            return cn_fail(CLNORM_ERROR_UNSUPPORTED,
                           "kernel %s does not run on this device even with work-groups of 1 item "
                           "(CL_KERNEL_WORK_GROUP_SIZE %zu, local memory %llu of the device's %llu bytes)",
                           misfit->name, misfit->max_wg, (unsigned long long)misfit->local_mem,
                           (unsigned long long)ctx->local_mem);
        ctx->wg /= 2;
        /* the kernels fetched so far were compiled for the old WG: fetch (build) them again for the new one */
        memset(ctx->kernel_table, 0, sizeof ctx->kernel_table);
    }
}

#define FINALIZE_LOCAL 64

/* the per-map finalize of the SPATIAL partials: CPU one work-item per map, GPU one work-group per map */
clnorm_status launch_finalize(clnorm_context *ctx, cl_kernel k, size_t C, const karg *args, cl_uint nargs) {
    if (ctx->strategy == CN_STRATEGY_CPU)
        return launch_1d(ctx, k, C, FINALIZE_LOCAL, args, nargs);
    return launch_1d(ctx, k, C * ctx->wg, ctx->wg, args, nargs);
}

/* SPATIAL statistics: partials, then the per-map finalize writing the coefficients to scoef (running update with
 * rmean/rvar, saved statistics with smean/sinvstd, all optional). */
static clnorm_status enqueue_stats(clnorm_context *ctx, const plan *p, const clnorm_tensor *x, cl_kernel kpart,
                                   cl_kernel kfin, cl_mem part, cl_uint G, cl_mem scale, cl_mem bias, cl_mem rmean,
                                   cl_mem rvar, cl_mem smean, cl_mem sinvstd, cl_mem scoef, double factor,
                                   double eps) {
    size_t gp[2] = {G * ctx->wg, p->C}, lp[2] = {ctx->wg, 1};
    karg a1[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_U64(p->B), A_U64(p->C), A_U64(p->S), A_U32(G),
                 A_MEM(part)};
    clnorm_status st = launch(ctx, kpart, 2, gp, lp, a1, NARGS(a1));
    if (st != CLNORM_SUCCESS)
        return st;
    double unbias = p->M > 1 ? (double)p->M / (double)(p->M - 1) : 1.0;
    unsigned flags = (scale ? F_AFFINE : 0) | (rmean ? F_RUNNING : 0) | (smean ? F_SAVE : 0);
    karg a2[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_U64(p->S),  A_MEM(part),    A_U32(G),
                 A_U64(p->M),      A_U64(p->C),           A_MEM(scale), A_MEM(bias),    A_MEM(rmean),
                 A_MEM(rvar),      A_MEM(smean),          A_MEM(sinvstd), A_MEM(scoef), A_F32(factor),
                 A_F32(eps),       A_F32(unbias),         A_U32(flags)};
    return launch_finalize(ctx, kfin, p->C, a2, NARGS(a2));
}

/* bn_apply over the whole tensor */
clnorm_status enqueue_apply(clnorm_context *ctx, const plan *p, cl_kernel k, const clnorm_tensor *x,
                                   const clnorm_tensor *dy, const clnorm_tensor *out, cl_mem scale, cl_mem bias,
                                   cl_mem mean, cl_mem var, cl_mem coef, double eps, unsigned flags,
                                   const clnorm_tensor *aux) {
    size_t total = p->numel, chunk = 0;
    if (ctx->strategy == CN_STRATEGY_CPU) {
        chunk = round_up((total + 8 * ctx->units - 1) / (8 * ctx->units), 16);
        if (chunk < 16384)
            chunk = 16384;
    }
    karg a[] = {A_MEM(x->buffer),
                A_U64(elem_offset(x)),
                A_MEM(dy ? dy->buffer : NULL),
                A_U64(elem_offset(dy)),
                A_MEM(aux ? aux->buffer : NULL),
                A_U64(elem_offset(aux)),
                A_MEM(out->buffer),
                A_U64(elem_offset(out)),
                A_U64(p->C),
                A_U64(p->S),
                A_U64(total),
                A_U64(chunk),
                A_MEM(scale),
                A_MEM(bias),
                A_MEM(mean),
                A_MEM(var),
                A_MEM(coef),
                A_F32(eps),
                A_U32(flags)};
    if (ctx->strategy == CN_STRATEGY_CPU)
        return launch_1d(ctx, k, (total + chunk - 1) / chunk, 1, a, NARGS(a));
    /* GPU: (values of a row, rows), or of groups of four rows when rows are short (S < 4 * cols: the kernel
     * tests the same), then in work-groups of (64, wg / 64) so that few items fall past the row's end (on an
     * H100, (32,512,7,7) inference: 0.42 -> 0.87 of copy); rows beyond what fills the device are walked by a
     * grid-stride loop */
    size_t l0 = (p->S < 4096 && ctx->wg > 64 && ctx->wg % 64 == 0) ? 64 : ctx->wg;
    size_t rows = p->B * p->C, cols = round_up(p->S < 1024 ? p->S : 1024, l0);
    size_t items = p->S >= 4 * cols ? rows : (rows + 3) / 4;
    size_t most_rows = ((size_t)ctx->units * 8192) / cols + 1;
    size_t global[2] = {cols, round_up(items < most_rows ? items : most_rows, ctx->wg / l0)},
           local[2] = {l0, ctx->wg / l0};
    return launch(ctx, k, 2, global, local, a, NARGS(a));
}

/* One work-group per map (statistics and the elementwise pass in one launch, the map re-read from cache) when
 * that fills the device: on a CPU enough maps for every core; on a GPU small maps (one group each). */
static int fused(const clnorm_context *ctx, const plan *p) {
    size_t u = ctx->units;
    if (ctx->strategy == CN_STRATEGY_CPU)
        return p->C >= u && (p->C % u == 0 || p->C >= 4 * u);
    return p->B * p->S <= 16 * ctx->wg * 16;
}

/* The training forward's one-launch rows kernel's work-groups: GPU one per map; CPU, when pipelined (bn_rows.cl,
 * pipe_maps: without a residual z), a run of maps per work-item, CLNORM_PIPE_ITEMS per core (fewer when there are
 * fewer maps): longer runs overlap more, several runs per core keep the cores evenly loaded; else one per map. */
#define CLNORM_PIPE_ITEMS 4
static size_t fused_groups(const clnorm_context *ctx, const plan *p, int pipelined) {
    if (ctx->strategy != CN_STRATEGY_CPU || !pipelined)
        return p->C;
    size_t u = ctx->units, per = p->C / u;
    return u * (per < CLNORM_PIPE_ITEMS ? per : CLNORM_PIPE_ITEMS);
}

/* column kernels: CPU a few work-items (one per group) taking tiles of 256 columns, strided; GPU one column per
 * work-item */
static clnorm_status launch_columns(clnorm_context *ctx, cl_kernel k, const plan *p, const karg *args,
                                    cl_uint nargs) {
    if (ctx->strategy == CN_STRATEGY_CPU) {
        size_t items = (p->groups + CN_TILE_COLS - 1) / CN_TILE_COLS, most = 4 * (size_t)ctx->units;
        return launch_1d(ctx, k, items < most ? items : most, 1, args, nargs);
    }
    return launch_1d(ctx, k, p->groups, ctx->wg < 64 ? ctx->wg : 64, args, nargs);
}

/* Row chunks for the column layouts: 1 while the columns alone fill the device, else enough chunks of at least
 * a few hundred rows each on a CPU (few maps in NHWC, tall per-activation matrices); on a GPU chunks of at least
 * gpu_rows rows: short walks per work-item (on an H100, (256,1024) per-activation in one chunk: inference 45 us a
 * call, the latency of 256 rows one after the other; in chunks of 16 rows: 8 us), and none when fewer than
 * gpu_min_chunks would do (the backward's split takes 3 launches, 2 more than its one-launch kernel: measured on
 * the H100, worth it from 8 chunks on). */
cl_uint row_chunks(const clnorm_context *ctx, const plan *p, size_t gpu_rows, size_t gpu_min_chunks) {
    int cpu = ctx->strategy == CN_STRATEGY_CPU;
    size_t items = cpu ? (p->groups + CN_TILE_COLS - 1) / CN_TILE_COLS : p->groups;
    size_t want = cpu ? 4 * (size_t)ctx->units : 256 * (size_t)ctx->units;
    if (items >= want)
        return 1;
    size_t r = (want + items - 1) / items, rmax = p->rows / (cpu ? 1024 : gpu_rows);
    if (r > rmax)
        r = rmax;
    if (!cpu && r < gpu_min_chunks)
        return 1;
    if (r > 1024)
        r = 1024;
    return (cl_uint)(r ? r : 1);
}

/* The plan's path and its sizes, picked once per call (each operation then switches on p->path):
 *   columns (one statistic per column): PATH_COLUMNS, one launch, a work-item per column (tile); or, when the columns
 *     alone cannot fill the device, PATH_SPLIT_COLUMNS in R row chunks (partials, per-column merge, 2-D pass);
 *   rows (NCHW SPATIAL, S > 1): PATH_FUSED_ROWS, one work-group per map in one launch, when that fills the device;
 *     else PATH_SPLIT_ROWS, G slices per map (partials, per-map finalize, elementwise pass); inference is always
 *     the one elementwise pass (PATH_SPLIT_ROWS without statistics, G = 1).
 * The split-phase operations (bn_split.c) always take a split path, PATH_SPLIT_COLUMNS or PATH_SPLIT_ROWS, even
 * when R or G is 1: their results are the partials' merge (statistics blocks, gradient sums) or the elementwise pass
 * over coefficients computed elsewhere, which the one-launch kernels do not give.
 *
 * Tuning per operation, in one place:
 *   gpu_rows        the GPU row chunk: rows a work-item walks at least (see row_chunks);
 *   gpu_min_chunks  the fewest GPU chunks worth the split's extra launches (see row_chunks);
 *   reduces         the operation sums over the rows (statistics or gradient sums): on the rows path it takes G
 *                   slices per map (slices_per_map), and may be fused; otherwise it is one elementwise pass (G = 1);
 *   one_launch      it may take the one-launch kernels (PATH_COLUMNS, PATH_FUSED_ROWS); 0: split paths only.
 * The split-phase rows keep the sizes those calls always had: partials in chunks of 64 rows, passes of 16. */
static const struct {
    size_t gpu_rows, gpu_min_chunks;
    int reduces, one_launch;
} path_tuning[] = {
    [OP_TRAIN] = {64, 2, 1, 1},        /* statistics partials, then the 2-D pass */
    [OP_INFER] = {16, 2, 0, 1},        /* the pass alone: short walks */
    [OP_BACKWARD] = {64, 8, 1, 1},     /* 3 launches against 1: worth it from 8 chunks on (H100) */
    [OP_SPLIT_STATS] = {64, 1, 1, 0},  /* clnorm_bn_stats */
    [OP_SPLIT_APPLY] = {16, 1, 0, 0},  /* clnorm_bn_forward_training_from_stats */
    [OP_SPLIT_REDUCE] = {64, 1, 1, 0}, /* clnorm_bn_backward_reduce */
    [OP_SPLIT_DX] = {16, 1, 0, 0},     /* clnorm_bn_backward_from_sums */
};

void choose_path(const clnorm_context *ctx, plan *p, cn_op op) {
    p->R = 1;
    p->G = 1;
    if (p->columns) {
        p->R = row_chunks(ctx, p, path_tuning[op].gpu_rows, path_tuning[op].gpu_min_chunks);
        p->path = p->R > 1 || !path_tuning[op].one_launch ? PATH_SPLIT_COLUMNS : PATH_COLUMNS;
    } else if (path_tuning[op].reduces && path_tuning[op].one_launch && fused(ctx, p)) {
        p->path = PATH_FUSED_ROWS;
    } else {
        p->path = PATH_SPLIT_ROWS;
        if (path_tuning[op].reduces)
            p->G = slices_per_map(ctx, p);
    }
}

/* the (columns, chunks) grid of the split column kernels */
clnorm_status launch_col_grid(clnorm_context *ctx, cl_kernel k, const plan *p, cl_uint R, const karg *args,
                                     cl_uint nargs) {
    size_t global[2], local[2] = {1, 1};
    if (ctx->strategy == CN_STRATEGY_CPU) {
        global[0] = (p->groups + CN_TILE_COLS - 1) / CN_TILE_COLS;
    } else {
        local[0] = ctx->wg < 64 ? ctx->wg : 64;
        global[0] = round_up(p->groups, local[0]);
    }
    global[1] = R;
    return launch(ctx, k, 2, global, local, args, nargs);
}

/* split column statistics: partials per (chunk, column), then the per-column finalize into scoef */
static clnorm_status enqueue_col_stats(clnorm_context *ctx, const plan *p, const clnorm_tensor *x, cl_uint R,
                                       cl_kernel kpart, cl_kernel kfin, cl_mem part, cl_mem scale, cl_mem bias,
                                       cl_mem rmean, cl_mem rvar, cl_mem smean, cl_mem sinvstd, cl_mem scoef,
                                       double factor, double eps) {
    karg a1[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_U64(p->rows), A_U64(p->groups), A_U32(R), A_MEM(part)};
    clnorm_status st = launch_col_grid(ctx, kpart, p, R, a1, NARGS(a1));
    if (st != CLNORM_SUCCESS)
        return st;
    double unbias = p->M > 1 ? (double)p->M / (double)(p->M - 1) : 1.0;
    unsigned flags = (scale ? F_AFFINE : 0) | (rmean ? F_RUNNING : 0) | (smean ? F_SAVE : 0) | p->pmap;
    karg a2[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_MEM(part),    A_U32(R),        A_U64(p->rows),
                 A_U64(p->groups), A_MEM(scale),          A_MEM(bias),    A_MEM(rmean),    A_MEM(rvar),
                 A_MEM(smean),     A_MEM(sinvstd),        A_MEM(scoef),   A_F32(factor),   A_F32(eps),
                 A_F32(unbias),    A_U64(p->pC),          A_U64(p->pS),   A_U32(flags)};
    return launch_finalize(ctx, kfin, p->groups, a2, NARGS(a2));
}

clnorm_status enqueue_col_apply(clnorm_context *ctx, const plan *p, cl_uint R, cl_kernel k,
                                       const clnorm_tensor *x, const clnorm_tensor *dy, const clnorm_tensor *out,
                                       cl_mem scale, cl_mem bias, cl_mem mean, cl_mem var, cl_mem coef, double eps,
                                       unsigned flags, const clnorm_tensor *aux) {
    karg a[] = {A_MEM(x->buffer),
                A_U64(elem_offset(x)),
                A_MEM(dy ? dy->buffer : NULL),
                A_U64(elem_offset(dy)),
                A_MEM(aux ? aux->buffer : NULL),
                A_U64(elem_offset(aux)),
                A_MEM(out->buffer),
                A_U64(elem_offset(out)),
                A_U64(p->rows),
                A_U64(p->groups),
                A_U32(R),
                A_MEM(scale),
                A_MEM(bias),
                A_MEM(mean),
                A_MEM(var),
                A_MEM(coef),
                A_F32(eps),
                A_U64(p->pC),
                A_U64(p->pS),
                A_U32(flags | p->pmap)};
    return launch_col_grid(ctx, k, p, R, a, NARGS(a));
}

/* ---- forward ---------------------------------------------------------------------------------- */

/* the residual z of a fused forward (when given): x's shape, dtype and layout; y may be z itself (same view) */
static clnorm_status check_residual(clnorm_context *ctx, const clnorm_tensor *x, const clnorm_tensor *z,
                                    const clnorm_tensor *y, clnorm_activation act) {
    int same;
    clnorm_status st = check_activation(act);
    if (st != CLNORM_SUCCESS || !z)
        return st;
    st = check_like(ctx, x, z, "z");
    return st != CLNORM_SUCCESS ? st : cn_check_overlap(z, "z", y, "y", &same);
}

/* the activation's flags: F_Z with a residual, F_RELU */
static unsigned act_flags(const clnorm_tensor *z, clnorm_activation act) {
    return (z ? F_Z : 0u) | (act == CLNORM_ACTIVATION_RELU ? F_RELU : 0u);
}

clnorm_status clnorm_bn_forward_training_ex(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                            const clnorm_tensor *z, const clnorm_tensor *y, cl_mem scale, cl_mem bias,
                                            double factor, double epsilon, cl_mem running_mean, cl_mem running_var,
                                            cl_mem save_mean, cl_mem save_invstd, clnorm_activation activation) {
    plan p;
    int affine, running, save, same;
    clnorm_status st = make_plan(ctx, mode, x, "x", &p);
    int variant = st == CLNORM_SUCCESS ? cn_variant(ctx, x->dtype, p.numel, 2 + (z != NULL)) : 0; /* x, y (and z) */
    if (st == CLNORM_SUCCESS)
        st = check_like(ctx, x, y, "y");
    if (st == CLNORM_SUCCESS)
        st = cn_check_overlap(x, "x", y, "y", &same);
    if (st == CLNORM_SUCCESS)
        st = check_residual(ctx, x, z, y, activation);
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
    if (st == CLNORM_SUCCESS)
        st = check_training_size(&p, x);
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {cn_region_view(x, "x", 0),
                               cn_region_view(y, "y", 1),
                               cn_region_view(z, "z", 0),
                               cn_region_param(scale, p.groups, "scale", 0),
                               cn_region_param(bias, p.groups, "bias", 0),
                               cn_region_param(running_mean, p.groups, "running_mean", 1),
                               cn_region_param(running_var, p.groups, "running_var", 1),
                               cn_region_param(save_mean, p.groups, "save_mean", 1),
                               cn_region_param(save_invstd, p.groups, "save_invstd", 1)};
        st = cn_check_regions(r, (int)(sizeof r / sizeof r[0]));
    }
    if (st != CLNORM_SUCCESS)
        return st;

    unsigned act = act_flags(z, activation);
    unsigned flags = (affine ? F_AFFINE : 0) | (running ? F_RUNNING : 0) | (save ? F_SAVE : 0) | F_STATS | act;
    choose_path(ctx, &p, OP_TRAIN);
    const cl_uint R = p.R, G = p.G;
    switch (p.path) {
    case PATH_SPLIT_COLUMNS: {
        cl_kernel k[3];
        static const cn_kernel_id ids[] = {K_COL_PARTIAL, K_COL_FINALIZE, K_COL_APPLY};
        cl_mem part, scoef;
        if ((st = kernels(ctx, variant, ids, k, 3)) != CLNORM_SUCCESS ||
            (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, R * p.groups * 2 * sizeof(float), &part)) != CLNORM_SUCCESS ||
            (st = cn_scratch(ctx, CN_SCRATCH_STATS, p.groups * CN_COEF_STRIDE * sizeof(float), &scoef)) !=
                CLNORM_SUCCESS)
            return st;
        st = enqueue_col_stats(ctx, &p, x, R, k[0], k[1], part, scale, bias, running ? running_mean : NULL,
                               running_var, save ? save_mean : NULL, save_invstd, scoef, factor, epsilon);
        if (st != CLNORM_SUCCESS)
            return st;
        return enqueue_col_apply(ctx, &p, R, k[2], x, NULL, y, NULL, NULL, NULL, NULL, scoef, epsilon, F_COEF | act, z);
    }
    case PATH_COLUMNS: {
        cl_kernel k;
        static const cn_kernel_id ids[] = {K_PA_FORWARD};
        if ((st = kernels(ctx, variant, ids, &k, 1)) != CLNORM_SUCCESS)
            return st;
        double unbias = (double)p.M / (double)(p.M - 1);
        karg a[] = {A_MEM(x->buffer),      A_U64(elem_offset(x)), A_MEM(z ? z->buffer : NULL),
                    A_U64(elem_offset(z)), A_MEM(y->buffer),      A_U64(elem_offset(y)),
                    A_U64(p.rows),         A_U64(p.groups),       A_MEM(scale),
                    A_MEM(bias),           A_MEM(NULL),           A_MEM(NULL),
                    A_MEM(running_mean),   A_MEM(running_var),    A_MEM(save_mean),
                    A_MEM(save_invstd),    A_F32(factor),         A_F32(epsilon),
                    A_F32(unbias),         A_U64(p.pC),           A_U64(p.pS),
                    A_U32(flags | p.pmap)};
        return launch_columns(ctx, k, &p, a, NARGS(a));
    }
    case PATH_FUSED_ROWS: {
        cl_kernel k;
        static const cn_kernel_id ids[] = {K_FUSED_FORWARD};
        if ((st = kernels(ctx, variant, ids, &k, 1)) != CLNORM_SUCCESS)
            return st;
        size_t global = fused_groups(ctx, &p, z == NULL) * ctx->wg, local = ctx->wg;
        double unbias = (double)p.M / (double)(p.M - 1);
        karg a[] = {A_MEM(x->buffer),
                    A_U64(elem_offset(x)),
                    A_MEM(z ? z->buffer : NULL),
                    A_U64(elem_offset(z)),
                    A_MEM(y->buffer),
                    A_U64(elem_offset(y)),
                    A_U64(p.B),
                    A_U64(p.C),
                    A_U64(p.S),
                    A_MEM(scale),
                    A_MEM(bias),
                    A_MEM(running_mean),
                    A_MEM(running_var),
                    A_MEM(save_mean),
                    A_MEM(save_invstd),
                    A_F32(factor),
                    A_F32(epsilon),
                    A_F32(unbias),
                    A_U32(flags)};
        return launch(ctx, k, 1, &global, &local, a, NARGS(a));
    }
    case PATH_SPLIT_ROWS:
        break;
    }
    cl_kernel k[3];
    static const cn_kernel_id ids[] = {K_STATS_PARTIAL, K_STATS_FINALIZE, K_APPLY};
    cl_mem part, scoef;
    if ((st = kernels(ctx, variant, ids, k, 3)) != CLNORM_SUCCESS ||
        (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, p.C * G * 2 * sizeof(float), &part)) != CLNORM_SUCCESS ||
        (st = cn_scratch(ctx, CN_SCRATCH_STATS, p.C * CN_COEF_STRIDE * sizeof(float), &scoef)) != CLNORM_SUCCESS)
        return st;
    st = enqueue_stats(ctx, &p, x, k[0], k[1], part, G, scale, bias, running_mean, running_var, save_mean,
                       save_invstd, scoef, factor, epsilon);
    if (st != CLNORM_SUCCESS)
        return st;
    return enqueue_apply(ctx, &p, k[2], x, NULL, y, NULL, NULL, NULL, NULL, scoef, epsilon, F_COEF | act, z);
}

clnorm_status cn_forward_training(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                  const clnorm_tensor *y, cl_mem scale, cl_mem bias, double factor, double epsilon,
                                  cl_mem running_mean, cl_mem running_var, cl_mem save_mean, cl_mem save_invstd) {
    return clnorm_bn_forward_training_ex(ctx, mode, x, NULL, y, scale, bias, factor, epsilon, running_mean, running_var,
                                         save_mean, save_invstd, CLNORM_ACTIVATION_NONE);
}

clnorm_status clnorm_bn_forward_training(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                         const clnorm_tensor *y, cl_mem scale, cl_mem bias, double factor,
                                         double epsilon, cl_mem running_mean, cl_mem running_var, cl_mem save_mean,
                                         cl_mem save_invstd) {
    return cn_forward_training(ctx, mode, x, y, scale, bias, factor, epsilon, running_mean, running_var, save_mean,
                               save_invstd);
}

clnorm_status clnorm_bn_forward_inference_ex(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                             const clnorm_tensor *z, const clnorm_tensor *y, cl_mem scale, cl_mem bias,
                                             cl_mem mean, cl_mem var, double epsilon, clnorm_activation activation) {
    plan p;
    int affine, stats, same;
    clnorm_status st = make_plan(ctx, mode, x, "x", &p);
    int variant = st == CLNORM_SUCCESS ? cn_variant(ctx, x->dtype, p.numel, 2 + (z != NULL)) : 0; /* x, y (and z) */
    if (st == CLNORM_SUCCESS)
        st = check_like(ctx, x, y, "y");
    if (st == CLNORM_SUCCESS)
        st = cn_check_overlap(x, "x", y, "y", &same);
    if (st == CLNORM_SUCCESS)
        st = check_residual(ctx, x, z, y, activation);
    if (st == CLNORM_SUCCESS)
        st = check_epsilon(epsilon);
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, scale, bias, "scale", "bias", p.groups, &affine);
    if (st == CLNORM_SUCCESS && (!mean || !var))
        st = cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s is NULL: inference needs the running mean and variance",
                     !mean ? "mean" : "var");
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, mean, var, "mean", "var", p.groups, &stats);
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {cn_region_view(y, "y", 1),
                               cn_region_view(z, "z", 0),
                               cn_region_param(scale, p.groups, "scale", 0),
                               cn_region_param(bias, p.groups, "bias", 0),
                               cn_region_param(mean, p.groups, "mean", 0),
                               cn_region_param(var, p.groups, "var", 0)};
        st = cn_check_regions(r, (int)(sizeof r / sizeof r[0]));
    }
    if (st != CLNORM_SUCCESS)
        return st;
    cl_kernel k;
    choose_path(ctx, &p, OP_INFER);
    static const cn_kernel_id pa[] = {K_PA_FORWARD}, ap[] = {K_APPLY}, ca[] = {K_COL_APPLY};
    const cn_kernel_id *ids = p.path == PATH_SPLIT_COLUMNS ? ca : p.path == PATH_COLUMNS ? pa : ap;
    if ((st = kernels(ctx, variant, ids, &k, 1)) != CLNORM_SUCCESS)
        return st;
    unsigned flags = (affine ? F_AFFINE : 0) | act_flags(z, activation);
    switch (p.path) {
    case PATH_SPLIT_COLUMNS:
        return enqueue_col_apply(ctx, &p, p.R, k, x, NULL, y, scale, bias, mean, var, NULL, epsilon, flags, z);
    case PATH_FUSED_ROWS: /* (not chosen for inference: one elementwise pass) */
    case PATH_SPLIT_ROWS:
        return enqueue_apply(ctx, &p, k, x, NULL, y, scale, bias, mean, var, NULL, epsilon, flags, z);
    case PATH_COLUMNS:
        break;
    }
    karg a[] = {A_MEM(x->buffer),      A_U64(elem_offset(x)), A_MEM(z ? z->buffer : NULL),
                A_U64(elem_offset(z)), A_MEM(y->buffer),      A_U64(elem_offset(y)),
                A_U64(p.rows),         A_U64(p.groups),       A_MEM(scale),
                A_MEM(bias),           A_MEM(mean),           A_MEM(var),
                A_MEM(NULL),           A_MEM(NULL),           A_MEM(NULL),
                A_MEM(NULL),           A_F32(0.0f),           A_F32(epsilon),
                A_F32(1.0f),           A_U64(p.pC),           A_U64(p.pS),
                A_U32(flags | p.pmap)};
    return launch_columns(ctx, k, &p, a, NARGS(a));
}

clnorm_status clnorm_bn_forward_inference(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                          const clnorm_tensor *y, cl_mem scale, cl_mem bias, cl_mem mean, cl_mem var,
                                          double epsilon) {
    return clnorm_bn_forward_inference_ex(ctx, mode, x, NULL, y, scale, bias, mean, var, epsilon,
                                          CLNORM_ACTIVATION_NONE);
}

/* ---- backward ----------------------------------------------------------------------------------- */

/* a and b must not share memory at all (not even as the same view): b is written while a is still read */
static clnorm_status check_apart(const clnorm_tensor *a, const char *na, const clnorm_tensor *b, const char *nb) {
    int same;
    clnorm_status st = cn_check_overlap(a, na, b, nb, &same);
    if (st == CLNORM_SUCCESS && same)
        st = cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                     "%s is the same memory as %s: the backward writes %s while it still reads %s (only dx and dz "
                     "may be written over dy, and dx over x)",
                     nb, na, nb, na);
    return st;
}

/* the fused arguments of a backward: y (the forward's output, needed by RELU), dz, bias */
static clnorm_status check_backward_ex(clnorm_context *ctx, const plan *p, const clnorm_tensor *x,
                                       const clnorm_tensor *y, const clnorm_tensor *dy, const clnorm_tensor *dx,
                                       const clnorm_tensor *dz, cl_mem bias, clnorm_activation act) {
    int same;
    clnorm_status st = check_activation(act);
    if (st == CLNORM_SUCCESS && act == CLNORM_ACTIVATION_RELU && !y)
        st = cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                     "y is NULL: the RELU backward needs the forward's output y (its mask is y > 0)");
    if (st == CLNORM_SUCCESS && y)
        st = check_like(ctx, x, y, "y");
    if (st == CLNORM_SUCCESS && y && dx)
        st = check_apart(y, "y", dx, "dx");
    if (st == CLNORM_SUCCESS && dz)
        st = check_like(ctx, x, dz, "dz");
    if (st == CLNORM_SUCCESS && dz)
        st = check_apart(x, "x", dz, "dz");
    if (st == CLNORM_SUCCESS && dz && y)
        st = check_apart(y, "y", dz, "dz");
    if (st == CLNORM_SUCCESS && dz)
        st = cn_check_overlap(dy, "dy", dz, "dz", &same);
    if (st == CLNORM_SUCCESS && dz && dx)
        st = check_apart(dz, "dz", dx, "dx");
    if (st == CLNORM_SUCCESS && bias)
        st = cn_check_param(ctx, bias, p->groups, "bias");
    return st;
}

clnorm_status cn_backward_ex(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, const clnorm_tensor *y,
                             const clnorm_tensor *dy, const clnorm_tensor *dx, const clnorm_tensor *dz, cl_mem scale,
                             cl_mem bias, cl_mem dscale, cl_mem dbias, double epsilon, cl_mem save_mean,
                             cl_mem save_invstd, clnorm_activation activation, double alpha, double beta) {
    plan p;
    int grads, saved, same;
    clnorm_status st = make_plan(ctx, mode, x, "x", &p);
    int variant = st == CLNORM_SUCCESS /* x and dy, then y, dx and dz where given */
                      ? cn_variant(ctx, x->dtype, p.numel, 2 + (y != NULL) + (dx != NULL) + (dz != NULL))
                      : 0;
    if (st == CLNORM_SUCCESS)
        st = check_like(ctx, x, dy, "dy");
    if (st == CLNORM_SUCCESS)
        st = check_backward_ex(ctx, &p, x, y, dy, dx, dz, bias, activation);
    if (st == CLNORM_SUCCESS && dx)
        st = check_like(ctx, x, dx, "dx");
    if (st == CLNORM_SUCCESS && dx)
        st = cn_check_overlap(x, "x", dx, "dx", &same);
    if (st == CLNORM_SUCCESS && dx)
        st = cn_check_overlap(dy, "dy", dx, "dx", &same);
    if (st == CLNORM_SUCCESS)
        st = check_epsilon(epsilon);
    if (st == CLNORM_SUCCESS && scale)
        st = cn_check_param(ctx, scale, p.groups, "scale");
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, dscale, dbias, "dscale", "dbias", p.groups, &grads);
    if (st == CLNORM_SUCCESS)
        st = check_pair(ctx, save_mean, save_invstd, "save_mean", "save_invstd", p.groups, &saved);
    if (st == CLNORM_SUCCESS) {
        const cn_region r[] = {cn_region_view(x, "x", 0),
                               cn_region_view(dy, "dy", 0),
                               cn_region_view(dx, "dx", 1),
                               cn_region_view(y, "y", 0),
                               cn_region_view(dz, "dz", 1),
                               cn_region_param(scale, p.groups, "scale", 0),
                               cn_region_param(bias, p.groups, "bias", 0),
                               cn_region_param(dscale, p.groups, "dscale", 1),
                               cn_region_param(dbias, p.groups, "dbias", 1),
                               cn_region_param(save_mean, p.groups, "save_mean", 0),
                               cn_region_param(save_invstd, p.groups, "save_invstd", 0)};
        st = cn_check_regions(r, (int)(sizeof r / sizeof r[0]));
    }
    if (st != CLNORM_SUCCESS)
        return st;
    if (!dx && !grads && !dz)
        return CLNORM_SUCCESS; /* nothing asked for */

    /* g = dy masked by y > 0 (F_RELU) wherever dy is read; dz = g written by the pass that sums g (F_DZ). The split
     * paths' dx pass then reads g from dz when there is one (a read less), else dy and y again. */
    unsigned relu = activation == CLNORM_ACTIVATION_RELU ? F_RELU : 0;
    unsigned flags = (scale ? F_AFFINE : 0) | (grads ? F_GRADS : 0) | (dx ? F_DX : 0) | (beta != 0.0 ? F_ACCUM : 0) |
                     relu | (dz ? F_DZ : 0);
    const clnorm_tensor *gsrc = dz ? dz : dy;
    unsigned gmask = dz ? 0 : relu;
    choose_path(ctx, &p, OP_BACKWARD);
    const cl_uint R = p.R, G = p.G;
    switch (p.path) {
    case PATH_SPLIT_COLUMNS: {
        cl_kernel k[5];
        static const cn_kernel_id ids[] = {K_COL_PARTIAL, K_COL_FINALIZE, K_COL_BWD_PARTIAL, K_COL_BWD_FINALIZE,
                                           K_COL_APPLY};
        cl_mem part, coef = NULL, scoef = NULL;
        if ((st = kernels(ctx, variant, ids, k, 5)) != CLNORM_SUCCESS ||
            (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, R * p.groups * 2 * sizeof(float), &part)) != CLNORM_SUCCESS ||
            (dx && (st = cn_scratch(ctx, CN_SCRATCH_COEF, p.groups * CN_COEF_STRIDE * sizeof(float), &coef)) !=
                       CLNORM_SUCCESS) ||
            (!saved && (st = cn_scratch(ctx, CN_SCRATCH_STATS, p.groups * CN_COEF_STRIDE * sizeof(float), &scoef)) !=
                           CLNORM_SUCCESS))
            return st;
        if (!saved) { /* recomputed statistics reach the backward kernels through scoef (F_COEF) */
            st = enqueue_col_stats(ctx, &p, x, R, k[0], k[1], part, NULL, NULL, NULL, NULL, NULL, NULL, scoef, 0.0,
                                   epsilon);
            if (st != CLNORM_SUCCESS)
                return st;
            flags |= F_COEF;
        }
        karg a1[] = {A_MEM(x->buffer),
                     A_U64(elem_offset(x)),
                     A_MEM(dy->buffer),
                     A_U64(elem_offset(dy)),
                     A_MEM(y ? y->buffer : NULL),
                     A_U64(elem_offset(y)),
                     A_MEM(dz ? dz->buffer : NULL),
                     A_U64(elem_offset(dz)),
                     A_U64(p.rows),
                     A_U64(p.groups),
                     A_U32(R),
                     A_MEM(save_mean),
                     A_MEM(save_invstd),
                     A_MEM(scoef),
                     A_U64(p.pC),
                     A_U64(p.pS),
                     A_U32(flags | p.pmap),
                     A_MEM(part)};
        if ((st = launch_col_grid(ctx, k[2], &p, R, a1, NARGS(a1))) != CLNORM_SUCCESS)
            return st;
        karg a2[] = {A_MEM(x->buffer), A_U64(elem_offset(x)), A_MEM(part), A_U32(R), A_U64(p.rows),
                     A_U64(p.groups), A_MEM(save_mean), A_MEM(save_invstd), A_MEM(scoef), A_MEM(scale),
                     A_MEM(dscale), A_MEM(dbias), A_MEM(coef), A_F32(alpha), A_F32(beta), A_U64(p.pC),
                     A_U64(p.pS), A_U32(flags | p.pmap)};
        if ((st = launch_finalize(ctx, k[3], p.groups, a2, NARGS(a2))) != CLNORM_SUCCESS || !dx)
            return st;
        return enqueue_col_apply(ctx, &p, R, k[4], x, gsrc, dx, NULL, NULL, NULL, NULL, coef, epsilon,
                                 F_DX | F_COEF | gmask, y);
    }
    case PATH_COLUMNS: {
        cl_kernel k;
        static const cn_kernel_id ids[] = {K_PA_BACKWARD};
        if ((st = kernels(ctx, variant, ids, &k, 1)) != CLNORM_SUCCESS)
            return st;
        karg a[] = {A_MEM(x->buffer),
                    A_U64(elem_offset(x)),
                    A_MEM(dy->buffer),
                    A_U64(elem_offset(dy)),
                    A_MEM(y ? y->buffer : NULL),
                    A_U64(elem_offset(y)),
                    A_MEM(dz ? dz->buffer : NULL),
                    A_U64(elem_offset(dz)),
                    A_MEM(dx ? dx->buffer : NULL),
                    A_U64(elem_offset(dx)),
                    A_U64(p.rows),
                    A_U64(p.groups),
                    A_MEM(scale),
                    A_MEM(save_mean),
                    A_MEM(save_invstd),
                    A_MEM(dscale),
                    A_MEM(dbias),
                    A_F32(alpha),
                    A_F32(beta),
                    A_F32(epsilon),
                    A_U64(p.pC),
                    A_U64(p.pS),
                    A_U32(flags | p.pmap | (saved ? 0 : F_STATS))};
        return launch_columns(ctx, k, &p, a, NARGS(a));
    }
    case PATH_FUSED_ROWS: {
        cl_kernel k;
        static const cn_kernel_id ids[] = {K_FUSED_BACKWARD};
        if ((st = kernels(ctx, variant, ids, &k, 1)) != CLNORM_SUCCESS)
            return st;
        size_t global = p.C * ctx->wg, local = ctx->wg;
        karg a[] = {A_MEM(x->buffer),
                    A_U64(elem_offset(x)),
                    A_MEM(dy->buffer),
                    A_U64(elem_offset(dy)),
                    A_MEM(y ? y->buffer : NULL),
                    A_U64(elem_offset(y)),
                    A_MEM(dz ? dz->buffer : NULL),
                    A_U64(elem_offset(dz)),
                    A_MEM(dx ? dx->buffer : NULL),
                    A_U64(elem_offset(dx)),
                    A_U64(p.B),
                    A_U64(p.C),
                    A_U64(p.S),
                    A_MEM(scale),
                    A_MEM(save_mean),
                    A_MEM(save_invstd),
                    A_MEM(dscale),
                    A_MEM(dbias),
                    A_F32(alpha),
                    A_F32(beta),
                    A_F32(epsilon),
                    A_U32(flags | (saved ? 0 : F_STATS))};
        return launch(ctx, k, 1, &global, &local, a, NARGS(a));
    }
    case PATH_SPLIT_ROWS:
        break;
    }
    cl_kernel k[5];
    static const cn_kernel_id ids[] = {K_STATS_PARTIAL, K_STATS_FINALIZE, K_BWD_PARTIAL, K_BWD_FINALIZE, K_APPLY};
    cl_mem part, coef = NULL, scoef = NULL;
    if ((st = kernels(ctx, variant, ids, k, 5)) != CLNORM_SUCCESS ||
        (st = cn_scratch(ctx, CN_SCRATCH_PARTIAL, p.C * G * 2 * sizeof(float), &part)) != CLNORM_SUCCESS ||
        (dx &&
         (st = cn_scratch(ctx, CN_SCRATCH_COEF, p.C * CN_COEF_STRIDE * sizeof(float), &coef)) != CLNORM_SUCCESS) ||
        (!saved &&
         (st = cn_scratch(ctx, CN_SCRATCH_STATS, p.C * CN_COEF_STRIDE * sizeof(float), &scoef)) != CLNORM_SUCCESS))
        return st;
    if (!saved) {
        flags |= F_STATS;
        st = enqueue_stats(ctx, &p, x, k[0], k[1], part, G, NULL, NULL, NULL, NULL, NULL, NULL, scoef, 0.0, epsilon);
        if (st != CLNORM_SUCCESS)
            return st;
    }
    size_t gp[2] = {G * ctx->wg, p.C}, lp[2] = {ctx->wg, 1};
    karg a1[] = {A_MEM(x->buffer),
                 A_U64(elem_offset(x)),
                 A_MEM(dy->buffer),
                 A_U64(elem_offset(dy)),
                 A_MEM(y ? y->buffer : NULL),
                 A_U64(elem_offset(y)),
                 A_MEM(dz ? dz->buffer : NULL),
                 A_U64(elem_offset(dz)),
                 A_U64(p.B),
                 A_U64(p.C),
                 A_U64(p.S),
                 A_U32(G),
                 A_MEM(save_mean),
                 A_MEM(save_invstd),
                 A_MEM(scoef),
                 A_U32(flags),
                 A_MEM(part)};
    if ((st = launch(ctx, k[2], 2, gp, lp, a1, NARGS(a1))) != CLNORM_SUCCESS)
        return st;
    karg a2[] = {A_MEM(part),  A_U32(G),      A_U64(p.M),   A_U64(p.C),    A_MEM(save_mean),
                 A_MEM(save_invstd), A_MEM(scoef), A_MEM(scale), A_MEM(dscale), A_MEM(dbias),
                 A_MEM(coef),  A_F32(alpha),  A_F32(beta),  A_U32(flags)};
    if ((st = launch_finalize(ctx, k[3], p.C, a2, NARGS(a2))) != CLNORM_SUCCESS || !dx)
        return st;
    return enqueue_apply(ctx, &p, k[4], x, gsrc, dx, NULL, NULL, NULL, NULL, coef, epsilon, F_DX | F_COEF | gmask, y);
}

clnorm_status cn_backward(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x, const clnorm_tensor *dy,
                          const clnorm_tensor *dx, cl_mem scale, cl_mem dscale, cl_mem dbias, double epsilon,
                          cl_mem save_mean, cl_mem save_invstd, double alpha, double beta) {
    return cn_backward_ex(ctx, mode, x, NULL, dy, dx, NULL, scale, NULL, dscale, dbias, epsilon, save_mean, save_invstd,
                          CLNORM_ACTIVATION_NONE, alpha, beta);
}

clnorm_status clnorm_bn_backward_ex(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                    const clnorm_tensor *y, const clnorm_tensor *dy, const clnorm_tensor *dx,
                                    const clnorm_tensor *dz, cl_mem scale, cl_mem bias, cl_mem dscale, cl_mem dbias,
                                    double epsilon, cl_mem save_mean, cl_mem save_invstd,
                                    clnorm_activation activation) {
    return cn_backward_ex(ctx, mode, x, y, dy, dx, dz, scale, bias, dscale, dbias, epsilon, save_mean, save_invstd,
                          activation, 1.0, 0.0);
}

clnorm_status clnorm_bn_backward(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                 const clnorm_tensor *dy, const clnorm_tensor *dx, cl_mem scale, cl_mem dscale,
                                 cl_mem dbias, double epsilon, cl_mem save_mean, cl_mem save_invstd) {
    return cn_backward(ctx, mode, x, dy, dx, scale, dscale, dbias, epsilon, save_mean, save_invstd, 1.0, 0.0);
}
