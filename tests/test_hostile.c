/*
 * Faults and hostile input not covered by test_errors.c: a kernel build that fails (CLNORM_ERROR_BUILD with the
 * build log), device allocations beyond the device's limits (CLNORM_ERROR_DEVICE_MEMORY), shapes whose product
 * overflows size_t, ndim far outside 2..5, NaN / Inf in layer configs and backward factors, x / y overlapping
 * through sub-buffers of one parent, memory a call writes that is also another of its arguments (dscale passed as
 * scale...), 16-bit storage at odd byte offsets, wrong counts. Every refusal: the
 * documented status, a message naming the argument, and nothing written (sentinel-filled buffers compared bit
 * for bit after clnorm_context_finish).
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ref_bn.h"
#include "test_util.h"

#ifndef CLNORM_TEST_SOURCE_DIR
#error "CLNORM_TEST_SOURCE_DIR (the repository root) must be defined by the build"
#endif

static const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT, SH = CLNORM_ERROR_SHAPE;

/* ---- fixture: x, y, dy, dx (F32, SHAPE) and six parameter vectors, all sentinel-filled ----------------- */
#define NB 10
static tu_fixture fx;
static cl_mem b[NB]; /* fx.buf, by role */
static size_t bbytes[NB];
static const size_t SHAPE[4] = {4, 3, 5, 7}, N = 420, G = 3;
enum { X, Y, DY, DX, SC, BI, RM, RV, SM, SI };
static const char *const names[NB] = {"x", "y", "dy", "dx", "scale", "bias", "rm", "rv", "sm", "si"};

static void fix_make(void) {
    tu_fixture_init(&fx, 0x4000u);
    for (int i = 0; i < NB; i++) {
        bbytes[i] = i <= DX ? N * 4 + 256 : G * 4;
        b[i] = fx.buf[tu_fixture_add(&fx, names[i], bbytes[i])];
    }
}
#define fix_check(what) tu_fixture_check(&fx, (what))
static void fix_free(void) {
    tu_fixture_free(&fx);
    memset(b, 0, sizeof b);
}

/* the status, a message containing `names` (the argument), nothing written */
#define REFUSED(want, names, call)                                                                                     \
    do {                                                                                                               \
        TU_ERR(want, call);                                                                                            \
        if (!strstr(clnorm_last_error(), names))                                                                       \
            tu_fail_at(__FILE__, __LINE__, "%s: the message does not name \"%s\": \"%s\"", #call, names,                \
                       clnorm_last_error());                                                                           \
        fix_check(#call);                                                                                              \
    } while (0)

static clnorm_tensor view(int i, size_t off, int ndim, const size_t *shape) {
    return tu_view(b[i], off, ndim, shape);
}

/* ---- sizes whose product overflows size_t, or whose bytes do ------------------------------------------ */
static void test_size_overflow(void **state) {
    (void)state;
    tu_case("size overflow");
    fix_make();
    const size_t h = (size_t)1 << (sizeof(size_t) * 4); /* 2^32 on 64-bit */
    const size_t wrap[5] = {h, h, 1, 1, 1};          /* product exactly 2^64: wraps to 0 */
    const size_t wrap2[5] = {3, h, h / 2, 2, 5};     /* wraps to a small value times 3 * 5 */
    const size_t bytes_wrap[5] = {h / 2, h / 2, 2, 1, 1}; /* 2^63 elements: the F32 byte count overflows */
    const size_t huge[5] = {SIZE_MAX, 1, 1, 1, 1};
    const size_t *bad[] = {wrap, wrap2, bytes_wrap, huge};
    clnorm_tensor y = view(Y, 0, 4, SHAPE), dy = view(DY, 0, 4, SHAPE), dx = view(DX, 0, 4, SHAPE),
                  x = view(X, 0, 4, SHAPE);
    for (size_t k = 0; k < 4; k++) {
        int nd = k == 3 ? 2 : 5;
        tu_case("size overflow %s", tu_shape_str(nd, bad[k]));
        clnorm_tensor bx = view(X, 0, nd, bad[k]), by = view(Y, 0, nd, bad[k]);
        for (int m = 0; m < 2; m++) {
            REFUSED(SH, "overflows",
                    clnorm_bn_forward_training(tu_ctx, m, &bx, &y, b[SC], b[BI], 0.1, 1e-5, b[RM], b[RV], b[SM],
                                               b[SI]));
            REFUSED(SH, "overflows",
                    clnorm_bn_forward_inference(tu_ctx, m, &x, &by, b[SC], b[BI], b[RM], b[RV], 1e-5));
            REFUSED(SH, "overflows",
                    clnorm_bn_backward(tu_ctx, m, &bx, &dy, &dx, b[SC], NULL, NULL, 1e-5, b[SM], b[SI]));
            REFUSED(SH, "overflows", clnorm_bn_backward(tu_ctx, m, &x, &dy, &by, b[SC], NULL, NULL, 1e-5, NULL, NULL));
        }
        clnorm_tensor t;
        REFUSED(SH, "overflows", clnorm_tensor_create(tu_ctx, nd, bad[k], CLNORM_F32, NULL, &t));
        float host[4];
        REFUSED(SH, "overflows", clnorm_tensor_read(tu_ctx, &bx, host));
        REFUSED(SH, "overflows", clnorm_tensor_write(tu_ctx, &bx, host));
    }
    /* no overflow, but far more than the buffer: BUFFER_TOO_SMALL, whatever the dtype */
    const size_t big[5] = {(size_t)1 << 20, (size_t)1 << 20, (size_t)1 << 20, 1, 1};
    for (int d = 0; d < 3; d++) {
        clnorm_tensor bx = view(X, 0, 5, big), by = view(Y, 0, 5, big);
        bx.dtype = by.dtype = (clnorm_dtype)d;
        REFUSED(CLNORM_ERROR_BUFFER_TOO_SMALL, "x",
                clnorm_bn_forward_training(tu_ctx, CLNORM_BN_SPATIAL, &bx, &by, NULL, NULL, 0.1, 1e-5, NULL, NULL,
                                           NULL, NULL));
    }
    fix_free();
}

/* ---- ndim far outside 2..5, on every entry point that takes a tensor ------------------------------------ */
static void test_ndim(void **state) {
    (void)state;
    fix_make();
    const int bad[] = {INT_MIN, -5, 0, 1, 6, 7, 1000, INT_MAX};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        tu_case("ndim %d", bad[k]);
        clnorm_tensor x = view(X, 0, 4, SHAPE), y = view(Y, 0, 4, SHAPE), dy = view(DY, 0, 4, SHAPE),
                      dx = view(DX, 0, 4, SHAPE), w = view(Y, 0, 4, SHAPE);
        w.ndim = bad[k];
        REFUSED(SH, "ndim", clnorm_bn_forward_training(tu_ctx, CLNORM_BN_SPATIAL, &x, &w, NULL, NULL, 0.1, 1e-5, NULL,
                                                       NULL, NULL, NULL));
        REFUSED(SH, "ndim", clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_PER_ACTIVATION, &w, &y, b[SC], b[BI], b[RM],
                                                        b[RV], 1e-5));
        REFUSED(SH, "ndim", clnorm_bn_backward(tu_ctx, CLNORM_BN_SPATIAL, &x, &w, &dx, NULL, NULL, NULL, 1e-5, NULL,
                                               NULL));
        REFUSED(SH, "ndim", clnorm_bn_backward(tu_ctx, CLNORM_BN_SPATIAL, &x, &dy, &w, NULL, NULL, NULL, 1e-5, NULL,
                                               NULL));
        float host[4];
        REFUSED(SH, "ndim", clnorm_tensor_read(tu_ctx, &w, host));
        REFUSED(SH, "ndim", clnorm_tensor_write(tu_ctx, &w, host));
        /* the layer: PuzzleLib's message "Data must be 4d tensor" */
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, 2, 3);
        clnorm_batchnorm *bn = NULL;
        TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        REFUSED(SH, "4d tensor", clnorm_batchnorm_forward(bn, 1, &w, &y));
        REFUSED(SH, "4d tensor", clnorm_batchnorm_forward(bn, 0, &x, &w));
        clnorm_batchnorm_destroy(bn);
        /* clnorm_tensor_make clamps its copy; validation still refuses the ndim */
        const size_t shape5[5] = {4, 3, 5, 7, 1};
        clnorm_tensor m = clnorm_tensor_make(b[X], bad[k], shape5);
        TU_TRUE(m.ndim == bad[k]);
        REFUSED(SH, "ndim", clnorm_tensor_read(tu_ctx, &m, host));
    }
    fix_free();
}

/* ---- NaN / Inf where a number is expected ------------------------------------------------------------- */
static void test_nan_inf_arguments(void **state) {
    (void)state;
    tu_case("NaN/Inf arguments");
    fix_make();
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 4; k++) {
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm *bn = NULL;
        clnorm_batchnorm_config_init(&cfg, 2, 3);
        cfg.epsilon = bad[k];
        TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        TU_TRUE(bn == NULL && strstr(clnorm_last_error(), "epsilon"));
        clnorm_batchnorm_config_init(&cfg, 2, 3);
        cfg.init_factor = bad[k];
        TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        TU_TRUE(bn == NULL && strstr(clnorm_last_error(), "init_factor"));
        clnorm_batchnorm_config_init(&cfg, 2, 3);
        cfg.min_factor = bad[k];
        TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        TU_TRUE(bn == NULL && strstr(clnorm_last_error(), "min_factor"));
        clnorm_batchnorm_config_init(&cfg, 2, 3);
        cfg.sscale = bad[k];
        TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        TU_TRUE(bn == NULL && strstr(clnorm_last_error(), "sscale"));
    }
    /* an epsilon that is > 0 in double but 0 (or denormal) in float: refused, not NaN for constant groups */
    const double tiny[] = {1e-300, 1e-45, 1e-39};
    clnorm_tensor tx = view(X, 0, 4, SHAPE), ty = view(Y, 0, 4, SHAPE);
    for (int k = 0; k < 3; k++)
        REFUSED(IA, "epsilon", clnorm_bn_forward_training(tu_ctx, CLNORM_BN_SPATIAL, &tx, &ty, NULL, NULL, 0.1,
                                                          tiny[k], NULL, NULL, NULL, NULL));
    /* the layer's backward factors */
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    clnorm_tensor x = view(X, 0, 4, SHAPE), y = view(Y, 0, 4, SHAPE), dy = view(DY, 0, 4, SHAPE),
                  dx = view(DX, 0, 4, SHAPE);
    float v[420];
    tu_fill_normal(v, N, 0.0, 1.0);
    tu_write(b[X], 0, v, N * 4);
    TU_OK(clnorm_batchnorm_forward(bn, 1, &x, &y));
    tu_finish();
    float grads[3], after[3];
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, grads, 3));
    tu_fixture_fill(&fx);
    for (int k = 0; k < 4; k++) {
        REFUSED(IA, "momentum", clnorm_batchnorm_backward(bn, &x, &dy, &dx, bad[k], 0.0f));
        REFUSED(IA, "momentum", clnorm_batchnorm_backward(bn, &x, &dy, &dx, 1.0f, bad[k]));
    }
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, after, 3));
    TU_TRUE(memcmp(grads, after, sizeof grads) == 0);
    clnorm_batchnorm_destroy(bn);
    fix_free();
}

/* ---- overlap through sub-buffers of one parent ---------------------------------------------------------- */
static void test_subbuffer_overlap(void **state) {
    (void)state;
    tu_case("sub-buffer overlap");
    fix_make();
    cl_uint align_bits = 0;
    clGetDeviceInfo(clnorm_context_device(tu_ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits,
                    NULL);
    size_t A = align_bits / 8 ? align_bits / 8 : 128;
    size_t R = (N * 4 + A - 1) / A * A, pbytes = 4 * A + 2 * R;
    cl_mem parent = tu_buffer(pbytes);
    tu_sentinel_fill(parent, pbytes, 0x77);
    cl_int err;
    cl_buffer_region r1 = {0, N * 4 + A}, r2 = {A, N * 4 + A}, r3 = {2 * A + R, N * 4};
    cl_mem s1 = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r1, &err);
    TU_TRUE(err == CL_SUCCESS);
    cl_mem s2 = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r2, &err);
    TU_TRUE(err == CL_SUCCESS);
    cl_mem s3 = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r3, &err);
    TU_TRUE(err == CL_SUCCESS);
    clnorm_tensor x1 = tu_view(s1, 0, 4, SHAPE), y2 = tu_view(s2, 4, 4, SHAPE), xp = tu_view(parent, A, 4, SHAPE),
                  y2same = tu_view(s2, 0, 4, SHAPE), x1same = tu_view(s1, A, 4, SHAPE), y3 = tu_view(s3, 0, 4, SHAPE),
                  dy = view(DY, 0, 4, SHAPE);
    /* x in one sub-buffer, y in another, overlapping in the parent */
    REFUSED(IA, "overlap", clnorm_bn_forward_training(tu_ctx, CLNORM_BN_SPATIAL, &x1, &y2, NULL, NULL, 0.1, 1e-5, NULL,
                                                      NULL, NULL, NULL));
    REFUSED(IA, "overlap", clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_PER_ACTIVATION, &x1, &y2, b[SC], b[BI], b[RM],
                                                       b[RV], 1e-5));
    /* the parent and a sub-buffer */
    REFUSED(IA, "overlap", clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_SPATIAL, &xp, &y2, b[SC], b[BI], b[RM], b[RV],
                                                       1e-5));
    /* dx overlapping x, and dy, through sub-buffers */
    REFUSED(IA, "overlap", clnorm_bn_backward(tu_ctx, CLNORM_BN_SPATIAL, &x1, &dy, &y2, NULL, NULL, NULL, 1e-5, NULL,
                                              NULL));
    REFUSED(IA, "overlap", clnorm_bn_backward(tu_ctx, CLNORM_BN_SPATIAL, &dy, &x1, &y2, NULL, NULL, NULL, 1e-5, NULL,
                                              NULL));
    tu_finish();
    TU_TRUE(tu_sentinel_intact(parent, pbytes, 0x77, "parent after refused calls"));

    /* the same view through different handles (parent at A, s2 at 0, s1 at A) is in place: allowed, and right */
    float x[420], got[420], one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    double ref[420];
    tu_fill_normal(x, N, 0.0, 1.0);
    tu_write(parent, A, x, N * 4);
    cl_mem ones = tu_buffer_from(one, 3), zeros = tu_buffer_from(zero, 3), var = tu_buffer_from(one, 3);
    TU_OK(clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_SPATIAL, &xp, &y2same, ones, zeros, zeros, var, 1e-5));
    TU_OK(clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_SPATIAL, &x1same, &xp, ones, zeros, zeros, var, 1e-5));
    tu_finish();
    tu_read(parent, A, got, N * 4);
    for (size_t i = 0; i < N; i++)
        ref[i] = (double)x[i] / (1.0 + 1e-5); /* twice x / sqrt(1 + eps) */
    TU_TRUE(tu_compare("in place through sub-buffers", got, ref, N, TU_FWD_ATOL, TU_FWD_RTOL));
    /* disjoint sub-buffers of one parent: fine */
    TU_OK(clnorm_bn_forward_training(tu_ctx, CLNORM_BN_SPATIAL, &xp, &y3, NULL, NULL, 0.1, 1e-5, NULL, NULL, NULL,
                                     NULL));
    tu_finish();
    {
        float xin[420], yout[420];
        double yref[420];
        tu_read(parent, A, xin, N * 4);
        tu_read(s3, 0, yout, N * 4);
        ref_bn_forward_training(CLNORM_BN_SPATIAL, 4, SHAPE, xin, NULL, NULL, 0.1, 1e-5, NULL, NULL, yref, NULL, NULL,
                                NULL, NULL, NULL);
        TU_TRUE(tu_compare("y in a disjoint sub-buffer", yout, yref, N, TU_FWD_ATOL, TU_FWD_RTOL));
    }
    tu_release(&ones), tu_release(&zeros), tu_release(&var);
    tu_release(&s1), tu_release(&s2), tu_release(&s3), tu_release(&parent);
    fix_free();
}

/* ---- memory the call writes that is also another of its arguments ------------------------------------------ */
static void test_parameter_aliasing(void **state) {
    (void)state;
    tu_case("parameter aliasing");
    fix_make();
    const clnorm_bn_mode S = CLNORM_BN_SPATIAL;
    clnorm_tensor x = view(X, 0, 4, SHAPE), y = view(Y, 0, 4, SHAPE), dy = view(DY, 0, 4, SHAPE),
                  dx = view(DX, 0, 4, SHAPE), y64 = view(Y, 64, 4, SHAPE);
    /* training: two outputs in one buffer, an output over an input, y over a parameter */
    REFUSED(IA, "save_mean", clnorm_bn_forward_training(tu_ctx, S, &x, &y, b[SC], b[BI], 0.1, 1e-5, b[RM], b[RV],
                                                        b[RM], b[SI]));
    REFUSED(IA, "running_var", clnorm_bn_forward_training(tu_ctx, S, &x, &y, b[SC], b[BI], 0.1, 1e-5, b[RM], b[SC],
                                                          b[SM], b[SI]));
    REFUSED(IA, "scale", clnorm_bn_forward_training(tu_ctx, S, &x, &y, b[Y], b[BI], 0.1, 1e-5, b[RM], b[RV], b[SM],
                                                    b[SI]));
    /* inference: y over the mean */
    REFUSED(IA, "mean", clnorm_bn_forward_inference(tu_ctx, S, &x, &y, b[SC], b[BI], b[Y], b[RV], 1e-5));
    /* backward: dscale over scale, dbias over save_invstd, dscale over dbias, dx over dscale */
    REFUSED(IA, "dscale", clnorm_bn_backward(tu_ctx, S, &x, &dy, &dx, b[SC], b[SC], b[BI], 1e-5, b[SM], b[SI]));
    REFUSED(IA, "save_invstd", clnorm_bn_backward(tu_ctx, S, &x, &dy, &dx, b[SC], b[RM], b[SI], 1e-5, b[SM], b[SI]));
    REFUSED(IA, "dbias", clnorm_bn_backward(tu_ctx, S, &x, &dy, &dx, b[SC], b[RM], b[RM], 1e-5, b[SM], b[SI]));
    REFUSED(IA, "dx", clnorm_bn_backward(tu_ctx, S, &x, &dy, &dx, b[SC], b[DX], b[RV], 1e-5, b[SM], b[SI]));
    /* inputs may share memory (scale and bias one buffer), and an output may share a buffer with a parameter
       when their bytes do not overlap (the parameter in bytes 0..12 of y's buffer, y's view from byte 64) */
    float hx[420], hdy[420], sc[3], rm[3], rv[3], sm[3], si[3], got[420];
    double ref[420], rds[3], rdb[3];
    tu_fill_normal(hx, N, 0.5, 2.0);
    tu_fill_normal(hdy, N, 0.0, 1.0);
    tu_fill_normal(sc, G, 1.0, 0.3);
    tu_fill_normal(rm, G, 0.0, 1.0);
    tu_fill_uniform(rv, G, 0.5, 2.0);
    tu_fill_normal(sm, G, 0.5, 0.1);
    tu_fill_uniform(si, G, 0.4, 0.6);
    tu_write(b[X], 0, hx, N * 4), tu_write(b[DY], 0, hdy, N * 4), tu_write(b[SC], 0, sc, G * 4);
    tu_write(b[RM], 0, rm, G * 4), tu_write(b[RV], 0, rv, G * 4), tu_write(b[SM], 0, sm, G * 4);
    tu_write(b[SI], 0, si, G * 4);
    TU_OK(clnorm_bn_forward_training(tu_ctx, S, &x, &y64, b[SC], b[SC], 0.1, 1e-5, NULL, NULL, NULL, NULL));
    tu_finish();
    ref_bn_forward_training(S, 4, SHAPE, hx, sc, sc, 0.1, 1e-5, NULL, NULL, ref, NULL, NULL, NULL, NULL, NULL);
    tu_read(b[Y], 64, got, N * 4);
    TU_TRUE(tu_compare("y (scale and bias one buffer)", got, ref, N, TU_FWD_ATOL, TU_FWD_RTOL));
    float yhead[3]; /* the parameter in bytes 0..12 of y's buffer, read as the inference's scale and bias */
    tu_read(b[Y], 0, yhead, sizeof yhead);
    TU_OK(clnorm_bn_forward_inference(tu_ctx, S, &x, &y64, b[Y], b[Y], b[RM], b[RV], 1e-5));
    tu_finish();
    ref_bn_forward_inference(S, 4, SHAPE, hx, yhead, yhead, rm, rv, 1e-5, ref);
    tu_read(b[Y], 64, got, N * 4);
    TU_TRUE(tu_compare("y (parameters beside it in its buffer)", got, ref, N, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_OK(clnorm_bn_backward(tu_ctx, S, &x, &dy, &dx, b[SM], b[RM], b[RV], 1e-5, b[SM], b[SI]));
    tu_finish();
    ref_bn_backward(S, 4, SHAPE, hx, hdy, sm, 1e-5, sm, si, ref, rds, rdb);
    tu_read(b[DX], 0, got, N * 4);
    TU_TRUE(tu_compare("dx (save_mean also the scale)", got, ref, N, TU_BWD_ATOL, TU_BWD_RTOL));
    tu_read(b[RM], 0, got, G * 4);
    TU_TRUE(tu_compare("dscale", got, rds, G, TU_BWD_ATOL, TU_BWD_RTOL));
    tu_read(b[RV], 0, got, G * 4);
    TU_TRUE(tu_compare("dbias", got, rdb, G, TU_BWD_ATOL, TU_BWD_RTOL));
    fix_free();
}

/* ---- 16-bit storage at odd byte offsets; F32 at offsets that are 2 mod 4 ---------------------------------- */
static void test_misaligned_16bit(void **state) {
    (void)state;
    fix_make();
    for (int d = 0; d < 3; d++) {
        clnorm_dtype dt = (clnorm_dtype)d;
        const size_t offs[] = {1, 3, 5, 255, dt == CLNORM_F32 ? 2 : 7};
        for (size_t k = 0; k < 5; k++) {
            tu_case("%s offset %zu", tu_dtype_name(dt), offs[k]);
            clnorm_tensor x = view(X, 0, 4, SHAPE), y = view(Y, 0, 4, SHAPE), dy = view(DY, 0, 4, SHAPE),
                          dx = view(DX, 0, 4, SHAPE);
            x.dtype = y.dtype = dy.dtype = dx.dtype = dt;
            clnorm_tensor mx = x, my = y, mdy = dy, mdx = dx;
            mx.offset = my.offset = mdy.offset = mdx.offset = offs[k];
            for (int l = 0; l < 2; l++) {
                x.layout = y.layout = dy.layout = dx.layout = mx.layout = my.layout = mdy.layout = mdx.layout =
                    (clnorm_layout)l;
                REFUSED(IA, "x.offset", clnorm_bn_forward_training(tu_ctx, CLNORM_BN_SPATIAL, &mx, &y, b[SC], b[BI],
                                                                   0.1, 1e-5, b[RM], b[RV], b[SM], b[SI]));
                REFUSED(IA, "y.offset", clnorm_bn_forward_training(tu_ctx, CLNORM_BN_PER_ACTIVATION, &x, &my, NULL,
                                                                   NULL, 0.1, 1e-5, NULL, NULL, NULL, NULL));
                REFUSED(IA, "y.offset", clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_SPATIAL, &x, &my, b[SC], b[BI],
                                                                    b[RM], b[RV], 1e-5));
                REFUSED(IA, "dy.offset", clnorm_bn_backward(tu_ctx, CLNORM_BN_SPATIAL, &x, &mdy, &dx, b[SC], NULL,
                                                            NULL, 1e-5, b[SM], b[SI]));
                REFUSED(IA, "dx.offset", clnorm_bn_backward(tu_ctx, CLNORM_BN_PER_ACTIVATION, &x, &dy, &mdx, NULL,
                                                            NULL, NULL, 1e-5, NULL, NULL));
            }
            float host[420];
            REFUSED(IA, "offset", clnorm_tensor_write(tu_ctx, &mx, host));
        }
    }
    fix_free();
}

/* ---- wrong counts on the layer's read / write ------------------------------------------------------------ */
static void test_wrong_counts(void **state) {
    (void)state;
    tu_case("wrong counts");
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 1, 5);
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    float before[5], buf[8], after[5];
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE, before, 5));
    const size_t counts[] = {0, 1, 4, 6, 7, SIZE_MAX, SIZE_MAX / 4 + 1};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        for (int i = 0; i < 8; i++)
            buf[i] = -7.0f;
        TU_ERR(SH, clnorm_batchnorm_write(bn, CLNORM_SCALE, buf, counts[k]));
        TU_TRUE(strstr(clnorm_last_error(), "count") != NULL);
        TU_ERR(SH, clnorm_batchnorm_read(bn, CLNORM_SCALE, buf, counts[k]));
        TU_TRUE(strstr(clnorm_last_error(), "count") != NULL);
        for (int i = 0; i < 8; i++) /* nothing read into the host either */
            TU_TRUE(buf[i] == -7.0f);
    }
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE, after, 5));
    TU_TRUE(memcmp(before, after, sizeof before) == 0);
    clnorm_batchnorm_destroy(bn);
}

/* ---- device allocation failures ------------------------------------------------------------------------ */
static void test_device_memory(void **state) {
    (void)state;
    tu_case("device memory");
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(clnorm_context_device(tu_ctx), CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    clnorm_tensor t;
    memset(&t, 0, sizeof t);
    const size_t s1[2] = {(size_t)(max_alloc / 4) + 1, 1};
    TU_ERR(CLNORM_ERROR_DEVICE_MEMORY, clnorm_tensor_create(tu_ctx, 2, s1, CLNORM_F32, NULL, &t));
    TU_TRUE(t.buffer == NULL && strstr(clnorm_last_error(), "CL_DEVICE_MAX_MEM_ALLOC_SIZE"));
    const size_t s2[3] = {(size_t)(max_alloc / 2) / 1024 + 1, 2, 512};
    TU_ERR(CLNORM_ERROR_DEVICE_MEMORY, clnorm_tensor_create(tu_ctx, 3, s2, CLNORM_F16, NULL, &t));
    TU_TRUE(t.buffer == NULL);
    /* a layer whose parameter vectors cannot be allocated */
    const size_t absurd[] = {(size_t)(max_alloc / 4) + 1, (size_t)1 << 40, SIZE_MAX / 8};
    for (int k = 0; k < 3; k++) {
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, 2, absurd[k]);
        clnorm_batchnorm *bn = NULL;
        TU_ERR(CLNORM_ERROR_DEVICE_MEMORY, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        TU_TRUE(bn == NULL && strstr(clnorm_last_error(), "maps"));
    }
    /* SIZE_MAX maps: the byte count itself overflows, an invalid config */
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, SIZE_MAX);
    clnorm_batchnorm *bn = NULL;
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    TU_TRUE(bn == NULL && strstr(clnorm_last_error(), "maps"));
    /* the context still works */
    const size_t ok[2] = {4, 3};
    float host[12], back[12];
    tu_fill_normal(host, 12, 0.0, 1.0);
    TU_OK(clnorm_tensor_create(tu_ctx, 2, ok, CLNORM_F32, host, &t));
    TU_OK(clnorm_tensor_read(tu_ctx, &t, back));
    TU_TRUE(memcmp(host, back, sizeof host) == 0);
    clnorm_tensor_release(&t);
}

/* ---- a kernel build that fails: CLNORM_ERROR_BUILD with the build log ----------------------------------- */
static int copy_file(const char *from, const char *to, const char *append) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    if (!in || !out) {
        if (in)
            fclose(in);
        return 0;
    }
    char buf[8192];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, k, out);
    if (append)
        fputs(append, out);
    fclose(in);
    return fclose(out) == 0;
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[4096];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            remove(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void set_env(const char *name, const char *value, char *saved, size_t n, int *had) {
    const char *old = getenv(name);
    *had = old != NULL;
    if (old)
        snprintf(saved, n, "%s", old);
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}
static void restore_env(const char *name, const char *saved, int had) {
    if (had)
        setenv(name, saved, 1);
    else
        unsetenv(name);
}

static void test_build_failure(void **state) {
    (void)state;
    tu_case("kernel build failure");
    char tmpl[] = "/tmp/clnorm-broken-XXXXXX";
    char *dir = mkdtemp(tmpl);
    TU_TRUE(dir != NULL);
    DIR *src = opendir(CLNORM_TEST_SOURCE_DIR "/cl");
    TU_TRUE(src != NULL);
    struct dirent *e;
    int copied = 0;
    while ((e = readdir(src)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".cl") != 0)
            continue;
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/cl/%s", CLNORM_TEST_SOURCE_DIR, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
        /* in common.cl, which every program includes (a program holds only the kernel files its path needs) */
        const char *broken = strcmp(e->d_name, "common.cl") == 0
                                 ? "\n__kernel void clnorm_broken_kernel(__global float *p) { p[0] = undeclared_xyz; }\n"
                                 : NULL;
        TU_TRUE(copy_file(from, to, broken));
        copied++;
    }
    closedir(src);
    TU_TRUE(copied >= 5);

    char s_dir[4096], s_cache[64];
    int h_dir, h_cache;
    set_env("CLNORM_KERNEL_DIR", dir, s_dir, sizeof s_dir, &h_dir);
    set_env("CLNORM_CACHE", "0", s_cache, sizeof s_cache, &h_cache);
    clnorm_context *ctx = NULL;
    TU_OK(tu_context_create(&ctx));
    cl_int err;
    cl_mem bx = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, N * 4, NULL, &err),
           by = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, N * 4, NULL, &err);
    float fill[420], back[420];
    for (size_t i = 0; i < N; i++)
        fill[i] = (float)i;
    clEnqueueWriteBuffer(clnorm_context_queue(ctx), by, CL_TRUE, 0, N * 4, fill, 0, NULL, NULL);
    clnorm_tensor x = tu_view(bx, 0, 4, SHAPE), y = tu_view(by, 0, 4, SHAPE);
    clnorm_status st = clnorm_bn_forward_training(ctx, CLNORM_BN_SPATIAL, &x, &y, NULL, NULL, 0.1, 1e-5, NULL, NULL,
                                                  NULL, NULL);
    char log[8192];
    snprintf(log, sizeof log, "%s", clnorm_last_error());
    /* a second call fails the same way (no half-built program kept) */
    clnorm_status st2 = clnorm_bn_forward_inference(ctx, CLNORM_BN_SPATIAL, &x, &y, bx, bx, bx, bx, 1e-5);
    clnorm_context_finish(ctx);
    clEnqueueReadBuffer(clnorm_context_queue(ctx), by, CL_TRUE, 0, N * 4, back, 0, NULL, NULL);
    restore_env("CLNORM_KERNEL_DIR", s_dir, h_dir);

    /* a kernel directory without the sources */
    char empty[] = "/tmp/clnorm-empty-XXXXXX";
    char *edir = mkdtemp(empty);
    TU_TRUE(edir != NULL);
    set_env("CLNORM_KERNEL_DIR", edir, s_dir, sizeof s_dir, &h_dir);
    clnorm_context *ctx2 = NULL;
    TU_OK(tu_context_create(&ctx2));
    cl_mem bx2 = clCreateBuffer(clnorm_context_cl_context(ctx2), CL_MEM_READ_WRITE, N * 4, NULL, &err),
           by2 = clCreateBuffer(clnorm_context_cl_context(ctx2), CL_MEM_READ_WRITE, N * 4, NULL, &err);
    clnorm_tensor x2 = tu_view(bx2, 0, 4, SHAPE), y2 = tu_view(by2, 0, 4, SHAPE);
    clnorm_status st3 = clnorm_bn_forward_training(ctx2, CLNORM_BN_PER_ACTIVATION, &x2, &y2, NULL, NULL, 0.1, 1e-5,
                                                   NULL, NULL, NULL, NULL);
    clReleaseMemObject(bx2), clReleaseMemObject(by2);
    char msg3[1024];
    snprintf(msg3, sizeof msg3, "%s", clnorm_last_error());
    restore_env("CLNORM_KERNEL_DIR", s_dir, h_dir);
    restore_env("CLNORM_CACHE", s_cache, h_cache);
    remove_dir(dir);
    remove_dir(edir);

    TU_STATUS(CLNORM_ERROR_BUILD, st);
    TU_STATUS(CLNORM_ERROR_BUILD, st2);
    TU_STATUS(CLNORM_ERROR_BUILD, st3);
    if (!strstr(log, "undeclared_xyz") || !strstr(log, "error"))
        tu_fail_at(__FILE__, __LINE__, "the build log is not in the last error: \"%s\"", log);
    if (!strstr(msg3, "cannot read"))
        tu_fail_at(__FILE__, __LINE__, "a missing kernel file is not named: \"%s\"", msg3);
    TU_TRUE(memcmp(fill, back, sizeof fill) == 0); /* y untouched */

    /* with the environment restored, a fresh context builds and runs */
    clnorm_context *ctx3 = NULL;
    TU_OK(tu_context_create(&ctx3));
    clReleaseMemObject(bx), clReleaseMemObject(by);
    clnorm_context_destroy(ctx);
    clnorm_context_destroy(ctx2);
    cl_mem cx = clCreateBuffer(clnorm_context_cl_context(ctx3), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, N * 4, fill,
                               &err),
           cy = clCreateBuffer(clnorm_context_cl_context(ctx3), CL_MEM_READ_WRITE, N * 4, NULL, &err);
    clnorm_tensor x3 = tu_view(cx, 0, 4, SHAPE), y3 = tu_view(cy, 0, 4, SHAPE);
    TU_OK(clnorm_bn_forward_training(ctx3, CLNORM_BN_SPATIAL, &x3, &y3, NULL, NULL, 0.1, 1e-5, NULL, NULL, NULL,
                                     NULL));
    TU_OK(clnorm_context_finish(ctx3));
    clReleaseMemObject(cx), clReleaseMemObject(cy);
    clnorm_context_destroy(ctx3);
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_overflow),     cmocka_unit_test(test_ndim),
        cmocka_unit_test(test_nan_inf_arguments), cmocka_unit_test(test_subbuffer_overlap),
        cmocka_unit_test(test_misaligned_16bit),  cmocka_unit_test(test_wrong_counts),
        cmocka_unit_test(test_device_memory),     cmocka_unit_test(test_build_failure),
        cmocka_unit_test(test_parameter_aliasing),
    };
    return cmocka_run_group_tests_name("hostile", tests, tu_group_setup, tu_group_teardown);
}
