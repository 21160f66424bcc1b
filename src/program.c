/* Kernel programs, one per (dtype, kernel group), built on the first use of a kernel of the group and cached in
 * memory per context (and on disk, disk_cache.c). A group is the kernels one path of bn_ops.c launches together
 * (the split statistics pair, the fused forward, the column backward pair...), so a call compiles only what it
 * launches: with POCL a program's kernels are all compiled again when its binary is read for the disk cache, and
 * the whole set took seconds where one group takes a few hundred milliseconds (README, "First call").
 *
 * A program is the #define block in its build options + common.cl + the source files its group needs (groups[]),
 * in the order of pieces[]; the kernels of other groups in those files are blanked out of the copy that is compiled
 * (strip_kernels: spaces in their place, lines kept, so build logs keep their line numbers). Kernels the tables do
 * not know are kept. Should a stripped program fail to build, the group is built once more from the whole set,
 * unstripped: a stripping mistake costs time, never a result or an error that the full sources would not give.
 *
 * Build options: -cl-std=CL1.2, the dtype, strategy and work-group size, the source hash, the group's name, then
 * CLNORM_BUILD_OPTIONS; they are the in-memory key and, with the library version and the device identity, the disk
 * cache key. CLNORM_KERNEL_DIR=<dir> loads the .cl files from disk instead of the copies embedded at build time
 * (trusted developer input: only from a folder and files owned by the effective user and not writable by group or
 * others). Both variables are read once, at context creation (cn_programs_init).
 *
 * A program is built per (variant, group): the variant is the dtype and whether the kernels' vector stores stream
 * past the caches or are plain (-DCLNORM_NO_NT_STORES), picked per call by the tensor's size (cn_variant).
 *
 * The hot path, cn_get_kernel, is a table look-up: ctx->kernel_table[variant][id], filled when the kernel is first
 * created. No environment read, option string or hash per call. */
#define _POSIX_C_SOURCE 200809L /* strtok_r */
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
    "bn_stats_partial", "bn_stats_finalize", "bn_apply", "bn_pa_forward", "bn_bwd_partial", "bn_bwd_finalize",
    "bn_pa_backward", "bn_fused_forward", "bn_fused_backward", "bn_col_partial", "bn_col_finalize", "bn_col_apply",
    "bn_col_bwd_partial", "bn_col_bwd_finalize",
    /* split-phase (bn_split.cl) */
    "bn_split_stats", "bn_split_merge", "bn_split_coef", "bn_split_sums", "bn_split_bwd_coef"};

/* the pieces of a program, in order; NULL file: literal text */
enum {
    PC_COMMON,
    PC_W16,
    PC_PERACT16,
    PC_W1,
    PC_PERACT1,
    PC_ROWS,
    PC_COLUMNS,
    PC_SPLIT,
    N_PIECES
};
static const struct {
    const char *file, *text;
} pieces[N_PIECES] = {{"common.cl", NULL},
                      {NULL, "#define PA_W 16\n"},
                      {"bn_columns_tile.cl", NULL},
                      {NULL, "#define PA_W 1\n"},
                      {"bn_columns_tile.cl", NULL},
                      {"bn_rows.cl", NULL},
                      {"bn_columns.cl", NULL},
                      {"bn_split.cl", NULL}};
#define BIT(p) (1u << (p))
#define PERACT (BIT(PC_W16) | BIT(PC_PERACT16) | BIT(PC_W1) | BIT(PC_PERACT1))
#define ALL_PIECES ((1u << N_PIECES) - 1u)
#define ROWS (BIT(PC_COMMON) | BIT(PC_ROWS))
#define COLUMNS (BIT(PC_COMMON) | PERACT | BIT(PC_COLUMNS))

/* Kernel groups: the kernels each path of bn_ops.c launches together, and the pieces they need: the rows path is
 * common.cl + bn_rows.cl, the columns path common.cl + the column tiles (bn_columns_tile.cl, twice) + bn_columns.cl,
 * the split-phase kernels every piece. G_ALL, every piece unstripped, is the fallback. */
typedef enum {
    G_ALL, /* first: a kernel left out of group_of (a new one) lands here */
    G_STATS,
    G_APPLY,
    G_FUSED_FORWARD,
    G_FUSED_BACKWARD,
    G_BWD_SPLIT,
    G_PA_FORWARD,
    G_PA_BACKWARD,
    G_COL_STATS,
    G_COL_APPLY,
    G_COL_BWD,
    G_SPLIT,
    G_COUNT
} group_id;
static const struct {
    const char *name; /* -DCLNORM_PROGRAM_<name>: part of the cache keys */
    unsigned pieces;
} groups[G_COUNT] = {
    [G_STATS] = {"STATS", ROWS},
    [G_APPLY] = {"APPLY", ROWS},
    [G_FUSED_FORWARD] = {"FUSED_FORWARD", ROWS},
    [G_FUSED_BACKWARD] = {"FUSED_BACKWARD", ROWS},
    [G_BWD_SPLIT] = {"BWD_SPLIT", ROWS},
    [G_PA_FORWARD] = {"PA_FORWARD", COLUMNS},
    [G_PA_BACKWARD] = {"PA_BACKWARD", COLUMNS},
    [G_COL_STATS] = {"COL_STATS", COLUMNS},
    [G_COL_APPLY] = {"COL_APPLY", COLUMNS},
    [G_COL_BWD] = {"COL_BWD", COLUMNS},
    [G_SPLIT] = {"SPLIT", ALL_PIECES}, /* the split-phase kernels (bn_split.c) */
    [G_ALL] = {"ALL", ALL_PIECES},
};
/* each kernel's group; a kernel missing here (a new one) is built in G_ALL (0) */
static const unsigned char group_of[K_COUNT] = {[K_STATS_PARTIAL] = G_STATS,
                                                [K_STATS_FINALIZE] = G_STATS,
                                                [K_APPLY] = G_APPLY,
                                                [K_PA_FORWARD] = G_PA_FORWARD,
                                                [K_BWD_PARTIAL] = G_BWD_SPLIT,
                                                [K_BWD_FINALIZE] = G_BWD_SPLIT,
                                                [K_PA_BACKWARD] = G_PA_BACKWARD,
                                                [K_FUSED_FORWARD] = G_FUSED_FORWARD,
                                                [K_FUSED_BACKWARD] = G_FUSED_BACKWARD,
                                                [K_COL_PARTIAL] = G_COL_STATS,
                                                [K_COL_FINALIZE] = G_COL_STATS,
                                                [K_COL_APPLY] = G_COL_APPLY,
                                                [K_COL_BWD_PARTIAL] = G_COL_BWD,
                                                [K_COL_BWD_FINALIZE] = G_COL_BWD,
                                                [K_SPLIT_STATS] = G_SPLIT,
                                                [K_SPLIT_MERGE] = G_SPLIT,
                                                [K_SPLIT_COEF] = G_SPLIT,
                                                [K_SPLIT_SUMS] = G_SPLIT,
                                                [K_SPLIT_BWD_COEF] = G_SPLIT};

static group_id kernel_group(cn_kernel_id id) {
    return (group_id)group_of[id];
}

static const char *dtype_define(clnorm_dtype d) {
    switch (d) {
    case CLNORM_F32:
        return "DTYPE_F32";
    case CLNORM_F16:
        return "DTYPE_F16";
    case CLNORM_BF16:
        return "DTYPE_BF16";
    }
    return "DTYPE_UNKNOWN";
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; ++i)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

clnorm_status cn_programs_init(clnorm_context *ctx) {
    const char *dir = getenv("CLNORM_KERNEL_DIR"), *extra = getenv("CLNORM_BUILD_OPTIONS");
    if ((dir && *dir && !(ctx->kernel_dir = dup_string(dir))) || !(ctx->build_options = dup_string(extra ? extra : "")))
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory creating a context");
    return CLNORM_SUCCESS;
}

/* texts[i] for each piece in mask (owned[i] set when malloc'ed, every slot NULL or owned so the caller frees them
 * all, also after an early return) and the hash over all the files (the embedded set's, or the folder's) */
static clnorm_status load_sources(const clnorm_context *ctx, unsigned mask, const char **texts, size_t *sizes,
                                  char **owned, char hash[17]) {
    const char *dir = ctx->kernel_dir;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < N_PIECES; ++i) {
        owned[i] = NULL;
        texts[i] = NULL;
        sizes[i] = 0;
    }
    /* kernel sources are code: only from a folder (and files) the effective user owns and nobody else can write */
    char why[4400];
    int dfd = dir ? cn_open_private_dir(dir, 0, "folder", why, sizeof why) : -1;
    if (dir && dfd < 0)
        return cn_fail(CLNORM_ERROR_BUILD,
                       "CLNORM_KERNEL_DIR=%s: %s; kernel sources are read only from a folder owned by the effective "
                       "user and not writable by group or others",
                       dir, why);
    for (size_t i = 0; i < N_PIECES; ++i) {
        if (!pieces[i].file) {
            if (!(mask & BIT(i)))
                continue;
            texts[i] = pieces[i].text;
            sizes[i] = strlen(texts[i]);
            continue;
        }
        if (dfd >= 0) { /* every file is read (the hash covers the whole folder's set), kept when in mask */
            size_t n = 0;
            char *t = cn_read_private_file(dfd, pieces[i].file, &n, why, sizeof why);
            if (!t) {
                close(dfd);
                return cn_fail(CLNORM_ERROR_BUILD, "CLNORM_KERNEL_DIR=%s: cannot read %s: %s", dir, pieces[i].file,
                               why);
            }
            h = fnv1a(h, t, n);
            if (mask & BIT(i)) {
                owned[i] = t;
                texts[i] = t;
                sizes[i] = n;
            } else {
                free(t);
            }
        } else if (mask & BIT(i)) {
            const struct clnorm_embedded_source *e = clnorm_embedded_sources;
            while (e->name && strcmp(e->name, pieces[i].file) != 0)
                ++e;
            if (!e->name)
                return cn_fail(CLNORM_ERROR_BUILD, "embedded kernel source %s is missing", pieces[i].file);
            texts[i] = e->text;
            sizes[i] = e->size;
        }
    }
    if (dfd >= 0) {
        close(dfd);
        snprintf(hash, 17, "%016llx", (unsigned long long)h);
    } else {
        snprintf(hash, 17, "%s", clnorm_embedded_hash);
    }
    return CLNORM_SUCCESS;
}

/* ---- stripping the kernels of other groups out of a source file ------------------------------------------------ */

static int is_ident(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* the index just past the comment or literal starting at s[i] (i itself when there is none); 0 when unterminated */
static size_t skip_comment(const char *s, size_t n, size_t i) {
    if (i + 1 < n && s[i] == '/' && s[i + 1] == '/') {
        while (i < n && s[i] != '\n')
            ++i;
        return i;
    }
    if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
        for (i += 2; i + 1 < n; ++i)
            if (s[i] == '*' && s[i + 1] == '/')
                return i + 2;
        return 0;
    }
    if (s[i] == '"' || s[i] == '\'') {
        char q = s[i];
        for (++i; i < n && s[i] != q; ++i)
            if (s[i] == '\\')
                ++i;
        return i < n ? i + 1 : 0;
    }
    return i;
}

/* Blanks (spaces; newlines kept) every definition `__kernel void NAME(...) {...}` starting a line whose NAME is a
 * kernel of kernel_names outside group g. 0 when the text cannot be followed (the caller keeps it whole). */
static int strip_kernels(char *s, size_t n, group_id g) {
    static const char kw[] = "__kernel";
    for (size_t i = 0; i + sizeof kw < n; ++i) {
        size_t skip = skip_comment(s, n, i);
        if (skip == 0)
            return 0;
        if (skip != i) {
            i = skip - 1;
            continue;
        }
        if ((i > 0 && s[i - 1] != '\n') || memcmp(s + i, kw, sizeof kw - 1) != 0)
            continue;
        size_t p = i + sizeof kw - 1;
        while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n'))
            ++p;
        if (p + 4 >= n || memcmp(s + p, "void", 4) != 0 || is_ident(s[p + 4]))
            continue;
        p += 4;
        while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n'))
            ++p;
        size_t name = p;
        while (p < n && is_ident(s[p]))
            ++p;
        int known = -1;
        for (int k = 0; k < K_COUNT; ++k)
            if (strlen(kernel_names[k]) == p - name && memcmp(s + name, kernel_names[k], p - name) == 0)
                known = k;
        if (known < 0 || kernel_group((cn_kernel_id)known) == g)
            continue;
        /* the body: the first '{' after the name, to its matching '}' (comments and literals skipped) */
        int depth = 0;
        size_t end = 0;
        for (size_t j = p; j < n && !end; ++j) {
            size_t k = skip_comment(s, n, j);
            if (k == 0)
                return 0;
            if (k != j) {
                j = k - 1;
                continue;
            }
            if (s[j] == '{')
                ++depth;
            else if (s[j] == '}' && --depth == 0)
                end = j + 1;
            else if (s[j] == '}' && depth < 0)
                return 0;
        }
        if (!end)
            return 0;
        for (size_t j = i; j < end; ++j)
            if (s[j] != '\n')
                s[j] = ' ';
        i = end - 1;
    }
    return 1;
}

/* ---- building ------------------------------------------------------------------------------------------------------
 */

/* Releases p; a program built in this context goes to the disk cache first. Storing asks the driver for the
 * program's binary, which POCL compiles then for every kernel of the program (~0.3 s for the inference program on
 * a 2-core Xeon), so it waits until the context no longer needs the program: a process's first call does not pay
 * for it on top of its own build (cold first inference 1.22-1.28 -> 0.98-1.02 s there). */
static void program_free(clnorm_context *ctx, cn_program *p) {
    if (!p)
        return;
    if (p->store_key && p->program)
        cn_disk_cache_store(ctx, p->store_key, p->program);
    free(p->store_key);
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
        program_free(ctx, p);
        p = next;
    }
    ctx->programs = NULL;
    memset(ctx->kernel_table, 0, sizeof ctx->kernel_table);
    free(ctx->kernel_dir);
    free(ctx->build_options);
    ctx->kernel_dir = ctx->build_options = NULL;
}

/* clBuildProgram of the n texts; a failure leaves the build log in the last error (when log_failure) */
static clnorm_status build(clnorm_context *ctx, const char *options, cl_uint n, const char **texts, const size_t *sizes,
                           cl_program *out) {
    cl_int err;
    cl_program prog = clCreateProgramWithSource(ctx->context, n, texts, sizes, &err);
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clCreateProgramWithSource");
    err = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
    if (err == CL_SUCCESS) {
        *out = prog;
        return CLNORM_SUCCESS;
    }
    if (err != CL_BUILD_PROGRAM_FAILURE && err != CL_INVALID_BUILD_OPTIONS) {
        clReleaseProgram(prog);
        return cn_cl_fail(err, "clBuildProgram");
    }
    size_t len = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) == CL_SUCCESS &&
        (log = malloc(len + 1)) != NULL) {
        if (clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, len, log, NULL) != CL_SUCCESS)
            len = 0;
        log[len] = '\0';
    }
    clReleaseProgram(prog);
    cn_fail(CLNORM_ERROR_BUILD, "clBuildProgram failed: %s (%d) on %s\noptions: %s\nbuild log:\n",
            cn_cl_error_name(err), (int)err, ctx->name, options);
    cn_append_error(log ? log : "(no log)");
    free(log);
    return CLNORM_ERROR_BUILD;
}

/* What group g's program is made of beyond the sources' text: its pieces (files and literal texts, in order) and
 * the kernels it keeps (the others are stripped). It joins the options (-DCLNORM_LAYOUT), so a change of the tables
 * above changes the in-memory and disk cache keys even when no .cl file changed. */
static unsigned long long group_layout(group_id g) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < N_PIECES; ++i)
        if (groups[g].pieces & BIT(i)) {
            const char *s = pieces[i].file ? pieces[i].file : pieces[i].text;
            h = fnv1a(h, s, strlen(s) + 1);
        }
    for (int k = 0; k < K_COUNT && g != G_ALL; ++k)
        if (kernel_group((cn_kernel_id)k) == g)
            h = fnv1a(h, kernel_names[k], strlen(kernel_names[k]) + 1);
    return (unsigned long long)h;
}

/* the options of group g's program for a variant; 0 when they do not fit */
static int format_options(const clnorm_context *ctx, int variant, group_id g, const char *hash, char *out,
                          size_t n) {
    int len = snprintf(out, n,
                       "-cl-std=CL1.2 -D%s -D%s -DWG=%zu -DCLNORM_SOURCE_HASH=0x%s -DCLNORM_PROGRAM_%s "
                       "-DCLNORM_LAYOUT=0x%016llx" CN_KERNEL_ABI_DEFINES "%s%s %s",
                       dtype_define((clnorm_dtype)(variant % CN_DTYPE_COUNT)),
                       ctx->strategy == CN_STRATEGY_CPU ? "STRATEGY_CPU" : "STRATEGY_GPU", ctx->wg, hash,
                       groups[g].name, group_layout(g), variant >= CN_DTYPE_COUNT ? " -DCLNORM_NO_NT_STORES" : "",
                       ctx->prefetch ? " -DCLNORM_PREFETCH" : "", ctx->build_options);
    return len >= 0 && (size_t)len < n;
}

/* the program of (variant, group g), from memory, the disk cache or a build; stripped builds fall back to G_ALL's
 * sources (same options but the group name) when they fail */
static clnorm_status get_program(clnorm_context *ctx, int variant, group_id g, cn_program **out) {
    const char *texts[N_PIECES], *used[N_PIECES];
    size_t sizes[N_PIECES], used_sizes[N_PIECES];
    char *owned[N_PIECES], *stripped[N_PIECES] = {NULL};
    char hash[17], options[4096];
    cn_program *p = NULL;
    clnorm_status st = load_sources(ctx, groups[g].pieces, texts, sizes, owned, hash);
    if (st == CLNORM_SUCCESS && !format_options(ctx, variant, g, hash, options, sizeof options))
        st = cn_fail(CLNORM_ERROR_BUILD,
                     "CLNORM_BUILD_OPTIONS is too long (the build options may take %zu "
                     "characters)",
                     sizeof options - 1);
    if (st == CLNORM_SUCCESS) {
        p = ctx->programs;
        while (p && strcmp(p->options, options) != 0)
            p = p->next;
    }
    if (st == CLNORM_SUCCESS && !p) {
        p = calloc(1, sizeof *p);
        if (!p || !(p->options = dup_string(options))) {
            free(p);
            p = NULL;
            st = cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory building kernels");
        }
    }
    if (st == CLNORM_SUCCESS && !p->program) {
        /* the disk cache key; a key that does not fit (absurd device strings) just skips the disk cache */
        char key[8192];
        int klen = snprintf(key, sizeof key, "clnorm %u | %.4095s | %.3000s", clnorm_version(), options, ctx->cache_id);
        int keyed = klen > 0 && (size_t)klen < sizeof key && strlen(ctx->cache_id) <= 3000;
        if (!(keyed && cn_disk_cache_load(ctx, key, options, &p->program))) {
            /* the group's pieces, the files with the other groups' kernels blanked out */
            cl_uint n = 0;
            int whole = g == G_ALL;
            for (size_t i = 0; i < N_PIECES && st == CLNORM_SUCCESS; ++i) {
                if (!texts[i])
                    continue;
                used[n] = texts[i];
                used_sizes[n] = sizes[i];
                if (!whole && pieces[i].file) {
                    if (!(stripped[i] = malloc(sizes[i] + 1))) {
                        st = cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory building kernels");
                        break;
                    }
                    memcpy(stripped[i], texts[i], sizes[i]);
                    stripped[i][sizes[i]] = '\0';
                    if (strip_kernels(stripped[i], sizes[i], g))
                        used[n] = stripped[i];
                }
                ++n;
            }
            if (st == CLNORM_SUCCESS)
                st = build(ctx, options, n, used, used_sizes, &p->program);
            if (st == CLNORM_ERROR_BUILD && !whole) { /* the whole set, as it is */
                for (size_t i = 0; i < N_PIECES; ++i)
                    free(owned[i]);
                st = load_sources(ctx, ALL_PIECES, texts, sizes, owned, hash);
                if (st == CLNORM_SUCCESS)
                    st = build(ctx, options, N_PIECES, texts, sizes, &p->program);
            }
            if (st == CLNORM_SUCCESS && keyed && !(p->store_key = dup_string(key)))
                cn_disk_cache_store(ctx, key, p->program); /* no memory to remember the key: store it now */
        }
        if (st == CLNORM_SUCCESS) {
            p->next = ctx->programs;
            ctx->programs = p;
        } else {
            program_free(ctx, p);
            p = NULL;
        }
    }
    for (size_t i = 0; i < N_PIECES; ++i) {
        free(owned[i]);
        free(stripped[i]);
    }
    *out = p;
    return st;
}

/* the slow path of cn_get_kernel: build (or find) the program, create the kernel, enter it in the table */
clnorm_status cn_get_kernel_slow(clnorm_context *ctx, int variant, cn_kernel_id id, cl_kernel *out) {
    cn_program *p = NULL;
    if ((unsigned)variant >= CN_VARIANT_COUNT || (unsigned)id >= K_COUNT)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "no kernel %d for program variant %d", (int)id, variant);
    clnorm_status st = get_program(ctx, variant, kernel_group(id), &p);
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
    ctx->kernel_table[variant][id] = p->kernels[id];
    *out = p->kernels[id];
    return CLNORM_SUCCESS;
}

/* Test hook (tests/dump_programs.c): builds the fallback program of a variant, the whole kernel set unstripped (what
 * a failed stripped build falls back to), so that it is compiled and checked like every other program. */
clnorm_status cn_build_whole_set(clnorm_context *ctx, int variant) {
    cn_program *p = NULL;
    if ((unsigned)variant >= CN_VARIANT_COUNT)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "no program variant %d", variant);
    return get_program(ctx, variant, G_ALL, &p);
}

/* Test hook (tests/test_programs.c): every program of ctx holds exactly its group's kernels (G_ALL: anything),
 * which also shows that no stripped build fell back to the whole set. The number of programs, or -1 and why. */
int cn_programs_check(const clnorm_context *ctx, char *why, size_t n) {
    int count = 0;
    for (const cn_program *p = ctx->programs; p; p = p->next, ++count) {
        const char *tag = strstr(p->options, "-DCLNORM_PROGRAM_");
        int g = -1;
        for (int i = 0; tag && i < G_COUNT; ++i) {
            size_t len = strlen(groups[i].name);
            const char *name = tag + strlen("-DCLNORM_PROGRAM_");
            if (strncmp(name, groups[i].name, len) == 0 && (name[len] == ' ' || name[len] == '\0'))
                g = i;
        }
        char names[2048] = "";
        if (g < 0 ||
            clGetProgramInfo(p->program, CL_PROGRAM_KERNEL_NAMES, sizeof names - 1, names, NULL) != CL_SUCCESS) {
            snprintf(why, n, "program with options \"%s\": no group, or CL_PROGRAM_KERNEL_NAMES failed", p->options);
            return -1;
        }
        if (g == G_ALL)
            continue;
        int want = 0, got = 0;
        for (int k = 0; k < K_COUNT; ++k)
            want += kernel_group((cn_kernel_id)k) == (group_id)g;
        for (char *save = NULL, *k = strtok_r(names, ";", &save); k; k = strtok_r(NULL, ";", &save), ++got) {
            int id = -1;
            for (int i = 0; i < K_COUNT; ++i)
                if (strcmp(k, kernel_names[i]) == 0)
                    id = i;
            if (id < 0 || kernel_group((cn_kernel_id)id) != (group_id)g) {
                snprintf(why, n, "program %s holds kernel %s of another group", groups[g].name, k);
                return -1;
            }
        }
        if (got != want) {
            snprintf(why, n, "program %s holds %d kernels, its group has %d", groups[g].name, got, want);
            return -1;
        }
    }
    return count;
}
