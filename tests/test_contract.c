/*
 * The C API keeps its word (what the header promises, tried as a new user would):
 * - in place: training y == x, backward dx == x and dx == dy give the reference's results (NCHW and NHWC, both
 *   modes, shapes that take the single-pass and the split paths);
 * - the strategy in use is queryable; an unknown CLNORM_STRATEGY, a bad CLNORM_MAX_WORK_GROUP_SIZE or a bad
 *   CLNORM_STREAM_MIN_BYTES fails context
 *   creation with a message naming the value; small work-groups (64, 32, 1) give the reference's results;
 * - the layer: its dtype/layout refusal names what it got and what it expected, writing a negative or NaN running
 *   variance is refused with nothing written, a subnormal float epsilon is refused at create;
 * - a constant group's statistics are exact in both layouts: variance 0, mean the constant.
 */
#define _POSIX_C_SOURCE 200809L /* setenv, strdup */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_bn.h"
#include "test_util.h"

/* host NCHW floats to the device order of layout (a fresh array) */
static float *to_layout(const tu_shape *s, const float *nchw, clnorm_layout lay) {
    size_t B, C, S, n = tu_numel(s->ndim, s->shape);
    tu_bcs(s, &B, &C, &S);
    float *out = tu_floats(n);
    if (lay == CLNORM_NHWC)
        tu_nchw_to_nhwc(nchw, out, B, C, S);
    else
        memcpy(out, nchw, n * 4);
    return out;
}

static float *read_nchw(cl_mem b, const tu_shape *s, clnorm_layout lay) {
    size_t B, C, S, n = tu_numel(s->ndim, s->shape);
    tu_bcs(s, &B, &C, &S);
    float *dev = tu_floats(n), *out = tu_floats(n);
    tu_read(b, 0, dev, n * 4);
    if (lay == CLNORM_NHWC)
        tu_nhwc_to_nchw(dev, out, B, C, S);
    else
        memcpy(out, dev, n * 4);
    free(dev);
    return out;
}

static clnorm_tensor view_of(cl_mem b, const tu_shape *s, clnorm_layout lay) {
    clnorm_tensor t = tu_view(b, 0, s->ndim, s->shape);
    t.layout = lay;
    return t;
}

/* shapes: small, one whose maps are long enough for the split (multi-slice) reductions, 2-D, 5-D */
static const tu_shape inplace_shapes[] = {
    {4, {3, 4, 11, 13}}, {4, {4, 2, 128, 129}}, {2, {700, 9}}, {5, {2, 3, 4, 5, 6}}, {2, {3, 300}}};

/* ---- training forward with y == x ------------------------------------------------------------------------------ */
static void run_train_inplace(clnorm_bn_mode mode, const tu_shape *s, clnorm_layout lay) {
    if (mode == CLNORM_BN_PER_ACTIVATION && lay == CLNORM_NHWC)
        return;
    tu_case("train in place %s %s %s", tu_mode_name(mode), tu_shape_str(s->ndim, s->shape),
            lay == CLNORM_NHWC ? "NHWC" : "NCHW");
    size_t n = tu_numel(s->ndim, s->shape), G = ref_groups(mode, s->ndim, s->shape);
    float *x = tu_floats(n), *scale = tu_floats(G), *bias = tu_floats(G), *rm = tu_floats(G), *rv = tu_floats(G);
    tu_fill_normal(x, n, 0.5, 2.0);
    tu_fill_normal(scale, G, 1.0, 0.5);
    tu_fill_normal(bias, G, 0.0, 1.0);
    tu_fill_normal(rm, G, 0.0, 1.0);
    tu_fill_uniform(rv, G, 0.5, 2.0);
    double *yr = tu_doubles(n), *mr = tu_doubles(G), *ir = tu_doubles(G), *rmr = tu_doubles(G), *rvr = tu_doubles(G);
    ref_bn_forward_training(mode, s->ndim, s->shape, x, scale, bias, 0.3, 1e-5, rm, rv, yr, mr, NULL, ir, rmr, rvr);

    float *xl = to_layout(s, x, lay);
    cl_mem bx = tu_buffer_from(xl, n), bs = tu_buffer_from(scale, G), bb = tu_buffer_from(bias, G),
           brm = tu_buffer_from(rm, G), brv = tu_buffer_from(rv, G), bsm = tu_buffer(G * 4), bsi = tu_buffer(G * 4);
    tu_poison(bsm, 0, G * 4);
    tu_poison(bsi, 0, G * 4);
    clnorm_tensor t = view_of(bx, s, lay);
    TU_OK(clnorm_bn_forward_training(tu_ctx, mode, &t, &t, bs, bb, 0.3, 1e-5, brm, brv, bsm, bsi));
    tu_finish();
    float *got = read_nchw(bx, s, lay);
    TU_TRUE(tu_compare("y (over x)", got, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_TRUE(tu_compare_param("running_mean", brm, rmr, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare_param("running_var", brv, rvr, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare_param("save_mean", bsm, mr, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare_param("save_invstd", bsi, ir, G, TU_STAT_ATOL, TU_STAT_RTOL));
    tu_release(&bx), tu_release(&bs), tu_release(&bb), tu_release(&brm), tu_release(&brv), tu_release(&bsm),
        tu_release(&bsi);
    free(x), free(scale), free(bias), free(rm), free(rv), free(xl), free(got);
    free(yr), free(mr), free(ir), free(rmr), free(rvr);
}

static void test_train_in_place(void **state) {
    (void)state;
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < TU_COUNT(inplace_shapes); i++)
            for (int l = 0; l < 2; l++)
                run_train_inplace(m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL, &inplace_shapes[i],
                                  l ? CLNORM_NHWC : CLNORM_NCHW);
}

/* ---- backward with dx == x or dx == dy ------------------------------------------------------------------------- */
static void run_bwd_inplace(clnorm_bn_mode mode, const tu_shape *s, clnorm_layout lay, int over_dy, int saved) {
    if (mode == CLNORM_BN_PER_ACTIVATION && lay == CLNORM_NHWC)
        return;
    tu_case("backward dx == %s %s %s %s saved=%d", over_dy ? "dy" : "x", tu_mode_name(mode),
            tu_shape_str(s->ndim, s->shape), lay == CLNORM_NHWC ? "NHWC" : "NCHW", saved);
    size_t n = tu_numel(s->ndim, s->shape), G = ref_groups(mode, s->ndim, s->shape);
    float *x = tu_floats(n), *dy = tu_floats(n), *scale = tu_floats(G), *sm = tu_floats(G), *si = tu_floats(G);
    double *mean = tu_doubles(G), *var = tu_doubles(G), *dxr = tu_doubles(n), *dsr = tu_doubles(G),
           *dbr = tu_doubles(G);
    tu_fill_normal(x, n, 1.0, 2.0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    tu_fill_normal(scale, G, 1.0, 0.5);
    ref_bn_stats(mode, s->ndim, s->shape, x, mean, var);
    for (size_t g = 0; g < G; g++) {
        sm[g] = (float)mean[g];
        si[g] = (float)(1.0 / sqrt(var[g] + 1e-5));
    }
    ref_bn_backward(mode, s->ndim, s->shape, x, dy, scale, 1e-5, saved ? sm : NULL, saved ? si : NULL, dxr, dsr, dbr);

    float *xl = to_layout(s, x, lay), *dyl = to_layout(s, dy, lay);
    cl_mem bx = tu_buffer_from(xl, n), bdy = tu_buffer_from(dyl, n), bs = tu_buffer_from(scale, G),
           bds = tu_buffer(G * 4), bdb = tu_buffer(G * 4);
    cl_mem bsm = saved ? tu_buffer_from(sm, G) : NULL, bsi = saved ? tu_buffer_from(si, G) : NULL;
    tu_poison(bds, 0, G * 4);
    tu_poison(bdb, 0, G * 4);
    clnorm_tensor tx = view_of(bx, s, lay), tdy = view_of(bdy, s, lay);
    const clnorm_tensor *tdx = over_dy ? &tdy : &tx;
    TU_OK(clnorm_bn_backward(tu_ctx, mode, &tx, &tdy, tdx, bs, bds, bdb, 1e-5, bsm, bsi));
    tu_finish();
    float *got = read_nchw(over_dy ? bdy : bx, s, lay);
    TU_TRUE(tu_compare(over_dy ? "dx (over dy)" : "dx (over x)", got, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
    TU_TRUE(tu_compare_param("dscale", bds, dsr, G, TU_BWD_ATOL, TU_BWD_RTOL));
    TU_TRUE(tu_compare_param("dbias", bdb, dbr, G, TU_BWD_ATOL, TU_BWD_RTOL));
    /* the other input is untouched */
    TU_TRUE(tu_bits_equal(over_dy ? bx : bdy, 0, over_dy ? xl : dyl, n * 4, "the input dx does not alias"));
    tu_release(&bx), tu_release(&bdy), tu_release(&bs), tu_release(&bds), tu_release(&bdb), tu_release(&bsm),
        tu_release(&bsi);
    free(x), free(dy), free(scale), free(sm), free(si), free(xl), free(dyl), free(got);
    free(mean), free(var), free(dxr), free(dsr), free(dbr);
}

static void test_backward_in_place(void **state) {
    (void)state;
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < TU_COUNT(inplace_shapes); i++)
            for (int l = 0; l < 2; l++)
                for (int over_dy = 0; over_dy < 2; over_dy++)
                    run_bwd_inplace(m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL, &inplace_shapes[i],
                                    l ? CLNORM_NHWC : CLNORM_NCHW, over_dy, (int)((i + (size_t)over_dy) % 2));
}

/* ---- constant groups: exact statistics in both layouts ---------------------------------------------------------- */
static void test_constant_groups_exact(void **state) {
    (void)state;
    static const float constants[] = {0.0f, 1.0f, -3.7f, 1000.1f, 12345.678f, 1e-3f, -250.25f, 3.0e5f};
    /* rows: one-launch and (one map, many values) split into slices; columns: 1-wide tiles (8 columns) and, NHWC
     * with 40 maps, the CPU strategy's 16-wide tiles plus a tail */
    static const tu_shape shapes[] = {
        {4, {4, 8, 9, 11}}, {4, {3, 8, 130, 131}}, {2, {1000, 8}}, {3, {2, 1, 70000}}, {4, {2, 40, 5, 7}}};
    for (size_t k = 0; k < TU_COUNT(shapes); k++)
        for (int l = 0; l < 2; l++) {
            const tu_shape *s = &shapes[k];
            clnorm_layout lay = l ? CLNORM_NHWC : CLNORM_NCHW;
            tu_case("constant groups %s %s", tu_shape_str(s->ndim, s->shape), l ? "NHWC" : "NCHW");
            size_t n = tu_numel(s->ndim, s->shape), G = s->shape[1];
            float *x = tu_floats(n), *zeros = tu_floats(G);
            memset(zeros, 0, G * 4);
            for (size_t i = 0; i < n; i++)
                x[i] = constants[ref_group_of(CLNORM_BN_SPATIAL, s->ndim, s->shape, i) % TU_COUNT(constants)];
            float *xl = to_layout(s, x, lay);
            cl_mem bx = tu_buffer_from(xl, n), by = tu_buffer(n * 4), brm = tu_buffer_from(zeros, G),
                   brv = tu_buffer_from(zeros, G), bsm = tu_buffer(G * 4), bsi = tu_buffer(G * 4);
            tu_poison(by, 0, n * 4);
            tu_poison(bsm, 0, G * 4);
            tu_poison(bsi, 0, G * 4);
            clnorm_tensor tx = view_of(bx, s, lay), ty = view_of(by, s, lay);
            TU_OK(clnorm_bn_forward_training(tu_ctx, CLNORM_BN_SPATIAL, &tx, &ty, NULL, NULL, 1.0, 1e-5, brm, brv, bsm,
                                             bsi));
            tu_finish();
            float *rv = tu_floats(G), *sm = tu_floats(G), *si = tu_floats(G);
            tu_read(brv, 0, rv, G * 4);
            tu_read(bsm, 0, sm, G * 4);
            tu_read(bsi, 0, si, G * 4);
            float *y = read_nchw(by, s, lay);
            for (size_t g = 0; g < G; g++) {
                float c = constants[g % TU_COUNT(constants)];
                if (rv[g] != 0.0f)
                    tu_fail_at(__FILE__, __LINE__, "constant %g (map %zu): running variance %.9g, expected exactly 0",
                               (double)c, g, (double)rv[g]);
                if (sm[g] != c)
                    tu_fail_at(__FILE__, __LINE__, "constant %g (map %zu): mean %.9g, expected exactly the constant",
                               (double)c, g, (double)sm[g]);
                double want = 1.0 / sqrt(1e-5);
                if (!(fabs(si[g] - want) <= 1e-6 * want))
                    tu_fail_at(__FILE__, __LINE__, "constant %g (map %zu): invstd %.9g, expected %.9g", (double)c, g,
                               (double)si[g], want);
            }
            for (size_t i = 0; i < n; i++)
                if (y[i] != 0.0f)
                    tu_fail_at(__FILE__, __LINE__, "constant groups: y[%zu] = %.9g, expected exactly 0", i,
                               (double)y[i]);
            tu_release(&bx), tu_release(&by), tu_release(&brm), tu_release(&brv), tu_release(&bsm), tu_release(&bsi);
            free(x), free(zeros), free(xl), free(rv), free(sm), free(si), free(y);
        }
}

/* ---- strategy and work-group knobs --------------------------------------------------------------------------------
 */
static void test_strategy_query(void **state) {
    (void)state;
    tu_case("strategy query");
    const char *s = clnorm_context_strategy(tu_ctx), *env = getenv("CLNORM_STRATEGY");
    TU_TRUE(s != NULL && (strcmp(s, "cpu") == 0 || strcmp(s, "gpu") == 0));
    if (env && *env)
        TU_TRUE(strcmp(s, env) == 0 || (strcmp(env, "GPU") == 0 && strcmp(s, "gpu") == 0) ||
                (strcmp(env, "CPU") == 0 && strcmp(s, "cpu") == 0));
    TU_TRUE(clnorm_context_strategy(NULL) == NULL);

    static const char *const good[][2] = {{"GPU", "gpu"}, {"cpu", "cpu"}, {"Gpu", "gpu"}, {"CPU", "cpu"}};
    for (size_t i = 0; i < TU_COUNT(good); i++) {
        clnorm_context *c = NULL;
        clnorm_status st = tu_context_create_env("CLNORM_STRATEGY", good[i][0], &c);
        TU_OK(st);
        TU_TRUE(strcmp(clnorm_context_strategy(c), good[i][1]) == 0);
        clnorm_context_destroy(c);
    }
    static const char *const bad[] = {"bogus", "gpu ", "cpus", "1", "g"};
    for (size_t i = 0; i < TU_COUNT(bad); i++) {
        tu_case("CLNORM_STRATEGY=\"%s\"", bad[i]);
        clnorm_context *c = (clnorm_context *)&c; /* must be set to NULL */
        clnorm_status st = tu_context_create_env("CLNORM_STRATEGY", bad[i], &c);
        TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, st);
        TU_TRUE(c == NULL);
        TU_TRUE(strstr(clnorm_last_error(), "CLNORM_STRATEGY") != NULL);
        TU_TRUE(strstr(clnorm_last_error(), bad[i]) != NULL);
    }
    /* the same for a context on the application's queue */
    char *saved = tu_swap_env("CLNORM_STRATEGY", "bogus");
    clnorm_context *c = NULL;
    clnorm_status st = clnorm_context_create_from_queue(clnorm_context_queue(tu_ctx), &c);
    tu_restore_env("CLNORM_STRATEGY", saved);
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, st);
    TU_TRUE(c == NULL);
}

/* a training forward and a backward on a context whose work-groups are capped, against the reference */
static void run_small_wg(clnorm_context *c, clnorm_bn_mode mode, const tu_shape *s, clnorm_layout lay) {
    size_t n = tu_numel(s->ndim, s->shape), G = ref_groups(mode, s->ndim, s->shape);
    float *x = tu_floats(n), *dy = tu_floats(n);
    tu_fill_normal(x, n, -2.0, 3.0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    double *yr = tu_doubles(n), *dxr = tu_doubles(n), *dsr = tu_doubles(G), *dbr = tu_doubles(G);
    ref_bn_forward_training(mode, s->ndim, s->shape, x, NULL, NULL, 0.0, 1e-5, NULL, NULL, yr, NULL, NULL, NULL, NULL,
                            NULL);
    ref_bn_backward(mode, s->ndim, s->shape, x, dy, NULL, 1e-5, NULL, NULL, dxr, dsr, dbr);
    float *xl = to_layout(s, x, lay), *dyl = to_layout(s, dy, lay);
    cl_mem bx = tu_buffer_on(c, n * 4), bdy = tu_buffer_on(c, n * 4), by = tu_buffer_on(c, n * 4),
           bdx = tu_buffer_on(c, n * 4), bds = tu_buffer_on(c, G * 4), bdb = tu_buffer_on(c, G * 4);
    cl_command_queue q = clnorm_context_queue(c);
    TU_TRUE(clEnqueueWriteBuffer(q, bx, CL_TRUE, 0, n * 4, xl, 0, NULL, NULL) == CL_SUCCESS);
    TU_TRUE(clEnqueueWriteBuffer(q, bdy, CL_TRUE, 0, n * 4, dyl, 0, NULL, NULL) == CL_SUCCESS);
    clnorm_tensor tx = view_of(bx, s, lay), ty = view_of(by, s, lay), tdy = view_of(bdy, s, lay),
                  tdx = view_of(bdx, s, lay);
    TU_OK(clnorm_bn_forward_training(c, mode, &tx, &ty, NULL, NULL, 0.0, 1e-5, NULL, NULL, NULL, NULL));
    TU_OK(clnorm_bn_backward(c, mode, &tx, &tdy, &tdx, NULL, bds, bdb, 1e-5, NULL, NULL));
    TU_OK(clnorm_context_finish(c));
    float *dev = tu_floats(n), *got = tu_floats(n), *gp = tu_floats(G);
    size_t B, C, S;
    tu_bcs(s, &B, &C, &S);
    TU_TRUE(clEnqueueReadBuffer(q, by, CL_TRUE, 0, n * 4, dev, 0, NULL, NULL) == CL_SUCCESS);
    if (lay == CLNORM_NHWC)
        tu_nhwc_to_nchw(dev, got, B, C, S);
    else
        memcpy(got, dev, n * 4);
    TU_TRUE(tu_compare("y", got, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_TRUE(clEnqueueReadBuffer(q, bdx, CL_TRUE, 0, n * 4, dev, 0, NULL, NULL) == CL_SUCCESS);
    if (lay == CLNORM_NHWC)
        tu_nhwc_to_nchw(dev, got, B, C, S);
    else
        memcpy(got, dev, n * 4);
    TU_TRUE(tu_compare("dx", got, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
    TU_TRUE(clEnqueueReadBuffer(q, bds, CL_TRUE, 0, G * 4, gp, 0, NULL, NULL) == CL_SUCCESS);
    TU_TRUE(tu_compare("dscale", gp, dsr, G, TU_BWD_ATOL, TU_BWD_RTOL));
    TU_TRUE(clEnqueueReadBuffer(q, bdb, CL_TRUE, 0, G * 4, gp, 0, NULL, NULL) == CL_SUCCESS);
    TU_TRUE(tu_compare("dbias", gp, dbr, G, TU_BWD_ATOL, TU_BWD_RTOL));
    tu_release(&bx), tu_release(&bdy), tu_release(&by), tu_release(&bdx), tu_release(&bds), tu_release(&bdb);
    free(x), free(dy), free(xl), free(dyl), free(dev), free(got), free(gp);
    free(yr), free(dxr), free(dsr), free(dbr);
}

/* a context created with knob=value fails with INVALID_ARGUMENT, creates nothing, and its message names the knob and
 * the value */
static void check_knob_refused(const char *knob, const char *value) {
    tu_case("%s=\"%s\"", knob, value);
    clnorm_context *c = NULL;
    clnorm_status st = tu_context_create_env(knob, value, &c);
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, st);
    TU_TRUE(c == NULL);
    TU_TRUE(strstr(clnorm_last_error(), knob) != NULL);
    TU_TRUE(strstr(clnorm_last_error(), value) != NULL);
}

static void test_work_group_knob(void **state) {
    (void)state;
    static const char *const bad[] = {"0", "abc", "-64", "64x", " 64"}; /* (empty: unset, the default) */
    for (size_t i = 0; i < TU_COUNT(bad); i++)
        check_knob_refused("CLNORM_MAX_WORK_GROUP_SIZE", bad[i]);
    static const char *const bad_stream[] = {"abc", "-1", "8M", " 1", "1e6", "99999999999999999999999"};
    for (size_t i = 0; i < TU_COUNT(bad_stream); i++)
        check_knob_refused("CLNORM_STREAM_MIN_BYTES", bad_stream[i]);
    static const char *const caps[] = {"32", "1"}; /* 64: the whole suite runs at 64 in CI */
    static const tu_shape shapes[] = {{4, {4, 3, 40, 41}}, {2, {50, 7}}, {3, {5, 4, 1000}}};
    for (size_t i = 0; i < TU_COUNT(caps); i++) {
        clnorm_context *c = NULL;
        clnorm_status st = tu_context_create_env("CLNORM_MAX_WORK_GROUP_SIZE", caps[i], &c);
        TU_OK(st);
        for (size_t k = 0; k < TU_COUNT(shapes); k++)
            for (int m = 0; m < 2; m++)
                for (int l = 0; l < 2; l++) {
                    if (m && l)
                        continue;
                    tu_case("CLNORM_MAX_WORK_GROUP_SIZE=%s %s %s %s", caps[i], m ? "PER_ACTIVATION" : "SPATIAL",
                            tu_shape_str(shapes[k].ndim, shapes[k].shape), l ? "NHWC" : "NCHW");
                    run_small_wg(c, m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL, &shapes[k],
                                 l ? CLNORM_NHWC : CLNORM_NCHW);
                }
        clnorm_context_destroy(c);
    }
}

/* ---- the layer ----------------------------------------------------------------------------------------------------
 */
static void test_layer_dtype_layout_message(void **state) {
    (void)state;
    tu_case("layer dtype/layout refusal");
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    const size_t shape[4] = {2, 3, 4, 5};
    size_t n = tu_numel(4, shape);
    float *x = tu_floats(n);
    tu_fill_normal(x, n, 0.0, 1.0);
    cl_mem bx = tu_buffer_from(x, n), by = tu_buffer(n * 4);
    for (int k = 0; k < 2; k++) {
        tu_poison(by, 0, n * 4);
        clnorm_tensor tx = tu_view(bx, 0, 4, shape), ty = tu_view(by, 0, 4, shape);
        if (k == 0)
            tx.dtype = ty.dtype = CLNORM_F16;
        else
            tx.layout = ty.layout = CLNORM_NHWC;
        TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        const char *e = clnorm_last_error();
        TU_TRUE(strstr(e, k == 0 ? "CLNORM_F16" : "CLNORM_NHWC") != NULL);            /* what it got */
        TU_TRUE(strstr(e, "CLNORM_F32") != NULL && strstr(e, "CLNORM_NCHW") != NULL); /* what the layer has */
        tu_finish();
        TU_TRUE(tu_poison_intact(by, 0, n * 4, "y of a refused forward"));
        TU_TRUE(tu_bits_equal(bx, 0, x, n * 4, "x of a refused forward"));
    }
    tu_release(&bx), tu_release(&by);
    free(x);
    clnorm_batchnorm_destroy(bn);
}

static void test_layer_running_var_write(void **state) {
    (void)state;
    tu_case("layer running variance write");
    const size_t maps = 5;
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 1, maps);
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    float v[5], back[5];
    tu_fill_uniform(v, maps, 0.5, 2.0);
    v[4] = 0.0f; /* 0 is a variance */
    TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_VAR, v, maps));
    static const float bad[] = {-1.0f, -FLT_MIN, -INFINITY, NAN};
    for (size_t i = 0; i < TU_COUNT(bad); i++) {
        float w[5];
        memcpy(w, v, sizeof w);
        w[i % maps] = bad[i];
        TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_write(bn, CLNORM_RUNNING_VAR, w, maps));
        TU_TRUE(strstr(clnorm_last_error(), "CLNORM_RUNNING_VAR") != NULL);
        TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, back, maps));
        TU_TRUE(memcmp(back, v, sizeof v) == 0); /* nothing written */
    }
    /* the running mean may be anything finite or not: PuzzleLib writes what it is given */
    float m[5] = {-1.0f, 2.0f, -3.0f, 0.0f, 1e30f};
    TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_MEAN, m, maps));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, back, maps));
    TU_TRUE(memcmp(back, m, sizeof m) == 0);
    clnorm_batchnorm_destroy(bn);
}

static void test_layer_epsilon(void **state) {
    (void)state;
    tu_case("layer epsilon");
    static const float bad[] = {0.0f, -1e-5f, 1e-40f, FLT_MIN / 2, INFINITY, NAN};
    for (size_t i = 0; i < TU_COUNT(bad); i++) {
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, 2, 3);
        cfg.epsilon = bad[i];
        clnorm_batchnorm *bn = (clnorm_batchnorm *)&bn;
        TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
        TU_TRUE(bn == NULL);
        TU_TRUE(strstr(clnorm_last_error(), "epsilon") != NULL);
    }
    /* the smallest accepted epsilon works end to end (a constant input: y = bias exactly 0) */
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    cfg.epsilon = FLT_MIN;
    cfg.affine = 0;
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    const size_t shape[4] = {2, 3, 2, 2};
    float x[24], y[24];
    for (int i = 0; i < 24; i++)
        x[i] = (float)(i % 7) - 3.0f;
    cl_mem bx = tu_buffer_from(x, 24), by = tu_buffer(24 * 4);
    tu_poison(by, 0, 24 * 4);
    clnorm_tensor tx = tu_view(bx, 0, 4, shape), ty = tu_view(by, 0, 4, shape);
    TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
    tu_finish();
    tu_read(by, 0, y, sizeof y);
    double yr[24];
    ref_bn_forward_training(CLNORM_BN_SPATIAL, 4, shape, x, NULL, NULL, 1.0, FLT_MIN, NULL, NULL, yr, NULL, NULL, NULL,
                            NULL, NULL);
    TU_TRUE(tu_compare("y", y, yr, 24, TU_FWD_ATOL, TU_FWD_RTOL));
    tu_release(&bx), tu_release(&by);
    clnorm_batchnorm_destroy(bn);
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_in_place),          cmocka_unit_test(test_backward_in_place),
        cmocka_unit_test(test_constant_groups_exact),   cmocka_unit_test(test_strategy_query),
        cmocka_unit_test(test_work_group_knob),         cmocka_unit_test(test_layer_dtype_layout_message),
        cmocka_unit_test(test_layer_running_var_write), cmocka_unit_test(test_layer_epsilon),
    };
    return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
