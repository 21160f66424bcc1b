/* Kernel program cache, in memory per context. A program is the #define block in its build options +
 * common.cl + bn_peract.cl (twice: 16 and 1 columns) + bn_stats.cl + bn_apply.cl + bn_backward.cl + bn_columns.cl
 * + bn_split.cl.
 * Key: the full build options (dtype, strategy, work-group size, CLNORM_BUILD_OPTIONS) and the source hash.
 * CLNORM_KERNEL_DIR=<dir> loads the .cl files from disk instead of the copies embedded at build time (trusted
 * developer input: only from a folder and files owned by the effective user and not writable by group or others).
 * Built programs also go to the on-disk cache (disk_cache.c), keyed by the options (which carry the source hash),
 * the library version and the device / driver / platform identity. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct clnorm_embedded_source {
    const char *name;
    const char *text;
    size_t size;
};
extern const struct clnorm_embedded_source clnorm_embedded_sources[];
extern const char clnorm_embedded_hash[];

static const char *const kernel_names[K_COUNT] = {
    "bn_stats_partial", "bn_stats_finalize", "bn_apply", "bn_pa_forward",
    "bn_bwd_partial",   "bn_bwd_finalize",   "bn_pa_backward", "bn_fused_forward", "bn_fused_backward",
    "bn_col_partial", "bn_col_finalize", "bn_col_apply", "bn_col_bwd_partial", "bn_col_bwd_finalize",
    /* split-phase (bn_split.cl) */
    "bn_split_stats", "bn_split_merge", "bn_split_coef", "bn_split_sums", "bn_split_bwd_coef"};

/* the pieces of a program, in order; NULL name: literal text */
static const struct {
    const char *file, *text;
} pieces[] = {{"common.cl", NULL},   {NULL, "#define PA_W 16\n"}, {"bn_peract.cl", NULL},
              {NULL, "#define PA_W 1\n"}, {"bn_peract.cl", NULL}, {"bn_stats.cl", NULL},
              {"bn_apply.cl", NULL}, {"bn_backward.cl", NULL}, {"bn_columns.cl", NULL},
              {"bn_split.cl", NULL}};
#define N_PIECES (sizeof pieces / sizeof pieces[0])

static const char *dtype_define(clnorm_dtype d) {
    switch (d) {
    case CLNORM_F32: return "DTYPE_F32";
    case CLNORM_F16: return "DTYPE_F16";
    case CLNORM_BF16: return "DTYPE_BF16";
    }
    return "DTYPE_UNKNOWN";
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; ++i)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

/* texts[i] for each piece (owned[i] set when malloc'ed) and the hash over all of them */
static clnorm_status load_sources(const char **texts, size_t *sizes, char **owned, char hash[17]) {
    const char *dir = getenv("CLNORM_KERNEL_DIR");
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < N_PIECES; ++i) /* all of them: the caller frees every slot, also after an early return */
        owned[i] = NULL;
    /* kernel sources are code: only from a folder (and files) the effective user owns and nobody else can write */
    char why[4400];
    int dfd = dir && *dir ? cn_open_private_dir(dir, 0, "folder", why, sizeof why) : -1;
    if (dir && *dir && dfd < 0)
        return cn_fail(CLNORM_ERROR_BUILD,
                       "CLNORM_KERNEL_DIR=%s: %s; kernel sources are read only from a folder owned by the effective "
                       "user and not writable by group or others",
                       dir, why);
    for (size_t i = 0; i < N_PIECES; ++i) {
        owned[i] = NULL;
        if (!pieces[i].file) {
            texts[i] = pieces[i].text;
            sizes[i] = strlen(texts[i]);
            continue;
        }
        if (dfd >= 0) {
            owned[i] = cn_read_private_file(dfd, pieces[i].file, &sizes[i], why, sizeof why);
            if (!owned[i]) {
                close(dfd);
                return cn_fail(CLNORM_ERROR_BUILD, "CLNORM_KERNEL_DIR=%s: cannot read %s: %s", dir, pieces[i].file,
                               why);
            }
            texts[i] = owned[i];
            h = fnv1a(h, texts[i], sizes[i]);
        } else {
            const struct clnorm_embedded_source *e = clnorm_embedded_sources;
            while (e->name && strcmp(e->name, pieces[i].file) != 0)
                ++e;
            if (!e->name)
                return cn_fail(CLNORM_ERROR_BUILD, "embedded kernel source %s is missing", pieces[i].file);
            texts[i] = e->text;
            sizes[i] = e->size;
        }
    }
    if (dfd >= 0)
        close(dfd);
    if (dir && *dir)
        snprintf(hash, 17, "%016llx", (unsigned long long)h);
    else
        snprintf(hash, 17, "%s", clnorm_embedded_hash);
    return CLNORM_SUCCESS;
}

static void program_free(cn_program *p) {
    if (!p)
        return;
    for (int k = 0; k < K_COUNT; ++k)
        if (p->kernels[k])
            clReleaseKernel(p->kernels[k]);
    if (p->program)
        clReleaseProgram(p->program);
    free(p->options);
    free(p);
}

void cn_programs_release(clnorm_context *ctx) {
    cn_program *p = ctx->programs;
    while (p) {
        cn_program *next = p->next;
        program_free(p);
        p = next;
    }
    ctx->programs = NULL;
}

static clnorm_status build(clnorm_context *ctx, const char *options, const char **texts, const size_t *sizes,
                           cn_program *p) {
    cl_int err;
    p->program = clCreateProgramWithSource(ctx->context, (cl_uint)N_PIECES, texts, sizes, &err);
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clCreateProgramWithSource");
    err = clBuildProgram(p->program, 1, &ctx->device, options, NULL, NULL);
    if (err == CL_SUCCESS)
        return CLNORM_SUCCESS;
    if (err != CL_BUILD_PROGRAM_FAILURE && err != CL_INVALID_BUILD_OPTIONS)
        return cn_cl_fail(err, "clBuildProgram");
    size_t n = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(p->program, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) == CL_SUCCESS &&
        (log = malloc(n + 1)) != NULL) {
        if (clGetProgramBuildInfo(p->program, ctx->device, CL_PROGRAM_BUILD_LOG, n, log, NULL) != CL_SUCCESS)
            n = 0;
        log[n] = '\0';
    }
    cn_fail(CLNORM_ERROR_BUILD, "clBuildProgram failed: %s (%d) on %s\noptions: %s\nbuild log:\n",
            cn_cl_error_name(err), (int)err, ctx->name, options);
    cn_append_error(log ? log : "(no log)");
    free(log);
    return CLNORM_ERROR_BUILD;
}

static clnorm_status get_program(clnorm_context *ctx, clnorm_dtype dtype, cn_program **out) {
    const char *texts[N_PIECES];
    size_t sizes[N_PIECES];
    char *owned[N_PIECES];
    char hash[17], options[4096];
    clnorm_status st = load_sources(texts, sizes, owned, hash);
    if (st == CLNORM_SUCCESS) {
        const char *extra = getenv("CLNORM_BUILD_OPTIONS");
        int len = snprintf(options, sizeof options, "-cl-std=CL1.2 -D%s -D%s -DWG=%zu -DCLNORM_SOURCE_HASH=0x%s" CN_KERNEL_ABI_DEFINES " %s",
                           dtype_define(dtype), ctx->strategy == CN_STRATEGY_CPU ? "STRATEGY_CPU" : "STRATEGY_GPU",
                           ctx->wg, hash, extra ? extra : "");
        if (len < 0 || (size_t)len >= sizeof options) {
            for (size_t i = 0; i < N_PIECES; ++i)
                free(owned[i]);
            return cn_fail(CLNORM_ERROR_BUILD, "CLNORM_BUILD_OPTIONS is too long (the build options may take %zu "
                                               "characters)", sizeof options - 1);
        }
        cn_program *p = ctx->programs;
        while (p && strcmp(p->options, options) != 0)
            p = p->next;
        if (!p) {
            p = calloc(1, sizeof *p);
            if (!p || !(p->options = malloc(strlen(options) + 1))) {
                free(p);
                st = cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory building kernels");
            } else {
                strcpy(p->options, options);
                /* the disk cache key; a key that does not fit (absurd device strings) just skips the disk cache */
                char key[8192];
                int klen = snprintf(key, sizeof key, "clnorm %u | %.4095s | %.3000s", clnorm_version(), options,
                                    ctx->cache_id);
                int keyed = klen > 0 && (size_t)klen < sizeof key && strlen(ctx->cache_id) <= 3000;
                if (keyed && cn_disk_cache_load(ctx, key, options, &p->program)) {
                    st = CLNORM_SUCCESS;
                } else {
                    st = build(ctx, options, texts, sizes, p);
                    if (st == CLNORM_SUCCESS && keyed)
                        cn_disk_cache_store(ctx, key, p->program);
                }
                if (st == CLNORM_SUCCESS) {
                    p->next = ctx->programs;
                    ctx->programs = p;
                } else {
                    program_free(p);
                    p = NULL;
                }
            }
        }
        *out = p;
    }
    for (size_t i = 0; i < N_PIECES; ++i)
        free(owned[i]);
    return st;
}

clnorm_status cn_get_kernel(clnorm_context *ctx, clnorm_dtype dtype, cn_kernel_id id, cl_kernel *out) {
    cn_program *p = NULL;
    clnorm_status st = get_program(ctx, dtype, &p);
    if (st != CLNORM_SUCCESS)
        return st;
    if (!p->kernels[id]) {
        cl_int err;
        p->kernels[id] = clCreateKernel(p->program, kernel_names[id], &err);
        if (err != CL_SUCCESS) {
            p->kernels[id] = NULL;
            return cn_cl_fail(err, "clCreateKernel");
        }
    }
    *out = p->kernels[id];
    return CLNORM_SUCCESS;
}
