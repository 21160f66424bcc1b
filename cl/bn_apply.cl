/* Elementwise passes over a (B, C, S) NCHW tensor, one coefficient set per map c:
 *   forward:  y  = (x - mean) * a + c0          a = scale * invstd, c0 = bias
 *   backward: dx = k1 * dy + k2 * (x - mean) + k3  (F_DX with F_COEF4: (mean, k1, k2, k3) from coef)
 * and the per-activation kernels (bn_peract.cl does the work). */

inline coef_t map_coef(ulong c, __global const float *scale, __global const float *bias,
                       __global const float *mean, __global const float *var, float eps, uint flags) {
    coef_t k;
    if (flags & F_COEF4) {
        k.mean = mean[4 * c];
        k.k1 = mean[4 * c + 1];
        k.k2 = mean[4 * c + 2];
        k.k3 = mean[4 * c + 3];
        return k;
    }
    float invstd = (flags & F_HAS_INVSTD) ? var[c] : rsqrt(var[c] + eps);
    k.mean = mean[c];
    k.k1 = 0.0f;
    k.k2 = (flags & F_AFFINE) ? scale[c] * invstd : invstd;
    k.k3 = (flags & F_AFFINE) ? bias[c] : 0.0f;
    return k;
}

/* out = k2 * (x - mean) + k3 (+ k1 * dy with F_DX). CPU: each work-item a contiguous chunk of the flat tensor,
 * walked a row run at a time with float16 vectors; GPU: one element per work-item, grid-stride. */
__kernel void bn_apply(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                       __global stype *out, ulong ooff, ulong C, ulong S, ulong total, ulong chunk,
                       __global const float *scale, __global const float *bias, __global const float *mean,
                       __global const float *var, float eps, uint flags) {
    __global const stype *xp = x + xoff;
    __global stype *op = out + ooff;
    int use_dy = (flags & F_DX) != 0;
    __global const stype *gp = use_dy ? dy + dyoff : xp;
#if defined(STRATEGY_CPU)
    ulong e = get_global_id(0) * chunk, e1 = min(e + chunk, total);
    while (e < e1) {
        ulong row = e / S, s = e - row * S;
        ulong run = min(S - s, e1 - e);
        apply_run(xp + e, use_dy ? gp + e : NULL, op + e, run, map_coef(row % C, scale, bias, mean, var, eps, flags));
        e += run;
    }
#else
    (void)chunk;
    for (ulong e = get_global_id(0); e < total; e += get_global_size(0)) {
        coef_t k = map_coef((e / S) % C, scale, bias, mean, var, eps, flags);
        float v = fma(LOAD1(xp, e) - k.mean, k.k2, k.k3);
        if (use_dy)
            v = fma(k.k1, LOAD1(gp, e), v);
        STORE1(v, op, e);
    }
#endif
}

/* Per-activation forward (training with F_STATS, else inference): CPU 16 columns per work-item, GPU one. */
__kernel void bn_pa_forward(__global const stype *x, ulong xoff, __global stype *y, ulong yoff, ulong B, ulong K,
                            __global const float *scale, __global const float *bias, __global const float *mean_in,
                            __global const float *var_in, __global float *rmean, __global float *rvar,
                            __global float *smean, __global float *sinvstd, float factor, float eps, float unbias,
                            ulong pC, ulong pS, uint flags) {
    ulong j = get_global_id(0);
#if defined(STRATEGY_CPU)
    ulong k0 = j * 16;
    if (k0 >= K)
        return;
    if (k0 + 16 <= K) {
        pa_forward_w16(x + xoff + k0, y + yoff + k0, B, K, k0, scale, bias, mean_in, var_in, rmean, rvar, smean,
                       sinvstd, factor, eps, unbias, pC, pS, flags);
        return;
    }
    for (ulong k = k0; k < K; ++k)
#else
    ulong k = j;
    if (k < K)
#endif
        pa_forward_w1(x + xoff + k, y + yoff + k, B, K, k, scale, bias, mean_in, var_in, rmean, rvar, smean,
                      sinvstd, factor, eps, unbias, pC, pS, flags);
}
