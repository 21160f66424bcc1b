/*
 * Every error status provoked, each time checking that the call wrote nothing (every buffer is filled with a
 * sentinel pattern before the call and compared bit for bit after clnorm_context_finish) and that
 * clnorm_last_error() says something. Also: device selectors, status strings, version, destroy(NULL),
 * contexts on an application queue.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_bn.h"
#include "test_util.h"

#define T_SPATIAL CLNORM_BN_SPATIAL
#define T_PERACT CLNORM_BN_PER_ACTIVATION

/* ---- the fixture: a valid call's every buffer, sentinel-filled (tu_fixture) ------------------------- */
enum { B_X, B_Y, B_DY, B_DX, B_SCALE, B_BIAS, B_RM, B_RV, B_SM, B_SI, B_DS, B_DB, B_COUNT };
static const char *const buf_names[B_COUNT] = {"x",         "y",           "dy",           "dx",
                                               "scale",     "bias",        "running_mean", "running_var",
                                               "save_mean", "save_invstd", "dscale",       "dbias"};

typedef struct {
    clnorm_bn_mode mode;
    int ndim;
    size_t shape[5];
    size_t n, G;
    tu_fixture fx;
    cl_mem b[B_COUNT]; /* fx.buf, by role */
    clnorm_tensor tx, ty, tdy, tdx;
} fixture;

static fixture F;

static void fix_fill(void) {
    tu_fixture_fill(&F.fx);
}

#define fix_check(what) tu_fixture_check(&F.fx, (what))

static void fix_make(clnorm_bn_mode mode) {
    memset(&F, 0, sizeof F);
    F.mode = mode;
    F.ndim = 4;
    F.shape[0] = 4, F.shape[1] = 3, F.shape[2] = 5, F.shape[3] = 6;
    F.n = tu_numel(F.ndim, F.shape);
    F.G = ref_groups(mode, F.ndim, F.shape);
    tu_fixture_init(&F.fx, 0x1000u);
    for (int i = 0; i < B_COUNT; i++)
        F.b[i] = F.fx.buf[tu_fixture_add(&F.fx, buf_names[i], (i <= B_DX ? F.n : F.G) * 4)];
    F.tx = tu_view(F.b[B_X], 0, F.ndim, F.shape);
    F.ty = tu_view(F.b[B_Y], 0, F.ndim, F.shape);
    F.tdy = tu_view(F.b[B_DY], 0, F.ndim, F.shape);
    F.tdx = tu_view(F.b[B_DX], 0, F.ndim, F.shape);
    fix_fill();
}

static void fix_free(void) {
    tu_fixture_free(&F.fx);
    memset(F.b, 0, sizeof F.b);
}

/* the three operations with every optional argument given; the macros take replacements */
#define TRAIN(ctx, mode, x, y, scale, bias, factor, eps, rm, rv, sm, si)                                               \
    clnorm_bn_forward_training(ctx, mode, x, y, scale, bias, factor, eps, rm, rv, sm, si)
#define TRAIN_OK_ARGS                                                                                                  \
    tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM], F.b[B_SI]
#define INFER_OK_ARGS tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV], 1e-5
#define BWD_OK_ARGS                                                                                                    \
    tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5, F.b[B_SM], F.b[B_SI]

/* call, expect the error + a message, then check that nothing was written */
#define REFUSED(want, call)                                                                                            \
    do {                                                                                                               \
        fix_fill();                                                                                                    \
        TU_ERR(want, call);                                                                                            \
        fix_check(#call);                                                                                              \
    } while (0)

static void for_both_modes(void (*body)(void)) {
    for (int m = 0; m < 2; m++) {
        fix_make(m ? T_PERACT : T_SPATIAL);
        tu_case("%s", m ? "PER_ACTIVATION" : "SPATIAL");
        body();
        fix_free();
    }
}

/* ---- the valid calls succeed (so that the refusals below are meaningful) ------------------------ */
static void body_baseline(void) {
    float *x = tu_floats(F.n), *dy = tu_floats(F.n), *got = tu_floats(F.n);
    float sc[128], bi[128], rm[128], rv[128], drm[128], drv[128], dsm[128], dsi[128];
    double *ref = tu_doubles(F.n), rds[128], rdb[128];
    TU_TRUE(F.G <= 128);
    tu_fill_normal(x, F.n, 0.0, 1.0);
    tu_fill_normal(dy, F.n, 0.0, 1.0);
    tu_fill_normal(sc, F.G, 1.0, 0.3);
    tu_fill_normal(bi, F.G, 0.0, 1.0);
    tu_fill_normal(rm, F.G, 0.0, 1.0);
    tu_fill_uniform(rv, F.G, 0.5, 1.5);
    tu_write(F.b[B_X], 0, x, F.n * 4);
    tu_write(F.b[B_DY], 0, dy, F.n * 4);
    tu_write(F.b[B_SCALE], 0, sc, F.G * 4);
    tu_write(F.b[B_BIAS], 0, bi, F.G * 4);
    tu_write(F.b[B_RM], 0, rm, F.G * 4);
    tu_write(F.b[B_RV], 0, rv, F.G * 4);
    /* each valid call's results, so that the refusals below are refusals of calls that work */
    TU_OK(clnorm_bn_forward_training(TRAIN_OK_ARGS));
    tu_finish();
    ref_bn_forward_training(F.mode, F.ndim, F.shape, x, sc, bi, 0.1, 1e-5, rm, rv, ref, NULL, NULL, NULL, NULL, NULL);
    tu_read(F.b[B_Y], 0, got, F.n * 4);
    TU_TRUE(tu_compare("training y", got, ref, F.n, TU_FWD_ATOL, TU_FWD_RTOL));
    tu_read(F.b[B_RM], 0, drm, F.G * 4);
    tu_read(F.b[B_RV], 0, drv, F.G * 4);
    tu_read(F.b[B_SM], 0, dsm, F.G * 4);
    tu_read(F.b[B_SI], 0, dsi, F.G * 4);
    TU_OK(clnorm_bn_forward_inference(INFER_OK_ARGS));
    tu_finish();
    ref_bn_forward_inference(F.mode, F.ndim, F.shape, x, sc, bi, drm, drv, 1e-5, ref);
    tu_read(F.b[B_Y], 0, got, F.n * 4);
    TU_TRUE(tu_compare("inference y", got, ref, F.n, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_OK(clnorm_bn_backward(BWD_OK_ARGS));
    tu_finish();
    ref_bn_backward(F.mode, F.ndim, F.shape, x, dy, sc, 1e-5, dsm, dsi, ref, rds, rdb);
    tu_read(F.b[B_DX], 0, got, F.n * 4);
    TU_TRUE(tu_compare("dx", got, ref, F.n, TU_BWD_ATOL, TU_BWD_RTOL));
    tu_read(F.b[B_DS], 0, got, F.G * 4);
    TU_TRUE(tu_compare("dscale", got, rds, F.G, TU_BWD_ATOL, TU_BWD_RTOL));
    tu_read(F.b[B_DB], 0, got, F.G * 4);
    TU_TRUE(tu_compare("dbias", got, rdb, F.G, TU_BWD_ATOL, TU_BWD_RTOL));
    free(x), free(dy), free(got), free(ref);
}
static void test_baseline(void **state) {
    (void)state;
    for_both_modes(body_baseline);
}

/* ---- NULLs, enums, epsilon, factor ----------------------------------------------------------------- */
static void body_nulls(void) {
    const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT;
    REFUSED(IA, TRAIN(NULL, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, NULL, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                      F.b[B_SM], F.b[B_SI]));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, NULL, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                      F.b[B_SM], F.b[B_SI]));
    REFUSED(IA, clnorm_bn_forward_inference(NULL, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                            1e-5));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, NULL, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM],
                                            F.b[B_RV], 1e-5));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, NULL, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM],
                                            F.b[B_RV], 1e-5));
    /* inference needs its statistics */
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], NULL, NULL, 1e-5));
    REFUSED(IA, clnorm_bn_backward(NULL, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, NULL, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, NULL, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    /* a tensor whose buffer is NULL */
    clnorm_tensor nx = F.tx;
    nx.buffer = NULL;
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &nx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &nx, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                            1e-5));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &nx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
}
static void test_nulls(void **state) {
    (void)state;
    for_both_modes(body_nulls);
}

static void body_enums_eps_factor(void) {
    const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT;
    const clnorm_bn_mode bad_modes[] = {(clnorm_bn_mode)2, (clnorm_bn_mode)-1, (clnorm_bn_mode)77};
    for (size_t k = 0; k < 3; k++) {
        clnorm_bn_mode m = bad_modes[k];
        REFUSED(IA, TRAIN(tu_ctx, m, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                          F.b[B_SM], F.b[B_SI]));
        REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, m, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM],
                                                F.b[B_RV], 1e-5));
        REFUSED(IA, clnorm_bn_backward(tu_ctx, m, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
    }
    const double bad_eps[] = {0.0, -0.0, -1e-5, NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < sizeof bad_eps / sizeof bad_eps[0]; k++) {
        double e = bad_eps[k];
        tu_case("%s epsilon=%g", F.mode ? "PER_ACTIVATION" : "SPATIAL", e);
        REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, e, F.b[B_RM], F.b[B_RV],
                          F.b[B_SM], F.b[B_SI]));
        REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM],
                                                F.b[B_RV], e));
        REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], e,
                                       F.b[B_SM], F.b[B_SI]));
        /* also when nothing would use epsilon for the statistics */
        REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, NULL, NULL, NULL, e, NULL, NULL));
    }
    const double bad_factor[] = {-0.1, 1.1, -1e-9, 1.0 + 1e-9, NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < sizeof bad_factor / sizeof bad_factor[0]; k++) {
        double f = bad_factor[k];
        tu_case("%s factor=%g", F.mode ? "PER_ACTIVATION" : "SPATIAL", f);
        REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], f, 1e-5, F.b[B_RM], F.b[B_RV],
                          F.b[B_SM], F.b[B_SI]));
    }
}
static void test_enums_eps_factor(void **state) {
    (void)state;
    for_both_modes(body_enums_eps_factor);
}

/* ---- shapes ------------------------------------------------------------------------------------------ */
static void body_shapes(void) {
    const clnorm_status SH = CLNORM_ERROR_SHAPE;
    /* ndim 0, 1, 6 on x and y alike */
    const int bad_ndim[] = {0, 1, 6, -1};
    for (size_t k = 0; k < 4; k++) {
        clnorm_tensor x = F.tx, y = F.ty, dy = F.tdy, dx = F.tdx;
        x.ndim = y.ndim = dy.ndim = dx.ndim = bad_ndim[k];
        tu_case("%s ndim=%d", F.mode ? "PER_ACTIVATION" : "SPATIAL", bad_ndim[k]);
        REFUSED(SH, TRAIN(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                          F.b[B_SI]));
        REFUSED(SH, clnorm_bn_forward_inference(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                                1e-5));
        REFUSED(SH, clnorm_bn_backward(tu_ctx, F.mode, &x, &dy, &dx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
    }
    /* a zero-sized dimension, each position */
    for (int d = 0; d < F.ndim; d++) {
        clnorm_tensor x = F.tx, y = F.ty, dy = F.tdy, dx = F.tdx;
        x.shape[d] = y.shape[d] = dy.shape[d] = dx.shape[d] = 0;
        tu_case("%s zero dim %d", F.mode ? "PER_ACTIVATION" : "SPATIAL", d);
        REFUSED(SH, TRAIN(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                          F.b[B_SI]));
        REFUSED(SH, clnorm_bn_forward_inference(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                                1e-5));
        REFUSED(SH, clnorm_bn_backward(tu_ctx, F.mode, &x, &dy, &dx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
    }
    /* y differs from x: in each dimension (smaller, so the buffers are large enough), and in ndim */
    for (int d = 0; d <= F.ndim; d++) {
        clnorm_tensor y = F.ty;
        if (d < F.ndim) {
            y.shape[d] -= 1;
        } else { /* (4,3,5,6) -> (4,3,30): same element count, other ndim */
            y.ndim = 3;
            y.shape[2] = F.shape[2] * F.shape[3];
        }
        tu_case("%s y differs in dim %d", F.mode ? "PER_ACTIVATION" : "SPATIAL", d);
        REFUSED(SH, TRAIN(tu_ctx, F.mode, &F.tx, &y, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                          F.b[B_SM], F.b[B_SI]));
        REFUSED(SH, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &y, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM],
                                                F.b[B_RV], 1e-5));
        clnorm_tensor dy = y, dx = y;
        dy.buffer = F.b[B_DY];
        dx.buffer = F.b[B_DX];
        REFUSED(SH, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &dy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
        REFUSED(SH, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &dx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
    }
}
static void test_shapes(void **state) {
    (void)state;
    for_both_modes(body_shapes);
}

/* training with one value per statistic */
static void test_one_value_per_statistic(void **state) {
    (void)state;
    static const struct {
        clnorm_bn_mode mode;
        int ndim;
        size_t shape[5];
    } cases[] = {
        {T_SPATIAL, 2, {1, 3}}, {T_SPATIAL, 4, {1, 3, 1, 1}}, {T_SPATIAL, 5, {1, 2, 1, 1, 1}},
        {T_PERACT, 2, {1, 5}},  {T_PERACT, 3, {1, 2, 3}},     {T_PERACT, 4, {1, 2, 3, 4}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fix_make(cases[k].mode); /* buffers are larger than needed: fine */
        tu_case("one value per statistic %s", tu_shape_str(cases[k].ndim, cases[k].shape));
        clnorm_tensor x = tu_view(F.b[B_X], 0, cases[k].ndim, cases[k].shape),
                      y = tu_view(F.b[B_Y], 0, cases[k].ndim, cases[k].shape);
        REFUSED(CLNORM_ERROR_SHAPE, TRAIN(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM],
                                          F.b[B_RV], F.b[B_SM], F.b[B_SI]));
        REFUSED(CLNORM_ERROR_SHAPE, TRAIN(tu_ctx, F.mode, &x, &y, NULL, NULL, 0.1, 1e-5, NULL, NULL, NULL, NULL));
        fix_free();
    }
}

/* ---- buffer sizes, offsets, overlap ---------------------------------------------------------------- */
static cl_mem small_param(size_t G) {
    return tu_buffer((G - 1) * 4);
}

static void body_buffer_too_small(void) {
    const clnorm_status TS = CLNORM_ERROR_BUFFER_TOO_SMALL;
    /* x / y / dy / dx: a buffer one float short, and a view whose offset pushes it past the end */
    cl_mem shortb = tu_buffer(F.n * 4 - 4);
    tu_sentinel_fill(shortb, F.n * 4 - 4, 0x77);
    clnorm_tensor s = tu_view(shortb, 0, F.ndim, F.shape);
    clnorm_tensor xo = tu_view(F.b[B_X], 4, F.ndim, F.shape), yo = tu_view(F.b[B_Y], 8, F.ndim, F.shape);
    clnorm_tensor dyo = tu_view(F.b[B_DY], 4, F.ndim, F.shape), dxo = tu_view(F.b[B_DX], 4 * 3, F.ndim, F.shape);
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &s, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &s, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    TU_TRUE(tu_sentinel_intact(shortb, F.n * 4 - 4, 0x77, "short y"));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &xo, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &yo, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(TS, clnorm_bn_forward_inference(tu_ctx, F.mode, &s, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                            1e-5));
    REFUSED(TS, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &yo, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                            1e-5));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &xo, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &dyo, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &dxo, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &s, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    TU_TRUE(tu_sentinel_intact(shortb, F.n * 4 - 4, 0x77, "short dx"));
    tu_release(&shortb);

    /* each parameter vector one float short (PER_ACTIVATION: G = maps*d*h*w, so a maps-sized vector fails too) */
    cl_mem p = small_param(F.G);
    REFUSED(TS,
            TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, p, F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM], F.b[B_SI]));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], p, 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, p, F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], p, F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], p,
                      F.b[B_SI]));
    REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                      F.b[B_SM], p));
    REFUSED(TS, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, p, F.b[B_BIAS], F.b[B_RM], F.b[B_RV], 1e-5));
    REFUSED(TS, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], p, F.b[B_RM], F.b[B_RV], 1e-5));
    REFUSED(TS,
            clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], p, F.b[B_RV], 1e-5));
    REFUSED(TS,
            clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], p, 1e-5));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, p, F.b[B_DS], F.b[B_DB], 1e-5, F.b[B_SM],
                                   F.b[B_SI]));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], p, F.b[B_DB], 1e-5, F.b[B_SM],
                                   F.b[B_SI]));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], p, 1e-5, F.b[B_SM],
                                   F.b[B_SI]));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5, p,
                                   F.b[B_SI]));
    REFUSED(TS, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], p));
    tu_release(&p);
    if (F.mode == T_PERACT) { /* a vector of `maps` values is too small for per-activation parameters */
        cl_mem m = tu_buffer(F.shape[1] * 4);
        REFUSED(TS, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, m, F.b[B_RV], F.b[B_SM],
                          F.b[B_SI]));
        tu_release(&m);
    }
}
static void test_buffer_too_small(void **state) {
    (void)state;
    for_both_modes(body_buffer_too_small);
}

static void body_misaligned_offsets(void) {
    const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT;
    /* a bigger x/y buffer so that only alignment is wrong */
    cl_mem big = tu_buffer(F.n * 4 + 64), big2 = tu_buffer(F.n * 4 + 64);
    static const size_t offs[] = {1, 2, 3, 6, 4 * 37 + 2};
    for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        clnorm_tensor x = tu_view(big, offs[k] % 64, F.ndim, F.shape), y = tu_view(big2, offs[k] % 64, F.ndim, F.shape);
        tu_case("%s offset %zu", F.mode ? "PER_ACTIVATION" : "SPATIAL", offs[k] % 64);
        tu_sentinel_fill(big2, F.n * 4 + 64, 0x55);
        REFUSED(IA, TRAIN(tu_ctx, F.mode, &x, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                          F.b[B_SM], F.b[B_SI]));
        REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &y, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                          F.b[B_SM], F.b[B_SI]));
        REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &y, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM],
                                                F.b[B_RV], 1e-5));
        REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &x, &F.tdy, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
        REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &y, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
        TU_TRUE(tu_sentinel_intact(big2, F.n * 4 + 64, 0x55, "misaligned y"));
    }
    tu_release(&big);
    tu_release(&big2);
}
static void test_misaligned_offsets(void **state) {
    (void)state;
    for_both_modes(body_misaligned_offsets);
}

static void body_overlap(void) {
    const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT;
    size_t bytes = F.n * 4 * 2 + 64;
    cl_mem b = tu_buffer(bytes);
    /* y starts one float after x; y starts before x and runs into it; y starts one float before x */
    static const size_t xo_[] = {0, 4 * 8, 4 * 16};
    static const size_t yo_[] = {4, 0, 4 * 15};
    for (int k = 0; k < 3; k++) {
        clnorm_tensor x = tu_view(b, xo_[k], F.ndim, F.shape), y = tu_view(b, yo_[k], F.ndim, F.shape);
        tu_case("%s overlap x@%zu y@%zu", F.mode ? "PER_ACTIVATION" : "SPATIAL", xo_[k], yo_[k]);
        tu_sentinel_fill(b, bytes, 0x99);
        TU_ERR(IA, TRAIN(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                         F.b[B_SI]));
        TU_ERR(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                               1e-5));
        /* dy/dx overlapping */
        TU_ERR(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &x, &y, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                      F.b[B_SM], F.b[B_SI]));
        tu_finish();
        TU_TRUE(tu_sentinel_intact(b, bytes, 0x99, "overlapping views"));
    }
    tu_release(&b);
}
static void test_overlap(void **state) {
    (void)state;
    for_both_modes(body_overlap);
}

/* ---- a cl_mem of another context ------------------------------------------------------------------- */
static void body_foreign(void) {
    const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT;
    clnorm_context *ctx2 = NULL;
    TU_OK(tu_context_create(&ctx2));
    TU_TRUE(clnorm_context_cl_context(ctx2) != clnorm_context_cl_context(tu_ctx));
    cl_mem fx = tu_buffer_on(ctx2, F.n * 4), fp = tu_buffer_on(ctx2, F.G * 4);
    clnorm_tensor x2 = tu_view(fx, 0, F.ndim, F.shape);
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &x2, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &x2, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, fp, F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, fp, F.b[B_RV], F.b[B_SM],
                      F.b[B_SI]));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV],
                      F.b[B_SM], fp));
    REFUSED(IA,
            clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, F.b[B_SCALE], F.b[B_BIAS], fp, F.b[B_RV], 1e-5));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &x2, &F.ty, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                            1e-5));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &x2, &F.tdx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &x2, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                   F.b[B_SM], F.b[B_SI]));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, F.b[B_SCALE], fp, F.b[B_DB], 1e-5, F.b[B_SM],
                                   F.b[B_SI]));
    /* and the other way round: this context's buffers on ctx2 */
    TU_ERR(IA, TRAIN(ctx2, F.mode, &F.tx, &F.ty, NULL, NULL, 0.1, 1e-5, NULL, NULL, NULL, NULL));
    tu_release(&fx);
    tu_release(&fp);
    clnorm_context_destroy(ctx2);
    fix_check("after ctx2");
}
static void test_foreign_context(void **state) {
    (void)state;
    for_both_modes(body_foreign);
}

/* ---- one of a pair --------------------------------------------------------------------------------- */
static void body_pairs(void) {
    const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT;
    cl_mem S = F.b[B_SCALE], Bi = F.b[B_BIAS], RM = F.b[B_RM], RV = F.b[B_RV], SM = F.b[B_SM], SI = F.b[B_SI];
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, S, NULL, 0.1, 1e-5, RM, RV, SM, SI));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, NULL, Bi, 0.1, 1e-5, RM, RV, SM, SI));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, S, Bi, 0.1, 1e-5, RM, NULL, SM, SI));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, S, Bi, 0.1, 1e-5, NULL, RV, SM, SI));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, S, Bi, 0.1, 1e-5, RM, RV, SM, NULL));
    REFUSED(IA, TRAIN(tu_ctx, F.mode, &F.tx, &F.ty, S, Bi, 0.1, 1e-5, RM, RV, NULL, SI));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, S, NULL, RM, RV, 1e-5));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, NULL, Bi, RM, RV, 1e-5));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, S, Bi, RM, NULL, 1e-5));
    REFUSED(IA, clnorm_bn_forward_inference(tu_ctx, F.mode, &F.tx, &F.ty, S, Bi, NULL, RV, 1e-5));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, S, F.b[B_DS], NULL, 1e-5, SM, SI));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, S, NULL, F.b[B_DB], 1e-5, SM, SI));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, S, F.b[B_DS], F.b[B_DB], 1e-5, SM, NULL));
    REFUSED(IA, clnorm_bn_backward(tu_ctx, F.mode, &F.tx, &F.tdy, &F.tdx, S, F.b[B_DS], F.b[B_DB], 1e-5, NULL, SI));
}
static void test_pairs(void **state) {
    (void)state;
    for_both_modes(body_pairs);
}

/* ---- dtype / layout not supported (yet) ------------------------------------------------------------ */
static void body_unsupported(void) {
    /* every dtype and layout is supported, but not mixed between the input and the outputs of one call */
    const clnorm_status UN = CLNORM_ERROR_UNSUPPORTED;
    for (int k = 0; k < 3; k++) {
        clnorm_tensor x = F.tx, y = F.ty, dy = F.tdy, dx = F.tdx;
        if (k < 2)
            y.dtype = dx.dtype = k ? CLNORM_BF16 : CLNORM_F16;
        else
            y.layout = dx.layout = CLNORM_NHWC;
        tu_case("%s mixed %s", F.mode ? "PER_ACTIVATION" : "SPATIAL", k == 0 ? "F32/F16" : k == 1 ? "F32/BF16" : "NCHW/NHWC");
        REFUSED(UN, TRAIN(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], 0.1, 1e-5, F.b[B_RM], F.b[B_RV], F.b[B_SM],
                          F.b[B_SI]));
        REFUSED(UN, clnorm_bn_forward_inference(tu_ctx, F.mode, &x, &y, F.b[B_SCALE], F.b[B_BIAS], F.b[B_RM], F.b[B_RV],
                                                1e-5));
        REFUSED(UN, clnorm_bn_backward(tu_ctx, F.mode, &x, &dy, &dx, F.b[B_SCALE], F.b[B_DS], F.b[B_DB], 1e-5,
                                       F.b[B_SM], F.b[B_SI]));
    }
}
static void test_unsupported(void **state) {
    (void)state;
    for_both_modes(body_unsupported);
    /* out-of-range enums in a layer config are invalid arguments */
    for (int k = 0; k < 2; k++) {
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, 2, 4);
        if (k == 0)
            cfg.dtype = (clnorm_dtype)7;
        else
            cfg.layout = (clnorm_layout)5;
        clnorm_batchnorm *bn = NULL;
        TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        clnorm_batchnorm_destroy(bn);
    }
}

/* ---- devices and contexts ---------------------------------------------------------------------------- */
static void first_device_name(char *out, size_t len) {
    cl_platform_id p;
    cl_device_id d;
    out[0] = '\0';
    if (clGetPlatformIDs(1, &p, NULL) != CL_SUCCESS)
        return;
    if (clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 1, &d, NULL) != CL_SUCCESS)
        return;
    clGetDeviceInfo(d, CL_DEVICE_NAME, len, out, NULL);
    out[len - 1] = '\0';
}

static void test_device_selectors(void **state) {
    (void)state;
    tu_case("device selectors");
    clnorm_context *c2 = NULL;
    TU_ERR(CLNORM_ERROR_NO_DEVICE, clnorm_context_create("no-such-device-\x7f-clnorm", &c2));
    char name[256];
    first_device_name(name, sizeof name);
    if (name[0] && !strstr(clnorm_last_error(), name))
        tu_fail_at(__FILE__, __LINE__, "NO_DEVICE message does not list the device \"%s\": \"%s\"", name,
                   clnorm_last_error());
    TU_ERR(CLNORM_ERROR_NO_DEVICE, clnorm_context_create("99:0", &c2));
    TU_ERR(CLNORM_ERROR_NO_DEVICE, clnorm_context_create("0:99", &c2));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_context_create("0:0", NULL));

    /* "0:0", the test device's selector ($CLNORM_TEST_DEVICE, "pocl" by default) as given, upper-cased and in
       alternating case: whatever the device, the same checks run */
    char sel_upper[128], sel_mixed[128];
    const char *sel = tu_device_selector();
    size_t m = 0;
    for (; sel[m] && m < sizeof sel_upper - 1; m++) {
        const char ch = sel[m];
        const char up = (char)((ch >= 'a' && ch <= 'z') ? ch - 'a' + 'A' : ch);
        const char lo = (char)((ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch);
        sel_upper[m] = up;
        sel_mixed[m] = (m % 2) ? lo : up;
    }
    sel_upper[m] = sel_mixed[m] = '\0';
    const char *const ok_sel[] = {"0:0", sel, sel_upper, sel_mixed};
    for (size_t k = 0; k < sizeof ok_sel / sizeof ok_sel[0]; k++) {
        c2 = NULL;
        tu_case("device selector %s", ok_sel[k]);
        TU_OK(clnorm_context_create(ok_sel[k], &c2));
        TU_TRUE(c2 != NULL);
        TU_TRUE(clnorm_context_device_name(c2) != NULL && clnorm_context_device_name(c2)[0] != '\0');
        TU_TRUE(clnorm_context_cl_context(c2) != NULL);
        TU_TRUE(clnorm_context_device(c2) != NULL);
        TU_TRUE(clnorm_context_queue(c2) != NULL);
        TU_OK(clnorm_context_finish(c2));
        clnorm_context_destroy(c2);
    }
    /* case-insensitive substring of "<platform name> <device name>": the device name itself in upper case */
    c2 = NULL;
    const char *full = clnorm_context_device_name(tu_ctx);
    char upper[256];
    size_t i = 0;
    for (; full[i] && i < sizeof upper - 1; i++)
        upper[i] = (char)((full[i] >= 'a' && full[i] <= 'z') ? full[i] - 'a' + 'A' : full[i]);
    upper[i] = '\0';
    TU_OK(clnorm_context_create(upper, &c2));
    TU_TRUE(strcmp(clnorm_context_device_name(c2), full) == 0);
    clnorm_context_destroy(c2);
}

static void test_status_strings_and_version(void **state) {
    (void)state;
    tu_case("status strings");
    const clnorm_status all[] = {
        CLNORM_SUCCESS,           CLNORM_ERROR_INVALID_ARGUMENT, CLNORM_ERROR_SHAPE, CLNORM_ERROR_BUFFER_TOO_SMALL,
        CLNORM_ERROR_UNSUPPORTED, CLNORM_ERROR_INVALID_STATE,    CLNORM_ERROR_BUILD, CLNORM_ERROR_NO_DEVICE,
        CLNORM_ERROR_HOST_MEMORY, CLNORM_ERROR_DEVICE_MEMORY,    CLNORM_ERROR_OPENCL};
    const size_t n = sizeof all / sizeof all[0];
    TU_TRUE(CLNORM_SUCCESS == 0);
    for (size_t i = 0; i < n; i++) {
        const char *s = clnorm_status_string(all[i]);
        TU_TRUE(s != NULL && s[0] != '\0');
        for (size_t j = 0; j < i; j++) {
            TU_TRUE(all[i] != all[j]);
            if (strcmp(s, clnorm_status_string(all[j])) == 0)
                tu_fail_at(__FILE__, __LINE__, "status %d and %d share the text \"%s\"", (int)all[i], (int)all[j], s);
        }
    }
    TU_TRUE(clnorm_status_string((clnorm_status)999) != NULL);
    TU_TRUE(clnorm_status_string((clnorm_status)-1) != NULL);
    TU_TRUE(clnorm_last_error() != NULL);
    TU_TRUE(clnorm_version() ==
            (unsigned)(CLNORM_VERSION_MAJOR * 10000 + CLNORM_VERSION_MINOR * 100 + CLNORM_VERSION_PATCH));
}

static void test_destroy_null(void **state) {
    (void)state;
    clnorm_context_destroy(NULL);
    clnorm_batchnorm_destroy(NULL);
    clnorm_tensor_release(NULL);
    clnorm_tensor t;
    memset(&t, 0, sizeof t);
    clnorm_tensor_release(&t);
    TU_TRUE(t.buffer == NULL);
}

static void test_context_from_queue(void **state) {
    (void)state;
    tu_case("context from queue");
    cl_int err;
    cl_device_id dev = clnorm_context_device(tu_ctx);
    cl_context app = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    TU_TRUE(err == CL_SUCCESS && app != NULL);
    cl_command_queue q = clCreateCommandQueue(app, dev, 0, &err);
    TU_TRUE(err == CL_SUCCESS && q != NULL);
    clnorm_context *ctx = NULL;
    TU_OK(clnorm_context_create_from_queue(q, &ctx));
    TU_TRUE(clnorm_context_queue(ctx) == q);
    TU_TRUE(clnorm_context_cl_context(ctx) == app);
    TU_TRUE(clnorm_context_device(ctx) == dev);
    TU_TRUE(clnorm_context_device_name(ctx) != NULL && clnorm_context_device_name(ctx)[0]);
    /* drop our references: the clnorm context must keep the queue (and its context) alive */
    clReleaseCommandQueue(q);
    clReleaseContext(app);

    const size_t shape[3] = {3, 4, 25}, n = 300, G = 4;
    float x[300], y[300], stats[4 * 4];
    double yr[300];
    tu_fill_normal(x, n, 2.0, 3.0);
    tu_fill_normal(stats, 8, 0.0, 1.0);
    tu_fill_uniform(stats + 8, 4, 0.5, 2.0);
    tu_fill_normal(stats + 12, 4, 1.0, 0.5);
    clnorm_tensor tx, ty, ts;
    TU_OK(clnorm_tensor_create(ctx, 3, shape, CLNORM_F32, x, &tx));
    TU_OK(clnorm_tensor_create(ctx, 3, shape, CLNORM_F32, NULL, &ty));
    const size_t sshape[2] = {4, 4};
    TU_OK(clnorm_tensor_create(ctx, 2, sshape, CLNORM_F32, stats, &ts));
    /* parameter vectors at offset 0 of their own buffers: copy out of ts */
    cl_mem p[4];
    for (int k = 0; k < 4; k++) {
        p[k] = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, G * 4,
                              stats + 4 * k, &err);
        TU_TRUE(err == CL_SUCCESS);
    }
    /* p[0]=bias? keep the order explicit: scale = stats[12..15], bias = stats[4..7], mean = stats[0..3],
       var = stats[8..11] */
    TU_OK(clnorm_bn_forward_inference(ctx, CLNORM_BN_SPATIAL, &tx, &ty, p[3], p[1], p[0], p[2], 1e-5));
    TU_OK(clnorm_context_finish(ctx));
    TU_OK(clnorm_tensor_read(ctx, &ty, y));
    ref_bn_forward_inference(CLNORM_BN_SPATIAL, 3, shape, x, stats + 12, stats + 4, stats, stats + 8, 1e-5, yr);
    TU_TRUE(tu_compare("y on an application queue", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    for (int k = 0; k < 4; k++)
        clReleaseMemObject(p[k]);
    clnorm_tensor_release(&tx);
    clnorm_tensor_release(&ty);
    clnorm_tensor_release(&ts);
    TU_TRUE(tx.buffer == NULL);
    clnorm_context_destroy(ctx);

    clnorm_context *c2 = NULL;
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_context_create_from_queue(NULL, &c2));
}

/* ---- tensor helpers ------------------------------------------------------------------------------------- */
static void test_tensor_helpers(void **state) {
    (void)state;
    tu_case("tensor helpers");
    const size_t shape[5] = {2, 3, 4, 5, 6};
    clnorm_tensor t = clnorm_tensor_make((cl_mem)NULL, 5, shape);
    TU_TRUE(t.offset == 0 && t.ndim == 5 && t.dtype == CLNORM_F32 && t.layout == CLNORM_NCHW);
    TU_TRUE(memcmp(t.shape, shape, sizeof shape) == 0);
    clnorm_tensor u;
    const size_t zero[2] = {3, 0};
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_tensor_create(tu_ctx, 2, zero, CLNORM_F32, NULL, &u));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_tensor_create(tu_ctx, 1, shape, CLNORM_F32, NULL, &u));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_tensor_create(tu_ctx, 6, shape, CLNORM_F32, NULL, &u));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_tensor_create(NULL, 2, shape, CLNORM_F32, NULL, &u));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_tensor_create(tu_ctx, 2, shape, CLNORM_F32, NULL, NULL));
    /* round trip at an offset */
    float h[2 * 3 * 20], back[2 * 3 * 20];
    const size_t s3[3] = {2, 3, 20};
    tu_fill_normal(h, 120, 0.0, 1.0);
    cl_mem b = tu_buffer(120 * 4 + 4 * 37);
    tu_poison(b, 0, 120 * 4 + 4 * 37);
    clnorm_tensor v = tu_view(b, 4 * 37, 3, s3);
    TU_OK(clnorm_tensor_write(tu_ctx, &v, h));
    TU_OK(clnorm_tensor_read(tu_ctx, &v, back));
    TU_TRUE(memcmp(h, back, sizeof h) == 0);
    TU_TRUE(tu_poison_intact(b, 0, 4 * 37, "before the view"));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_tensor_read(tu_ctx, &v, NULL));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_tensor_write(tu_ctx, &v, NULL));
    v.offset = 4 * 38; /* one float past the end */
    TU_ERR(CLNORM_ERROR_BUFFER_TOO_SMALL, clnorm_tensor_write(tu_ctx, &v, h));
    TU_ERR(CLNORM_ERROR_BUFFER_TOO_SMALL, clnorm_tensor_read(tu_ctx, &v, back));
    tu_release(&b);
}

/* ---- the layer's refusals write nothing either ----------------------------------------------------------- */
static void test_layer_errors(void **state) {
    (void)state;
    tu_case("layer errors");
    const clnorm_status IA = CLNORM_ERROR_INVALID_ARGUMENT;
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm *bn = NULL;
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    TU_ERR(IA, clnorm_batchnorm_create(NULL, &cfg, &bn));
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, NULL, &bn));
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, NULL));
    static const int bad_nd[] = {-1, 4, 5};
    for (int k = 0; k < 3; k++) {
        clnorm_batchnorm_config_init(&cfg, bad_nd[k], 3);
        TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    }
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    cfg.epsilon = 0.0f;
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    cfg.epsilon = NAN;
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    cfg.init_factor = 1.5f;
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    cfg.min_factor = -0.1f;
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    cfg.sscale = -1.0f;
    TU_ERR(IA, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    clnorm_batchnorm_config_init(&cfg, 2, 0); /* zero maps: an argument or a shape error, never a layer */
    clnorm_status st = clnorm_batchnorm_create(tu_ctx, &cfg, &bn);
    if (st != IA && st != CLNORM_ERROR_SHAPE)
        tu_fail_at(__FILE__, __LINE__, "maps = 0 gave %s", clnorm_status_string(st));

    /* a working layer, trained once, then refused calls must leave everything as it was */
    const size_t maps = 3, shape[4] = {4, 3, 5, 6}, n = 360;
    clnorm_batchnorm_config_init(&cfg, 2, maps);
    bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    float x[360];
    tu_fill_normal(x, n, 0.0, 1.0);
    cl_mem bx = tu_buffer(n * 4), by = tu_buffer(n * 4), bdy = tu_buffer(n * 4), bdx = tu_buffer(n * 4);
    tu_write(bx, 0, x, n * 4);
    tu_write(bdy, 0, x, n * 4);
    clnorm_tensor tx = tu_view(bx, 0, 4, shape), ty = tu_view(by, 0, 4, shape), tdy = tu_view(bdy, 0, 4, shape),
                  tdx = tu_view(bdx, 0, 4, shape);
    TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
    TU_OK(clnorm_batchnorm_backward(bn, &tx, &tdy, &tdx, 1.0f, 0.0f));
    tu_finish();
    static const clnorm_field fields[] = {CLNORM_SCALE,     CLNORM_BIAS,        CLNORM_RUNNING_MEAN, CLNORM_RUNNING_VAR,
                                          CLNORM_SAVE_MEAN, CLNORM_SAVE_INVSTD, CLNORM_SCALE_GRAD,   CLNORM_BIAS_GRAD};
    float before[8][3], after[3];
    for (int k = 0; k < 8; k++)
        TU_OK(clnorm_batchnorm_read(bn, fields[k], before[k], maps));
    tu_sentinel_fill(by, n * 4, 1);
    tu_sentinel_fill(bdx, n * 4, 2);

    const size_t wrong_maps[4] = {4, 4, 5, 6}, wrong_batch[4] = {5, 3, 5, 6}, one[4] = {1, 3, 1, 1},
                 three_d[3] = {4, 3, 30};
    cl_mem big = tu_buffer(4 * 4 * 5 * 6 * 4);
    clnorm_tensor wm = tu_view(big, 0, 4, wrong_maps), wb = tu_view(big, 0, 4, wrong_batch),
                  w1 = tu_view(bx, 0, 4, one), w1y = tu_view(by, 0, 4, one), w3 = tu_view(bx, 0, 3, three_d),
                  xs = tu_view(bx, 4, 4, shape);
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 1, &wm, &ty));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 1, &tx, &wm));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 0, &wm, &ty));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 1, &w3, &ty));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 1, &w1, &w1y)); /* one value per statistic */
    TU_ERR(CLNORM_ERROR_BUFFER_TOO_SMALL, clnorm_batchnorm_forward(bn, 1, &xs, &ty));
    TU_ERR(IA, clnorm_batchnorm_forward(NULL, 1, &tx, &ty));
    TU_ERR(IA, clnorm_batchnorm_forward(bn, 1, NULL, &ty));
    TU_ERR(IA, clnorm_batchnorm_forward(bn, 1, &tx, NULL));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward(bn, &tx, &wb, &tdx, 1.0f, 0.5f));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward(bn, &tx, &tdy, &wb, 1.0f, 0.5f));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward(bn, &wm, &wm, &tdx, 1.0f, 0.5f));
    TU_ERR(IA, clnorm_batchnorm_backward(NULL, &tx, &tdy, &tdx, 1.0f, 0.5f));
    TU_ERR(IA, clnorm_batchnorm_backward(bn, &tx, NULL, &tdx, 1.0f, 0.5f));
    TU_ERR(IA, clnorm_batchnorm_read(bn, (clnorm_field)99, after, maps));
    TU_ERR(IA, clnorm_batchnorm_read(bn, CLNORM_SCALE, NULL, maps));
    TU_ERR(IA, clnorm_batchnorm_write(bn, (clnorm_field)-1, after, maps));
    TU_ERR(IA, clnorm_batchnorm_write(bn, CLNORM_BIAS, NULL, maps));
    /* a buffer of another context */
    clnorm_context *ctx2 = NULL;
    TU_OK(tu_context_create(&ctx2));
    cl_mem fx = tu_buffer_on(ctx2, n * 4);
    clnorm_tensor tf = tu_view(fx, 0, 4, shape);
    TU_ERR(IA, clnorm_batchnorm_forward(bn, 1, &tf, &ty));
    TU_ERR(IA, clnorm_batchnorm_backward(bn, &tx, &tf, &tdx, 1.0f, 0.5f));
    tu_release(&fx);
    clnorm_context_destroy(ctx2);

    tu_finish();
    TU_TRUE(clnorm_batchnorm_batches(bn) == 1);
    for (int k = 0; k < 8; k++) {
        TU_OK(clnorm_batchnorm_read(bn, fields[k], after, maps));
        if (memcmp(after, before[k], sizeof after) != 0)
            tu_fail_at(__FILE__, __LINE__, "a refused layer call changed field %d", (int)fields[k]);
    }
    TU_TRUE(tu_sentinel_intact(by, n * 4, 1, "layer y"));
    TU_TRUE(tu_sentinel_intact(bdx, n * 4, 2, "layer dx"));
    TU_TRUE(tu_bits_equal(bx, 0, x, n * 4, "layer x"));
    tu_release(&bx), tu_release(&by), tu_release(&bdy), tu_release(&bdx), tu_release(&big);
    clnorm_batchnorm_destroy(bn);
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_baseline),
        cmocka_unit_test(test_nulls),
        cmocka_unit_test(test_enums_eps_factor),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_one_value_per_statistic),
        cmocka_unit_test(test_buffer_too_small),
        cmocka_unit_test(test_misaligned_offsets),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_foreign_context),
        cmocka_unit_test(test_pairs),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_device_selectors),
        cmocka_unit_test(test_status_strings_and_version),
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_context_from_queue),
        cmocka_unit_test(test_tensor_helpers),
        cmocka_unit_test(test_layer_errors),
    };
    return cmocka_run_group_tests_name("errors", tests, tu_group_setup, tu_group_teardown);
}
