/*
 * clnorm-sync-bench — cost of synchronised BatchNorm (clnorm_mpi) against the plain layer on the same per-rank
 * shape: median ms of one training step (forward + backward, finished) of a BatchNorm3D, plain and synchronised,
 * the difference, the median latency of the two exchanges alone (an MPI_Allgather of the 256-byte header and
 * one of the block, as the library sends them) and the bytes each rank sends per step.
 *
 * Run with mpirun at 1, 2, 3, 4 ranks:  for n in 1 2 3 4; do mpirun -np $n build/clnorm-sync-bench; done
 * Options: [DEVICE [BATCH MAPS D H W [ITERS]]]   (default pocl, 4 32 8 16 16, 20 iterations; --smoke: 3).
 * Speed is never asserted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm_mpi.h"

static int rank, nranks;

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}
/* the slowest rank's time of each iteration is the step's time */
static double slowest(double t) {
    double m = 0.0;
    MPI_Allreduce(&t, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        clnorm_status st_ = (call);                                                                                    \
        if (st_ != CLNORM_SUCCESS) {                                                                                   \
            fprintf(stderr, "rank %d: %s: %s: %s\n", rank, #call, clnorm_status_string(st_), clnorm_last_error());     \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                                              \
        }                                                                                                              \
    } while (0)

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    int smoke = argc > 1 && strcmp(argv[1], "--smoke") == 0, a = smoke ? 2 : 1;
    const char *device = argc > a && strcmp(argv[a], "-") != 0 && !smoke ? argv[a] : "pocl";
    size_t shape[5] = {4, 32, 8, 16, 16};
    if (smoke)
        shape[0] = 2, shape[1] = 4, shape[2] = 4, shape[3] = 8, shape[4] = 8;
    for (int i = 0; i < 5 && argc > a + 1 + i; ++i)
        shape[i] = (size_t)atol(argv[a + 1 + i]);
    int iters = smoke ? 3 : (argc > a + 6 ? atoi(argv[a + 6]) : 20);
    clnorm_context *ctx = NULL;
    CHECK(clnorm_context_create(device, &ctx));
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 3, shape[1]);
    clnorm_batchnorm *plain = NULL, *sync = NULL;
    CHECK(clnorm_batchnorm_create(ctx, &cfg, &plain));
    CHECK(clnorm_batchnorm_create(ctx, &cfg, &sync));
    size_t n = shape[0] * shape[1] * shape[2] * shape[3] * shape[4];
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; ++i)
        h[i] = (float)((i * 2654435761u) % 1000) * 0.001f;
    clnorm_tensor x, y, dy, dx;
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, h, &x));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &y));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, h, &dy));
    CHECK(clnorm_tensor_create(ctx, 5, shape, CLNORM_F32, NULL, &dx));
    double *tp = malloc(sizeof(double) * (size_t)iters), *ts = malloc(sizeof(double) * (size_t)iters),
           *tx = malloc(sizeof(double) * (size_t)iters);
    size_t groups = shape[1], hdr = 256;
    float *blk = calloc(groups * 3 + 1, sizeof(float)), *all = calloc((groups * 3 + 1) * (size_t)nranks, sizeof(float));
    char *hb = calloc(hdr, 1), *hall = calloc(hdr * (size_t)nranks, 1);
    for (int warm = 0; warm < 2; ++warm) { /* builds the kernels, fills caches */
        CHECK(clnorm_batchnorm_forward(plain, 1, &x, &y));
        CHECK(clnorm_batchnorm_backward(plain, &x, &dy, &dx, 1.0f, 0.0f));
        CHECK(clnorm_batchnorm_forward_mpi(MPI_COMM_WORLD, sync, 1, &x, &y));
        CHECK(clnorm_batchnorm_backward_mpi(MPI_COMM_WORLD, sync, &x, &dy, &dx, 1.0f, 0.0f));
        CHECK(clnorm_context_finish(ctx));
    }
    for (int it = 0; it < iters; ++it) {
        /* interleaved: plain step, synchronised step, the exchanges alone */
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        CHECK(clnorm_batchnorm_forward(plain, 1, &x, &y));
        CHECK(clnorm_batchnorm_backward(plain, &x, &dy, &dx, 1.0f, 0.0f));
        CHECK(clnorm_context_finish(ctx));
        tp[it] = slowest(MPI_Wtime() - t0);
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        CHECK(clnorm_batchnorm_forward_mpi(MPI_COMM_WORLD, sync, 1, &x, &y));
        CHECK(clnorm_batchnorm_backward_mpi(MPI_COMM_WORLD, sync, &x, &dy, &dx, 1.0f, 0.0f));
        CHECK(clnorm_context_finish(ctx));
        ts[it] = slowest(MPI_Wtime() - t0);
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        for (int dir = 0; dir < 2; ++dir) { /* forward (3 floats per group) and backward (2) */
            MPI_Allgather(hb, (int)hdr, MPI_BYTE, hall, (int)hdr, MPI_BYTE, MPI_COMM_WORLD);
            MPI_Allgather(blk, (int)(groups * (dir ? 2 : 3) + 1), MPI_FLOAT, all, (int)(groups * (dir ? 2 : 3) + 1),
                          MPI_FLOAT, MPI_COMM_WORLD);
        }
        tx[it] = slowest(MPI_Wtime() - t0);
    }
    double mp = median(tp, iters) * 1e3, ms = median(ts, iters) * 1e3, mx = median(tx, iters) * 1e3;
    size_t bytes = 2 * hdr + (groups * 3 + 1) * sizeof(float) + (groups * 2 + 1) * sizeof(float);
    if (rank == 0) {
        printf("ranks %d  shape/rank (%zu,%zu,%zu,%zu,%zu)  plain step %.3f ms  sync step %.3f ms  overhead %.3f ms  "
               "exchanges alone %.3f ms  bytes sent/rank/step %zu (4 allgathers)  on %s\n",
               nranks, shape[0], shape[1], shape[2], shape[3], shape[4], mp, ms, ms - mp, mx, bytes,
               clnorm_context_device_name(ctx));
        fflush(stdout);
    }
    free(tp), free(ts), free(tx), free(blk), free(all), free(hb), free(hall), free(h);
    clnorm_tensor_release(&x), clnorm_tensor_release(&y), clnorm_tensor_release(&dy), clnorm_tensor_release(&dx);
    clnorm_batchnorm_destroy(plain);
    clnorm_batchnorm_destroy(sync);
    clnorm_context_destroy(ctx);
    MPI_Finalize();
    return 0;
}
