/*
 * Split-phase statistics (clnorm_bn_stats, _stats_merge, _stats_merge_host, _forward_training_from_stats,
 * _backward_reduce, _backward_from_sums and the layer's variants) against the double reference of the
 * concatenated batch: both modes, F32 / F16 / BF16, NCHW / NHWC (row and column paths, split slices and row
 * chunks), uneven parts with an empty one, the merge's precision (mean 1e4, std 1 over 8 parts), refusals that
 * write nothing, validation-only calls, and one batch split over two contexts (the multi-device example's check).
 * Outputs are NaN-poisoned first, so an unwritten element fails.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_bn.h"
#include "test_util.h"

#define EPS 1e-5
#define FACTOR 0.3
#define MAXP 8

static const char *mode_name(clnorm_bn_mode m) {
    return m == CLNORM_BN_SPATIAL ? "SPATIAL" : "PER_ACTIVATION";
}

typedef struct {
    clnorm_bn_mode mode;
    clnorm_dtype dt;
    clnorm_layout lay;
    int ndim;
    size_t rest[4]; /* maps, d, h, w (ndim - 1 of them) */
    int parts;
    size_t batch[MAXP];
} split_case;

static size_t rest_numel(const split_case *c) {
    size_t n = 1;
    for (int i = 0; i < c->ndim - 1; ++i)
        n *= c->rest[i];
    return n;
}
static size_t spatial(const split_case *c) {
    return rest_numel(c) / c->rest[0];
}
static void shape_of(const split_case *c, size_t b, size_t *shape) {
    shape[0] = b;
    for (int i = 1; i < c->ndim; ++i)
        shape[i] = c->rest[i - 1];
}

/* a device tensor of part q (NCHW host floats in, stored in the case's dtype / layout); batch 0: no buffer */
static clnorm_tensor part_tensor(clnorm_context *ctx, const split_case *c, size_t b, const float *nchw) {
    size_t shape[5];
    shape_of(c, b, shape);
    clnorm_tensor t = clnorm_tensor_make(NULL, c->ndim, shape);
    t.dtype = c->dt;
    t.layout = c->lay;
    size_t n = b * rest_numel(c);
    if (n == 0)
        return t;
    size_t bytes = n * tu_esize(c->dt);
    t.buffer = tu_buffer_on(ctx, bytes);
    void *raw = tu_malloc(bytes);
    if (nchw) {
        float *tmp = tu_floats(n);
        if (c->lay == CLNORM_NHWC)
            tu_nchw_to_nhwc(nchw, tmp, b, c->rest[0], spatial(c));
        else
            memcpy(tmp, nchw, n * 4);
        tu_encode(c->dt, tmp, raw, n);
        free(tmp);
    } else {
        memset(raw, 0xff, bytes); /* NaN in every storage type */
    }
    cl_int err = clEnqueueWriteBuffer(clnorm_context_queue(ctx), t.buffer, CL_TRUE, 0, bytes, raw, 0, NULL, NULL);
    TU_TRUE(err == CL_SUCCESS);
    free(raw);
    return t;
}

/* part tensor back to NCHW floats */
static void part_read(clnorm_context *ctx, const split_case *c, const clnorm_tensor *t, float *nchw) {
    size_t n = t->shape[0] * rest_numel(c);
    if (n == 0)
        return;
    size_t bytes = n * tu_esize(c->dt);
    void *raw = tu_malloc(bytes);
    TU_OK(clnorm_tensor_read(ctx, t, raw));
    float *tmp = tu_floats(n);
    tu_decode(c->dt, raw, tmp, n);
    if (c->lay == CLNORM_NHWC)
        tu_nhwc_to_nchw(tmp, nchw, t->shape[0], c->rest[0], spatial(c));
    else
        memcpy(nchw, tmp, n * 4);
    free(tmp);
    free(raw);
}

static cl_mem floats_on(clnorm_context *ctx, const float *host, size_t n) {
    cl_mem b = tu_buffer_on(ctx, n * 4);
    if (host) {
        cl_int err = clEnqueueWriteBuffer(clnorm_context_queue(ctx), b, CL_TRUE, 0, n * 4, host, 0, NULL, NULL);
        TU_TRUE(err == CL_SUCCESS);
    } else {
        float *nan = tu_floats(n);
        for (size_t i = 0; i < n; ++i)
            nan[i] = NAN;
        cl_int err = clEnqueueWriteBuffer(clnorm_context_queue(ctx), b, CL_TRUE, 0, n * 4, nan, 0, NULL, NULL);
        TU_TRUE(err == CL_SUCCESS);
        free(nan);
    }
    return b;
}
static void floats_read(clnorm_context *ctx, cl_mem b, float *host, size_t n) {
    cl_int err = clEnqueueReadBuffer(clnorm_context_queue(ctx), b, CL_TRUE, 0, n * 4, host, 0, NULL, NULL);
    TU_TRUE(err == CL_SUCCESS);
}

/* The whole step split over c->parts parts on the contexts ctxs[q % nctx] against the reference. inplace 1: the
 * forward writes y over (a copy of) x and the backward dx over (a copy of) x; inplace 2: dx over dy. */
static void run_split(const split_case *c, clnorm_context **ctxs, int nctx, int device_merge, int inplace) {
    size_t total = 0;
    char bs[64] = "";
    for (int q = 0; q < c->parts; ++q) {
        total += c->batch[q];
        snprintf(bs + strlen(bs), sizeof bs - strlen(bs), "%s%zu", q ? "," : "", c->batch[q]);
    }
    size_t tshape[5];
    shape_of(c, total, tshape);
    static const char *const inplace_name[] = {"", ", y over x and dx over x", ", dx over dy"};
    tu_case("split %s %s %s %s batches %s contexts %d %s merge%s", mode_name(c->mode), tu_dtype_name(c->dt),
            c->lay == CLNORM_NHWC ? "NHWC" : "NCHW", tu_shape_str(c->ndim, tshape), bs, nctx,
            device_merge ? "device" : "host", inplace_name[inplace]);
    size_t R = rest_numel(c), n = total * R, G = ref_groups(c->mode, c->ndim, tshape);
    float *x = tu_floats(n), *dy = tu_floats(n), *scale = tu_floats(G), *bias = tu_floats(G), *rm = tu_floats(G),
          *rv = tu_floats(G);
    tu_fill_normal(x, n, 0.5, 2.0);
    tu_fill_normal(dy, n, 0.0, 1.0);
    for (size_t i = 0; i < n; ++i) {
        x[i] = tu_round_storage(c->dt, x[i]);
        dy[i] = tu_round_storage(c->dt, dy[i]);
    }
    tu_fill_normal(scale, G, 1.0, 0.3);
    tu_fill_normal(bias, G, 0.0, 0.5);
    tu_fill_normal(rm, G, 0.0, 1.0);
    tu_fill_uniform(rv, G, 0.5, 2.0);
    double *ry = tu_doubles(n), *rmean = tu_doubles(G), *rvar = tu_doubles(G), *rinv = tu_doubles(G),
           *rrm = tu_doubles(G), *rrv = tu_doubles(G);
    ref_bn_forward_training(c->mode, c->ndim, tshape, x, scale, bias, FACTOR, EPS, rm, rv, ry, rmean, rvar, rinv, rrm,
                            rrv);

    /* phase 1: every part's block */
    clnorm_tensor xt[MAXP], yt[MAXP], dyt[MAXP], dxt[MAXP];
    cl_mem blk[MAXP], sc[MAXP], bi[MAXP], rmb[MAXP], rvb[MAXP], smb[MAXP], sib[MAXP], sums[MAXP], dsb[MAXP], dbb[MAXP];
    float *blocks = tu_floats((size_t)c->parts * G * 3);
    size_t off = 0;
    for (int q = 0; q < c->parts; ++q) {
        clnorm_context *ctx = ctxs[q % nctx];
        xt[q] = part_tensor(ctx, c, c->batch[q], x + off);
        yt[q] = part_tensor(ctx, c, c->batch[q], inplace == 1 ? x + off : NULL);
        dyt[q] = part_tensor(ctx, c, c->batch[q], dy + off);
        dxt[q] = part_tensor(ctx, c, c->batch[q], inplace == 1 ? x + off : inplace == 2 ? dy + off : NULL);
        off += c->batch[q] * R;
        blk[q] = floats_on(ctx, NULL, G * 3);
        TU_OK(clnorm_bn_stats(ctx, c->mode, &xt[q], blk[q]));
        floats_read(ctx, blk[q], blocks + (size_t)q * G * 3, G * 3);
        for (size_t j = 0; j < G; ++j)
            TU_TRUE(blocks[((size_t)q * G + j) * 3] ==
                    (float)(c->batch[q] * (c->mode == CLNORM_BN_SPATIAL ? spatial(c) : 1)));
    }
    /* exchange and merge: on the first context's device, or on the host */
    float *merged = tu_floats(G * 3), *other = tu_floats(G * 3);
    TU_OK(clnorm_bn_stats_merge_host((size_t)c->parts, G, blocks, other));
    if (device_merge) {
        cl_mem all = floats_on(ctxs[0], blocks, (size_t)c->parts * G * 3), mb = floats_on(ctxs[0], NULL, G * 3);
        TU_OK(clnorm_bn_stats_merge(ctxs[0], (size_t)c->parts, G, all, mb));
        floats_read(ctxs[0], mb, merged, G * 3);
        tu_release(&all);
        tu_release(&mb);
    } else {
        memcpy(merged, other, G * 3 * 4);
    }
    /* the merged block against the reference: count, mean, m2 / count; both merges agree */
    double *rcount = tu_doubles(G), *rm2 = tu_doubles(G);
    float *gmean = tu_floats(G), *gvar = tu_floats(G), *gcount = tu_floats(G);
    for (size_t j = 0; j < G; ++j) {
        rcount[j] = (double)(total * (c->mode == CLNORM_BN_SPATIAL ? spatial(c) : 1));
        gcount[j] = merged[3 * j];
        gmean[j] = merged[3 * j + 1];
        gvar[j] = merged[3 * j + 2] / merged[3 * j];
        rm2[j] = rvar[j];
    }
    TU_TRUE(tu_compare("merged count", gcount, rcount, G, 0.0, 0.0));
    TU_TRUE(tu_compare("merged mean", gmean, rmean, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare("merged var", gvar, rm2, G, TU_STAT_ATOL, TU_STAT_RTOL));
    for (size_t j = 0; j < G; ++j)
        gvar[j] = other[3 * j + 2] / other[3 * j];
    TU_TRUE(tu_compare("host-merged var", gvar, rm2, G, TU_STAT_ATOL, TU_STAT_RTOL));

    /* phase 2: every part normalises with the merged block; running / saved statistics identical everywhere */
    float *yall = tu_floats(n), *got = tu_floats(G), *first = tu_floats(G * 4);
    off = 0;
    for (int q = 0; q < c->parts; ++q) {
        clnorm_context *ctx = ctxs[q % nctx];
        cl_mem mb = floats_on(ctx, merged, G * 3);
        sc[q] = floats_on(ctx, scale, G);
        bi[q] = floats_on(ctx, bias, G);
        rmb[q] = floats_on(ctx, rm, G);
        rvb[q] = floats_on(ctx, rv, G);
        smb[q] = floats_on(ctx, NULL, G);
        sib[q] = floats_on(ctx, NULL, G);
        TU_OK(clnorm_bn_forward_training_from_stats(ctx, c->mode, inplace == 1 ? &yt[q] : &xt[q], &yt[q], mb, sc[q],
                                                    bi[q], FACTOR, EPS, rmb[q], rvb[q], smb[q], sib[q]));
        part_read(ctx, c, &yt[q], yall + off);
        off += c->batch[q] * R;
        cl_mem outs[4] = {rmb[q], rvb[q], smb[q], sib[q]};
        for (int f = 0; f < 4; ++f) {
            floats_read(ctx, outs[f], got, G);
            if (q == 0)
                memcpy(first + f * G, got, G * 4);
            else if (nctx == 1 || q % nctx == 0)
                TU_TRUE(memcmp(first + f * G, got, G * 4) == 0); /* same device: bit-identical */
        }
        tu_release(&mb);
    }
    TU_TRUE(tu_compare_storage("y", yall, ry, n, c->dt, TU_FWD_ATOL, TU_FWD_RTOL));
    TU_TRUE(tu_compare("running_mean", first, rrm, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare("running_var", first + G, rrv, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare("save_mean", first + 2 * G, rmean, G, TU_STAT_ATOL, TU_STAT_RTOL));
    TU_TRUE(tu_compare("save_invstd", first + 3 * G, rinv, G, TU_STAT_ATOL, TU_STAT_RTOL));

    /* backward: local sums, added over the parts in part order, then every part finishes */
    float *ssum = tu_floats(G * 2), *part = tu_floats(G * 2);
    double *acc = tu_doubles(G * 2);
    for (size_t i = 0; i < G * 2; ++i)
        acc[i] = 0.0;
    for (int q = 0; q < c->parts; ++q) {
        clnorm_context *ctx = ctxs[q % nctx];
        sums[q] = floats_on(ctx, NULL, G * 2);
        TU_OK(clnorm_bn_backward_reduce(ctx, c->mode, &xt[q], &dyt[q], smb[q], sib[q], sums[q]));
        floats_read(ctx, sums[q], part, G * 2);
        for (size_t i = 0; i < G * 2; ++i)
            acc[i] += part[i];
    }
    for (size_t i = 0; i < G * 2; ++i)
        ssum[i] = (float)acc[i];
    double *rdx = tu_doubles(n), *rds = tu_doubles(G), *rdb = tu_doubles(G);
    ref_bn_backward(c->mode, c->ndim, tshape, x, dy, scale, EPS, first + 2 * G, first + 3 * G, rdx, rds, rdb);
    float *dxall = tu_floats(n);
    off = 0;
    for (int q = 0; q < c->parts; ++q) {
        clnorm_context *ctx = ctxs[q % nctx];
        cl_mem sb = floats_on(ctx, ssum, G * 2);
        dsb[q] = floats_on(ctx, NULL, G);
        dbb[q] = floats_on(ctx, NULL, G);
        TU_OK(clnorm_bn_backward_from_sums(ctx, c->mode, inplace == 1 ? &dxt[q] : &xt[q],
                                           inplace == 2 ? &dxt[q] : &dyt[q], &dxt[q], sc[q], smb[q], sib[q], sb,
                                           rcount[0], dsb[q], dbb[q]));
        part_read(ctx, c, &dxt[q], dxall + off);
        off += c->batch[q] * R;
        floats_read(ctx, dsb[q], got, G);
        TU_TRUE(tu_compare("dscale", got, rds, G, TU_BWD_ATOL, TU_BWD_RTOL));
        for (size_t j = 0; j < G; ++j)
            TU_TRUE(got[j] == ssum[2 * j + 1]); /* the global sums, copied */
        floats_read(ctx, dbb[q], got, G);
        TU_TRUE(tu_compare("dbias", got, rdb, G, TU_BWD_ATOL, TU_BWD_RTOL));
        tu_release(&sb);
    }
    TU_TRUE(tu_compare_storage("dx", dxall, rdx, n, c->dt, TU_BWD_ATOL, TU_BWD_RTOL));

    for (int q = 0; q < c->parts; ++q) {
        clnorm_tensor_release(&xt[q]);
        clnorm_tensor_release(&yt[q]);
        clnorm_tensor_release(&dyt[q]);
        clnorm_tensor_release(&dxt[q]);
        cl_mem *ms[] = {&blk[q], &sc[q], &bi[q], &rmb[q], &rvb[q], &smb[q], &sib[q], &sums[q], &dsb[q], &dbb[q]};
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; ++i)
            tu_release(ms[i]);
    }
    free(x), free(dy), free(scale), free(bias), free(rm), free(rv), free(ry), free(rmean), free(rvar), free(rinv);
    free(rrm), free(rrv), free(blocks), free(merged), free(other), free(rcount), free(rm2), free(gmean), free(gvar);
    free(gcount), free(yall), free(got), free(first), free(ssum), free(part), free(acc), free(rdx), free(rds);
    free(rdb), free(dxall);
}

static const split_case shapes[] = {
    /* rows (NCHW SPATIAL, S > 1) / columns (NHWC), 2D */
    {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 4, {3, 5, 7}, 4, {3, 0, 5, 2}},
    /* 3D, uneven, first part empty */
    {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 5, {2, 3, 4, 5}, 3, {0, 2, 1}},
    /* (batch, size): columns */
    {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 2, {10}, 3, {4, 0, 7}},
    /* per-activation (NHWC: parameter permutation) */
    {CLNORM_BN_PER_ACTIVATION, CLNORM_F32, CLNORM_NCHW, 4, {3, 2, 5}, 4, {2, 3, 0, 1}},
    {CLNORM_BN_PER_ACTIVATION, CLNORM_F32, CLNORM_NCHW, 2, {37}, 2, {5, 9}},
};

static void test_split_matrix(void **state) {
    (void)state;
    static const clnorm_dtype dts[] = {CLNORM_F32, CLNORM_F16, CLNORM_BF16};
    static const clnorm_layout lays[] = {CLNORM_NCHW, CLNORM_NHWC};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
        for (size_t d = 0; d < 3; ++d)
            for (size_t l = 0; l < 2; ++l) {
                split_case c = shapes[s];
                c.dt = dts[d];
                c.lay = lays[l];
                run_split(&c, &tu_ctx, 1, (s + d + l) % 2, (int)((s + d + l) % 3));
            }
}

/* long maps and tall columns: several slices per map (rows) and several row chunks (columns) */
static void test_split_large(void **state) {
    (void)state;
    split_case a = {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 4, {2, 128, 128}, 3, {4, 0, 6}};
    run_split(&a, &tu_ctx, 1, 1, 0);
    a.lay = CLNORM_NHWC;
    a.dt = CLNORM_F16;
    run_split(&a, &tu_ctx, 1, 0, 1);
    split_case b = {CLNORM_BN_PER_ACTIVATION, CLNORM_F32, CLNORM_NCHW, 2, {24}, 2, {3000, 2100}};
    run_split(&b, &tu_ctx, 1, 1, 2);
}

/* mean 1e4, std 1 over 8 parts: the merged variance keeps float precision (device and host merges) */
static void test_merge_precision(void **state) {
    (void)state;
    enum { P = 8, G = 3, NB = 4096 };
    tu_case("merge precision mean 1e4 std 1, %d parts", P);
    float *x = tu_floats((size_t)P * NB * G);
    tu_fill_normal(x, (size_t)P * NB * G, 1e4, 1.0);
    float *blocks = tu_floats(P * G * 3), *merged = tu_floats(G * 3), *hm = tu_floats(G * 3);
    size_t shape[2] = {NB, G};
    for (int q = 0; q < P; ++q) {
        /* part q's batch: NB rows of G columns */
        cl_mem xb = tu_buffer_from(x + (size_t)q * NB * G, (size_t)NB * G), sb = tu_buffer(G * 12);
        clnorm_tensor t = clnorm_tensor_make(xb, 2, shape);
        TU_OK(clnorm_bn_stats(tu_ctx, CLNORM_BN_SPATIAL, &t, sb));
        tu_read(sb, 0, blocks + q * G * 3, G * 12);
        tu_release(&xb);
        tu_release(&sb);
    }
    cl_mem all = tu_buffer_from(blocks, P * G * 3), mb = tu_buffer(G * 12);
    TU_OK(clnorm_bn_stats_merge(tu_ctx, P, G, all, mb));
    tu_read(mb, 0, merged, G * 12);
    TU_OK(clnorm_bn_stats_merge_host(P, G, blocks, hm));
    double rvar[G], rmean[G];
    float gv[G], hv[G], gm[G];
    for (int j = 0; j < G; ++j) {
        double s = 0.0, s2 = 0.0;
        for (size_t i = 0; i < (size_t)P * NB; ++i)
            s += x[i * G + j];
        double m = s / ((double)P * NB);
        for (size_t i = 0; i < (size_t)P * NB; ++i)
            s2 += (x[i * G + j] - m) * (x[i * G + j] - m);
        rmean[j] = m;
        rvar[j] = s2 / ((double)P * NB);
        gv[j] = merged[3 * j + 2] / merged[3 * j];
        hv[j] = hm[3 * j + 2] / hm[3 * j];
        gm[j] = merged[3 * j + 1];
    }
    /* The blocks carry float means: at 1e4 one rounding is up to 0.0005 (half an ulp), while the part means differ
     * by ~1/64 (std 1 over 4096 values), so each Chan term n_q * d_q^2 keeps only ~6 % of its ~0.0002 * n_q: over 8
     * parts up to ~3e-5 of the variance, whatever the merge does (E[x^2] - E[x]^2 in float would be off by ~6, i.e.
     * 600 %). Against the double reference the test allows 5e-5; the two merges of the same blocks agree to 2e-6. */
    double hvd[G];
    for (int j = 0; j < G; ++j)
        hvd[j] = hv[j];
    TU_TRUE(tu_compare("device-merged var", gv, rvar, G, 0.0, 5e-5));
    TU_TRUE(tu_compare("host-merged var", hv, rvar, G, 0.0, 5e-5));
    TU_TRUE(tu_compare("device-merged var against the host merge", gv, hvd, G, 0.0, 2e-6));
    TU_TRUE(tu_compare("device-merged mean", gm, rmean, G, 0.0, 1e-7));
    tu_release(&all);
    tu_release(&mb);
    free(x), free(blocks), free(merged), free(hm);
}

/* the merge is in part order and skips empty parts: an empty part anywhere changes no bit */
static void test_merge_empty_parts(void **state) {
    (void)state;
    tu_case("merge skips empty parts");
    enum { G = 5 };
    float blocks[4 * G * 3], with[G * 3], without[G * 3], hw[G * 3], hwo[G * 3];
    for (int q = 0; q < 4; ++q)
        for (int j = 0; j < G; ++j) {
            float *b = blocks + (q * G + j) * 3;
            b[0] = q == 1 ? 0.0f : (float)(3 + tu_rand_index(50));
            b[1] = q == 1 ? 0.0f : (float)tu_normal();
            b[2] = q == 1 ? 0.0f : (float)(b[0] * tu_uniform());
        }
    float compact[3 * G * 3];
    memcpy(compact, blocks, G * 12);
    memcpy(compact + G * 3, blocks + 2 * G * 3, 2 * G * 12);
    cl_mem a = tu_buffer_from(blocks, 4 * G * 3), b = tu_buffer_from(compact, 3 * G * 3), ma = tu_buffer(G * 12),
           mb = tu_buffer(G * 12);
    TU_OK(clnorm_bn_stats_merge(tu_ctx, 4, G, a, ma));
    TU_OK(clnorm_bn_stats_merge(tu_ctx, 3, G, b, mb));
    tu_read(ma, 0, with, sizeof with);
    tu_read(mb, 0, without, sizeof without);
    TU_TRUE(memcmp(with, without, sizeof with) == 0);
    TU_OK(clnorm_bn_stats_merge_host(4, G, blocks, hw));
    TU_OK(clnorm_bn_stats_merge_host(3, G, compact, hwo));
    TU_TRUE(memcmp(hw, hwo, sizeof hw) == 0);
    /* every part empty: count 0 */
    float zeros[2 * G * 3] = {0}, out[G * 3];
    TU_OK(clnorm_bn_stats_merge_host(2, G, zeros, out));
    for (int i = 0; i < G * 3; ++i)
        TU_TRUE(out[i] == 0.0f);
    tu_release(&a), tu_release(&b), tu_release(&ma), tu_release(&mb);
}

/* refusals write nothing; validation-only calls enqueue nothing */
static void test_split_errors(void **state) {
    (void)state;
    tu_case("split refusals");
    enum { C = 3 };
    size_t shape[4] = {1, C, 2, 2}, shape0[4] = {0, C, 2, 2};
    float x1[C * 4];
    tu_fill_normal(x1, C * 4, 0.0, 1.0);
    cl_mem xb = tu_buffer_from(x1, C * 4), yb = tu_buffer(C * 16), st = tu_buffer(C * 12),
           small = tu_buffer(C * 12 - 4), small2 = tu_buffer(C * 8 - 4);
    cl_mem rm = tu_buffer(C * 4), rv = tu_buffer(C * 4), sm = tu_buffer(C * 4), si = tu_buffer(C * 4),
           sums = tu_buffer(C * 8);
    clnorm_tensor x = clnorm_tensor_make(xb, 4, shape), y = clnorm_tensor_make(yb, 4, shape),
                  e = clnorm_tensor_make(NULL, 4, shape0);
    const size_t G = C;
    tu_poison(yb, 0, C * 16);
    tu_poison(rm, 0, G * 4), tu_poison(rv, 0, G * 4), tu_poison(sm, 0, G * 4), tu_poison(si, 0, G * 4);
    tu_poison(sums, 0, G * 8);
    tu_poison(st, 0, G * 12);
    /* stats too small; wrong mode; NULL x */
    TU_ERR(CLNORM_ERROR_BUFFER_TOO_SMALL, clnorm_bn_stats(tu_ctx, CLNORM_BN_SPATIAL, &x, small));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_stats(tu_ctx, (clnorm_bn_mode)7, &x, st));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_stats(tu_ctx, CLNORM_BN_SPATIAL, NULL, st));
    TU_TRUE(tu_poison_intact(st, 0, G * 12, "stats after refusals"));
    /* validation only */
    TU_OK(clnorm_bn_stats(tu_ctx, CLNORM_BN_SPATIAL, &x, NULL));
    TU_OK(clnorm_bn_forward_training_from_stats(tu_ctx, CLNORM_BN_SPATIAL, &x, &y, NULL, NULL, NULL, 0.1, EPS, rm, rv,
                                                sm, si));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_forward_training_from_stats(tu_ctx, CLNORM_BN_SPATIAL, &x, &y, NULL,
                                                                                NULL, NULL, 1.5, EPS, rm, rv, sm, si));
    /* a total count below 2: x of batch 1 with spatial 1 per map... here 4 values per map locally, so give an
       empty x and a merged block of count 1 */
    float one[C * 3];
    for (int j = 0; j < C; ++j)
        one[3 * j] = 1.0f, one[3 * j + 1] = 0.5f, one[3 * j + 2] = 0.0f;
    cl_mem ob = tu_buffer_from(one, C * 3);
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_bn_forward_training_from_stats(tu_ctx, CLNORM_BN_SPATIAL, &e, &e, ob, NULL, NULL,
                                                                     0.1, EPS, rm, rv, sm, si));
    TU_TRUE(strstr(clnorm_last_error(), "at least 2") != NULL);
    /* a merged count smaller than this part's own values */
    for (int j = 0; j < C; ++j)
        one[3 * j] = 3.0f;
    tu_write(ob, 0, one, sizeof one);
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_bn_forward_training_from_stats(tu_ctx, CLNORM_BN_SPATIAL, &x, &y, ob, NULL, NULL,
                                                                     0.1, EPS, rm, rv, sm, si));
    TU_TRUE(tu_poison_intact(yb, 0, C * 16, "y after refusals"));
    TU_TRUE(tu_poison_intact(rm, 0, G * 4, "running_mean after refusals"));
    TU_TRUE(tu_poison_intact(sm, 0, G * 4, "save_mean after refusals"));
    /* batch 0 with a valid merged block: only the running and saved statistics */
    for (int j = 0; j < C; ++j)
        one[3 * j] = 8.0f, one[3 * j + 1] = (float)j, one[3 * j + 2] = 16.0f;
    tu_write(ob, 0, one, sizeof one);
    float r1[C] = {1, 1, 1};
    tu_write(rv, 0, r1, sizeof r1);
    tu_write(rm, 0, r1, sizeof r1);
    TU_OK(clnorm_bn_forward_training_from_stats(tu_ctx, CLNORM_BN_SPATIAL, &e, &e, ob, NULL, NULL, 0.5, EPS, rm, rv, sm,
                                                si));
    float got[C];
    double want[C];
    tu_read(rv, 0, got, sizeof got);
    for (int j = 0; j < C; ++j)
        want[j] = 0.5 + 0.5 * (16.0 / 8.0) * 8.0 / 7.0;
    TU_TRUE(tu_compare("running_var (empty part)", got, want, C, 0.0, 1e-6));
    tu_read(si, 0, got, sizeof got);
    for (int j = 0; j < C; ++j)
        want[j] = 1.0 / sqrt(2.0 + EPS);
    TU_TRUE(tu_compare("save_invstd (empty part)", got, want, C, 0.0, 1e-6));
    /* backward: saved statistics required; count checks; batch 0 reduce gives zeros */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_backward_reduce(tu_ctx, CLNORM_BN_SPATIAL, &x, &x, NULL, si, sums));
    TU_ERR(CLNORM_ERROR_BUFFER_TOO_SMALL, clnorm_bn_backward_reduce(tu_ctx, CLNORM_BN_SPATIAL, &x, &x, sm, si, small2));
    TU_TRUE(tu_poison_intact(sums, 0, G * 8, "sums after refusals"));
    TU_OK(clnorm_bn_backward_reduce(tu_ctx, CLNORM_BN_SPATIAL, &e, &e, sm, si, sums));
    float z[C * 2];
    tu_read(sums, 0, z, sizeof z);
    for (int i = 0; i < C * 2; ++i)
        TU_TRUE(z[i] == 0.0f);
    tu_poison(yb, 0, C * 16);
    TU_ERR(CLNORM_ERROR_SHAPE,
           clnorm_bn_backward_from_sums(tu_ctx, CLNORM_BN_SPATIAL, &x, &x, &y, NULL, sm, si, sums, 3.0, NULL, NULL));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_bn_backward_from_sums(tu_ctx, CLNORM_BN_SPATIAL, &x, &x, &y, NULL, sm, si, sums, NAN, NULL, NULL));
    TU_OK(clnorm_bn_backward_from_sums(tu_ctx, CLNORM_BN_SPATIAL, &x, &x, &y, NULL, sm, si, NULL, 8.0, NULL, NULL));
    TU_TRUE(tu_poison_intact(yb, 0, C * 16, "dx after refusals and validation"));
    /* merge refusals */
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_stats_merge(tu_ctx, 0, G, st, ob));
    TU_ERR(CLNORM_ERROR_BUFFER_TOO_SMALL, clnorm_bn_stats_merge(tu_ctx, 2, G, st, ob));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_stats_merge(tu_ctx, 1, G, st, st));
    float bad[3] = {-1.0f, 0.0f, 0.0f}, out[3] = {7, 7, 7};
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_stats_merge_host(1, 1, bad, out));
    TU_TRUE(out[0] == 7 && out[1] == 7 && out[2] == 7);
    /* aliasing: a block written over its input, gradients over the sums, y of another dtype */
    tu_poison(st, 0, G * 12);
    clnorm_tensor xs = clnorm_tensor_make(st, 2, (size_t[]){1, C});
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_stats(tu_ctx, CLNORM_BN_SPATIAL, &xs, st));
    TU_TRUE(tu_poison_intact(st, 0, G * 12, "stats written over x"));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT,
           clnorm_bn_backward_from_sums(tu_ctx, CLNORM_BN_SPATIAL, &x, &x, NULL, NULL, sm, si, sums, 8.0, sums, rm));
    clnorm_tensor y16 = y;
    y16.dtype = CLNORM_F16;
    TU_ERR(CLNORM_ERROR_UNSUPPORTED,
           clnorm_bn_forward_training_from_stats(tu_ctx, CLNORM_BN_SPATIAL, &x, &y16, ob, NULL, NULL, 0.1, EPS, NULL,
                                                 NULL, NULL, NULL));
    TU_ERR(CLNORM_ERROR_INVALID_ARGUMENT, clnorm_bn_stats(tu_ctx, CLNORM_BN_SPATIAL, &(clnorm_tensor){.ndim = 1}, st));
    /* the layer's split calls: PuzzleLib's shape messages, backward before a training forward */
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 1, C + 1);
    clnorm_batchnorm *bn = NULL;
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_stats(bn, &x, st));
    TU_TRUE(strstr(clnorm_last_error(), "Data must be 3d tensor") != NULL);
    size_t s3[3] = {1, C, 4};
    clnorm_tensor x3 = clnorm_tensor_make(xb, 3, s3);
    TU_ERR(CLNORM_ERROR_SHAPE, clnorm_batchnorm_forward_from_stats(bn, &x3, &x3, NULL));
    TU_TRUE(strstr(clnorm_last_error(), "maps (expected: 4)") != NULL);
    clnorm_batchnorm_destroy(bn);
    clnorm_batchnorm_config_init(&cfg, 1, C);
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &bn));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_backward_reduce(bn, &x3, &x3, sums));
    TU_ERR(CLNORM_ERROR_INVALID_STATE, clnorm_batchnorm_backward_from_sums(bn, &x3, &x3, NULL, sums, 8.0, 1.0f, 0.0f));
    clnorm_tensor y3 = clnorm_tensor_make(yb, 3, s3);
    TU_OK(clnorm_batchnorm_forward_from_stats(bn, &x3, &y3, NULL)); /* validation only: n unchanged */
    TU_TRUE(clnorm_batchnorm_batches(bn) == 0);
    TU_TRUE(clnorm_batchnorm_context(bn) == tu_ctx);
    clnorm_batchnorm_destroy(bn);
    TU_TRUE(clnorm_set_last_error(CLNORM_ERROR_SHAPE, "mine") == CLNORM_ERROR_SHAPE);
    TU_TRUE(strcmp(clnorm_last_error(), "mine") == 0);
    cl_mem *ms[] = {&xb, &yb, &st, &small, &small2, &rm, &rv, &sm, &si, &sums, &ob};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; ++i)
        tu_release(ms[i]);
}

/* one batch over two contexts (two POCL contexts here), merged on the first device: equals one device */
static void test_two_contexts(void **state) {
    (void)state;
    clnorm_context *second = NULL;
    TU_OK(tu_context_create(&second));
    clnorm_context *ctxs[2] = {tu_ctx, second};
    split_case a = {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 5, {3, 4, 5, 6}, 2, {3, 5}};
    run_split(&a, ctxs, 2, 1, 0);
    split_case b = {CLNORM_BN_PER_ACTIVATION, CLNORM_F16, CLNORM_NHWC, 3, {4, 6}, 4, {2, 0, 3, 1}};
    run_split(&b, ctxs, 2, 0, 0);
    clnorm_context_destroy(second);
}

/* the layer's split-phase calls over 3 parts against one layer on the concatenated batch, 4 steps */
static void test_layer_split(void **state) {
    (void)state;
    tu_case("layer split 3 parts vs one layer");
    enum { C = 3, P = 3, STEPS = 4 };
    const size_t b[P] = {2, 0, 3}, S = 6;
    const size_t tot = 5;
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 1, C);
    cfg.seed = 11;
    clnorm_batchnorm *one, *parts[P];
    TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &one));
    for (int q = 0; q < P; ++q)
        TU_OK(clnorm_batchnorm_create(tu_ctx, &cfg, &parts[q]));
    size_t n = tot * C * S;
    float *x = tu_floats(n), *dy = tu_floats(n), *y1 = tu_floats(n), *dx1 = tu_floats(n), *y2 = tu_floats(n),
          *dx2 = tu_floats(n);
    size_t shape[3] = {tot, C, S};
    cl_mem xb = tu_buffer(n * 4), yb = tu_buffer(n * 4), dyb = tu_buffer(n * 4), dxb = tu_buffer(n * 4);
    clnorm_tensor X = clnorm_tensor_make(xb, 3, shape), Y = clnorm_tensor_make(yb, 3, shape),
                  DY = clnorm_tensor_make(dyb, 3, shape), DX = clnorm_tensor_make(dxb, 3, shape);
    cl_mem blk[P], sums[P], mb = tu_buffer(C * 12), sb = tu_buffer(C * 8);
    for (int q = 0; q < P; ++q)
        blk[q] = tu_buffer(C * 12), sums[q] = tu_buffer(C * 8);
    for (int step = 0; step < STEPS; ++step) {
        tu_fill_normal(x, n, 1.0, 2.0);
        tu_fill_normal(dy, n, 0.0, 1.0);
        tu_write(xb, 0, x, n * 4);
        tu_write(dyb, 0, dy, n * 4);
        TU_OK(clnorm_batchnorm_forward(one, 1, &X, &Y));
        TU_OK(clnorm_batchnorm_backward(one, &X, &DY, &DX, 1.0f, 0.5f));
        tu_read(yb, 0, y1, n * 4);
        tu_read(dxb, 0, dx1, n * 4);
        /* the parts: sub-buffer-free views at byte offsets of the same buffers */
        clnorm_tensor xs[P], ys[P], dys[P], dxs[P];
        float blocks[P * C * 3], merged[C * 3], all[P * C * 2], tot2[C * 2];
        size_t off = 0;
        for (int q = 0; q < P; ++q) {
            size_t sh[3] = {b[q], C, S};
            xs[q] = tu_view(b[q] ? xb : NULL, off * 4, 3, sh);
            ys[q] = tu_view(b[q] ? yb : NULL, off * 4, 3, sh);
            dys[q] = tu_view(b[q] ? dyb : NULL, off * 4, 3, sh);
            dxs[q] = tu_view(b[q] ? dxb : NULL, off * 4, 3, sh);
            off += b[q] * C * S;
            TU_OK(clnorm_batchnorm_stats(parts[q], &xs[q], blk[q]));
            tu_read(blk[q], 0, blocks + q * C * 3, C * 12);
        }
        TU_OK(clnorm_bn_stats_merge_host(P, C, blocks, merged));
        tu_write(mb, 0, merged, sizeof merged);
        tu_poison(yb, 0, n * 4);
        tu_poison(dxb, 0, n * 4);
        for (int q = 0; q < P; ++q)
            TU_OK(clnorm_batchnorm_forward_from_stats(parts[q], &xs[q], &ys[q], mb));
        for (int q = 0; q < P; ++q) {
            TU_OK(clnorm_batchnorm_backward_reduce(parts[q], &xs[q], &dys[q], sums[q]));
            tu_read(sums[q], 0, all + q * C * 2, C * 8);
        }
        for (int i = 0; i < C * 2; ++i)
            tot2[i] = all[i] + all[C * 2 + i] + all[2 * C * 2 + i];
        tu_write(sb, 0, tot2, sizeof tot2);
        for (int q = 0; q < P; ++q)
            TU_OK(clnorm_batchnorm_backward_from_sums(parts[q], &xs[q], &dys[q], &dxs[q], sb, (double)(tot * S), 1.0f,
                                                      0.5f));
        tu_read(yb, 0, y2, n * 4);
        tu_read(dxb, 0, dx2, n * 4);
        TU_TRUE(tu_compare_ff("layer y", y2, y1, n, TU_FWD_ATOL, TU_FWD_RTOL));
        TU_TRUE(tu_compare_ff("layer dx", dx2, dx1, n, TU_BWD_ATOL, TU_BWD_RTOL));
        static const clnorm_field fs[] = {CLNORM_RUNNING_MEAN, CLNORM_RUNNING_VAR, CLNORM_SCALE_GRAD, CLNORM_BIAS_GRAD};
        for (size_t f = 0; f < 4; ++f) {
            float want[C], got[C], first[C];
            TU_OK(clnorm_batchnorm_read(one, fs[f], want, C));
            for (int q = 0; q < P; ++q) {
                TU_OK(clnorm_batchnorm_read(parts[q], fs[f], got, C));
                if (q == 0)
                    memcpy(first, got, sizeof got);
                TU_TRUE(memcmp(first, got, sizeof got) == 0);
            }
            TU_TRUE(tu_compare_ff("layer field", got, want, C, TU_BWD_ATOL, TU_BWD_RTOL));
        }
        for (int q = 0; q < P; ++q)
            TU_TRUE(clnorm_batchnorm_batches(parts[q]) == (uint64_t)step + 1);
    }
    for (int q = 0; q < P; ++q) {
        clnorm_batchnorm_destroy(parts[q]);
        tu_release(&blk[q]), tu_release(&sums[q]);
    }
    clnorm_batchnorm_destroy(one);
    tu_release(&xb), tu_release(&yb), tu_release(&dyb), tu_release(&dxb), tu_release(&mb), tu_release(&sb);
    free(x), free(dy), free(y1), free(dx1), free(y2), free(dx2);
}

int main(void) {
    tu_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_matrix),    cmocka_unit_test(test_split_large),
        cmocka_unit_test(test_merge_precision), cmocka_unit_test(test_merge_empty_parts),
        cmocka_unit_test(test_split_errors),    cmocka_unit_test(test_two_contexts),
        cmocka_unit_test(test_layer_split),
    };
    return cmocka_run_group_tests_name("split", tests, tu_group_setup, tu_group_teardown);
}
