/*
 * clnorm-sync-train — data-parallel training of one BatchNorm3D over MPI ranks with synchronised statistics
 * (clnorm_mpi): every rank holds its own shard of each batch, of a different size per rank; the layer's
 * forward and backward use the statistics and gradients of the whole batch (clnorm_batchnorm_forward_mpi,
 * clnorm_batchnorm_backward_mpi), so every rank takes the same SGD step.
 *
 * The problem: x of shape (shard, maps, d, h, w) drawn per map from N(mu_c, sigma_c^2); the target is
 *     t = a[c] * (x - mu_c) / sigma_c + b[c]
 * so a BatchNorm3D whose scale reaches a and bias reaches b fits it (up to the batch's sampling noise). Each step:
 *     y = bn(x)                                              synchronised training forward
 *     loss = sum over all ranks of (y - t)^2 / global numel   (MPI_Allreduce of the local sums, for printing)
 *     dy = 2 (y - t) / global numel
 *     bn.backward(dy)                                        synchronised: global SCALE_GRAD / BIAS_GRAD
 *     scale -= lr * dscale; bias -= lr * dbias               the same on every rank
 * Rank 0 prints the loss; at the end every rank's running statistics (and parameters) are compared bit for bit.
 * Exit status 1 when the loss does not fall 10x or the ranks disagree.
 *
 * Usage: mpirun -np 4 clnorm-sync-train [DEVICE [STEPS]]   (DEVICE as for clnorm_context_create; default "pocl")
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm_mpi.h"

enum { MAPS = 3, D = 4, H = 4, W = 4 };
#define PER ((size_t)MAPS * D * H * W)
#define LR 1.0f

static const float mu[MAPS] = {2.0f, -1.0f, 0.5f}, sigma[MAPS] = {0.5f, 2.0f, 1.0f};
static const float a[MAPS] = {1.5f, 0.5f, 2.0f}, b[MAPS] = {0.3f, -0.7f, 1.0f};

static uint64_t rng;
static double normal(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double v = (double)(rng >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static int rank, nranks;
static int failed(clnorm_status st, const char *what) {
    if (st == CLNORM_SUCCESS)
        return 0;
    fprintf(stderr, "clnorm-sync-train rank %d: %s failed: %s\n  %s\n", rank, what, clnorm_status_string(st),
            clnorm_last_error());
    return 1;
}
#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        if (failed((call), #call))                                                                                     \
            goto done;                                                                                                 \
    } while (0)

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    const char *device = argc > 1 && strcmp(argv[1], "-") != 0 ? argv[1] : "pocl";
    int steps = argc > 2 ? atoi(argv[2]) : 30, rc = 1, ok = 1;
    size_t shard = 2 + (size_t)(rank % 3), total = 0; /* 2, 3, 4, 2, ... values of the batch per rank */
    for (int r = 0; r < nranks; ++r)
        total += 2 + (size_t)(r % 3);
    clnorm_context *ctx = NULL;
    clnorm_batchnorm *bn = NULL;
    clnorm_tensor x, y, dy;
    memset(&x, 0, sizeof x), memset(&y, 0, sizeof y), memset(&dy, 0, sizeof dy);
    size_t n = shard * PER;
    float *hx = malloc(n * 4), *hy = malloc(n * 4), *ht = malloc(n * 4), *hdy = malloc(n * 4);
    double first = 0.0, last = 0.0;
    if (!hx || !hy || !ht || !hdy)
        goto done;
    CHECK(clnorm_context_create(device, &ctx));
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 3, MAPS);
    cfg.seed = 42; /* the same initial scale on every rank */
    CHECK(clnorm_batchnorm_create(ctx, &cfg, &bn));
    size_t shape[5] = {shard, MAPS, D, H, W};
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &x));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &y));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &dy));
    if (rank == 0)
        printf("clnorm-sync-train: BatchNorm3D, %d ranks, batch %zu split as shards of 2, 3, 4, ... on %s\n", nranks,
               total, clnorm_context_device_name(ctx));
    for (int step = 0; step < steps; ++step) {
        rng = 0x9e3779b97f4a7c15ull * (uint64_t)(step + 1) + (uint64_t)rank * 7919u;
        for (size_t i = 0; i < n; ++i) {
            size_t c = (i / (D * H * W)) % MAPS;
            double z = normal();
            hx[i] = (float)(mu[c] + sigma[c] * z);
            ht[i] = (float)(a[c] * z + b[c]);
        }
        CHECK(clnorm_tensor_write(ctx, &x, hx));
        CHECK(clnorm_batchnorm_forward_mpi(MPI_COMM_WORLD, bn, 1, &x, &y));
        CHECK(clnorm_tensor_read(ctx, &y, hy));
        double local = 0.0, loss = 0.0, gnumel = (double)total * PER;
        for (size_t i = 0; i < n; ++i) {
            double e = (double)hy[i] - ht[i];
            local += e * e;
            hdy[i] = (float)(2.0 * e / gnumel);
        }
        MPI_Allreduce(&local, &loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        loss /= gnumel;
        if (step == 0)
            first = loss;
        last = loss;
        if (rank == 0)
            printf("step %2d  loss %.6f\n", step, loss);
        CHECK(clnorm_tensor_write(ctx, &dy, hdy));
        CHECK(clnorm_batchnorm_backward_mpi(MPI_COMM_WORLD, bn, &x, &dy, NULL, 1.0f, 0.0f));
        float sc[MAPS], bi[MAPS], gs[MAPS], gb[MAPS];
        CHECK(clnorm_batchnorm_read(bn, CLNORM_SCALE, sc, MAPS));
        CHECK(clnorm_batchnorm_read(bn, CLNORM_BIAS, bi, MAPS));
        CHECK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, gs, MAPS));
        CHECK(clnorm_batchnorm_read(bn, CLNORM_BIAS_GRAD, gb, MAPS));
        for (int c = 0; c < MAPS; ++c) {
            sc[c] -= LR * gs[c];
            bi[c] -= LR * gb[c];
        }
        CHECK(clnorm_batchnorm_write(bn, CLNORM_SCALE, sc, MAPS));
        CHECK(clnorm_batchnorm_write(bn, CLNORM_BIAS, bi, MAPS));
    }
    /* every rank's running statistics and parameters, bit for bit */
    float mine[4 * MAPS], *all = malloc(sizeof mine * (size_t)nranks);
    CHECK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, mine, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, mine + MAPS, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_SCALE, mine + 2 * MAPS, MAPS));
    CHECK(clnorm_batchnorm_read(bn, CLNORM_BIAS, mine + 3 * MAPS, MAPS));
    if (!all)
        goto done;
    MPI_Allgather(mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
    for (int r = 1; r < nranks; ++r)
        ok &= memcmp(all, all + (size_t)r * 4 * MAPS, sizeof mine) == 0;
    free(all);
    if (rank == 0) {
        printf("running mean:");
        for (int c = 0; c < MAPS; ++c)
            printf(" %.5f", mine[c]);
        printf("   (the data's: %.1f %.1f %.1f)\nrunning var: ", mu[0], mu[1], mu[2]);
        for (int c = 0; c < MAPS; ++c)
            printf(" %.5f", mine[MAPS + c]);
        printf("   (the data's: %.2f %.2f %.2f)\n", sigma[0] * sigma[0], sigma[1] * sigma[1], sigma[2] * sigma[2]);
        printf("running statistics and parameters %s on all %d ranks\n", ok ? "bit-identical" : "DIFFER", nranks);
        printf("loss %.6f -> %.6f\n", first, last);
    }
    rc = ok && steps > 0 && last < first / 10.0 ? 0 : 1;
done:
    clnorm_tensor_release(&x), clnorm_tensor_release(&y), clnorm_tensor_release(&dy);
    clnorm_batchnorm_destroy(bn);
    clnorm_context_destroy(ctx);
    free(hx), free(hy), free(ht), free(hdy);
    /* a failure on one rank leaves the others in a collective only if they were not told: the clnorm_mpi calls
       return every refusal on every rank, so a CHECK failure is seen everywhere and MPI_Finalize is reached */
    MPI_Finalize();
    return rc;
}
