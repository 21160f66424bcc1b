/*
 * Fused BatchNorm + add + activation (issue 12): clnorm_bn_forward_training_ex, clnorm_bn_forward_inference_ex,
 * clnorm_bn_backward_ex and the layer's forward_ex / backward_ex, against the double reference (ref_bn.c):
 *   y = act(xhat * scale + bias + z);  g = dy * (y > 0) for RELU (the stored y decides);  dz = g;
 *   dx, dscale, dbias the plain backward's with g.
 * The matrix: NONE / RELU x z or not x SPATIAL / PER_ACTIVATION x NCHW / NHWC x F32 / F16 / BF16, on shapes that
 * take every kernel path on a 2-unit POCL device under both strategies (rows fused one work-group per map, rows
 * split, columns in one launch, split columns), with the optional arguments drawn per case. NONE without z is
 * compared bit for bit with the plain calls. Then the ReLU boundary (exactly 0, -0, tiny values F16 rounds to 0),
 * residuals that flip signs, constant groups, NaN confined to its group, in-place views and the refusals (nothing
 * written).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_bn.h"
#include "test_util.h"

#define GUARD 32
#define EPS 1e-5
#define FACTOR 0.3

static const clnorm_dtype dtypes[] = {CLNORM_F32, CLNORM_F16, CLNORM_BF16};

/* ---- device tensors of any dtype / layout at an element offset, 0xFF (NaN) around and in them ------------- */
typedef struct {
    cl_mem buf;
    size_t off, n, bytes, B, C, S;
    clnorm_dtype dt;
    clnorm_layout lay;
    clnorm_tensor t;
} dten;

static void bcs(int ndim, const size_t *shape, size_t *B, size_t *C, size_t *S) {
    *B = shape[0];
    *C = shape[1];
    *S = 1;
    for (int i = 2; i < ndim; i++)
        *S *= shape[i];
}

/* nchw NULL: left 0xFF */
static dten dmake(int ndim, const size_t *shape, clnorm_dtype dt, clnorm_layout lay, size_t off_elems,
                  const float *nchw) {
    dten d;
    memset(&d, 0, sizeof d);
    d.dt = dt;
    d.lay = lay;
    d.n = tu_numel(ndim, shape);
    bcs(ndim, shape, &d.B, &d.C, &d.S);
    d.off = off_elems * tu_esize(dt);
    d.bytes = d.off + d.n * tu_esize(dt) + GUARD;
    d.buf = tu_buffer(d.bytes);
    unsigned char *raw = tu_malloc(d.bytes);
    memset(raw, 0xFF, d.bytes);
    if (nchw) {
        float *tmp = tu_floats(d.n);
        if (lay == CLNORM_NHWC)
            tu_nchw_to_nhwc(nchw, tmp, d.B, d.C, d.S);
        else
            memcpy(tmp, nchw, d.n * 4);
        tu_encode(dt, tmp, raw + d.off, d.n);
        free(tmp);
    }
    tu_write(d.buf, 0, raw, d.bytes);
    free(raw);
    d.t = tu_view(d.buf, d.off, ndim, shape);
    d.t.dtype = dt;
    d.t.layout = lay;
    return d;
}

/* the view's values in NCHW order (nchw may be NULL); fails the test if a byte outside the view was written */
static void dread(const dten *d, float *nchw, const char *what) {
    unsigned char *raw = tu_malloc(d->bytes);
    tu_read(d->buf, 0, raw, d->bytes);
    size_t end = d->off + d->n * tu_esize(d->dt);
    for (size_t i = 0; i < d->bytes; i++)
        if ((i < d->off || i >= end) && raw[i] != 0xFF)
            tu_fail_at(__FILE__, __LINE__, "%s: byte %zu outside the view [%zu, %zu) was written (%s)", what, i, d->off,
                       end, tu_case_label());
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
}

/* raw bytes of the whole buffer (for bit comparisons and "nothing written") */
static unsigned char *draw(const dten *d) {
    unsigned char *raw = tu_malloc(d->bytes);
    tu_read(d->buf, 0, raw, d->bytes);
    return raw;
}

static void dfree(dten *d) {
    tu_release(&d->buf);
}

/* 1 if no byte of the buffer was written (all still 0xFF) */
static int untouched(const dten *d, const char *what) {
    unsigned char *raw = draw(d);
    size_t i = 0;
    while (i < d->bytes && raw[i] == 0xFF)
        i++;
    free(raw);
    if (i == d->bytes)
        return 1;
    print_error("%s: byte %zu was written (%s)\n", what, i, tu_case_label());
    return 0;
}

static void round_host(clnorm_dtype dt, float *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        a[i] = tu_round_storage(dt, a[i]);
}

static cl_mem pbuf(const float *host, size_t g) {
    if (host)
        return tu_buffer_from(host, g);
    cl_mem b = tu_buffer(g * 4);
    tu_poison(b, 0, g * 4);
    return b;
}

static float *pread(cl_mem b, size_t g) {
    float *h = tu_floats(g);
    tu_read(b, 0, h, g * 4);
    return h;
}

static int bits_same(const void *a, const void *b, size_t bytes, const char *what) {
    if (memcmp(a, b, bytes) == 0)
        return 1;
    print_error("%s: not bit-identical (%s)\n", what, tu_case_label());
    return 0;
}

static const char *act_name(clnorm_activation a) {
    return a == CLNORM_ACTIVATION_RELU ? "RELU" : "NONE";
}

/* ---- the matrix ------------------------------------------------------------------------------------------ */
typedef struct {
    clnorm_bn_mode mode;
    clnorm_layout lay;
    int ndim;
    size_t shape[5];
    const char *path; /* the kernel path it is there for (documentation) */
    int f32_f16_only; /* the big shape: F32 and F16 only */
} fcase;

/* One case: training forward, backward with the saved statistics (dx, dz, grads), backward recomputing them (a
 * drawn subset of the outputs), inference; and for NONE without z the plain calls bit for bit. */
static void run_case(const fcase *fc, clnorm_dtype dt, clnorm_activation act, int with_z) {
    tu_case("%s %s %s %s %s z=%d [%s]", fc->mode == CLNORM_BN_SPATIAL ? "SPATIAL" : "PER_ACTIVATION",
            fc->lay == CLNORM_NCHW ? "NCHW" : "NHWC", tu_shape_str(fc->ndim, fc->shape), tu_dtype_name(dt),
            act_name(act), with_z, fc->path);
    const int nd = fc->ndim;
    const size_t *sh = fc->shape;
    size_t n = tu_numel(nd, sh), G = ref_groups(fc->mode, nd, sh);
    int affine = tu_rand_index(4) != 0, running = tu_rand_index(2) != 0, save = tu_rand_index(4) != 0;
    /* element offsets: every other call all even (x, z, y, dy, dx 4-byte aligned alike: the BF16 rows passes take
     * their 32-value path), else mixed (dy odd next to an even dx: the 16-value and scalar paths) */
    static unsigned calls;
    int even = (calls++ & 1) == 0;
    size_t xo = even ? 2 * tu_rand_index(2) : tu_rand_index(3), zo = even ? 2 * tu_rand_index(2) : tu_rand_index(3),
           yo = even ? 2 * tu_rand_index(2) : tu_rand_index(3), dyo = even ? 2 * tu_rand_index(2) : 1;

    float *x = tu_floats(n), *z = tu_floats(n), *dy = tu_floats(n);
    tu_fill_normal(x, n, 0.5, 2.0);
    tu_fill_normal(z, n, 0.0, 1.5);
    tu_fill_normal(dy, n, 0.0, 1.0);
    round_host(dt, x, n);
    round_host(dt, z, n);
    round_host(dt, dy, n);
    float *scale = tu_floats(G), *bias = tu_floats(G), *rm = tu_floats(G), *rv = tu_floats(G);
    tu_fill_normal(scale, G, 1.0, 0.5);
    tu_fill_normal(bias, G, 0.0, 0.5);
    tu_fill_normal(rm, G, 0.0, 1.0);
    tu_fill_uniform(rv, G, 0.5, 2.0);

    dten X = dmake(nd, sh, dt, fc->lay, xo, x), Z = dmake(nd, sh, dt, fc->lay, zo, z);
    dten Y = dmake(nd, sh, dt, fc->lay, yo, NULL), DY = dmake(nd, sh, dt, fc->lay, dyo, dy);
    dten DX = dmake(nd, sh, dt, fc->lay, 2, NULL), DZ = dmake(nd, sh, dt, fc->lay, 0, NULL);
    cl_mem bs = affine ? pbuf(scale, G) : NULL, bb = affine ? pbuf(bias, G) : NULL;
    cl_mem brm = running ? pbuf(rm, G) : NULL, brv = running ? pbuf(rv, G) : NULL;
    cl_mem bsm = save ? pbuf(NULL, G) : NULL, bsi = save ? pbuf(NULL, G) : NULL;
    const clnorm_tensor *zt = with_z ? &Z.t : NULL;
    const float *zh = with_z ? z : NULL;

    /* training forward */
    TU_OK(
        clnorm_bn_forward_training_ex(tu_ctx, fc->mode, &X.t, zt, &Y.t, bs, bb, FACTOR, EPS, brm, brv, bsm, bsi, act));
    double *ybn = tu_doubles(n), *ref = tu_doubles(n), *mean = tu_doubles(G), *var = tu_doubles(G),
           *inv = tu_doubles(G), *rmo = tu_doubles(G), *rvo = tu_doubles(G);
    ref_bn_forward_training(fc->mode, nd, sh, x, affine ? scale : NULL, affine ? bias : NULL, FACTOR, EPS, rm, rv, ybn,
                            mean, var, inv, rmo, rvo);
    ref_bn_activate(n, ybn, zh, act, ref);
    float *y = tu_floats(n);
    dread(&Y, y, "y");
    TU_TRUE(tu_compare_storage("training y", y, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));
    float *sm = NULL, *si = NULL;
    if (save) {
        sm = pread(bsm, G);
        si = pread(bsi, G);
        TU_TRUE(tu_compare("save_mean", sm, mean, G, TU_STAT_ATOL, TU_STAT_RTOL));
        TU_TRUE(tu_compare("save_invstd", si, inv, G, TU_STAT_ATOL, 1e-4));
    }
    if (running) {
        float *h = pread(brm, G), *h2 = pread(brv, G);
        TU_TRUE(tu_compare("running_mean", h, rmo, G, TU_STAT_ATOL, TU_STAT_RTOL));
        TU_TRUE(tu_compare("running_var", h2, rvo, G, TU_STAT_ATOL, 1e-4));
        free(h);
        free(h2);
    }

    /* backward from the stored y (the mask the device sees) */
    float *g = tu_floats(n), *got = tu_floats(n);
    double *dxr = tu_doubles(n), *dsr = tu_doubles(G), *dbr = tu_doubles(G);
    ref_bn_act_grad(n, dy, y, act, g);
    cl_mem bds = pbuf(NULL, G), bdb = pbuf(NULL, G);
    if (save) {
        TU_OK(clnorm_bn_backward_ex(tu_ctx, fc->mode, &X.t, &Y.t, &DY.t, &DX.t, with_z ? &DZ.t : NULL, bs, bb, bds, bdb,
                                    EPS, bsm, bsi, act));
        ref_bn_backward(fc->mode, nd, sh, x, g, affine ? scale : NULL, EPS, sm, si, dxr, dsr, dbr);
        dread(&DX, got, "dx");
        TU_TRUE(tu_compare_storage("dx (saved)", got, dxr, n, dt, TU_BWD_ATOL, TU_BWD_RTOL));
        if (with_z) {
            dread(&DZ, got, "dz");
            TU_TRUE(tu_compare_ff("dz (saved)", got, g, n, 0.0, 0.0));
        }
        float *ds = pread(bds, G), *db = pread(bdb, G);
        TU_TRUE(tu_compare("dscale (saved)", ds, dsr, G, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_TRUE(tu_compare("dbias (saved)", db, dbr, G, TU_BWD_ATOL, TU_BWD_RTOL));
        free(ds);
        free(db);
    }
    /* recomputed statistics, a drawn subset of the outputs (dz alone included) */
    int want_dx = tu_rand_index(2), want_dz = tu_rand_index(2), want_g = tu_rand_index(2);
    if (!want_dx && !want_dz && !want_g)
        want_dz = 1;
    dten DX2 = dmake(nd, sh, dt, fc->lay, 1, NULL), DZ2 = dmake(nd, sh, dt, fc->lay, 2, NULL);
    cl_mem bds2 = want_g ? pbuf(NULL, G) : NULL, bdb2 = want_g ? pbuf(NULL, G) : NULL;
    TU_OK(clnorm_bn_backward_ex(tu_ctx, fc->mode, &X.t, &Y.t, &DY.t, want_dx ? &DX2.t : NULL, want_dz ? &DZ2.t : NULL,
                                bs, NULL, bds2, bdb2, EPS, NULL, NULL, act));
    ref_bn_backward(fc->mode, nd, sh, x, g, affine ? scale : NULL, EPS, NULL, NULL, dxr, dsr, dbr);
    dread(&DX2, want_dx ? got : NULL, "dx (recomputed)");
    if (want_dx)
        TU_TRUE(tu_compare_storage("dx (recomputed)", got, dxr, n, dt, TU_BWD_ATOL, TU_BWD_RTOL));
    else
        TU_TRUE(untouched(&DX2, "dx not asked for"));
    dread(&DZ2, want_dz ? got : NULL, "dz (recomputed)");
    if (want_dz)
        TU_TRUE(tu_compare_ff("dz (recomputed)", got, g, n, 0.0, 0.0));
    else
        TU_TRUE(untouched(&DZ2, "dz not asked for"));
    if (want_g) {
        float *ds = pread(bds2, G), *db = pread(bdb2, G);
        TU_TRUE(tu_compare("dscale (recomputed)", ds, dsr, G, TU_BWD_ATOL, TU_BWD_RTOL));
        TU_TRUE(tu_compare("dbias (recomputed)", db, dbr, G, TU_BWD_ATOL, TU_BWD_RTOL));
        free(ds);
        free(db);
    }

    /* inference with the (float) running statistics of the case */
    cl_mem bm = pbuf(rm, G), bv = pbuf(rv, G);
    dten Y2 = dmake(nd, sh, dt, fc->lay, 1, NULL);
    TU_OK(clnorm_bn_forward_inference_ex(tu_ctx, fc->mode, &X.t, zt, &Y2.t, bs, bb, bm, bv, EPS, act));
    ref_bn_forward_inference(fc->mode, nd, sh, x, affine ? scale : NULL, affine ? bias : NULL, rm, rv, EPS, ybn);
    ref_bn_activate(n, ybn, zh, act, ref);
    dread(&Y2, got, "inference y");
    TU_TRUE(tu_compare_storage("inference y", got, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));

    /* NONE without z: the plain calls, bit for bit (fresh outputs, same inputs) */
    if (act == CLNORM_ACTIVATION_NONE && !with_z) {
        dten P = dmake(nd, sh, dt, fc->lay, yo, NULL), PX = dmake(nd, sh, dt, fc->lay, 2, NULL);
        cl_mem prm = running ? pbuf(rm, G) : NULL, prv = running ? pbuf(rv, G) : NULL;
        cl_mem psm = save ? pbuf(NULL, G) : NULL, psi = save ? pbuf(NULL, G) : NULL;
        cl_mem pds = pbuf(NULL, G), pdb = pbuf(NULL, G);
        TU_OK(clnorm_bn_forward_training(tu_ctx, fc->mode, &X.t, &P.t, bs, bb, FACTOR, EPS, prm, prv, psm, psi));
        unsigned char *a = draw(&Y), *b = draw(&P);
        TU_TRUE(bits_same(a, b, Y.bytes, "training y: plain vs _ex"));
        free(a);
        free(b);
        if (save) {
            float *h = pread(psm, G), *h2 = pread(psi, G);
            TU_TRUE(bits_same(h, sm, G * 4, "save_mean: plain vs _ex"));
            TU_TRUE(bits_same(h2, si, G * 4, "save_invstd: plain vs _ex"));
            free(h);
            free(h2);
            TU_OK(clnorm_bn_backward(tu_ctx, fc->mode, &X.t, &DY.t, &PX.t, bs, pds, pdb, EPS, psm, psi));
            a = draw(&DX);
            b = draw(&PX);
            TU_TRUE(bits_same(a, b, DX.bytes, "dx: plain vs _ex"));
            free(a);
            free(b);
            float *e1 = pread(bds, G), *e2 = pread(pds, G);
            TU_TRUE(bits_same(e1, e2, G * 4, "dscale: plain vs _ex"));
            free(e1);
            free(e2);
        }
        TU_OK(clnorm_bn_forward_inference(tu_ctx, fc->mode, &X.t, &P.t, bs, bb, bm, bv, EPS));
        a = draw(&Y2);
        b = draw(&P);
        TU_TRUE(bits_same(a + Y2.off, b + P.off, n * tu_esize(dt), "inference y: plain vs _ex"));
        free(a);
        free(b);
        dfree(&P);
        dfree(&PX);
        tu_release(&prm);
        tu_release(&prv);
        tu_release(&psm);
        tu_release(&psi);
        tu_release(&pds);
        tu_release(&pdb);
    }

    dfree(&X);
    dfree(&Z);
    dfree(&Y);
    dfree(&DY);
    dfree(&DX);
    dfree(&DZ);
    dfree(&DX2);
    dfree(&DZ2);
    dfree(&Y2);
    cl_mem *ms[] = {&bs, &bb, &brm, &brv, &bsm, &bsi, &bds, &bdb, &bds2, &bdb2, &bm, &bv};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        tu_release(ms[i]);
    free(x);
    free(z);
    free(dy);
    free(scale);
    free(bias);
    free(rm);
    free(rv);
    free(ybn);
    free(ref);
    free(mean);
    free(var);
    free(inv);
    free(rmo);
    free(rvo);
    free(y);
    free(sm);
    free(si);
    free(g);
    free(got);
    free(dxr);
    free(dsr);
    free(dbr);
}

static void run_matrix(const fcase *cases, size_t nc) {
    for (size_t c = 0; c < nc; c++)
        for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
            if (cases[c].f32_f16_only && dtypes[d] == CLNORM_BF16)
                continue;
            for (int a = 0; a < 2; a++)
                for (int z = 0; z < 2; z++)
                    run_case(&cases[c], dtypes[d], a ? CLNORM_ACTIVATION_RELU : CLNORM_ACTIVATION_NONE, z);
        }
}

/* With 2 compute units: rows fused (CPU: maps a multiple of the units, more than 4 per unit in pipelined runs of
 * maps per work-item, rows over PIPE_PIECE values walked in pieces; GPU: B*S <= 65536), rows split (CPU: 3 maps;
 * GPU: B*S > 65536), columns in one launch (few rows), split columns (>= 2048 rows, few columns). */
static void test_rows(void **state) {
    (void)state;
    static const fcase cases[] = {
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {3, 4, 5, 7}, "rows fused", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {3, 21, 5, 7}, "rows fused, cpu: runs of 2 or 3 maps (pipelined without z)", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {2, 18, 33, 40}, "rows fused, cpu: rows of 2 pieces (pipelined without z)", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {3, 3, 5, 7}, "rows split on cpu, fused on gpu", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 5, {2, 3, 3, 4, 5}, "rows, 5-d", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {2, 3, 130, 260}, "rows split on both", 1},
    };
    run_matrix(cases, sizeof cases / sizeof cases[0]);
}

static void test_columns(void **state) {
    (void)state;
    static const fcase cases[] = {
        {CLNORM_BN_SPATIAL, CLNORM_NHWC, 4, {3, 4, 5, 7}, "columns (NHWC)", 0},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW, 4, {3, 4, 5, 7}, "columns (per-activation)", 0},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_NHWC, 4, {3, 4, 5, 7}, "columns (per-activation NHWC, permuted)", 0},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW, 2, {16, 300}, "columns, 16-wide tiles and tails", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 2, {5, 37}, "columns (S == 1)", 0},
    };
    run_matrix(cases, sizeof cases / sizeof cases[0]);
}

static void test_split_columns(void **state) {
    (void)state;
    static const fcase cases[] = {
        {CLNORM_BN_SPATIAL, CLNORM_NHWC, 4, {8, 3, 16, 16}, "split columns (NHWC)", 0},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW, 2, {2048, 5}, "split columns (tall per-activation)", 0},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_NHWC, 3, {2050, 2, 3}, "split columns (per-activation NHWC)", 0},
    };
    run_matrix(cases, sizeof cases / sizeof cases[0]);
}

/* ---- the ReLU boundary -------------------------------------------------------------------------------- */

/* Inference with x == mean where bias is 0 gives a pre-activation of exactly 0: y = 0 and no gradient there;
 * a tiny positive bias (1e-8) survives in F32 (gradient passes) but F16 rounds y to 0 (no gradient); BF16 keeps
 * it (8 exponent bits). Negative zero in y masks as well. */
static void test_relu_boundary(void **state) {
    (void)state;
    const size_t sh[4] = {2, 3, 4, 5};
    size_t n = tu_numel(4, sh), G = 3, S = 20;
    for (size_t d = 0; d < 3; d++)
        for (int tiny = 0; tiny < 2; tiny++) {
            clnorm_dtype dt = dtypes[d];
            tu_case("relu boundary %s bias %s", tu_dtype_name(dt), tiny ? "1e-8" : "0");
            float *x = tu_floats(n), *dy = tu_floats(n), *y = tu_floats(n), *g = tu_floats(n), *got = tu_floats(n);
            float mean[3] = {0.5f, -1.25f, 2.0f}, var[3] = {1.0f, 4.0f, 0.25f}, scale[3] = {1.0f, 2.0f, 0.5f};
            float bias[3];
            for (size_t c = 0; c < G; c++)
                bias[c] = tiny ? 1e-8f : 0.0f;
            tu_fill_normal(x, n, 0.0, 2.0);
            tu_fill_normal(dy, n, 0.0, 1.0);
            for (size_t i = 0; i < n; i++) /* every third element exactly at its map's mean */
                if (i % 3 == 0)
                    x[i] = mean[(i / S) % G];
            round_host(dt, x, n);
            round_host(dt, dy, n);
            dten X = dmake(4, sh, dt, CLNORM_NCHW, 0, x), Y = dmake(4, sh, dt, CLNORM_NCHW, 1, NULL);
            dten DY = dmake(4, sh, dt, CLNORM_NCHW, 0, dy), DZ = dmake(4, sh, dt, CLNORM_NCHW, 2, NULL);
            cl_mem bs = pbuf(scale, G), bb = pbuf(bias, G), bm = pbuf(mean, G), bv = pbuf(var, G);
            TU_OK(clnorm_bn_forward_inference_ex(tu_ctx, CLNORM_BN_SPATIAL, &X.t, NULL, &Y.t, bs, bb, bm, bv, EPS,
                                                 CLNORM_ACTIVATION_RELU));
            dread(&Y, y, "y");
            for (size_t i = 0; i < n; i += 3) {
                float want = tiny ? tu_round_storage(dt, 1e-8f) : 0.0f;
                if (y[i] != want)
                    tu_fail_at(__FILE__, __LINE__, "y[%zu] = %g, expected %g (x at the mean)", i, (double)y[i],
                               (double)want);
            }
            /* backward from the stored y, with the statistics recomputed from x (any: only dz is checked here) */
            TU_OK(clnorm_bn_backward_ex(tu_ctx, CLNORM_BN_SPATIAL, &X.t, &Y.t, &DY.t, NULL, &DZ.t, bs, bb, NULL, NULL,
                                        EPS, NULL, NULL, CLNORM_ACTIVATION_RELU));
            dread(&DZ, got, "dz");
            ref_bn_act_grad(n, dy, y, CLNORM_ACTIVATION_RELU, g);
            TU_TRUE(tu_compare_ff("dz", got, g, n, 0.0, 0.0));
            for (size_t i = 0; i < n; i += 3) {
                int pass = tiny && dt != CLNORM_F16; /* F16 rounds 1e-8 to 0 */
                if (got[i] != (pass ? dy[i] : 0.0f))
                    tu_fail_at(__FILE__, __LINE__, "dz[%zu] = %g at pre-activation %s (%s): expected %g", i,
                               (double)got[i], tiny ? "1e-8" : "0", tu_dtype_name(dt), (double)(pass ? dy[i] : 0.0f));
            }
            /* negative zero and NaN in y mask too, whatever dy holds (also NaN, Inf) */
            float *yy = tu_floats(n);
            for (size_t i = 0; i < n; i++)
                yy[i] = i % 4 == 0 ? -0.0f : i % 4 == 1 ? NAN : i % 4 == 2 ? 1.0f : -1.0f;
            float *dd = tu_floats(n);
            memcpy(dd, dy, n * 4);
            dd[0] = NAN;
            dd[1] = INFINITY;
            dten Y3 = dmake(4, sh, dt, CLNORM_NCHW, 0, yy), DY3 = dmake(4, sh, dt, CLNORM_NCHW, 1, dd);
            TU_OK(clnorm_bn_backward_ex(tu_ctx, CLNORM_BN_SPATIAL, &X.t, &Y3.t, &DY3.t, NULL, &DZ.t, NULL, NULL, NULL,
                                        NULL, EPS, NULL, NULL, CLNORM_ACTIVATION_RELU));
            dread(&DZ, got, "dz");
            for (size_t i = 0; i < n; i++) {
                float want = i % 4 == 2 ? dd[i] : 0.0f;
                if (memcmp(&got[i], &want, 4) != 0 && !(isnan(got[i]) && isnan(want)))
                    tu_fail_at(__FILE__, __LINE__, "dz[%zu] = %g for y %g: expected %g", i, (double)got[i],
                               (double)yy[i], (double)want);
            }
            dfree(&X);
            dfree(&Y);
            dfree(&DY);
            dfree(&DZ);
            dfree(&Y3);
            dfree(&DY3);
            tu_release(&bs);
            tu_release(&bb);
            tu_release(&bm);
            tu_release(&bv);
            free(x);
            free(dy);
            free(y);
            free(g);
            free(got);
            free(yy);
            free(dd);
        }
}

/* A residual that flips the sign of every BN output: z = -2 * BN(x) in the reference (rounded to storage), so
 * y = relu(-BN(x)) approximately and the mask is the complement of BN's own signs. Training forward + backward. */
static void test_residual_flips_signs(void **state) {
    (void)state;
    const size_t sh[4] = {4, 3, 6, 5};
    size_t n = tu_numel(4, sh), G = 3;
    for (size_t d = 0; d < 3; d++)
        for (int lay = 0; lay < 2; lay++) {
            clnorm_dtype dt = dtypes[d];
            clnorm_layout L = lay ? CLNORM_NHWC : CLNORM_NCHW;
            tu_case("residual flips signs %s %s", tu_dtype_name(dt), lay ? "NHWC" : "NCHW");
            float *x = tu_floats(n), *z = tu_floats(n), *dy = tu_floats(n), *y = tu_floats(n), *g = tu_floats(n);
            float *got = tu_floats(n);
            double *ybn = tu_doubles(n), *ref = tu_doubles(n), *dxr = tu_doubles(n);
            tu_fill_normal(x, n, 1.0, 3.0);
            tu_fill_normal(dy, n, 0.0, 1.0);
            round_host(dt, x, n);
            round_host(dt, dy, n);
            ref_bn_forward_training(CLNORM_BN_SPATIAL, 4, sh, x, NULL, NULL, 1.0, EPS, NULL, NULL, ybn, NULL, NULL,
                                    NULL, NULL, NULL);
            size_t flipped = 0;
            for (size_t i = 0; i < n; i++)
                z[i] = tu_round_storage(dt, (float)(-2.0 * ybn[i]));
            dten X = dmake(4, sh, dt, L, 1, x), Z = dmake(4, sh, dt, L, 0, z), Y = dmake(4, sh, dt, L, 2, NULL);
            dten DY = dmake(4, sh, dt, L, 0, dy), DX = dmake(4, sh, dt, L, 1, NULL), DZ = dmake(4, sh, dt, L, 0, NULL);
            cl_mem sm = pbuf(NULL, G), si = pbuf(NULL, G);
            TU_OK(clnorm_bn_forward_training_ex(tu_ctx, CLNORM_BN_SPATIAL, &X.t, &Z.t, &Y.t, NULL, NULL, 1.0, EPS, NULL,
                                                NULL, sm, si, CLNORM_ACTIVATION_RELU));
            ref_bn_activate(n, ybn, z, CLNORM_ACTIVATION_RELU, ref);
            dread(&Y, y, "y");
            TU_TRUE(tu_compare_storage("y", y, ref, n, dt, TU_FWD_ATOL, TU_FWD_RTOL));
            for (size_t i = 0; i < n; i++)
                flipped += ybn[i] > 1e-3 && y[i] == 0.0f;
            TU_TRUE(flipped > n / 4);
            TU_OK(clnorm_bn_backward_ex(tu_ctx, CLNORM_BN_SPATIAL, &X.t, &Y.t, &DY.t, &DX.t, &DZ.t, NULL, NULL, NULL,
                                        NULL, EPS, sm, si, CLNORM_ACTIVATION_RELU));
            float *hm = pread(sm, G), *hi = pread(si, G);
            ref_bn_act_grad(n, dy, y, CLNORM_ACTIVATION_RELU, g);
            ref_bn_backward(CLNORM_BN_SPATIAL, 4, sh, x, g, NULL, EPS, hm, hi, dxr, NULL, NULL);
            dread(&DX, got, "dx");
            TU_TRUE(tu_compare_storage("dx", got, dxr, n, dt, TU_BWD_ATOL, TU_BWD_RTOL));
            dread(&DZ, got, "dz");
            TU_TRUE(tu_compare_ff("dz", got, g, n, 0.0, 0.0));
            dfree(&X);
            dfree(&Z);
            dfree(&Y);
            dfree(&DY);
            dfree(&DX);
            dfree(&DZ);
            tu_release(&sm);
            tu_release(&si);
            free(x);
            free(z);
            free(dy);
            free(y);
            free(g);
            free(got);
            free(ybn);
            free(ref);
            free(dxr);
            free(hm);
            free(hi);
        }
}

/* A constant group gives xhat 0: y = relu(bias + z) within 1e-4, and a finite backward; NaN in one group stays in
 * that group (forward and backward), every other group matches the reference. */
static void test_constant_and_nan_groups(void **state) {
    (void)state;
    const size_t sh[4] = {3, 4, 5, 6};
    size_t n = tu_numel(4, sh), G = 4, S = 30;
    const struct {
        clnorm_bn_mode mode;
        clnorm_layout lay;
    } v[] = {{CLNORM_BN_SPATIAL, CLNORM_NCHW}, {CLNORM_BN_SPATIAL, CLNORM_NHWC}};
    for (size_t k = 0; k < 2; k++)
        for (size_t d = 0; d < 3; d++) {
            clnorm_dtype dt = dtypes[d];
            tu_case("constant map 1, NaN in map 2: %s %s", tu_dtype_name(dt), v[k].lay ? "NHWC" : "NCHW");
            float *x = tu_floats(n), *z = tu_floats(n), *dy = tu_floats(n), *y = tu_floats(n), *g = tu_floats(n);
            float *got = tu_floats(n), bias[4] = {0.25f, -0.5f, 0.75f, 0.0f};
            double *ref = tu_doubles(n), *ybn = tu_doubles(n), *dxr = tu_doubles(n);
            tu_fill_normal(x, n, 0.0, 1.0);
            tu_fill_normal(z, n, 0.0, 1.0);
            tu_fill_normal(dy, n, 0.0, 1.0);
            for (size_t i = 0; i < n; i++)
                if ((i / S) % G == 1)
                    x[i] = 3.0f;
            x[2 * S + 7] = NAN; /* batch 0, map 2 */
            round_host(dt, x, n);
            round_host(dt, z, n);
            round_host(dt, dy, n);
            dten X = dmake(4, sh, dt, v[k].lay, 0, x), Z = dmake(4, sh, dt, v[k].lay, 1, z);
            dten Y = dmake(4, sh, dt, v[k].lay, 0, NULL), DY = dmake(4, sh, dt, v[k].lay, 1, dy);
            dten DX = dmake(4, sh, dt, v[k].lay, 0, NULL), DZ = dmake(4, sh, dt, v[k].lay, 1, NULL);
            float scale[4] = {1.0f, 1.5f, 1.0f, 0.5f};
            cl_mem bs = pbuf(scale, G), bb = pbuf(bias, G), sm = pbuf(NULL, G), si = pbuf(NULL, G);
            TU_OK(clnorm_bn_forward_training_ex(tu_ctx, v[k].mode, &X.t, &Z.t, &Y.t, bs, bb, 1.0, EPS, NULL, NULL, sm,
                                                si, CLNORM_ACTIVATION_RELU));
            dread(&Y, y, "y");
            ref_bn_forward_training(v[k].mode, 4, sh, x, scale, bias, 1.0, EPS, NULL, NULL, ybn, NULL, NULL, NULL, NULL,
                                    NULL);
            ref_bn_activate(n, ybn, z, CLNORM_ACTIVATION_RELU, ref);
            TU_OK(clnorm_bn_backward_ex(tu_ctx, v[k].mode, &X.t, &Y.t, &DY.t, &DX.t, &DZ.t, bs, bb, NULL, NULL, EPS, sm,
                                        si, CLNORM_ACTIVATION_RELU));
            float *hm = pread(sm, G), *hi = pread(si, G);
            ref_bn_act_grad(n, dy, y, CLNORM_ACTIVATION_RELU, g);
            ref_bn_backward(v[k].mode, 4, sh, x, g, scale, EPS, hm, hi, dxr, NULL, NULL);
            float *dx = tu_floats(n), *dz = tu_floats(n);
            dread(&DX, dx, "dx");
            dread(&DZ, dz, "dz");
            for (size_t i = 0; i < n; i++) {
                size_t c = (i / S) % G;
                if (c == 2) { /* the NaN map: NaN in y and dx everywhere; dz is still the masked dy (y NaN: 0) */
                    if (!isnan(y[i]) || !isnan(dx[i]) || dz[i] != g[i])
                        tu_fail_at(__FILE__, __LINE__, "NaN map, element %zu: y %g dx %g dz %g", i, (double)y[i],
                                   (double)dx[i], (double)dz[i]);
                    continue;
                }
                double want = c == 1 ? fmax(0.0, (double)bias[1] + (double)z[i]) : ref[i];
                double tol =
                    c == 1 ? 1e-4 + tu_ulp(dt, want) : TU_FWD_ATOL + TU_FWD_RTOL * fabs(want) + tu_ulp(dt, want);
                if (!(fabs((double)y[i] - want) <= tol))
                    tu_fail_at(__FILE__, __LINE__, "map %zu element %zu: y %g, expected %g", c, i, (double)y[i], want);
                double tb = TU_BWD_ATOL + TU_BWD_RTOL * fabs(dxr[i]) + tu_ulp(dt, dxr[i]);
                if (c != 1 && !(fabs((double)dx[i] - dxr[i]) <= tb))
                    tu_fail_at(__FILE__, __LINE__, "map %zu element %zu: dx %g, expected %g", c, i, (double)dx[i],
                               dxr[i]);
                if (c == 1 && !isfinite(dx[i]))
                    tu_fail_at(__FILE__, __LINE__, "constant map: dx[%zu] = %g is not finite", i, (double)dx[i]);
                if (dz[i] != g[i])
                    tu_fail_at(__FILE__, __LINE__, "dz[%zu] = %g, expected %g", i, (double)dz[i], (double)g[i]);
            }
            dfree(&X);
            dfree(&Z);
            dfree(&Y);
            dfree(&DY);
            dfree(&DX);
            dfree(&DZ);
            tu_release(&bs);
            tu_release(&bb);
            tu_release(&sm);
            tu_release(&si);
            free(x);
            free(z);
            free(dy);
            free(y);
            free(g);
            free(got);
            free(ref);
            free(ybn);
            free(dxr);
            free(hm);
            free(hi);
            free(dx);
            free(dz);
        }
}

/* ---- in place ------------------------------------------------------------------------------------------ */

/* y over z (training and inference), y over x (inference), dz over dy (backward): bit for bit the out-of-place
 * results, on a rows path, a columns path and a split-columns path. */
static void test_in_place(void **state) {
    (void)state;
    static const fcase cases[] = {
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {3, 4, 5, 7}, "rows fused", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {3, 21, 5, 7}, "rows fused, pipelined (cpu)", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NCHW, 4, {3, 3, 5, 7}, "rows split (cpu)", 0},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW, 2, {16, 300}, "columns", 0},
        {CLNORM_BN_SPATIAL, CLNORM_NHWC, 4, {8, 3, 16, 16}, "split columns", 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t d = 0; d < 3; d += 1) {
            const fcase *fc = &cases[c];
            clnorm_dtype dt = dtypes[d];
            tu_case("in place %s %s [%s]", tu_shape_str(fc->ndim, fc->shape), tu_dtype_name(dt), fc->path);
            int nd = fc->ndim;
            size_t n = tu_numel(nd, fc->shape), G = ref_groups(fc->mode, nd, fc->shape), es = tu_esize(dt);
            float *x = tu_floats(n), *z = tu_floats(n), *dy = tu_floats(n);
            tu_fill_normal(x, n, 0.0, 1.0);
            tu_fill_normal(z, n, 0.0, 1.0);
            tu_fill_normal(dy, n, 0.0, 1.0);
            float *scale = tu_floats(G), *bias = tu_floats(G), *rv = tu_floats(G);
            tu_fill_normal(scale, G, 1.0, 0.3);
            tu_fill_normal(bias, G, 0.0, 0.3);
            tu_fill_uniform(rv, G, 0.5, 2.0);
            cl_mem bs = pbuf(scale, G), bb = pbuf(bias, G), sm = pbuf(NULL, G), si = pbuf(NULL, G);
            cl_mem bm = pbuf(bias, G), bv = pbuf(rv, G);
            dten X = dmake(nd, fc->shape, dt, fc->lay, 0, x), Z = dmake(nd, fc->shape, dt, fc->lay, 1, z);
            dten Y = dmake(nd, fc->shape, dt, fc->lay, 0, NULL);
            clnorm_activation R = CLNORM_ACTIVATION_RELU;
            /* training: out of place, then over z */
            TU_OK(clnorm_bn_forward_training_ex(tu_ctx, fc->mode, &X.t, &Z.t, &Y.t, bs, bb, 1.0, EPS, NULL, NULL, sm,
                                                si, R));
            unsigned char *ref = draw(&Y), *got;
            TU_OK(clnorm_bn_forward_training_ex(tu_ctx, fc->mode, &X.t, &Z.t, &Z.t, bs, bb, 1.0, EPS, NULL, NULL, NULL,
                                                NULL, R));
            got = draw(&Z);
            TU_TRUE(bits_same(ref + Y.off, got + Z.off, n * es, "training y over z"));
            free(ref);
            free(got);
            /* inference: over z, over x */
            dfree(&Z);
            Z = dmake(nd, fc->shape, dt, fc->lay, 1, z);
            TU_OK(clnorm_bn_forward_inference_ex(tu_ctx, fc->mode, &X.t, &Z.t, &Y.t, bs, bb, bm, bv, EPS, R));
            ref = draw(&Y);
            dten X2 = dmake(nd, fc->shape, dt, fc->lay, 0, x);
            TU_OK(clnorm_bn_forward_inference_ex(tu_ctx, fc->mode, &X2.t, &Z.t, &X2.t, bs, bb, bm, bv, EPS, R));
            got = draw(&X2);
            TU_TRUE(bits_same(ref + Y.off, got + X2.off, n * es, "inference y over x"));
            free(got);
            TU_OK(clnorm_bn_forward_inference_ex(tu_ctx, fc->mode, &X.t, &Z.t, &Z.t, bs, bb, bm, bv, EPS, R));
            got = draw(&Z);
            TU_TRUE(bits_same(ref + Y.off, got + Z.off, n * es, "inference y over z"));
            free(got);
            free(ref);
            /* backward with dz over dy (training y again as the mask) */
            TU_OK(clnorm_bn_forward_training_ex(tu_ctx, fc->mode, &X.t, NULL, &Y.t, bs, bb, 1.0, EPS, NULL, NULL, sm,
                                                si, R));
            dten DY = dmake(nd, fc->shape, dt, fc->lay, 1, dy), DX = dmake(nd, fc->shape, dt, fc->lay, 0, NULL);
            dten DZ = dmake(nd, fc->shape, dt, fc->lay, 1, NULL);
            for (int saved = 0; saved < 2; saved++) {
                TU_OK(clnorm_bn_backward_ex(tu_ctx, fc->mode, &X.t, &Y.t, &DY.t, &DX.t, &DZ.t, bs, NULL, NULL, NULL,
                                            EPS, saved ? sm : NULL, saved ? si : NULL, R));
                unsigned char *rdx = draw(&DX), *rdz = draw(&DZ);
                dten DY2 = dmake(nd, fc->shape, dt, fc->lay, 1, dy), DX2 = dmake(nd, fc->shape, dt, fc->lay, 0, NULL);
                TU_OK(clnorm_bn_backward_ex(tu_ctx, fc->mode, &X.t, &Y.t, &DY2.t, &DX2.t, &DY2.t, bs, NULL, NULL, NULL,
                                            EPS, saved ? sm : NULL, saved ? si : NULL, R));
                unsigned char *gdx = draw(&DX2), *gdz = draw(&DY2);
                TU_TRUE(bits_same(rdx, gdx, DX.bytes, "dx with dz over dy"));
                TU_TRUE(bits_same(rdz, gdz, DZ.bytes, "dz over dy"));
                free(rdx);
                free(rdz);
                free(gdx);
                free(gdz);
                dfree(&DY2);
                dfree(&DX2);
            }
            dfree(&DY);
            dfree(&DX);
            dfree(&DZ);
            dfree(&X);
            dfree(&X2);
            dfree(&Z);
            dfree(&Y);
            tu_release(&bs);
            tu_release(&bb);
            tu_release(&sm);
            tu_release(&si);
            tu_release(&bm);
            tu_release(&bv);
            free(x);
            free(z);
            free(dy);
            free(scale);
            free(bias);
            free(rv);
        }
}

/* ---- refusals: a clear status, nothing written ----------------------------------------------------------- */

static void test_refusals(void **state) {
    (void)state;
    tu_case("refusals");
    const size_t sh[4] = {2, 3, 4, 5}, other[4] = {2, 3, 5, 4};
    size_t n = tu_numel(4, sh), G = 3;
    float *x = tu_floats(n);
    tu_fill_normal(x, n, 0.0, 1.0);
    dten X = dmake(4, sh, CLNORM_F32, CLNORM_NCHW, 0, x), Z = dmake(4, sh, CLNORM_F32, CLNORM_NCHW, 0, x);
    dten DY = dmake(4, sh, CLNORM_F32, CLNORM_NCHW, 0, x), Yin = dmake(4, sh, CLNORM_F32, CLNORM_NCHW, 0, x);
    dten Y = dmake(4, sh, CLNORM_F32, CLNORM_NCHW, 0, NULL), DX = dmake(4, sh, CLNORM_F32, CLNORM_NCHW, 0, NULL);
    dten DZ = dmake(4, sh, CLNORM_F32, CLNORM_NCHW, 0, NULL);
    dten Zs = dmake(4, other, CLNORM_F32, CLNORM_NCHW, 0, x), Zh = dmake(4, sh, CLNORM_F16, CLNORM_NCHW, 0, NULL);
    dten Zl = dmake(4, sh, CLNORM_F32, CLNORM_NHWC, 0, x);
    cl_mem sm = pbuf(NULL, G), si = pbuf(NULL, G), ds = pbuf(NULL, G), db = pbuf(NULL, G);
    float ones[3] = {1, 1, 1};
    cl_mem rm = pbuf(ones, G), rv = pbuf(ones, G), bs = pbuf(ones, G), bb = pbuf(ones, G);
    /* a buffer of two tensors back to back, and views into it that overlap by one element */
    cl_mem two = tu_buffer(2 * n * 4 + 64);
    tu_poison(two, 0, 2 * n * 4 + 64);
    clnorm_tensor A = tu_view(two, 0, 4, sh), Bv = tu_view(two, 4, 4, sh);
    tu_write(two, 0, x, n * 4);
    unsigned char *before = tu_malloc(2 * n * 4 + 64);
    tu_read(two, 0, before, 2 * n * 4 + 64);
    const clnorm_bn_mode M = CLNORM_BN_SPATIAL;
    const clnorm_activation R = CLNORM_ACTIVATION_RELU, bad = (clnorm_activation)7;

    /* forward training */
    TU_ERR(CLNORM_ERROR_SHAPE,
           clnorm_bn_forward_training_ex(tu_ctx, M, &X.t, &Zs.t, &Y.t, bs, bb, 0.1, EPS, rm, rv, sm, si, R));
    TU_ERR(CLNORM_ERROR_UNSUPPORTED,
           clnorm_bn_forward_training_ex(tu_ctx, M, &X.t, &Zh.t, &Y.t, bs, bb, 0.1, EPS, rm, rv, sm, si, R));
    TU_ERR(CLNORM_ERROR_UNSUPPORTED,
           clnorm_bn_forward_training_ex(tu_ctx, M, &X.t, &Zl.t, &Y.t, bs, bb, 0.1, EPS, rm, rv, sm, si, R));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_bn_forward_training_ex(tu_ctx, M, &X.t, NULL, &Y.t, bs, bb, 0.1, EPS, rm, rv, sm, si, bad));
    TU_TRUE(strstr(clnorm_last_error(), "activation") != NULL);
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_forward_training_ex(tu_ctx, M, &X.t, &A, &Bv, bs, bb, 0.1, EPS, rm,
                                                                        rv, sm, si, R)); /* y overlaps z */
    /* forward inference */
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_bn_forward_inference_ex(tu_ctx, M, &X.t, &Zs.t, &Y.t, bs, bb, rm, rv, EPS, R));
    TU_ERR(CLNORM_ERROR_UNSUPPORTED,
           clnorm_bn_forward_inference_ex(tu_ctx, M, &X.t, &Zh.t, &Y.t, bs, bb, rm, rv, EPS, R));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_bn_forward_inference_ex(tu_ctx, M, &X.t, NULL, &Y.t, bs, bb, rm, rv, EPS, bad));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_bn_forward_inference_ex(tu_ctx, M, &X.t, &A, &Bv, bs, bb, rm, rv, EPS, R));
    /* backward */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_bn_backward_ex(tu_ctx, M, &X.t, NULL, &DY.t, &DX.t, &DZ.t, bs, bb, ds, db, EPS, NULL, NULL, R));
    TU_TRUE(strstr(clnorm_last_error(), "y is NULL") != NULL);
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &DX.t, &DZ.t, bs, bb, ds, db, EPS, NULL, NULL, bad));
    TU_ERR(CLNORM_ERROR_SHAPE,
           clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Zs.t, &DY.t, &DX.t, &DZ.t, bs, bb, ds, db, EPS, NULL, NULL, R));
    TU_ERR(CLNORM_ERROR_SHAPE,
           clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &DX.t, &Zs.t, bs, bb, ds, db, EPS, NULL, NULL, R));
    TU_ERR(CLNORM_ERROR_UNSUPPORTED,
           clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &DX.t, &Zh.t, bs, bb, ds, db, EPS, NULL, NULL, R));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &Yin.t, &DZ.t, bs, bb,
                                                                ds, db, EPS, NULL, NULL, R)); /* dx over y */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &DX.t, &Yin.t, bs, bb,
                                                                ds, db, EPS, NULL, NULL, R)); /* dz over y */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &DX.t, &X.t, bs, bb, ds,
                                                                db, EPS, NULL, NULL, R)); /* dz over x */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &DX.t, &DX.t, bs, bb,
                                                                ds, db, EPS, NULL, NULL, R)); /* dz over dx */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &A, &DX.t, &Bv, bs, bb, ds, db,
                                                                EPS, NULL, NULL, R)); /* dz partly over dy */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Yin.t, &DY.t, &DX.t, &DZ.t, bs, ds,
                                                                ds, db, EPS, NULL, NULL, R)); /* bias is dscale */
    /* nothing was written */
    TU_TRUE(untouched(&Y, "y"));
    TU_TRUE(untouched(&DX, "dx"));
    TU_TRUE(untouched(&DZ, "dz"));
    TU_TRUE(tu_poison_intact(sm, 0, G * 4, "save_mean"));
    TU_TRUE(tu_poison_intact(si, 0, G * 4, "save_invstd"));
    TU_TRUE(tu_poison_intact(ds, 0, G * 4, "dscale"));
    TU_TRUE(tu_poison_intact(db, 0, G * 4, "dbias"));
    TU_TRUE(tu_bits_equal(rm, 0, ones, G * 4, "running_mean"));
    TU_TRUE(tu_bits_equal(rv, 0, ones, G * 4, "running_var"));
    TU_TRUE(tu_bits_equal(two, 0, before, 2 * n * 4 + 64, "the shared buffer"));

    /* the layer: an unknown activation, RELU backward without y */
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, 3);
    TU_TRUE(cfg.activation == CLNORM_ACTIVATION_NONE);
    clnorm_batchnorm *bn = NULL;
    cfg.activation = bad;
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    TU_TRUE(bn == NULL);
    cfg.activation = R;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    TU_OK(clnorm_batchnorm_forward_ex(bn, 1, &X.t, &Z.t, &Y.t));
    float *g0 = tu_floats(G);
    TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, g0, G));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_batchnorm_backward(bn, &X.t, &DY.t, &DX.t, 1.0f, 0.0f));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_batchnorm_backward_ex(bn, &X.t, NULL, &DY.t, &DX.t, &DZ.t, 1.0f, 0.0f));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward_ex(bn, 1, &X.t, &Zs.t, &Y.t));
    TU_TRUE(untouched(&DX, "dx (layer)"));
    TU_TRUE(untouched(&DZ, "dz (layer)"));
    TU_TRUE(tu_bits_equal(clnorm_batchnorm_buffer(bn, CLNORM_SCALE_GRAD), 0, g0, G * 4, "layer scale grad"));
    TU_TRUE(clnorm_batchnorm_batches(bn) == 1);
    clnorm_batchnorm_destroy(bn);

    free(g0);
    free(before);
    free(x);
    dten *ds_[] = {&X, &Z, &DY, &Yin, &Y, &DX, &DZ, &Zs, &Zh, &Zl};
    for (size_t i = 0; i < sizeof ds_ / sizeof ds_[0]; i++)
        dfree(ds_[i]);
    cl_mem *ms[] = {&sm, &si, &ds, &db, &rm, &rv, &bs, &bb, &two};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        tu_release(ms[i]);
}

/* ---- the layer ------------------------------------------------------------------------------------------ */

/* A RELU layer's forward_ex / backward_ex against the functional _ex calls on the layer's own buffers (bit for
 * bit: the layer adds only the factor schedule and the accumulation), two training steps then inference. */
static void test_layer_ex(void **state) {
    (void)state;
    for (size_t d = 0; d < 3; d++)
        for (int nd = 0; nd <= 2; nd += 2) {
            clnorm_dtype dt = dtypes[d];
            tu_case("layer relu nd=%d %s", nd, tu_dtype_name(dt));
            size_t sh[4] = {4, 3, 5, 6};
            int ndim = nd + 2;
            if (nd == 0)
                sh[1] = 7;
            size_t n = tu_numel(ndim, sh), G = sh[1];
            clnorm_bn_mode M = nd == 0 ? CLNORM_BN_PER_ACTIVATION : CLNORM_BN_SPATIAL;
            clnorm_batchnorm_config cfg;
            clnorm_batchnorm_config_init(&cfg, nd, G);
            cfg.activation = CLNORM_ACTIVATION_RELU;
            cfg.dtype = dt;
            cfg.seed = tu_case_seed();
            clnorm_batchnorm *bn;
            TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
            float *x = tu_floats(n), *z = tu_floats(n), *dy = tu_floats(n), *scale = tu_floats(G);
            float *zero = tu_floats(G), *one = tu_floats(G);
            for (size_t i = 0; i < G; i++) {
                zero[i] = 0.0f;
                one[i] = 1.0f;
            }
            TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE, scale, G));
            cl_mem bs = pbuf(scale, G), bb = pbuf(zero, G), rm = pbuf(zero, G), rv = pbuf(one, G);
            cl_mem sm = pbuf(NULL, G), si = pbuf(NULL, G), ds = pbuf(zero, G), db = pbuf(zero, G);
            cl_mem ds1 = pbuf(NULL, G), db1 = pbuf(NULL, G);
            for (int step = 1; step <= 2; step++) {
                tu_fill_normal(x, n, 0.0, 1.0);
                tu_fill_normal(z, n, 0.0, 1.0);
                tu_fill_normal(dy, n, 0.0, 1.0);
                dten X = dmake(ndim, sh, dt, CLNORM_NCHW, 0, x), Z = dmake(ndim, sh, dt, CLNORM_NCHW, 0, z);
                dten Y = dmake(ndim, sh, dt, CLNORM_NCHW, 0, NULL), DY = dmake(ndim, sh, dt, CLNORM_NCHW, 0, dy);
                dten DX = dmake(ndim, sh, dt, CLNORM_NCHW, 0, NULL), DZ = dmake(ndim, sh, dt, CLNORM_NCHW, 0, NULL);
                dten Y1 = dmake(ndim, sh, dt, CLNORM_NCHW, 0, NULL), DX1 = dmake(ndim, sh, dt, CLNORM_NCHW, 0, NULL);
                dten DZ1 = dmake(ndim, sh, dt, CLNORM_NCHW, 0, NULL);
                TU_OK(clnorm_batchnorm_forward_ex(bn, 1, &X.t, &Z.t, &Y.t));
                TU_OK(clnorm_batchnorm_backward_ex(bn, &X.t, &Y.t, &DY.t, &DX.t, &DZ.t, 0.5f, 1.0f));
                double factor = step == 1 ? 1.0 : 0.5;
                TU_OK(clnorm_bn_forward_training_ex(tu_ctx, M, &X.t, &Z.t, &Y1.t, bs, bb, factor, cfg.epsilon, rm, rv,
                                                    sm, si, CLNORM_ACTIVATION_RELU));
                TU_OK(clnorm_bn_backward_ex(tu_ctx, M, &X.t, &Y1.t, &DY.t, &DX1.t, &DZ1.t, bs, bb, ds1, db1,
                                            cfg.epsilon, sm, si, CLNORM_ACTIVATION_RELU));
                unsigned char *a = draw(&Y), *b = draw(&Y1);
                TU_TRUE(bits_same(a, b, Y.bytes, "layer y"));
                free(a);
                free(b);
                a = draw(&DX);
                b = draw(&DX1);
                TU_TRUE(bits_same(a, b, DX.bytes, "layer dx"));
                free(a);
                free(b);
                a = draw(&DZ);
                b = draw(&DZ1);
                TU_TRUE(bits_same(a, b, DZ.bytes, "layer dz"));
                free(a);
                free(b);
                /* accumulation: grad = 0.5 * g + 1.0 * grad */
                float *g1 = pread(ds1, G), *acc = pread(ds, G), *lay = tu_floats(G);
                double *want = tu_doubles(G);
                for (size_t i = 0; i < G; i++)
                    want[i] = (double)(0.5f * g1[i] + acc[i]);
                TU_OK(clnorm_batchnorm_read(bn, CLNORM_SCALE_GRAD, lay, G));
                TU_TRUE(tu_compare("layer scale grad", lay, want, G, 1e-6, 1e-6));
                tu_write(ds, 0, lay, G * 4);
                free(g1);
                free(acc);
                free(lay);
                free(want);
                float *lrm = tu_floats(G), *frm = pread(rm, G);
                TU_OK(clnorm_batchnorm_read(bn, CLNORM_RUNNING_MEAN, lrm, G));
                TU_TRUE(bits_same(lrm, frm, G * 4, "layer running mean"));
                free(lrm);
                free(frm);
                if (step == 2) { /* inference with a residual, y over z */
                    TU_OK(clnorm_bn_forward_inference_ex(tu_ctx, M, &X.t, &Z.t, &Y1.t, bs, bb, rm, rv, cfg.epsilon,
                                                         CLNORM_ACTIVATION_RELU));
                    TU_OK(clnorm_batchnorm_forward_ex(bn, 0, &X.t, &Z.t, &Z.t));
                    a = draw(&Z);
                    b = draw(&Y1);
                    TU_TRUE(bits_same(a, b, Z.bytes, "layer inference y over z"));
                    free(a);
                    free(b);
                }
                dten *all[] = {&X, &Z, &Y, &DY, &DX, &DZ, &Y1, &DX1, &DZ1};
                for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                    dfree(all[i]);
            }
            clnorm_batchnorm_destroy(bn);
            cl_mem *ms[] = {&bs, &bb, &rm, &rv, &sm, &si, &ds, &db, &ds1, &db1};
            for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
                tu_release(ms[i]);
            free(x);
            free(z);
            free(dy);
            free(scale);
            free(zero);
            free(one);
        }
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_columns),
        cmocka_unit_test(test_split_columns),
        cmocka_unit_test(test_relu_boundary),
        cmocka_unit_test(test_residual_flips_signs),
        cmocka_unit_test(test_constant_and_nan_groups),
        cmocka_unit_test(test_in_place),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_layer_ex),
    };
    return cmocka_run_group_tests_name("fused", tests, tu_group_setup, tu_group_teardown);
}
