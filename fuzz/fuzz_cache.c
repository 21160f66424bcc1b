/*
 * libFuzzer driver of the on-disk kernel cache's file parser (src/disk_cache.c: cn_disk_cache_parse and
 * cn_disk_cache_header; internal API, no device needed). A cache file is
 *   "CLNORMB1" | u32 key length | u32 reserved 0 | u64 binary size | u64 FNV-1a(key, binary) | key | binary
 * and what the parser accepts is handed to clCreateProgramWithBinary, so it must never read outside the bytes it
 * is given, and accept nothing but a well-formed file for the key it is asked about.
 *
 * Every input is used twice:
 *  1. as the bytes of a file, parsed for a few fixed keys (empty, short, a realistic one) and for the key it carries
 *     itself (the key-length field and the bytes after the header): any acceptance must describe the input exactly
 *     (binary = the bytes after header and key, size field = their count, at least one byte);
 *  2. as a key and a binary (first byte: key length): the file made of cn_disk_cache_header + binary must parse to
 *     that binary; every truncation, one appended byte, a change of any single byte (header field, key, binary or
 *     checksum) and the file asked for with another key must all be refused.
 * Any violation prints the input's size and aborts. ASan / UBSan (CLNORM_BUILD_FUZZ) catch out-of-bounds reads.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define H CN_CACHE_HEADER_SIZE

static void fail(const char *what, size_t size) {
    fprintf(stderr, "fuzz_cache: %s (input of %zu bytes)\n", what, size);
    abort();
}

/* parse a private copy of exactly n bytes (so that ASan sees any read past them) */
static int parse_copy(const unsigned char *buf, size_t n, const char *key, size_t *bin_off, size_t *bin_size) {
    unsigned char *copy = malloc(n ? n : 1);
    if (!copy)
        abort();
    memcpy(copy, buf, n);
    const unsigned char *bin = NULL;
    size_t bs = 0;
    int ok = cn_disk_cache_parse(copy, n, key, &bin, &bs);
    if (ok) {
        if (bin < copy || bin > copy + n || bs == 0 || bs > n || (size_t)(bin - copy) + bs != n)
            fail("accepted binary is not the tail of the file", n);
        *bin_off = (size_t)(bin - copy);
        *bin_size = bs;
    }
    free(copy);
    return ok;
}

/* as a file: acceptance must match the format exactly */
static void check_raw(const uint8_t *data, size_t size, const char *key) {
    size_t off = 0, bs = 0;
    if (!parse_copy(data, size, key, &off, &bs))
        return;
    size_t klen = strlen(key);
    if (size < H + klen + 1 || memcmp(data, "CLNORMB1", 8) != 0 || off != H + klen || memcmp(data + H, key, klen) != 0)
        fail("accepted a file that does not have the header and key asked for", size);
    uint64_t field = 0;
    for (int i = 7; i >= 0; --i)
        field = (field << 8) | data[16 + i];
    if (field != bs)
        fail("accepted a file whose size field does not match", size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char realistic[] =
        "clnorm 100 | -cl-std=CL1.2 -DDTYPE_F32 -DSTRATEGY_CPU -DWG=1 -DCLNORM_SOURCE_HASH=0x0123456789abcdef  | "
        "Portable Computing Language cpu | vendor 0x8086 | driver 3.1 | platform OpenCL 3.0 PoCL 3.1";
    static const char *const keys[] = {"", "k", realistic};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; ++k)
        check_raw(data, size, keys[k]);
    if (size >= H) { /* the key the input carries itself, if it is there and has no NUL */
        uint32_t klen =
            (uint32_t)data[8] | (uint32_t)data[9] << 8 | (uint32_t)data[10] << 16 | (uint32_t)data[11] << 24;
        if (klen <= size - H && klen < 4096 && !memchr(data + H, 0, klen)) {
            char key[4096];
            memcpy(key, data + H, klen);
            key[klen] = '\0';
            check_raw(data, size, key);
        }
    }

    /* as a key and a binary */
    if (size < 2)
        return 0;
    size_t klen = data[0] % size; /* < size: at least one byte of binary */
    if (klen > size - 2)
        klen = size - 2;
    char *key = malloc(klen + 1);
    if (!key)
        abort();
    for (size_t i = 0; i < klen; ++i)
        key[i] = data[1 + i] ? (char)data[1 + i] : 'x';
    key[klen] = '\0';
    const unsigned char *bin = data + 1 + klen;
    size_t bsize = size - 1 - klen, n = H + klen + bsize;
    unsigned char *file = malloc(n + 1);
    if (!file)
        abort();
    if (cn_disk_cache_header(file, key, bin, bsize) != H + klen)
        fail("cn_disk_cache_header returned a wrong size", size);
    memcpy(file + H + klen, bin, bsize);
    size_t off = 0, bs = 0;
    if (!parse_copy(file, n, key, &off, &bs) || off != H + klen || bs != bsize || memcmp(file + off, bin, bsize) != 0)
        fail("a file written by cn_disk_cache_header is not read back", size);
    /* truncations: every length through the header, the key and a few bytes of binary, then 64 spread over the
     * rest of the binary (where a cut can only be caught by the size field and the checksum) */
    size_t dense = H + klen + 8 < n ? H + klen + 8 : n;
    for (size_t len = 0; len < dense; ++len)
        if (parse_copy(file, len, key, &off, &bs))
            fail("a truncated file was accepted", size);
    for (size_t k = 1; k < 64 && dense < n; ++k) {
        size_t len = dense + (n - dense) * k / 64;
        if (len < n && parse_copy(file, len, key, &off, &bs))
            fail("a truncated file was accepted", size);
    }
    if (parse_copy(file, n - 1, key, &off, &bs))
        fail("a file one byte short was accepted", size);
    file[n] = data[size - 1];
    if (parse_copy(file, n + 1, key, &off, &bs))
        fail("a file with a byte appended was accepted", size);
    /* any single byte changed: header fields, key, binary, checksum */
    size_t positions[48], np = 0;
    for (size_t i = 0; i < H && i < n; ++i)
        positions[np++] = i;
    uint64_t r = 0x9e3779b97f4a7c15ull ^ size;
    while (np < sizeof positions / sizeof positions[0]) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        positions[np++] = H + (size_t)(r >> 33) % (n - H);
    }
    for (size_t i = 0; i < np; ++i) {
        unsigned char flip = (unsigned char)(data[i % size] | 1u);
        file[positions[i]] ^= flip;
        if (parse_copy(file, n, key, &off, &bs))
            fail("a file with one byte changed was accepted", size);
        file[positions[i]] ^= flip;
    }
    /* the right file asked for with another key */
    if (klen > 0) {
        key[klen - 1] = (char)(key[klen - 1] == 'a' ? 'b' : 'a');
        if (parse_copy(file, n, key, &off, &bs))
            fail("a file was accepted for another key", size);
    }
    free(file);
    free(key);
    return 0;
}
