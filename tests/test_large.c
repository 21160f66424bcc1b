/*
 * The largest tensors the device allows: training forward + backward over one buffer as large as
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE (F32: 2^29 floats minus a little on POCL, F16: 2^30 halves minus a little, so byte
 * offsets reach 2^31), with two maps, so that one statistic covers 2^28 (F32) or 2^29 (F16) values. Two buffers
 * of that size are all the global memory there is (POCL here: 2 GiB max alloc, ~4.5 GiB global), so y doubles
 * as dy and then as dx (the same view: dx overwrites dy in place, which the API allows).
 *
 * The data is a hash of the element index (splitmix64), so the host never holds a copy: it writes the tensors in
 * chunks, computes the reference statistics per map in double while streaming, and checks the statistics, the
 * running statistics, the parameter gradients, every 4099th output element and the last 4096 elements of the
 * buffer against the double reference of the rounded inputs.
 *
 * Also: one map of >= 3e7 values with mean 1e4 and std 1 (variance within 1e-4 relative, mean within 2 float
 * ulps of the double reference), with both kernel strategies.
 *
 * Environment: CLNORM_LARGE_MAX_ELEMENTS caps the element count of the big tensors (default 2^31 + 2^27: above
 * 2^31 when the device allows it, bounded so a GPU run stays short).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ref_bn.h"
#include "test_util.h"

#define EPS 1e-5
#define FACTOR 0.5
#define SAMPLE 4099
#define TAIL 4096
#define CHUNK ((size_t)1 << 23) /* elements per host chunk */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* mu + k / 256 with k uniform in [-443, 443] (std ~1): exact in F32 and in F16 for |mu| < 4 (multiples of 2^-8
   below 8 are halves), so the values the device sees need no rounding on the host */
static float value(uint64_t seed, size_t i, double mu) {
    int k = (int)((mix(seed ^ (uint64_t)i) >> 32) % 887u) - 443;
    return (float)(mu + (double)k * (1.0 / 256.0));
}

static const double map_mu[2] = {1.5, -2.25};
static const float map_scale[2] = {1.25f, -0.75f}, map_bias[2] = {0.5f, -1.0f};

static clnorm_context *make_ctx(const char *strategy) {
    const char *old = getenv("CLNORM_STRATEGY");
    char saved[16] = "";
    if (old)
        snprintf(saved, sizeof saved, "%s", old);
    if (strategy)
        setenv("CLNORM_STRATEGY", strategy, 1);
    clnorm_context *c = NULL;
    TU_OK(tu_context_create(&c));
    if (strategy) {
        if (old)
            setenv("CLNORM_STRATEGY", saved, 1);
        else
            unsetenv("CLNORM_STRATEGY");
    }
    return c;
}

static void write_chunk(cl_mem b, size_t off, const float *v, void *stage, clnorm_dtype dt, size_t n) {
    tu_encode(dt, v, stage, n);
    tu_write(b, off, stage, n * tu_esize(dt));
}

static void read_chunk(cl_mem b, size_t off, float *v, void *stage, clnorm_dtype dt, size_t n) {
    tu_read(b, off, stage, n * tu_esize(dt));
    tu_decode(dt, stage, v, n);
}

/* an element is checked if it is a sample or in the tail of the tensor */
static int checked(size_t i, size_t n) {
    return i % SAMPLE == 0 || i >= n - TAIL;
}

static int within(double got, double ref, double atol, double rtol, double extra) {
    return fabs(got - ref) <= atol + rtol * fabs(ref) + extra;
}

static void run_big(clnorm_dtype dt, const char *strategy) {
    clnorm_context *ctx = make_ctx(strategy), *outer = tu_ctx;
    tu_ctx = ctx;
    const char *sname = strategy ? strategy : getenv("CLNORM_STRATEGY") ? getenv("CLNORM_STRATEGY") : "default";
    tu_case("large %s strategy=%s", tu_dtype_name(dt), sname);
    cl_device_id dev = clnorm_context_device(ctx);
    cl_ulong max_alloc = 0, global = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL);
    size_t es = tu_esize(dt);
    /* two tensors (x, and y = dy = dx) of one allocation each, with 5% of the global memory left over */
    cl_ulong per_buf = max_alloc, fit = (cl_ulong)((double)global * 0.95) / 2;
    const char *why = "CL_DEVICE_MAX_MEM_ALLOC_SIZE (one tensor per buffer)";
    if (fit < per_buf)
        per_buf = fit, why = "CL_DEVICE_GLOBAL_MEM_SIZE (two tensors must fit)";
    uint64_t cap = ((uint64_t)1 << 31) + ((uint64_t)1 << 27);
    const char *capenv = getenv("CLNORM_LARGE_MAX_ELEMENTS");
    if (capenv && *capenv)
        cap = strtoull(capenv, NULL, 0);
    size_t elems = (size_t)(per_buf / es);
    if (elems > cap)
        elems = (size_t)cap, why = "CLNORM_LARGE_MAX_ELEMENTS (keeps the run short)";
    const size_t B = 4, C = 2;
    size_t S = (elems - 1024) / (B * C); /* "minus a little", and S odd (no multiple of the vector width) */
    if (S % 2 == 0)
        S--;
    size_t n = B * C * S, M = B * S, bytes = n * es;
    /* x ends exactly at the end of its buffer, so the largest byte offsets are touched */
    size_t buf_bytes = (size_t)per_buf / es * es, xoff = buf_bytes - bytes;
    printf("large: device \"%s\", CL_DEVICE_MAX_MEM_ALLOC_SIZE %llu bytes, CL_DEVICE_GLOBAL_MEM_SIZE %llu bytes\n",
           clnorm_context_device_name(ctx), (unsigned long long)max_alloc, (unsigned long long)global);
    printf("large: %s, strategy %s: x (%zu, %zu, %zu) = %zu elements (2^%.3f), %zu bytes at byte offset %zu of a "
           "%zu-byte buffer; %zu values per map; limited by %s\n",
           tu_dtype_name(dt), sname, B, C, S, n, log2((double)n), bytes, xoff, buf_bytes, M,
           why);
    fflush(stdout);

    double t0 = now();
    cl_int err;
    cl_mem bx = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, buf_bytes, NULL, &err);
    TU_TRUE(err == CL_SUCCESS);
    cl_mem by = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &err);
    TU_TRUE(err == CL_SUCCESS);
    float *v = tu_floats(CHUNK);
    void *stage = tu_malloc(CHUNK * es);
    const uint64_t sx = tu_case_seed(), sd = mix(tu_case_seed() + 1);

    /* x, and the reference statistics per map in double (shifted by the map's nominal mean) */
    double s1[2] = {0, 0}, s2[2] = {0, 0};
    for (size_t r = 0; r < B * C; r++) {
        size_t c = r % C;
        for (size_t s0 = 0; s0 < S; s0 += CHUNK) {
            size_t k = S - s0 < CHUNK ? S - s0 : CHUNK, base = r * S + s0;
            for (size_t j = 0; j < k; j++) {
                v[j] = value(sx, base + j, map_mu[c]);
                double d = (double)v[j] - map_mu[c];
                s1[c] += d, s2[c] += d * d;
            }
            write_chunk(bx, xoff + base * es, v, stage, dt, k);
        }
    }
    double mean[2], var[2], invstd[2];
    for (size_t c = 0; c < C; c++) {
        double m = s1[c] / (double)M;
        mean[c] = map_mu[c] + m;
        var[c] = s2[c] / (double)M - m * m;
        invstd[c] = 1.0 / sqrt(var[c] + EPS);
    }
    double t1 = now();

    clnorm_tensor x = tu_view(bx, xoff, 3, (size_t[]){B, C, S}), y = tu_view(by, 0, 3, (size_t[]){B, C, S});
    x.dtype = y.dtype = dt;
    float rm0[2] = {0.0f, 0.0f}, rv0[2] = {1.0f, 1.0f};
    cl_mem scale = tu_buffer_from(map_scale, C), bias = tu_buffer_from(map_bias, C), rm = tu_buffer_from(rm0, C),
           rv = tu_buffer_from(rv0, C), sm = tu_buffer(C * 4), si = tu_buffer(C * 4), ds = tu_buffer(C * 4),
           db = tu_buffer(C * 4);
    TU_OK(clnorm_bn_forward_training(ctx, CLNORM_BN_SPATIAL, &x, &y, scale, bias, FACTOR, EPS, rm, rv, sm, si));
    TU_OK(clnorm_context_finish(ctx));
    double t2 = now();

    float fm[2], fi[2], frm[2], frv[2];
    tu_read(sm, 0, fm, C * 4), tu_read(si, 0, fi, C * 4), tu_read(rm, 0, frm, C * 4), tu_read(rv, 0, frv, C * 4);
    for (size_t c = 0; c < C; c++) {
        double rrm = FACTOR * mean[c], rrv = (1 - FACTOR) + FACTOR * var[c] * (double)M / (double)(M - 1);
        printf("large: map %zu: mean %.9g (ref %.9g), invstd %.9g (ref %.9g), running mean %.9g (ref %.9g), running "
               "var %.9g (ref %.9g)\n",
               c, fm[c], mean[c], fi[c], invstd[c], frm[c], rrm, frv[c], rrv);
        TU_TRUE(within(fm[c], mean[c], TU_STAT_ATOL, TU_STAT_RTOL, 0));
        TU_TRUE(within(fi[c], invstd[c], TU_STAT_ATOL, TU_STAT_RTOL, 0));
        TU_TRUE(within(frm[c], rrm, TU_STAT_ATOL, TU_STAT_RTOL, 0));
        TU_TRUE(within(frv[c], rrv, TU_STAT_ATOL, TU_STAT_RTOL, 0));
    }

    /* y: every SAMPLE-th element and the tail, against the reference with the reference statistics */
    size_t nchecked = 0, nbad = 0;
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
        read_chunk(by, i0 * es, v, stage, dt, k);
        for (size_t j = 0; j < k; j++) {
            size_t i = i0 + j, c = (i / S) % C;
            if (!checked(i, n))
                continue;
            double xv = value(sx, i, map_mu[c]);
            double ref = (xv - mean[c]) * invstd[c] * map_scale[c] + map_bias[c];
            nchecked++;
            if (!within(v[j], ref, TU_FWD_ATOL, TU_FWD_RTOL, tu_ulp(dt, ref)) && nbad++ < 5)
                printf("large: y[%zu] = %.9g, expected %.9g\n", i, v[j], ref);
        }
    }
    printf("large: forward: %zu of %zu checked y elements out of tolerance\n", nbad, nchecked);
    TU_TRUE(nbad == 0);
    double t3 = now();

    /* dy into y's buffer, and the reference parameter gradients with the device's saved statistics */
    double gb[2] = {0, 0}, gs[2] = {0, 0};
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
        for (size_t j = 0; j < k; j++) {
            size_t i = i0 + j, c = (i / S) % C;
            v[j] = value(sd, i, 0.0);
            double xhat = ((double)value(sx, i, map_mu[c]) - fm[c]) * fi[c];
            gb[c] += v[j], gs[c] += v[j] * xhat;
        }
        write_chunk(by, i0 * es, v, stage, dt, k);
    }
    double t4 = now();
    TU_OK(clnorm_bn_backward(ctx, CLNORM_BN_SPATIAL, &x, &y, &y, scale, ds, db, EPS, sm, si));
    TU_OK(clnorm_context_finish(ctx));
    double t5 = now();
    float fds[2], fdb[2];
    tu_read(ds, 0, fds, C * 4), tu_read(db, 0, fdb, C * 4);
    for (size_t c = 0; c < C; c++) {
        printf("large: map %zu: dscale %.9g (ref %.9g), dbias %.9g (ref %.9g)\n", c, fds[c], gs[c], fdb[c], gb[c]);
        TU_TRUE(within(fds[c], gs[c], TU_BWD_ATOL, TU_BWD_RTOL, 0));
        TU_TRUE(within(fdb[c], gb[c], TU_BWD_ATOL, TU_BWD_RTOL, 0));
    }
    nchecked = nbad = 0;
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
        read_chunk(by, i0 * es, v, stage, dt, k);
        for (size_t j = 0; j < k; j++) {
            size_t i = i0 + j, c = (i / S) % C;
            if (!checked(i, n))
                continue;
            double xhat = ((double)value(sx, i, map_mu[c]) - fm[c]) * fi[c];
            double dyv = value(sd, i, 0.0);
            double ref = map_scale[c] * (double)fi[c] / (double)M * ((double)M * dyv - gb[c] - xhat * gs[c]);
            nchecked++;
            if (!within(v[j], ref, TU_BWD_ATOL, TU_BWD_RTOL, tu_ulp(dt, ref)) && nbad++ < 5)
                printf("large: dx[%zu] = %.9g, expected %.9g\n", i, v[j], ref);
        }
    }
    printf("large: backward: %zu of %zu checked dx elements out of tolerance\n", nbad, nchecked);
    TU_TRUE(nbad == 0);
    double t6 = now();
    printf("large: %s times: write x + reference %.1f s, forward %.2f s, check y %.1f s, write dy %.1f s, backward "
           "%.2f s, check dx %.1f s\n",
           tu_dtype_name(dt), t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5);
    fflush(stdout);

    free(v), free(stage);
    tu_release(&bx), tu_release(&by), tu_release(&scale), tu_release(&bias), tu_release(&rm), tu_release(&rv);
    tu_release(&sm), tu_release(&si), tu_release(&ds), tu_release(&db);
    tu_ctx = outer;
    clnorm_context_destroy(ctx);
}

/* the default strategy (or CLNORM_STRATEGY) for F32, and the other one for F16, so both kernel families see
   byte offsets beyond 2^31 without doubling the runtime */
static const char *other_strategy(void) {
    const char *s = getenv("CLNORM_STRATEGY");
    if (s && *s)
        return NULL; /* forced: keep it */
    cl_device_type t = 0;
    clGetDeviceInfo(clnorm_context_device(tu_ctx), CL_DEVICE_TYPE, sizeof t, &t, NULL);
    return (t & CL_DEVICE_TYPE_CPU) ? "gpu" : "cpu";
}

static void test_big_f32(void **state) {
    (void)state;
    run_big(CLNORM_F32, NULL);
}

static void test_big_f16(void **state) {
    (void)state;
    run_big(CLNORM_F16, other_strategy());
}

/* ---- one map, >= 3e7 values, mean 1e4, std 1 ---------------------------------------------------------- */
static void run_large_mean(const char *strategy) {
    clnorm_context *ctx = make_ctx(strategy), *outer = tu_ctx;
    tu_ctx = ctx;
    tu_case("mean 1e4 std 1, strategy %s", strategy);
    const size_t shape[3] = {2, 1, 15000017}, n = 30000034;
    float *x = tu_floats(n);
    tu_fill_normal(x, n, 1e4, 1.0);
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s1 += (double)x[i] - 1e4;
    double m = s1 / (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - 1e4 - m;
        s2 += d * d;
    }
    double mean = 1e4 + m, var = s2 / (double)n, uvar = s2 / (double)(n - 1);
    cl_mem bx = tu_buffer_from(x, n), by = tu_buffer(n * 4);
    float zero = 0.0f, one = 1.0f, fm, fi, frv;
    cl_mem rm = tu_buffer_from(&zero, 1), rv = tu_buffer_from(&one, 1), sm = tu_buffer(4), si = tu_buffer(4);
    clnorm_tensor tx = tu_view(bx, 0, 3, shape), ty = tu_view(by, 0, 3, shape);
    double t0 = now();
    TU_OK(clnorm_bn_forward_training(ctx, CLNORM_BN_SPATIAL, &tx, &ty, NULL, NULL, 1.0, EPS, rm, rv, sm, si));
    TU_OK(clnorm_context_finish(ctx));
    double t1 = now();
    tu_read(sm, 0, &fm, 4), tu_read(si, 0, &fi, 4), tu_read(rv, 0, &frv, 4);
    double ulp = tu_ulp(CLNORM_F32, mean), dvar = 1.0 / ((double)fi * fi) - EPS;
    printf("mean 1e4: %zu values, strategy %s: mean %.9g (ref %.12g, %.2f ulp), var from invstd %.9g, running var "
           "(unbiased) %.9g (ref %.9g, rel %.2e), %.2f s\n",
           n, strategy, fm, mean, fabs(fm - mean) / ulp, dvar, frv, uvar, fabs(frv - uvar) / uvar, t1 - t0);
    TU_TRUE(fabs(fm - mean) <= 2 * ulp);
    TU_TRUE(fabs(frv - uvar) <= 1e-4 * uvar);
    /* invstd = 1/sqrt(var + eps) in float: the variance it implies is within 1e-4 too (float rounding of invstd
       adds ~1e-7 relative) */
    TU_TRUE(fabs(dvar - var) <= 1e-4 * var);
    free(x);
    tu_release(&bx), tu_release(&by), tu_release(&rm), tu_release(&rv), tu_release(&sm), tu_release(&si);
    tu_ctx = outer;
    clnorm_context_destroy(ctx);
}

static void test_large_mean(void **state) {
    (void)state;
    run_large_mean("cpu");
    run_large_mean("gpu");
}

int main(void) {
    tu_main_init();
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_mean),
        cmocka_unit_test(test_big_f32),
        cmocka_unit_test(test_big_f16),
    };
    return cmocka_run_group_tests_name("large", tests, tu_group_setup, tu_group_teardown);
}
