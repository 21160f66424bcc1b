/*
 * clnorm-train — a minimal training loop around one BatchNorm2D layer.
 *
 * The problem: inputs x of shape (batch, maps, h, w), drawn each step from a fixed distribution with a
 * different offset and spread per map; the target is a known affine map of the normalised input,
 *     t = a[c] * (x - mean_c) / sqrt(var_c + eps) + b[c]     (batch statistics, computed on the host)
 * so a BatchNorm2D whose scale reaches a and bias reaches b fits it exactly. Each step:
 *     y = bn(x)                                     training forward
 *     loss = mean((y - t)^2)                        on the host
 *     dy = 2 (y - t) / numel                        the loss gradient
 *     bn.backward(dy)                               scale 1, momentum 0: SCALE_GRAD/BIAS_GRAD = this step's grads
 *     scale -= lr * dscale; bias -= lr * dbias      SGD on the host, written back to the layer
 * and prints the loss, which must fall (exit status 1 if it does not, or falls less than 1000x in 10+ steps).
 *
 * Usage: clnorm-train [DEVICE [STEPS]]   DEVICE as for clnorm_context_create ("" or "-": the default device).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm.h"

enum { BATCH = 16, MAPS = 4, H = 8, W = 8 };
#define PER_MAP ((size_t)BATCH * H * W)
#define NUMEL ((size_t)BATCH * MAPS * H * W)
#define EPS 1e-5f
#define LR 1.0f

static int failed(clnorm_status st, const char *what) {
    if (st == CLNORM_SUCCESS)
        return 0;
    fprintf(stderr, "clnorm-train: %s failed: %s\n  %s\n", what, clnorm_status_string(st), clnorm_last_error());
    return 1;
}
#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        if (failed((call), #call))                                                                                     \
            goto done;                                                                                                 \
    } while (0)

/* seeded normal numbers: xorshift64* + Box-Muller */
static uint64_t state = UINT64_C(0x2545f4914f6cdd1d);
static double uniform01(void) {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return ((double)((state * UINT64_C(2685821657736338717)) >> 11) + 1.0) / 9007199254740992.0;
}
static double normal(void) { return sqrt(-2.0 * log(uniform01())) * cos(6.283185307179586 * uniform01()); }

/* a fresh batch of x and its target t */
static void make_batch(float *x, float *t) {
    static const double offset[MAPS] = {3.0, -1.0, 0.5, 10.0}, spread[MAPS] = {1.0, 0.2, 4.0, 2.5};
    static const double a[MAPS] = {2.0, 0.5, -1.0, 1.5}, b[MAPS] = {0.3, -0.7, 1.0, 0.0};
    for (size_t n = 0; n < BATCH; ++n)
        for (size_t c = 0; c < MAPS; ++c)
            for (size_t i = 0; i < (size_t)H * W; ++i)
                x[(n * MAPS + c) * H * W + i] = (float)(offset[c] + spread[c] * normal());
    for (size_t c = 0; c < MAPS; ++c) {
        double sum = 0.0, sq = 0.0;
        for (size_t n = 0; n < BATCH; ++n)
            for (size_t i = 0; i < (size_t)H * W; ++i)
                sum += x[(n * MAPS + c) * H * W + i];
        double mean = sum / PER_MAP;
        for (size_t n = 0; n < BATCH; ++n)
            for (size_t i = 0; i < (size_t)H * W; ++i) {
                double d = x[(n * MAPS + c) * H * W + i] - mean;
                sq += d * d;
            }
        double invstd = 1.0 / sqrt(sq / PER_MAP + EPS);
        for (size_t n = 0; n < BATCH; ++n)
            for (size_t i = 0; i < (size_t)H * W; ++i) {
                size_t k = (n * MAPS + c) * H * W + i;
                t[k] = (float)(a[c] * (x[k] - mean) * invstd + b[c]);
            }
    }
}

int main(int argc, char **argv) {
    const char *device = argc > 1 && strcmp(argv[1], "-") != 0 ? argv[1] : NULL;
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    if (steps < 2)
        steps = 2;
    int rc = 1;
    clnorm_context *ctx = NULL;
    clnorm_batchnorm *bn = NULL;
    clnorm_tensor x = {0}, y = {0}, dy = {0};
    float *hx = malloc(NUMEL * sizeof *hx), *ht = malloc(NUMEL * sizeof *ht), *hy = malloc(NUMEL * sizeof *hy),
          *hdy = malloc(NUMEL * sizeof *hdy);
    float scale[MAPS], bias[MAPS], dscale[MAPS], dbias[MAPS];
    double first = 0.0, last = 0.0;
    if (!hx || !ht || !hy || !hdy) {
        fprintf(stderr, "clnorm-train: out of host memory\n");
        goto done;
    }

    CHECK(clnorm_context_create(device, &ctx));
    printf("device: %s\n", clnorm_context_device_name(ctx));
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, MAPS); /* BatchNorm2D(4): scale ~ N(1, 0.01), bias 0 */
    cfg.epsilon = EPS;
    cfg.name = "bn";
    CHECK(clnorm_batchnorm_create(ctx, &cfg, &bn));
    const size_t shape[4] = {BATCH, MAPS, H, W};
    CHECK(clnorm_tensor_create(ctx, 4, shape, CLNORM_F32, NULL, &x));
    CHECK(clnorm_tensor_create(ctx, 4, shape, CLNORM_F32, NULL, &y));
    CHECK(clnorm_tensor_create(ctx, 4, shape, CLNORM_F32, NULL, &dy));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_SCALE, scale, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_BIAS, bias, MAPS));

    for (int step = 0; step < steps; ++step) {
        make_batch(hx, ht);
        CHECK(clnorm_tensor_write(ctx, &x, hx));
        CHECK(clnorm_batchnorm_forward(bn, 1, &x, &y));
        CHECK(clnorm_tensor_read(ctx, &y, hy));
        double loss = 0.0;
        for (size_t i = 0; i < NUMEL; ++i) {
            double d = (double)hy[i] - ht[i];
            loss += d * d;
            hdy[i] = (float)(2.0 * d / NUMEL);
        }
        loss /= NUMEL;
        CHECK(clnorm_tensor_write(ctx, &dy, hdy));
        CHECK(clnorm_batchnorm_backward(bn, &x, &dy, NULL, 1.0f, 0.0f)); /* grads = this step's gradients */
        CHECK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, dscale, MAPS));
        CHECK(clnorm_batchnorm_read(bn, CLNORM_BIAS_GRAD, dbias, MAPS));
        for (int c = 0; c < MAPS; ++c) {
            scale[c] -= LR * dscale[c];
            bias[c] -= LR * dbias[c];
        }
        CHECK(clnorm_batchnorm_write(bn, CLNORM_SCALE, scale, MAPS));
        CHECK(clnorm_batchnorm_write(bn, CLNORM_BIAS, bias, MAPS));
        printf("step %3d  loss %.6e\n", step, loss);
        if (step == 0)
            first = loss;
        last = loss;
    }
    printf("scale:");
    for (int c = 0; c < MAPS; ++c)
        printf(" %.4f", scale[c]);
    printf("   (target 2 0.5 -1 1.5)\nbias: ");
    for (int c = 0; c < MAPS; ++c)
        printf(" %.4f", bias[c]);
    printf("   (target 0.3 -0.7 1 0)\n");
    if (!(last < (steps >= 10 ? first * 1e-3 : first))) {
        fprintf(stderr, "clnorm-train: the loss did not fall enough: %.6e -> %.6e\n", first, last);
        goto done;
    }
    printf("loss %.6e -> %.6e: ok\n", first, last);
    rc = 0;
done:
    clnorm_tensor_release(&x);
    clnorm_tensor_release(&y);
    clnorm_tensor_release(&dy);
    clnorm_batchnorm_destroy(bn);
    clnorm_context_destroy(ctx);
    free(hx);
    free(ht);
    free(hy);
    free(hdy);
    return rc;
}
