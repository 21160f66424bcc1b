/*
 * The PuzzleLib-style layer clnorm_batchnorm_*: factor schedule, running/saved statistics, gradient
 * accumulation, non-affine, inplace, empty, reset, name, parameter I/O, initial parameters, shape errors.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_bn.h"
#include "test_util.h"

/* x shape for a layer of dimensionality nd: (batch, maps) or (batch, maps, spatial...) with nd spatial dims */
static tu_shape layer_shape(int nd, size_t batch, size_t maps, size_t d, size_t h, size_t w) {
    tu_shape s;
    memset(&s, 0, sizeof s);
    s.ndim = nd + 2;
    s.shape[0] = batch;
    s.shape[1] = maps;
    if (nd == 1)
        s.shape[2] = w;
    if (nd == 2)
        s.shape[2] = h, s.shape[3] = w;
    if (nd == 3)
        s.shape[2] = d, s.shape[3] = h, s.shape[4] = w;
    return s;
}

static clnorm_bn_mode layer_mode(int nd) {
    return nd == 0 ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
}

static clnorm_batchnorm *make_layer(const clnorm_batchnorm_config *cfg) {
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, cfg, &bn));
    TU_TRUE(bn != NULL);
    return bn;
}

static float *read_field(clnorm_batchnorm *bn, clnorm_field f) {
    size_t G = clnorm_batchnorm_param_count(bn);
    float *h = tu_floats(G);
    TU_OK(clnorm_batchnorm_read(bn, f, h, G));
    return h;
}

/* device tensor with host data (or NaN poison) */
static clnorm_tensor tensor_of(const tu_shape *s, const float *host) {
    size_t n = tu_numel(s->ndim, s->shape);
    cl_mem b = tu_buffer(n * 4);
    if (host)
        tu_write(b, 0, host, n * 4);
    else
        tu_poison(b, 0, n * 4);
    return tu_view(b, 0, s->ndim, s->shape);
}

static void read_tensor(const clnorm_tensor *t, float *host) {
    tu_read(t->buffer, t->offset, host, tu_numel(t->ndim, t->shape) * 4);
}

static int contains(const char *hay, const char *needle);

static void release_tensor(clnorm_tensor *t) {
    tu_release(&t->buffer);
}

/* ---- factor schedule and statistics ------------------------------------------------------ */
static void run_schedule(int nd, size_t maps, float init_factor, float min_factor, int affine, int steps) {
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, nd, maps);
    cfg.init_factor = init_factor;
    cfg.min_factor = min_factor;
    cfg.affine = affine;
    tu_case("schedule nd=%d maps=%zu init=%g min=%g affine=%d", nd, maps, init_factor, min_factor, affine);
    cfg.seed = tu_case_seed();
    clnorm_batchnorm *bn = make_layer(&cfg);
    const size_t G = maps;
    const clnorm_bn_mode mode = layer_mode(nd);
    TU_TRUE(clnorm_batchnorm_param_count(bn) == G);
    TU_TRUE(clnorm_batchnorm_batches(bn) == 0);
    float *scale = NULL, *bias = NULL;
    if (affine) {
        scale = read_field(bn, CLNORM_SCALE);
        bias = read_field(bn, CLNORM_BIAS);
    }
    double *rm = tu_doubles(G), *rv = tu_doubles(G), *mean = tu_doubles(G), *var = tu_doubles(G), *inv = tu_doubles(G);
    for (size_t g = 0; g < G; g++)
        rm[g] = 0.0, rv[g] = 1.0;
    const double eps = cfg.epsilon;

    for (int step = 1; step <= steps; step++) {
        tu_case("schedule nd=%d maps=%zu init=%g min=%g affine=%d step=%d", nd, maps, init_factor, min_factor, affine,
                step);
        /* batch and spatial extent change between steps, as PuzzleLib allows */
        tu_shape s = layer_shape(nd, (size_t)(2 + step % 4), maps, (size_t)(1 + step % 2), (size_t)(3 + step % 3),
                                 (size_t)(5 + step));
        size_t n = tu_numel(s.ndim, s.shape), M = ref_group_size(mode, s.ndim, s.shape);
        float *x = tu_floats(n), *y = tu_floats(n);
        double *yr = tu_doubles(n);
        tu_fill_normal(x, n, 0.25 * step - 1.0, 0.5 + 0.1 * step);
        clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        TU_TRUE(clnorm_batchnorm_batches(bn) == (uint64_t)step);

        double f = fmax((double)init_factor / step, (double)min_factor);
        ref_bn_forward_training(mode, s.ndim, s.shape, x, scale, bias, 0.0, eps, NULL, NULL, yr, mean, var, inv, NULL,
                                NULL);
        for (size_t g = 0; g < G; g++) {
            rm[g] = (1.0 - f) * rm[g] + f * mean[g];
            rv[g] = (1.0 - f) * rv[g] + f * var[g] * (double)M / (double)(M - 1);
        }
        read_tensor(&ty, y);
        TU_TRUE(tu_compare("y", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
        float *got = read_field(bn, CLNORM_RUNNING_MEAN);
        TU_TRUE(tu_compare("running mean", got, rm, G, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        got = read_field(bn, CLNORM_RUNNING_VAR);
        TU_TRUE(tu_compare("running var (unbiased)", got, rv, G, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        got = read_field(bn, CLNORM_SAVE_MEAN);
        TU_TRUE(tu_compare("save mean", got, mean, G, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        got = read_field(bn, CLNORM_SAVE_INVSTD);
        TU_TRUE(tu_compare("save invstd", got, inv, G, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        if (affine) { /* training does not touch the parameters */
            got = read_field(bn, CLNORM_SCALE);
            TU_TRUE(memcmp(got, scale, G * 4) == 0);
            free(got);
        }
        release_tensor(&tx);
        release_tensor(&ty);
        free(x), free(y), free(yr);
    }

    /* inference uses the running statistics and leaves n alone */
    tu_case("schedule nd=%d maps=%zu init=%g min=%g affine=%d inference", nd, maps, init_factor, min_factor, affine);
    tu_shape s = layer_shape(nd, 3, maps, 2, 3, 7);
    size_t n = tu_numel(s.ndim, s.shape);
    float *x = tu_floats(n), *y = tu_floats(n), *frm = read_field(bn, CLNORM_RUNNING_MEAN),
          *frv = read_field(bn, CLNORM_RUNNING_VAR);
    double *yr = tu_doubles(n);
    tu_fill_normal(x, n, 1.0, 2.0);
    clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL);
    TU_OK(clnorm_batchnorm_forward(bn, 0, &tx, &ty));
    read_tensor(&ty, y);
    ref_bn_forward_inference(mode, s.ndim, s.shape, x, scale, bias, frm, frv, eps, yr);
    TU_TRUE(tu_compare("inference y", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_TRUE(clnorm_batchnorm_batches(bn) == (uint64_t)steps);
    float *after = read_field(bn, CLNORM_RUNNING_MEAN);
    TU_TRUE(memcmp(after, frm, G * 4) == 0);
    free(after);

    release_tensor(&tx);
    release_tensor(&ty);
    free(x), free(y), free(yr), free(frm), free(frv);
    free(scale), free(bias), free(rm), free(rv), free(mean), free(var), free(inv);
    clnorm_batchnorm_destroy(bn);
}

static void test_schedule_all_nd(void **state) {
    (void)state;
    for (int nd = 0; nd <= 3; nd++)
        run_schedule(nd, nd == 0 ? 37 : (size_t)(3 + 2 * nd), 1.0f, 0.1f, 1, 13);
}

static void test_schedule_custom_factors(void **state) {
    (void)state;
    run_schedule(2, 5, 0.5f, 0.2f, 1, 12);
    run_schedule(0, 19, 0.9f, 0.05f, 0, 14);
    run_schedule(3, 2, 1.0f, 0.0f, 1, 12);
    run_schedule(1, 1, 0.3f, 0.3f, 0, 12); /* factor constant */
}

/* ---- backward and gradient accumulation ----------------------------------------------------- */
static void run_grads(int nd, size_t maps, int affine) {
    const float gscale = 0.5f, momentum = 0.9f;
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, nd, maps);
    cfg.affine = affine;
    tu_case("grads nd=%d maps=%zu affine=%d", nd, maps, affine);
    cfg.seed = tu_case_seed();
    cfg.sscale = 0.3f; /* a scale visibly different from 1 */
    clnorm_batchnorm *bn = make_layer(&cfg);
    const size_t G = maps;
    const clnorm_bn_mode mode = layer_mode(nd);
    float *scale = NULL;
    double *accs = tu_doubles(G), *accb = tu_doubles(G), *dsr = tu_doubles(G), *dbr = tu_doubles(G);
    for (size_t g = 0; g < G; g++)
        accs[g] = accb[g] = 0.0;
    if (affine) {
        scale = read_field(bn, CLNORM_SCALE);
        float *g0 = read_field(bn, CLNORM_SCALE_GRAD), *b0 = read_field(bn, CLNORM_BIAS_GRAD);
        TU_TRUE(tu_compare("initial scale grad", g0, accs, G, 0.0, 0.0));
        TU_TRUE(tu_compare("initial bias grad", b0, accb, G, 0.0, 0.0));
        free(g0), free(b0);
    } else {
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_SCALE_GRAD) == NULL);
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_BIAS_GRAD) == NULL);
    }
    for (int step = 1; step <= 5; step++) {
        tu_case("grads nd=%d maps=%zu affine=%d step=%d", nd, maps, affine, step);
        tu_shape s = layer_shape(nd, (size_t)(3 + step), maps, 2, (size_t)(2 + step), 9);
        size_t n = tu_numel(s.ndim, s.shape);
        float *x = tu_floats(n), *dy = tu_floats(n), *dx = tu_floats(n);
        double *dxr = tu_doubles(n);
        tu_fill_normal(x, n, 2.0 - step, 1.5);
        tu_fill_normal(dy, n, 0.1 * step, 1.0);
        clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL), tdy = tensor_of(&s, dy),
                      tdx = tensor_of(&s, NULL);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        float *sm = read_field(bn, CLNORM_SAVE_MEAN), *si = read_field(bn, CLNORM_SAVE_INVSTD);
        ref_bn_backward(mode, s.ndim, s.shape, x, dy, scale, cfg.epsilon, sm, si, dxr, dsr, dbr);
        int with_dx = step != 2; /* step 2: no input gradient */
        int twice = step == 4;   /* step 4: two backward calls on the same forward */
        for (int k = 0; k < 1 + twice; k++) {
            TU_OK(clnorm_batchnorm_backward(bn, &tx, &tdy, with_dx ? &tdx : NULL, gscale, momentum));
            for (size_t g = 0; g < G; g++) {
                accs[g] = gscale * dsr[g] + momentum * accs[g];
                accb[g] = gscale * dbr[g] + momentum * accb[g];
            }
        }
        if (with_dx) {
            read_tensor(&tdx, dx);
            TU_TRUE(tu_compare("dx", dx, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
        } else {
            tu_read(tdx.buffer, 0, dx, n * 4);
            for (size_t i = 0; i < n; i++)
                TU_TRUE(isnan(dx[i])); /* untouched poison */
        }
        if (affine) {
            float *gs = read_field(bn, CLNORM_SCALE_GRAD), *gb = read_field(bn, CLNORM_BIAS_GRAD);
            TU_TRUE(tu_compare("accumulated scale grad", gs, accs, G, TU_BWD_ATOL, TU_BWD_RTOL));
            TU_TRUE(tu_compare("accumulated bias grad", gb, accb, G, TU_BWD_ATOL, TU_BWD_RTOL));
            free(gs), free(gb);
            float *sc = read_field(bn, CLNORM_SCALE); /* backward does not update the parameters */
            TU_TRUE(memcmp(sc, scale, G * 4) == 0);
            free(sc);
        }
        TU_TRUE(clnorm_batchnorm_batches(bn) == (uint64_t)step);
        release_tensor(&tx), release_tensor(&ty), release_tensor(&tdy), release_tensor(&tdx);
        free(x), free(dy), free(dx), free(dxr), free(sm), free(si);
    }
    free(scale), free(accs), free(accb), free(dsr), free(dbr);
    clnorm_batchnorm_destroy(bn);
}

static void test_backward_grads(void **state) {
    (void)state;
    for (int nd = 0; nd <= 3; nd++)
        run_grads(nd, nd == 0 ? 29 : (size_t)(2 + nd), 1);
}

static void test_non_affine(void **state) {
    (void)state;
    for (int nd = 0; nd <= 3; nd++)
        run_grads(nd, nd == 0 ? 11 : 3, 0);
    /* PuzzleLib keeps scale (1) and bias (0) of a non-affine layer: readable, writable, used by the forward and by
       dx, never trained; the two gradients do not exist */
    for (int nd = 0; nd <= 3; nd++) {
        const size_t maps = nd == 0 ? 13 : 4;
        const clnorm_bn_mode mode = layer_mode(nd);
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, nd, maps);
        cfg.affine = 0;
        tu_case("non-affine fields nd=%d", nd);
        cfg.seed = tu_case_seed();
        cfg.sscale = 0.5f; /* ignored: a non-affine scale starts at 1 */
        clnorm_batchnorm *bn = make_layer(&cfg);
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_SCALE) != NULL);
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_BIAS) != NULL);
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_SCALE_GRAD) == NULL);
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_BIAS_GRAD) == NULL);
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_RUNNING_MEAN) != NULL);
        TU_TRUE(clnorm_batchnorm_buffer(bn, CLNORM_RUNNING_VAR) != NULL);
        float *sc = read_field(bn, CLNORM_SCALE), *bi = read_field(bn, CLNORM_BIAS);
        for (size_t g = 0; g < maps; g++)
            TU_TRUE(sc[g] == 1.0f && bi[g] == 0.0f);
        float h[13] = {0};
        TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, h, maps));
        TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_write(bn, CLNORM_BIAS_GRAD, h, maps));

        /* written parameters are used by the training forward and by dx */
        tu_fill_normal(sc, maps, 1.0, 0.5);
        tu_fill_normal(bi, maps, 0.0, 1.0);
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_SCALE, sc, maps));
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_BIAS, bi, maps));
        tu_shape s = layer_shape(nd, 5, maps, 2, 3, 4);
        size_t n = tu_numel(s.ndim, s.shape);
        float *x = tu_floats(n), *y = tu_floats(n), *dy = tu_floats(n), *dx = tu_floats(n);
        double *yr = tu_doubles(n), *dxr = tu_doubles(n), *ds = tu_doubles(maps), *db = tu_doubles(maps);
        tu_fill_normal(x, n, 1.0, 2.0);
        tu_fill_normal(dy, n, 0.0, 1.0);
        clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL), tdy = tensor_of(&s, dy),
                      tdx = tensor_of(&s, NULL);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        ref_bn_forward_training(mode, s.ndim, s.shape, x, sc, bi, 0.0, cfg.epsilon, NULL, NULL, yr, NULL, NULL, NULL,
                                NULL, NULL);
        read_tensor(&ty, y);
        TU_TRUE(tu_compare("non-affine training y with written scale/bias", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
        float *sm = read_field(bn, CLNORM_SAVE_MEAN), *si = read_field(bn, CLNORM_SAVE_INVSTD);
        TU_OK(clnorm_batchnorm_backward(bn, &tx, &tdy, &tdx, 1.0f, 0.0f));
        ref_bn_backward(mode, s.ndim, s.shape, x, dy, sc, cfg.epsilon, sm, si, dxr, ds, db);
        read_tensor(&tdx, dx);
        TU_TRUE(tu_compare("non-affine dx with the written scale", dx, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
        /* never trained */
        float *sc2 = read_field(bn, CLNORM_SCALE), *bi2 = read_field(bn, CLNORM_BIAS);
        TU_TRUE(memcmp(sc2, sc, maps * 4) == 0 && memcmp(bi2, bi, maps * 4) == 0);
        /* inference uses them too */
        float *rm = read_field(bn, CLNORM_RUNNING_MEAN), *rv = read_field(bn, CLNORM_RUNNING_VAR);
        tu_poison(ty.buffer, 0, n * 4);
        TU_OK(clnorm_batchnorm_forward(bn, 0, &tx, &ty));
        ref_bn_forward_inference(mode, s.ndim, s.shape, x, sc, bi, rm, rv, cfg.epsilon, yr);
        read_tensor(&ty, y);
        TU_TRUE(tu_compare("non-affine inference y", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
        release_tensor(&tx), release_tensor(&ty), release_tensor(&tdy), release_tensor(&tdx);
        free(x), free(y), free(dy), free(dx), free(yr), free(dxr), free(ds), free(db), free(sm), free(si);
        free(sc), free(bi), free(sc2), free(bi2), free(rm), free(rv);
        clnorm_batchnorm_destroy(bn);
    }
}

/* the backward refuses an x whose shape is not the last training forward's, and writes nothing */
static void test_backward_shape(void **state) {
    (void)state;
    for (int nd = 0; nd <= 3; nd++) {
        const size_t maps = nd == 0 ? 7 : 3;
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, nd, maps);
        tu_case("backward shape nd=%d", nd);
        cfg.seed = tu_case_seed();
        clnorm_batchnorm *bn = make_layer(&cfg);
        tu_shape s = layer_shape(nd, 4, maps, 2, 3, 5), s2 = layer_shape(nd, 6, maps, 2, 3, 5);
        if (nd > 0)
            s2 = layer_shape(nd, 4, maps, 2, 3, 6); /* same batch, another spatial extent (nd 0: another batch) */
        size_t n = tu_numel(s.ndim, s.shape), n2 = tu_numel(s2.ndim, s2.shape);
        float *x = tu_floats(n), *x2 = tu_floats(n2), *dy2 = tu_floats(n2);
        tu_fill_normal(x, n, 0.0, 1.0);
        tu_fill_normal(x2, n2, 0.0, 1.0);
        tu_fill_normal(dy2, n2, 0.0, 1.0);
        clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL), tx2 = tensor_of(&s2, x2),
                      tdy2 = tensor_of(&s2, dy2), tdx2 = tensor_of(&s2, NULL);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        /* accumulators hold something recognisable */
        float *acc = tu_floats(maps);
        tu_fill_normal(acc, maps, 3.0, 1.0);
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_SCALE_GRAD, acc, maps));
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_BIAS_GRAD, acc, maps));
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward(bn, &tx2, &tdy2, &tdx2, 1.0f, 0.5f));
        char a[64], b[64];
        snprintf(a, sizeof a, "%s", tu_shape_str(s.ndim, s.shape));
        snprintf(b, sizeof b, "%s", tu_shape_str(s2.ndim, s2.shape));
        const char *msg = clnorm_last_error();
        if (!contains(msg, a) || !contains(msg, b) || !contains(msg, "training forward"))
            tu_fail_at(__FILE__, __LINE__, "x %s after training on %s: message \"%s\" does not name both shapes", b, a,
                       msg);
        tu_finish();
        TU_TRUE(tu_poison_intact(tdx2.buffer, 0, n2 * 4, "dx after a refused backward"));
        TU_TRUE(tu_bits_equal(clnorm_batchnorm_buffer(bn, CLNORM_SCALE_GRAD), 0, acc, maps * 4,
                              "scale grad after a refused backward"));
        TU_TRUE(tu_bits_equal(clnorm_batchnorm_buffer(bn, CLNORM_BIAS_GRAD), 0, acc, maps * 4,
                              "bias grad after a refused backward"));
        /* a training forward on the new shape makes it the one the backward accepts */
        clnorm_tensor ty2 = tensor_of(&s2, NULL);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx2, &ty2));
        TU_OK(clnorm_batchnorm_backward(bn, &tx2, &tdy2, &tdx2, 1.0f, 0.0f));
        float *sm = read_field(bn, CLNORM_SAVE_MEAN), *si = read_field(bn, CLNORM_SAVE_INVSTD),
              *sc = read_field(bn, CLNORM_SCALE), *dx = tu_floats(n2);
        double *dxr = tu_doubles(n2), *ds = tu_doubles(maps), *db = tu_doubles(maps);
        ref_bn_backward(layer_mode(nd), s2.ndim, s2.shape, x2, dy2, sc, cfg.epsilon, sm, si, dxr, ds, db);
        read_tensor(&tdx2, dx);
        TU_TRUE(tu_compare("dx on the new shape", dx, dxr, n2, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward(bn, &tx, &ty, NULL, 1.0f, 0.0f));
        release_tensor(&tx), release_tensor(&ty), release_tensor(&tx2), release_tensor(&tdy2), release_tensor(&tdx2);
        release_tensor(&ty2);
        free(x), free(x2), free(dy2), free(acc), free(sm), free(si), free(sc), free(dx), free(dxr), free(ds), free(db);
        clnorm_batchnorm_destroy(bn);
    }
}

/* The statistics a backward uses come from the last training forward of any kind: after
 * clnorm_batchnorm_forward_from_stats, the plain and the split-phase backward take that forward's x and refuse
 * another shape (writing nothing); saved statistics written by the host belong to no batch, so any x may use them. */
static void test_backward_shape_after_split_and_write(void **state) {
    (void)state;
    for (int nd = 0; nd <= 3; nd += 2) {
        const size_t maps = nd == 0 ? 6 : 3;
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, nd, maps);
        tu_case("backward shape after forward_from_stats / written statistics nd=%d", nd);
        cfg.seed = tu_case_seed();
        clnorm_batchnorm *bn = make_layer(&cfg);
        tu_shape s = layer_shape(nd, 4, maps, 1, 3, 5), s2 = layer_shape(nd, 5, maps, 1, 3, 5);
        size_t n = tu_numel(s.ndim, s.shape), n2 = tu_numel(s2.ndim, s2.shape);
        float *x = tu_floats(n), *dy = tu_floats(n), *x2 = tu_floats(n2), *dy2 = tu_floats(n2);
        tu_fill_normal(x, n, 1.0, 2.0);
        tu_fill_normal(dy, n, 0.0, 1.0);
        tu_fill_normal(x2, n2, -1.0, 0.5);
        tu_fill_normal(dy2, n2, 0.0, 1.0);
        clnorm_tensor tx = tensor_of(&s, x), tdy = tensor_of(&s, dy), tdx = tensor_of(&s, NULL),
                      tx2 = tensor_of(&s2, x2), ty2 = tensor_of(&s2, NULL), tdy2 = tensor_of(&s2, dy2),
                      tdx2 = tensor_of(&s2, NULL);
        cl_mem stats = tu_buffer(maps * 3 * 4), sums = tu_buffer(maps * 2 * 4);
        /* a plain training forward on s, then the split-phase one on s2: s2 is the batch of the saved statistics */
        clnorm_tensor ty = tensor_of(&s, NULL);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        TU_OK(clnorm_batchnorm_stats(bn, &tx2, stats));
        TU_OK(clnorm_batchnorm_forward_from_stats(bn, &tx2, &ty2, stats));
        TU_TRUE(clnorm_batchnorm_batches(bn) == 2);
        float *sm = read_field(bn, CLNORM_SAVE_MEAN), *si = read_field(bn, CLNORM_SAVE_INVSTD),
              *sc = read_field(bn, CLNORM_SCALE), *dx2 = tu_floats(n2), *dx = tu_floats(n), *got = tu_floats(maps * 2);
        double *dxr2 = tu_doubles(n2), *dxr = tu_doubles(n), *ds = tu_doubles(maps), *db = tu_doubles(maps);
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward(bn, &tx, &tdy, &tdx, 1.0f, 0.0f));
        TU_TRUE(tu_poison_intact(tdx.buffer, 0, n * 4, "dx of a refused backward after forward_from_stats"));
        tu_poison(sums, 0, maps * 2 * 4);
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward_reduce(bn, &tx, &tdy, sums));
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward_from_sums(bn, &tx, &tdy, &tdx, sums, 8.0, 1.0f, 0.0f));
        TU_TRUE(tu_poison_intact(sums, 0, maps * 2 * 4, "sums of a refused backward_reduce"));
        TU_TRUE(tu_poison_intact(tdx.buffer, 0, n * 4, "dx of a refused backward_from_sums"));
        /* the batch of forward_from_stats: the plain backward and the split sums against the reference */
        ref_bn_backward(layer_mode(nd), s2.ndim, s2.shape, x2, dy2, sc, cfg.epsilon, sm, si, dxr2, ds, db);
        TU_OK(clnorm_batchnorm_backward(bn, &tx2, &tdy2, &tdx2, 1.0f, 0.0f));
        read_tensor(&tdx2, dx2);
        TU_TRUE(tu_compare("dx after forward_from_stats", dx2, dxr2, n2, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_OK(clnorm_batchnorm_backward_reduce(bn, &tx2, &tdy2, sums));
        tu_read(sums, 0, got, maps * 2 * 4);
        double *want = tu_doubles(maps * 2);
        for (size_t j = 0; j < maps; ++j)
            want[2 * j] = db[j], want[2 * j + 1] = ds[j];
        TU_TRUE(
            tu_compare("backward_reduce sums after forward_from_stats", got, want, maps * 2, TU_BWD_ATOL, TU_BWD_RTOL));
        /* saved statistics written by the host: any batch of the layer's maps may use them */
        float *wm = tu_floats(maps), *wi = tu_floats(maps);
        tu_fill_normal(wm, maps, 0.5, 1.0);
        tu_fill_uniform(wi, maps, 0.3, 2.0);
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_SAVE_MEAN, wm, maps));
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_SAVE_INVSTD, wi, maps));
        tu_poison(tdx.buffer, 0, n * 4);
        TU_OK(clnorm_batchnorm_backward(bn, &tx, &tdy, &tdx, 1.0f, 0.0f));
        ref_bn_backward(layer_mode(nd), s.ndim, s.shape, x, dy, sc, cfg.epsilon, wm, wi, dxr, ds, db);
        read_tensor(&tdx, dx);
        TU_TRUE(tu_compare("dx with written saved statistics", dx, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
        /* and the next training forward binds them to its batch again */
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_backward_reduce(bn, &tx2, &tdy2, sums));
        release_tensor(&tx), release_tensor(&ty), release_tensor(&tdy), release_tensor(&tdx);
        release_tensor(&tx2), release_tensor(&ty2), release_tensor(&tdy2), release_tensor(&tdx2);
        tu_release(&stats), tu_release(&sums);
        free(x), free(dy), free(x2), free(dy2), free(sm), free(si), free(sc), free(dx2), free(dx), free(got);
        free(dxr2), free(dxr), free(ds), free(db), free(want), free(wm), free(wi);
        clnorm_batchnorm_destroy(bn);
    }
}

/* set_batches: a restored layer continues its factor schedule */
static void test_set_batches(void **state) {
    (void)state;
    const int nd = 2;
    const size_t maps = 5;
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_set_batches(NULL, 3));
    const uint64_t starts[] = {0, 3, 9, 40};
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, nd, maps);
        cfg.min_factor = 0.05f;
        tu_case("set_batches n=%llu", (unsigned long long)starts[k]);
        cfg.seed = tu_case_seed();
        clnorm_batchnorm *bn = make_layer(&cfg);
        float *rm0 = tu_floats(maps), *rv0 = tu_floats(maps);
        tu_fill_normal(rm0, maps, 0.0, 1.0);
        tu_fill_uniform(rv0, maps, 0.5, 2.0);
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_MEAN, rm0, maps));
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_VAR, rv0, maps));
        TU_OK(clnorm_batchnorm_set_batches(bn, starts[k]));
        TU_TRUE(clnorm_batchnorm_batches(bn) == starts[k]);
        float *rm1 = read_field(bn, CLNORM_RUNNING_MEAN); /* kept */
        TU_TRUE(memcmp(rm1, rm0, maps * 4) == 0);
        tu_shape s = layer_shape(nd, 3, maps, 1, 4, 5);
        size_t n = tu_numel(s.ndim, s.shape), M = ref_group_size(CLNORM_BN_SPATIAL, s.ndim, s.shape);
        float *x = tu_floats(n);
        tu_fill_normal(x, n, 2.0, 3.0);
        clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        TU_TRUE(clnorm_batchnorm_batches(bn) == starts[k] + 1);
        double f = fmax(1.0 / (double)(starts[k] + 1), 0.05), mean[5], var[5], rmr[5], rvr[5];
        ref_bn_stats(CLNORM_BN_SPATIAL, s.ndim, s.shape, x, mean, var);
        for (size_t g = 0; g < maps; g++) {
            rmr[g] = (1.0 - f) * rm0[g] + f * mean[g];
            rvr[g] = (1.0 - f) * rv0[g] + f * var[g] * (double)M / (double)(M - 1);
        }
        float *got = read_field(bn, CLNORM_RUNNING_MEAN);
        TU_TRUE(tu_compare("running mean after set_batches", got, rmr, maps, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        got = read_field(bn, CLNORM_RUNNING_VAR);
        TU_TRUE(tu_compare("running var after set_batches", got, rvr, maps, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        release_tensor(&tx), release_tensor(&ty);
        free(x), free(rm0), free(rv0), free(rm1);
        clnorm_batchnorm_destroy(bn);
    }
}

/* ---- inplace ------------------------------------------------------------------------------ */
static void test_inplace(void **state) {
    (void)state;
    for (int nd = 0; nd <= 3; nd++) {
        const size_t maps = nd == 0 ? 21 : 4;
        const clnorm_bn_mode mode = layer_mode(nd);
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, nd, maps);
        tu_case("inplace nd=%d", nd);
        cfg.inplace = 1;
        cfg.seed = tu_case_seed();
        clnorm_batchnorm *bn = make_layer(&cfg);
        tu_shape s = layer_shape(nd, 5, maps, 3, 4, 6);
        size_t n = tu_numel(s.ndim, s.shape);
        float *x = tu_floats(n), *y = tu_floats(n);
        double *yr = tu_doubles(n);
        tu_fill_normal(x, n, 0.5, 2.0);
        clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL);

        /* training over itself is refused, and nothing changes */
        float *rm0 = read_field(bn, CLNORM_RUNNING_MEAN);
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 1, &tx, &tx));
        TU_TRUE(clnorm_batchnorm_batches(bn) == 0);
        TU_TRUE(tu_bits_equal(tx.buffer, 0, x, n * 4, "x after refused inplace training"));
        TU_TRUE(tu_bits_equal(clnorm_batchnorm_buffer(bn, CLNORM_RUNNING_MEAN), 0, rm0, maps * 4,
                              "running mean after refused inplace training"));
        free(rm0);

        /* a normal training step, then inference over x */
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        float *scale = read_field(bn, CLNORM_SCALE), *bias = read_field(bn, CLNORM_BIAS),
              *rm = read_field(bn, CLNORM_RUNNING_MEAN), *rv = read_field(bn, CLNORM_RUNNING_VAR);
        ref_bn_forward_inference(mode, s.ndim, s.shape, x, scale, bias, rm, rv, cfg.epsilon, yr);
        TU_OK(clnorm_batchnorm_forward(bn, 0, &tx, &tx));
        read_tensor(&tx, y);
        TU_TRUE(tu_compare("inplace inference y", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
        TU_TRUE(clnorm_batchnorm_batches(bn) == 1);
        release_tensor(&tx), release_tensor(&ty);
        free(x), free(y), free(yr), free(scale), free(bias), free(rm), free(rv);
        clnorm_batchnorm_destroy(bn);
    }

    /* a layer that is not inplace refuses y == x in inference (argument) and in training (state) */
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    tu_case("not inplace");
    clnorm_batchnorm *bn = make_layer(&cfg);
    tu_shape s = layer_shape(2, 2, 3, 1, 5, 5);
    size_t n = tu_numel(s.ndim, s.shape);
    float *x = tu_floats(n);
    tu_fill_normal(x, n, 0.0, 1.0);
    clnorm_tensor tx = tensor_of(&s, x);
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_forward(bn, 0, &tx, &tx));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 1, &tx, &tx));
    TU_TRUE(clnorm_batchnorm_batches(bn) == 0);
    tu_finish();
    TU_TRUE(tu_bits_equal(tx.buffer, 0, x, n * 4, "x after refused calls"));
    release_tensor(&tx);
    free(x);
    clnorm_batchnorm_destroy(bn);
}

/* ---- empty layers ------------------------------------------------------------------------- */
static void test_empty(void **state) {
    (void)state;
    for (int affine = 0; affine < 2; affine++) {
        const int nd = affine ? 2 : 0;
        const size_t maps = affine ? 3 : 17;
        const clnorm_bn_mode mode = layer_mode(nd);
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, nd, maps);
        cfg.empty = 1;
        cfg.affine = affine;
        tu_case("empty affine=%d", affine);
        clnorm_batchnorm *bn = make_layer(&cfg);
        TU_TRUE(clnorm_batchnorm_param_count(bn) == maps);
        tu_shape s = layer_shape(nd, 4, maps, 1, 6, 7);
        size_t n = tu_numel(s.ndim, s.shape);
        float *x = tu_floats(n), *y = tu_floats(n), *dy = tu_floats(n);
        float *scale = tu_floats(maps), *bias = tu_floats(maps), *rm = tu_floats(maps), *rv = tu_floats(maps);
        double *yr = tu_doubles(n), *rmr = tu_doubles(maps), *rvr = tu_doubles(maps);
        tu_fill_normal(x, n, 1.0, 1.0);
        tu_fill_normal(dy, n, 0.0, 1.0);
        tu_fill_normal(scale, maps, 1.0, 0.5);
        tu_fill_normal(bias, maps, 0.0, 1.0);
        tu_fill_normal(rm, maps, 0.0, 1.0);
        tu_fill_uniform(rv, maps, 0.5, 2.0);
        clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL), tdy = tensor_of(&s, dy);

        float tmp[17];
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 0, &tx, &ty));
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, tmp, maps));
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_backward(bn, &tx, &tdy, NULL, 1.0f, 0.0f));
        TU_TRUE(clnorm_batchnorm_batches(bn) == 0);
        /* a non-affine layer has scale and bias too, and they must be written as well */
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_SCALE, scale, maps));
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 0, &tx, &ty)); /* bias missing */
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_BIAS, bias, maps));
        /* running statistics still missing */
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 0, &tx, &ty));
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_MEAN, rm, maps));
        /* running var still missing */
        TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_forward(bn, 0, &tx, &ty));
        TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_VAR, rv, maps));
        TU_TRUE(clnorm_batchnorm_batches(bn) == 0);

        /* now it works: inference with the written statistics */
        TU_OK(clnorm_batchnorm_forward(bn, 0, &tx, &ty));
        read_tensor(&ty, y);
        ref_bn_forward_inference(mode, s.ndim, s.shape, x, scale, bias, rm, rv, cfg.epsilon, yr);
        TU_TRUE(tu_compare("inference y", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
        float *got = read_field(bn, CLNORM_SCALE);
        TU_TRUE(memcmp(got, scale, maps * 4) == 0);
        free(got);

        /* training: the first step makes the running statistics the batch statistics */
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        TU_TRUE(clnorm_batchnorm_batches(bn) == 1);
        ref_bn_forward_training(mode, s.ndim, s.shape, x, scale, bias, 1.0, cfg.epsilon, rm, rv, yr, NULL, NULL, NULL,
                                rmr, rvr);
        read_tensor(&ty, y);
        TU_TRUE(tu_compare("training y", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
        got = read_field(bn, CLNORM_RUNNING_MEAN);
        TU_TRUE(tu_compare("running mean", got, rmr, maps, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        got = read_field(bn, CLNORM_RUNNING_VAR);
        TU_TRUE(tu_compare("running var", got, rvr, maps, TU_STAT_ATOL, TU_STAT_RTOL));
        free(got);
        TU_OK(clnorm_batchnorm_backward(bn, &tx, &tdy, NULL, 1.0f, 0.0f));

        release_tensor(&tx), release_tensor(&ty), release_tensor(&tdy);
        free(x), free(y), free(dy), free(scale), free(bias), free(rm), free(rv), free(yr), free(rmr), free(rvr);
        clnorm_batchnorm_destroy(bn);
    }
}

/* ---- reset ---------------------------------------------------------------------------------- */
static void test_reset(void **state) {
    (void)state;
    const int nd = 1;
    const size_t maps = 6;
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, nd, maps);
    tu_case("reset");
    cfg.seed = tu_case_seed();
    clnorm_batchnorm *bn = make_layer(&cfg);
    tu_shape s = layer_shape(nd, 4, maps, 1, 1, 50);
    size_t n = tu_numel(s.ndim, s.shape), M = ref_group_size(CLNORM_BN_SPATIAL, s.ndim, s.shape);
    float *x = tu_floats(n), *dy = tu_floats(n), tmp[6];
    double mean[6], var[6], rvr[6];
    clnorm_tensor tx = tensor_of(&s, NULL), ty = tensor_of(&s, NULL), tdy = tensor_of(&s, NULL);
    for (int step = 0; step < 3; step++) {
        tu_fill_normal(x, n, 5.0, 3.0);
        tu_write(tx.buffer, 0, x, n * 4);
        TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
    }
    TU_TRUE(clnorm_batchnorm_batches(bn) == 3);
    clnorm_batchnorm_reset(bn);
    TU_TRUE(clnorm_batchnorm_batches(bn) == 0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    tu_write(tdy.buffer, 0, dy, n * 4);
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_backward(bn, &tx, &tdy, NULL, 1.0f, 0.0f));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_read(bn, CLNORM_SAVE_MEAN, tmp, maps));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_read(bn, CLNORM_SAVE_INVSTD, tmp, maps));

    /* next training step uses factor init_factor / 1 = 1: running stats = this batch's stats */
    tu_fill_normal(x, n, -1.0, 0.5);
    tu_write(tx.buffer, 0, x, n * 4);
    TU_OK(clnorm_batchnorm_forward(bn, 1, &tx, &ty));
    TU_TRUE(clnorm_batchnorm_batches(bn) == 1);
    ref_bn_stats(CLNORM_BN_SPATIAL, s.ndim, s.shape, x, mean, var);
    for (size_t g = 0; g < maps; g++)
        rvr[g] = var[g] * (double)M / (double)(M - 1);
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, tmp, maps));
    TU_TRUE(tu_compare("running mean after reset", tmp, mean, maps, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, tmp, maps));
    TU_TRUE(tu_compare("running var after reset", tmp, rvr, maps, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_OK(clnorm_batchnorm_backward(bn, &tx, &tdy, NULL, 1.0f, 0.0f));
    release_tensor(&tx), release_tensor(&ty), release_tensor(&tdy);
    free(x), free(dy);
    clnorm_batchnorm_destroy(bn);
}

/* ---- before the first training forward ------------------------------------------------------ */
static void test_before_training(void **state) {
    (void)state;
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 3, 2);
    tu_case("before training");
    clnorm_batchnorm *bn = make_layer(&cfg);
    tu_shape s = layer_shape(3, 2, 2, 3, 4, 5);
    size_t n = tu_numel(s.ndim, s.shape);
    float *x = tu_floats(n), tmp[2];
    tu_fill_normal(x, n, 0.0, 1.0);
    clnorm_tensor tx = tensor_of(&s, x), tdy = tensor_of(&s, x), tdx = tensor_of(&s, NULL);
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_read(bn, CLNORM_SAVE_MEAN, tmp, 2));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_read(bn, CLNORM_SAVE_INVSTD, tmp, 2));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_backward(bn, &tx, &tdy, &tdx, 1.0f, 0.0f));
    /* an inference forward does not make backward possible */
    TU_OK(clnorm_batchnorm_forward(bn, 0, &tx, &tdx));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_backward(bn, &tx, &tdy, &tdx, 1.0f, 0.0f));
    release_tensor(&tx), release_tensor(&tdy), release_tensor(&tdx);
    free(x);
    clnorm_batchnorm_destroy(bn);
}

/* ---- name, param_count, read/write ------------------------------------------------------------ */
static void test_name_and_count(void **state) {
    (void)state;
    tu_case("name");
    char name[32];
    strcpy(name, "bn3d.layer1");
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 3, 7);
    cfg.name = name;
    clnorm_batchnorm *bn = make_layer(&cfg);
    memset(name, 'x', sizeof name - 1); /* the layer holds a copy */
    TU_TRUE(clnorm_batchnorm_name(bn) != NULL);
    TU_TRUE(strcmp(clnorm_batchnorm_name(bn), "bn3d.layer1") == 0);
    TU_TRUE(clnorm_batchnorm_name(bn) != name);
    TU_TRUE(clnorm_batchnorm_param_count(bn) == 7);
    clnorm_batchnorm_destroy(bn);

    clnorm_batchnorm_config_init(&cfg, 0, 123);
    bn = make_layer(&cfg);
    TU_TRUE(clnorm_batchnorm_name(bn) == NULL);
    TU_TRUE(clnorm_batchnorm_param_count(bn) == 123);
    clnorm_batchnorm_destroy(bn);

    /* defaults of config_init */
    clnorm_batchnorm_config_init(&cfg, 2, 9);
    TU_TRUE(cfg.nd == 2 && cfg.maps == 9);
    TU_TRUE(fabsf(cfg.epsilon - 1e-5f) <= 1e-12f);
    TU_TRUE(cfg.init_factor == 1.0f && fabsf(cfg.min_factor - 0.1f) <= 1e-9f);
    TU_TRUE(fabsf(cfg.sscale - 0.01f) <= 1e-9f);
    TU_TRUE(cfg.affine == 1 && cfg.name == NULL && cfg.empty == 0 && cfg.inplace == 0 && cfg.seed == 0);
    TU_TRUE(cfg.dtype == CLNORM_F32 && cfg.layout == CLNORM_NCHW);
}

static void test_read_write(void **state) {
    (void)state;
    const size_t maps = 10;
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, maps);
    tu_case("read/write");
    clnorm_batchnorm *bn = make_layer(&cfg);
    float v[12], back[12];
    static const clnorm_field fields[] = {CLNORM_SCALE,       CLNORM_BIAS,       CLNORM_RUNNING_MEAN,
                                          CLNORM_RUNNING_VAR, CLNORM_SCALE_GRAD, CLNORM_BIAS_GRAD};
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++) {
        tu_fill_normal(v, 12, 0.5, 2.0);
        if (fields[k] == CLNORM_RUNNING_VAR) /* a variance: >= 0 (negative and NaN are refused, test_contract) */
            for (int i = 0; i < 12; i++)
                v[i] = fabsf(v[i]);
        TU_OK(clnorm_batchnorm_write(bn, fields[k], v, maps));
        TU_OK(clnorm_batchnorm_read(bn, fields[k], back, maps));
        TU_TRUE(memcmp(v, back, maps * 4) == 0);
        TU_TRUE(clnorm_batchnorm_buffer(bn, fields[k]) != NULL);
        TU_TRUE(tu_bits_equal(clnorm_batchnorm_buffer(bn, fields[k]), 0, v, maps * 4, "buffer() content"));
        /* wrong counts: SHAPE, nothing written, nothing read */
        float other[12];
        tu_fill_normal(other, 12, 0.0, 1.0);
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_write(bn, fields[k], other, maps - 1));
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_write(bn, fields[k], other, maps + 1));
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_write(bn, fields[k], other, 0));
        float sentinel[12];
        for (int i = 0; i < 12; i++)
            sentinel[i] = -777.0f;
        memcpy(back, sentinel, sizeof back);
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_read(bn, fields[k], back, maps - 1));
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_read(bn, fields[k], back, maps + 1));
        TU_TRUE(memcmp(back, sentinel, sizeof back) == 0);
        TU_OK(clnorm_batchnorm_read(bn, fields[k], back, maps));
        TU_TRUE(memcmp(v, back, maps * 4) == 0);
    }
    /* written parameters are used: inference with written statistics */
    tu_shape s = layer_shape(2, 3, maps, 1, 4, 4);
    size_t n = tu_numel(s.ndim, s.shape);
    float *x = tu_floats(n), *y = tu_floats(n);
    float sc[10], bi[10], rm[10], rv[10];
    double *yr = tu_doubles(n);
    tu_fill_normal(x, n, 0.0, 1.0);
    tu_fill_normal(sc, maps, 1.0, 1.0);
    tu_fill_normal(bi, maps, 0.0, 1.0);
    tu_fill_normal(rm, maps, 0.0, 1.0);
    tu_fill_uniform(rv, maps, 0.1, 4.0);
    TU_OK(clnorm_batchnorm_write(bn, CLNORM_SCALE, sc, maps));
    TU_OK(clnorm_batchnorm_write(bn, CLNORM_BIAS, bi, maps));
    TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_MEAN, rm, maps));
    TU_OK(clnorm_batchnorm_write(bn, CLNORM_RUNNING_VAR, rv, maps));
    clnorm_tensor tx = tensor_of(&s, x), ty = tensor_of(&s, NULL);
    TU_OK(clnorm_batchnorm_forward(bn, 0, &tx, &ty));
    read_tensor(&ty, y);
    ref_bn_forward_inference(CLNORM_BN_SPATIAL, s.ndim, s.shape, x, sc, bi, rm, rv, cfg.epsilon, yr);
    TU_TRUE(tu_compare("y with written parameters", y, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    release_tensor(&tx), release_tensor(&ty);
    free(x), free(y), free(yr);
    clnorm_batchnorm_destroy(bn);
}

/* ---- initial parameters ------------------------------------------------------------------------ */
static void check_scale_distribution(const float *s, size_t n, double sscale) {
    double sum = 0, sq = 0;
    size_t within = 0;
    for (size_t i = 0; i < n; i++) {
        TU_TRUE(isfinite(s[i]));
        sum += s[i];
    }
    double mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) {
        sq += (s[i] - mean) * (s[i] - mean);
        if (fabs(s[i] - 1.0) <= sscale)
            within++;
    }
    double sd = sqrt(sq / (double)(n - 1)), frac = (double)within / (double)n;
    /* ~6 standard errors: mean se = sscale/sqrt(n), sd se ~ sscale/sqrt(2n), fraction se ~ 0.47/sqrt(n) */
    if (fabs(mean - 1.0) > 6.0 * sscale / sqrt((double)n) || fabs(sd - sscale) > 6.0 * sscale / sqrt(2.0 * n) ||
        fabs(frac - 0.6827) > 6.0 * 0.466 / sqrt((double)n))
        tu_fail_at(__FILE__, __LINE__, "scale ~ Normal(1, %g) implausible: mean %.6f, sd %.6f, P(|s-1|<=sd) %.4f",
                   sscale, mean, sd, frac);
}

static void test_initial_params(void **state) {
    (void)state;
    const size_t maps = 10000;
    static const double sscales[] = {0.01, 0.5};
    for (int k = 0; k < 2; k++) {
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, 2, maps);
        cfg.sscale = (float)sscales[k];
        tu_case("initial params sscale=%g", sscales[k]);
        cfg.seed = tu_case_seed() | 1;
        clnorm_batchnorm *a = make_layer(&cfg), *b = make_layer(&cfg);
        float *sa = read_field(a, CLNORM_SCALE), *sb = read_field(b, CLNORM_SCALE);
        check_scale_distribution(sa, maps, cfg.sscale);
        TU_TRUE(memcmp(sa, sb, maps * 4) == 0); /* same seed, same scale */
        float *f = read_field(a, CLNORM_BIAS);
        for (size_t i = 0; i < maps; i++)
            TU_TRUE(f[i] == 0.0f);
        free(f);
        f = read_field(a, CLNORM_RUNNING_MEAN);
        for (size_t i = 0; i < maps; i++)
            TU_TRUE(f[i] == 0.0f);
        free(f);
        f = read_field(a, CLNORM_RUNNING_VAR);
        for (size_t i = 0; i < maps; i++)
            TU_TRUE(f[i] == 1.0f);
        free(f);
        clnorm_batchnorm_destroy(b);
        cfg.seed += 1; /* different seed, different scale */
        b = make_layer(&cfg);
        float *sc = read_field(b, CLNORM_SCALE);
        size_t same = 0;
        for (size_t i = 0; i < maps; i++)
            same += sa[i] == sc[i];
        if (same > maps / 100)
            tu_fail_at(__FILE__, __LINE__, "seeds differ but %zu of %zu scales equal", same, maps);
        check_scale_distribution(sc, maps, cfg.sscale);
        free(sa), free(sb), free(sc);
        clnorm_batchnorm_destroy(a);
        clnorm_batchnorm_destroy(b);
    }
    /* seed 0 is a fixed default: deterministic too; nd 0 initialises the same way */
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 0, maps);
    tu_case("initial params seed 0");
    clnorm_batchnorm *a = make_layer(&cfg), *b = make_layer(&cfg);
    float *sa = read_field(a, CLNORM_SCALE), *sb = read_field(b, CLNORM_SCALE);
    TU_TRUE(memcmp(sa, sb, maps * 4) == 0);
    check_scale_distribution(sa, maps, 0.01);
    free(sa), free(sb);
    clnorm_batchnorm_destroy(a);
    clnorm_batchnorm_destroy(b);
    /* sscale 0: exactly 1 */
    clnorm_batchnorm_config_init(&cfg, 1, 100);
    cfg.sscale = 0.0f;
    a = make_layer(&cfg);
    sa = read_field(a, CLNORM_SCALE);
    for (size_t i = 0; i < 100; i++)
        TU_TRUE(sa[i] == 1.0f);
    free(sa);
    clnorm_batchnorm_destroy(a);
}

/* ---- shape errors with PuzzleLib-like messages ---------------------------------------------------- */
static int contains(const char *hay, const char *needle) {
    return hay && strstr(hay, needle) != NULL;
}

static int contains_nocase(const char *hay, const char *needle) {
    if (!hay)
        return 0;
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

static void test_shape_messages(void **state) {
    (void)state;
    tu_case("shape messages");
    for (int nd = 0; nd <= 3; nd++) {
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, nd, 3);
        clnorm_batchnorm *bn = make_layer(&cfg);
        /* wrong dimensionality: one more and one fewer spatial dimension */
        for (int delta = -1; delta <= 1; delta += 2) {
            int ndim = nd + 2 + delta;
            if (ndim < 2 || ndim > 5)
                continue;
            size_t shape[5] = {2, 3, 4, 4, 4};
            cl_mem b = tu_buffer(2 * 3 * 64 * 4), b2 = tu_buffer(2 * 3 * 64 * 4);
            clnorm_tensor t = tu_view(b, 0, ndim, shape), t2 = tu_view(b2, 0, ndim, shape);
            char want[8];
            snprintf(want, sizeof want, "%d", nd + 2);
            TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 1, &t, &t2));
            TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 0, &t, &t2));
            if (!contains(clnorm_last_error(), want))
                tu_fail_at(__FILE__, __LINE__, "nd=%d, x of ndim %d: message \"%s\" does not name %s dims", nd, ndim,
                           clnorm_last_error(), want);
            tu_release(&b);
            tu_release(&b2);
        }
        /* wrong number of maps */
        tu_shape s = layer_shape(nd, 2, 4, 2, 2, 2);
        clnorm_tensor tx = tensor_of(&s, NULL), ty = tensor_of(&s, NULL);
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        if (!contains(clnorm_last_error(), "4") || !contains(clnorm_last_error(), "3") ||
            (!contains_nocase(clnorm_last_error(), "map") && !contains_nocase(clnorm_last_error(), "size")))
            tu_fail_at(__FILE__, __LINE__, "nd=%d, 4 maps for 3: message \"%s\" does not say maps 4 vs 3", nd,
                       clnorm_last_error());
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 0, &tx, &ty));
        release_tensor(&tx), release_tensor(&ty);
        TU_TRUE(clnorm_batchnorm_batches(bn) == 0);
        /* x and y differ */
        s = layer_shape(nd, 2, 3, 2, 2, 2);
        tu_shape s2 = layer_shape(nd, 3, 3, 2, 2, 2);
        tx = tensor_of(&s, NULL);
        ty = tensor_of(&s2, NULL);
        TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward(bn, 1, &tx, &ty));
        release_tensor(&tx), release_tensor(&ty);
        clnorm_batchnorm_destroy(bn);
    }
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_all_nd), cmocka_unit_test(test_schedule_custom_factors),
        cmocka_unit_test(test_backward_grads),  cmocka_unit_test(test_non_affine),
        cmocka_unit_test(test_inplace),         cmocka_unit_test(test_empty),
        cmocka_unit_test(test_reset),           cmocka_unit_test(test_before_training),
        cmocka_unit_test(test_name_and_count),  cmocka_unit_test(test_read_write),
        cmocka_unit_test(test_initial_params),  cmocka_unit_test(test_shape_messages),
        cmocka_unit_test(test_backward_shape),  cmocka_unit_test(test_backward_shape_after_split_and_write),
        cmocka_unit_test(test_set_batches),
    };
    return cmocka_run_group_tests_name("layer", tests, tu_group_setup, tu_group_teardown);
}
