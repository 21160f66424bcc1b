/* PER_ACTIVATION (and SPATIAL with S == 1): the tensor is a (B, K) matrix, one statistic per column.
 * A work-item owns PA_W adjacent columns over all B rows: statistics, running/saved statistics and the
 * output for its columns, in one launch. The host includes this file twice: PA_W 16 (float16 columns,
 * CPU strategy) and PA_W 1 (one column, for tails and the GPU strategy). */

#if PA_W == 16
#define VT float16
#define PLD(p, k) param_load16((p), (k), pC, pS, flags)
#define PST(v, p, k) param_store16((v), (p), (k), pC, pS, flags)
#define XLD(p) LOAD16((p), 0)
#define XST(v, p) STORE16((v), (p), 0)
#define FN(name) name##_w16
#elif PA_W == 1
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

/* Statistics of columns k0.. over B rows, shifted by K = the first row (see acc_t): blocks of 8 rows, two-pass in
 * registers, compensated Chan merge. The column mean is K + *m_out. */
inline void FN(pa_stats)(__global const stype *xp, ulong B, ulong K, VT *k_out, VT *m_out, VT *m2_out) {
    VT shift = XLD(xp);
    VT am = (VT)(0.0f), amc = (VT)(0.0f), aq = (VT)(0.0f), aqc = (VT)(0.0f);
    ulong n = 0;
    for (ulong b = 0; b < B; b += 8) {
        uint nb = (uint)min((ulong)8, B - b);
        VT v[8];
        VT s = (VT)(0.0f);
        for (uint i = 0; i < nb; ++i) {
            v[i] = XLD(xp + (b + i) * K) - shift;
            s += v[i];
        }
        float inv = 1.0f / (float)nb;
        VT mb = s * inv, d1 = (VT)(0.0f), d2 = (VT)(0.0f);
        for (uint i = 0; i < nb; ++i) {
            VT d = v[i] - mb;
            d1 += d;
            d2 = fma(d, d, d2);
        }
        VT m2b = d2 - d1 * d1 * inv;
        m2b = m2b < 0.0f ? (VT)(0.0f) : m2b;
        mb += d1 * inv;
        ulong nt = n + nb;
        float w = (float)nb / (float)nt, na = (float)n;
        VT d = (mb - am) + amc;
        KAHAN_V(am, amc, d * w);
        KAHAN_V(aq, aqc, m2b + d * d * (na * w));
        n = nt;
    }
    VT m2 = aq - aqc;
    *k_out = shift;
    *m_out = am - amc;
    *m2_out = m2 < 0.0f ? (VT)(0.0f) : m2;
}

/* Forward for columns k0 .. k0+PA_W-1. F_STATS: batch statistics (training), running update (F_RUNNING),
 * saved statistics (F_SAVE); else mean / var come from mean_in / var_in (inference). Parameter vectors are
 * indexed through param_index (pC, pS, F_PMAP). */
inline void FN(pa_forward)(__global const stype *xp, __global stype *yp, ulong B, ulong K, ulong k0,
                           __global const float *scale, __global const float *bias, __global const float *mean_in,
                           __global const float *var_in, __global float *rmean, __global float *rvar,
                           __global float *smean, __global float *sinvstd, float factor, float eps, float unbias,
                           ulong pC, ulong pS, uint flags) {
    VT shift = (VT)(0.0f), m, invstd;
    if (flags & F_STATS) {
        VT m2;
        FN(pa_stats)(xp, B, K, &shift, &m, &m2);
        VT var = m2 / (float)B, mean = shift + m;
        invstd = rsqrt(var + eps);
        if (flags & F_RUNNING) {
            if (factor == 1.0f) {
                PST(mean, rmean, k0);
                PST(var * unbias, rvar, k0);
            } else {
                PST((1.0f - factor) * PLD(rmean, k0) + factor * mean, rmean, k0);
                PST((1.0f - factor) * PLD(rvar, k0) + factor * (var * unbias), rvar, k0);
            }
        }
        if (flags & F_SAVE) {
            PST(mean, smean, k0);
            PST(invstd, sinvstd, k0);
        }
    } else {
        m = PLD(mean_in, k0);
        invstd = rsqrt(PLD(var_in, k0) + eps);
    }
    VT a = invstd, c = (VT)(0.0f);
    if (flags & F_AFFINE) {
        a *= PLD(scale, k0);
        c = PLD(bias, k0);
    }
    for (ulong b = 0; b < B; ++b)
        XST(fma((XLD(xp + b * K) - shift) - m, a, c), yp + b * K);
}

/* Backward for columns k0 .. k0+PA_W-1: sums of dy and dy*(x - mean) (blocks of 64 rows, compensated),
 * then the parameter gradients (F_GRADS, accumulated with F_ACCUM) and dx (F_DX). */
inline void FN(pa_backward)(__global const stype *xp, __global const stype *dyp, __global stype *dxp, ulong B,
                            ulong K, ulong k0, __global const float *scale, __global const float *smean,
                            __global const float *sinvstd, __global float *dscale, __global float *dbias,
                            float alpha, float beta, float eps, ulong pC, ulong pS, uint flags) {
    VT shift = (VT)(0.0f), m, invstd;
    if (flags & F_STATS) {
        VT m2;
        FN(pa_stats)(xp, B, K, &shift, &m, &m2);
        invstd = rsqrt(m2 / (float)B + eps);
    } else {
        m = PLD(smean, k0);
        invstd = PLD(sinvstd, k0);
    }
    VT sdy = (VT)(0.0f), sdyc = (VT)(0.0f), sdx = (VT)(0.0f), sdxc = (VT)(0.0f);
    for (ulong b0 = 0; b0 < B; b0 += 64) {
        ulong b1 = min(B, b0 + 64);
        VT u = (VT)(0.0f), v = (VT)(0.0f);
        for (ulong b = b0; b < b1; ++b) {
            VT g = XLD(dyp + b * K);
            u += g;
            v = fma(g, (XLD(xp + b * K) - shift) - m, v);
        }
        KAHAN_V(sdy, sdyc, u);
        KAHAN_V(sdx, sdxc, v);
    }
    VT gbias = sdy - sdyc, gscale = (sdx - sdxc) * invstd;
    if (flags & F_GRADS) {
        if (flags & F_ACCUM) {
            PST(alpha * gscale + beta * PLD(dscale, k0), dscale, k0);
            PST(alpha * gbias + beta * PLD(dbias, k0), dbias, k0);
        } else {
            PST(alpha * gscale, dscale, k0);
            PST(alpha * gbias, dbias, k0);
        }
    }
    if (flags & F_DX) {
        VT k1 = (flags & F_AFFINE) ? invstd * PLD(scale, k0) : invstd;
        float invB = 1.0f / (float)B;
        VT k2 = -k1 * invstd * gscale * invB, k3 = -k1 * gbias * invB;
        for (ulong b = 0; b < B; ++b)
            XST(fma(k1, XLD(dyp + b * K), fma(k2, (XLD(xp + b * K) - shift) - m, k3)), dxp + b * K);
    }
}

#undef VT
#undef PLD
#undef PST
#undef XLD
#undef XST
#undef FN
#undef KAHAN_V
#undef PA_W
