/* The columns path's tiles (its kernels are in bn_columns.cl). The tensor is a (B, K) matrix with one statistic per
 * column (NCHW PER_ACTIVATION, SPATIAL with S == 1, and NHWC). A work-item owns a tile of ng groups of PA_W
 * adjacent columns over all B rows: statistics, running / saved statistics and the output (or the backward) of its
 * columns, in one launch. Rows are walked in blocks and each row's tile is read contiguously (ng * PA_W values),
 * which keeps a CPU's prefetchers busy. The host includes this file twice: PA_W 16 (tiles of up to 16 float16
 * groups = 256 columns, CPU strategy) and PA_W 1 (one column: tails, and the GPU strategy where neighbouring work-
 * items take neighbouring columns). */

#if PA_W == 16
#define TG 16
#define VT float16
#define PLD(p, k) param_load16((p), (k), pC, pS, flags)
#define PST(v, p, k) param_store16((v), (p), (k), pC, pS, flags)
#define XLD(p) LOAD16((p), 0)
#define XST(v, p) store16_stream_any((v), (p))
#define FN(name) name##_w16
#define ACTV(v, zp) act16((v), (zp), 0, flags)
#define GRADV(gp, yp) grad16((gp), (yp), 0, flags)
#elif PA_W == 1
#define TG 1
#define VT float
#define PLD(p, k) ((p)[param_index((k), pC, pS, flags)])
#define PST(v, p, k) ((p)[param_index((k), pC, pS, flags)] = (v))
#define XLD(p) LOAD1((p), 0)
#define XST(v, p) STORE1((v), (p), 0)
#define FN(name) name##_w1
#define ACTV(v, zp) act1((v), (zp), 0, flags)
#define GRADV(gp, yp) grad1((gp), (yp), 0, flags)
#endif

/* Statistics of the tile's columns over rows [b0, b1), each shifted by shift[g] (see acc_t): blocks of 8
 * rows, two-pass (the second pass re-reads the block from L1), compensated Chan merge. Column mean = shift + m.
 * The first pass walks a group's 8 rows, K values apart, then the next group's: with rows of 512 bytes or more
 * that is 8 short streams the hardware prefetchers lose, so each load also prefetches its row of the next block
 * (CN_PREFETCH). AMD EPYC (Zen 4) VM, POCL 3.1, 2 threads: NHWC training forward (32,256,28,28) 1.78-1.89 ->
 * 1.46-1.48 ms, (64,128,28,28) 1.78-1.93 -> 1.53-1.62 ms; rows of 256 bytes ((8,64,16,32,32)) ran no faster with it
 * and do without. */
static inline void FN(pa_stats_from)(__global const stype *xp, ulong b0, ulong b1, ulong K, uint ng, const VT *shift,
                                     VT *m, VT *m2) {
    VT am[TG], amc[TG], aq[TG], aqc[TG];
    for (uint g = 0; g < ng; ++g)
        am[g] = amc[g] = aq[g] = aqc[g] = (VT)(0.0f);
    ulong n = 0;
    const int long_rows = K * ESIZE >= 512;
    for (ulong b = b0; b < b1; b += 8) {
        uint nb = (uint)min((ulong)8, b1 - b);
        float inv = 1.0f / (float)nb;
        ulong nt = n + nb;
        float w = (float)nb / (float)nt, naw = (float)n * w;
        __global const stype *rows = xp + b * K;
        for (uint g = 0; g < ng; ++g) {
            __global const stype *p = rows + g * PA_W;
            VT s = (VT)(0.0f);
            for (uint i = 0; i < nb; ++i) {
                if (long_rows)
                    CN_PREFETCH(p + (i + 8) * K);
                s += XLD(p + i * K) - shift[g];
            }
            VT mb = s * inv, d1 = (VT)(0.0f), d2 = (VT)(0.0f);
            for (uint i = 0; i < nb; ++i) {
                VT d = (XLD(p + i * K) - shift[g]) - mb;
                d1 += d;
                d2 = fma(d, d, d2);
            }
            VT bm, bq;
            TWO_PASS_FINISH(VT, mb, d1, d2, inv, bm, bq);
            CHAN_MERGE(VT, am[g], amc[g], aq[g], aqc[g], bm, bq, w, naw);
        }
        n = nt;
    }
    for (uint g = 0; g < ng; ++g) {
        VT q = aq[g] - aqc[g];
        m[g] = am[g] - amc[g];
        m2[g] = q < 0.0f ? (VT)(0.0f) : q;
    }
}
/* pa_stats_from with each column's shift its value in row 0 of xp */
static inline void FN(pa_stats)(__global const stype *xp, ulong b0, ulong b1, ulong K, uint ng, VT *shift, VT *m, VT *m2) {
    for (uint g = 0; g < ng; ++g)
        shift[g] = XLD(xp + g * PA_W);
    FN(pa_stats_from)(xp, b0, b1, K, ng, shift, m, m2);
}

/* Forward of the tile at column k0. F_STATS: batch statistics (training), running update (F_RUNNING), saved
 * statistics (F_SAVE); else mean / var come from mean_in / var_in (inference). Parameter vectors are indexed
 * through param_index (pC, pS, F_PMAP). */
static inline void FN(pa_forward)(__global const stype *xp, __global const stype *zp, __global stype *yp, ulong B, ulong K, ulong k0, uint ng,
                           __global const float *scale, __global const float *bias, __global const float *mean_in,
                           __global const float *var_in, __global float *rmean, __global float *rvar,
                           __global float *smean, __global float *sinvstd, float factor, float eps, float unbias,
                           ulong pC, ulong pS, uint flags) {
    VT shift[TG], m[TG], a[TG], c[TG];
    if (flags & F_STATS)
        FN(pa_stats)(xp, 0, B, K, ng, shift, m, a);
    for (uint g = 0; g < ng; ++g) {
        ulong k = k0 + g * PA_W;
        VT invstd;
        if (flags & F_STATS) {
            VT var = a[g] / (float)B, mean = shift[g] + m[g];
            invstd = rsqrt(var + eps);
            if (flags & F_RUNNING) {
                PST(RUNNING_UPDATE(PLD(rmean, k), mean, factor), rmean, k);
                PST(RUNNING_UPDATE(PLD(rvar, k), var * unbias, factor), rvar, k);
            }
            if (flags & F_SAVE) {
                PST(mean, smean, k);
                PST(invstd, sinvstd, k);
            }
        } else {
            shift[g] = (VT)(0.0f);
            m[g] = PLD(mean_in, k);
            invstd = rsqrt(PLD(var_in, k) + eps);
        }
        a[g] = (flags & F_AFFINE) ? invstd * PLD(scale, k) : invstd;
        c[g] = (flags & F_AFFINE) ? PLD(bias, k) : (VT)(0.0f);
    }
    for (ulong b = 0; b < B; ++b)
        for (uint g = 0; g < ng; ++g) {
            ulong i = b * K + g * PA_W;
            XST(ACTV(fma((XLD(xp + i) - shift[g]) - m[g], a[g], c[g]), zp ? zp + i : zp), yp + i);
        }
}

/* The statistics of the tile's columns for the backward: recomputed (F_STATS: *is gets M2 here, the caller turns
 * it into invstd), from a per-column stats coef buffer (F_COEF: shift, m, invstd at scoef[5k..]), or the saved
 * mean and invstd (shift 0). */
static inline void FN(pa_group_stats)(__global const stype *xp, ulong B, ulong K, ulong k0, uint ng,
                               __global const float *smean, __global const float *sinvstd,
                               __global const float *scoef, ulong pC, ulong pS, uint flags, VT *shift, VT *m, VT *is) {
    if (flags & F_STATS) {
        FN(pa_stats)(xp, 0, B, K, ng, shift, m, is);
        return;
    }
    for (uint g = 0; g < ng; ++g) {
        ulong k = k0 + g * PA_W;
        if (flags & F_COEF) {
            float t[3][PA_W];
            for (uint l = 0; l < PA_W; ++l)
                for (uint j = 0; j < 3; ++j)
                    t[j][l] = scoef[CN_COEF_STRIDE * (k + l) + j];
#if PA_W == 16
            shift[g] = vload16(0, t[0]);
            m[g] = vload16(0, t[1]);
            is[g] = vload16(0, t[2]);
#else
            shift[g] = t[0][0];
            m[g] = t[1][0];
            is[g] = t[2][0];
#endif
        } else {
            shift[g] = (VT)(0.0f);
            m[g] = PLD(smean, k);
            is[g] = PLD(sinvstd, k);
        }
    }
}

/* Sums of g and g * ((x - shift) - m) of the tile's columns over rows [b0, b1): row blocks of 64, compensated. g is
 * dy, masked by y > 0 with F_RELU; F_DZ stores it to dz. */
static inline void FN(pa_sums)(__global const stype *xp, __global const stype *dyp, __global const stype *yp,
                        __global stype *dzp, ulong b0, ulong b1, ulong K, uint ng, const VT *shift, const VT *m,
                        VT *su, VT *sv, uint flags) {
    VT suc[TG], svc[TG];
    for (uint g = 0; g < ng; ++g)
        su[g] = suc[g] = sv[g] = svc[g] = (VT)(0.0f);
    for (ulong c0 = b0; c0 < b1; c0 += 64) {
        ulong c1 = min(b1, c0 + 64);
        VT u[TG], v[TG];
        for (uint g = 0; g < ng; ++g)
            u[g] = v[g] = (VT)(0.0f);
        for (ulong b = c0; b < c1; ++b)
            for (uint g = 0; g < ng; ++g) {
                ulong i = b * K + g * PA_W;
                VT dyv = GRADV(dyp + i, yp ? yp + i : yp);
                if (flags & F_DZ)
                    XST(dyv, dzp + i);
                u[g] += dyv;
                v[g] = fma(dyv, (XLD(xp + i) - shift[g]) - m[g], v[g]);
            }
        for (uint g = 0; g < ng; ++g) {
            KAHAN_ADD(VT, su[g], suc[g], u[g]);
            KAHAN_ADD(VT, sv[g], svc[g], v[g]);
        }
    }
    for (uint g = 0; g < ng; ++g) {
        su[g] -= suc[g];
        sv[g] -= svc[g];
    }
}

/* From the sums of the tile's columns: the parameter gradients (F_GRADS, accumulated with F_ACCUM) and the dx
 * coefficients k1 = scale*invstd, k2 = -k1*invstd*dscale/M, k3 = -k1*dbias/M, returned in su, sv, is. */
static inline void FN(pa_grads)(ulong k0, uint ng, float M, __global const float *scale, __global float *dscale,
                         __global float *dbias, float alpha, float beta, ulong pC, ulong pS, uint flags, VT *su,
                         VT *sv, VT *is) {
    float invM = 1.0f / M;
    for (uint g = 0; g < ng; ++g) {
        ulong k = k0 + g * PA_W;
        VT gbias = su[g], gscale = sv[g] * is[g];
        if (flags & F_GRADS) {
            PST(GRAD_UPDATE(PLD(dscale, k), gscale, alpha, beta, flags), dscale, k);
            PST(GRAD_UPDATE(PLD(dbias, k), gbias, alpha, beta, flags), dbias, k);
        }
        VT k1 = (flags & F_AFFINE) ? is[g] * PLD(scale, k) : is[g];
        su[g] = k1;
        sv[g] = DX_K2(k1, is[g], gscale, invM);
        is[g] = DX_K3(k1, gbias, invM);
    }
}

/* Backward of the tile at column k0 over all B rows: statistics, sums, gradients, then dx (F_DX). */
static inline void FN(pa_backward)(__global const stype *xp, __global const stype *dyp, __global const stype *yp,
                            __global stype *dzp, __global stype *dxp, ulong B,
                            ulong K, ulong k0, uint ng, __global const float *scale, __global const float *smean,
                            __global const float *sinvstd, __global float *dscale, __global float *dbias,
                            float alpha, float beta, float eps, ulong pC, ulong pS, uint flags) {
    VT shift[TG], m[TG], is[TG], su[TG], sv[TG];
    FN(pa_group_stats)(xp, B, K, k0, ng, smean, sinvstd, NULL, pC, pS, flags, shift, m, is);
    if (flags & F_STATS)
        for (uint g = 0; g < ng; ++g)
            is[g] = rsqrt(is[g] / (float)B + eps);
    FN(pa_sums)(xp, dyp, yp, dzp, 0, B, K, ng, shift, m, su, sv, flags);
    FN(pa_grads)(k0, ng, (float)B, scale, dscale, dbias, alpha, beta, pC, pS, flags, su, sv, is);
    /* g again for dx: from dz when the tile's rows no longer stay in cache (see BWD_REREAD_BYTES), else from dy
     * masked by y, still in cache (dz over dy is fine: masking the stored g again gives g) */
    int from_dz = (flags & F_DZ) && B * ng * PA_W * ESIZE > BWD_REREAD_BYTES;
    if (flags & F_DX)
        for (ulong b = 0; b < B; ++b)
            for (uint g = 0; g < ng; ++g) {
                ulong i = b * K + g * PA_W;
                XST(fma(su[g], from_dz ? XLD(dzp + i) : GRADV(dyp + i, yp ? yp + i : yp), fma(sv[g], (XLD(xp + i) - shift[g]) - m[g], is[g])), dxp + i);
            }
}

#undef TG
#undef VT
#undef PLD
#undef PST
#undef XLD
#undef XST
#undef FN
#undef ACTV
#undef GRADV
#undef PA_W
