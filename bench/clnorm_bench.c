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
#define _GNU_SOURCE /* dlsym(RTLD_NEXT) for the launch counter */

#include <dirent.h>
#include <dlfcn.h>
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
    OP_COPY_NT,   /* limit yardstick: a float16 copy kernel with non-temporal stores (2 T) */
    OP_FUSED_MIN, /* limit yardstick: a minimal fused per-map training forward (3 T), F32 NCHW only */
    OP_COUNT
} op_kind;
static const char *const op_names[OP_COUNT] = {"train",    "infer",       "bwd",       "train_ex",
                                               "infer_ex", "backward_ex", "chain_fwd", "chain_bwd",
                                               "step_ex",  "step_chain",  "copy_nt",   "fused_min"};
static const double op_traffic[OP_COUNT] = {3.0, 2.0, 5.0, 4.0, 3.0, 5.0,
                                            4.0, 5.0, 9.0, 9.0, 2.0, 3.0}; /* minimal, in T */
#define OP_FIRST_FUSED OP_TRAIN_EX                                         /* "fused": train_ex .. step_chain */
#define OP_FIRST_LIMIT OP_COPY_NT                                          /* "limit": copy_nt, fused_min */
#define OP_COPY OP_COUNT                                                   /* the yardstick copy in enqueue() */
#define N_PLAIN_OPS 3                                                      /* the first-call child times these */

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
    clnorm_dtype dtype;   /* --dtype: storage type of the tensors (T counts its element size) */
    clnorm_layout layout; /* --layout */
} options;
static options g_opt;  /* the run's options, for case_setup */
static int g_no_limit; /* the first-call child: no limit program (its build would warm the compiler) */

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

/* ---- launch counter ---------------------------------------------------------------------------- */
/* The library is linked statically into this executable, so its calls to clEnqueueNDRangeKernel bind to this
 * definition, which counts them and forwards to the OpenCL library's: the launches per call in the table (the
 * host overhead of an op beyond its launches = its host time - launches x an empty kernel's enqueue). */
static unsigned long g_launches;
typedef cl_int(CL_API_CALL *enqueue_fn)(cl_command_queue, cl_kernel, cl_uint, const size_t *, const size_t *,
                                        const size_t *, cl_uint, const cl_event *, cl_event *);
CL_API_ENTRY cl_int CL_API_CALL clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dims,
                                                       const size_t *offset, const size_t *global, const size_t *local,
                                                       cl_uint nwait, const cl_event *wait,
                                                       cl_event *ev) CL_API_SUFFIX__VERSION_1_0 {
    static enqueue_fn real;
    if (!real) {
        void *f = dlsym(RTLD_NEXT, "clEnqueueNDRangeKernel");
        memcpy(&real, &f, sizeof real);
        if (!real) {
            fprintf(stderr, "clnorm-bench: clEnqueueNDRangeKernel not found in the OpenCL library\n");
            exit(1);
        }
    }
    ++g_launches;
    return real(q, k, dims, offset, global, local, nwait, wait, ev);
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
    clnorm_tensor z, dz;                 /* the fused ops' residual and its gradient (g of the chain) */
    cl_kernel k_add, k_relu, k_relu_bwd; /* the unfused chain's elementwise kernels */
    cl_kernel k_copy_nt, k_fused_min;    /* the limit yardsticks (F32 NCHW runs) */
    size_t esize;                        /* bytes per element of the run's dtype */
} bench_case;

/* The limit yardsticks: what a kernel with nothing but the arithmetic reaches on this device.
 * copy_nt: work-item i copies its contiguous chunk in float16 vectors, stored non-temporally (vstore16 when the
 *   compiler lacks __builtin_nontemporal_store or the address is not 64-byte aligned): 2 T.
 * fused_min: a minimal fused per-map training forward, one work-item per map (the CPU pattern): statistics of
 *   the map (each row of S values shifted by the map's first value, summed in 16 lanes, rows merged with Chan's
 *   formula), then y = x * a + b over the map while it is still in cache, stored non-temporally; saved and
 *   running statistics written: 3 T. No affine-less / mode / layout / dtype variants, no tails beyond a scalar
 *   loop: the production kernels carry all of that. */
static const char limit_source[] =
    "#if defined(__has_builtin)\n"
    "#if __has_builtin(__builtin_nontemporal_store)\n"
    "#define NT_STORE 1\n"
    "#endif\n"
    "#endif\n"
    "#ifdef NT_STORE\n"
    "#define ST16(v, p) __builtin_nontemporal_store((v), (__global float16 *)(p))\n"
    "#else\n"
    "#define ST16(v, p) vstore16((v), 0, (p))\n"
    "#endif\n"
    "static float sum16(float16 v) {\n"
    "    float8 a = v.lo + v.hi;\n"
    "    float4 b = a.lo + a.hi;\n"
    "    float2 c = b.lo + b.hi;\n"
    "    return c.x + c.y;\n"
    "}\n"
    "__kernel void copy_nt(__global const float *x, __global float *y, ulong n, ulong chunk) {\n"
    "    ulong i = get_global_id(0) * chunk, e = min(i + chunk, n);\n"
    "    if (((ulong)(y + i) & 63) == 0)\n"
    "        for (; i + 16 <= e; i += 16)\n"
    "            ST16(vload16(0, x + i), y + i);\n"
    "    for (; i < e; ++i)\n"
    "        y[i] = x[i];\n"
    "}\n"
    "__kernel void fused_min(__global const float *x, __global float *y, ulong B, ulong C, ulong S,\n"
    "                        __global const float *w, __global const float *bias, __global float *rm,\n"
    "                        __global float *rv, __global float *sm, __global float *si, float factor, float eps) {\n"
    "    ulong c = get_global_id(0);\n"
    "    if (c >= C)\n"
    "        return;\n"
    "    float K = x[c * S], n = 0.0f, mean = 0.0f, m2 = 0.0f;\n"
    "    for (ulong b = 0; b < B; ++b) {\n"
    "        __global const float *p = x + (b * C + c) * S;\n"
    "        float16 v1 = (float16)(0.0f), v2 = (float16)(0.0f);\n"
    "        float t1 = 0.0f, t2 = 0.0f;\n"
    "        ulong i = 0;\n"
    "        for (; i + 16 <= S; i += 16) {\n"
    "            float16 d = vload16(0, p + i) - K;\n"
    "            v1 += d;\n"
    "            v2 += d * d;\n"
    "        }\n"
    "        for (; i < S; ++i) {\n"
    "            float d = p[i] - K;\n"
    "            t1 += d;\n"
    "            t2 += d * d;\n"
    "        }\n"
    "        t1 += sum16(v1);\n"
    "        t2 += sum16(v2);\n"
    "        float nb = (float)S, mb = t1 / nb, m2b = fmax(t2 - t1 * mb, 0.0f), nt = n + nb, d = mb - mean;\n"
    "        mean += d * nb / nt;\n"
    "        m2 += m2b + d * d * n * nb / nt;\n"
    "        n = nt;\n"
    "    }\n"
    "    float mu = K + mean, is = rsqrt(m2 / n + eps), a = w[c] * is, bb = bias[c] - mu * a;\n"
    "    sm[c] = mu;\n"
    "    si[c] = is;\n"
    "    rm[c] = (1.0f - factor) * rm[c] + factor * mu;\n"
    "    rv[c] = (1.0f - factor) * rv[c] + factor * m2 / (n - 1.0f);\n"
    "    for (ulong b = 0; b < B; ++b) {\n"
    "        __global const float *p = x + (b * C + c) * S;\n"
    "        __global float *q = y + (b * C + c) * S;\n"
    "        ulong i = 0;\n"
    "        if (((ulong)q & 63) == 0)\n"
    "            for (; i + 16 <= S; i += 16)\n"
    "                ST16(vload16(0, p + i) * a + bb, q + i);\n"
    "        for (; i < S; ++i)\n"
    "            q[i] = p[i] * a + bb;\n"
    "    }\n"
    "}\n"
    "__kernel void null_kernel(__global float *p) {}\n";

/* the limit source built on ctx's device; NULL kernels when it does not build (the rows are then skipped) */
static cl_program limit_program(clnorm_context *ctx) {
    static cl_program prog;
    static clnorm_context *built_for;
    if (built_for == ctx)
        return prog;
    cl_int err = CL_SUCCESS;
    const char *src = limit_source;
    cl_device_id dev = clnorm_context_device(ctx);
    prog = clCreateProgramWithSource(clnorm_context_cl_context(ctx), 1, &src, NULL, &err);
    check_cl(err, "clCreateProgramWithSource (limit)");
    if (clBuildProgram(prog, 1, &dev, "-cl-std=CL1.2", NULL, NULL) != CL_SUCCESS) {
        fprintf(stderr, "clnorm-bench: the limit kernels do not build on this device: their rows are skipped\n");
        clReleaseProgram(prog);
        prog = NULL;
    }
    built_for = ctx;
    return prog;
}

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

/* float -> the run's storage type, in place in a buffer of n floats (16-bit values packed at its start):
 * IEEE half and bfloat16, both rounded to nearest even (the bench's values are normal or zero) */
static void to_storage(float *a, size_t n, clnorm_dtype dt) {
    uint16_t *h = (uint16_t *)a;
    for (size_t i = 0; i < n && dt != CLNORM_F32; i++) {
        uint32_t b;
        memcpy(&b, &a[i], 4);
        uint16_t out;
        if (dt == CLNORM_BF16) {
            out = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
        } else {
            uint32_t sign = (b >> 16) & 0x8000u, e = (b >> 23) & 0xffu, m = b & 0x7fffffu;
            if (e < 103) { /* below half's smallest subnormal: zero */
                out = (uint16_t)sign;
            } else if (e < 113) { /* half subnormal */
                uint32_t mm = m | 0x800000u, shift = 126 - e, r = mm >> shift, rem = mm & ((1u << shift) - 1u),
                         half = 1u << (shift - 1);
                r += rem > half || (rem == half && (r & 1u));
                out = (uint16_t)(sign | r);
            } else {
                uint32_t r = ((e - 112) << 10) | (m >> 13), rem = m & 0x1fffu;
                r += rem > 0x1000u || (rem == 0x1000u && (r & 1u));
                out = (uint16_t)(sign | (r > 0x7c00u ? 0x7c00u : r));
            }
        }
        h[i] = out; /* i * 2 <= i * 4: never overwrites a float not yet read */
    }
}

static void make_tensor(bench_case *c, const shape *sh, float *host, clnorm_tensor *t, const char *what) {
    if (host)
        to_storage(host, c->numel, g_opt.dtype);
    check(clnorm_tensor_create(c->ctx, sh->ndim, sh->dims, g_opt.dtype, host, t), what);
    t->layout = g_opt.layout; /* the same dense bytes read in the other order */
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
    c->esize = g_opt.dtype == CLNORM_F32 ? 4 : 2;
    c->bytes = c->numel * c->esize;
    c->params = c->mode == CLNORM_BN_SPATIAL ? sh->dims[1] : c->numel / sh->dims[0];

    float *host = xmalloc(c->numel * sizeof(float));
    fill_uniform(host, c->numel, -1.0f, 5.0f, seed); /* mean ~2, not centred: shifted sums matter */
    make_tensor(c, sh, host, &c->x, "clnorm_tensor_create(x)");
    make_tensor(c, sh, NULL, &c->y, "clnorm_tensor_create(y)");
    if (with_backward) {
        fill_uniform(host, c->numel, -1.0f, 1.0f, seed * 31 + 7);
        make_tensor(c, sh, host, &c->dy, "clnorm_tensor_create(dy)");
        make_tensor(c, sh, NULL, &c->dx, "clnorm_tensor_create(dx)");
    }
    if (with_fused) {
        fill_uniform(host, c->numel, -1.0f, 1.0f, seed * 17 + 3);
        make_tensor(c, sh, host, &c->z, "clnorm_tensor_create(z)");
        make_tensor(c, sh, NULL, &c->dz, "clnorm_tensor_create(dz)");
        if (g_opt.dtype == CLNORM_F32)
            chain_setup(c);
    }
    free(host);
    cl_program lp = g_opt.dtype == CLNORM_F32 && !g_no_limit ? limit_program(ctx) : NULL;
    if (lp) {
        cl_int err = CL_SUCCESS;
        c->k_copy_nt = clCreateKernel(lp, "copy_nt", &err);
        check_cl(err, "clCreateKernel (copy_nt)");
        c->k_fused_min = clCreateKernel(lp, "fused_min", &err);
        check_cl(err, "clCreateKernel (fused_min)");
    }

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
    cl_kernel ks[] = {c->k_add, c->k_relu, c->k_relu_bwd, c->k_copy_nt, c->k_fused_min};
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
        check(clnorm_bn_backward_ex(c->ctx, c->mode, &c->x, &c->y, &c->dy, &c->dx, &c->dz, c->scale, c->bias, c->dscale,
                                    c->dbias, EPSILON, c->save_mean, c->save_invstd, CLNORM_ACTIVATION_RELU),
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
    case OP_COPY_NT: {
        cl_device_type type = 0;
        clGetDeviceInfo(clnorm_context_device(c->ctx), CL_DEVICE_TYPE, sizeof type, &type, NULL);
        /* CPU: a contiguous chunk per work-item, 8 per compute unit; else 16 values per work-item */
        cl_uint units = 1;
        clGetDeviceInfo(clnorm_context_device(c->ctx), CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
        cl_ulong n = c->numel, chunk = 16;
        if (type & CL_DEVICE_TYPE_CPU)
            chunk = ((n + 8 * units - 1) / (8 * units) + 15) / 16 * 16;
        size_t global = (size_t)((n + chunk - 1) / chunk), local = 1;
        check_cl(clSetKernelArg(c->k_copy_nt, 0, sizeof(cl_mem), &c->x.buffer), "clSetKernelArg (copy_nt)");
        check_cl(clSetKernelArg(c->k_copy_nt, 1, sizeof(cl_mem), &c->y.buffer), "clSetKernelArg (copy_nt)");
        check_cl(clSetKernelArg(c->k_copy_nt, 2, sizeof n, &n), "clSetKernelArg (copy_nt)");
        check_cl(clSetKernelArg(c->k_copy_nt, 3, sizeof chunk, &chunk), "clSetKernelArg (copy_nt)");
        check_cl(clEnqueueNDRangeKernel(c->queue, c->k_copy_nt, 1, NULL, &global,
                                        (type & CL_DEVICE_TYPE_CPU) ? &local : NULL, 0, NULL, NULL),
                 "clEnqueueNDRangeKernel (copy_nt)");
        break;
    }
    case OP_FUSED_MIN: {
        cl_ulong B = c->sh.dims[0], C = c->sh.dims[1], S = c->numel / (B * C);
        cl_float f = (cl_float)FACTOR, e = (cl_float)EPSILON;
        const void *mems[] = {&c->x.buffer, &c->y.buffer};
        const cl_mem params[] = {c->scale, c->bias, c->run_mean, c->run_var, c->save_mean, c->save_invstd};
        cl_uint a = 0;
        for (int i = 0; i < 2; i++)
            check_cl(clSetKernelArg(c->k_fused_min, a++, sizeof(cl_mem), mems[i]), "clSetKernelArg (fused_min)");
        check_cl(clSetKernelArg(c->k_fused_min, a++, sizeof B, &B), "clSetKernelArg (fused_min)");
        check_cl(clSetKernelArg(c->k_fused_min, a++, sizeof C, &C), "clSetKernelArg (fused_min)");
        check_cl(clSetKernelArg(c->k_fused_min, a++, sizeof S, &S), "clSetKernelArg (fused_min)");
        for (int i = 0; i < 6; i++)
            check_cl(clSetKernelArg(c->k_fused_min, a++, sizeof(cl_mem), &params[i]), "clSetKernelArg (fused_min)");
        check_cl(clSetKernelArg(c->k_fused_min, a++, sizeof f, &f), "clSetKernelArg (fused_min)");
        check_cl(clSetKernelArg(c->k_fused_min, a++, sizeof e, &e), "clSetKernelArg (fused_min)");
        size_t global = (size_t)C, local = 1;
        check_cl(clEnqueueNDRangeKernel(c->queue, c->k_fused_min, 1, NULL, &global, &local, 0, NULL, NULL),
                 "clEnqueueNDRangeKernel (fused_min)");
        break;
    }
    default:
        check_cl(clEnqueueCopyBuffer(c->queue, c->x.buffer, c->y.buffer, 0, 0, c->bytes, 0, NULL, NULL),
                 "clEnqueueCopyBuffer");
        break;
    }
}

static int cmp_double(const void *a, const void *b);
static int cmp_double_fwd(const void *a, const void *b) {
    return cmp_double(a, b);
}

/* host seconds spent in the calls (enqueue only) and launches, summed by time_block */
static double g_host_s;
static unsigned long g_block_launches;

/* Seconds per call over k back-to-back calls (one clFinish per SYNC_EVERY and at the end). */
static double time_block(bench_case *c, int op, long k) {
    double host = 0.0;
    unsigned long l0 = g_launches;
    double t0 = now_s();
    for (long i = 0; i < k; i++) {
        double h = now_s();
        enqueue(c, op);
        host += now_s() - h;
        if ((i + 1) % SYNC_EVERY == 0)
            check(clnorm_context_finish(c->ctx), "clnorm_context_finish");
    }
    check(clnorm_context_finish(c->ctx), "clnorm_context_finish");
    double t = (now_s() - t0) / (double)k;
    g_host_s = host / (double)k;
    g_block_launches = g_launches - l0;
    return t;
}

/* median seconds of one call and its clFinish (the synchronous latency), over n calls */
static double time_sync(bench_case *c, int op, int n) {
    double v[200];
    n = n < 1 ? 1 : n > 200 ? 200 : n;
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        enqueue(c, op);
        check(clnorm_context_finish(c->ctx), "clnorm_context_finish");
        v[i] = now_s() - t0;
    }
    qsort(v, (size_t)n, sizeof v[0], cmp_double_fwd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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
    double host_s;   /* median over rounds of the host time per call (in the call, not waiting for it) */
    double launches; /* kernel launches per call */
    double sync_s;   /* median of call + clFinish */
} result;

static void measure(bench_case *c, op_kind op, const options *o, result *r) {
    double op_t[MAX_ROUNDS] = {0}, copy_t[MAX_ROUNDS] = {0}, ratio[MAX_ROUNDS] = {0}, host_t[MAX_ROUNDS] = {0};
    r->launches = 0.0;
    r->k_copy = warm_and_calibrate(c, OP_COUNT, o);
    r->k_op = warm_and_calibrate(c, op, o);
    for (int i = 0; i < o->rounds; i++) { /* interleaved: copy block, op block, copy block, ... */
        copy_t[i] = time_block(c, OP_COUNT, r->k_copy);
        op_t[i] = time_block(c, op, r->k_op);
        host_t[i] = g_host_s;
        r->launches = (double)g_block_launches / (double)r->k_op;
        ratio[i] = op_traffic[op] * copy_t[i] / (2.0 * op_t[i]);
    }
    r->host_s = median(host_t, o->rounds);
    double per = op_t[0] > 0 ? 0.2 / op_t[0] : 200;
    r->sync_s = time_sync(c, op, o->smoke ? 1 : per < 5 ? 5 : per > 200 ? 200 : (int)per);
    r->op_s = median(op_t, o->rounds);
    r->copy_s = median(copy_t, o->rounds);
    r->ratio = op_traffic[op] * r->copy_s / (2.0 * r->op_s);
    r->rmin = r->rmax = ratio[0];
    for (int i = 1; i < o->rounds; i++) {
        r->rmin = ratio[i] < r->rmin ? ratio[i] : r->rmin;
        r->rmax = ratio[i] > r->rmax ? ratio[i] : r->rmax;
    }
}

/* ---- the cost of a launch: an empty kernel ---------------------------------------------------------- */
typedef struct launch_cost {
    double b2b_s, host_s, sync_s; /* per launch back to back, of it in clEnqueueNDRangeKernel; enqueue + clFinish */
} launch_cost;

static int measure_launch(clnorm_context *ctx, const options *o, launch_cost *lc) {
    cl_program lp = limit_program(ctx);
    if (!lp)
        return 0;
    cl_int err = CL_SUCCESS;
    cl_kernel k = clCreateKernel(lp, "null_kernel", &err);
    check_cl(err, "clCreateKernel (null_kernel)");
    cl_mem m = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, 64, NULL, &err);
    check_cl(err, "clCreateBuffer (null_kernel)");
    check_cl(clSetKernelArg(k, 0, sizeof m, &m), "clSetKernelArg (null_kernel)");
    cl_command_queue q = clnorm_context_queue(ctx);
    size_t g = 1, l = 1;
    long n = o->smoke ? 16 : 4096;
    double b2b[MAX_ROUNDS], host[MAX_ROUNDS], sync[200];
    int rounds = o->smoke ? 1 : o->rounds;
    for (int r = -1; r < rounds; r++) { /* round -1: warm-up (the kernel's first enqueue compiles it) */
        double h = 0.0, t0 = now_s();
        for (long i = 0; i < n; i++) {
            double a = now_s();
            check_cl(clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &l, 0, NULL, NULL), "clEnqueueNDRangeKernel (null)");
            h += now_s() - a;
            if ((i + 1) % SYNC_EVERY == 0)
                check_cl(clFinish(q), "clFinish");
        }
        check_cl(clFinish(q), "clFinish");
        if (r >= 0) {
            b2b[r] = (now_s() - t0) / (double)n;
            host[r] = h / (double)n;
        }
    }
    int ns = o->smoke ? 4 : 200;
    for (int i = 0; i < ns; i++) {
        double t0 = now_s();
        check_cl(clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &l, 0, NULL, NULL), "clEnqueueNDRangeKernel (null)");
        check_cl(clFinish(q), "clFinish");
        sync[i] = now_s() - t0;
    }
    lc->b2b_s = median(b2b, rounds);
    lc->host_s = median(host, rounds);
    lc->sync_s = median(sync, ns);
    clReleaseMemObject(m);
    clReleaseKernel(k);
    return 1;
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
               "                    [--dtype f32|f16|bf16] [--layout nchw|nhwc]\n"
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
               "  --no-first-call  skip the cold/warm first-call measurement in fresh processes\n"
               "  --dtype       f32 (default), f16, bf16: the tensors' storage type (T counts its size; the chain\n"
               "                and limit rows are F32 only)\n"
               "  --layout      nchw (default) or nhwc (the limit rows are NCHW only)\n"
               "  ops copy_nt and fused_min (group \"limit\", in \"all\"): the limit yardsticks, a copy kernel with\n"
               "                non-temporal stores (2 T) and a minimal fused per-map training forward (3 T)\n");
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
                    int group = !strcmp(name, "all") ||
                                (!strcmp(name, "fused") && k >= OP_FIRST_FUSED && k < OP_FIRST_LIMIT) ||
                                (!strcmp(name, "limit") && k >= OP_FIRST_LIMIT);
                    if ((group || !strcmp(name, op_names[k])) && o->nops < MAX_OPS) {
                        o->ops[o->nops++] = (op_kind)k;
                        found = 1;
                    }
                }
                if (!found) {
                    fprintf(stderr,
                            "clnorm-bench: bad --op '%s' (want train, infer, bwd, train_ex, infer_ex, backward_ex, "
                            "chain_fwd, chain_bwd, step_ex, step_chain, copy_nt, fused_min, fused, limit or all)\n",
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
        } else if (!strcmp(a, "--dtype")) {
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "f32"))
                o->dtype = CLNORM_F32;
            else if (!strcmp(v, "f16"))
                o->dtype = CLNORM_F16;
            else if (!strcmp(v, "bf16"))
                o->dtype = CLNORM_BF16;
            else {
                fprintf(stderr, "clnorm-bench: bad --dtype '%s' (want f32, f16 or bf16)\n", v);
                exit(2);
            }
        } else if (!strcmp(a, "--layout")) {
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "nchw"))
                o->layout = CLNORM_NCHW;
            else if (!strcmp(v, "nhwc"))
                o->layout = CLNORM_NHWC;
            else {
                fprintf(stderr, "clnorm-bench: bad --layout '%s' (want nchw or nhwc)\n", v);
                exit(2);
            }
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
static int first_call_child(const char *device, const char *mode) {
    double ms[1 + N_PLAIN_OPS] = {-1, -1, -1, -1};
    int all_ops = strcmp(mode, "all") == 0, infer_only = strcmp(mode, "infer") == 0;
    clnorm_context *ctx = NULL;
    g_no_limit = 1;
    double t0 = now_s();
    check(clnorm_context_create(device, &ctx), "clnorm_context_create");
    ms[0] = 1e3 * (now_s() - t0);
    bench_case c;
    case_setup(&c, ctx, &tiny_shape, all_ops, 0, 12345);
    /* train first: bwd needs its saved stats; "infer": the inference alone, as the process's first call */
    int first = infer_only ? OP_INFER : OP_TRAIN, end = all_ops ? N_PLAIN_OPS : first + 1;
    for (int op = first; op < end; op++) {
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
static int spawn_first_call(const char *argv0, const char *dir, const char *device, const char *mode, double ms[4]) {
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
    args[a++] = (char *)mode;
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
    const char *mode = o->smoke ? "train" : "all";
    double cold[4], warm[4], icold[4] = {-1, -1, -1, -1}, iwarm[4] = {-1, -1, -1, -1};
    int ok = spawn_first_call(argv0, dir, o->device, mode, cold) && spawn_first_call(argv0, dir, o->device, mode, warm);
    remove_tree(dir);
    if (ok && !o->smoke) { /* the inference as the first call of a process, in a new empty folder */
        snprintf(dir, sizeof dir, "%s/clnorm-bench-cache-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("clnorm-bench: mkdtemp");
            exit(1);
        }
        ok = spawn_first_call(argv0, dir, o->device, "infer", icold) &&
             spawn_first_call(argv0, dir, o->device, "infer", iwarm);
        remove_tree(dir);
    }
    if (!ok)
        exit(1);
    fprintf(f,
            "%sfirst call, tiny shape, each a fresh process (context create; each op's first call incl. program "
            "build and clFinish):\n",
            prefix);
    print_first_call_line(f, prefix, "cold", cold);
    print_first_call_line(f, prefix, "warm", warm);
    if (icold[2] >= 0)
        fprintf(f, "%s  inference as a process's first call: cold %8.1f ms | warm %8.1f ms (context %.1f / %.1f ms)\n",
                prefix, icold[2], iwarm[2], icold[0], iwarm[0]);
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
    const char *opts = getenv("CLNORM_BUILD_OPTIONS"), *strat = getenv("CLNORM_STRATEGY"),
               *stream = getenv("CLNORM_STREAM_MIN_BYTES");
    fprintf(f,
            "%sclnorm %u.%u.%u | device: %s | type %s, %u compute units | driver %s | platform %s | "
            "CLNORM_BUILD_OPTIONS=%s | CLNORM_STRATEGY=%s | CLNORM_STREAM_MIN_BYTES=%s\n",
            prefix, v / 10000, v / 100 % 100, v % 100, clnorm_context_device_name(ctx), device_type_name(type), units,
            driver, pver, opts && opts[0] ? opts : "(default)", strat && strat[0] ? strat : "(default)",
            stream && stream[0] ? stream : "(default: Intel CPU 1 MiB, else min(8 MiB, cache / 4))");
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
        return first_call_child(argc >= 4 ? argv[3] : NULL, argv[2]);

    options o;
    parse_args(argc, argv, &o);
    g_opt = o;
    FILE *info = o.csv ? stderr : stdout; /* CSV mode: stdout carries only the table */
    const char *prefix = o.csv ? "# " : "";

    clnorm_context *ctx = NULL;
    check(clnorm_context_create(o.device, &ctx), "clnorm_context_create");
    print_header(ctx, &o, info, prefix);
    fflush(info);
    if (o.first_call)
        first_call(argv[0], &o, info, prefix);
    launch_cost lc = {0, 0, 0};
    int have_lc = measure_launch(ctx, &o, &lc);
    if (have_lc)
        fprintf(info,
                "%slaunch cost, an empty kernel (1 work-item): back to back %.2f us per launch (%.2f us of it in "
                "clEnqueueNDRangeKernel); enqueue + clFinish %.1f us\n",
                prefix, 1e6 * lc.b2b_s, 1e6 * lc.host_s, 1e6 * lc.sync_s);
    fprintf(info,
            "%sdtype %s, layout %s; per op also: sync us = one call + clFinish (median), host us = time in the call "
            "(back to back), launches per call, over us = host us - launches x the empty kernel's enqueue\n",
            prefix,
            o.dtype == CLNORM_F32   ? "f32"
            : o.dtype == CLNORM_F16 ? "f16"
                                    : "bf16",
            o.layout == CLNORM_NCHW ? "nchw" : "nhwc");

    if (o.csv)
        printf("op,shape,ms,gbs,copy_gbs,ratio,sync_us,host_us,launches\n");
    else
        printf("\n%-11s  %-20s %9s %10s %9s %9s %9s %7s %13s %13s %9s %8s %4s %7s\n", "op", "shape", "T MB", "ms",
               "GB/s", "copy ms", "copy GB/s", "x copy", "range", "calls op/copy", "sync us", "host us", "lnch",
               "over us");
    fflush(stdout);

    int need_bwd = 0, need_fused = 0;
    for (int i = 0; i < o.nops; i++) {
        op_kind k = o.ops[i];
        need_bwd |= k == OP_BWD || (k >= OP_BWD_EX && k < OP_FIRST_LIMIT && k != OP_CHAIN_FWD);
        need_fused |= k >= OP_FIRST_FUSED && k < OP_FIRST_LIMIT;
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
            int chain = op == OP_CHAIN_FWD || op == OP_CHAIN_BWD || op == OP_STEP_CHAIN;
            if ((chain && !c.k_add) || (op == OP_COPY_NT && !c.k_copy_nt) ||
                (op == OP_FUSED_MIN && (!c.k_fused_min || o.layout != CLNORM_NCHW || c.sh.ndim < 3)))
                continue; /* F32 (NCHW, ndim >= 3 for fused_min) only, or the limit program did not build */
            snprintf(g_where, sizeof g_where, "(op %s, shape %s)", op_names[op], sh);
            result r;
            measure(&c, op, &o, &r);
            double T = (double)c.bytes;
            double gbs = op_traffic[op] * T / r.op_s * 1e-9, copy_gbs = 2.0 * T / r.copy_s * 1e-9;
            if (o.csv)
                printf("%s,%s,%.6f,%.3f,%.3f,%.4f,%.2f,%.3f,%.2f\n", op_names[op], sh, 1e3 * r.op_s, gbs, copy_gbs,
                       r.ratio, 1e6 * r.sync_s, 1e6 * r.host_s, r.launches);
            else
                printf("%-11s  %-20s %9.2f %10.4f %9.2f %9.4f %9.2f %7.2f %6.2f..%-5.2f %7ld/%-5ld %9.1f %8.2f %4.1f "
                       "%7.2f\n",
                       op_names[op], sh, T * 1e-6, 1e3 * r.op_s, gbs, 1e3 * r.copy_s, copy_gbs, r.ratio, r.rmin, r.rmax,
                       r.k_op, r.k_copy, 1e6 * r.sync_s, 1e6 * r.host_s, r.launches,
                       have_lc ? 1e6 * (r.host_s - r.launches * lc.host_s) : 0.0);
            xcopy[op] = r.ratio;
            fflush(stdout);
        }
        /* fused against the unfused chain on the same byte counts: the ratio of their fractions of copy */
        static const op_kind pairs[][2] = {
            {OP_TRAIN_EX, OP_CHAIN_FWD}, {OP_BWD_EX, OP_CHAIN_BWD}, {OP_STEP_EX, OP_STEP_CHAIN}};
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
            if (xcopy[pairs[i][0]] > 0 && xcopy[pairs[i][1]] > 0)
                fprintf(info, "%s  %-11s vs %-10s %s: %.2fx faster\n", prefix, op_names[pairs[i][0]],
                        op_names[pairs[i][1]], sh, xcopy[pairs[i][0]] / xcopy[pairs[i][1]]);
        case_teardown(&c);
    }
    clnorm_context_destroy(ctx);
    return 0;
}
