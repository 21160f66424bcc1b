/*
 * The dtype x layout x mode x op matrix: F32 / F16 / BF16 storage, NCHW / NHWC, SPATIAL / PER_ACTIVATION;
 * training forward (running and saved statistics), inference, backward (dx and parameter gradients) with the
 * saved statistics and with statistics recomputed from x. The reference is ref_bn.c in double, computed from
 * the inputs as the device sees them (rounded to the storage type, round to nearest even). Outputs stored in
 * F16 / BF16 may differ from the reference by one unit in the storage type's last place on top of the fp32
 * tolerance of SEMANTICS.md; statistics and gradients (float32 parameters) get the fp32 tolerance.
 *
 * Every case runs in NCHW and in NHWC on the same data, and the two results are compared element for element
 * after the layout permutation. They go through different kernels (row kernels vs column kernels) that sum in
 * different orders, so they agree within the fp32 tolerance, not bit for bit; a stored F16/BF16 output may
 * then round to the neighbouring storage value, so one storage ulp is allowed there too.
 *
 * Views sit at byte offsets (odd element offsets included) inside buffers filled with 0xFF bytes (NaN in every
 * storage type), and every byte outside a view must still be 0xFF afterwards.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_bn.h"
#include "test_util.h"

#define GUARD 48 /* bytes of 0xFF after every view */
#define EPS 1e-5
#define FACTOR 0.3

/* ---- a device tensor of any dtype / layout at a byte offset inside 0xFF guard bytes ------------------------- */
typedef struct {
    cl_mem buf;
    size_t off, n, bytes, B, C, S;
    clnorm_dtype dt;
    clnorm_layout lay;
    clnorm_tensor t;
} dten;

static dten dten_make(const tu_shape *s, clnorm_dtype dt, clnorm_layout lay, size_t off_elems,
                      const float *nchw /* NULL: left 0xFF */) {
    dten d;
    memset(&d, 0, sizeof d);
    d.dt = dt;
    d.lay = lay;
    d.n = tu_numel(s->ndim, s->shape);
    tu_bcs(s, &d.B, &d.C, &d.S);
    d.off = off_elems * tu_esize(dt);
    d.bytes = d.off + d.n * tu_esize(dt) + GUARD;
    d.buf = tu_buffer(d.bytes);
    unsigned char *ff = tu_malloc(d.bytes);
    memset(ff, 0xFF, d.bytes);
    if (nchw) {
        float *tmp = tu_floats(d.n);
        if (lay == CLNORM_NHWC)
            tu_nchw_to_nhwc(nchw, tmp, d.B, d.C, d.S);
        else
            memcpy(tmp, nchw, d.n * 4);
        tu_encode(dt, tmp, ff + d.off, d.n);
        free(tmp);
    }
    tu_write(d.buf, 0, ff, d.bytes);
    free(ff);
    d.t = tu_view(d.buf, d.off, s->ndim, s->shape);
    d.t.dtype = dt;
    d.t.layout = lay;
    return d;
}

/* the view's values in NCHW order, and 1 if every byte outside the view is still 0xFF */
static int dten_read(const dten *d, float *nchw, const char *what) {
    unsigned char *raw = tu_malloc(d->bytes);
    tu_read(d->buf, 0, raw, d->bytes);
    int ok = 1;
    size_t end = d->off + d->n * tu_esize(d->dt);
    for (size_t i = 0; i < d->bytes; i++) {
        if ((i < d->off || i >= end) && raw[i] != 0xFF) {
            print_error("%s: byte %zu outside the view [%zu, %zu) was written (0x%02x)\n", what, i, d->off, end,
                        raw[i]);
            ok = 0;
            break;
        }
    }
    if (nchw) {
        float *tmp = tu_floats(d->n);
        tu_decode(d->dt, raw + d->off, tmp, d->n);
        if (d->lay == CLNORM_NHWC)
            tu_nhwc_to_nchw(tmp, nchw, d->B, d->C, d->S);
        else
            memcpy(nchw, tmp, d->n * 4);
        free(tmp);
    }
    free(raw);
    return ok;
}

static void dten_free(dten *d) {
    tu_release(&d->buf);
}

static cl_mem param_nan(size_t g) {
    cl_mem b = tu_buffer(g * 4);
    tu_poison(b, 0, g * 4);
    return b;
}

static void read_param(cl_mem b, float *host, size_t g) {
    tu_read(b, 0, host, g * 4);
}

/* ---- one case: every op in one layout; results kept for the layout comparison -------------------------- */
typedef struct {
    clnorm_bn_mode mode;
    tu_shape s;
    size_t xoff, yoff; /* element offsets */
} dcase;

typedef struct {
    float *y_train, *y_inf, *dx_saved, *dx_recomp;
    float *mean, *invstd, *rm, *rv, *ds_saved, *db_saved, *ds_recomp, *db_recomp;
} results;

static void results_alloc(results *r, size_t n, size_t G) {
    r->y_train = tu_floats(n), r->y_inf = tu_floats(n), r->dx_saved = tu_floats(n), r->dx_recomp = tu_floats(n);
    r->mean = tu_floats(G), r->invstd = tu_floats(G), r->rm = tu_floats(G), r->rv = tu_floats(G);
    r->ds_saved = tu_floats(G), r->db_saved = tu_floats(G), r->ds_recomp = tu_floats(G), r->db_recomp = tu_floats(G);
}

static void results_free(results *r) {
    free(r->y_train), free(r->y_inf), free(r->dx_saved), free(r->dx_recomp);
    free(r->mean), free(r->invstd), free(r->rm), free(r->rv);
    free(r->ds_saved), free(r->db_saved), free(r->ds_recomp), free(r->db_recomp);
}

typedef struct {
    const float *x, *dy, *scale, *bias, *rm, *rv; /* x, dy already rounded to the storage type */
} inputs;

static void run_layout(const dcase *c, clnorm_dtype dt, clnorm_layout lay, const inputs *in, results *out) {
    const tu_shape *s = &c->s;
    size_t n = tu_numel(s->ndim, s->shape), G = ref_groups(c->mode, s->ndim, s->shape);
    char what[256];
    snprintf(what, sizeof what, "%s %s %s %s xoff=%zu yoff=%zu", tu_dtype_name(dt), tu_layout_name(lay),
             tu_mode_name(c->mode), tu_shape_str(s->ndim, s->shape), c->xoff, c->yoff);

    double *ref = tu_doubles(n), *rmean = tu_doubles(G), *rinv = tu_doubles(G), *rrm = tu_doubles(G),
           *rrv = tu_doubles(G), *rds = tu_doubles(G), *rdb = tu_doubles(G);
    dten x = dten_make(s, dt, lay, c->xoff, in->x), dy = dten_make(s, dt, lay, c->xoff + 3, in->dy);
    cl_mem scale = tu_buffer_from(in->scale, G), bias = tu_buffer_from(in->bias, G), rm = tu_buffer_from(in->rm, G),
           rv = tu_buffer_from(in->rv, G), sm = param_nan(G), si = param_nan(G), ds = param_nan(G),
           db = param_nan(G);
    char label[320];

    /* training forward with running and saved statistics */
    dten y = dten_make(s, dt, lay, c->yoff, NULL);
    TU_OK(clnorm_bn_forward_training(tu_ctx, c->mode, &x.t, &y.t, scale, bias, FACTOR, EPS, rm, rv, sm, si));
    tu_finish();
    ref_bn_forward_training(c->mode, s->ndim, s->shape, in->x, in->scale, in->bias, FACTOR, EPS, in->rm, in->rv, ref,
                            rmean, NULL, rinv, rrm, rrv);
    snprintf(label, sizeof label, "%s: train y", what);
    TU_TRUE(dten_read(&y, out->y_train, label));
    TU_TRUE(tu_compare_storage(label, out->y_train, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));
    read_param(sm, out->mean, G);
    read_param(si, out->invstd, G);
    read_param(rm, out->rm, G);
    read_param(rv, out->rv, G);
    snprintf(label, sizeof label, "%s: save_mean", what);
    TU_TRUE(tu_compare(label, out->mean, rmean, G, TU_STAT_ATOL, TU_STAT_RTOL));
    snprintf(label, sizeof label, "%s: save_invstd", what);
    TU_TRUE(tu_compare(label, out->invstd, rinv, G, TU_STAT_ATOL, TU_STAT_RTOL));
    snprintf(label, sizeof label, "%s: running_mean", what);
    TU_TRUE(tu_compare(label, out->rm, rrm, G, TU_STAT_ATOL, TU_STAT_RTOL));
    snprintf(label, sizeof label, "%s: running_var", what);
    TU_TRUE(tu_compare(label, out->rv, rrv, G, TU_STAT_ATOL, TU_STAT_RTOL));
    /* the input is untouched */
    float *xback = tu_floats(n);
    snprintf(label, sizeof label, "%s: x after training", what);
    TU_TRUE(dten_read(&x, xback, label));
    TU_TRUE(memcmp(xback, in->x, n * 4) == 0);
    free(xback);
    dten_free(&y);

    /* inference with the (given) running statistics */
    y = dten_make(s, dt, lay, c->yoff, NULL);
    TU_OK(clnorm_bn_forward_inference(tu_ctx, c->mode, &x.t, &y.t, scale, bias, rm, rv, EPS));
    tu_finish();
    ref_bn_forward_inference(c->mode, s->ndim, s->shape, in->x, in->scale, in->bias, out->rm, out->rv, EPS, ref);
    snprintf(label, sizeof label, "%s: inference y", what);
    TU_TRUE(dten_read(&y, out->y_inf, label));
    TU_TRUE(tu_compare_storage(label, out->y_inf, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));
    dten_free(&y);

    /* backward with the saved statistics (the device's own, as the reference takes them) */
    dten dx = dten_make(s, dt, lay, c->yoff, NULL);
    TU_OK(clnorm_bn_backward(tu_ctx, c->mode, &x.t, &dy.t, &dx.t, scale, ds, db, EPS, sm, si));
    tu_finish();
    ref_bn_backward(c->mode, s->ndim, s->shape, in->x, in->dy, in->scale, EPS, out->mean, out->invstd, ref, rds, rdb);
    snprintf(label, sizeof label, "%s: dx (saved stats)", what);
    TU_TRUE(dten_read(&dx, out->dx_saved, label));
    TU_TRUE(tu_compare_storage(label, out->dx_saved, ref, n, dt, TU_BWD_ATOL, TU_BWD_RTOL));
    read_param(ds, out->ds_saved, G);
    read_param(db, out->db_saved, G);
    snprintf(label, sizeof label, "%s: dscale (saved stats)", what);
    TU_TRUE(tu_compare(label, out->ds_saved, rds, G, TU_BWD_ATOL, TU_BWD_RTOL));
    snprintf(label, sizeof label, "%s: dbias (saved stats)", what);
    TU_TRUE(tu_compare(label, out->db_saved, rdb, G, TU_BWD_ATOL, TU_BWD_RTOL));
    dten_free(&dx);

    /* backward recomputing the statistics from x */
    dx = dten_make(s, dt, lay, c->yoff, NULL);
    tu_poison(ds, 0, G * 4);
    tu_poison(db, 0, G * 4);
    TU_OK(clnorm_bn_backward(tu_ctx, c->mode, &x.t, &dy.t, &dx.t, scale, ds, db, EPS, NULL, NULL));
    tu_finish();
    ref_bn_backward(c->mode, s->ndim, s->shape, in->x, in->dy, in->scale, EPS, NULL, NULL, ref, rds, rdb);
    snprintf(label, sizeof label, "%s: dx (recomputed stats)", what);
    TU_TRUE(dten_read(&dx, out->dx_recomp, label));
    TU_TRUE(tu_compare_storage(label, out->dx_recomp, ref, n, dt, TU_BWD_ATOL, TU_BWD_RTOL));
    read_param(ds, out->ds_recomp, G);
    read_param(db, out->db_recomp, G);
    snprintf(label, sizeof label, "%s: dscale (recomputed stats)", what);
    TU_TRUE(tu_compare(label, out->ds_recomp, rds, G, TU_BWD_ATOL, TU_BWD_RTOL));
    snprintf(label, sizeof label, "%s: dbias (recomputed stats)", what);
    TU_TRUE(tu_compare(label, out->db_recomp, rdb, G, TU_BWD_ATOL, TU_BWD_RTOL));
    dten_free(&dx);

    dten_free(&x), dten_free(&dy);
    tu_release(&scale), tu_release(&bias), tu_release(&rm), tu_release(&rv);
    tu_release(&sm), tu_release(&si), tu_release(&ds), tu_release(&db);
    free(ref), free(rmean), free(rinv), free(rrm), free(rrv), free(rds), free(rdb);
}

/* NCHW and NHWC results of the same case, element for element (see the file comment for the tolerance) */
static void compare_layouts(const dcase *c, clnorm_dtype dt, const results *a, const results *b) {
    size_t n = tu_numel(c->s.ndim, c->s.shape), G = ref_groups(c->mode, c->s.ndim, c->s.shape);
    double *r = tu_doubles(n > G ? n : G);
    char label[256];
#define CMP_ELEMS(field, atol, rtol)                                                                                   \
    do {                                                                                                               \
        for (size_t i = 0; i < n; i++)                                                                                 \
            r[i] = a->field[i];                                                                                        \
        snprintf(label, sizeof label, "NHWC vs NCHW %s %s %s: " #field, tu_dtype_name(dt), tu_mode_name(c->mode),          \
                 tu_shape_str(c->s.ndim, c->s.shape));                                                                 \
        TU_TRUE(tu_compare_storage(label, b->field, r, n, dt, atol, rtol));                                            \
    } while (0)
#define CMP_PARAMS(field, atol, rtol)                                                                                  \
    do {                                                                                                               \
        for (size_t i = 0; i < G; i++)                                                                                 \
            r[i] = a->field[i];                                                                                        \
        snprintf(label, sizeof label, "NHWC vs NCHW %s %s %s: " #field, tu_dtype_name(dt), tu_mode_name(c->mode),          \
                 tu_shape_str(c->s.ndim, c->s.shape));                                                                 \
        TU_TRUE(tu_compare(label, b->field, r, G, atol, rtol));                                                        \
    } while (0)
    CMP_ELEMS(y_train, TU_FWD_ATOL, TU_FWD_RTOL);
    CMP_ELEMS(y_inf, TU_FWD_ATOL, TU_FWD_RTOL);
    CMP_ELEMS(dx_saved, TU_BWD_ATOL, TU_BWD_RTOL);
    CMP_ELEMS(dx_recomp, TU_BWD_ATOL, TU_BWD_RTOL);
    CMP_PARAMS(mean, TU_STAT_ATOL, TU_STAT_RTOL);
    CMP_PARAMS(invstd, TU_STAT_ATOL, TU_STAT_RTOL);
    CMP_PARAMS(rm, TU_STAT_ATOL, TU_STAT_RTOL);
    CMP_PARAMS(rv, TU_STAT_ATOL, TU_STAT_RTOL);
    CMP_PARAMS(ds_saved, TU_BWD_ATOL, TU_BWD_RTOL);
    CMP_PARAMS(db_saved, TU_BWD_ATOL, TU_BWD_RTOL);
    CMP_PARAMS(ds_recomp, TU_BWD_ATOL, TU_BWD_RTOL);
    CMP_PARAMS(db_recomp, TU_BWD_ATOL, TU_BWD_RTOL);
#undef CMP_ELEMS
#undef CMP_PARAMS
    free(r);
}

static void run_case(const dcase *c, clnorm_dtype dt) {
    const tu_shape *s = &c->s;
    tu_case("%s %s %s xoff=%zu yoff=%zu", tu_dtype_name(dt), tu_mode_name(c->mode), tu_shape_str(s->ndim, s->shape),
            c->xoff, c->yoff);
    size_t n = tu_numel(s->ndim, s->shape), G = ref_groups(c->mode, s->ndim, s->shape);
    float *x = tu_floats(n), *dy = tu_floats(n), *scale = tu_floats(G), *bias = tu_floats(G), *rm = tu_floats(G),
          *rv = tu_floats(G);
    tu_fill_normal(x, n, 0.5, 2.0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    for (size_t i = 0; i < n; i++) { /* the values the device sees */
        x[i] = tu_round_storage(dt, x[i]);
        dy[i] = tu_round_storage(dt, dy[i]);
    }
    tu_fill_normal(scale, G, 1.0, 0.5);
    tu_fill_normal(bias, G, 0.0, 1.0);
    tu_fill_normal(rm, G, 0.0, 1.0);
    tu_fill_uniform(rv, G, 0.5, 2.0);
    inputs in = {x, dy, scale, bias, rm, rv};
    results r[2];
    for (int l = 0; l < 2; l++) {
        results_alloc(&r[l], n, G);
        run_layout(c, dt, l ? CLNORM_NHWC : CLNORM_NCHW, &in, &r[l]);
    }
    compare_layouts(c, dt, &r[0], &r[1]);
    results_free(&r[0]), results_free(&r[1]);
    free(x), free(dy), free(scale), free(bias), free(rm), free(rv);
}

/* odd shapes: S not a multiple of 16, maps 1, batch 1, ndim 2..5, long maps (several slices per map) */
static const dcase spatial_cases[] = {
    {CLNORM_BN_SPATIAL, {4, {1, 3, 7, 5}}, 0, 0},     {CLNORM_BN_SPATIAL, {3, {4, 1, 33}}, 1, 3},
    {CLNORM_BN_SPATIAL, {5, {3, 5, 2, 3, 7}}, 5, 2},  {CLNORM_BN_SPATIAL, {2, {17, 6}}, 1, 0},
    {CLNORM_BN_SPATIAL, {3, {2, 20, 17}}, 7, 9},      {CLNORM_BN_SPATIAL, {4, {5, 3, 19, 23}}, 3, 1},
    {CLNORM_BN_SPATIAL, {3, {3, 1, 50001}}, 1, 17},   {CLNORM_BN_SPATIAL, {2, {2, 1}}, 0, 1},
};
static const dcase peract_cases[] = {
    {CLNORM_BN_PER_ACTIVATION, {2, {7, 5}}, 0, 1},          {CLNORM_BN_PER_ACTIVATION, {3, {2, 3, 5}}, 1, 0},
    {CLNORM_BN_PER_ACTIVATION, {3, {9, 1, 17}}, 3, 5},      {CLNORM_BN_PER_ACTIVATION, {5, {3, 4, 2, 3, 5}}, 2, 7},
    {CLNORM_BN_PER_ACTIVATION, {4, {33, 19, 1, 3}}, 1, 1},  {CLNORM_BN_PER_ACTIVATION, {2, {5, 300}}, 9, 2},
    /* tall: few columns, many rows -> the row-split column kernels (both strategies) */
    {CLNORM_BN_PER_ACTIVATION, {2, {4100, 3}}, 1, 2},       {CLNORM_BN_PER_ACTIVATION, {3, {2600, 2, 9}}, 0, 0},
};

static void run_dtype_cases(clnorm_dtype dt, const dcase *cs, size_t k) {
    for (size_t i = 0; i < k; i++)
        run_case(&cs[i], dt);
}

#define CASES(a) a, sizeof a / sizeof a[0]
static void test_f32_spatial(void **state) {
    (void)state;
    run_dtype_cases(CLNORM_F32, CASES(spatial_cases));
}
static void test_f32_per_activation(void **state) {
    (void)state;
    run_dtype_cases(CLNORM_F32, CASES(peract_cases));
}
static void test_f16_spatial(void **state) {
    (void)state;
    run_dtype_cases(CLNORM_F16, CASES(spatial_cases));
}
static void test_f16_per_activation(void **state) {
    (void)state;
    run_dtype_cases(CLNORM_F16, CASES(peract_cases));
}
static void test_bf16_spatial(void **state) {
    (void)state;
    run_dtype_cases(CLNORM_BF16, CASES(spatial_cases));
}
static void test_bf16_per_activation(void **state) {
    (void)state;
    run_dtype_cases(CLNORM_BF16, CASES(peract_cases));
}

/* ---- the host conversions themselves (they are the reference's view of the device's storage) ------------- */
static void test_host_conversions(void **state) {
    (void)state;
    tu_case("host conversions");
    /* exact values, ties to even, overflow, subnormals */
    TU_TRUE(tu_f32_to_f16(1.0f) == 0x3c00 && tu_f32_to_f16(-2.0f) == 0xc000);
    TU_TRUE(tu_f32_to_f16(65504.0f) == 0x7bff && tu_f32_to_f16(65519.99f) == 0x7bff);
    TU_TRUE(tu_f32_to_f16(65520.0f) == 0x7c00 && tu_f32_to_f16(INFINITY) == 0x7c00);
    TU_TRUE(tu_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);              /* tie, even below */
    TU_TRUE(tu_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);          /* tie, even above */
    TU_TRUE(tu_f32_to_f16(0x1p-24f) == 0x0001 && tu_f32_to_f16(0x1p-25f) == 0x0000);
    TU_TRUE(tu_f32_to_f16(0x1.8p-25f) == 0x0001 && tu_f32_to_f16(0x1.8p-24f) == 0x0002);
    TU_TRUE(tu_f16_to_f32(0x0001) == 0x1p-24f && tu_f16_to_f32(0x3555) == 0x1.554p-2f);
    TU_TRUE(isnan(tu_f16_to_f32(tu_f32_to_f16(NAN))));
    TU_TRUE(tu_f32_to_bf16(1.0f) == 0x3f80 && tu_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);
    TU_TRUE(tu_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82 && tu_f32_to_bf16(-INFINITY) == 0xff80);
    TU_TRUE(isnan(tu_bf16_to_f32(tu_f32_to_bf16(NAN))));
    TU_TRUE(tu_ulp(CLNORM_F16, 1.0) == 0x1p-10 && tu_ulp(CLNORM_BF16, 1.5) == 0x1p-7 && tu_ulp(CLNORM_F32, 3.0) == 0x1p-22);
    TU_TRUE(tu_ulp(CLNORM_F16, 1e-9) == 0x1p-24);
    /* every half round-trips */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tu_f16_to_f32((uint16_t)h);
        if (!isnan(f) && tu_f32_to_f16(f) != h)
            tu_fail_at(__FILE__, __LINE__, "half 0x%04x does not round-trip", h);
    }
}

/* ---- the device's rounding on store matches the host's (exactly: y = x * 1 + 0 at inference) --------------- */
static void test_store_rounding(void **state) {
    (void)state;
    /* F16 / BF16 outputs are values of the storage type, within one storage ulp (+ fp32 tolerance) of the
       reference: the device rounds on store as the host conversions do */
    const size_t shape[2] = {64, 1}, n = 64;
    for (int k = 0; k < 2; k++) {
        clnorm_dtype dt = k ? CLNORM_BF16 : CLNORM_F16;
        tu_case("store rounding %s", tu_dtype_name(dt));
        float x[64], y[64], one = 1.0f, zero = 0.0f, var = 0.25f;
        double ref[64];
        for (size_t i = 0; i < n; i++)
            x[i] = tu_round_storage(dt, (float)(0.37 + 0.01 * (double)i));
        tu_shape s = {2, {64, 1}};
        dten dx = dten_make(&s, dt, CLNORM_NCHW, 1, x), dy = dten_make(&s, dt, CLNORM_NCHW, 0, NULL);
        cl_mem bs = tu_buffer_from(&one, 1), bb = tu_buffer_from(&zero, 1), bm = tu_buffer_from(&zero, 1),
               bv = tu_buffer_from(&var, 1);
        TU_OK(clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_SPATIAL, &dx.t, &dy.t, bs, bb, bm, bv, EPS));
        tu_finish();
        TU_TRUE(dten_read(&dy, y, "store rounding y"));
        ref_bn_forward_inference(CLNORM_BN_SPATIAL, 2, shape, x, &one, &zero, &zero, &var, EPS, ref);
        TU_TRUE(tu_compare_storage("store rounding", y, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));
        for (size_t i = 0; i < n; i++) /* every output is a storage value */
            TU_TRUE(tu_round_storage(dt, y[i]) == y[i]);
        dten_free(&dx), dten_free(&dy);
        tu_release(&bs), tu_release(&bb), tu_release(&bm), tu_release(&bv);
    }
}

/* ---- the rows path's stores round exactly as the host does ---------------------------------------------------
 * Inference with var = 1 - eps (invstd exactly 1): y = fma(x - mean, scale, bias) in float, which the host
 * reproduces bit for bit (fmaf), then rounds to the storage type. Rows of 100 and 1000 values at element offsets 0,
 * 1 and 17 (the BF16 pass takes 32 values at a time where x and y allow it, 16 or 1 elsewhere), out of place and in
 * place; the values include ties (x * scale half-way between two storage values), overflow to Inf and NaN. */
static void test_store_rounding_rows(void **state) {
    (void)state;
    static const tu_shape shapes[] = {{3, {4, 3, 100}}, {4, {2, 2, 10, 100}}};
    static const size_t offs[] = {0, 1, 17};
    for (int k = 0; k < 2; k++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (size_t oi = 0; oi < sizeof offs / sizeof offs[0]; oi++) {
                clnorm_dtype dt = k ? CLNORM_BF16 : CLNORM_F16;
                const tu_shape *s = &shapes[si];
                int inplace = oi == 1;
                tu_case("rows store rounding %s %s offset %zu%s", tu_dtype_name(dt), tu_shape_str(s->ndim, s->shape),
                        offs[oi], inplace ? " in place" : "");
                size_t n = tu_numel(s->ndim, s->shape), B, C, S;
                tu_bcs(s, &B, &C, &S);
                float *x = tu_floats(n), *y = tu_floats(n), *scale = tu_floats(C), *bias = tu_floats(C),
                      *mean = tu_floats(C), *var = tu_floats(C);
                float eps = (float)EPS;
                for (size_t c = 0; c < C; c++) {
                    /* scale 1 + j / 2^8 (j odd: x * scale lands half-way between storage values for many x) */
                    scale[c] = 1.0f + (float)(2 * (int)tu_rand_index(64) + 1) * 0x1p-8f;
                    bias[c] = c % 2 ? 0.0f : (float)tu_normal() * 0x1p-6f;
                    mean[c] = c % 3 ? 0.0f : (float)tu_normal();
                    var[c] = 1.0f - eps;
                    if (var[c] + eps != 1.0f)
                        tu_fail_at(__FILE__, __LINE__, "var + eps is not 1 in float");
                }
                for (size_t i = 0; i < n; i++)
                    x[i] = tu_round_storage(dt, (float)(tu_normal() * 8.0));
                x[tu_rand_index(n)] = NAN;
                x[tu_rand_index(n)] = dt == CLNORM_BF16 ? 0x1.fcp127f : 65504.0f; /* the largest: * scale is Inf */
                dten dx = dten_make(s, dt, CLNORM_NCHW, offs[oi], x);
                dten dy = inplace ? dx : dten_make(s, dt, CLNORM_NCHW, offs[oi] + 3 * oi, NULL);
                cl_mem bs = tu_buffer_from(scale, C), bb = tu_buffer_from(bias, C), bm = tu_buffer_from(mean, C),
                       bv = tu_buffer_from(var, C);
                TU_OK(clnorm_bn_forward_inference(tu_ctx, CLNORM_BN_SPATIAL, &dx.t, &dy.t, bs, bb, bm, bv, EPS));
                tu_finish();
                TU_TRUE(dten_read(&dy, y, "rows store rounding y"));
                size_t bad = 0, first = 0;
                float want_first = 0.0f;
                for (size_t i = 0; i < n; i++) {
                    size_t c = (i / S) % C;
                    float want = tu_round_storage(dt, fmaf(x[i] - mean[c], scale[c], bias[c]));
                    int same = isnan(want) ? isnan(y[i]) : (y[i] == want && signbit(y[i]) == signbit(want));
                    if (!same && bad++ == 0)
                        first = i, want_first = want;
                }
                if (bad)
                    tu_fail_at(__FILE__, __LINE__, "%zu of %zu values differ from the host's rounding; first at %zu: "
                               "got %a, want %a (x %a)", bad, n, first, y[first], want_first, x[first]);
                dten_free(&dx);
                if (!inplace)
                    dten_free(&dy);
                tu_release(&bs), tu_release(&bb), tu_release(&bm), tu_release(&bv);
                free(x), free(y), free(scale), free(bias), free(mean), free(var);
            }
}

/* ---- the layer with cfg.dtype F16 / BF16 and cfg.layout NHWC -------------------------------------------- */
static void run_layer(int nd, clnorm_dtype dt, clnorm_layout lay) {
    tu_shape s = nd == 0 ? (tu_shape){2, {6, 13}} : nd == 1 ? (tu_shape){3, {3, 5, 17}} : (tu_shape){4, {2, 5, 3, 7}};
    if (nd == 3)
        s = (tu_shape){5, {2, 3, 2, 3, 5}};
    tu_case("layer nd=%d %s %s %s", nd, tu_dtype_name(dt), tu_layout_name(lay), tu_shape_str(s.ndim, s.shape));
    clnorm_bn_mode mode = nd == 0 ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
    size_t n = tu_numel(s.ndim, s.shape), maps = s.shape[1], G = ref_groups(mode, s.ndim, s.shape);
    TU_TRUE(nd != 0 || G == maps);
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, nd, maps);
    cfg.dtype = dt;
    cfg.layout = lay;
    cfg.seed = 1234;
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));

    float *x = tu_floats(n), *dy = tu_floats(n), *got = tu_floats(n), *scale = tu_floats(G), *bias = tu_floats(G);
    float *rm0 = tu_floats(G), *rv0 = tu_floats(G), *fm = tu_floats(G), *fi = tu_floats(G), *gs = tu_floats(G),
          *gb = tu_floats(G);
    double *ref = tu_doubles(n), *rmean = tu_doubles(G), *rinv = tu_doubles(G), *rrm = tu_doubles(G),
           *rrv = tu_doubles(G), *rds = tu_doubles(G), *rdb = tu_doubles(G);
    tu_fill_normal(x, n, -1.0, 3.0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    for (size_t i = 0; i < n; i++)
        x[i] = tu_round_storage(dt, x[i]), dy[i] = tu_round_storage(dt, dy[i]);
    tu_fill_normal(bias, G, 0.0, 1.0);
    TU_OK(clnorm_batchnorm_write(bn, CLNORM_BIAS, bias, G));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE, scale, G));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, rm0, G));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, rv0, G));

    dten tx = dten_make(&s, dt, lay, 1, x), ty = dten_make(&s, dt, lay, 3, NULL), tdy = dten_make(&s, dt, lay, 0, dy),
         tdx = dten_make(&s, dt, lay, 5, NULL);
    /* training forward: factor 1 (first batch) */
    TU_OK(clnorm_batchnorm_forward(bn, 1, &tx.t, &ty.t));
    tu_finish();
    ref_bn_forward_training(mode, s.ndim, s.shape, x, scale, bias, 1.0, cfg.epsilon, rm0, rv0, ref, rmean, NULL, rinv,
                            rrm, rrv);
    TU_TRUE(dten_read(&ty, got, "layer train y"));
    TU_TRUE(tu_compare_storage("layer train y", got, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SAVE_MEAN, fm, G));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SAVE_INVSTD, fi, G));
    TU_TRUE(tu_compare("layer save_mean", fm, rmean, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare("layer save_invstd", fi, rinv, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, gs, G));
    TU_TRUE(tu_compare("layer running_mean", gs, rrm, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, gb, G));
    TU_TRUE(tu_compare("layer running_var", gb, rrv, G, TU_STAT_ATOL, TU_STAT_RTOL));

    /* backward: grads = 1 * g + 0 * acc */
    TU_OK(clnorm_batchnorm_backward(bn, &tx.t, &tdy.t, &tdx.t, 1.0f, 0.0f));
    tu_finish();
    ref_bn_backward(mode, s.ndim, s.shape, x, dy, scale, cfg.epsilon, fm, fi, ref, rds, rdb);
    TU_TRUE(dten_read(&tdx, got, "layer dx"));
    TU_TRUE(tu_compare_storage("layer dx", got, ref, n, dt, TU_BWD_ATOL, TU_BWD_RTOL));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, gs, G));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_BIAS_GRAD, gb, G));
    TU_TRUE(tu_compare("layer scale grad", gs, rds, G, TU_BWD_ATOL, TU_BWD_RTOL));
    TU_TRUE(tu_compare("layer bias grad", gb, rdb, G, TU_BWD_ATOL, TU_BWD_RTOL));

    /* inference with the running statistics it holds */
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, rm0, G));
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_VAR, rv0, G));
    TU_OK(clnorm_batchnorm_forward(bn, 0, &tx.t, &ty.t));
    tu_finish();
    ref_bn_forward_inference(mode, s.ndim, s.shape, x, scale, bias, rm0, rv0, cfg.epsilon, ref);
    TU_TRUE(dten_read(&ty, got, "layer inference y"));
    TU_TRUE(tu_compare_storage("layer inference y", got, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));

    /* a tensor of another dtype or layout than the layer's is refused, and writes nothing */
    dten other = dten_make(&s, dt == CLNORM_F16 ? CLNORM_BF16 : CLNORM_F16, lay, 0, NULL);
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_forward(bn, 1, &tx.t, &other.t));
    clnorm_tensor flipped = ty.t;
    flipped.layout = lay == CLNORM_NCHW ? CLNORM_NHWC : CLNORM_NCHW;
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_forward(bn, 0, &tx.t, &flipped));
    tu_finish();
    TU_TRUE(dten_read(&other, NULL, "layer: refused output"));
    float *again = tu_floats(n);
    TU_TRUE(dten_read(&ty, again, "layer: refused output (flipped layout)"));
    TU_TRUE(memcmp(again, got, n * 4) == 0);
    free(again);
    TU_TRUE(clnorm_batchnorm_batches(bn) == 1);

    dten_free(&tx), dten_free(&ty), dten_free(&tdy), dten_free(&tdx), dten_free(&other);
    clnorm_batchnorm_destroy(bn);
    free(x), free(dy), free(got), free(scale), free(bias), free(rm0), free(rv0), free(fm), free(fi), free(gs),
        free(gb);
    free(ref), free(rmean), free(rinv), free(rrm), free(rrv), free(rds), free(rdb);
}

static void test_layer_dtypes_layouts(void **state) {
    (void)state;
    for (int nd = 0; nd <= 3; nd++)
        for (int d = 0; d < 3; d++)
            for (int l = 0; l < 2; l++)
                run_layer(nd, (clnorm_dtype)d, l ? CLNORM_NHWC : CLNORM_NCHW);
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_conversions),   cmocka_unit_test(test_store_rounding), cmocka_unit_test(test_store_rounding_rows),
        cmocka_unit_test(test_f32_spatial),        cmocka_unit_test(test_f32_per_activation),
        cmocka_unit_test(test_f16_spatial),        cmocka_unit_test(test_f16_per_activation),
        cmocka_unit_test(test_bf16_spatial),       cmocka_unit_test(test_bf16_per_activation),
        cmocka_unit_test(test_layer_dtypes_layouts),
    };
    return cmocka_run_group_tests_name("dtypes", tests, tu_group_setup, tu_group_teardown);
}
