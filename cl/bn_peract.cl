/* Column layouts: the tensor is a (B, K) matrix with one statistic per column (NCHW PER_ACTIVATION, SPATIAL with
 * S == 1, and NHWC). A work-item owns a tile of ng groups of PA_W adjacent columns over all B rows: statistics,
 * running / saved statistics and the output (or the backward) of its columns, in one launch. Rows are walked in
 * blocks and each row's tile is read contiguously (ng * PA_W values), which keeps a CPU's prefetchers busy.
 * The host includes this file twice: PA_W 16 (tiles of up to 16 float16 groups = 256 columns, CPU strategy) and
 * PA_W 1 (one column: tails, and the GPU strategy where neighbouring work-items take neighbouring columns). */

#if PA_W == 16
#define TG 16
#define VT float16
#define PLD(p, k) param_load16((p), (k), pC, pS, flags)
#define PST(v, p, k) param_store16((v), (p), (k), pC, pS, flags)
#define XLD(p) LOAD16((p), 0)
#define XST(v, p) STORE16((v), (p), 0)
#define FN(name) name##_w16
#elif PA_W == 1
#define TG 1
#define VT float
#define PLD(p, k) ((p)[param_index((k), pC, pS, flags)])
#define PST(v, p, k) ((p)[param_index((k), pC, pS, flags)] = (v))
#define XLD(p) LOAD1((p), 0)
#define XST(v, p) STORE1((v), (p), 0)
#define FN(name) name##_w1
#endif

#define KAHAN_V(sum, comp, v)                                                                                          \
    do {                                                                                                               \
        VT y_ = (v) - (comp);                                                                                          \
        VT t_ = (sum) + y_;                                                                                            \
        (comp) = (t_ - (sum)) - y_;                                                                                    \
        (sum) = t_;                                                                                                    \
    } while (0)

/* Statistics of the tile's columns over B rows, each shifted by its first row (see acc_t): blocks of 8 rows,
 * two-pass (the second pass re-reads the block from L1), compensated Chan merge. Column mean = shift + m. */
inline void FN(pa_stats)(__global const stype *xp, ulong B, ulong K, uint ng, VT *shift, VT *m, VT *m2) {
    VT am[TG], amc[TG], aq[TG], aqc[TG];
    for (uint g = 0; g < ng; ++g) {
        shift[g] = XLD(xp + g * PA_W);
        am[g] = amc[g] = aq[g] = aqc[g] = (VT)(0.0f);
    }
    ulong n = 0;
    for (ulong b = 0; b < B; b += 8) {
        uint nb = (uint)min((ulong)8, B - b);
        float inv = 1.0f / (float)nb;
        ulong nt = n + nb;
        float w = (float)nb / (float)nt, naw = (float)n * w;
        __global const stype *rows = xp + b * K;
        for (uint g = 0; g < ng; ++g) {
            __global const stype *p = rows + g * PA_W;
            VT s = (VT)(0.0f);
            for (uint i = 0; i < nb; ++i)
                s += XLD(p + i * K) - shift[g];
            VT mb = s * inv, d1 = (VT)(0.0f), d2 = (VT)(0.0f);
            for (uint i = 0; i < nb; ++i) {
                VT d = (XLD(p + i * K) - shift[g]) - mb;
                d1 += d;
                d2 = fma(d, d, d2);
            }
            VT m2b = d2 - d1 * d1 * inv;
            m2b = m2b < 0.0f ? (VT)(0.0f) : m2b;
            mb += d1 * inv;
            VT d = (mb - am[g]) + amc[g];
            KAHAN_V(am[g], amc[g], d * w);
            KAHAN_V(aq[g], aqc[g], m2b + d * d * naw);
        }
        n = nt;
    }
    for (uint g = 0; g < ng; ++g) {
        VT q = aq[g] - aqc[g];
        m[g] = am[g] - amc[g];
        m2[g] = q < 0.0f ? (VT)(0.0f) : q;
    }
}

/* Forward of the tile at column k0. F_STATS: batch statistics (training), running update (F_RUNNING), saved
 * statistics (F_SAVE); else mean / var come from mean_in / var_in (inference). Parameter vectors are indexed
 * through param_index (pC, pS, F_PMAP). */
inline void FN(pa_forward)(__global const stype *xp, __global stype *yp, ulong B, ulong K, ulong k0, uint ng,
                           __global const float *scale, __global const float *bias, __global const float *mean_in,
                           __global const float *var_in, __global float *rmean, __global float *rvar,
                           __global float *smean, __global float *sinvstd, float factor, float eps, float unbias,
                           ulong pC, ulong pS, uint flags) {
    VT shift[TG], m[TG], a[TG], c[TG];
    if (flags & F_STATS)
        FN(pa_stats)(xp, B, K, ng, shift, m, a);
    for (uint g = 0; g < ng; ++g) {
        ulong k = k0 + g * PA_W;
        VT invstd;
        if (flags & F_STATS) {
            VT var = a[g] / (float)B, mean = shift[g] + m[g];
            invstd = rsqrt(var + eps);
            if (flags & F_RUNNING) {
                if (factor == 1.0f) { /* the old values are not read */
                    PST(mean, rmean, k);
                    PST(var * unbias, rvar, k);
                } else {
                    PST((1.0f - factor) * PLD(rmean, k) + factor * mean, rmean, k);
                    PST((1.0f - factor) * PLD(rvar, k) + factor * (var * unbias), rvar, k);
                }
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
            XST(fma((XLD(xp + i) - shift[g]) - m[g], a[g], c[g]), yp + i);
        }
}

/* Backward of the tile at column k0: sums of dy and dy*(x - mean) (row blocks of 64, compensated), then the
 * parameter gradients (F_GRADS, accumulated with F_ACCUM) and dx (F_DX). F_STATS: statistics recomputed. */
inline void FN(pa_backward)(__global const stype *xp, __global const stype *dyp, __global stype *dxp, ulong B,
                            ulong K, ulong k0, uint ng, __global const float *scale, __global const float *smean,
                            __global const float *sinvstd, __global float *dscale, __global float *dbias,
                            float alpha, float beta, float eps, ulong pC, ulong pS, uint flags) {
    VT shift[TG], m[TG], is[TG], su[TG], suc[TG], sv[TG], svc[TG];
    if (flags & F_STATS)
        FN(pa_stats)(xp, B, K, ng, shift, m, is);
    for (uint g = 0; g < ng; ++g) {
        if (flags & F_STATS) {
            is[g] = rsqrt(is[g] / (float)B + eps);
        } else {
            shift[g] = (VT)(0.0f);
            m[g] = PLD(smean, k0 + g * PA_W);
            is[g] = PLD(sinvstd, k0 + g * PA_W);
        }
        su[g] = suc[g] = sv[g] = svc[g] = (VT)(0.0f);
    }
    for (ulong b0 = 0; b0 < B; b0 += 64) {
        ulong b1 = min(B, b0 + 64);
        VT u[TG], v[TG];
        for (uint g = 0; g < ng; ++g)
            u[g] = v[g] = (VT)(0.0f);
        for (ulong b = b0; b < b1; ++b)
            for (uint g = 0; g < ng; ++g) {
                ulong i = b * K + g * PA_W;
                VT dyv = XLD(dyp + i);
                u[g] += dyv;
                v[g] = fma(dyv, (XLD(xp + i) - shift[g]) - m[g], v[g]);
            }
        for (uint g = 0; g < ng; ++g) {
            KAHAN_V(su[g], suc[g], u[g]);
            KAHAN_V(sv[g], svc[g], v[g]);
        }
    }
    float invB = 1.0f / (float)B;
    for (uint g = 0; g < ng; ++g) {
        ulong k = k0 + g * PA_W;
        VT gbias = su[g] - suc[g], gscale = (sv[g] - svc[g]) * is[g];
        if (flags & F_GRADS) {
            if (flags & F_ACCUM) {
                PST(alpha * gscale + beta * PLD(dscale, k), dscale, k);
                PST(alpha * gbias + beta * PLD(dbias, k), dbias, k);
            } else {
                PST(alpha * gscale, dscale, k);
                PST(alpha * gbias, dbias, k);
            }
        }
        /* dx = k1 * dy + k2 * (x - mean) + k3: reuse the arrays for k1 (su), k2 (sv), k3 (suc) */
        VT k1 = (flags & F_AFFINE) ? is[g] * PLD(scale, k) : is[g];
        su[g] = k1;
        sv[g] = -k1 * is[g] * gscale * invB;
        suc[g] = -k1 * gbias * invB;
    }
    if (flags & F_DX)
        for (ulong b = 0; b < B; ++b)
            for (uint g = 0; g < ng; ++g) {
                ulong i = b * K + g * PA_W;
                XST(fma(su[g], XLD(dyp + i), fma(sv[g], (XLD(xp + i) - shift[g]) - m[g], suc[g])), dxp + i);
            }
}

#undef TG
#undef VT
#undef PLD
#undef PST
#undef XLD
#undef XST
#undef FN
#undef KAHAN_V
#undef PA_W
