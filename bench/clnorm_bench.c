/*
 * clnorm-bench — how close each batch-normalization op comes to the device's memory bandwidth.
 *
 * For each (op, shape) it prints the median time per call, the effective bandwidth on the minimal
 * traffic (training forward 3 T, inference 2 T, backward 5 T; T = numel * 4 bytes) and that
 * bandwidth as a fraction of the same device's clEnqueueCopyBuffer of T bytes (counted as 2 T),
 * measured in the same run and interleaved with the op: for each of R rounds, k_copy copies are
 * timed, then k_op calls of the op; the figures are medians over the rounds and
 *     ratio = (op bytes / op median) / (2 T / copy median).
 * Machines are shared and memory bandwidth swings by tens of percent over seconds: only such
 * same-run, interleaved ratios are worth comparing; absolute times are not.
 *
 * The first call (context creation + program build + first op + clFinish) is reported once per run,
 * on the tiny shape, in fresh processes: "cold" with an empty POCL kernel cache (POCL_CACHE_DIR and
 * CLNORM_CACHE_DIR set to a new mkdtemp directory), "warm" re-using that directory.
 *
 * Usage: clnorm-bench [--shape B,C[,D[,H[,W]]]]... [--op train|infer|bwd|all]... [--device SEL]
 *                     [--csv] [--smoke] [--min-time SECONDS] [--rounds N] [--no-first-call]
 *
 * Ops: train = clnorm_bn_forward_training with scale/bias, running mean/var (factor 0.1) and saved
 * mean/invstd; infer = clnorm_bn_forward_inference; bwd = clnorm_bn_backward with dx, scale,
 * dscale/dbias and the saved statistics. Mode SPATIAL for ndim >= 3, PER_ACTIVATION for ndim 2
 * (PuzzleLib BatchNorm on (batch, size)). epsilon 1e-5.
 *
 * Every status is checked: on failure the bench prints the status and clnorm_last_error() and
 * exits with status 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clnorm.h"

extern char **environ;

#define FIRST_CALL_FLAG "--internal-first-call" /* hidden: the child of the first-call measurement */
#define MAX_SHAPES 64
#define MAX_OPS 16
#define MAX_ROUNDS 1000
#define MAX_ITERS 1000000L
#define SYNC_EVERY 256 /* clFinish every this many enqueues: bounds the commands in flight */
#define FACTOR 0.1
#define EPSILON 1e-5

/* The fused ops (issue 12) and the unfused chain they replace: train_ex = clnorm_bn_forward_training_ex with a
 * residual z and RELU (reads x twice and z, writes y: 4 T), infer_ex (x, z -> y: 3 T), backward_ex =
 * clnorm_bn_backward_ex with the RELU mask from y, dx and dz, saved statistics (x, y, dy -> dx, dz: 5 T);
 * chain_fwd = the plain training forward, then an add kernel (y += z) and a ReLU kernel (y = max(y, 0)), and
 * chain_bwd = a ReLU-backward kernel (g = dy where y > 0; g is also dz) then the plain backward with g: the same
 * results in separate passes, counted on the fused ops' byte counts so that their "x copy" figures compare
 * directly; step_ex / step_chain = forward + backward of each (9 T). */
typedef enum op_kind {
    OP_TRAIN = 0,
    OP_INFER = 1,
    OP_BWD = 2,
    OP_TRAIN_EX,
    OP_INFER_EX,
    OP_BWD_EX,
    OP_CHAIN_FWD,
    OP_CHAIN_BWD,
    OP_STEP_EX,
    OP_STEP_CHAIN,
    OP_COUNT
} op_kind;
static const char *const op_names[OP_COUNT] = {"train",     "infer",     "bwd",     "train_ex",   "infer_ex",
                                               "backward_ex", "chain_fwd", "chain_bwd", "step_ex", "step_chain"};
static const double op_traffic[OP_COUNT] = {3.0, 2.0, 5.0, 4.0, 3.0, 5.0, 4.0, 5.0, 9.0, 9.0}; /* minimal, in T */
#define OP_COPY OP_COUNT /* the yardstick copy in enqueue() */
#define N_PLAIN_OPS 3    /* the first-call child times these */

typedef struct shape {
    int ndim;
    size_t dims[CLNORM_MAX_DIMS];
} shape;

static const shape default_shapes[] = {
    {5, {8, 32, 32, 64, 64}},  /* BatchNorm3D, 4 MB maps */
    {5, {64, 4, 32, 64, 64}},  /* BatchNorm3D, 34 MB maps */
    {5, {16, 64, 16, 32, 32}}, /* BatchNorm3D */
    {4, {32, 256, 28, 28}},    /* BatchNorm2D */
    {2, {256, 1024}},          /* BatchNorm (per activation) */
    {5, {2, 4, 8, 8, 8}},      /* tiny: launch-bound */
};
static const shape tiny_shape = {5, {2, 4, 8, 8, 8}};

typedef struct options {
    shape shapes[MAX_SHAPES];
    int nshapes;
    op_kind ops[MAX_OPS];
    int nops;
    const char *device;
    int csv, smoke, first_call;
    double min_time;
    int rounds;
} options;

/* ---- failure reporting: print and exit 1 ----------------------------------------------------- */
static char g_where[192]; /* what the bench is doing, for the failure message */

static void check(clnorm_status st, const char *what) {
    if (st == CLNORM_SUCCESS)
        return;
    fprintf(stderr, "clnorm-bench: %s failed%s%s: %s\n", what, g_where[0] ? " " : "", g_where,
            clnorm_status_string(st));
    const char *detail = clnorm_last_error();
    if (detail && detail[0])
        fprintf(stderr, "  %s\n", detail);
    exit(1);
}

static void check_cl(cl_int err, const char *what) {
    if (err == CL_SUCCESS)
        return;
    fprintf(stderr, "clnorm-bench: %s failed%s%s: OpenCL error %d\n", what, g_where[0] ? " " : "", g_where, (int)err);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "clnorm-bench: out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- seeded uniform fill (xorshift64*) -------------------------------------------------------- */
static void fill_uniform(float *a, size_t n, float lo, float hi, uint64_t seed) {
    uint64_t s = seed ? seed : UINT64_C(0x9E3779B97F4A7C15);
    const float span = hi - lo;
    for (size_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        uint64_t r = s * UINT64_C(2685821657736338717);
        a[i] = lo + span * (float)((double)(r >> 40) * (1.0 / 16777216.0));
    }
}

/* ---- one shape's buffers ---------------------------------------------------------------------- */
typedef struct bench_case {
    clnorm_context *ctx;
    cl_command_queue queue;
    clnorm_bn_mode mode;
    shape sh;
    size_t numel, params, bytes; /* bytes = T */
    clnorm_tensor x, y, dy, dx;
    cl_mem scale, bias, run_mean, run_var, save_mean, save_invstd, dscale, dbias;
    clnorm_tensor z, dz;                /* the fused ops' residual and its gradient (g of the chain) */
    cl_kernel k_add, k_relu, k_relu_bwd; /* the unfused chain's elementwise kernels */
} bench_case;

/* The unfused chain's elementwise kernels in the simplest vectorised form: one float4 per work-item, the tail of
 * a size that is not a multiple of 4 one value at a time. */
static const char chain_source[] =
    "__kernel void add4(__global float *a, __global const float *b, ulong n) {\n"
    "    ulong i = get_global_id(0) * 4;\n"
    "    if (i + 4 <= n) vstore4(vload4(0, a + i) + vload4(0, b + i), 0, a + i);\n"
    "    else for (; i < n; ++i) a[i] += b[i];\n"
    "}\n"
    "__kernel void relu4(__global float *a, ulong n) {\n"
    "    ulong i = get_global_id(0) * 4;\n"
    "    if (i + 4 <= n) vstore4(fmax(vload4(0, a + i), 0.0f), 0, a + i);\n"
    "    else for (; i < n; ++i) a[i] = fmax(a[i], 0.0f);\n"
    "}\n"
    "__kernel void relu_bwd4(__global const float *dy, __global const float *y, __global float *g, ulong n) {\n"
    "    ulong i = get_global_id(0) * 4;\n"
    "    if (i + 4 <= n) vstore4(select((float4)(0.0f), vload4(0, dy + i), vload4(0, y + i) > 0.0f), 0, g + i);\n"
    "    else for (; i < n; ++i) g[i] = y[i] > 0.0f ? dy[i] : 0.0f;\n"
    "}\n";

static size_t shape_numel(const shape *s) {
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->dims[i];
    return n;
}

static cl_mem param_buffer(bench_case *c, const float *host) {
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(clnorm_context_cl_context(c->ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              c->params * sizeof(float), (void *)host, &err);
    check_cl(err, "clCreateBuffer (parameter vector)");
    return m;
}

static cl_kernel chain_kernel(cl_program prog, const char *name) {
    cl_int err = CL_SUCCESS;
    cl_kernel k = clCreateKernel(prog, name, &err);
    check_cl(err, "clCreateKernel (chain)");
    return k;
}

/* the unfused chain's kernels, built from chain_source on ctx's device */
static void chain_setup(bench_case *c) {
    cl_int err = CL_SUCCESS;
    const char *src = chain_source;
    cl_device_id dev = clnorm_context_device(c->ctx);
    cl_program prog = clCreateProgramWithSource(clnorm_context_cl_context(c->ctx), 1, &src, NULL, &err);
    check_cl(err, "clCreateProgramWithSource (chain)");
    check_cl(clBuildProgram(prog, 1, &dev, "-cl-std=CL1.2", NULL, NULL), "clBuildProgram (chain)");
    c->k_add = chain_kernel(prog, "add4");
    c->k_relu = chain_kernel(prog, "relu4");
    c->k_relu_bwd = chain_kernel(prog, "relu_bwd4");
    clReleaseProgram(prog); /* the kernels keep it */
}

/* one chain kernel over the tensor: args are cl_mem, then n */
static void chain_launch(bench_case *c, cl_kernel k, cl_mem a, cl_mem b, cl_mem d) {
    cl_mem m[3] = {a, b, d};
    cl_uint i = 0;
    cl_ulong n = c->numel;
    for (; i < 3 && m[i]; i++)
        check_cl(clSetKernelArg(k, i, sizeof(cl_mem), &m[i]), "clSetKernelArg (chain)");
    check_cl(clSetKernelArg(k, i, sizeof n, &n), "clSetKernelArg (chain)");
    size_t global = (c->numel + 3) / 4;
    check_cl(clEnqueueNDRangeKernel(c->queue, k, 1, NULL, &global, NULL, 0, NULL, NULL), "clEnqueueNDRangeKernel");
}

/* Allocates and fills x (and dy/dx when with_backward; z, dz and the chain's kernels when with_fused) once; y is
 * written by the ops and the copy. */
static void case_setup(bench_case *c, clnorm_context *ctx, const shape *sh, int with_backward, int with_fused,
                       uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->ctx = ctx;
    c->queue = clnorm_context_queue(ctx);
    c->sh = *sh;
    c->mode = sh->ndim == 2 ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
    c->numel = shape_numel(sh);
    c->bytes = c->numel * sizeof(float);
    c->params = c->mode == CLNORM_BN_SPATIAL ? sh->dims[1] : c->numel / sh->dims[0];

    float *host = xmalloc(c->bytes);
    fill_uniform(host, c->numel, -1.0f, 5.0f, seed); /* mean ~2, not centred: shifted sums matter */
    check(clnorm_tensor_create(ctx, sh->ndim, sh->dims, CLNORM_F32, host, &c->x), "clnorm_tensor_create(x)");
    check(clnorm_tensor_create(ctx, sh->ndim, sh->dims, CLNORM_F32, NULL, &c->y), "clnorm_tensor_create(y)");
    if (with_backward) {
        fill_uniform(host, c->numel, -1.0f, 1.0f, seed * 31 + 7);
        check(clnorm_tensor_create(ctx, sh->ndim, sh->dims, CLNORM_F32, host, &c->dy), "clnorm_tensor_create(dy)");
        check(clnorm_tensor_create(ctx, sh->ndim, sh->dims, CLNORM_F32, NULL, &c->dx), "clnorm_tensor_create(dx)");
    }
    if (with_fused) {
        fill_uniform(host, c->numel, -1.0f, 1.0f, seed * 17 + 3);
        check(clnorm_tensor_create(ctx, sh->ndim, sh->dims, CLNORM_F32, host, &c->z), "clnorm_tensor_create(z)");
        check(clnorm_tensor_create(ctx, sh->ndim, sh->dims, CLNORM_F32, NULL, &c->dz), "clnorm_tensor_create(dz)");
        chain_setup(c);
    }
    free(host);

    float *p = xmalloc(c->params * sizeof(float));
    fill_uniform(p, c->params, 0.9f, 1.1f, seed + 1);
    c->scale = param_buffer(c, p);
    fill_uniform(p, c->params, -0.1f, 0.1f, seed + 2);
    c->bias = param_buffer(c, p);
    for (size_t i = 0; i < c->params; i++)
        p[i] = 0.0f;
    c->run_mean = param_buffer(c, p);
    c->save_mean = param_buffer(c, p);
    c->dscale = param_buffer(c, p);
    c->dbias = param_buffer(c, p);
    for (size_t i = 0; i < c->params; i++)
        p[i] = 1.0f;
    c->run_var = param_buffer(c, p);
    c->save_invstd = param_buffer(c, p);
    free(p);
}

static void release_mem(cl_mem *m) {
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

static void case_teardown(bench_case *c) {
    check(clnorm_context_finish(c->ctx), "clnorm_context_finish");
    clnorm_tensor_release(&c->x);
    clnorm_tensor_release(&c->y);
    clnorm_tensor_release(&c->dy);
    clnorm_tensor_release(&c->dx);
    clnorm_tensor_release(&c->z);
    clnorm_tensor_release(&c->dz);
    cl_kernel ks[] = {c->k_add, c->k_relu, c->k_relu_bwd};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++)
        if (ks[i])
            clReleaseKernel(ks[i]);
    cl_mem *params[] = {&c->scale,     &c->bias,        &c->run_mean, &c->run_var,
                        &c->save_mean, &c->save_invstd, &c->dscale,   &c->dbias};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        release_mem(params[i]);
}

/* Enqueues one call of op (or, for op == OP_COUNT, the yardstick copy of T bytes x -> y). */
static void enqueue(bench_case *c, int op) {
    switch (op) {
    case OP_TRAIN:
        check(clnorm_bn_forward_training(c->ctx, c->mode, &c->x, &c->y, c->scale, c->bias, FACTOR, EPSILON, c->run_mean,
                                         c->run_var, c->save_mean, c->save_invstd),
              "clnorm_bn_forward_training");
        break;
    case OP_INFER:
        check(clnorm_bn_forward_inference(c->ctx, c->mode, &c->x, &c->y, c->scale, c->bias, c->run_mean, c->run_var,
                                          EPSILON),
              "clnorm_bn_forward_inference");
        break;
    case OP_BWD:
        check(clnorm_bn_backward(c->ctx, c->mode, &c->x, &c->dy, &c->dx, c->scale, c->dscale, c->dbias, EPSILON,
                                 c->save_mean, c->save_invstd),
              "clnorm_bn_backward");
        break;
    case OP_TRAIN_EX:
        check(clnorm_bn_forward_training_ex(c->ctx, c->mode, &c->x, &c->z, &c->y, c->scale, c->bias, FACTOR, EPSILON,
                                            c->run_mean, c->run_var, c->save_mean, c->save_invstd,
                                            CLNORM_ACTIVATION_RELU),
              "clnorm_bn_forward_training_ex");
        break;
    case OP_INFER_EX:
        check(clnorm_bn_forward_inference_ex(c->ctx, c->mode, &c->x, &c->z, &c->y, c->scale, c->bias, c->run_mean,
                                             c->run_var, EPSILON, CLNORM_ACTIVATION_RELU),
              "clnorm_bn_forward_inference_ex");
        break;
    case OP_BWD_EX:
        check(clnorm_bn_backward_ex(c->ctx, c->mode, &c->x, &c->y, &c->dy, &c->dx, &c->dz, c->scale, c->bias,
                                    c->dscale, c->dbias, EPSILON, c->save_mean, c->save_invstd,
                                    CLNORM_ACTIVATION_RELU),
              "clnorm_bn_backward_ex");
        break;
    case OP_CHAIN_FWD:
        enqueue(c, OP_TRAIN);
        chain_launch(c, c->k_add, c->y.buffer, c->z.buffer, NULL);
        chain_launch(c, c->k_relu, c->y.buffer, NULL, NULL);
        break;
    case OP_CHAIN_BWD: /* g (= dz) = dy where y > 0, then the plain backward with g */
        chain_launch(c, c->k_relu_bwd, c->dy.buffer, c->y.buffer, c->dz.buffer);
        check(clnorm_bn_backward(c->ctx, c->mode, &c->x, &c->dz, &c->dx, c->scale, c->dscale, c->dbias, EPSILON,
                                 c->save_mean, c->save_invstd),
              "clnorm_bn_backward");
        break;
    case OP_STEP_EX:
        enqueue(c, OP_TRAIN_EX);
        enqueue(c, OP_BWD_EX);
        break;
    case OP_STEP_CHAIN:
        enqueue(c, OP_CHAIN_FWD);
        enqueue(c, OP_CHAIN_BWD);
        break;
    default:
        check_cl(clEnqueueCopyBuffer(c->queue, c->x.buffer, c->y.buffer, 0, 0, c->bytes, 0, NULL, NULL),
                 "clEnqueueCopyBuffer");
        break;
    }
}

/* Seconds per call over k back-to-back calls (one clFinish per SYNC_EVERY and at the end). */
static double time_block(bench_case *c, int op, long k) {
    double t0 = now_s();
    for (long i = 0; i < k; i++) {
        enqueue(c, op);
        if ((i + 1) % SYNC_EVERY == 0)
            check(clnorm_context_finish(c->ctx), "clnorm_context_finish");
    }
    check(clnorm_context_finish(c->ctx), "clnorm_context_finish");
    return (now_s() - t0) / (double)k;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double *s = xmalloc((size_t)n * sizeof *s);
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

/* Warm-up (the first call builds the program), then the number of back-to-back calls that fills
   min_time, from the throughput of growing blocks (a single call with its clFinish would overstate
   the per-call time of launch-bound shapes). */
static long warm_and_calibrate(bench_case *c, int op, const options *o) {
    time_block(c, op, 1);
    if (o->smoke)
        return 1;
    double t0 = now_s();
    for (int n = 0; n < 3 || now_s() - t0 < 0.1; n++)
        time_block(c, op, 1);
    const double probe = o->min_time / 8;
    long k = 1;
    for (;;) {
        double total = time_block(c, op, k) * (double)k;
        if (total >= probe || k >= MAX_ITERS) {
            double want = total > 0 ? ceil((double)k * o->min_time / total) : (double)MAX_ITERS;
            return want < 1 ? 1 : want > (double)MAX_ITERS ? MAX_ITERS : (long)want;
        }
        double grow = total > 0 ? 2.0 * probe / total : 16.0; /* aim past the probe, at most 16x */
        k = (long)((double)k * (grow > 16.0 ? 16.0 : grow < 2.0 ? 2.0 : grow));
        k = k > MAX_ITERS ? MAX_ITERS : k;
    }
}

typedef struct result {
    double op_s, copy_s;      /* medians over rounds, seconds per call */
    double ratio, rmin, rmax; /* ratio of medians; min/max of per-round ratios */
    long k_op, k_copy;
} result;

static void measure(bench_case *c, op_kind op, const options *o, result *r) {
    double op_t[MAX_ROUNDS] = {0}, copy_t[MAX_ROUNDS] = {0}, ratio[MAX_ROUNDS] = {0}; /* rounds >= 1 */
    r->k_copy = warm_and_calibrate(c, OP_COUNT, o);
    r->k_op = warm_and_calibrate(c, op, o);
    for (int i = 0; i < o->rounds; i++) { /* interleaved: copy block, op block, copy block, ... */
        copy_t[i] = time_block(c, OP_COUNT, r->k_copy);
        op_t[i] = time_block(c, op, r->k_op);
        ratio[i] = op_traffic[op] * copy_t[i] / (2.0 * op_t[i]);
    }
    r->op_s = median(op_t, o->rounds);
    r->copy_s = median(copy_t, o->rounds);
    r->ratio = op_traffic[op] * r->copy_s / (2.0 * r->op_s);
    r->rmin = r->rmax = ratio[0];
    for (int i = 1; i < o->rounds; i++) {
        r->rmin = ratio[i] < r->rmin ? ratio[i] : r->rmin;
        r->rmax = ratio[i] > r->rmax ? ratio[i] : r->rmax;
    }
}

/* ---- shapes and arguments --------------------------------------------------------------------- */
static void shape_str(const shape *s, char sep, int parens, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = '\0';
    if (parens)
        len += (size_t)snprintf(buf + len, n - len, "(");
    for (int i = 0; i < s->ndim && len < n; i++) {
        if (i)
            len += (size_t)snprintf(buf + len, n - len, "%c", sep);
        if (len < n)
            len += (size_t)snprintf(buf + len, n - len, "%zu", s->dims[i]);
    }
    if (parens && len < n)
        snprintf(buf + len, n - len, ")");
}

static int parse_shape(const char *text, shape *out) {
    const char *p = text;
    out->ndim = 0;
    while (*p) {
        if (out->ndim == CLNORM_MAX_DIMS)
            return 0;
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno || v == 0 || *p == '-')
            return 0;
        out->dims[out->ndim++] = (size_t)v;
        p = end;
        if (*p == ',' || *p == 'x' || *p == 'X') {
            p++;
            if (!*p)
                return 0;
        } else if (*p) {
            return 0;
        }
    }
    return out->ndim >= 2;
}

static void usage(FILE *f) {
    fprintf(f, "usage: clnorm-bench [--shape B,C[,D[,H[,W]]]]... [--op OP[,OP...]]... [--device SEL]\n"
               "                    [--csv] [--smoke] [--min-time SECONDS] [--rounds N] [--no-first-call]\n"
               "  --shape       a shape (repeatable); default: the six shapes of the docs\n"
               "  --op          train, infer, bwd; the fused train_ex, infer_ex, backward_ex (residual + ReLU),\n"
               "                the unfused chain_fwd, chain_bwd, the training steps step_ex, step_chain;\n"
               "                fused (those seven) or all; comma-separated and repeatable; default: all\n"
               "  --device      selector for clnorm_context_create (default: $CLNORM_DEVICE or the default device)\n"
               "  --csv         one header line, then op,shape,ms,gbs,copy_gbs,ratio per (op, shape);\n"
               "                the run description goes to stderr as '#' lines\n"
               "  --smoke       tiny shape, 1 call per measurement, no calibration (CI: it runs and prints)\n"
               "  --min-time    seconds per timed block (default 0.3)\n"
               "  --rounds      interleaved copy/op rounds, medians over them (default 5)\n"
               "  --no-first-call  skip the cold/warm first-call measurement in fresh processes\n");
}

static const char *need_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "clnorm-bench: %s needs a value\n", argv[*i]);
        usage(stderr);
        exit(2);
    }
    return argv[++*i];
}

static void parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->min_time = 0.3;
    o->rounds = 5;
    o->first_call = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--shape")) {
            const char *v = need_value(argc, argv, &i);
            if (o->nshapes == MAX_SHAPES || !parse_shape(v, &o->shapes[o->nshapes])) {
                fprintf(stderr, "clnorm-bench: bad --shape '%s' (want 2 to 5 positive sizes, e.g. 8,32,32,64,64)\n", v);
                exit(2);
            }
            o->nshapes++;
        } else if (!strcmp(a, "--op")) {
            const char *v = need_value(argc, argv, &i);
            /* a comma-separated list of names, "fused" (the fused ops, the chain and the steps) or "all" */
            char list[256];
            snprintf(list, sizeof list, "%s", v);
            for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
                int found = 0;
                for (int k = 0; k < OP_COUNT; k++) {
                    int group = !strcmp(name, "all") || (!strcmp(name, "fused") && k >= OP_TRAIN_EX);
                    if ((group || !strcmp(name, op_names[k])) && o->nops < MAX_OPS) {
                        o->ops[o->nops++] = (op_kind)k;
                        found = 1;
                    }
                }
                if (!found) {
                    fprintf(stderr,
                            "clnorm-bench: bad --op '%s' (want train, infer, bwd, train_ex, infer_ex, backward_ex, "
                            "chain_fwd, chain_bwd, step_ex, step_chain, fused or all)\n",
                            name);
                    exit(2);
                }
            }
        } else if (!strcmp(a, "--device")) {
            o->device = need_value(argc, argv, &i);
        } else if (!strcmp(a, "--csv")) {
            o->csv = 1;
        } else if (!strcmp(a, "--smoke")) {
            o->smoke = 1;
        } else if (!strcmp(a, "--no-first-call")) {
            o->first_call = 0;
        } else if (!strcmp(a, "--min-time")) {
            const char *v = need_value(argc, argv, &i);
            char *end = NULL;
            o->min_time = strtod(v, &end);
            if (end == v || *end || !(o->min_time > 0) || o->min_time > 60) {
                fprintf(stderr, "clnorm-bench: bad --min-time '%s' (seconds, > 0)\n", v);
                exit(2);
            }
        } else if (!strcmp(a, "--rounds")) {
            const char *v = need_value(argc, argv, &i);
            char *end = NULL;
            long r = strtol(v, &end, 10);
            if (end == v || *end || r < 1 || r > MAX_ROUNDS) {
                fprintf(stderr, "clnorm-bench: bad --rounds '%s' (1..%d)\n", v, MAX_ROUNDS);
                exit(2);
            }
            o->rounds = (int)r;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "clnorm-bench: unknown argument '%s'\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (o->smoke)
        o->rounds = 1;
    if (!o->nshapes) {
        if (o->smoke) {
            o->shapes[o->nshapes++] = tiny_shape;
        } else {
            for (size_t k = 0; k < sizeof default_shapes / sizeof default_shapes[0]; k++)
                o->shapes[o->nshapes++] = default_shapes[k];
        }
    }
    if (!o->nops)
        for (int k = 0; k < OP_COUNT; k++)
            o->ops[o->nops++] = (op_kind)k;
}

/* ---- first call in fresh processes ------------------------------------------------------------ */
/* The child: context create, then the first call of each op on the tiny shape, each with clFinish.
   Prints "create train infer bwd" in ms on stdout (-1 for an op not run). */
static int first_call_child(const char *device, int all_ops) {
    double ms[1 + N_PLAIN_OPS] = {-1, -1, -1, -1};
    clnorm_context *ctx = NULL;
    double t0 = now_s();
    check(clnorm_context_create(device, &ctx), "clnorm_context_create");
    ms[0] = 1e3 * (now_s() - t0);
    bench_case c;
    case_setup(&c, ctx, &tiny_shape, all_ops, 0, 12345);
    for (int op = 0; op < (all_ops ? N_PLAIN_OPS : 1); op++) { /* train first: bwd needs its saved stats */
        t0 = now_s();
        enqueue(&c, op);
        check(clnorm_context_finish(ctx), "clnorm_context_finish");
        ms[1 + op] = 1e3 * (now_s() - t0);
    }
    case_teardown(&c);
    clnorm_context_destroy(ctx);
    printf("%.3f %.3f %.3f %.3f\n", ms[0], ms[1], ms[2], ms[3]);
    return 0;
}

static int has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Runs this executable again with FIRST_CALL_FLAG and POCL_CACHE_DIR = CLNORM_CACHE_DIR = dir. */
static int spawn_first_call(const char *argv0, const char *dir, const char *device, int all_ops, double ms[4]) {
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = xmalloc((n + 3) * sizeof *envp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!has_prefix(environ[i], "POCL_CACHE_DIR=") && !has_prefix(environ[i], "CLNORM_CACHE_DIR="))
            envp[m++] = environ[i];
    size_t len = strlen(dir) + 32;
    char *pocl = xmalloc(len), *own = xmalloc(len);
    snprintf(pocl, len, "POCL_CACHE_DIR=%s", dir);
    snprintf(own, len, "CLNORM_CACHE_DIR=%s", dir);
    envp[m++] = pocl;
    envp[m++] = own;
    envp[m] = NULL;
    char *args[6];
    int a = 0;
    args[a++] = (char *)argv0;
    args[a++] = FIRST_CALL_FLAG;
    args[a++] = all_ops ? "all" : "train";
    if (device)
        args[a++] = (char *)device;
    args[a] = NULL;

    int fds[2];
    int ok = 0;
    if (pipe(fds) != 0) {
        perror("clnorm-bench: pipe");
        goto out;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("clnorm-bench: fork");
        close(fds[0]);
        close(fds[1]);
        goto out;
    }
    if (pid == 0) { /* only async-signal-safe calls: the parent may have OpenCL threads */
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        execve("/proc/self/exe", args, envp);
        execve(argv0, args, envp);
        _exit(127);
    }
    close(fds[1]);
    char buf[512];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + got, sizeof buf - 1 - got)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        got += (size_t)r;
        if (got == sizeof buf - 1)
            break;
    }
    buf[got] = '\0';
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
        sscanf(buf, "%lf %lf %lf %lf", &ms[0], &ms[1], &ms[2], &ms[3]) == 4)
        ok = 1;
    else
        fprintf(stderr, "clnorm-bench: first-call child failed (status %d, output '%s')\n",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1, buf);
out:
    free(pocl);
    free(own);
    free(envp);
    return ok;
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                size_t len = strlen(path) + strlen(e->d_name) + 2;
                char *child = xmalloc(len);
                snprintf(child, len, "%s/%s", path, e->d_name);
                remove_tree(child);
                free(child);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void print_first_call_line(FILE *f, const char *prefix, const char *label, const double ms[4]) {
    fprintf(f, "%s  %-5s context %8.1f ms | first train %8.1f ms", prefix, label, ms[0], ms[1]);
    if (ms[2] >= 0)
        fprintf(f, " | first infer %8.1f ms | first bwd %8.1f ms", ms[2], ms[3]);
    fprintf(f, " | context + first train %8.1f ms\n", ms[0] + ms[1]);
}

static void first_call(const char *argv0, const options *o, FILE *f, const char *prefix) {
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/clnorm-bench-cache-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("clnorm-bench: mkdtemp");
        exit(1);
    }
    int all_ops = !o->smoke;
    double cold[4], warm[4];
    int ok = spawn_first_call(argv0, dir, o->device, all_ops, cold) &&
             spawn_first_call(argv0, dir, o->device, all_ops, warm);
    remove_tree(dir);
    if (!ok)
        exit(1);
    fprintf(f,
            "%sfirst call, tiny shape, each a fresh process (context create; each op's first call incl. program "
            "build and clFinish):\n",
            prefix);
    print_first_call_line(f, prefix, "cold", cold);
    print_first_call_line(f, prefix, "warm", warm);
}

/* ---- run description -------------------------------------------------------------------------- */
static const char *device_type_name(cl_device_type t) {
    if (t & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (t & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    if (t & CL_DEVICE_TYPE_CPU)
        return "CPU";
    return "other";
}

static void print_header(clnorm_context *ctx, const options *o, FILE *f, const char *prefix) {
    cl_device_id dev = clnorm_context_device(ctx);
    char driver[256] = "?", pver[256] = "?";
    cl_platform_id plat = NULL;
    cl_device_type type = 0;
    cl_uint units = 0;
    clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof driver, driver, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
    if (clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL) == CL_SUCCESS)
        clGetPlatformInfo(plat, CL_PLATFORM_VERSION, sizeof pver, pver, NULL);
    driver[sizeof driver - 1] = pver[sizeof pver - 1] = '\0';
    unsigned v = clnorm_version();
    const char *opts = getenv("CLNORM_BUILD_OPTIONS"), *strat = getenv("CLNORM_STRATEGY");
    fprintf(f,
            "%sclnorm %u.%u.%u | device: %s | type %s, %u compute units | driver %s | platform %s | "
            "CLNORM_BUILD_OPTIONS=%s | CLNORM_STRATEGY=%s\n",
            prefix, v / 10000, v / 100 % 100, v % 100, clnorm_context_device_name(ctx), device_type_name(type), units,
            driver, pver, opts && opts[0] ? opts : "(default)", strat && strat[0] ? strat : "(default)");
    FILE *la = fopen("/proc/loadavg", "r"); /* other processes on the cores skew every figure */
    double load = -1;
    if (la) {
        if (fscanf(la, "%lf", &load) != 1)
            load = -1;
        fclose(la);
    }
    if (load >= 0)
        fprintf(f, "%sload average (1 min) at start: %.2f on %ld online CPUs\n", prefix, load,
                sysconf(_SC_NPROCESSORS_ONLN));
    if (o->smoke)
        fprintf(f, "%ssmoke run: 1 call per measurement, no calibration: the figures mean nothing\n", prefix);
    else
        fprintf(f,
                "%smedians of %d rounds; each round times ~%.2f s of clEnqueueCopyBuffer (T bytes, counted 2 T), "
                "then ~%.2f s of the op;\n%sGB/s on the minimal traffic (train 3 T, infer 2 T, bwd 5 T, train_ex and "
                "chain_fwd 4 T, infer_ex 3 T, backward_ex and chain_bwd 5 T, the steps 9 T); "
                "x copy = op GB/s / copy GB/s; range = per-round min..max of that ratio\n",
                prefix, o->rounds, o->min_time, o->min_time, prefix);
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], FIRST_CALL_FLAG))
        return first_call_child(argc >= 4 ? argv[3] : NULL, strcmp(argv[2], "all") == 0);

    options o;
    parse_args(argc, argv, &o);
    FILE *info = o.csv ? stderr : stdout; /* CSV mode: stdout carries only the table */
    const char *prefix = o.csv ? "# " : "";

    clnorm_context *ctx = NULL;
    check(clnorm_context_create(o.device, &ctx), "clnorm_context_create");
    print_header(ctx, &o, info, prefix);
    fflush(info);
    if (o.first_call)
        first_call(argv[0], &o, info, prefix);

    if (o.csv)
        printf("op,shape,ms,gbs,copy_gbs,ratio\n");
    else
        printf("\n%-11s  %-20s %9s %10s %9s %9s %9s %7s %13s %13s\n", "op", "shape", "T MB", "ms", "GB/s", "copy ms",
               "copy GB/s", "x copy", "range", "calls op/copy");
    fflush(stdout);

    int need_bwd = 0, need_fused = 0;
    for (int i = 0; i < o.nops; i++) {
        need_bwd |= o.ops[i] == OP_BWD || o.ops[i] >= OP_BWD_EX;
        need_fused |= o.ops[i] >= OP_TRAIN_EX;
    }
    for (int s = 0; s < o.nshapes; s++) {
        char sh[128];
        shape_str(&o.shapes[s], ',', 1, sh, sizeof sh);
        snprintf(g_where, sizeof g_where, "(shape %s)", sh);
        bench_case c;
        case_setup(&c, ctx, &o.shapes[s], need_bwd, need_fused, 1000 + (uint64_t)s);
        if (need_bwd) { /* backward consumes the saved statistics of a training forward (and its y) */
            enqueue(&c, need_fused ? OP_TRAIN_EX : OP_TRAIN);
            check(clnorm_context_finish(ctx), "clnorm_context_finish");
        }
        double xcopy[OP_COUNT] = {0};
        shape_str(&o.shapes[s], o.csv ? 'x' : ',', !o.csv, sh, sizeof sh);
        for (int i = 0; i < o.nops; i++) {
            op_kind op = o.ops[i];
            snprintf(g_where, sizeof g_where, "(op %s, shape %s)", op_names[op], sh);
            result r;
            measure(&c, op, &o, &r);
            double T = (double)c.bytes;
            double gbs = op_traffic[op] * T / r.op_s * 1e-9, copy_gbs = 2.0 * T / r.copy_s * 1e-9;
            if (o.csv)
                printf("%s,%s,%.6f,%.3f,%.3f,%.4f\n", op_names[op], sh, 1e3 * r.op_s, gbs, copy_gbs, r.ratio);
            else
                printf("%-11s  %-20s %9.2f %10.4f %9.2f %9.4f %9.2f %7.2f %6.2f..%-5.2f %7ld/%ld\n", op_names[op], sh,
                       T * 1e-6, 1e3 * r.op_s, gbs, 1e3 * r.copy_s, copy_gbs, r.ratio, r.rmin, r.rmax, r.k_op,
                       r.k_copy);
            xcopy[op] = r.ratio;
            fflush(stdout);
        }
        /* fused against the unfused chain on the same byte counts: the ratio of their fractions of copy */
        static const op_kind pairs[][2] = {{OP_TRAIN_EX, OP_CHAIN_FWD}, {OP_BWD_EX, OP_CHAIN_BWD},
                                           {OP_STEP_EX, OP_STEP_CHAIN}};
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
            if (xcopy[pairs[i][0]] > 0 && xcopy[pairs[i][1]] > 0)
                fprintf(info, "%s  %-11s vs %-10s %s: %.2fx faster\n", prefix, op_names[pairs[i][0]],
                        op_names[pairs[i][1]], sh, xcopy[pairs[i][0]] / xcopy[pairs[i][1]]);
        case_teardown(&c);
    }
    clnorm_context_destroy(ctx);
    return 0;
}
