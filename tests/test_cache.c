/*
 * The on-disk kernel cache (src/disk_cache.c), seen from outside: every case runs the same small workload
 * (training forward + backward, F32 and F16, fixed data) in fresh processes — this binary re-executed as
 * `test_cache --child OUT` with CLNORM_CACHE_DIR / CLNORM_CACHE set for it — because the device, POCL and
 * the environment are read per process. The child writes its results to OUT; the parent compares them bit
 * for bit across runs and inspects the cache files (format: see the header comment of disk_cache.c).
 *
 *   round trip      a cold run writes files into an empty directory; a second run loads them (the files are
 *                   left untouched: same inode and mtime) and computes identical results
 *   corrupt         bytes flipped in the binary, in the header, or a valid file for another key: the next run
 *                   succeeds, identical results, the file is rewritten valid
 *   truncated       likewise for files cut short (and empty files)
 *   unwritable      a read-only directory (chmod 0500; skipped as root, where it does not stop writes), a path
 *                   under a regular file, a regular file as the directory: runs succeed, nothing written
 *   CLNORM_CACHE=0  no file is written, the directory is not even created
 *   concurrent      two processes build into the same empty directory at once: both succeed with identical
 *                   results, and the directory ends with one valid file per program and no temporary files
 *
 * Trust (the cache hands binaries to the driver, so it must load only what the effective user owns). The proof
 * that a file was not loaded is a poisoned cache file: valid for the F32 program's key (name, key, checksum) but
 * holding the F16 program's binary, so that a run which loads it computes other results.
 *   poison control  the poisoned set in a private folder of ours IS loaded (results differ): the cases below can
 *                   tell a load from a rebuild
 *   untrusted folder a folder writable by group / others (0770, 0757, 0777, 1777), owned by another user (uid
 *                   65534: 0755, 0700, and 0777 holding 0666 files of that user), a symbolic link to a private
 *                   folder (also named with a trailing slash), each holding the poisoned set: results equal the
 *                   reference, nothing in it created / changed / deleted, clnorm_context_cache_dir is NULL and
 *                   clnorm_context_cache_status says why
 *   planted files   under the cache file names in a private folder: files of another user, mode 0666 or 0660, a
 *                   symbolic link or a hard link to poisoned files elsewhere, a FIFO (the run must not block: a
 *                   SIGALRM would fail it), a directory: none loaded, none deleted or replaced (lstat and content
 *                   unchanged), no other entry appears; the targets elsewhere untouched too
 *   modes           under umask 0, 022, 077 (and 0277 as root) the folders clnorm creates are 0700 and its files
 *                   0600; an existing parent keeps its mode; an existing private 0500 folder is used, not chmod-ed
 *   disk full       tiny tmpfs folders (a mount namespace of this process; root only): no file fits / not all fit:
 *                   runs succeed, no temporary is left, what was written is valid
 *   kernel dir      CLNORM_KERNEL_DIR: a private copy of cl/ gives the reference results; a folder writable by
 *                   group or others, another user's, a symbolic link, and a source file writable by others,
 *                   another user's, a symbolic link, a FIFO: a BUILD error that says why, and y is not written
 *   queries         clnorm_context_cache_dir / _status for CLNORM_CACHE_DIR, XDG_CACHE_HOME, HOME, CLNORM_CACHE=0
 *                   and nothing set, from clnorm_context_create and clnorm_context_create_from_queue; NULL
 * Cases that need a second user (chown) or mounts are skipped with a message when not run as root (CI is root).
 */
#define _GNU_SOURCE /* unshare(CLONE_NEWNS) for the disk-full case */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sched.h>
#include <sys/mount.h>
#endif
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

static char self_path[4096];
static char base_dir[4096]; /* mkdtemp'ed; every case works below it */

/* ---- the child: one fixed workload, results to a file ---------------------------------------------------- */

enum { C_B = 3, C_C = 5, C_S = 37 };
#define C_N ((size_t)C_B * C_C * C_S)

static int child_fail(const char *what, clnorm_status st) {
    fprintf(stderr, "test_cache child: %s: %s: %s\n", what, clnorm_status_string(st), clnorm_last_error());
    return st == CLNORM_ERROR_NO_DEVICE ? 77 : 1;
}

/* one dtype: training forward then backward; appends y, dx, dscale, dbias (raw bytes) to f */
static int child_run(clnorm_context *ctx, clnorm_dtype dt, FILE *f) {
    const size_t shape[3] = {C_B, C_C, C_S}, esize = dt == CLNORM_F32 ? 4 : 2;
    unsigned char *hx = malloc(C_N * 4), *hdy = malloc(C_N * 4), *out = malloc(C_N * 4);
    float params[3][C_C];
    clnorm_tensor x = {0}, y = {0}, dy = {0}, dx = {0};
    clnorm_batchnorm *bn = NULL;
    int rc = 1;
    clnorm_status st;
    uint32_t s = 12345u;
    if (!hx || !hdy || !out)
        goto done;
    for (size_t i = 0; i < C_N; ++i) { /* small integers and halves: exact in F16 too */
        s = s * 1664525u + 1013904223u;
        float vx = (float)((int)(s >> 24) % 64) * 0.5f - 8.0f;
        s = s * 1664525u + 1013904223u;
        float vdy = (float)((int)(s >> 24) % 16) * 0.25f - 2.0f;
        if (dt == CLNORM_F32) {
            memcpy(hx + 4 * i, &vx, 4);
            memcpy(hdy + 4 * i, &vdy, 4);
        } else { /* exact halves of these values: sign | exponent | mantissa via a float round trip */
            uint16_t hvx, hvdy;
            float v[2] = {vx, vdy};
            uint16_t *h[2] = {&hvx, &hvdy};
            for (int k = 0; k < 2; ++k) {
                uint32_t b;
                memcpy(&b, &v[k], 4);
                uint32_t sign = (b >> 16) & 0x8000u, e = (b >> 23) & 0xffu;
                *h[k] = (uint16_t)(e == 0 ? sign : (sign | ((e - 112u) << 10) | ((b & 0x7fffffu) >> 13)));
            }
            memcpy(hx + 2 * i, &hvx, 2);
            memcpy(hdy + 2 * i, &hvdy, 2);
        }
    }
    if ((st = clnorm_tensor_create(ctx, 3, shape, dt, hx, &x)) != CLNORM_SUCCESS ||
        (st = clnorm_tensor_create(ctx, 3, shape, dt, NULL, &y)) != CLNORM_SUCCESS ||
        (st = clnorm_tensor_create(ctx, 3, shape, dt, hdy, &dy)) != CLNORM_SUCCESS ||
        (st = clnorm_tensor_create(ctx, 3, shape, dt, NULL, &dx)) != CLNORM_SUCCESS) {
        rc = child_fail("clnorm_tensor_create", st);
        goto done;
    }
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 1, C_C);
    cfg.dtype = dt;
    cfg.seed = 7;
    if ((st = clnorm_batchnorm_create(ctx, &cfg, &bn)) != CLNORM_SUCCESS ||
        (st = clnorm_batchnorm_forward(bn, 1, &x, &y)) != CLNORM_SUCCESS ||
        (st = clnorm_batchnorm_backward(bn, &x, &dy, &dx, 1.0f, 0.0f)) != CLNORM_SUCCESS ||
        (st = clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, params[0], C_C)) != CLNORM_SUCCESS ||
        (st = clnorm_batchnorm_read(bn, CLNORM_BIAS_GRAD, params[1], C_C)) != CLNORM_SUCCESS ||
        (st = clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, params[2], C_C)) != CLNORM_SUCCESS) {
        rc = child_fail("batchnorm", st);
        goto done;
    }
    if ((st = clnorm_tensor_read(ctx, &y, out)) != CLNORM_SUCCESS) {
        rc = child_fail("clnorm_tensor_read(y)", st);
        goto done;
    }
    fwrite(out, 1, C_N * esize, f);
    if ((st = clnorm_tensor_read(ctx, &dx, out)) != CLNORM_SUCCESS) {
        rc = child_fail("clnorm_tensor_read(dx)", st);
        goto done;
    }
    fwrite(out, 1, C_N * esize, f);
    fwrite(params, 1, sizeof params, f);
    rc = 0;
done:
    clnorm_batchnorm_destroy(bn);
    clnorm_tensor_release(&x);
    clnorm_tensor_release(&y);
    clnorm_tensor_release(&dy);
    clnorm_tensor_release(&dx);
    free(hx);
    free(hdy);
    free(out);
    return rc;
}

/* program files (*.clbin) in dir; -1 when dir cannot be read */
static int count_program_files(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        n += len > 6 && strcmp(e->d_name + len - 6, ".clbin") == 0;
    }
    closedir(d);
    return n;
}

static int child_main(const char *out_path) {
    clnorm_context *ctx = NULL;
    clnorm_status st = tu_context_create(&ctx);
    if (st != CLNORM_SUCCESS)
        return child_fail("clnorm_context_create", st);
    FILE *f = fopen(out_path, "wb");
    int rc = f ? 0 : 1;
    if (!f)
        fprintf(stderr, "test_cache child: cannot write %s: %s\n", out_path, strerror(errno));
    if (rc == 0)
        rc = child_run(ctx, CLNORM_F32, f);
    if (rc == 0)
        rc = child_run(ctx, CLNORM_F16, f);
    if (f && fclose(f) != 0)
        rc = 1;
    /* what the context says about its cache folder, for the parent: "<dir or (null)>\n<status>\n<files>\n", files:
     * the program files in that folder while the context still lives (built programs are stored at its end) */
    char report[4200];
    snprintf(report, sizeof report, "%s.cache", out_path);
    FILE *r = fopen(report, "wb");
    if (!r ||
        fprintf(r, "%s\n%s\n%d\n", clnorm_context_cache_dir(ctx) ? clnorm_context_cache_dir(ctx) : "(null)",
                clnorm_context_cache_status(ctx), count_program_files(clnorm_context_cache_dir(ctx))) < 0 ||
        fclose(r) != 0)
        rc = 1;
    clnorm_context_destroy(ctx);
    return rc;
}

/* ---- the parent: processes, files ------------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    char out[4200];
    struct timespec t0;
} child_t;

/* set by a case for the children it starts, reset by child_options_reset() */
static int child_umask = -1;                   /* >= 0: the child's umask */
static unsigned child_alarm;                   /* > 0: SIGALRM kills a child that runs longer (a blocking open...) */
static char last_dir[4200], last_status[4800]; /* the last child's clnorm_context_cache_dir / _cache_status */
static int last_live_files;                     /* and its program files before clnorm_context_destroy */

static void child_options_reset(void) {
    child_umask = -1;
    child_alarm = 0;
}

/* Starts `self --child OUT` with CLNORM_CACHE_DIR=dir (NULL: unset) and CLNORM_CACHE=cache (NULL: unset). */
static void child_start(child_t *c, const char *dir, const char *cache, const char *tag) {
    snprintf(c->out, sizeof c->out, "%s/result-%s-%ld", base_dir, tag, (long)getpid());
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    fflush(stdout);
    fflush(stderr);
    c->pid = fork();
    if (c->pid < 0)
        tu_fail_at(__FILE__, __LINE__, "fork: %s", strerror(errno));
    if (c->pid == 0) {
        if (dir)
            setenv("CLNORM_CACHE_DIR", dir, 1);
        else
            unsetenv("CLNORM_CACHE_DIR");
        if (cache)
            setenv("CLNORM_CACHE", cache, 1);
        else
            unsetenv("CLNORM_CACHE");
        unsetenv("CLNORM_KERNEL_DIR");
        if (child_umask >= 0)
            umask((mode_t)child_umask);
        if (child_alarm)
            alarm(child_alarm); /* survives execv */
        char *argv[] = {self_path, (char *)"--child", c->out, NULL};
        execv(self_path, argv);
        fprintf(stderr, "test_cache: execv %s: %s\n", self_path, strerror(errno));
        _exit(126);
    }
}

/* Waits for c; asserts exit status 0; returns the results (malloc'ed, *size) and the wall time in ms. */
static unsigned char *child_wait(child_t *c, size_t *size, double *ms) {
    int status = 0;
    while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
        ;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (ms)
        *ms = (double)(t1.tv_sec - c->t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - c->t0.tv_nsec) * 1e-6;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        tu_fail_at(__FILE__, __LINE__, "child %s failed (%s %d)", c->out, WIFEXITED(status) ? "exit" : "signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    FILE *f = fopen(c->out, "rb");
    TU_TRUE(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    TU_TRUE(n > 0);
    unsigned char *buf = tu_malloc((size_t)n);
    TU_TRUE(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    remove(c->out);
    char report[4300];
    snprintf(report, sizeof report, "%s.cache", c->out);
    f = fopen(report, "rb");
    TU_TRUE(f != NULL);
    TU_TRUE(fgets(last_dir, sizeof last_dir, f) != NULL && fgets(last_status, sizeof last_status, f) != NULL);
    TU_TRUE(fscanf(f, "%d", &last_live_files) == 1);
    fclose(f);
    remove(report);
    last_dir[strcspn(last_dir, "\n")] = '\0';
    last_status[strcspn(last_status, "\n")] = '\0';
    *size = (size_t)n;
    return buf;
}

static unsigned char *run_child(const char *dir, const char *cache, const char *tag, size_t *size, double *ms) {
    child_t c;
    child_start(&c, dir, cache, tag);
    return child_wait(&c, size, ms);
}

/* results of the reference run (cache disabled), computed once */
static unsigned char *ref_results;
static size_t ref_size;

static void expect_reference(const unsigned char *got, size_t size, const char *what) {
    if (!ref_results) {
        ref_results = run_child(NULL, "0", "reference", &ref_size, NULL);
    }
    if (size != ref_size || memcmp(got, ref_results, size) != 0)
        tu_fail_at(__FILE__, __LINE__, "%s: results differ from the run without a cache", what);
}

/* a fresh empty directory below base_dir */
static void fresh_dir(char *dir, size_t n, const char *name) {
    snprintf(dir, n, "%s/%s", base_dir, name);
    TU_TRUE(mkdir(dir, 0700) == 0);
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        chmod(path, 0700);
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[4400];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

#define MAX_FILES 16
typedef struct {
    int n, others; /* .clbin files; any other entries (temporary files...) */
    char name[MAX_FILES][256];
    struct stat st[MAX_FILES];
} listing;

static void list_dir(const char *dir, listing *l) {
    memset(l, 0, sizeof *l);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t len = strlen(e->d_name);
        if (len > 6 && strcmp(e->d_name + len - 6, ".clbin") == 0 && l->n < MAX_FILES) {
            snprintf(l->name[l->n], sizeof l->name[0], "%s", e->d_name);
            char p[4608];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            stat(p, &l->st[l->n]);
            l->n++;
        } else {
            l->others++;
        }
    }
    closedir(d);
}

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = tu_malloc(n > 0 ? (size_t)n : 1);
    *size = fread(buf, 1, n > 0 ? (size_t)n : 0, f);
    fclose(f);
    return buf;
}

static void spit(const char *path, const unsigned char *buf, size_t size) {
    FILE *f = fopen(path, "wb");
    TU_TRUE(f != NULL);
    TU_TRUE(fwrite(buf, 1, size, f) == size);
    TU_TRUE(fclose(f) == 0);
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* disk_cache.c's format: "CLNORMB1" | u32 key length | u32 0 | u64 binary size | u64 FNV-1a(key, binary) | key |
 * binary; the key starts with "clnorm <version> | ". */
static int file_valid(const char *dir, const char *name, int quiet) {
    char p[4608];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    size_t n = 0;
    unsigned char *b = slurp(p, &n);
    int ok = b && n > 32 && memcmp(b, "CLNORMB1", 8) == 0;
    if (ok) {
        uint64_t klen = le64(b + 8) & 0xffffffffu, blen = le64(b + 16);
        ok = klen > 7 && blen > 0 && 32 + klen + blen == n && memcmp(b + 32, "clnorm ", 7) == 0 &&
             fnv1a(b + 32, n - 32) == le64(b + 24);
    }
    free(b);
    if (!ok && !quiet)
        fprintf(stderr, "cache file %s is not valid\n", p);
    return ok;
}

static void expect_valid_files(const char *dir, int want, const char *what) {
    listing l;
    list_dir(dir, &l);
    if (l.n != want || l.others != 0)
        tu_fail_at(__FILE__, __LINE__, "%s: %d cache files and %d other entries in %s (expected %d and 0)", what, l.n,
                   l.others, dir, want);
    for (int i = 0; i < l.n; ++i)
        if (!file_valid(dir, l.name[i], 0))
            tu_fail_at(__FILE__, __LINE__, "%s: %s/%s is not a valid cache file", what, dir, l.name[i]);
}

/* number of programs the workload builds = files of a cold run; measured by the round trip */
static int programs = 0;

/* a cold run into dir; returns the number of files written */
static int populate(const char *dir) {
    size_t n;
    unsigned char *r = run_child(dir, "1", "cold", &n, NULL);
    expect_reference(r, n, "cold run");
    free(r);
    listing l;
    list_dir(dir, &l);
    return l.n;
}

/* ---- cases ------------------------------------------------------------------------------------------------ */

static void test_round_trip(void **state) {
    (void)state;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/roundtrip/nested", base_dir); /* missing, parent too: the library makes both */
    size_t n1, n2;
    double cold_ms, warm_ms, off_ms;
    free(run_child(NULL, "0", "warmup", &n1, &off_ms)); /* warm POCL's own cache, so the comparison is fair */
    unsigned char *r1 = run_child(dir, "1", "cold", &n1, &cold_ms);
    /* built programs reach the folder when the context is destroyed, not during the calls (storing makes POCL
     * compile every kernel of the program once more) */
    if (last_live_files != 0)
        tu_fail_at(__FILE__, __LINE__, "the cold run's folder held %d program file(s) before clnorm_context_destroy",
                   last_live_files);
    listing before, after;
    list_dir(dir, &before);
    TU_TRUE(before.n >= 1);
    programs = before.n;
    expect_valid_files(dir, programs, "after the cold run");
    unsigned char *r2 = run_child(dir, "1", "warm", &n2, &warm_ms);
    TU_TRUE(n1 == n2 && memcmp(r1, r2, n1) == 0);
    expect_reference(r1, n1, "cold run");
    list_dir(dir, &after);
    TU_TRUE(after.n == before.n && after.others == 0);
    for (int i = 0; i < after.n; ++i) { /* loaded, not rebuilt: a rebuild would rename a new file over it */
        int found = 0;
        for (int j = 0; j < before.n; ++j)
            if (strcmp(after.name[i], before.name[j]) == 0) {
                found = 1;
                if (after.st[i].st_ino != before.st[j].st_ino ||
                    after.st[i].st_mtim.tv_sec != before.st[j].st_mtim.tv_sec ||
                    after.st[i].st_mtim.tv_nsec != before.st[j].st_mtim.tv_nsec)
                    tu_fail_at(__FILE__, __LINE__, "%s was rewritten by the warm run (not loaded)", after.name[i]);
            }
        TU_TRUE(found);
    }
    fprintf(stderr,
            "round trip: %d program file(s); process wall time: cold cache %.0f ms, warm cache %.0f ms "
            "(cache off, POCL warm: %.0f ms)\n",
            programs, cold_ms, warm_ms, off_ms);
    free(r1);
    free(r2);
}

typedef void (*damage_fn)(unsigned char *buf, size_t *size);

static void flip_binary(unsigned char *b, size_t *n) { /* bytes in the middle of the binary */
    for (size_t i = *n / 2; i < *n / 2 + 8 && i < *n; ++i)
        b[i] ^= 0x5a;
}
static void flip_magic(unsigned char *b, size_t *n) {
    (void)n;
    b[3] ^= 0xff;
}
static void flip_length(unsigned char *b, size_t *n) { /* binary size field */
    (void)n;
    b[16] ^= 0x01;
}
static void other_key(unsigned char *b, size_t *n) { /* a well-formed file whose key is not the one asked for */
    uint64_t klen = le64(b + 8) & 0xffffffffu;
    b[32 + klen - 1] ^= 0x01;
    uint64_t h = fnv1a(b + 32, *n - 32);
    for (int i = 0; i < 8; ++i)
        b[24 + i] = (unsigned char)(h >> (8 * i));
}
static void truncate_half(unsigned char *b, size_t *n) {
    (void)b;
    *n /= 2;
}
static void truncate_header(unsigned char *b, size_t *n) {
    (void)b;
    *n = 20;
}
static void truncate_last(unsigned char *b, size_t *n) {
    (void)b;
    *n -= 1;
}
static void truncate_empty(unsigned char *b, size_t *n) {
    (void)b;
    *n = 0;
}

/* damage every file in a populated dir; the next run must succeed, agree, and leave valid rewritten files */
static void damage_case(const char *name, damage_fn damage) {
    char dir[4200];
    fresh_dir(dir, sizeof dir, name);
    int n = populate(dir);
    TU_TRUE(n >= 1);
    listing l;
    list_dir(dir, &l);
    unsigned char *damaged[MAX_FILES];
    size_t damaged_size[MAX_FILES];
    for (int i = 0; i < l.n; ++i) {
        char p[4608];
        snprintf(p, sizeof p, "%s/%s", dir, l.name[i]);
        damaged[i] = slurp(p, &damaged_size[i]);
        TU_TRUE(damaged[i] != NULL && damaged_size[i] > 64);
        damage(damaged[i], &damaged_size[i]);
        spit(p, damaged[i], damaged_size[i]);
        TU_TRUE(!file_valid(dir, l.name[i], 1) || damage == other_key);
    }
    size_t rn;
    unsigned char *r = run_child(dir, "1", name, &rn, NULL);
    expect_reference(r, rn, name);
    free(r);
    expect_valid_files(dir, n, name);
    for (int i = 0; i < l.n; ++i) { /* rewritten: the damaged bytes are gone */
        char p[4608];
        snprintf(p, sizeof p, "%s/%s", dir, l.name[i]);
        size_t size = 0;
        unsigned char *b = slurp(p, &size);
        TU_TRUE(b != NULL);
        if (size == damaged_size[i] && memcmp(b, damaged[i], size) == 0)
            tu_fail_at(__FILE__, __LINE__, "%s: %s still holds the damaged bytes", name, p);
        free(b);
        free(damaged[i]);
    }
}

static void test_corrupt(void **state) {
    (void)state;
    damage_case("corrupt-binary", flip_binary);
    damage_case("corrupt-magic", flip_magic);
    damage_case("corrupt-length", flip_length);
    damage_case("other-key", other_key);
}

static void test_truncated(void **state) {
    (void)state;
    damage_case("truncated-half", truncate_half);
    damage_case("truncated-header", truncate_header);
    damage_case("truncated-last-byte", truncate_last);
    damage_case("truncated-empty", truncate_empty);
}

static void expect_runs_without_cache(const char *dir, const char *what) {
    size_t n;
    unsigned char *r = run_child(dir, "1", "unwritable", &n, NULL);
    expect_reference(r, n, what);
    free(r);
}

static void test_unwritable(void **state) {
    (void)state;
    char dir[4200], file[4200], under[4400];
    /* a read-only directory */
    fresh_dir(dir, sizeof dir, "readonly");
    TU_TRUE(chmod(dir, 0500) == 0);
    char probe[4400];
    snprintf(probe, sizeof probe, "%s/probe", dir);
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) { /* root: permissions do not stop writes */
        close(fd);
        unlink(probe);
        fprintf(stderr, "unwritable: chmod 0500 does not stop writes here (root?); read-only case skipped\n");
    } else {
        expect_runs_without_cache(dir, "read-only directory");
        listing l;
        list_dir(dir, &l);
        TU_TRUE(l.n == 0 && l.others == 0);
    }
    chmod(dir, 0700);
    /* a directory below a regular file: mkdir fails with ENOTDIR, also for root */
    snprintf(file, sizeof file, "%s/regular-file", base_dir);
    spit(file, (const unsigned char *)"x", 1);
    snprintf(under, sizeof under, "%s/sub/dir", file);
    expect_runs_without_cache(under, "directory below a regular file");
    /* the directory is itself a regular file */
    expect_runs_without_cache(file, "a regular file as the directory");
    struct stat st;
    TU_TRUE(stat(file, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 1);
    /* /dev/null/x */
    expect_runs_without_cache("/dev/null/clnorm", "/dev/null/clnorm");
}

static void test_disabled(void **state) {
    (void)state;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/disabled", base_dir);
    size_t n;
    unsigned char *r = run_child(dir, "0", "disabled", &n, NULL);
    expect_reference(r, n, "CLNORM_CACHE=0");
    free(r);
    struct stat st;
    TU_TRUE(stat(dir, &st) != 0 && errno == ENOENT); /* not even created */
    /* and an existing directory stays empty */
    fresh_dir(dir, sizeof dir, "disabled-existing");
    r = run_child(dir, "0", "disabled", &n, NULL);
    free(r);
    listing l;
    list_dir(dir, &l);
    TU_TRUE(l.n == 0 && l.others == 0);
}

static void test_concurrent(void **state) {
    (void)state;
    for (int round = 0; round < 3; ++round) {
        char dir[4200], name[64];
        snprintf(name, sizeof name, "concurrent-%d", round);
        fresh_dir(dir, sizeof dir, name);
        child_t a, b;
        child_start(&a, dir, "1", "a");
        child_start(&b, dir, "1", "b");
        size_t na, nb;
        unsigned char *ra = child_wait(&a, &na, NULL), *rb = child_wait(&b, &nb, NULL);
        expect_reference(ra, na, "concurrent a");
        expect_reference(rb, nb, "concurrent b");
        free(ra);
        free(rb);
        expect_valid_files(dir, programs ? programs : 1, "after two concurrent builds");
        size_t nc;
        unsigned char *rc = run_child(dir, "1", "after", &nc, NULL); /* and they load */
        expect_reference(rc, nc, "run after the concurrent builds");
        free(rc);
    }
}

/* ---- trust: folders and files the effective user does not own or that others can write ---------------------- */

#define NOBODY 65534 /* the second user of the foreign cases (root chowns to it) */

/* 1 if this process can chown to another user (root in CI); else the foreign-owner cases are skipped */
static int can_chown(void) {
    static int known = -1;
    if (known < 0) {
        char p[4200];
        snprintf(p, sizeof p, "%s/chown-probe", base_dir);
        spit(p, (const unsigned char *)"x", 1);
        known = geteuid() != NOBODY && chown(p, NOBODY, NOBODY) == 0;
        unlink(p);
        if (!known)
            fprintf(stderr,
                    "trust: cannot give files to another user (uid %d) here (not root?): the foreign-owner "
                    "cases are SKIPPED\n",
                    NOBODY);
    }
    return known;
}

/* the cache files of a cold run (genuine), read once: name, bytes, and whether the program is the F32 one */
static struct {
    char name[256];
    unsigned char *data;
    size_t size;
    int f32, f16;
} genuine[MAX_FILES];
static char *genuine_key[MAX_FILES]; /* their keys */
static int n_genuine;

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)(le64(p) & 0xffffffffu);
}

static void load_genuine(void) {
    if (n_genuine)
        return;
    char dir[4200];
    fresh_dir(dir, sizeof dir, "genuine");
    TU_TRUE(populate(dir) >= 2);
    listing l;
    list_dir(dir, &l);
    for (int i = 0; i < l.n; ++i) {
        char p[4608];
        snprintf(p, sizeof p, "%s/%s", dir, l.name[i]);
        snprintf(genuine[i].name, sizeof genuine[i].name, "%s", l.name[i]);
        genuine[i].data = slurp(p, &genuine[i].size);
        TU_TRUE(genuine[i].data && genuine[i].size > 32 && file_valid(dir, l.name[i], 0));
        uint32_t klen = le32(genuine[i].data + 8);
        char *key = tu_malloc(klen + 1);
        memcpy(key, genuine[i].data + 32, klen);
        key[klen] = '\0';
        genuine[i].f32 = strstr(key, "-DDTYPE_F32") != NULL;
        genuine[i].f16 = strstr(key, "-DDTYPE_F16") != NULL;
        genuine_key[i] = key;
    }
    n_genuine = l.n;
}

/* A valid cache file that computes something else: an F32 program's file (its name, key and a correct checksum)
 * holding the binary of the F16 program of the same kernels (the key with DTYPE_F16 for DTYPE_F32), so that a run
 * which loads it gives results other than the reference. The other files are genuine copies. Returns malloc'ed
 * bytes. */
static unsigned char *poison_bytes(int i, size_t *size) {
    int f16 = -1;
    char *want = genuine[i].f32 ? tu_malloc(strlen(genuine_key[i]) + 1) : NULL;
    if (want) {
        strcpy(want, genuine_key[i]);
        char *d = strstr(want, "-DDTYPE_F32");
        d[strlen("-DDTYPE_F")] = '1';
        d[strlen("-DDTYPE_F1")] = '6';
    }
    for (int j = 0; j < n_genuine; ++j)
        if (genuine[j].f16 && (f16 < 0 || (want && strcmp(genuine_key[j], want) == 0)))
            f16 = j;
    free(want);
    TU_TRUE(f16 >= 0);
    if (!genuine[i].f32) {
        *size = genuine[i].size;
        unsigned char *b = tu_malloc(*size);
        memcpy(b, genuine[i].data, *size);
        return b;
    }
    uint32_t klen = le32(genuine[i].data + 8), klen16 = le32(genuine[f16].data + 8);
    size_t blen = genuine[f16].size - 32 - klen16;
    *size = 32 + klen + blen;
    unsigned char *b = tu_malloc(*size);
    memcpy(b, genuine[i].data, 32 + klen);
    memcpy(b + 32 + klen, genuine[f16].data + 32 + klen16, blen);
    for (int k = 0; k < 8; ++k)
        b[16 + k] = (unsigned char)((uint64_t)blen >> (8 * k));
    uint64_t h = fnv1a(b + 32, *size - 32);
    for (int k = 0; k < 8; ++k)
        b[24 + k] = (unsigned char)(h >> (8 * k));
    return b;
}

/* writes the poisoned set into dir (under the genuine names) with the given mode */
static void plant_poison(const char *dir, mode_t mode) {
    load_genuine();
    for (int i = 0; i < n_genuine; ++i) {
        char p[4608];
        snprintf(p, sizeof p, "%s/%s", dir, genuine[i].name);
        size_t n;
        unsigned char *b = poison_bytes(i, &n);
        spit(p, b, n);
        TU_TRUE(chmod(p, mode) == 0);
        free(b);
    }
}

/* every entry of a folder: lstat and, for regular files, a hash of the bytes (the parent runs as root or owns
 * them, so it can read them) */
#define SNAP_MAX 32
typedef struct {
    int n;
    char name[SNAP_MAX][256];
    struct stat st[SNAP_MAX];
    uint64_t sum[SNAP_MAX];
} snapshot;

static void snap(const char *dir, snapshot *s) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    TU_TRUE(d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        TU_TRUE(s->n < SNAP_MAX);
        int i = s->n++;
        while (i > 0 && strcmp(s->name[i - 1], e->d_name) > 0) { /* sorted by name */
            memcpy(s->name[i], s->name[i - 1], sizeof s->name[0]);
            --i;
        }
        snprintf(s->name[i], sizeof s->name[0], "%s", e->d_name);
    }
    closedir(d);
    for (int i = 0; i < s->n; ++i) {
        char p[4608];
        snprintf(p, sizeof p, "%s/%s", dir, s->name[i]);
        TU_TRUE(lstat(p, &s->st[i]) == 0);
        if (S_ISREG(s->st[i].st_mode)) {
            size_t n = 0;
            unsigned char *b = slurp(p, &n);
            TU_TRUE(b != NULL);
            s->sum[i] = fnv1a(b, n) ^ n;
            free(b);
        }
    }
}

/* nothing created, deleted, replaced, rewritten, chmod-ed or chown-ed */
static void expect_same(const snapshot *a, const snapshot *b, const char *dir, const char *what) {
    if (a->n != b->n)
        tu_fail_at(__FILE__, __LINE__, "%s: %s had %d entries, now %d", what, dir, a->n, b->n);
    for (int i = 0; i < a->n; ++i) {
        const struct stat *x = &a->st[i], *y = &b->st[i];
        if (strcmp(a->name[i], b->name[i]) != 0 || x->st_ino != y->st_ino || x->st_mode != y->st_mode ||
            x->st_uid != y->st_uid || x->st_size != y->st_size || x->st_nlink != y->st_nlink ||
            x->st_mtim.tv_sec != y->st_mtim.tv_sec || x->st_mtim.tv_nsec != y->st_mtim.tv_nsec ||
            a->sum[i] != b->sum[i])
            tu_fail_at(__FILE__, __LINE__, "%s: %s/%s was changed, replaced or removed (now %s)", what, dir, a->name[i],
                       b->name[i]);
    }
}

/* runs the workload with dir as the cache folder: results must equal the reference run's (so the poisoned F32
 * file was not loaded), and the status must start with want_status and contain want_why */
static void run_expect(const char *dir, const char *want_status, const char *want_why, const char *what) {
    size_t n;
    unsigned char *r = run_child(dir, "1", what, &n, NULL);
    if (!ref_results)
        ref_results = run_child(NULL, "0", "reference", &ref_size, NULL);
    if (n != ref_size || memcmp(r, ref_results, n) != 0)
        tu_fail_at(__FILE__, __LINE__,
                   "%s: results differ from the run without a cache: a planted binary was "
                   "loaded",
                   what);
    free(r);
    if (strncmp(last_status, want_status, strlen(want_status)) != 0 || (want_why && !strstr(last_status, want_why)))
        tu_fail_at(__FILE__, __LINE__, "%s: clnorm_context_cache_status says \"%s\", expected \"%s...%s\"", what,
                   last_status, want_status, want_why ? want_why : "");
    int on = strcmp(want_status, "on") == 0;
    if (on != (strcmp(last_dir, "(null)") != 0))
        tu_fail_at(__FILE__, __LINE__, "%s: clnorm_context_cache_dir is \"%s\" with status \"%s\"", what, last_dir,
                   last_status);
}

/* the poisoned set in a private folder of ours IS loaded: the results differ. Without this the other cases would
 * prove nothing. */
static void test_poison_detected(void **state) {
    (void)state;
    child_options_reset();
    char dir[4200];
    fresh_dir(dir, sizeof dir, "poison-control");
    plant_poison(dir, 0600);
    snapshot before, after;
    snap(dir, &before);
    size_t n;
    unsigned char *r = run_child(dir, "1", "poison", &n, NULL);
    if (!ref_results)
        ref_results = run_child(NULL, "0", "reference", &ref_size, NULL);
    if (n == ref_size && memcmp(r, ref_results, n) == 0)
        tu_fail_at(__FILE__, __LINE__,
                   "the poisoned cache file in a private folder was not loaded (or computes the "
                   "same): the trust cases could not tell a load from a rebuild");
    free(r);
    TU_TRUE(strcmp(last_status, "on") == 0 && strcmp(last_dir, dir) == 0);
    snap(dir, &after);
    expect_same(&before, &after, dir, "poison control"); /* loaded, so neither deleted nor rewritten */
}

/* folders that must not be used at all: nothing read (the poisoned files would change the results), nothing
 * written, the status says why */
static void untrusted_folder(const char *name, mode_t mode, int foreign_dir, int foreign_files, const char *why) {
    char dir[4200];
    fresh_dir(dir, sizeof dir, name);
    plant_poison(dir, foreign_files ? 0666 : 0600);
    if (foreign_files) {
        snapshot s;
        snap(dir, &s);
        for (int i = 0; i < s.n; ++i) {
            char p[4608];
            snprintf(p, sizeof p, "%s/%s", dir, s.name[i]);
            TU_TRUE(chown(p, NOBODY, NOBODY) == 0 && chmod(p, 0666) == 0);
        }
    }
    if (foreign_dir)
        TU_TRUE(chown(dir, NOBODY, NOBODY) == 0);
    TU_TRUE(chmod(dir, mode) == 0);
    snapshot before, after;
    snap(dir, &before);
    run_expect(dir, "off: ", why, name);
    snap(dir, &after);
    expect_same(&before, &after, dir, name);
    struct stat st;
    TU_TRUE(lstat(dir, &st) == 0 && (st.st_mode & 07777) == mode); /* and never chmod-ed */
    fprintf(stderr, "trust: %-24s %s\n", name, last_status);
}

static void test_untrusted_folder(void **state) {
    (void)state;
    child_options_reset();
    untrusted_folder("folder-0770", 0770, 0, 0, "writable by group (mode 0770)");
    untrusted_folder("folder-0757", 0757, 0, 0, "writable by others (mode 0757)");
    untrusted_folder("folder-0777", 0777, 0, 0, "writable by group and others (mode 0777)");
    untrusted_folder("folder-1777", 01777, 0, 0, "writable by group and others (mode 1777)");
    if (can_chown()) {
        char why[128];
        snprintf(why, sizeof why, "owned by uid %d, not by the effective user (uid %lu)", NOBODY,
                 (unsigned long)geteuid());
        untrusted_folder("folder-foreign-0755", 0755, 1, 0, why);
        untrusted_folder("folder-foreign-0700", 0700, 1, 0, why);
        untrusted_folder("folder-foreign-0777", 0777, 1, 1, why); /* the case: files 0666 of nobody too */
    }
    /* a symbolic link to a private folder of ours holding the poisoned set */
    char target[4200], link_path[4200];
    fresh_dir(target, sizeof target, "symlink-target");
    plant_poison(target, 0600);
    snprintf(link_path, sizeof link_path, "%s/symlinked-folder", base_dir);
    TU_TRUE(symlink(target, link_path) == 0);
    snapshot before, after;
    snap(target, &before);
    run_expect(link_path, "off: ", "is a symbolic link", "symlinked folder");
    fprintf(stderr, "trust: %-24s %s\n", "symlinked folder", last_status);
    snap(target, &after);
    expect_same(&before, &after, target, "symlinked folder");
    struct stat st;
    TU_TRUE(lstat(link_path, &st) == 0 && S_ISLNK(st.st_mode));
    /* "dir/" names the symbolic link too */
    char slash[4300];
    snprintf(slash, sizeof slash, "%s/", link_path);
    run_expect(slash, "off: ", "is a symbolic link", "symlinked folder with a trailing slash");
    snap(target, &after);
    expect_same(&before, &after, target, "symlinked folder with a trailing slash");
}

/* entries planted under the cache file names in a private folder of ours: none loaded, none deleted or replaced */
typedef enum { P_FOREIGN, P_MODE_0666, P_MODE_0660, P_SYMLINK, P_FIFO, P_HARDLINK, P_DIRECTORY } plant_kind;

static void planted(const char *name, plant_kind kind) {
    char dir[4200], other[4200], oname[64];
    fresh_dir(dir, sizeof dir, name);
    snprintf(oname, sizeof oname, "%s-elsewhere", name);
    fresh_dir(other, sizeof other, oname); /* symlink and hard link targets: valid poisoned files of ours */
    load_genuine();
    if (kind == P_SYMLINK || kind == P_HARDLINK)
        plant_poison(other, 0600);
    else if (kind == P_FOREIGN || kind == P_MODE_0666 || kind == P_MODE_0660)
        plant_poison(dir, kind == P_MODE_0666 ? 0666 : kind == P_MODE_0660 ? 0660 : 0600);
    for (int i = 0; i < n_genuine; ++i) {
        char p[8704], t[8704];
        snprintf(p, sizeof p, "%s/%s", dir, genuine[i].name);
        snprintf(t, sizeof t, "%s/%s", other, genuine[i].name);
        switch (kind) {
        case P_FOREIGN:
            TU_TRUE(chown(p, NOBODY, NOBODY) == 0);
            break;
        case P_MODE_0666:
        case P_MODE_0660:
            break;
        case P_SYMLINK:
            TU_TRUE(symlink(t, p) == 0);
            break;
        case P_FIFO:
            TU_TRUE(mkfifo(p, 0600) == 0);
            break;
        case P_HARDLINK:
            TU_TRUE(link(t, p) == 0);
            break;
        case P_DIRECTORY:
            TU_TRUE(mkdir(p, 0700) == 0);
            break;
        }
    }
    snapshot before, after, obefore, oafter;
    snap(dir, &before);
    snap(other, &obefore);
    child_alarm = 120; /* a FIFO that blocked the open would hang the child: SIGALRM fails it instead */
    run_expect(dir, "on", NULL, name);
    child_alarm = 0;
    snap(dir, &after);
    snap(other, &oafter);
    expect_same(&before, &after, dir, name);
    expect_same(&obefore, &oafter, other, name);
    TU_TRUE(before.n == n_genuine);
}

static void test_planted_files(void **state) {
    (void)state;
    child_options_reset();
    if (can_chown())
        planted("planted-foreign", P_FOREIGN);
    planted("planted-0666", P_MODE_0666);
    planted("planted-0660", P_MODE_0660);
    planted("planted-symlink", P_SYMLINK);
    planted("planted-fifo", P_FIFO);
    planted("planted-hardlink", P_HARDLINK);
    planted("planted-directory", P_DIRECTORY);
}

/* folders clnorm creates are 0700 and files 0600 whatever the umask; an existing parent keeps its mode */
static void test_modes(void **state) {
    (void)state;
    child_options_reset();
    /* 0277 leaves mkdir(0700) a 0500 folder, so it shows the chmod of created folders; POCL cannot work under
     * that umask without root (its own cache files become read-only), so it is root's case only */
    const int masks[] = {0, 022, 077, 0277};
    size_t n_masks = geteuid() == 0 ? 4 : 3;
    if (n_masks < 4)
        fprintf(stderr, "modes: umask 0277 needs root (POCL's own cache): SKIPPED\n");
    for (size_t m = 0; m < n_masks; ++m) {
        char parent[4200], mid[4300], dir[4400];
        snprintf(parent, sizeof parent, "%s/umask-%03o", base_dir, masks[m]);
        TU_TRUE(mkdir(parent, 0700) == 0 && chmod(parent, 0755) == 0);
        snprintf(mid, sizeof mid, "%s/a", parent);
        snprintf(dir, sizeof dir, "%s/b", mid);
        child_umask = masks[m];
        size_t n;
        unsigned char *r = run_child(dir, "1", "umask", &n, NULL);
        child_umask = -1;
        expect_reference(r, n, "umask run");
        free(r);
        TU_TRUE(strcmp(last_status, "on") == 0);
        struct stat st;
        TU_TRUE(lstat(parent, &st) == 0 && (st.st_mode & 07777) == 0755);
        TU_TRUE(lstat(mid, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
        TU_TRUE(lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
        listing l;
        list_dir(dir, &l);
        TU_TRUE(l.n >= 1 && l.others == 0);
        for (int i = 0; i < l.n; ++i)
            if ((l.st[i].st_mode & 07777) != 0600)
                tu_fail_at(__FILE__, __LINE__, "umask %03o: %s/%s has mode %04o, not 0600", masks[m], dir, l.name[i],
                           (unsigned)(l.st[i].st_mode & 07777));
    }
    /* an existing private folder is used as it is (0500: ours, nobody else can write it) and not chmod-ed */
    char ro[4200];
    fresh_dir(ro, sizeof ro, "existing-0500");
    TU_TRUE(chmod(ro, 0500) == 0);
    run_expect(ro, "on", NULL, "existing 0500 folder");
    struct stat st;
    TU_TRUE(lstat(ro, &st) == 0 && (st.st_mode & 07777) == 0500);
    chmod(ro, 0700);
}

#if defined(__linux__)
/* main() moves this process into a mount namespace of its own before any thread exists (unshare refuses a
 * multithreaded process), where the disk-full case mounts tiny tmpfs folders that nobody else sees */
static int private_mounts, private_mounts_errno;
static void enter_private_mounts(void) {
    if (unshare(CLONE_NEWNS) == 0 && mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
        private_mounts = 1;
    else
        private_mounts_errno = errno;
}
#endif

/* a full disk: the writes fail part-way, the runs still succeed, no temporary file is left behind. Simulated with
 * tiny tmpfs mounts in a private mount namespace of this test process (root, Linux); skipped elsewhere. */
static void test_disk_full(void **state) {
    (void)state;
    child_options_reset();
#if defined(__linux__)
    load_genuine();
    size_t smallest = (size_t)-1, largest = 0;
    for (int i = 0; i < n_genuine; ++i) {
        smallest = genuine[i].size < smallest ? genuine[i].size : smallest;
        largest = genuine[i].size > largest ? genuine[i].size : largest;
    }
    if (!private_mounts) {
        fprintf(stderr, "disk full: no private mount namespace here (%s; needs root): SKIPPED\n",
                strerror(private_mounts_errno));
        return;
    }
    /* below the smallest file (whole pages, at most 64 KiB; binaries differ by device: POCL's are hundreds of KiB,
     * Oclgrind's bitcode a few): no file fits; largest + smallest / 2: at least one file cannot be written */
    size_t none_fit = (smallest - 1) / 4096 * 4096;
    size_t sizes[2] = {none_fit < 64 * 1024 ? none_fit : 64 * 1024, (largest + smallest / 2 + 4095) / 4096 * 4096};
    for (int k = 0; k < 2; ++k) {
        if (sizes[k] < 4096) {
            fprintf(stderr, "disk full: the smallest kernel file (%zu bytes) fits a page: no-file-fits case skipped\n",
                    smallest);
            continue;
        }
        char dir[4200], opts[128];
        snprintf(dir, sizeof dir, "%s/tiny-%d", base_dir, k);
        TU_TRUE(mkdir(dir, 0700) == 0);
        snprintf(opts, sizeof opts, "size=%zu,mode=0700", sizes[k]);
        if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) {
            fprintf(stderr, "disk full: cannot mount a tmpfs here (%s): SKIPPED\n", strerror(errno));
            return;
        }
        size_t n;
        unsigned char *r = run_child(dir, "1", "full", &n, NULL);
        expect_reference(r, n, "run on a full disk");
        free(r);
        TU_TRUE(strcmp(last_status, "on") == 0);
        listing l;
        list_dir(dir, &l);
        fprintf(stderr, "disk full: tmpfs of %zu bytes: %d of %d files written, %d other entries\n", sizes[k], l.n,
                n_genuine, l.others);
        if (l.others != 0)
            tu_fail_at(__FILE__, __LINE__, "a failed write left %d temporary file(s) in %s", l.others, dir);
        TU_TRUE(l.n < n_genuine && (k == 1 || l.n == 0));
        for (int i = 0; i < l.n; ++i)
            TU_TRUE(file_valid(dir, l.name[i], 0));
        TU_TRUE(umount2(dir, MNT_DETACH) == 0);
    }
#else
    fprintf(stderr, "disk full: needs Linux mount namespaces: SKIPPED\n");
#endif
}

/* CLNORM_KERNEL_DIR: the same rule for the folder and its files; a refusal is a BUILD error naming the reason, and
 * the call writes nothing */
static clnorm_status kernel_dir_call(const char *dir, char *msg, size_t n) {
    setenv("CLNORM_KERNEL_DIR", dir, 1);
    setenv("CLNORM_CACHE", "0", 1);
    clnorm_context *ctx = NULL;
    TU_OK(tu_context_create(&ctx));
    const size_t shape[3] = {2, 3, 5};
    float host[30], back[30];
    for (int i = 0; i < 30; ++i)
        host[i] = (float)(i % 7) - 3.0f;
    clnorm_tensor x = {0}, y = {0};
    TU_OK(clnorm_tensor_create(ctx, 3, shape, CLNORM_F32, host, &x));
    TU_OK(clnorm_tensor_create(ctx, 3, shape, CLNORM_F32, host, &y)); /* y starts as a copy of x */
    clnorm_status st =
        clnorm_bn_forward_training(ctx, CLNORM_BN_SPATIAL, &x, &y, NULL, NULL, 0.1, 1e-5, NULL, NULL, NULL, NULL);
    snprintf(msg, n, "%s", clnorm_last_error());
    TU_OK(clnorm_tensor_read(ctx, &y, back));
    if (st != CLNORM_SUCCESS && memcmp(host, back, sizeof host) != 0)
        tu_fail_at(__FILE__, __LINE__, "CLNORM_KERNEL_DIR=%s: a refused call wrote y", dir);
    if (st == CLNORM_SUCCESS) /* y = (x - mean) / sqrt(var + eps) per map over (batch, spatial), in double */
        for (int c = 0; c < 3; ++c) {
            double mean = 0, var = 0;
            for (int b = 0; b < 2; ++b)
                for (int k = 0; k < 5; ++k)
                    mean += host[(b * 3 + c) * 5 + k] / 10.0;
            for (int b = 0; b < 2; ++b)
                for (int k = 0; k < 5; ++k)
                    var += (host[(b * 3 + c) * 5 + k] - mean) * (host[(b * 3 + c) * 5 + k] - mean) / 10.0;
            for (int b = 0; b < 2; ++b)
                for (int k = 0; k < 5; ++k) {
                    int i = (b * 3 + c) * 5 + k;
                    double want = (host[i] - mean) / sqrt(var + 1e-5);
                    if (fabs(back[i] - want) > 1e-5 + 1e-5 * fabs(want))
                        tu_fail_at(__FILE__, __LINE__, "CLNORM_KERNEL_DIR=%s: y[%d] = %.9g, expected %.9g", dir, i,
                                   (double)back[i], want);
                }
        }
    clnorm_tensor_release(&x);
    clnorm_tensor_release(&y);
    clnorm_context_destroy(ctx);
    unsetenv("CLNORM_KERNEL_DIR");
    unsetenv("CLNORM_CACHE");
    return st;
}

static void expect_kernel_dir_refused(const char *dir, const char *why) {
    char msg[8192];
    clnorm_status st = kernel_dir_call(dir, msg, sizeof msg);
    if (st != CLNORM_ERROR_BUILD || !strstr(msg, "CLNORM_KERNEL_DIR") || !strstr(msg, why))
        tu_fail_at(__FILE__, __LINE__, "CLNORM_KERNEL_DIR=%s: %s \"%s\", expected a build error saying \"%s\"", dir,
                   clnorm_status_string(st), msg, why);
    fprintf(stderr, "kernel dir: %s\n", msg);
}

static void copy_kernels(const char *dir) {
    DIR *src = opendir(CLNORM_TEST_SOURCE_DIR "/cl");
    TU_TRUE(src != NULL);
    struct dirent *e;
    while ((e = readdir(src)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".cl") != 0)
            continue;
        char from[4400], to[4400];
        snprintf(from, sizeof from, "%s/cl/%s", CLNORM_TEST_SOURCE_DIR, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
        size_t n = 0;
        unsigned char *b = slurp(from, &n);
        TU_TRUE(b != NULL);
        spit(to, b, n);
        TU_TRUE(chmod(to, 0644) == 0);
        free(b);
    }
    closedir(src);
}

static void test_kernel_dir(void **state) {
    (void)state;
    child_options_reset();
    char dir[4200], p[4400], elsewhere[4200];
    fresh_dir(dir, sizeof dir, "kernels");
    copy_kernels(dir);
    /* a private copy works (against the double reference) */
    char msg[8192];
    clnorm_status st = kernel_dir_call(dir, msg, sizeof msg);
    if (st != CLNORM_SUCCESS)
        tu_fail_at(__FILE__, __LINE__, "CLNORM_KERNEL_DIR=%s (a private copy of cl/): %s: %s", dir,
                   clnorm_status_string(st), msg);
    TU_TRUE(chmod(dir, 0770) == 0);
    expect_kernel_dir_refused(dir, "writable by group (mode 0770)");
    TU_TRUE(chmod(dir, 0757) == 0);
    expect_kernel_dir_refused(dir, "writable by others (mode 0757)");
    TU_TRUE(chmod(dir, 0755) == 0);
    if (can_chown()) {
        TU_TRUE(chown(dir, NOBODY, NOBODY) == 0);
        expect_kernel_dir_refused(dir, "owned by uid 65534");
        TU_TRUE(chown(dir, geteuid(), getegid()) == 0);
    }
    snprintf(p, sizeof p, "%s/kernels-link", base_dir);
    TU_TRUE(symlink(dir, p) == 0);
    expect_kernel_dir_refused(p, "is a symbolic link");
    /* files: writable by others, another user's, a symbolic link, a FIFO */
    snprintf(p, sizeof p, "%s/common.cl", dir);
    TU_TRUE(chmod(p, 0666) == 0);
    expect_kernel_dir_refused(dir, "cannot read common.cl: it is writable by group and others (mode 0666)");
    TU_TRUE(chmod(p, 0644) == 0);
    if (can_chown()) {
        TU_TRUE(chown(p, NOBODY, NOBODY) == 0);
        expect_kernel_dir_refused(dir, "cannot read common.cl: it is owned by uid 65534");
        TU_TRUE(chown(p, geteuid(), getegid()) == 0);
    }
    fresh_dir(elsewhere, sizeof elsewhere, "kernels-elsewhere");
    copy_kernels(elsewhere);
    char t[4400];
    snprintf(t, sizeof t, "%s/common.cl", elsewhere);
    TU_TRUE(unlink(p) == 0 && symlink(t, p) == 0);
    expect_kernel_dir_refused(dir, "cannot read common.cl: it is a symbolic link");
    TU_TRUE(unlink(p) == 0 && mkfifo(p, 0600) == 0);
    expect_kernel_dir_refused(dir, "cannot read common.cl: it is not a regular file");
}

/* a context made in this process with the environment given (NULL: unset), and one on its queue: both must report
 * want_dir (NULL: off) and a status starting with want_status */
static void expect_query(const char *cache, const char *dir, const char *xdg, const char *home, const char *want_dir,
                         const char *want_status) {
    const char *names[4] = {"CLNORM_CACHE", "CLNORM_CACHE_DIR", "XDG_CACHE_HOME", "HOME"};
    const char *values[4] = {cache, dir, xdg, home};
    char *saved[4];
    for (int i = 0; i < 4; ++i) {
        saved[i] = getenv(names[i]) ? strdup(getenv(names[i])) : NULL;
        if (values[i])
            setenv(names[i], values[i], 1);
        else
            unsetenv(names[i]);
    }
    clnorm_context *ctx = NULL, *qctx = NULL;
    TU_OK(tu_context_create(&ctx));
    TU_OK(clnorm_context_create_from_queue(clnorm_context_queue(ctx), &qctx));
    for (int k = 0; k < 2; ++k) {
        const clnorm_context *c = k ? qctx : ctx;
        const char *got = clnorm_context_cache_dir(c), *status = clnorm_context_cache_status(c);
        if ((want_dir == NULL) != (got == NULL) || (got && strcmp(got, want_dir) != 0) ||
            strncmp(status, want_status, strlen(want_status)) != 0)
            tu_fail_at(__FILE__, __LINE__, "%s: cache dir \"%s\", status \"%s\"; expected \"%s\", \"%s...\"",
                       k ? "clnorm_context_create_from_queue" : "clnorm_context_create", got ? got : "(null)", status,
                       want_dir ? want_dir : "(null)", want_status);
    }
    clnorm_context_destroy(qctx);
    clnorm_context_destroy(ctx);
    for (int i = 0; i < 4; ++i) {
        if (saved[i])
            setenv(names[i], saved[i], 1);
        else
            unsetenv(names[i]);
        free(saved[i]);
    }
    if (want_dir) { /* created, private */
        struct stat st;
        TU_TRUE(lstat(want_dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
    }
}

/* the queries: where the folder comes from, for both ways of making a context; NULL */
static void test_queries(void **state) {
    (void)state;
    char dir[4200], xdg[4200], xdg_dir[4300], home[4200], home_dir[4300];
    snprintf(dir, sizeof dir, "%s/query-dir", base_dir);
    snprintf(xdg, sizeof xdg, "%s/query-xdg", base_dir);
    snprintf(xdg_dir, sizeof xdg_dir, "%s/clnorm", xdg);
    snprintf(home, sizeof home, "%s/query-home", base_dir);
    snprintf(home_dir, sizeof home_dir, "%s/.cache/clnorm", home);
    expect_query(NULL, dir, xdg, home, dir, "on");
    expect_query("1", NULL, xdg, home, xdg_dir, "on");
    expect_query(NULL, "", NULL, home, home_dir, "on");
    expect_query("0", dir, xdg, home, NULL, "off: CLNORM_CACHE=0");
    expect_query(NULL, NULL, NULL, NULL, NULL, "off: no folder");
    struct stat st;
    snprintf(home_dir, sizeof home_dir, "%s/.cache", home);
    TU_TRUE(lstat(home_dir, &st) == 0 && (st.st_mode & 07777) == 0700); /* made by clnorm: 0700 too */
    TU_TRUE(clnorm_context_cache_dir(NULL) == NULL);
    TU_TRUE(clnorm_context_cache_status(NULL) == NULL);
}

static int group_setup(void **state) {
    int rc = tu_group_setup(state); /* skips (77) without a device */
    if (rc != 0)
        return rc;
    tu_group_teardown(state); /* the parent needs no context of its own */
    const char *tmp = getenv("TMPDIR");
    snprintf(base_dir, sizeof base_dir, "%s/clnorm-test-cache-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base_dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", base_dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    remove_tree(base_dir);
    free(ref_results);
    ref_results = NULL;
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2]);
    ssize_t len = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (len > 0)
        self_path[len] = '\0';
    else
        snprintf(self_path, sizeof self_path, "%s", argv[0]);
    tu_main_init();
#if defined(__linux__)
    enter_private_mounts();
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_truncated),       cmocka_unit_test(test_unwritable),
        cmocka_unit_test(test_disabled),        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_poison_detected), cmocka_unit_test(test_untrusted_folder),
        cmocka_unit_test(test_planted_files),   cmocka_unit_test(test_modes),
        cmocka_unit_test(test_disk_full),       cmocka_unit_test(test_kernel_dir),
        cmocka_unit_test(test_queries),
    };
    return cmocka_run_group_tests_name("cache", tests, group_setup, group_teardown);
}
