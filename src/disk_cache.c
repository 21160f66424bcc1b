/* On-disk cache of compiled program binaries (CL_PROGRAM_BINARIES -> clCreateProgramWithBinary).
 *
 * A cached binary becomes code in this process (POCL) or on the device, so the cache trusts only what the effective
 * user owns (the rules of ssh's StrictModes, pip's and ccache's cache checks):
 * - Folder: $CLNORM_CACHE_DIR, else $XDG_CACHE_HOME/clnorm, else $HOME/.cache/clnorm, chosen when a context is
 *   created; CLNORM_CACHE=0 disables it. Missing folders are created with mode 0700 (whatever the umask; existing
 *   parents are never chmod-ed). The folder is used only if it is a real directory (not a symbolic link), owned by
 *   the effective user and not writable by group or others; it is then opened (O_NOFOLLOW, checked again with fstat
 *   on the descriptor) and every file operation is relative to that descriptor. Otherwise the disk cache is off for
 *   the context and ctx->cache_status says why (clnorm_context_cache_status()).
 * - A file is named by a hash of its key (library version, kernel source hash, build options, device name, vendor
 *   id, driver version, platform version) and holds:
 *     magic "CLNORMB1" | u32 key length | u32 reserved (0) | u64 binary size | u64 checksum | key | binary
 *   with the checksum an FNV-1a 64 over key and binary (it guards against corruption, not against an attacker: the
 *   ownership rules do that). It is loaded only if open(O_NOFOLLOW | O_NONBLOCK) succeeds and fstat on the
 *   descriptor shows a regular file owned by the effective user, not writable by group or others, with one link;
 *   anything else (a symbolic link, a FIFO, another user's file, a hard link) is ignored and left alone: neither
 *   loaded, nor deleted, nor replaced. A trusted file that is short, corrupt or for another key is deleted and the
 *   program rebuilt from source.
 * - Files are written to an unpredictable temporary name, open(O_CREAT | O_EXCL | O_NOFOLLOW, 0600) and fchmod 0600,
 *   then renamed over the final name, so racing processes both succeed; any failure removes the temporary.
 * Any failure of the cache itself just means no disk cache. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "CLNORMB1"
#define HEADER_SIZE CN_CACHE_HEADER_SIZE
#define MAX_FILE_SIZE ((off_t)1 << 30) /* larger files are not read: not ours, or corrupt */
#define FNV_BASIS 0xcbf29ce484222325ull

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; ++i)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; ++i)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; ++i)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}

/* ---- the file format (pure: no I/O, used by the fuzzer) -------------------------------------------------- */

int cn_disk_cache_parse(const unsigned char *buf, size_t size, const char *key, const unsigned char **bin,
                        size_t *bin_size) {
    size_t klen = strlen(key);
    if (!buf || size < HEADER_SIZE || memcmp(buf, MAGIC, 8) != 0)
        return 0;
    if ((uint64_t)get_u32(buf + 8) != (uint64_t)klen || get_u32(buf + 12) != 0)
        return 0;
    if (size - HEADER_SIZE <= klen) /* at least one byte of binary */
        return 0;
    size_t rest = size - HEADER_SIZE - klen;
    if (get_u64(buf + 16) != (uint64_t)rest)
        return 0;
    if (memcmp(buf + HEADER_SIZE, key, klen) != 0)
        return 0;
    if (fnv1a(FNV_BASIS, buf + HEADER_SIZE, size - HEADER_SIZE) != get_u64(buf + 24))
        return 0;
    *bin = buf + HEADER_SIZE + klen;
    *bin_size = rest;
    return 1;
}

size_t cn_disk_cache_header(unsigned char *out, const char *key, const unsigned char *bin, size_t bin_size) {
    size_t klen = strlen(key);
    memcpy(out, MAGIC, 8);
    put_u32(out + 8, (uint32_t)klen);
    put_u32(out + 12, 0);
    put_u64(out + 16, (uint64_t)bin_size);
    memcpy(out + HEADER_SIZE, key, klen);
    put_u64(out + 24, fnv1a(fnv1a(FNV_BASIS, key, klen), bin, bin_size));
    return HEADER_SIZE + klen;
}

/* ---- ownership rules --------------------------------------------------------------------------------------- */

/* 1 if st is owned by the effective user and not writable by group or others; else 0 and the reason in why */
static int owned_private(const struct stat *st, const char *what, const char *path, char *why, size_t n) {
    uid_t me = geteuid();
    if (st->st_uid != me) {
        snprintf(why, n, "%s%s%s is owned by uid %lu, not by the effective user (uid %lu)", what, *path ? " " : "",
                 path, (unsigned long)st->st_uid, (unsigned long)me);
        return 0;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(why, n, "%s%s%s is writable by %s (mode %04o)", what, *path ? " " : "", path,
                 (st->st_mode & S_IWGRP) && (st->st_mode & S_IWOTH) ? "group and others"
                 : (st->st_mode & S_IWGRP)                          ? "group"
                                                                    : "others",
                 (unsigned)(st->st_mode & 07777));
        return 0;
    }
    return 1;
}

/* a cache file we may load, replace or delete: a regular file of ours, not writable by others, one link */
static int trusted_file(const struct stat *st) {
    char why[8];
    return S_ISREG(st->st_mode) && st->st_nlink == 1 && owned_private(st, "", "", why, sizeof why);
}

/* a folder clnorm has just created: 0700 whatever the umask (only if it is still ours and a real folder) */
static void fix_created_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid())
            fchmod(fd, 0700);
        close(fd);
    } else if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid()) {
        chmod(path, 0700); /* the umask left us no read permission on it */
    }
}

int cn_open_private_dir(const char *path, int create, const char *what, char *why, size_t n) {
    char p[4096];
    int len = snprintf(p, sizeof p, "%s", path);
    if (len <= 0 || (size_t)len >= sizeof p) {
        snprintf(why, n, "%s path is empty or too long", what);
        return -1;
    }
    while (len > 1 && p[len - 1] == '/') /* "dir/" names dir itself (O_NOFOLLOW must see the last component) */
        p[--len] = '\0';
    if (create) { /* mkdir -p: missing folders are made 0700; existing ones are left as they are */
        for (char *c = p + 1;; ++c) {
            if (*c != '/' && *c != '\0')
                continue;
            char saved = *c;
            *c = '\0';
            struct stat st;
            if (lstat(p, &st) == 0) {
                /* exists: left as it is (and checked below if it is the folder itself) */
            } else if (mkdir(p, 0700) == 0) {
                fix_created_dir(p);
            } else if (errno != EEXIST) {
                snprintf(why, n, "%s %s cannot be created: %s", what, p, strerror(errno));
                *c = saved;
                return -1;
            }
            *c = saved;
            if (saved == '\0')
                break;
        }
    }
    struct stat st, fst;
    if (lstat(p, &st) != 0) {
        snprintf(why, n, "%s %s: %s", what, p, strerror(errno));
        return -1;
    }
    if (S_ISLNK(st.st_mode)) {
        snprintf(why, n, "%s %s is a symbolic link (only a real folder is trusted)", what, p);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, n, "%s %s is not a folder", what, p);
        return -1;
    }
    if (!owned_private(&st, what, p, why, n))
        return -1;
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, n, "%s %s cannot be opened: %s", what, p, strerror(errno));
        return -1;
    }
    /* the same folder, and still ours: nothing was swapped in between lstat and open */
    if (fstat(fd, &fst) != 0 || fst.st_dev != st.st_dev || fst.st_ino != st.st_ino || !S_ISDIR(fst.st_mode)) {
        snprintf(why, n, "%s %s changed while it was being opened", what, p);
        close(fd);
        return -1;
    }
    if (!owned_private(&fst, what, p, why, n)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* the whole of fd (a regular file of st.st_size bytes) into a malloc'ed buffer with a '\0' after it; NULL on error */
static unsigned char *read_all(int fd, size_t size) {
    unsigned char *buf = malloc(size + 1);
    size_t got = 0;
    while (buf && got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return NULL;
        }
        got += (size_t)r;
    }
    if (buf)
        buf[size] = '\0';
    return buf;
}

char *cn_read_private_file(int dirfd, const char *name, size_t *size, char *why, size_t n) {
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, n, "%s", errno == ELOOP ? "it is a symbolic link" : strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        snprintf(why, n, "fstat: %s", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(why, n, "it is not a regular file");
    } else if (st.st_size > MAX_FILE_SIZE) {
        snprintf(why, n, "it is larger than %lld bytes", (long long)MAX_FILE_SIZE);
    } else if (owned_private(&st, "it", "", why, n)) {
        errno = 0;
        buf = (char *)read_all(fd, (size_t)st.st_size);
        if (buf)
            *size = (size_t)st.st_size;
        else
            snprintf(why, n, "read: %s", errno ? strerror(errno) : "short read");
    }
    close(fd);
    return buf;
}

/* ---- the context's cache folder ---------------------------------------------------------------------------- */

void cn_disk_cache_open(clnorm_context *ctx) {
    ctx->cache_on = 0;
    ctx->cache_fd = -1;
    ctx->cache_dir[0] = '\0';
    const char *off = getenv("CLNORM_CACHE");
    if (off && strcmp(off, "0") == 0) {
        snprintf(ctx->cache_status, sizeof ctx->cache_status, "off: CLNORM_CACHE=0");
        return;
    }
    const char *d = getenv("CLNORM_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[sizeof ctx->cache_dir];
    int len;
    if (d && *d)
        len = snprintf(dir, sizeof dir, "%s", d);
    else if (xdg && *xdg)
        len = snprintf(dir, sizeof dir, "%s/clnorm", xdg);
    else if (home && *home)
        len = snprintf(dir, sizeof dir, "%s/.cache/clnorm", home);
    else {
        snprintf(ctx->cache_status, sizeof ctx->cache_status,
                 "off: no folder (CLNORM_CACHE_DIR, XDG_CACHE_HOME and HOME are all unset)");
        return;
    }
    if (len <= 0 || (size_t)len >= sizeof dir) {
        snprintf(ctx->cache_status, sizeof ctx->cache_status, "off: the cache folder path is too long");
        return;
    }
    char why[sizeof ctx->cache_status - 8];
    int fd = cn_open_private_dir(dir, 1, "folder", why, sizeof why);
    if (fd < 0) {
        snprintf(ctx->cache_status, sizeof ctx->cache_status, "off: %s", why);
        return;
    }
    ctx->cache_fd = fd;
    ctx->cache_on = 1;
    snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%s", dir);
    snprintf(ctx->cache_status, sizeof ctx->cache_status, "on");
}

void cn_disk_cache_close(clnorm_context *ctx) {
    if (ctx->cache_on)
        close(ctx->cache_fd);
    ctx->cache_on = 0;
    ctx->cache_fd = -1;
}

const char *clnorm_context_cache_dir(const clnorm_context *ctx) {
    return ctx && ctx->cache_on ? ctx->cache_dir : NULL;
}

const char *clnorm_context_cache_status(const clnorm_context *ctx) {
    if (!ctx)
        return NULL;
    return ctx->cache_status[0] ? ctx->cache_status : "off: not set up";
}

/* ---- load and store ---------------------------------------------------------------------------------------- */

static void file_name(const char *key, char name[48]) {
    uint64_t h1 = fnv1a(FNV_BASIS, key, strlen(key));
    uint64_t h2 = fnv1a(0x84222325cbf29ce4ull, key, strlen(key));
    snprintf(name, 48, "%016llx%016llx.clbin", (unsigned long long)h1, (unsigned long long)h2);
}

int cn_disk_cache_load(clnorm_context *ctx, const char *key, const char *options, cl_program *out) {
    if (!ctx->cache_on)
        return 0;
    char name[48];
    file_name(key, name);
    /* O_NONBLOCK: a FIFO planted under the name must not block the open */
    int fd = openat(ctx->cache_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* absent, a symbolic link (ELOOP), unreadable: ignored */
    struct stat st;
    if (fstat(fd, &st) != 0 || !trusted_file(&st)) {
        close(fd); /* not a file of ours: ignored, and left alone */
        return 0;
    }
    unsigned char *buf = NULL;
    size_t size = (size_t)st.st_size;
    if (st.st_size > 0 && st.st_size <= MAX_FILE_SIZE)
        buf = read_all(fd, size);
    close(fd);
    const unsigned char *bin = NULL;
    size_t bsize = 0;
    int ok = buf && cn_disk_cache_parse(buf, size, key, &bin, &bsize);
    cl_program prog = NULL;
    if (ok) {
        cl_int status = CL_SUCCESS, err;
        prog = clCreateProgramWithBinary(ctx->context, 1, &ctx->device, &bsize, &bin, &status, &err);
        ok = err == CL_SUCCESS && status == CL_SUCCESS;
        if (ok)
            ok = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL) == CL_SUCCESS;
        if (!ok && prog) {
            clReleaseProgram(prog);
            prog = NULL;
        }
    }
    free(buf);
    if (!ok) {
        /* our own corrupt, truncated or stale file in our own folder: delete it (if it is still the same file)
         * so that the program is rebuilt from source and written again */
        struct stat now;
        if (fstatat(ctx->cache_fd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == st.st_dev &&
            now.st_ino == st.st_ino)
            unlinkat(ctx->cache_fd, name, 0);
        return 0;
    }
    *out = prog;
    return 1;
}

/* 64 unpredictable bits for a temporary name (O_EXCL keeps it safe even if /dev/urandom is missing) */
static uint64_t random_u64(void) {
    static unsigned counter;
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != (ssize_t)sizeof v)
            v = 0;
        close(fd);
    }
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t mix[4] = {(uint64_t)t.tv_sec, (uint64_t)t.tv_nsec, (uint64_t)getpid(), (uint64_t)++counter};
    return v ^ fnv1a(FNV_BASIS, mix, sizeof mix);
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 0;
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

void cn_disk_cache_store(clnorm_context *ctx, const char *key, cl_program prog) {
    if (!ctx->cache_on)
        return;
    char name[48], tmp[96];
    file_name(key, name);
    struct stat st;
    if (fstatat(ctx->cache_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !trusted_file(&st))
        return; /* something we do not own or trust holds the name: leave it alone */
    size_t bsize = 0;
    unsigned char *bin = NULL, *header = NULL;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof bsize, &bsize, NULL) != CL_SUCCESS || bsize == 0)
        return;
    size_t klen = strlen(key);
    if (!(bin = malloc(bsize)) || !(header = malloc(HEADER_SIZE + klen)))
        goto done;
    unsigned char *bins[1] = {bin};
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) != CL_SUCCESS)
        goto done;
    size_t hsize = cn_disk_cache_header(header, key, bin, bsize);
    int fd = -1;
    for (int attempt = 0; attempt < 4 && fd < 0; ++attempt) {
        snprintf(tmp, sizeof tmp, "%s.tmp-%016llx", name, (unsigned long long)random_u64());
        fd = openat(ctx->cache_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0)
        goto done;
    int ok = fchmod(fd, 0600) == 0 && write_all(fd, header, hsize) && write_all(fd, bin, bsize);
    ok = close(fd) == 0 && ok;
    if (!ok || renameat(ctx->cache_fd, tmp, ctx->cache_fd, name) != 0)
        unlinkat(ctx->cache_fd, tmp, 0);
done:
    free(bin);
    free(header);
}
