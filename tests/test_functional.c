/*
 * Functional operations clnorm_bn_forward_training / forward_inference / backward against the double
 * reference (ref_bn.c), both modes, ndim 2..5, every nullable argument, byte offsets, awkward sizes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_bn.h"
#include "test_util.h"

#define GUARD 64 /* bytes of NaN poison after every view (and the offset bytes before it) */

/* A device tensor inside a poisoned buffer: [0, off) and [off + n*4, off + n*4 + GUARD) stay NaN. */
typedef struct {
    cl_mem buf;
    size_t off, n;
    clnorm_tensor t;
} dten;

static dten dten_make(const tu_shape *s, size_t off, const float *host) {
    dten d;
    d.off = off;
    d.n = tu_numel(s->ndim, s->shape);
    d.buf = tu_buffer(off + d.n * 4 + GUARD);
    tu_poison(d.buf, 0, off + d.n * 4 + GUARD);
    if (host)
        tu_write(d.buf, off, host, d.n * 4);
    d.t = tu_view(d.buf, off, s->ndim, s->shape);
    return d;
}

static int dten_guards_ok(const dten *d, const char *what) {
    return tu_poison_intact(d->buf, 0, d->off, what) && tu_poison_intact(d->buf, d->off + d->n * 4, GUARD, what);
}

static void dten_read(const dten *d, float *host) {
    tu_read(d->buf, d->off, host, d->n * 4);
}

static cl_mem param_poisoned(size_t g) {
    cl_mem b = tu_buffer(g * 4);
    tu_poison(b, 0, g * 4);
    return b;
}

/* ---- forward training ------------------------------------------------------------------ */
typedef struct {
    clnorm_bn_mode mode;
    tu_shape s;
    int affine, running, save;
    size_t xoff, yoff;
    double factor, eps, mu, sigma;
} train_case;

static void run_train(const train_case *c) {
    tu_case("train %s %s affine=%d running=%d save=%d xoff=%zu yoff=%zu factor=%g eps=%g N(%g,%g)", tu_mode_name(c->mode),
            tu_shape_str(c->s.ndim, c->s.shape), c->affine, c->running, c->save, c->xoff, c->yoff, c->factor, c->eps,
            c->mu, c->sigma);
    size_t n = tu_numel(c->s.ndim, c->s.shape), G = ref_groups(c->mode, c->s.ndim, c->s.shape);
    float *x = tu_floats(n), *scale = tu_floats(G), *bias = tu_floats(G), *rm = tu_floats(G), *rv = tu_floats(G);
    float *got = tu_floats(n);
    tu_fill_normal(x, n, c->mu, c->sigma);
    tu_fill_normal(scale, G, 1.0, 0.5);
    tu_fill_normal(bias, G, 0.0, 1.0);
    tu_fill_normal(rm, G, 0.0, 1.0);
    tu_fill_uniform(rv, G, 0.5, 2.0);

    double *yr = tu_doubles(n), *mr = tu_doubles(G), *ir = tu_doubles(G), *rmr = tu_doubles(G), *rvr = tu_doubles(G);
    ref_bn_forward_training(c->mode, c->s.ndim, c->s.shape, x, c->affine ? scale : NULL, c->affine ? bias : NULL,
                            c->factor, c->eps, rm, rv, yr, mr, NULL, ir, rmr, rvr);

    dten dx_ = dten_make(&c->s, c->xoff, x), dy_ = dten_make(&c->s, c->yoff, NULL);
    cl_mem bs = NULL, bb = NULL, brm = NULL, brv = NULL, bsm = NULL, bsi = NULL;
    if (c->affine) {
        bs = tu_buffer_from(scale, G);
        bb = tu_buffer_from(bias, G);
    }
    if (c->running) {
        brm = tu_buffer_from(rm, G);
        brv = tu_buffer_from(rv, G);
    }
    if (c->save) {
        bsm = param_poisoned(G);
        bsi = param_poisoned(G);
    }
    TU_OK(clnorm_bn_forward_training(tu_ctx, c->mode, &dx_.t, &dy_.t, bs, bb, c->factor, c->eps, brm, brv, bsm, bsi));
    tu_finish();

    dten_read(&dy_, got);
    TU_TRUE(tu_compare("y", got, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_TRUE(dten_guards_ok(&dy_, "y guard"));
    TU_TRUE(tu_bits_equal(dx_.buf, c->xoff, x, n * 4, "x (input) modified"));
    TU_TRUE(dten_guards_ok(&dx_, "x guard"));
    if (c->affine) {
        TU_TRUE(tu_bits_equal(bs, 0, scale, G * 4, "scale (input) modified"));
        TU_TRUE(tu_bits_equal(bb, 0, bias, G * 4, "bias (input) modified"));
    }
    if (c->running) {
        TU_TRUE(tu_compare_param("running_mean", brm, rmr, G, TU_STAT_ATOL, TU_STAT_RTOL));
        TU_TRUE(tu_compare_param("running_var", brv, rvr, G, TU_STAT_ATOL, TU_STAT_RTOL));
    }
    if (c->save) {
        TU_TRUE(tu_compare_param("save_mean", bsm, mr, G, TU_STAT_ATOL, TU_STAT_RTOL));
        TU_TRUE(tu_compare_param("save_invstd", bsi, ir, G, TU_STAT_ATOL, TU_STAT_RTOL));
    }

    tu_release(&dx_.buf);
    tu_release(&dy_.buf);
    tu_release(&bs);
    tu_release(&bb);
    tu_release(&brm);
    tu_release(&brv);
    tu_release(&bsm);
    tu_release(&bsi);
    free(x), free(scale), free(bias), free(rm), free(rv), free(got);
    free(yr), free(mr), free(ir), free(rmr), free(rvr);
}

/* Training shapes: every group has >= 2 values. */
static const tu_shape spatial_train_shapes[] = {
    {2, {8, 5}},
    {2, {2, 9}} /* M = 2 */,
    {2, {3, 1031}} /* maps >= 1000 */,
    {2, {300, 1}},
    {3, {4, 3, 17}} /* S = 17 */,
    {3, {1, 2, 1009}} /* batch 1, S > 1000 */,
    {3, {5, 1, 3}} /* maps 1, S = 3 */,
    {3, {7, 5, 1}} /* S = 1 */,
    {3, {1, 4, 2}} /* M = 2 */,
    {4, {4, 3, 70, 70}} /* largish */,
    {4, {2, 7, 1, 1}},
    {4, {3, 1, 13, 17}},
    {4, {2, 1031, 2, 3}},
    {4, {8, 32, 33, 31}},
    {5, {2, 3, 4, 5, 6}},
    {5, {2, 3, 1, 1, 1}} /* M = 2 */,
    {5, {3, 5, 1, 1, 17}},
    {5, {1, 2, 3, 1, 1}} /* M = 3 */,
    {5, {2, 4, 3, 10, 11}},
};

static const tu_shape peract_train_shapes[] = {
    {2, {16, 100}},
    {2, {2, 1001}} /* M = 2, maps >= 1000 */,
    {2, {1031, 3}},
    {2, {33, 257}},
    {2, {5, 1}},
    {3, {5, 3, 17}},
    {3, {2, 1, 1}} /* one group, M = 2 */,
    {4, {3, 4, 5, 6}},
    {4, {64, 16, 8, 8}},
    {5, {2, 3, 2, 3, 5}},
    {5, {7, 2, 1, 1, 3}},
};

static void train_shapes(clnorm_bn_mode mode, const tu_shape *shapes, size_t count) {
    for (size_t i = 0; i < count; i++) {
        train_case c;
        memset(&c, 0, sizeof c);
        c.mode = mode;
        c.s = shapes[i];
        c.affine = c.running = c.save = 1;
        c.xoff = (i % 3 == 1) ? 4 * 37 : 0;
        c.yoff = (i % 3 == 2) ? 4 * 13 : 0;
        c.factor = (i % 4 == 0) ? 1.0 : 0.1 + 0.8 * (double)(i % 5) / 5.0;
        c.eps = (i % 2) ? 1e-5 : 1e-3;
        c.mu = (i % 3 == 0) ? 3.0 : 0.0;
        c.sigma = (i % 3 == 0) ? 2.0 : 1.0;
        run_train(&c);
    }
}

static void test_train_spatial(void **state) {
    (void)state;
    train_shapes(CLNORM_BN_SPATIAL, spatial_train_shapes, TU_COUNT(spatial_train_shapes));
}

static void test_train_per_activation(void **state) {
    (void)state;
    train_shapes(CLNORM_BN_PER_ACTIVATION, peract_train_shapes, TU_COUNT(peract_train_shapes));
}

/* Every combination of the nullable pairs, and factor 0 / 1 / in between. */
static void test_train_optional_args(void **state) {
    (void)state;
    static const tu_shape shapes[2] = {{4, {3, 5, 7, 9}}, {3, {6, 5, 7}}};
    static const double factors[] = {0.0, 1.0, 0.3};
    for (int m = 0; m < 2; m++)
        for (int mask = 0; mask < 8; mask++) {
            train_case c;
            memset(&c, 0, sizeof c);
            c.mode = m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
            c.s = shapes[m];
            c.affine = mask & 1;
            c.running = (mask >> 1) & 1;
            c.save = (mask >> 2) & 1;
            c.factor = factors[mask % 3];
            c.eps = 1e-5;
            c.sigma = 1.0;
            run_train(&c);
        }
}

/* ---- forward inference --------------------------------------------------------------------- */
typedef struct {
    clnorm_bn_mode mode;
    tu_shape s;
    int affine, inplace;
    size_t xoff, yoff;
    double eps;
} infer_case;

static void run_infer(const infer_case *c) {
    tu_case("inference %s %s affine=%d inplace=%d xoff=%zu yoff=%zu eps=%g", tu_mode_name(c->mode),
            tu_shape_str(c->s.ndim, c->s.shape), c->affine, c->inplace, c->xoff, c->yoff, c->eps);
    size_t n = tu_numel(c->s.ndim, c->s.shape), G = ref_groups(c->mode, c->s.ndim, c->s.shape);
    float *x = tu_floats(n), *scale = tu_floats(G), *bias = tu_floats(G), *mean = tu_floats(G), *var = tu_floats(G);
    float *got = tu_floats(n);
    double *yr = tu_doubles(n);
    tu_fill_normal(x, n, 0.5, 1.5);
    tu_fill_normal(scale, G, 1.0, 0.5);
    tu_fill_normal(bias, G, 0.0, 1.0);
    tu_fill_normal(mean, G, 0.5, 1.0);
    tu_fill_uniform(var, G, 0.2, 3.0);
    ref_bn_forward_inference(c->mode, c->s.ndim, c->s.shape, x, c->affine ? scale : NULL, c->affine ? bias : NULL, mean,
                             var, c->eps, yr);

    dten dxt = dten_make(&c->s, c->xoff, x), dyt;
    if (c->inplace) {
        dyt = dxt;
    } else {
        dyt = dten_make(&c->s, c->yoff, NULL);
    }
    cl_mem bs = c->affine ? tu_buffer_from(scale, G) : NULL, bb = c->affine ? tu_buffer_from(bias, G) : NULL;
    cl_mem bm = tu_buffer_from(mean, G), bv = tu_buffer_from(var, G);
    TU_OK(clnorm_bn_forward_inference(tu_ctx, c->mode, &dxt.t, &dyt.t, bs, bb, bm, bv, c->eps));
    tu_finish();
    dten_read(&dyt, got);
    TU_TRUE(tu_compare("y", got, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_TRUE(dten_guards_ok(&dyt, "y guard"));
    if (!c->inplace) {
        TU_TRUE(tu_bits_equal(dxt.buf, c->xoff, x, n * 4, "x (input) modified"));
        TU_TRUE(dten_guards_ok(&dxt, "x guard"));
        tu_release(&dyt.buf);
    }
    TU_TRUE(tu_bits_equal(bm, 0, mean, G * 4, "mean (input) modified"));
    TU_TRUE(tu_bits_equal(bv, 0, var, G * 4, "var (input) modified"));
    tu_release(&dxt.buf);
    tu_release(&bs);
    tu_release(&bb);
    tu_release(&bm);
    tu_release(&bv);
    free(x), free(scale), free(bias), free(mean), free(var), free(got), free(yr);
}

static const tu_shape spatial_infer_shapes[] = {
    {2, {1, 7}} /* M = 1 */,
    {5, {1, 3, 1, 1, 1}} /* M = 1 */,
    {4, {1, 1, 1, 1}} /* a single value */,
    {2, {9, 1003}},
    {3, {1, 2, 1009}},
    {4, {4, 3, 70, 70}},
    {4, {2, 5, 1, 1}},
    {5, {2, 3, 4, 5, 6}},
    {3, {3, 1, 17}},
};
static const tu_shape peract_infer_shapes[] = {
    {2, {1, 1000}} /* M = 1 */,
    {4, {1, 3, 5, 7}} /* M = 1 */,
    {2, {17, 129}},
    {3, {4, 2, 33}},
    {5, {2, 3, 2, 3, 5}},
    {2, {1, 1}},
};

static void infer_shapes(clnorm_bn_mode mode, const tu_shape *shapes, size_t count) {
    for (size_t i = 0; i < count; i++)
        for (int affine = 0; affine < 2; affine++) {
            infer_case c;
            memset(&c, 0, sizeof c);
            c.mode = mode;
            c.s = shapes[i];
            c.affine = affine;
            c.xoff = (i % 2) ? 4 * 37 : 0;
            c.yoff = (i % 3 == 1) ? 4 * 5 : 0;
            c.eps = affine ? 1e-5 : 1e-2;
            run_infer(&c);
        }
}

static void test_inference_spatial(void **state) {
    (void)state;
    infer_shapes(CLNORM_BN_SPATIAL, spatial_infer_shapes, TU_COUNT(spatial_infer_shapes));
}

static void test_inference_per_activation(void **state) {
    (void)state;
    infer_shapes(CLNORM_BN_PER_ACTIVATION, peract_infer_shapes, TU_COUNT(peract_infer_shapes));
}

/* y == x: same buffer and offset. */
static void test_inference_inplace(void **state) {
    (void)state;
    static const tu_shape shapes[] = {{4, {3, 4, 11, 13}}, {2, {5, 1001}}, {5, {1, 2, 3, 1, 1}}};
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < TU_COUNT(shapes); i++) {
            infer_case c;
            memset(&c, 0, sizeof c);
            c.mode = m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
            c.s = shapes[i];
            c.affine = (int)((i + (size_t)m) % 2);
            c.inplace = 1;
            c.xoff = i == 1 ? 4 * 37 : 0;
            c.eps = 1e-5;
            run_infer(&c);
        }
}

/* ---- backward ------------------------------------------------------------------------------- */
typedef struct {
    clnorm_bn_mode mode;
    tu_shape s;
    int scale, dx, grads, save;
    size_t xoff, dyoff, dxoff;
    double eps;
} bwd_case;

static void run_bwd(const bwd_case *c) {
    tu_case("backward %s %s scale=%d dx=%d grads=%d save=%d xoff=%zu dyoff=%zu dxoff=%zu eps=%g", tu_mode_name(c->mode),
            tu_shape_str(c->s.ndim, c->s.shape), c->scale, c->dx, c->grads, c->save, c->xoff, c->dyoff, c->dxoff,
            c->eps);
    size_t n = tu_numel(c->s.ndim, c->s.shape), G = ref_groups(c->mode, c->s.ndim, c->s.shape);
    float *x = tu_floats(n), *dy = tu_floats(n), *scale = tu_floats(G), *sm = tu_floats(G), *si = tu_floats(G);
    float *got = tu_floats(n);
    double *mean = tu_doubles(G), *var = tu_doubles(G);
    double *dxr = tu_doubles(n), *dsr = tu_doubles(G), *dbr = tu_doubles(G);
    tu_fill_normal(x, n, 1.0, 2.0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    tu_fill_normal(scale, G, 1.0, 0.5);
    ref_bn_stats(c->mode, c->s.ndim, c->s.shape, x, mean, var);
    for (size_t g = 0; g < G; g++) {
        sm[g] = (float)mean[g];
        si[g] = (float)(1.0 / sqrt(var[g] + c->eps));
    }
    ref_bn_backward(c->mode, c->s.ndim, c->s.shape, x, dy, c->scale ? scale : NULL, c->eps, c->save ? sm : NULL,
                    c->save ? si : NULL, dxr, dsr, dbr);

    dten xt = dten_make(&c->s, c->xoff, x), dyt = dten_make(&c->s, c->dyoff, dy), dxt;
    memset(&dxt, 0, sizeof dxt);
    if (c->dx)
        dxt = dten_make(&c->s, c->dxoff, NULL);
    cl_mem bs = c->scale ? tu_buffer_from(scale, G) : NULL;
    cl_mem bds = c->grads ? param_poisoned(G) : NULL, bdb = c->grads ? param_poisoned(G) : NULL;
    cl_mem bsm = c->save ? tu_buffer_from(sm, G) : NULL, bsi = c->save ? tu_buffer_from(si, G) : NULL;

    TU_OK(clnorm_bn_backward(tu_ctx, c->mode, &xt.t, &dyt.t, c->dx ? &dxt.t : NULL, bs, bds, bdb, c->eps, bsm, bsi));
    tu_finish();

    if (c->dx) {
        dten_read(&dxt, got);
        TU_TRUE(tu_compare("dx", got, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_TRUE(dten_guards_ok(&dxt, "dx guard"));
        tu_release(&dxt.buf);
    }
    if (c->grads) {
        TU_TRUE(tu_compare_param("dscale", bds, dsr, G, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_TRUE(tu_compare_param("dbias", bdb, dbr, G, TU_BWD_ATOL, TU_BWD_RTOL));
    }
    TU_TRUE(tu_bits_equal(xt.buf, c->xoff, x, n * 4, "x (input) modified"));
    TU_TRUE(tu_bits_equal(dyt.buf, c->dyoff, dy, n * 4, "dy (input) modified"));
    TU_TRUE(dten_guards_ok(&xt, "x guard"));
    TU_TRUE(dten_guards_ok(&dyt, "dy guard"));
    if (c->save) {
        TU_TRUE(tu_bits_equal(bsm, 0, sm, G * 4, "save_mean (input) modified"));
        TU_TRUE(tu_bits_equal(bsi, 0, si, G * 4, "save_invstd (input) modified"));
    }

    tu_release(&xt.buf);
    tu_release(&dyt.buf);
    tu_release(&bs);
    tu_release(&bds);
    tu_release(&bdb);
    tu_release(&bsm);
    tu_release(&bsi);
    free(x), free(dy), free(scale), free(sm), free(si), free(got);
    free(mean), free(var), free(dxr), free(dsr), free(dbr);
}

static void bwd_shapes(clnorm_bn_mode mode, const tu_shape *shapes, size_t count) {
    for (size_t i = 0; i < count; i++) {
        bwd_case c;
        memset(&c, 0, sizeof c);
        c.mode = mode;
        c.s = shapes[i];
        c.scale = c.dx = c.grads = 1;
        c.save = (int)(i % 2);
        c.xoff = (i % 3 == 1) ? 4 * 37 : 0;
        c.dyoff = (i % 3 == 2) ? 4 * 37 : 0;
        c.dxoff = (i % 4 == 3) ? 4 * 101 : 0;
        c.eps = 1e-5;
        run_bwd(&c);
    }
}

static void test_backward_spatial(void **state) {
    (void)state;
    bwd_shapes(CLNORM_BN_SPATIAL, spatial_train_shapes, TU_COUNT(spatial_train_shapes));
}

static void test_backward_per_activation(void **state) {
    (void)state;
    bwd_shapes(CLNORM_BN_PER_ACTIVATION, peract_train_shapes, TU_COUNT(peract_train_shapes));
}

/* scale NULL / given, dx NULL / given, dscale+dbias NULL / given, saved stats NULL (recompute) / given. */
static void test_backward_optional_args(void **state) {
    (void)state;
    static const tu_shape shapes[2] = {{4, {3, 5, 7, 9}}, {3, {6, 5, 7}}};
    for (int m = 0; m < 2; m++)
        for (int mask = 0; mask < 16; mask++) {
            bwd_case c;
            memset(&c, 0, sizeof c);
            c.mode = m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
            c.s = shapes[m];
            c.scale = mask & 1;
            c.dx = (mask >> 1) & 1;
            c.grads = (mask >> 2) & 1;
            c.save = (mask >> 3) & 1;
            if (!c.dx && !c.grads)
                continue; /* nothing to compute */
            c.eps = (mask & 1) ? 1e-5 : 1e-3;
            run_bwd(&c);
        }
}

/* The pipeline as an application runs it: forward training saves statistics on the device, backward
   consumes those very buffers. */
static void test_train_then_backward(void **state) {
    (void)state;
    static const tu_shape shapes[2] = {{4, {4, 6, 19, 23}}, {2, {24, 333}}};
    for (int m = 0; m < 2; m++) {
        clnorm_bn_mode mode = m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
        const tu_shape *s = &shapes[m];
        tu_case("train then backward %s %s", tu_mode_name(mode), tu_shape_str(s->ndim, s->shape));
        size_t n = tu_numel(s->ndim, s->shape), G = ref_groups(mode, s->ndim, s->shape);
        float *x = tu_floats(n), *dy = tu_floats(n), *scale = tu_floats(G), *bias = tu_floats(G), *got = tu_floats(n);
        float *sm = tu_floats(G), *si = tu_floats(G);
        double *dxr = tu_doubles(n), *dsr = tu_doubles(G), *dbr = tu_doubles(G);
        tu_fill_normal(x, n, -2.0, 3.0);
        tu_fill_normal(dy, n, 0.0, 1.0);
        tu_fill_normal(scale, G, 1.0, 0.3);
        tu_fill_normal(bias, G, 0.0, 1.0);
        dten xt = dten_make(s, 0, x), yt = dten_make(s, 0, NULL), dyt = dten_make(s, 0, dy),
             dxt = dten_make(s, 0, NULL);
        cl_mem bs = tu_buffer_from(scale, G), bb = tu_buffer_from(bias, G), bsm = param_poisoned(G),
               bsi = param_poisoned(G), bds = param_poisoned(G), bdb = param_poisoned(G);
        TU_OK(clnorm_bn_forward_training(tu_ctx, mode, &xt.t, &yt.t, bs, bb, 0.1, 1e-5, NULL, NULL, bsm, bsi));
        TU_OK(clnorm_bn_backward(tu_ctx, mode, &xt.t, &dyt.t, &dxt.t, bs, bds, bdb, 1e-5, bsm, bsi));
        tu_finish();
        tu_read(bsm, 0, sm, G * 4);
        tu_read(bsi, 0, si, G * 4);
        ref_bn_backward(mode, s->ndim, s->shape, x, dy, scale, 1e-5, sm, si, dxr, dsr, dbr);
        dten_read(&dxt, got);
        TU_TRUE(tu_compare("dx", got, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_TRUE(tu_compare_param("dscale", bds, dsr, G, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_TRUE(tu_compare_param("dbias", bdb, dbr, G, TU_BWD_ATOL, TU_BWD_RTOL));
        /* and the saved statistics match a from-scratch backward (save NULL) in the reference */
        ref_bn_backward(mode, s->ndim, s->shape, x, dy, scale, 1e-5, NULL, NULL, dxr, dsr, dbr);
        TU_TRUE(tu_compare("dx vs recomputed statistics", got, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
        tu_release(&xt.buf), tu_release(&yt.buf), tu_release(&dyt.buf), tu_release(&dxt.buf);
        tu_release(&bs), tu_release(&bb), tu_release(&bsm), tu_release(&bsi), tu_release(&bds), tu_release(&bdb);
        free(x), free(dy), free(scale), free(bias), free(got), free(sm), free(si), free(dxr), free(dsr), free(dbr);
    }
}

/* Several views of one buffer: x, y, dy, dx at odd multiples of 4 bytes, back to back. */
static void test_shared_buffer_offsets(void **state) {
    (void)state;
    const tu_shape s = {4, {3, 5, 9, 7}};
    const clnorm_bn_mode mode = CLNORM_BN_SPATIAL;
    tu_case("shared buffer offsets %s", tu_shape_str(s.ndim, s.shape));
    size_t n = tu_numel(s.ndim, s.shape);
    size_t ox = 4 * 37, oy = ox + n * 4 + 4 * 3, ody = oy + n * 4 + 4 * 1, odx = ody + n * 4 + 4 * 5;
    size_t total = odx + n * 4 + GUARD;
    float *x = tu_floats(n), *dy = tu_floats(n), *got = tu_floats(n);
    double *yr = tu_doubles(n), *dxr = tu_doubles(n);
    tu_fill_normal(x, n, 0.0, 1.0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    cl_mem b = tu_buffer(total);
    tu_poison(b, 0, total);
    tu_write(b, ox, x, n * 4);
    tu_write(b, ody, dy, n * 4);
    clnorm_tensor tx = tu_view(b, ox, s.ndim, s.shape), ty = tu_view(b, oy, s.ndim, s.shape),
                  tdy = tu_view(b, ody, s.ndim, s.shape), tdx = tu_view(b, odx, s.ndim, s.shape);
    TU_OK(clnorm_bn_forward_training(tu_ctx, mode, &tx, &ty, NULL, NULL, 1.0, 1e-5, NULL, NULL, NULL, NULL));
    TU_OK(clnorm_bn_backward(tu_ctx, mode, &tx, &tdy, &tdx, NULL, NULL, NULL, 1e-5, NULL, NULL));
    tu_finish();
    ref_bn_forward_training(mode, s.ndim, s.shape, x, NULL, NULL, 1.0, 1e-5, NULL, NULL, yr, NULL, NULL, NULL, NULL,
                            NULL);
    ref_bn_backward(mode, s.ndim, s.shape, x, dy, NULL, 1e-5, NULL, NULL, dxr, NULL, NULL);
    tu_read(b, oy, got, n * 4);
    TU_TRUE(tu_compare("y", got, yr, n, TU_FWD_ATOL, TU_FWD_RTOL));
    tu_read(b, odx, got, n * 4);
    TU_TRUE(tu_compare("dx", got, dxr, n, TU_BWD_ATOL, TU_BWD_RTOL));
    TU_TRUE(tu_poison_intact(b, 0, ox, "before x"));
    TU_TRUE(tu_poison_intact(b, ox + n * 4, 12, "between x and y"));
    TU_TRUE(tu_poison_intact(b, oy + n * 4, 4, "between y and dy"));
    TU_TRUE(tu_poison_intact(b, ody + n * 4, 20, "between dy and dx"));
    TU_TRUE(tu_poison_intact(b, odx + n * 4, GUARD, "after dx"));
    tu_release(&b);
    free(x), free(dy), free(got), free(yr), free(dxr);
}

/* Same call twice gives bit-identical results (no races in the reductions). */
static void test_deterministic(void **state) {
    (void)state;
    const tu_shape s = {4, {8, 3, 61, 67}};
    for (int m = 0; m < 2; m++) {
        clnorm_bn_mode mode = m ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
        tu_case("deterministic %s %s", tu_mode_name(mode), tu_shape_str(s.ndim, s.shape));
        size_t n = tu_numel(s.ndim, s.shape), G = ref_groups(mode, s.ndim, s.shape);
        float *x = tu_floats(n), *y1 = tu_floats(n), *y2 = tu_floats(n), *s1 = tu_floats(G), *s2 = tu_floats(G);
        tu_fill_normal(x, n, 0.0, 1.0);
        dten xt = dten_make(&s, 0, x), yt = dten_make(&s, 0, NULL);
        cl_mem bsm = param_poisoned(G), bsi = param_poisoned(G);
        TU_OK(clnorm_bn_forward_training(tu_ctx, mode, &xt.t, &yt.t, NULL, NULL, 1.0, 1e-5, NULL, NULL, bsm, bsi));
        tu_finish();
        dten_read(&yt, y1);
        tu_read(bsi, 0, s1, G * 4);
        tu_poison(yt.buf, 0, n * 4);
        TU_OK(clnorm_bn_forward_training(tu_ctx, mode, &xt.t, &yt.t, NULL, NULL, 1.0, 1e-5, NULL, NULL, bsm, bsi));
        tu_finish();
        dten_read(&yt, y2);
        tu_read(bsi, 0, s2, G * 4);
        TU_TRUE(memcmp(y1, y2, n * 4) == 0);
        TU_TRUE(memcmp(s1, s2, G * 4) == 0);
        tu_release(&xt.buf), tu_release(&yt.buf), tu_release(&bsm), tu_release(&bsi);
        free(x), free(y1), free(y2), free(s1), free(s2);
    }
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_spatial),
        cmocka_unit_test(test_train_per_activation),
        cmocka_unit_test(test_train_optional_args),
        cmocka_unit_test(test_inference_spatial),
        cmocka_unit_test(test_inference_per_activation),
        cmocka_unit_test(test_inference_inplace),
        cmocka_unit_test(test_backward_spatial),
        cmocka_unit_test(test_backward_per_activation),
        cmocka_unit_test(test_backward_optional_args),
        cmocka_unit_test(test_train_then_backward),
        cmocka_unit_test(test_shared_buffer_offsets),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests_name("functional", tests, tu_group_setup, tu_group_teardown);
}
