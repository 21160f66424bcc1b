/*
 * clnorm-multi-device — one training batch split over two contexts (two devices, or two contexts of the same
 * device: two POCL contexts on a CPU-only machine), synchronised with the split-phase calls, against the same
 * batch on one context with the plain calls.
 *
 *   forward:  each context: clnorm_bn_stats(its half) -> block (count, mean, m2 per map)
 *             host: gather the two blocks, clnorm_bn_stats_merge_host -> the global block
 *             each context: clnorm_bn_forward_training_from_stats(its half, global block) -> y, running, saved
 *   backward: each context: clnorm_bn_backward_reduce -> (sum dy, sum dy * xhat) per map
 *             host: add the two sums blocks
 *             each context: clnorm_bn_backward_from_sums -> its dx, the global dscale / dbias
 *
 * Only O(maps) floats cross between the devices. Prints the largest differences against the one-device run and
 * exits 1 when they exceed the float tolerances of SEMANTICS.md.
 *
 * Usage: clnorm-multi-device [DEVICE_A [DEVICE_B]]   selectors as for clnorm_context_create (default "pocl").
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm.h"

enum { B0 = 5, B1 = 3, MAPS = 4, D = 3, H = 6, W = 5 };
#define BATCH (B0 + B1)
#define PER ((size_t)MAPS * D * H * W) /* values per batch entry */
#define EPS 1e-5
#define FACTOR 0.1

static int failed(clnorm_status st, const char *what) {
    if (st == CLNORM_SUCCESS)
        return 0;
    fprintf(stderr, "clnorm-multi-device: %s failed: %s\n  %s\n", what, clnorm_status_string(st), clnorm_last_error());
    return 1;
}
#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        if (failed((call), #call))                                                                                     \
            goto done;                                                                                                 \
    } while (0)

static cl_mem floats(clnorm_context *ctx, const float *host, size_t n) {
    cl_int err;
    cl_mem m = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0),
                              n * sizeof(float), (void *)host, &err);
    return err == CL_SUCCESS ? m : NULL;
}
static clnorm_status get(clnorm_context *ctx, cl_mem m, float *host, size_t n) {
    return clEnqueueReadBuffer(clnorm_context_queue(ctx), m, CL_TRUE, 0, n * sizeof(float), host, 0, NULL, NULL) ==
                   CL_SUCCESS
               ? CLNORM_SUCCESS
               : CLNORM_ERROR_OPENCL;
}
static clnorm_status put(clnorm_context *ctx, cl_mem m, const float *host, size_t n) {
    return clEnqueueWriteBuffer(clnorm_context_queue(ctx), m, CL_TRUE, 0, n * sizeof(float), host, 0, NULL, NULL) ==
                   CL_SUCCESS
               ? CLNORM_SUCCESS
               : CLNORM_ERROR_OPENCL;
}
static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double d = fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
        m = d > m || d != d ? d : m;
    }
    return m;
}

int main(int argc, char **argv) {
    const char *sel[2] = {argc > 1 ? argv[1] : "pocl", argc > 2 ? argv[2] : (argc > 1 ? argv[1] : "pocl")};
    const size_t b[2] = {B0, B1};
    int rc = 1;
    clnorm_context *ctx[2] = {NULL, NULL};
    clnorm_tensor x[2], y[2], dy[2], dx[2], X, Y, DY, DX;
    memset(x, 0, sizeof x), memset(y, 0, sizeof y), memset(dy, 0, sizeof dy), memset(dx, 0, sizeof dx);
    memset(&X, 0, sizeof X), memset(&Y, 0, sizeof Y), memset(&DY, 0, sizeof DY), memset(&DX, 0, sizeof DX);
    cl_mem scale[3] = {0}, bias[3] = {0}, rmean[3] = {0}, rvar[3] = {0}, smean[3] = {0}, sinv[3] = {0}, dscale[3] = {0},
           dbias[3] = {0}, stats[2] = {0}, sums[2] = {0};
    float *hx = malloc(BATCH * PER * sizeof(float)), *hdy = malloc(BATCH * PER * sizeof(float));
    float *one = malloc(BATCH * PER * sizeof(float)), *two = malloc(BATCH * PER * sizeof(float));
    float g[MAPS], r1[MAPS], r0[MAPS] = {0}, v0[MAPS], blocks[2 * MAPS * 3], merged[MAPS * 3], s2[2][MAPS * 2],
                             sum[MAPS * 2];
    if (!hx || !hdy || !one || !two)
        goto done;
    /* data: per-map offsets and spreads, fixed seed */
    unsigned long long s = 12345;
    for (size_t i = 0; i < BATCH * PER; ++i) {
        size_t c = (i / (D * H * W)) % MAPS;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0;
        hx[i] = (float)(3.0 * c + (1.0 + c) * (u - 0.5));
        hdy[i] = (float)(u * u - 0.3);
    }
    for (int c = 0; c < MAPS; ++c)
        g[c] = 1.0f + 0.25f * (float)c, v0[c] = 1.0f;

    CHECK(clnorm_context_create(sel[0], &ctx[0]));
    CHECK(clnorm_context_create(sel[1], &ctx[1]));
    printf("context A: %s\ncontext B: %s\n", clnorm_context_device_name(ctx[0]), clnorm_context_device_name(ctx[1]));

    /* the reference: the whole batch on context A with the plain calls */
    size_t shape[5] = {BATCH, MAPS, D, H, W};
    CHECK(clnorm_tensor_create(ctx[0], 5, shape, CLNORM_F32, hx, &X));
    CHECK(clnorm_tensor_create(ctx[0], 5, shape, CLNORM_F32, NULL, &Y));
    CHECK(clnorm_tensor_create(ctx[0], 5, shape, CLNORM_F32, hdy, &DY));
    CHECK(clnorm_tensor_create(ctx[0], 5, shape, CLNORM_F32, NULL, &DX));
    scale[2] = floats(ctx[0], g, MAPS), bias[2] = floats(ctx[0], r0, MAPS), rmean[2] = floats(ctx[0], r0, MAPS);
    rvar[2] = floats(ctx[0], v0, MAPS), smean[2] = floats(ctx[0], NULL, MAPS), sinv[2] = floats(ctx[0], NULL, MAPS);
    dscale[2] = floats(ctx[0], NULL, MAPS), dbias[2] = floats(ctx[0], NULL, MAPS);
    CHECK(clnorm_bn_forward_training(ctx[0], CLNORM_BN_SPATIAL, &X, &Y, scale[2], bias[2], FACTOR, EPS, rmean[2],
                                     rvar[2], smean[2], sinv[2]));
    CHECK(clnorm_bn_backward(ctx[0], CLNORM_BN_SPATIAL, &X, &DY, &DX, scale[2], dscale[2], dbias[2], EPS, smean[2],
                             sinv[2]));

    /* the split: half q of the batch on context q */
    for (int q = 0; q < 2; ++q) {
        size_t sh[5] = {b[q], MAPS, D, H, W}, off = q ? B0 * PER : 0;
        CHECK(clnorm_tensor_create(ctx[q], 5, sh, CLNORM_F32, hx + off, &x[q]));
        CHECK(clnorm_tensor_create(ctx[q], 5, sh, CLNORM_F32, NULL, &y[q]));
        CHECK(clnorm_tensor_create(ctx[q], 5, sh, CLNORM_F32, hdy + off, &dy[q]));
        CHECK(clnorm_tensor_create(ctx[q], 5, sh, CLNORM_F32, NULL, &dx[q]));
        scale[q] = floats(ctx[q], g, MAPS), bias[q] = floats(ctx[q], r0, MAPS), rmean[q] = floats(ctx[q], r0, MAPS);
        rvar[q] = floats(ctx[q], v0, MAPS), smean[q] = floats(ctx[q], NULL, MAPS), sinv[q] = floats(ctx[q], NULL, MAPS);
        dscale[q] = floats(ctx[q], NULL, MAPS), dbias[q] = floats(ctx[q], NULL, MAPS);
        stats[q] = floats(ctx[q], NULL, MAPS * 3), sums[q] = floats(ctx[q], NULL, MAPS * 2);
        if (!stats[q] || !sums[q] || !scale[q] || !dbias[q]) {
            fprintf(stderr, "clnorm-multi-device: buffer allocation failed\n");
            goto done;
        }
        CHECK(clnorm_bn_stats(ctx[q], CLNORM_BN_SPATIAL, &x[q], stats[q])); /* phase 1, on each device */
        CHECK(get(ctx[q], stats[q], blocks + q * MAPS * 3, MAPS * 3));
    }
    CHECK(clnorm_bn_stats_merge_host(2, MAPS, blocks, merged)); /* the exchange: 2 x 12 bytes per map */
    for (int q = 0; q < 2; ++q) {
        CHECK(put(ctx[q], stats[q], merged, MAPS * 3));
        CHECK(clnorm_bn_forward_training_from_stats(ctx[q], CLNORM_BN_SPATIAL, &x[q], &y[q], stats[q], scale[q],
                                                    bias[q], FACTOR, EPS, rmean[q], rvar[q], smean[q], sinv[q]));
        CHECK(clnorm_bn_backward_reduce(ctx[q], CLNORM_BN_SPATIAL, &x[q], &dy[q], smean[q], sinv[q], sums[q]));
        CHECK(get(ctx[q], sums[q], s2[q], MAPS * 2));
    }
    for (int i = 0; i < MAPS * 2; ++i)
        sum[i] = s2[0][i] + s2[1][i];
    for (int q = 0; q < 2; ++q) {
        CHECK(put(ctx[q], sums[q], sum, MAPS * 2));
        CHECK(clnorm_bn_backward_from_sums(ctx[q], CLNORM_BN_SPATIAL, &x[q], &dy[q], &dx[q], scale[q], smean[q],
                                           sinv[q], sums[q], merged[0], dscale[q], dbias[q]));
    }

    /* compare: y and dx halves, running statistics and gradients of both contexts */
    double worst_y = 0.0, worst_dx = 0.0, worst_p = 0.0;
    CHECK(clnorm_tensor_read(ctx[0], &Y, one));
    for (int q = 0; q < 2; ++q)
        CHECK(clnorm_tensor_read(ctx[q], &y[q], two + (q ? B0 * PER : 0)));
    worst_y = maxdiff(two, one, BATCH * PER);
    CHECK(clnorm_tensor_read(ctx[0], &DX, one));
    for (int q = 0; q < 2; ++q)
        CHECK(clnorm_tensor_read(ctx[q], &dx[q], two + (q ? B0 * PER : 0)));
    worst_dx = maxdiff(two, one, BATCH * PER);
    cl_mem *fields[] = {rmean, rvar, smean, sinv, dscale, dbias};
    const char *names[] = {"running_mean", "running_var", "save_mean", "save_invstd", "dscale", "dbias"};
    for (int f = 0; f < 6; ++f) {
        CHECK(get(ctx[0], fields[f][2], r1, MAPS));
        for (int q = 0; q < 2; ++q) {
            CHECK(get(ctx[q], fields[f][q], g, MAPS));
            double d = maxdiff(g, r1, MAPS);
            worst_p = d > worst_p ? d : worst_p;
        }
        printf("%-12s one device %+.6f %+.6f ...  two contexts %+.6f %+.6f ...\n", names[f], r1[0], r1[1], g[0], g[1]);
    }
    printf("largest relative difference, two contexts vs one: y %.2e, dx %.2e, statistics and gradients %.2e\n",
           worst_y, worst_dx, worst_p);
    rc = worst_y <= 1e-4 && worst_dx <= 1e-3 && worst_p <= 1e-4 ? 0 : 1;
    printf("%s\n", rc ? "MISMATCH" : "two contexts == one device (within float tolerance)");
done:
    for (int q = 0; q < 2; ++q) {
        clnorm_tensor_release(&x[q]), clnorm_tensor_release(&y[q]), clnorm_tensor_release(&dy[q]);
        clnorm_tensor_release(&dx[q]);
        if (stats[q])
            clReleaseMemObject(stats[q]);
        if (sums[q])
            clReleaseMemObject(sums[q]);
    }
    for (int q = 0; q < 3; ++q) {
        cl_mem ms[] = {scale[q], bias[q], rmean[q], rvar[q], smean[q], sinv[q], dscale[q], dbias[q]};
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; ++i)
            if (ms[i])
                clReleaseMemObject(ms[i]);
    }
    clnorm_tensor_release(&X), clnorm_tensor_release(&Y), clnorm_tensor_release(&DY), clnorm_tensor_release(&DX);
    clnorm_context_destroy(ctx[0]);
    clnorm_context_destroy(ctx[1]);
    free(hx), free(hdy), free(one), free(two);
    return rc;
}
