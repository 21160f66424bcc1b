/* The rows path: NCHW SPATIAL with S > 1, the tensor viewed as (B, C, S) with S = d*h*w, one statistic per map c.
 * All of its kernels are in this file, in three sections:
 *   statistics   bn_stats_partial (partial mean and M2 per (map, slice)), bn_stats_finalize (the per-map merge,
 *                running / saved statistics, the elementwise coefficients) and bn_fused_forward (the whole training
 *                forward in one launch, one work-group per map);
 *   elementwise  bn_apply: y from the coefficients (training forward, inference) or dx (backward, F_DX);
 *   backward     bn_bwd_partial, bn_bwd_finalize (then bn_apply for dx) or bn_fused_backward (one launch).
 * Map c is shifted by K = its first value x[0, c, 0] (see acc_t). The helpers both paths share (the accumulator,
 * finalize_stats, map_coef, apply_run / apply_map, the formulas) are in common.cl; the columns path (NCHW
 * per-activation, SPATIAL with S == 1, NHWC) is bn_columns.cl with its tiles in bn_columns_tile.cl. */

static inline float map_shift(__global const stype *xp, ulong S, ulong c) { return LOAD1(xp, c * S); }

/* ==== statistics ================================================================================================== */

/* Work-group (g, c) covers slice g of map c's B*S values; partial mean and M2 go to part[(c*G + g)*2 ..]. */
__kernel void bn_stats_partial(__global const stype *x, ulong xoff, ulong B, ulong C, ulong S, uint G,
                               __global float *part) {
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    uint g = get_group_id(0);
    ulong c = get_global_id(1);
    ulong N = B * S;
    __global const stype *xp = x + xoff;
    acc_t a;
    acc_init(&a);
    acc_range(&a, xp, C, S, c, slice_begin(N, g, G), slice_begin(N, g + 1, G), map_shift(xp, S, c));
    acc_reduce_local(&a, ln, lm, lq);
    if (get_local_id(0) == 0) {
        part[(c * G + g) * 2] = acc_mean(&a);
        part[(c * G + g) * 2 + 1] = acc_m2(&a);
    }
}

/* Merge the G partials of map c (fixed order: deterministic), finalise, coefficients to scoef. CPU: one work-item
 * per map. GPU: one work-group per map, each item merging a contiguous run of the partials, then the tree. */
__kernel void bn_stats_finalize(__global const stype *x, ulong xoff, ulong S, __global const float *part, uint G,
                                ulong N, ulong C, __global const float *scale, __global const float *bias,
                                __global float *rmean, __global float *rvar, __global float *smean,
                                __global float *sinvstd, __global float *scoef, float factor, float eps, float unbias,
                                uint flags) {
    acc_t a;
    ulong c;
    GROUP_MERGE_SPACE;
    if (!merge_group_parts(&a, &c, C, part, 2 * (ulong)G, 1, 2, G, N, ln, lm, lq))
        return;
    coef_t k;
    finalize_stats(&k, &a, map_shift(x + xoff, S, c), N, c, scale, bias, rmean, rvar, smean, sinvstd, factor, eps,
                   unbias, flags);
    coef_store(k, scoef, c);
}

#if defined(STRATEGY_CPU)
/* Pieces of a row that the CPU's pipelined training forward interleaves: a multiple of 4 * BLK (acc_contig's
 * blocks), so a row's statistics gathered piece by piece have the bits of the row gathered whole. */
#define PIPE_PIECE (4 * BLK)

/* The CPU training forward's map loop: work-item g takes maps [g * C / n, (g + 1) * C / n) of the
 * n = get_num_groups(0) the host launches (a few per core; or one per map, which is the unpipelined kernel). Each
 * map's normalisation (x from cache, y streamed out) walks beside the statistics pass of the next map (x from
 * memory), piece by piece: loads stream in while stores stream out, instead of a read-only then a write-only phase
 * per map. AMD EPYC (Zen 3) VM, training forward on (32,256,28,28): 1.64-1.83 -> 1.27-1.43 ms (copy 1.16 ms).
 * Not taken (measured slower there, one item per map instead): with a residual z, and in the backward, whose
 * passes from memory read two or three streams. */
static inline int pipe_maps(ulong C, ulong *c0, ulong *c1) {
    ulong g = get_group_id(0), n = get_num_groups(0);
    *c0 = g * C / n;
    *c1 = (g + 1) * C / n;
    return *c0 < *c1;
}
#endif

/* Training forward in one launch: statistics, then the normalisation while the map is still in cache (the second
 * read of x comes from L2/L3), outputs streamed out. GPU: one work-group per map. CPU: a run of maps per
 * work-item (pipe_maps), the statistics of map c + 1 gathered while map c is written. */
__kernel void bn_fused_forward(__global const stype *x, ulong xoff, __global const stype *z, ulong zoff,
                               __global stype *y, ulong yoff, ulong B, ulong C,
                               ulong S, __global const float *scale, __global const float *bias,
                               __global float *rmean, __global float *rvar, __global float *smean,
                               __global float *sinvstd, float factor, float eps, float unbias, uint flags) {
#if defined(STRATEGY_CPU)
    ulong c, c1, N = B * S;
    if (!pipe_maps(C, &c, &c1))
        return;
    __global const stype *xp = x + xoff;
    __global const stype *zp = (flags & F_Z) ? z + zoff : NULL;
    __global stype *yp = y + yoff;
    float K = map_shift(xp, S, c);
    acc_t a;
    acc_init(&a);
    acc_range(&a, xp, C, S, c, 0, N, K);
    for (;; ++c) {
        coef_t k;
        finalize_stats(&k, &a, K, N, c, scale, bias, rmean, rvar, smean, sinvstd, factor, eps, unbias, flags);
        if (c + 1 == c1) {
            apply_map(xp, NULL, zp, yp, B, C, S, c, k, flags);
            return;
        }
        K = map_shift(xp, S, c + 1);
        acc_init(&a);
        for (ulong b = 0; b < B; ++b) {
            ulong row = (b * C + c) * S, next = row + S;
            if (b + 1 < B) /* the next map's next row (prefetch_run) */
                prefetch_run(xp + next + C * S, S, S);
            for (ulong s = 0; s < S; s += PIPE_PIECE) {
                ulong n = min(S - s, (ulong)PIPE_PIECE);
                acc_contig(&a, xp + next + s, n, K);
                apply_run(xp + row + s, NULL, zp ? zp + row + s : zp, yp + row + s, n, k, flags);
            }
        }
    }
#else
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    __local float lk[CN_COEF_STRIDE];
    ulong c = get_group_id(0);
    __global const stype *xp = x + xoff;
    float K = map_shift(xp, S, c);
    acc_t a;
    acc_init(&a);
    acc_range(&a, xp, C, S, c, 0, B * S, K);
    acc_reduce_local(&a, ln, lm, lq);
    if (get_local_id(0) == 0) {
        coef_t k;
        finalize_stats(&k, &a, K, B * S, c, scale, bias, rmean, rvar, smean, sinvstd, factor, eps, unbias, flags);
        lk[0] = k.K;
        lk[1] = k.m;
        lk[2] = 0.0f;
        lk[3] = k.k2;
        lk[4] = k.k3;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    coef_t k = {lk[0], lk[1], lk[2], lk[3], lk[4]};
    apply_map(xp, NULL, (flags & F_Z) ? z + zoff : NULL, y + yoff, B, C, S, c, k, flags);
#endif
}

/* ==== elementwise ================================================================================================= */

/* The elementwise pass over a (B, C, S) NCHW tensor, one coefficient set per map c (map_coef, common.cl).
 * CPU: each work-item a contiguous chunk of the flat tensor, walked a row run at a time (apply_run);
 * GPU: a 2-D grid over (values of a row, rows), neighbouring work-items on neighbouring values. */
__kernel void bn_apply(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                       __global const stype *aux, ulong auxoff, __global stype *out, ulong ooff, ulong C, ulong S, ulong total, ulong chunk,
                       __global const float *scale, __global const float *bias, __global const float *mean,
                       __global const float *var, __global const float *coef, float eps, uint flags) {
    __global const stype *xp = x + xoff;
    __global stype *op = out + ooff;
    __global const stype *gp = (flags & F_DX) ? dy + dyoff : NULL;
    /* aux: the residual z (forward, F_Z) or the forward's y whose sign masks dy (backward, F_RELU) */
    __global const stype *ep = (flags & (F_Z | F_RELU)) ? aux + auxoff : NULL;
#if defined(STRATEGY_CPU)
    ulong e = get_global_id(0) * chunk, e1 = min(e + chunk, total);
    while (e < e1) {
        ulong row = e / S, s = e - row * S;
        ulong run = min(S - s, e1 - e);
        coef_t k;
        map_coef(&k, row % C, scale, bias, mean, var, coef, eps, flags);
        apply_run(xp + e, gp ? gp + e : NULL, ep ? ep + e : NULL, op + e, run, k, flags);
        e += run;
    }
#else
    /* 2-D: dimension 1 walks the rows (b, c), dimension 0 the S values of a row; the map index comes from one
     * division per row, not per element */
    (void)chunk;
    (void)total;
    ulong rows = total / S, G0 = get_global_size(0);
    if (S >= 4 * G0) {
        /* long rows: four values of a row per trip (apply_strided) */
        for (ulong row = get_global_id(1); row < rows; row += get_global_size(1)) {
            coef_t k;
            map_coef(&k, row % C, scale, bias, mean, var, coef, eps, flags);
            ulong base = row * S;
            apply_strided(xp + base, gp ? gp + base : gp, ep ? ep + base : ep, op + base, S, get_global_id(0), G0, k,
                          flags);
        }
    } else {
        /* short rows: dimension 1 walks groups of four rows (the host sizes it so), one value of each per trip */
        for (ulong r0 = get_global_id(1) * 4; r0 < rows; r0 += get_global_size(1) * 4) {
            uint nr = (uint)min((ulong)4, rows - r0);
            coef_t k[4];
            for (uint j = 0; j < 4; ++j)
                map_coef(&k[j], (r0 + min(j, nr - 1)) % C, scale, bias, mean, var, coef, eps, flags);
            for (ulong s = get_global_id(0); s < S; s += G0) {
                float v[4], gv[4];
                for (uint j = 0; j < 4; ++j) {
                    v[j] = j < nr ? LOAD1(xp, (r0 + j) * S + s) : 0.0f;
                    gv[j] = (gp && j < nr) ? grad1(gp, ep, (r0 + j) * S + s, flags) : 0.0f;
                }
                for (uint j = 0; j < 4; ++j) {
                    float r = fma((v[j] - k[j].K) - k[j].m, k[j].k2, k[j].k3);
                    if (gp)
                        r = fma(k[j].k1, gv[j], r);
                    else if (j < nr)
                        r = act1(r, ep, (r0 + j) * S + s, flags);
                    if (j < nr)
                        STORE1(r, op, (r0 + j) * S + s);
                }
            }
        }
    }
#endif
}

/* ==== backward ==================================================================================================== */

/* Partial sums of dy and dy*(x - mean) per (map, slice), a per-map finalize that
 * writes the parameter gradients and the dx coefficients, then bn_apply (F_DX | F_COEF) for dx; or all of it in
 * one launch (bn_fused_backward). Statistics: the saved ones, or (F_STATS) recomputed into a stats coef buffer. */

/* Work-group (g, c): part[(c*G + g)*2 ..] = (sum dy, sum dy * (x - mean)) over slice g of map c. */
__kernel void bn_bwd_partial(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                             __global const stype *y, ulong yoff, __global stype *dz, ulong dzoff, ulong B, ulong C,
                             ulong S, uint G, __global const float *smean, __global const float *sinvstd,
                             __global const float *scoef, uint flags, __global float *part) {
    __local float lu[WG], lv[WG];
    uint g = get_group_id(0);
    ulong c = get_global_id(1);
    ulong N = B * S;
    float K, m, is, u, v;
    group_stats(c, smean, sinvstd, scoef, flags, &K, &m, &is);
    dsum_range(&u, &v, x + xoff, dy + dyoff, (flags & F_RELU) ? y + yoff : NULL, (flags & F_DZ) ? dz + dzoff : NULL,
               K, m, C, S, c, slice_begin(N, g, G), slice_begin(N, g + 1, G), flags);
    sum2_reduce_local(&u, &v, lu, lv);
    if (get_local_id(0) == 0) {
        part[(c * G + g) * 2] = u;
        part[(c * G + g) * 2 + 1] = v;
    }
}

/* From su = sum dy and sv = sum dy*(x - mean) of map c: dbias = su, dscale = invstd * sv; F_GRADS writes them
 * (alpha * g, plus beta * old with F_ACCUM); writes the dx coefficients to *out:
 *   k1 = scale*invstd, k2 = -k1*invstd*dscale/N, k3 = -k1*dbias/N  (dx = k1*dy + k2*(x - mean) + k3). */
static inline void bwd_coef(coef_t *out, float su, float sv, float K, float m, float is, ulong N, ulong c, __global const float *scale,
                       __global float *dscale, __global float *dbias, float alpha, float beta, uint flags) {
    float gbias = su, gscale = sv * is;
    if (flags & F_GRADS) {
        dscale[c] = GRAD_UPDATE(dscale[c], gscale, alpha, beta, flags);
        dbias[c] = GRAD_UPDATE(dbias[c], gbias, alpha, beta, flags);
    }
    float k1 = (flags & F_AFFINE) ? scale[c] * is : is;
    float invN = 1.0f / (float)N;
    coef_t k = {K, m, k1, DX_K2(k1, is, gscale, invN), DX_K3(k1, gbias, invN)};
    *out = k;
}

/* Sums of the G partials of map c (fixed order: deterministic), gradients, dx coefficients to coef (F_DX). CPU:
 * one work-item per map. GPU: one work-group per map, each item summing a contiguous run of the partials, then
 * the tree. */
__kernel void bn_bwd_finalize(__global const float *part, uint G, ulong N, ulong C, __global const float *smean,
                              __global const float *sinvstd, __global const float *scoef,
                              __global const float *scale, __global float *dscale, __global float *dbias,
                              __global float *coef, float alpha, float beta, uint flags) {
    float u, v, K, m, is;
    ulong c;
    GROUP_SUM_SPACE;
    if (!sum_group_parts(&u, &v, &c, C, part, 2 * (ulong)G, 1, 2, G, lu, lv))
        return;
    group_stats(c, smean, sinvstd, scoef, flags, &K, &m, &is);
    coef_t k;
    bwd_coef(&k, u, v, K, m, is, N, c, scale, dscale, dbias, alpha, beta, flags);
    if (flags & F_DX)
        coef_store(k, coef, c);
}

/* Backward in one launch, one work-group per map: (F_STATS: statistics of x first), the two sums, the gradients,
 * then dx while x and dy are still in cache. */
__kernel void bn_fused_backward(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                                __global const stype *y, ulong yoff, __global stype *dz, ulong dzoff, __global stype *dx, ulong dxoff, ulong B, ulong C, ulong S, __global const float *scale,
                                __global const float *smean, __global const float *sinvstd, __global float *dscale,
                                __global float *dbias, float alpha, float beta, float eps, uint flags) {
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    __local float lk[CN_COEF_STRIDE];
    ulong c = get_group_id(0), N = B * S;
    __global const stype *xp = x + xoff;
    __global const stype *gp = dy + dyoff;
    __global const stype *yp = (flags & F_RELU) ? y + yoff : NULL;
    /* barriers stay outside flag-dependent branches (POCL does not allow them there) */
    float K = (flags & F_STATS) ? map_shift(xp, S, c) : 0.0f;
    acc_t a;
    acc_init(&a);
    if (flags & F_STATS)
        acc_range(&a, xp, C, S, c, 0, N, K);
    acc_reduce_local(&a, ln, lm, lq);
    if (get_local_id(0) == 0) {
        lk[0] = K;
        lk[1] = (flags & F_STATS) ? acc_mean(&a) : smean[c];
        lk[2] = (flags & F_STATS) ? rsqrt(acc_m2(&a) / (float)N + eps) : sinvstd[c];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float m = lk[1], is = lk[2], u, v;
    K = lk[0];
    dsum_range(&u, &v, xp, gp, yp, (flags & F_DZ) ? dz + dzoff : NULL, K, m, C, S, c, 0, N, flags);
    sum2_reduce_local(&u, &v, lm, lq);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
        coef_t k;
        bwd_coef(&k, u, v, K, m, is, N, c, scale, dscale, dbias, alpha, beta, flags);
        lk[0] = k.K;
        lk[1] = k.m;
        lk[2] = k.k1;
        lk[3] = k.k2;
        lk[4] = k.k3;
    }
    /* the global fence orders the first pass's dz stores before the reads below when dz is dy itself */
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
    if (flags & F_DX) {
        coef_t k = {lk[0], lk[1], lk[2], lk[3], lk[4]};
#if !defined(CLNORM_BWD_NO_DZ_REREAD)
        if ((flags & F_DZ) && N * ESIZE > BWD_REREAD_BYTES) {
            /* a map too large for the cache: its x, dy and y come back from memory anyway, so read g from dz (one
             * stream instead of two; g is exact in every dtype, dy or 0) */
            apply_map(xp, dz + dzoff, NULL, dx + dxoff, B, C, S, c, k, 0u);
        } else
#endif
            /* dx from dy masked by y again, both still in cache (dz went out with streaming stores, so reading it
             * back would come from DRAM; dz over dy is fine: masking the stored g again gives g) */
            apply_map(xp, gp, yp, dx + dxoff, B, C, S, c, k, flags & F_RELU);
    }
}
