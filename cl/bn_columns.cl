/* The columns path: the tensor as a (rows, K) matrix with one statistic per column (NCHW PER_ACTIVATION,
 * SPATIAL with S == 1, NHWC). Its helpers, the column tiles, are bn_columns_tile.cl (included before this file for
 * 16-column and 1-column tiles). Two forms:
 * - one launch per operation (bn_pa_forward, bn_pa_backward): each work-item owns whole columns, all rows;
 * - split by rows, when the columns alone cannot fill the device (the kernels below). */

/* Per-activation forward (training with F_STATS, else inference): CPU 16 columns per work-item, GPU one. */
__kernel void bn_pa_forward(__global const stype *x, ulong xoff, __global const stype *z, ulong zoff,
                            __global stype *y, ulong yoff, ulong B, ulong K,
                            __global const float *scale, __global const float *bias, __global const float *mean_in,
                            __global const float *var_in, __global float *rmean, __global float *rvar,
                            __global float *smean, __global float *sinvstd, float factor, float eps, float unbias,
                            ulong pC, ulong pS, uint flags) {
    ulong j = get_global_id(0);
    /* the residual, when given; else x, never read (NO_NULL_LOADS in common.cl) */
    __global const stype *zp = (flags & F_Z) ? z + zoff : x + xoff;
#if defined(STRATEGY_CPU)
    /* tiles of 256 columns (16 groups of 16), strided over the work-items; the last tile's odd columns one by one */
    for (ulong t0 = j * CN_TILE_COLS; t0 < K; t0 += get_global_size(0) * CN_TILE_COLS) {
        ulong width = min((ulong)CN_TILE_COLS, K - t0);
        uint ng = (uint)(width / 16);
        if (ng)
            pa_forward_w16(x + xoff + t0, zp ? zp + t0 : zp, y + yoff + t0, B, K, t0, ng, scale, bias, mean_in, var_in, rmean, rvar, smean,
                           sinvstd, factor, eps, unbias, pC, pS, flags);
        for (ulong k = t0 + ng * 16; k < t0 + width; ++k)
            pa_forward_w1(x + xoff + k, zp ? zp + k : zp, y + yoff + k, B, K, k, 1, scale, bias, mean_in, var_in, rmean, rvar, smean, sinvstd,
                          factor, eps, unbias, pC, pS, flags);
    }
#else
    ulong k = j;
    if (k < K)
        pa_forward_w1(x + xoff + k, zp ? zp + k : zp, y + yoff + k, B, K, k, 1, scale, bias, mean_in, var_in, rmean, rvar, smean, sinvstd,
                          factor, eps, unbias, pC, pS, flags);
#endif
}

/* Per-activation backward, one launch: CPU 16 columns per work-item, GPU one. */
__kernel void bn_pa_backward(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                             __global const stype *y, ulong yoff, __global stype *dz, ulong dzoff, __global stype *dx, ulong dxoff, ulong B, ulong K, __global const float *scale,
                             __global const float *smean, __global const float *sinvstd, __global float *dscale,
                             __global float *dbias, float alpha, float beta, float eps, ulong pC, ulong pS,
                             uint flags) {
    ulong j = get_global_id(0);
    __global const stype *yp = (flags & F_RELU) ? y + yoff : x + xoff; /* x: never read (NO_NULL_LOADS) */
    __global stype *dzp = (flags & F_DZ) ? dz + dzoff : NULL;
    __global stype *dxp = (flags & F_DX) ? dx + dxoff : NULL; /* no arithmetic on a NULL dx */
#if defined(STRATEGY_CPU)
    /* tiles of 256 columns (16 groups of 16), strided over the work-items; the last tile's odd columns one by one */
    for (ulong t0 = j * CN_TILE_COLS; t0 < K; t0 += get_global_size(0) * CN_TILE_COLS) {
        ulong width = min((ulong)CN_TILE_COLS, K - t0);
        uint ng = (uint)(width / 16);
        if (ng)
            pa_backward_w16(x + xoff + t0, dy + dyoff + t0, yp ? yp + t0 : yp, dzp ? dzp + t0 : dzp, dxp ? dxp + t0 : dxp, B, K, t0, ng, scale, smean, sinvstd,
                            dscale, dbias, alpha, beta, eps, pC, pS, flags);
        for (ulong k = t0 + ng * 16; k < t0 + width; ++k)
            pa_backward_w1(x + xoff + k, dy + dyoff + k, yp ? yp + k : yp, dzp ? dzp + k : dzp, dxp ? dxp + k : dxp, B, K, k, 1, scale, smean, sinvstd, dscale,
                           dbias, alpha, beta, eps, pC, pS, flags);
    }
#else
    ulong k = j;
    if (k < K)
        pa_backward_w1(x + xoff + k, dy + dyoff + k, yp ? yp + k : yp, dzp ? dzp + k : dzp, dxp ? dxp + k : dxp, B, K, k, 1, scale, smean, sinvstd, dscale,
                           dbias, alpha, beta, eps, pC, pS, flags);
#endif
}

/* Column layouts with few columns and many rows (NHWC SPATIAL, tall PER_ACTIVATION), split by rows so that
 * enough work-items share the work: partial statistics per (row chunk, column), a per-column merge, then a 2-D
 * elementwise pass; the backward likewise. Row chunk r of R covers rows [slice_begin(rows, r, R), ...r + 1).
 * Partials of chunk r: part[r*2K + k] and part[r*2K + K + k] (two values per column, see each kernel).
 * Per-column coefficients (coef_t, 5 floats) are indexed by column; parameter vectors through param_index. */

#if defined(STRATEGY_CPU)
/* Narrow rows, walked flat. A CPU tile walks its columns in groups of 16 and the rest one column at a time: where the
 * whole row is one tile of K columns, K not a multiple of 16 (NHWC with C = 3, 24, 60, 72, ...), each odd column's
 * walk re-reads every row of the chunk, and the elementwise pass stores those columns' values one by one beside
 * streamed vectors. There a row chunk is walked flat instead, as super-rows of L = lcm(K, 16) values (P = L / K
 * rows): L lanes of whole vectors, lane j holding column j % K, folded per column after the walk. flat_period gives
 * L, or 0 where the flat walk does not apply (K a multiple of 16, K a tile or wider, L over CN_TILE_COLS). With
 * K < CN_TILE_COLS the grid's dimension 0 is one item (launch_col_grid), which walks its chunk alone. */
static inline uint flat_period(ulong K) {
    if (K >= CN_TILE_COLS || (K & 15) == 0)
        return 0;
    ulong L = K * (16 / (K & (~K + 1))); /* K & -K: the largest power of two dividing K, here below 16 */
    return L <= CN_TILE_COLS ? (uint)L : 0;
}

/* bn_col_partial's chunk [b0, b1) walked flat: the lanes' statistics (shifted by their column's row-0 value, as the
 * partials are), and those of the rows left over after the last super-row; then per column its P lanes (equal
 * counts) and the leftover rows merged: the count-weighted mean, M2 = their M2 + their spread about that mean. */
static void col_stats_flat(__global const stype *xp, ulong b0, ulong b1, ulong K, uint L, __global float *pm,
                           __global float *pq) {
    uint P = L / (uint)K;
    ulong nsr = (b1 - b0) / P, r0 = b0 + nsr * P;
    float16 sh[CN_TILE_COLS / 16], m[CN_TILE_COLS / 16], q[CN_TILE_COLS / 16];
    float *shf = (float *)sh, *mf = (float *)m, *qf = (float *)q;
    for (uint j = 0; j < L; ++j)
        shf[j] = LOAD1(xp, j % K);
    pa_stats_from_w16(xp + b0 * K, 0, nsr, L, L / 16, sh, m, q);
    float n = (float)(b1 - b0), fs = (float)nsr, fl = (float)(b1 - r0);
    for (uint k = 0; k < K; ++k) {
        float ml, ql, sum = 0.0f;
        pa_stats_from_w1(xp + k, r0, b1, K, 1, shf + k, &ml, &ql);
        for (uint p = 0; p < P; ++p)
            sum += mf[k + p * K];
        float mean = b1 > b0 ? fma(fs, sum, fl * ml) / n : 0.0f, d = ml - mean, m2 = fma(fl * d, d, ql);
        for (uint p = 0; p < P; ++p) {
            d = mf[k + p * K] - mean;
            m2 += fma(fs * d, d, qf[k + p * K]);
        }
        pm[k] = mean;
        pq[k] = m2;
    }
}
#endif

/* CPU: tiles of 256 columns strided over dimension 0 (narrow rows: the chunk walked flat, see flat_period); GPU: one
 * column per work-item. Dimension 1: the chunk. */
__kernel void bn_col_partial(__global const stype *x, ulong xoff, ulong rows, ulong K, uint R,
                             __global float *part) {
    uint r = get_global_id(1);
    ulong b0 = slice_begin(rows, r, R), b1 = slice_begin(rows, r + 1, R);
    __global const stype *xp = x + xoff;
    __global float *pm = part + (ulong)r * 2 * K, *pq = pm + K;
    float sh1, m1, q1;
#if defined(STRATEGY_CPU)
    uint L = flat_period(K);
    if (L) {
        col_stats_flat(xp, b0, b1, K, L, pm, pq);
        return;
    }
    for (ulong t0 = get_global_id(0) * CN_TILE_COLS; t0 < K; t0 += get_global_size(0) * CN_TILE_COLS) {
        ulong width = min((ulong)CN_TILE_COLS, K - t0);
        uint ng = (uint)(width / 16);
        if (ng) {
            float16 sh[CN_TILE_COLS / 16], m[CN_TILE_COLS / 16], q[CN_TILE_COLS / 16];
            pa_stats_w16(xp + t0, b0, b1, K, ng, sh, m, q);
            for (uint g = 0; g < ng; ++g) {
                vstore16(m[g], 0, pm + t0 + g * 16);
                vstore16(q[g], 0, pq + t0 + g * 16);
            }
        }
        for (ulong k = t0 + ng * 16; k < t0 + width; ++k) {
            pa_stats_w1(xp + k, b0, b1, K, 1, &sh1, &m1, &q1);
            pm[k] = m1;
            pq[k] = q1;
        }
    }
#else
    ulong k = get_global_id(0);
    if (k < K) {
        pa_stats_w1(xp + k, b0, b1, K, 1, &sh1, &m1, &q1);
        pm[k] = m1;
        pq[k] = q1;
    }
#endif
}

/* Per column: merge the R chunks (fixed order: deterministic), finalise, coefficients to scoef[5k..]. CPU one
 * work-item per column, GPU one work-group. */
__kernel void bn_col_finalize(__global const stype *x, ulong xoff, __global const float *part, uint R, ulong rows,
                              ulong K, __global const float *scale, __global const float *bias,
                              __global float *rmean, __global float *rvar, __global float *smean,
                              __global float *sinvstd, __global float *scoef, float factor, float eps, float unbias,
                              ulong pC, ulong pS, uint flags) {
    acc_t a;
    ulong k;
    GROUP_MERGE_SPACE;
    if (!merge_group_parts(&a, &k, K, part, 1, K, 2 * K, R, rows, ln, lm, lq))
        return;
    coef_t kc;
    finalize_stats(&kc, &a, LOAD1(x + xoff, k), rows, param_index(k, pC, pS, flags), scale, bias, rmean, rvar, smean,
                   sinvstd, factor, eps, unbias, flags);
    coef_store(kc, scoef, k);
}

/* out = k2 * ((x - K) - m) + k3 (+ k1 * dy with F_DX) with column coefficients: F_COEF from coef[5k..], else
 * (inference) from the parameter vectors. */
static inline void col_coef(coef_t *out, ulong k, __global const float *scale, __global const float *bias, __global const float *mean,
                       __global const float *var, __global const float *coef, float eps, ulong pC, ulong pS,
                       uint flags) {
    if (flags & F_COEF)
        coef_load(out, coef, k);
    else
        map_coef(out, param_index(k, pC, pS, flags), scale, bias, mean, var, coef, eps, flags);
}

#if defined(STRATEGY_CPU)
/* the coefficients of columns (c0 + j) % K, j < n, as five float arrays (a tile's: c0 its first column, n its width;
 * the flat walk's lanes: n = L) */
static inline void col_coefs(ulong c0, uint n, ulong K, __global const float *scale, __global const float *bias,
                             __global const float *mean, __global const float *var, __global const float *coef,
                             float eps, ulong pC, ulong pS, uint flags, float *cK, float *cm, float *c1, float *c2,
                             float *c3) {
    for (uint j = 0; j < n; ++j) {
        coef_t c;
        col_coef(&c, (c0 + j) % K, scale, bias, mean, var, coef, eps, pC, pS, flags);
        cK[j] = c.K;
        cm[j] = c.m;
        c1[j] = c.k1;
        c2[j] = c.k2;
        c3[j] = c.k3;
    }
}

/* bn_col_apply's 16 values at element e, with coefficient vectors K, m, k1, k2, k3 */
static inline void col_apply16(__global const stype *xp, __global const stype *gp, __global const stype *ep,
                               __global stype *op, ulong e, float16 cK, float16 cm, float16 c1, float16 c2,
                               float16 c3, uint flags) {
    float16 v = fma((LOAD16(xp, e) - cK) - cm, c2, c3);
    if (gp)
        v = fma(c1, grad16(gp, ep, e, flags), v);
    else
        v = act16(v, ep, e, flags);
    store16_stream_any(v, op + e);
}

/* bn_col_apply at element e, with the coefficients at index j of the arrays */
static inline void col_apply1(__global const stype *xp, __global const stype *gp, __global const stype *ep,
                              __global stype *op, ulong e, uint j, const float *cK, const float *cm, const float *c1,
                              const float *c2, const float *c3, uint flags) {
    float v = fma((LOAD1(xp, e) - cK[j]) - cm[j], c2[j], c3[j]);
    if (gp)
        v = fma(c1[j], grad1(gp, ep, e, flags), v);
    else
        v = act1(v, ep, e, flags);
    STORE1(v, op, e);
}

/* bn_col_apply's chunk walked flat (flat_period): elements [b0 K, b1 K) one by one up to the output's vector
 * alignment, then whole vectors (streamed), then the last few. The coefficients are laid out over L lanes from
 * the column of the first whole vector, c0: element e has lane (e % K - c0) mod K, and the vectors walk the lanes
 * in turn. */
static void col_apply_flat(__global const stype *xp, __global const stype *gp, __global const stype *ep,
                           __global stype *op, ulong b0, ulong b1, ulong K, uint L, __global const float *scale,
                           __global const float *bias, __global const float *mean, __global const float *var,
                           __global const float *coef, float eps, ulong pC, ulong pS, uint flags) {
    ulong e0 = b0 * K, e1 = b1 * K;
    ulong mis = ((ulong)(op + e0) % (16 * ESIZE)) / ESIZE;
    ulong ea = min(e1, e0 + ((16 - mis) & 15));
    uint c0 = (uint)(ea % K), nv = L / 16;
    float16 vK[CN_TILE_COLS / 16], vm[CN_TILE_COLS / 16], v1[CN_TILE_COLS / 16], v2[CN_TILE_COLS / 16],
        v3[CN_TILE_COLS / 16];
    float *cK = (float *)vK, *cm = (float *)vm, *c1 = (float *)v1, *c2 = (float *)v2, *c3 = (float *)v3;
    col_coefs(c0, L, K, scale, bias, mean, var, coef, eps, pC, pS, flags, cK, cm, c1, c2, c3);
    ulong e = e0;
    for (; e < ea; ++e)
        col_apply1(xp, gp, ep, op, e, (uint)((e % K + K - c0) % K), cK, cm, c1, c2, c3, flags);
    for (uint g = 0; e + 16 <= e1; e += 16) {
        col_apply16(xp, gp, ep, op, e, vK[g], vm[g], v1[g], v2[g], v3[g], flags);
        g = g + 1 == nv ? 0 : g + 1;
    }
    for (; e < e1; ++e)
        col_apply1(xp, gp, ep, op, e, (uint)((e % K + K - c0) % K), cK, cm, c1, c2, c3, flags);
}
#endif

__kernel void bn_col_apply(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                           __global const stype *aux, ulong auxoff, __global stype *out, ulong ooff, ulong rows, ulong K, uint R, __global const float *scale,
                           __global const float *bias, __global const float *mean, __global const float *var,
                           __global const float *coef, float eps, ulong pC, ulong pS, uint flags) {
    uint r = get_global_id(1);
    ulong b0 = slice_begin(rows, r, R), b1 = slice_begin(rows, r + 1, R);
    __global const stype *xp = x + xoff;
    __global const stype *gp = (flags & F_DX) ? dy + dyoff : NULL;
    /* aux: the residual z (forward, F_Z) or the forward's y whose sign masks dy (backward, F_RELU); else x, never
     * read (NO_NULL_LOADS in common.cl) */
    __global const stype *ep = (flags & (gp ? F_RELU : F_Z)) ? aux + auxoff : xp;
    __global stype *op = out + ooff;
#if defined(STRATEGY_CPU)
    uint L = flat_period(K);
    if (L) {
        col_apply_flat(xp, gp, ep, op, b0, b1, K, L, scale, bias, mean, var, coef, eps, pC, pS, flags);
        return;
    }
    for (ulong t0 = get_global_id(0) * CN_TILE_COLS; t0 < K; t0 += get_global_size(0) * CN_TILE_COLS) {
        uint width = (uint)min((ulong)CN_TILE_COLS, K - t0), ng = width / 16;
        /* the tile's coefficients as float16 arrays (aligned whole-vector reads in the row loop: read through
         * vload16 from float arrays, they were assembled from 8-byte pieces, as were the x loads beside them) */
        float16 vK[CN_TILE_COLS / 16], vm[CN_TILE_COLS / 16], v1[CN_TILE_COLS / 16], v2[CN_TILE_COLS / 16],
            v3[CN_TILE_COLS / 16];
        float *cK = (float *)vK, *cm = (float *)vm, *c1 = (float *)v1, *c2 = (float *)v2, *c3 = (float *)v3;
        col_coefs(t0, width, K, scale, bias, mean, var, coef, eps, pC, pS, flags, cK, cm, c1, c2, c3);
        for (ulong b = b0; b < b1; ++b) {
            ulong base = b * K + t0;
            for (uint g = 0; g < ng; ++g)
                col_apply16(xp, gp, ep, op, base + g * 16, vK[g], vm[g], v1[g], v2[g], v3[g], flags);
            for (uint j = ng * 16; j < width; ++j)
                col_apply1(xp, gp, ep, op, base + j, j, cK, cm, c1, c2, c3, flags);
        }
    }
#else
    ulong k = get_global_id(0);
    if (k >= K)
        return;
    coef_t c;
    col_coef(&c, k, scale, bias, mean, var, coef, eps, pC, pS, flags);
    ulong b = b0;
    /* four rows per trip: four loads of x (and of dy) in flight, then the four stores (x and out may be one
     * buffer: each element is read, then written, by the same item) */
    for (; b + 4 <= b1; b += 4) {
        float v[4], gv[4];
        for (uint j = 0; j < 4; ++j) {
            v[j] = LOAD1(xp, (b + j) * K + k);
            gv[j] = gp ? grad1(gp, ep, (b + j) * K + k, flags) : 0.0f;
        }
        for (uint j = 0; j < 4; ++j) {
            float r = fma((v[j] - c.K) - c.m, c.k2, c.k3);
            r = gp ? fma(c.k1, gv[j], r) : act1(r, ep, (b + j) * K + k, flags);
            STORE1(r, op, (b + j) * K + k);
        }
    }
    for (; b < b1; ++b) {
        float v = fma((LOAD1(xp, b * K + k) - c.K) - c.m, c.k2, c.k3);
        v = gp ? fma(c.k1, grad1(gp, ep, b * K + k, flags), v) : act1(v, ep, b * K + k, flags);
        STORE1(v, op, b * K + k);
    }
#endif
}

#if defined(STRATEGY_CPU)
/* bn_col_bwd_partial's chunk [b0, b1) walked flat (flat_period): each column's statistics laid out over its lanes,
 * the lanes' sums, then per column the sums of the rows left over after the last super-row and of its lanes */
static void col_sums_flat(__global const stype *xp, __global const stype *gp, __global const stype *yp,
                          __global stype *dzp, ulong b0, ulong b1, ulong rows, ulong K, uint L,
                          __global const float *smean, __global const float *sinvstd, __global const float *scoef,
                          ulong pC, ulong pS, uint flags, __global float *pu, __global float *pv) {
    uint P = L / (uint)K;
    ulong nsr = (b1 - b0) / P, r0 = b0 + nsr * P, o = b0 * K;
    float16 sh[CN_TILE_COLS / 16], m[CN_TILE_COLS / 16], u[CN_TILE_COLS / 16], v[CN_TILE_COLS / 16];
    float *shf = (float *)sh, *mf = (float *)m, *uf = (float *)u, *vf = (float *)v;
    for (uint k = 0; k < K; ++k) {
        float is;
        pa_group_stats_w1(xp + k, rows, K, k, 1, smean, sinvstd, scoef, pC, pS, flags, shf + k, mf + k, &is);
    }
    for (uint j = K; j < L; ++j) {
        shf[j] = shf[j - K];
        mf[j] = mf[j - K];
    }
    pa_sums_w16(xp + o, gp + o, yp + o, dzp ? dzp + o : dzp, 0, nsr, L, L / 16, sh, m, u, v, flags);
    for (uint k = 0; k < K; ++k) {
        float su, sv;
        pa_sums_w1(xp + k, gp + k, yp + k, dzp ? dzp + k : dzp, r0, b1, K, 1, shf + k, mf + k, &su, &sv, flags);
        for (uint p = 0; p < P; ++p) {
            su += uf[k + p * K];
            sv += vf[k + p * K];
        }
        pu[k] = su;
        pv[k] = sv;
    }
}
#endif

/* Chunk r: part[r*2K + k] = sum dy, part[r*2K + K + k] = sum dy * (x - mean) of column k over the chunk's rows;
 * statistics from scoef (F_COEF, recomputed) or the saved ones. */
__kernel void bn_col_bwd_partial(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                                 __global const stype *y, ulong yoff, __global stype *dz, ulong dzoff, ulong rows, ulong K, uint R, __global const float *smean,
                                 __global const float *sinvstd, __global const float *scoef, ulong pC, ulong pS,
                                 uint flags, __global float *part) {
    uint r = get_global_id(1);
    ulong b0 = slice_begin(rows, r, R), b1 = slice_begin(rows, r + 1, R);
    __global const stype *xp = x + xoff;
    __global const stype *gp = dy + dyoff;
    __global const stype *yp = (flags & F_RELU) ? y + yoff : xp; /* xp: never read (NO_NULL_LOADS) */
    __global stype *dzp = (flags & F_DZ) ? dz + dzoff : NULL;
    __global float *pu = part + (ulong)r * 2 * K, *pv = pu + K;
    float sh1, m1, is1, u1, v1;
#if defined(STRATEGY_CPU)
    uint L = flat_period(K);
    if (L) {
        col_sums_flat(xp, gp, yp, dzp, b0, b1, rows, K, L, smean, sinvstd, scoef, pC, pS, flags, pu, pv);
        return;
    }
    for (ulong t0 = get_global_id(0) * CN_TILE_COLS; t0 < K; t0 += get_global_size(0) * CN_TILE_COLS) {
        ulong width = min((ulong)CN_TILE_COLS, K - t0);
        uint ng = (uint)(width / 16);
        if (ng) {
            float16 sh[CN_TILE_COLS / 16], m[CN_TILE_COLS / 16], is[CN_TILE_COLS / 16], u[CN_TILE_COLS / 16],
                v[CN_TILE_COLS / 16];
            pa_group_stats_w16(xp + t0, rows, K, t0, ng, smean, sinvstd, scoef, pC, pS, flags, sh, m, is);
            pa_sums_w16(xp + t0, gp + t0, yp ? yp + t0 : yp, dzp ? dzp + t0 : dzp, b0, b1, K, ng, sh, m, u, v, flags);
            for (uint g = 0; g < ng; ++g) {
                vstore16(u[g], 0, pu + t0 + g * 16);
                vstore16(v[g], 0, pv + t0 + g * 16);
            }
        }
        for (ulong k = t0 + ng * 16; k < t0 + width; ++k) {
            pa_group_stats_w1(xp + k, rows, K, k, 1, smean, sinvstd, scoef, pC, pS, flags, &sh1, &m1, &is1);
            pa_sums_w1(xp + k, gp + k, yp ? yp + k : yp, dzp ? dzp + k : dzp, b0, b1, K, 1, &sh1, &m1, &u1, &v1, flags);
            pu[k] = u1;
            pv[k] = v1;
        }
    }
#else
    ulong k = get_global_id(0);
    if (k < K) {
        pa_group_stats_w1(xp + k, rows, K, k, 1, smean, sinvstd, scoef, pC, pS, flags, &sh1, &m1, &is1);
        pa_sums_w1(xp + k, gp + k, yp ? yp + k : yp, dzp ? dzp + k : dzp, b0, b1, K, 1, &sh1, &m1, &u1, &v1, flags);
        pu[k] = u1;
        pv[k] = v1;
    }
#endif
}

/* Per column: sums of the R chunks (fixed order: deterministic), gradients, dx coefficients to coef[5k..]
 * (F_DX). CPU one work-item per column, GPU one work-group. */
__kernel void bn_col_bwd_finalize(__global const stype *x, ulong xoff, __global const float *part, uint R,
                                  ulong rows, ulong K, __global const float *smean, __global const float *sinvstd,
                                  __global const float *scoef, __global const float *scale, __global float *dscale,
                                  __global float *dbias, __global float *coef, float alpha, float beta, ulong pC,
                                  ulong pS, uint flags) {
    float su, sv, sh, m, is;
    ulong k;
    GROUP_SUM_SPACE;
    if (!sum_group_parts(&su, &sv, &k, K, part, 1, K, 2 * K, R, lu, lv))
        return;
    pa_group_stats_w1(x + xoff + k, rows, K, k, 1, smean, sinvstd, scoef, pC, pS, flags, &sh, &m, &is);
    pa_grads_w1(k, 1, (float)rows, scale, dscale, dbias, alpha, beta, pC, pS, flags, &su, &sv, &is);
    if (flags & F_DX) {
        coef_t c = {sh, m, su, sv, is};
        coef_store(c, coef, k);
    }
}
