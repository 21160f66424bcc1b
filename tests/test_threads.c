/*
 * Threads and determinism. One sequence of NCALLS layer calls (training forward, backward, inference, in turn,
 * over three layers: BatchNorm2D F32 NCHW, BatchNorm1D F16 NHWC, BatchNorm BF16) on its own context; after each
 * call the output tensor and one parameter field are read back and hashed (FNV-1a over the bytes).
 *  - determinism: the sequence run twice on the main thread gives bit-identical outputs at every call;
 *  - threads: two pthreads, each with its own context and layers, run the sequence at the same time, and every
 *    call's output is bit-identical to the single-threaded run.
 * ctest runs the suite under both kernel strategies. The worker threads never call cmocka (not thread-safe):
 * they record the first failure and the main thread asserts.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define NCALLS 1000
#define NLAYERS 3
#define NINPUTS 4

typedef struct {
    int nd, ndim;
    size_t shape[5];
    clnorm_dtype dtype;
    clnorm_layout layout;
} layer_spec;

static const layer_spec specs[NLAYERS] = {
    {2, 4, {4, 3, 5, 7}, CLNORM_F32, CLNORM_NCHW},
    {1, 3, {3, 5, 11}, CLNORM_F16, CLNORM_NHWC},
    {0, 2, {7, 6}, CLNORM_BF16, CLNORM_NCHW},
};

/* inputs, generated once on the main thread (the test RNG is not thread-safe), already in storage bytes */
static void *g_x[NLAYERS][NINPUTS], *g_dy[NLAYERS][NINPUTS];

typedef struct {
    uint64_t hash[NCALLS];
    int failed;
    char msg[512];
} run_result;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

#define RUN_CHECK(call)                                                                                                \
    do {                                                                                                               \
        clnorm_status st_ = (call);                                                                                    \
        if (st_ != CLNORM_SUCCESS) {                                                                                   \
            if (!r->failed)                                                                                            \
                snprintf(r->msg, sizeof r->msg, "call %d: %s: %s: %s", k, #call, clnorm_status_string(st_),            \
                         clnorm_last_error());                                                                         \
            r->failed = 1;                                                                                             \
            goto done;                                                                                                 \
        }                                                                                                              \
    } while (0)

static void run_sequence(run_result *r) {
    clnorm_context *ctx = NULL;
    clnorm_batchnorm *bn[NLAYERS] = {NULL};
    clnorm_tensor x[NLAYERS][NINPUTS], dy[NLAYERS][NINPUTS], y[NLAYERS], dx[NLAYERS];
    memset(x, 0, sizeof x), memset(dy, 0, sizeof dy), memset(y, 0, sizeof y), memset(dx, 0, sizeof dx);
    void *out = NULL;
    float params[64];
    int k = -1;
    memset(r, 0, sizeof *r);
    RUN_CHECK(tu_context_create(&ctx));
    out = malloc(4096);
    for (int l = 0; l < NLAYERS; l++) {
        const layer_spec *s = &specs[l];
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, s->nd, s->shape[1]);
        cfg.dtype = s->dtype;
        cfg.layout = s->layout;
        cfg.seed = 99 + (uint64_t)l;
        RUN_CHECK(clnorm_batchnorm_create(ctx, &cfg, &bn[l]));
        for (int v = 0; v < NINPUTS; v++) {
            RUN_CHECK(clnorm_tensor_create(ctx, s->ndim, s->shape, s->dtype, g_x[l][v], &x[l][v]));
            RUN_CHECK(clnorm_tensor_create(ctx, s->ndim, s->shape, s->dtype, g_dy[l][v], &dy[l][v]));
            x[l][v].layout = dy[l][v].layout = s->layout;
        }
        RUN_CHECK(clnorm_tensor_create(ctx, s->ndim, s->shape, s->dtype, NULL, &y[l]));
        RUN_CHECK(clnorm_tensor_create(ctx, s->ndim, s->shape, s->dtype, NULL, &dx[l]));
        y[l].layout = dx[l].layout = s->layout;
    }
    for (k = 0; k < NCALLS; k++) {
        int l = k % NLAYERS, op = (k / NLAYERS) % 3, v = (k * 7 / NLAYERS) % NINPUTS;
        size_t bytes = tu_numel(specs[l].ndim, specs[l].shape) * tu_esize(specs[l].dtype), G = specs[l].shape[1];
        uint64_t h = 1469598103934665603ull;
        if (op == 0) { /* training forward: y and the running variance */
            RUN_CHECK(clnorm_batchnorm_forward(bn[l], 1, &x[l][v], &y[l]));
            RUN_CHECK(clnorm_tensor_read(ctx, &y[l], out));
            RUN_CHECK(clnorm_batchnorm_read(bn[l], CLNORM_RUNNING_VAR, params, G));
        } else if (op == 1) { /* backward of the last training forward: dx and the accumulated scale gradient */
            RUN_CHECK(clnorm_batchnorm_backward(bn[l], &x[l][v], &dy[l][v], &dx[l], 1.0f, 0.5f));
            RUN_CHECK(clnorm_tensor_read(ctx, &dx[l], out));
            RUN_CHECK(clnorm_batchnorm_read(bn[l], CLNORM_SCALE_GRAD, params, G));
        } else { /* inference */
            RUN_CHECK(clnorm_batchnorm_forward(bn[l], 0, &x[l][v], &y[l]));
            RUN_CHECK(clnorm_tensor_read(ctx, &y[l], out));
            RUN_CHECK(clnorm_batchnorm_read(bn[l], CLNORM_RUNNING_MEAN, params, G));
        }
        h = fnv(h, out, bytes);
        r->hash[k] = fnv(h, params, G * 4);
    }
done:
    for (int l = 0; l < NLAYERS; l++) {
        for (int v = 0; v < NINPUTS; v++)
            clnorm_tensor_release(&x[l][v]), clnorm_tensor_release(&dy[l][v]);
        clnorm_tensor_release(&y[l]), clnorm_tensor_release(&dx[l]);
        clnorm_batchnorm_destroy(bn[l]);
    }
    free(out);
    clnorm_context_destroy(ctx);
}

static void *thread_main(void *arg) {
    run_sequence((run_result *)arg);
    return NULL;
}

static void make_inputs(void) {
    tu_case("thread inputs");
    for (int l = 0; l < NLAYERS; l++) {
        size_t n = tu_numel(specs[l].ndim, specs[l].shape);
        float *f = tu_floats(n);
        for (int v = 0; v < NINPUTS; v++) {
            g_x[l][v] = tu_malloc(n * 4);
            g_dy[l][v] = tu_malloc(n * 4);
            tu_fill_normal(f, n, 0.5 * v, 1.0 + v);
            tu_encode(specs[l].dtype, f, g_x[l][v], n);
            tu_fill_normal(f, n, 0.0, 1.0);
            tu_encode(specs[l].dtype, f, g_dy[l][v], n);
        }
        free(f);
    }
}

static void free_inputs(void) {
    for (int l = 0; l < NLAYERS; l++)
        for (int v = 0; v < NINPUTS; v++)
            free(g_x[l][v]), free(g_dy[l][v]);
}

static void expect_same(const run_result *a, const run_result *b, const char *what) {
    if (a->failed)
        tu_fail_at(__FILE__, __LINE__, "%s: reference run failed: %s", what, a->msg);
    if (b->failed)
        tu_fail_at(__FILE__, __LINE__, "%s: run failed: %s", what, b->msg);
    for (int k = 0; k < NCALLS; k++)
        if (a->hash[k] != b->hash[k])
            tu_fail_at(__FILE__, __LINE__, "%s: call %d (layer %d, op %d) differs from the single-threaded run", what,
                       k, k % NLAYERS, (k / NLAYERS) % 3);
}

static run_result g_single, g_again, g_thr[2];
static int g_have_single;

static void single_run(void) {
    if (g_have_single)
        return;
    make_inputs();
    tu_case("single-threaded run");
    run_sequence(&g_single);
    g_have_single = 1;
}

static void test_deterministic(void **state) {
    (void)state;
    single_run();
    tu_case("determinism");
    run_sequence(&g_again);
    expect_same(&g_single, &g_again, "second single-threaded run");
}

static void test_two_threads(void **state) {
    (void)state;
    single_run();
    tu_case("two threads");
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        TU_TRUE(pthread_create(&t[i], NULL, thread_main, &g_thr[i]) == 0);
    for (int i = 0; i < 2; i++)
        TU_TRUE(pthread_join(t[i], NULL) == 0);
    expect_same(&g_single, &g_thr[0], "thread 0");
    expect_same(&g_single, &g_thr[1], "thread 1");
    free_inputs();
    g_have_single = 0;
}

static void *error_thread(void *arg) {
    (void)arg;
    clnorm_context *c = NULL;
    clnorm_status st = clnorm_context_create("no-such-device-in-this-thread", &c);
    return (void *)(intptr_t)(st == CLNORM_ERROR_NO_DEVICE && clnorm_last_error()[0] != '\0');
}

static void test_last_error_is_per_thread(void **state) {
    (void)state;
    tu_case("last error per thread");
    clnorm_tensor t;
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_tensor_create(tu_ctx, 1, (size_t[]){4}, CLNORM_F32, NULL, &t));
    char mine[512];
    snprintf(mine, sizeof mine, "%s", clnorm_last_error());
    pthread_t th;
    void *ok = NULL;
    TU_TRUE(pthread_create(&th, NULL, error_thread, NULL) == 0);
    TU_TRUE(pthread_join(th, &ok) == 0);
    TU_TRUE(ok != NULL);
    TU_TRUE(strcmp(mine, clnorm_last_error()) == 0);
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_last_error_is_per_thread),
    };
    return cmocka_run_group_tests_name("threads", tests, tu_group_setup, tu_group_teardown);
}
