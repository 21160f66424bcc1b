/*
 * clnorm-demo — the BatchNorm3D example of the PuzzleLib docs, end to end:
 *
 *   data = arange(5 * 3 * 10 * 10 * 10) as float32 shaped (5, 3, 10, 10, 10)
 *   bn = BatchNorm3D(3)                 default parameters
 *   bn(data)                            one training forward
 *   bn.backward(dy)                     a seeded random gradient
 *   bn.evalMode(); bn(data)             one inference forward
 *
 * Usage: clnorm-demo [DEVICE]
 *   DEVICE is a selector for clnorm_context_create: "P:D" (platform and device index) or a
 *   case-insensitive substring of "<platform name> <device name>", e.g. "pocl". Without it,
 *   $CLNORM_DEVICE if set, else the first GPU, accelerator or CPU device.
 *
 * Every call is checked: on failure the demo prints the status and clnorm_last_error(), frees
 * what it holds and exits with status 1.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm.h"

enum { BATCH = 5, MAPS = 3, DEPTH = 10, HEIGHT = 10, WIDTH = 10 };
#define SPATIAL ((size_t)DEPTH * HEIGHT * WIDTH)
#define PER_MAP ((size_t)BATCH * SPATIAL) /* M: values per statistic */
#define NUMEL ((size_t)BATCH * MAPS * SPATIAL)
#define DY_SEED UINT64_C(20240611)

/* Prints what failed and returns 1; 0 on success. */
static int failed(clnorm_status st, const char *what) {
    if (st == CLNORM_SUCCESS)
        return 0;
    fprintf(stderr, "clnorm-demo: %s failed: %s\n", what, clnorm_status_string(st));
    const char *detail = clnorm_last_error();
    if (detail && detail[0])
        fprintf(stderr, "  %s\n", detail);
    return 1;
}
#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        if (failed((call), #call))                                                                                     \
            goto done;                                                                                                 \
    } while (0)

/* ---- a small seeded normal generator: xorshift64* + Box-Muller ------------------------------- */
typedef struct rng {
    uint64_t s;
    int has_spare;
    double spare;
} rng;

static uint64_t rng_u64(rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * UINT64_C(2685821657736338717);
}

static double rng_uniform01(rng *r) { /* (0, 1]: safe for log() */
    return ((double)(rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    const double two_pi = 6.283185307179586476925286766559;
    double radius = sqrt(-2.0 * log(rng_uniform01(r)));
    double angle = two_pi * rng_uniform01(r);
    r->spare = radius * sin(angle);
    r->has_spare = 1;
    return radius * cos(angle);
}

/* ---- host-side statistics of an NCHW (BATCH, MAPS, SPATIAL) array, in double, two-pass ---------- */
static void map_mean_std(const float *a, size_t map, double *mean, double *std) {
    double sum = 0.0;
    for (size_t b = 0; b < BATCH; ++b)
        for (size_t s = 0; s < SPATIAL; ++s)
            sum += a[(b * MAPS + map) * SPATIAL + s];
    double m = sum / (double)PER_MAP, sq = 0.0;
    for (size_t b = 0; b < BATCH; ++b)
        for (size_t s = 0; s < SPATIAL; ++s) {
            double d = a[(b * MAPS + map) * SPATIAL + s] - m;
            sq += d * d;
        }
    *mean = m;
    *std = sqrt(sq / (double)PER_MAP); /* biased (ddof = 0), as numpy's std() */
}

static double rel_diff(double got, double want) {
    double d = fabs(got - want), s = fabs(want);
    return s > 0.0 ? d / s : d;
}

/* |got - want| <= atol + rtol * |want|; otherwise counts a mismatch and says so. */
static int mismatches = 0;
static void expect_close(const char *what, size_t map, double got, double want, double atol, double rtol) {
    if (!(fabs(got - want) <= atol + rtol * fabs(want))) {
        fprintf(stderr, "clnorm-demo: MISMATCH %s of map %zu: got %.9g, expected %.9g\n", what, map, got, want);
        ++mismatches;
    }
}

/* Per-map mean and std of an output; expected: mean = bias, std = scale * std_factor. */
static void print_output_table(const char *title, const float *y, const float *scale, const float *bias,
                               double std_factor) {
    printf("%s\n", title);
    printf("  %3s  %14s  %14s  %14s  %14s\n", "map", "mean(y)", "std(y)", "bias", "scale");
    for (size_t c = 0; c < MAPS; ++c) {
        double m, s;
        map_mean_std(y, c, &m, &s);
        printf("  %3zu  %14.3g  %14.7g  %14.7g  %14.7g\n", c, m, s, (double)bias[c], (double)scale[c]);
        expect_close("mean(y)", c, m, bias[c], 1e-4, 1e-4);
        expect_close("std(y)", c, s, scale[c] * std_factor, 1e-5, 1e-4);
    }
}

int main(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
        fprintf(stderr,
                "usage: %s [DEVICE]\n"
                "  DEVICE: \"P:D\" (platform:device index) or a case-insensitive substring of\n"
                "          \"<platform name> <device name>\", e.g. \"pocl\". Default: $CLNORM_DEVICE,\n"
                "          else the first GPU, accelerator or CPU device.\n",
                argv[0]);
        return argc > 2 ? 2 : 0;
    }
    const char *selector = argc == 2 ? argv[1] : NULL;

    int rc = 1;
    clnorm_context *ctx = NULL;
    clnorm_batchnorm *bn = NULL;
    clnorm_tensor x = {0}, y = {0}, dy = {0}, dx = {0};
    float *host_x = NULL, *host_y = NULL, *host_dy = NULL, *host_dx = NULL;
    float scale[MAPS], bias[MAPS], run_mean[MAPS], run_var[MAPS], save_mean[MAPS], save_invstd[MAPS];
    float scale_grad[MAPS], bias_grad[MAPS];
    const size_t shape[5] = {BATCH, MAPS, DEPTH, HEIGHT, WIDTH};

    host_x = malloc(NUMEL * sizeof *host_x);
    host_y = malloc(NUMEL * sizeof *host_y);
    host_dy = malloc(NUMEL * sizeof *host_dy);
    host_dx = malloc(NUMEL * sizeof *host_dx);
    if (!host_x || !host_y || !host_dy || !host_dx) {
        fprintf(stderr, "clnorm-demo: out of host memory\n");
        goto done;
    }
    for (size_t i = 0; i < NUMEL; ++i)
        host_x[i] = (float)i; /* exact: NUMEL < 2^24 */

    unsigned v = clnorm_version();
    printf("clnorm %u.%u.%u: BatchNorm3D on data = arange(%zu) shaped (%d, %d, %d, %d, %d), float32\n", v / 10000,
           v / 100 % 100, v % 100, NUMEL, BATCH, MAPS, DEPTH, HEIGHT, WIDTH);

    CHECK(clnorm_context_create(selector, &ctx));
    printf("device: %s\n", clnorm_context_device_name(ctx));

    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 3, MAPS);
    cfg.name = "bn3d";
    CHECK(clnorm_batchnorm_create(ctx, &cfg, &bn));
    if (clnorm_batchnorm_param_count(bn) != MAPS) {
        fprintf(stderr, "clnorm-demo: layer has %zu values per field (expected %d)\n", clnorm_batchnorm_param_count(bn),
                MAPS);
        goto done;
    }
    printf("layer:  %s = BatchNorm3D(%d): epsilon %g, init_factor %g, min_factor %g, affine, scale ~ N(1, %g)\n\n",
           clnorm_batchnorm_name(bn), MAPS, (double)cfg.epsilon, (double)cfg.init_factor, (double)cfg.min_factor,
           (double)cfg.sscale);

    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, host_x, &x));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &y));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &dy));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &dx));

    /* ---- training forward ------------------------------------------------------------------ */
    CHECK(clnorm_batchnorm_forward(bn, 1, &x, &y));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, run_mean, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, run_var, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_SCALE, scale, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_BIAS, bias, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_SAVE_MEAN, save_mean, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_SAVE_INVSTD, save_invstd, MAPS));
    CHECK(clnorm_tensor_read(ctx, &y, host_y));

    printf("training forward (batch %llu of the layer)\n", (unsigned long long)clnorm_batchnorm_batches(bn));
    printf("  PuzzleLib arithmetic: per map, mean and biased variance over (batch, d, h, w), M = %zu values,\n"
           "  normalise the data; running_var takes the unbiased var * M / (M - 1). The first step has\n"
           "  factor = max(init_factor / 1, min_factor) = 1, so the running statistics are the batch statistics.\n",
           PER_MAP);
    printf("  %3s  %14s  %14s  %14s  %14s  %14s  %14s\n", "map", "running_mean", "running_var", "scale", "bias",
           "save_mean", "save_invstd");
    double worst = 0.0;
    for (size_t c = 0; c < MAPS; ++c) {
        printf("  %3zu  %14.7g  %14.7g  %14.7g  %14.7g  %14.7g  %14.7g\n", c, (double)run_mean[c], (double)run_var[c],
               (double)scale[c], (double)bias[c], (double)save_mean[c], (double)save_invstd[c]);
        double m, s;
        map_mean_std(host_x, c, &m, &s);
        double var = s * s, unbiased = var * (double)PER_MAP / (double)(PER_MAP - 1);
        double e[4] = {rel_diff(run_mean[c], m), rel_diff(run_var[c], unbiased), rel_diff(save_mean[c], m),
                       rel_diff(save_invstd[c], 1.0 / sqrt(var + (double)cfg.epsilon))};
        for (int k = 0; k < 4; ++k)
            worst = e[k] > worst ? e[k] : worst;
        expect_close("running_mean", c, run_mean[c], m, 0.0, 1e-5);
        expect_close("running_var", c, run_var[c], unbiased, 0.0, 1e-5);
        expect_close("save_mean", c, save_mean[c], m, 0.0, 1e-5);
        expect_close("save_invstd", c, save_invstd[c], 1.0 / sqrt(var + (double)cfg.epsilon), 0.0, 1e-5);
        expect_close("bias", c, bias[c], 0.0, 0.0, 0.0);
        expect_close("scale", c, scale[c], 1.0, 0.1, 0.0); /* ~ N(1, 0.01) */
    }
    printf("  largest relative difference of the statistics from a double-precision host computation: %.2g\n\n", worst);
    print_output_table("  output of the training forward, per map (expected: mean = bias, std = scale):", host_y, scale,
                       bias, 1.0);
    printf("\n");

    /* ---- backward with a seeded random gradient ----------------------------------------------- */
    rng r = {DY_SEED, 0, 0.0};
    for (size_t i = 0; i < NUMEL; ++i)
        host_dy[i] = (float)rng_normal(&r);
    CHECK(clnorm_tensor_write(ctx, &dy, host_dy));
    CHECK(clnorm_batchnorm_backward(bn, &x, &dy, &dx, 1.0f, 0.0f));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, scale_grad, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_BIAS_GRAD, bias_grad, MAPS));
    CHECK(clnorm_tensor_read(ctx, &dx, host_dx));

    printf("backward with dy ~ N(0, 1) (xorshift64* + Box-Muller, seed %llu), scale 1, momentum 0\n",
           (unsigned long long)DY_SEED);
    printf("  scale_grad = sum(dy * xhat), bias_grad = sum(dy); host = the same sums in double from the saved stats\n");
    printf("  %3s  %14s  %14s  %14s  %14s  %14s  %14s\n", "map", "scale_grad", "host", "bias_grad", "host", "mean(dx)",
           "std(dx)");
    for (size_t c = 0; c < MAPS; ++c) {
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (size_t b = 0; b < BATCH; ++b)
            for (size_t s = 0; s < SPATIAL; ++s) {
                size_t i = (b * MAPS + c) * SPATIAL + s;
                double xhat = ((double)host_x[i] - save_mean[c]) * save_invstd[c];
                sum_dy += host_dy[i];
                sum_dy_xhat += host_dy[i] * xhat;
            }
        double m, s;
        map_mean_std(host_dx, c, &m, &s);
        expect_close("scale_grad", c, scale_grad[c], sum_dy_xhat, 1e-3, 1e-4);
        expect_close("bias_grad", c, bias_grad[c], sum_dy, 1e-3, 1e-4);
        expect_close("mean(dx)", c, m, 0.0, 1e-4 * s, 0.0);
        printf("  %3zu  %14.7g  %14.7g  %14.7g  %14.7g  %14.3g  %14.7g\n", c, (double)scale_grad[c], sum_dy_xhat,
               (double)bias_grad[c], sum_dy, m, s);
    }
    printf("  (mean(dx) is 0 up to rounding: the normalisation removes the mean of the gradient)\n\n");

    /* ---- inference forward ------------------------------------------------------------------ */
    CHECK(clnorm_batchnorm_forward(bn, 0, &x, &y));
    CHECK(clnorm_tensor_read(ctx, &y, host_y));
    print_output_table("inference forward (running statistics), per map:", host_y, scale, bias,
                       sqrt((double)(PER_MAP - 1) / (double)PER_MAP));
    printf("  (std(y) = scale * sqrt((M - 1) / M) = scale * %.6f: running_var is the unbiased variance)\n",
           sqrt((double)(PER_MAP - 1) / (double)PER_MAP));

    CHECK(clnorm_context_finish(ctx));
    if (mismatches) {
        fprintf(stderr, "clnorm-demo: %d result(s) differ from the host computation\n", mismatches);
        goto done;
    }
    printf("\nall results agree with a double-precision host computation\n");
    rc = 0;

done:
    if (x.buffer)
        clnorm_tensor_release(&x);
    if (y.buffer)
        clnorm_tensor_release(&y);
    if (dy.buffer)
        clnorm_tensor_release(&dy);
    if (dx.buffer)
        clnorm_tensor_release(&dx);
    clnorm_batchnorm_destroy(bn);
    clnorm_context_destroy(ctx);
    free(host_x);
    free(host_y);
    free(host_dy);
    free(host_dx);
    return rc;
}
