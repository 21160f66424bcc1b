/* On-disk cache of compiled program binaries (CL_PROGRAM_BINARIES -> clCreateProgramWithBinary).
 *
 * Directory: $CLNORM_CACHE_DIR, else $XDG_CACHE_HOME/clnorm, else $HOME/.cache/clnorm; CLNORM_CACHE=0 disables it.
 * A file is named by a hash of its key (library version, kernel source hash, build options, device name, vendor id,
 * driver version, platform version) and holds:
 *   magic "CLNORMB1" | u32 key length | u32 reserved | u64 binary size | u64 checksum | key | binary
 * with the checksum an FNV-1a 64 over key and binary. Files are written under a unique temporary name and renamed,
 * so racing processes both succeed. A file that is short, corrupt or for another key is deleted and the program
 * rebuilt from source; any failure of the cache itself (unwritable directory...) just means no disk cache. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAGIC "CLNORMB1"
#define HEADER_SIZE 32

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

/* the cache directory (created, 0700, parents too), or 0 when disabled or not usable */
static int cache_dir(char *dir, size_t n) {
    const char *off = getenv("CLNORM_CACHE");
    if (off && strcmp(off, "0") == 0)
        return 0;
    const char *d = getenv("CLNORM_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int len;
    if (d && *d)
        len = snprintf(dir, n, "%s", d);
    else if (xdg && *xdg)
        len = snprintf(dir, n, "%s/clnorm", xdg);
    else if (home && *home)
        len = snprintf(dir, n, "%s/.cache/clnorm", home);
    else
        return 0;
    if (len <= 0 || (size_t)len >= n)
        return 0;
    for (char *p = dir + 1; *p; ++p) { /* mkdir -p */
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            *p = '/';
            return 0;
        }
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return 0;
    return 1;
}

static int file_path(const char *key, char *path, size_t n) {
    char dir[4096];
    if (!cache_dir(dir, sizeof dir))
        return 0;
    uint64_t h1 = fnv1a(0xcbf29ce484222325ull, key, strlen(key));
    uint64_t h2 = fnv1a(0x84222325cbf29ce4ull, key, strlen(key));
    int len = snprintf(path, n, "%s/%016llx%016llx.clbin", dir, (unsigned long long)h1, (unsigned long long)h2);
    return len > 0 && (size_t)len < n;
}

/* whole file into memory; NULL if absent or unreadable */
static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && (buf = malloc((size_t)st.st_size)) != NULL) {
        *size = fread(buf, 1, (size_t)st.st_size, f);
        if (*size != (size_t)st.st_size) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

int cn_disk_cache_load(clnorm_context *ctx, const char *key, const char *options, cl_program *out) {
    char path[4352];
    size_t size = 0;
    if (!file_path(key, path, sizeof path))
        return 0;
    unsigned char *buf = slurp(path, &size);
    if (!buf)
        return 0;
    size_t klen = strlen(key);
    int ok = size >= HEADER_SIZE && memcmp(buf, MAGIC, 8) == 0 && get_u32(buf + 8) == klen;
    uint64_t blen = ok ? get_u64(buf + 16) : 0;
    ok = ok && blen > 0 && blen == size - HEADER_SIZE - klen && size > HEADER_SIZE + klen;
    ok = ok && memcmp(buf + HEADER_SIZE, key, klen) == 0;
    ok = ok && fnv1a(0xcbf29ce484222325ull, buf + HEADER_SIZE, size - HEADER_SIZE) == get_u64(buf + 24);
    cl_program prog = NULL;
    if (ok) {
        const unsigned char *bin = buf + HEADER_SIZE + klen;
        size_t bsize = (size_t)blen;
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
        remove(path); /* corrupt, truncated or stale: rebuild from source and rewrite it */
        return 0;
    }
    *out = prog;
    return 1;
}

void cn_disk_cache_store(clnorm_context *ctx, const char *key, cl_program prog) {
    char path[4352], tmp[4480];
    size_t bsize = 0;
    unsigned char *bin = NULL, *header = NULL;
    if (!file_path(key, path, sizeof path))
        return;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof bsize, &bsize, NULL) != CL_SUCCESS || bsize == 0)
        return;
    size_t klen = strlen(key);
    if (!(bin = malloc(bsize)) || !(header = malloc(HEADER_SIZE + klen)))
        goto done;
    unsigned char *bins[1] = {bin};
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) != CL_SUCCESS)
        goto done;
    memcpy(header, MAGIC, 8);
    put_u32(header + 8, (uint32_t)klen);
    put_u32(header + 12, 0);
    put_u64(header + 16, bsize);
    memcpy(header + HEADER_SIZE, key, klen);
    uint64_t sum = fnv1a(0xcbf29ce484222325ull, header + HEADER_SIZE, klen);
    put_u64(header + 24, fnv1a(sum, bin, bsize));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%p", path, (long)getpid(), (void *)ctx);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        goto done;
    int ok = fwrite(header, 1, HEADER_SIZE + klen, f) == HEADER_SIZE + klen && fwrite(bin, 1, bsize, f) == bsize;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0)
        remove(tmp);
done:
    free(bin);
    free(header);
}
