/* Private declarations shared by src/. Nothing here is exported (the build uses -fvisibility=hidden). */
#ifndef CLNORM_INTERNAL_H
#define CLNORM_INTERNAL_H

#include "clnorm.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CLNORM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLNORM_PRINTF(a, b)
#endif

/* ---- status.c: thread-local last error ---------------------------------------------------- */
/* Records the detail and returns s, so that `return cn_fail(...)` reads naturally. */
clnorm_status cn_fail(clnorm_status s, const char *fmt, ...) CLNORM_PRINTF(2, 3);
/* Maps an OpenCL error to a status (allocation failures -> DEVICE_MEMORY) and records "call: CL_NAME (code)". */
clnorm_status cn_cl_fail(cl_int err, const char *call);
const char *cn_cl_error_name(cl_int err);
void cn_clear_error(void);
/* Appends to the current last-error text (used for long build logs). */
void cn_append_error(const char *text);

/* ---- kernels: flags mirror cl/common.cl ---------------------------------------------------- */
enum {
    F_AFFINE = 1u,
    F_RUNNING = 2u,
    F_SAVE = 4u,
    F_GRADS = 16u,
    F_DX = 32u,
    F_ACCUM = 64u,
    F_STATS = 128u,
    F_COEF = 256u,
    F_PMAP = 512u
};

typedef enum cn_kernel_id {
    K_STATS_PARTIAL,
    K_STATS_FINALIZE,
    K_APPLY,
    K_PA_FORWARD,
    K_BWD_PARTIAL,
    K_BWD_FINALIZE,
    K_PA_BACKWARD,
    K_FUSED_FORWARD,
    K_FUSED_BACKWARD,
    K_COL_PARTIAL,
    K_COL_FINALIZE,
    K_COL_APPLY,
    K_COL_BWD_PARTIAL,
    K_COL_BWD_FINALIZE,
    /* split-phase statistics (cl/bn_split.cl, bn_split.c) */
    K_SPLIT_STATS,
    K_SPLIT_MERGE,
    K_SPLIT_COEF,
    K_SPLIT_SUMS,
    K_SPLIT_BWD_COEF,
    K_COUNT
} cn_kernel_id;

typedef enum cn_strategy { CN_STRATEGY_CPU = 0, CN_STRATEGY_GPU = 1 } cn_strategy;

typedef struct cn_program {
    struct cn_program *next;
    char *options; /* full clBuildProgram options, the cache key with the source hash */
    cl_program program;
    cl_kernel kernels[K_COUNT];
} cn_program;

/* scratch: per-(map, slice) partials, per-map statistics coefficients, per-map dx coefficients (5 floats each) */
enum { CN_SCRATCH_PARTIAL, CN_SCRATCH_STATS, CN_SCRATCH_COEF, CN_SCRATCH_COUNT };

struct clnorm_context {
    cl_context context;
    cl_device_id device;
    cl_command_queue queue;
    char *name;
    char *cache_id; /* device name, vendor id, driver and platform version: part of the disk cache key */
    cl_device_type type;
    cn_strategy strategy;
    size_t wg;         /* work-group size of the reduction kernels (GPU strategy) */
    cl_uint units;     /* compute units */
    cl_ulong max_alloc;
    cn_program *programs;
    cl_mem scratch[CN_SCRATCH_COUNT];
    size_t scratch_size[CN_SCRATCH_COUNT];
};

/* ---- device.c ---------------------------------------------------------------------------- */
clnorm_status cn_select_device(const char *selector, cl_platform_id *platform, cl_device_id *device);
/* "<platform name> <device name>", malloc'ed */
char *cn_device_full_name(cl_platform_id platform, cl_device_id device);

/* ---- program.c ------------------------------------------------------------------------------ */
clnorm_status cn_get_kernel(clnorm_context *ctx, clnorm_dtype dtype, cn_kernel_id id, cl_kernel *out);
void cn_programs_release(clnorm_context *ctx);

/* ---- disk_cache.c: compiled binaries on disk (silently absent when unusable) ------------------- */
/* 1 and a built program when a valid cached binary for key exists (a bad file is deleted); else 0 */
int cn_disk_cache_load(clnorm_context *ctx, const char *key, const char *options, cl_program *out);
void cn_disk_cache_store(clnorm_context *ctx, const char *key, cl_program prog);

/* ---- context.c ---------------------------------------------------------------------------- */
/* A grow-only scratch buffer of at least bytes; valid until the next call for the same slot. */
clnorm_status cn_scratch(clnorm_context *ctx, int slot, size_t bytes, cl_mem *out);

/* ---- tensor.c ---------------------------------------------------------------------------------- */
size_t cn_dtype_size(clnorm_dtype d);
/* Validates a tensor view against ctx: buffer, ndim 2..5, non-zero dims, product without overflow, dtype and
 * layout enums, offset alignment, buffer context and size. what names it in messages ("x", "dy"...). */
clnorm_status cn_check_tensor(const clnorm_context *ctx, const clnorm_tensor *t, const char *what, size_t *numel);
/* The same for a view with batch 0 (split-phase calls): buffer may be NULL, nothing else is relaxed. */
clnorm_status cn_check_tensor_empty(const clnorm_context *ctx, const clnorm_tensor *t, const char *what);
/* A float32 parameter vector of count values at offset 0; NULL allowed when optional. */
clnorm_status cn_check_param(const clnorm_context *ctx, cl_mem m, size_t count, const char *what);
/* Outputs that alias inputs: the same view is fine (returns 1 in *same), partial overlap is refused. */
clnorm_status cn_check_overlap(const clnorm_tensor *in, const char *in_name, const clnorm_tensor *out,
                               const char *out_name, int *same);
int cn_same_view(const clnorm_tensor *a, const clnorm_tensor *b);
/* The memory one argument of a call covers: root buffer (sub-buffers resolved) and byte range; out when the call
 * writes it; view for the data tensors (pairs of views are cn_check_overlap's business). */
typedef struct {
    const char *name;
    cl_mem root;
    size_t begin, end;
    int out, view;
} cn_region;
cn_region cn_region_param(cl_mem m, size_t count, const char *name, int out); /* m may be NULL: skipped */
cn_region cn_region_view(const clnorm_tensor *t, const char *name, int out);  /* t may be NULL: skipped */
/* CLNORM_ERROR_INVALID_ARGUMENT, naming both, when memory the call writes is also another of its arguments
 * (scale passed as dscale, running_mean as save_mean, y over a parameter vector...): the result would depend on
 * the order of the kernels' reads and writes. */
clnorm_status cn_check_regions(const cn_region *r, int n);

/* ---- rng.c --------------------------------------------------------------------------------- */
typedef struct cn_rng {
    uint64_t s[4];
} cn_rng;
void cn_rng_seed(cn_rng *r, uint64_t seed);
double cn_rng_normal(cn_rng *r);

#endif
