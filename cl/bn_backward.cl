/* Backward passes. SPATIAL: partial sums of dy and dy*(x - mean) per (map, slice), a per-map finalize that
 * writes the parameter gradients and the dx coefficients, then bn_apply (F_DX | F_COEF4) for dx.
 * PER_ACTIVATION: bn_pa_backward, one launch. */

/* Work-group (g, c): part[(c*G + g)*2 ..] = (sum dy, sum dy * (x - mean[c])) over slice g of map c. */
__kernel void bn_bwd_partial(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff, ulong B,
                             ulong C, ulong S, uint G, __global const float *mean, __global float *part) {
    __local float lu[WG], lv[WG];
    uint g = get_group_id(0);
    ulong c = get_global_id(1);
    ulong N = B * S;
    float u, v;
    dsum_range(&u, &v, x + xoff, dy + dyoff, mean[c], C, S, c, slice_begin(N, g, G), slice_begin(N, g + 1, G));
    sum2_reduce_local(&u, &v, lu, lv);
    if (get_local_id(0) == 0) {
        part[(c * G + g) * 2] = u;
        part[(c * G + g) * 2 + 1] = v;
    }
}

/* From sum dy (su) and sum dy*(x - mean) (sv) of map c: dbias = su, dscale = invstd * sv; F_GRADS writes them
 * (alpha * g, plus beta * old with F_ACCUM); returns the dx coefficients
 *   k1 = scale*invstd, k2 = -k1*invstd*dscale/N, k3 = -k1*dbias/N  (dx = k1*dy + k2*(x - mean) + k3). */
inline coef_t bwd_coef(float su, float sv, float mean, float is, ulong N, ulong c, __global const float *scale,
                       __global float *dscale, __global float *dbias, float alpha, float beta, uint flags) {
    float gbias = su, gscale = sv * is;
    if (flags & F_GRADS) {
        if (flags & F_ACCUM) {
            dscale[c] = alpha * gscale + beta * dscale[c];
            dbias[c] = alpha * gbias + beta * dbias[c];
        } else {
            dscale[c] = alpha * gscale;
            dbias[c] = alpha * gbias;
        }
    }
    float k1 = (flags & F_AFFINE) ? scale[c] * is : is;
    float invN = 1.0f / (float)N;
    coef_t k = {mean, k1, -k1 * is * gscale * invN, -k1 * gbias * invN};
    return k;
}

/* One work-item per map: dbias = sum dy, dscale = invstd * sum dy*(x - mean); F_GRADS writes them
 * (alpha * g, plus beta * old with F_ACCUM); F_DX writes coef[4c..] = (mean, k1, k2, k3) for
 * dx = k1*dy + k2*(x - mean) + k3, k1 = scale*invstd, k2 = -k1*invstd*dscale/N, k3 = -k1*dbias/N. */
__kernel void bn_bwd_finalize(__global const float *part, uint G, ulong N, ulong C, __global const float *mean,
                              __global const float *invstd, __global const float *scale, __global float *dscale,
                              __global float *dbias, __global float *coef, float alpha, float beta, uint flags) {
    ulong c = get_global_id(0);
    if (c >= C)
        return;
    float su = 0.0f, suc = 0.0f, sv = 0.0f, svc = 0.0f;
    for (uint g = 0; g < G; ++g) {
        kahan_add(&su, &suc, part[(c * G + g) * 2]);
        kahan_add(&sv, &svc, part[(c * G + g) * 2 + 1]);
    }
    coef_t k = bwd_coef(su - suc, sv - svc, mean[c], invstd[c], N, c, scale, dscale, dbias, alpha, beta, flags);
    if (flags & F_DX) {
        coef[4 * c] = k.mean;
        coef[4 * c + 1] = k.k1;
        coef[4 * c + 2] = k.k2;
        coef[4 * c + 3] = k.k3;
    }
}

/* Backward in one launch, one work-group per map: (F_STATS: statistics of x first), the two sums, the gradients,
 * then dx while x and dy are still in cache. */
__kernel void bn_fused_backward(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                                __global stype *dx, ulong dxoff, ulong B, ulong C, ulong S, __global const float *scale,
                                __global const float *smean, __global const float *sinvstd, __global float *dscale,
                                __global float *dbias, float alpha, float beta, float eps, ulong pC, ulong pS,
                             uint flags) {
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    __local float lk[4];
    ulong c = get_group_id(0), N = B * S;
    __global const stype *xp = x + xoff;
    __global const stype *gp = dy + dyoff;
    if (flags & F_STATS) {
        acc_t a;
        acc_init(&a);
        acc_range(&a, xp, C, S, c, 0, N);
        acc_reduce_local(&a, ln, lm, lq);
        if (get_local_id(0) == 0) {
            lk[0] = acc_mean(&a);
            lk[1] = rsqrt(acc_m2(&a) / (float)N + eps);
        }
    } else if (get_local_id(0) == 0) {
        lk[0] = smean[c];
        lk[1] = sinvstd[c];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float mean = lk[0], is = lk[1], u, v;
    dsum_range(&u, &v, xp, gp, mean, C, S, c, 0, N);
    sum2_reduce_local(&u, &v, lm, lq);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
        coef_t k = bwd_coef(u, v, mean, is, N, c, scale, dscale, dbias, alpha, beta, flags);
        lk[0] = k.mean;
        lk[1] = k.k1;
        lk[2] = k.k2;
        lk[3] = k.k3;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (flags & F_DX) {
        coef_t k = {lk[0], lk[1], lk[2], lk[3]};
        apply_map(xp, gp, dx + dxoff, B, C, S, c, k);
    }
}

/* Per-activation backward, one launch: CPU 16 columns per work-item, GPU one. */
__kernel void bn_pa_backward(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                             __global stype *dx, ulong dxoff, ulong B, ulong K, __global const float *scale,
                             __global const float *smean, __global const float *sinvstd, __global float *dscale,
                             __global float *dbias, float alpha, float beta, float eps, ulong pC, ulong pS,
                             uint flags) {
    ulong j = get_global_id(0);
#if defined(STRATEGY_CPU)
    ulong k0 = j * 16;
    if (k0 >= K)
        return;
    if (k0 + 16 <= K) {
        pa_backward_w16(x + xoff + k0, dy + dyoff + k0, dx + dxoff + k0, B, K, k0, scale, smean, sinvstd, dscale,
                        dbias, alpha, beta, eps, pC, pS, flags);
        return;
    }
    for (ulong k = k0; k < K; ++k)
#else
    ulong k = j;
    if (k < K)
#endif
        pa_backward_w1(x + xoff + k, dy + dyoff + k, dx + dxoff + k, B, K, k, scale, smean, sinvstd, dscale, dbias,
                       alpha, beta, eps, pC, pS, flags);
}
