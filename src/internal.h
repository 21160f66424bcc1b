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

/* ---- kernels: the flags and sizes host and kernels share (reach the kernels as -D defines) ---------- */
#include "kernel_abi.h"

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

#define CN_DTYPE_COUNT 3 /* clnorm_dtype values 0..2 */
/* A program variant: the dtype, and how its kernels write tensors: variants 0..2 stream their vector stores past the
 * caches (the dtype's value), 3..5 store plainly (CN_PLAIN_VARIANT: the dtype's value + 3; built with
 * -DCLNORM_NO_NT_STORES). cn_variant picks one per call from the bytes of its tensors (see ctx->stream_min_bytes). */
#define CN_VARIANT_COUNT (2 * CN_DTYPE_COUNT)
#define CN_PLAIN_VARIANT(dtype) ((int)(dtype) + CN_DTYPE_COUNT)

typedef enum cn_strategy { CN_STRATEGY_CPU = 0, CN_STRATEGY_GPU = 1 } cn_strategy;

typedef struct cn_program {
    struct cn_program *next;
    char *options; /* full clBuildProgram options, the cache key with the source hash */
    cl_program program;
    cl_kernel kernels[K_COUNT];
    char *store_key; /* built here, not yet in the disk cache: stored under this key when the program is released */
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
    size_t wg;     /* work-group size of the reduction kernels (GPU strategy) */
    size_t wg_cap; /* the most work-items a group of any launch may have: CL_DEVICE_MAX_WORK_GROUP_SIZE, lowered by
                    * CLNORM_MAX_WORK_GROUP_SIZE (each kernel's own CL_KERNEL_WORK_GROUP_SIZE applies too) */
    cl_uint units; /* compute units */
    cl_ulong max_alloc;
    cn_program *programs;
    /* program.c: CLNORM_KERNEL_DIR (NULL when unset) and CLNORM_BUILD_OPTIONS ("" when unset), read at context
     * creation; the kernels made so far, per (dtype, kernel id), borrowed from programs: the hot path's look-up */
    char *kernel_dir, *build_options;
    cl_kernel kernel_table[CN_VARIANT_COUNT][K_COUNT];
    /* context.c: a call whose tensors take at least this many bytes together writes them with streaming stores,
     * else plainly (CLNORM_STREAM_MIN_BYTES; default 1 MiB on an Intel CPU device, elsewhere the smaller of 8 MiB
     * and a quarter of CL_DEVICE_GLOBAL_MEM_CACHE_SIZE); see cn_variant */
    cl_ulong stream_min_bytes;
    /* context.c: kernels may issue software prefetches (-DCLNORM_PREFETCH, CN_PREFETCH in common.cl): on POCL's CPU
     * device only, whose compiler lowers them; an interpreter such as Oclgrind cannot run llvm.prefetch at all */
    int prefetch;
    cl_mem scratch[CN_SCRATCH_COUNT];
    size_t scratch_size[CN_SCRATCH_COUNT];
    /* disk_cache.c: the on-disk cache folder, checked and opened at context creation (cache_fd valid when
     * cache_on), or why it is off */
    int cache_on, cache_fd;
    char cache_dir[4096];
    char cache_status[4608];
    /* bn_ops.c: what each kernel object allows, read once when it is first fetched (no queries per call) */
    cl_ulong local_mem; /* CL_DEVICE_LOCAL_MEM_SIZE */
    struct cn_kernel_info *kinfo;
    int kinfo_n, kinfo_cap;
};

/* A kernel's limits and signature: CL_KERNEL_WORK_GROUP_SIZE, CL_KERNEL_LOCAL_MEM_SIZE (at the program's WG),
 * CL_KERNEL_NUM_ARGS and its name (for messages). */
typedef struct cn_kernel_info {
    cl_kernel kernel;
    size_t max_wg;
    cl_ulong local_mem;
    cl_uint nargs;
    char name[64];
} cn_kernel_info;

/* ---- device.c ---------------------------------------------------------------------------- */
clnorm_status cn_select_device(const char *selector, cl_platform_id *platform, cl_device_id *device);
/* "<platform name> <device name>", malloc'ed */
char *cn_device_full_name(cl_platform_id platform, cl_device_id device);
/* device.c: whether needle occurs in hay, ASCII case ignored (the device selectors; "PoCL" in a platform version) */
int cn_contains_nocase(const char *hay, const char *needle);

/* ---- program.c ------------------------------------------------------------------------------ */
/* Reads CLNORM_KERNEL_DIR and CLNORM_BUILD_OPTIONS into ctx (context creation); cn_programs_release frees all. */
clnorm_status cn_programs_init(clnorm_context *ctx);
void cn_programs_release(clnorm_context *ctx);
/* Test hook: the number of programs of ctx if each holds exactly its kernel group's kernels, else -1 and why. */
int cn_programs_check(const clnorm_context *ctx, char *why, size_t n);
/* Test hook: builds a variant's fallback program (every kernel, nothing stripped). */
clnorm_status cn_build_whole_set(clnorm_context *ctx, int variant);
/* The kernel id of a program variant, its program built on first use (only the kernels of its group are compiled). */
clnorm_status cn_get_kernel_slow(clnorm_context *ctx, int variant, cn_kernel_id id, cl_kernel *out);
static inline clnorm_status cn_get_kernel(clnorm_context *ctx, int variant, cn_kernel_id id, cl_kernel *out) {
    if ((unsigned)variant < CN_VARIANT_COUNT && (unsigned)id < K_COUNT && ctx->kernel_table[variant][id]) {
        *out = ctx->kernel_table[variant][id];
        return CLNORM_SUCCESS;
    }
    return cn_get_kernel_slow(ctx, variant, id, out);
}

/* ---- disk_cache.c: compiled binaries on disk (silently absent when unusable) ------------------- */
/* Chooses, creates (0700), checks and opens the context's cache folder, or records why the disk cache is off;
 * never fails. Called once the context is otherwise complete; cn_disk_cache_close undoes it. */
void cn_disk_cache_open(clnorm_context *ctx);
void cn_disk_cache_close(clnorm_context *ctx);
/* 1 and a built program when a valid cached binary for key exists (a bad file of ours is deleted; a file we do not
 * own or trust is ignored and left alone); else 0 */
int cn_disk_cache_load(clnorm_context *ctx, const char *key, const char *options, cl_program *out);
void cn_disk_cache_store(clnorm_context *ctx, const char *key, cl_program prog);
/* The file format, pure (no I/O; fuzz/fuzz_cache.c drives it): parse gives 1 and the binary (a pointer into buf)
 * when buf is a well-formed file for key, else 0, for any bytes; header writes the CN_CACHE_HEADER_SIZE +
 * strlen(key) bytes that precede bin in a file and returns that count. */
#define CN_CACHE_HEADER_SIZE 32
int cn_disk_cache_parse(const unsigned char *buf, size_t size, const char *key, const unsigned char **bin,
                        size_t *bin_size);
size_t cn_disk_cache_header(unsigned char *out, const char *key, const unsigned char *bin, size_t bin_size);
/* A folder that may be trusted: a real directory (not a symbolic link) owned by the effective user, not writable by
 * group or others, opened O_NOFOLLOW and checked again on the descriptor. create: make missing folders (0700).
 * Returns the descriptor (O_CLOEXEC), or -1 and the reason in why ("<what> <path> is writable by ..."). */
int cn_open_private_dir(const char *path, int create, const char *what, char *why, size_t n);
/* name in dirfd, malloc'ed with a NUL after its *size bytes, if it is a regular file (O_NOFOLLOW, fstat on the
 * descriptor) owned by the effective user and not writable by group or others; else NULL and why. */
char *cn_read_private_file(int dirfd, const char *name, size_t *size, char *why, size_t n);

/* ---- context.c ---------------------------------------------------------------------------- */
/* A grow-only scratch buffer of at least bytes; valid until the next call for the same slot. */
clnorm_status cn_scratch(clnorm_context *ctx, int slot, size_t bytes, cl_mem *out);

/* ---- tensor.c ---------------------------------------------------------------------------------- */
size_t cn_dtype_size(clnorm_dtype d);
/* The program variant of a call that reads or writes `tensors` tensors of numel values of dtype: streaming stores
 * when they take ctx->stream_min_bytes or more together, plain stores below (tensors that small stay in the cache,
 * where the next call or the next layer reads them again). */
static inline int cn_variant(const clnorm_context *ctx, clnorm_dtype dtype, size_t numel, int tensors) {
    cl_ulong bytes = (cl_ulong)numel * cn_dtype_size(dtype) * (cl_ulong)tensors;
    return bytes < ctx->stream_min_bytes ? CN_PLAIN_VARIANT(dtype) : (int)dtype;
}
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
