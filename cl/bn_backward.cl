/* Backward passes. SPATIAL: partial sums of dy and dy*(x - mean) per (map, slice), a per-map finalize that
 * writes the parameter gradients and the dx coefficients, then bn_apply (F_DX | F_COEF4) for dx.
 * PER_ACTIVATION: bn_pa_backward, one launch. */

/* Work-group (g, c): part[(c*G + g)*2 ..] = (sum dy, sum dy * (x - mean[c])) over slice g of map c. */
__kernel void bn_bwd_partial(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff, ulong B,
                             ulong C, ulong S, uint G, __global const float *mean, __global float *part) {
    __local float lu[WG], lv[WG];
    uint g = get_group_id(0), lid = get_local_id(0);
    ulong c = get_global_id(1);
    ulong N = B * S, start = slice_begin(N, g, G), end = slice_begin(N, g + 1, G);
    __global const stype *xp = x + xoff;
    __global const stype *gp = dy + dyoff;
    float m = mean[c];
    float su = 0.0f, suc = 0.0f, sv = 0.0f, svc = 0.0f;
#if defined(STRATEGY_CPU)
    ulong len = end - start;
    ulong e = start + lid * len / WG, e1 = start + (lid + 1) * len / WG;
    while (e < e1) {
        ulong b = e / S, s = e - b * S;
        ulong run = min(S - s, e1 - e);
        ulong base = (b * C + c) * S + s, i = 0;
        for (; i + BLK <= run; i += BLK) {
            float16 u = (float16)(0.0f), v = (float16)(0.0f);
            for (int k = 0; k < BLK; k += 16) {
                float16 gv = LOAD16(gp, base + i + k);
                u += gv;
                v = fma(gv, LOAD16(xp, base + i + k) - m, v);
            }
            kahan_add(&su, &suc, hsum16(u));
            kahan_add(&sv, &svc, hsum16(v));
        }
        float u1 = 0.0f, v1 = 0.0f;
        for (; i < run; ++i) {
            float gv = LOAD1(gp, base + i);
            u1 += gv;
            v1 = fma(gv, LOAD1(xp, base + i) - m, v1);
        }
        kahan_add(&su, &suc, u1);
        kahan_add(&sv, &svc, v1);
        e += run;
    }
#else
    ulong e = start + lid;
    ulong b = e / S, s = e - b * S;
    for (; e < end; e += WG) {
        ulong i = (b * C + c) * S + s;
        float gv = LOAD1(gp, i);
        kahan_add(&su, &suc, gv);
        kahan_add(&sv, &svc, gv * (LOAD1(xp, i) - m));
        advance_bs(&b, &s, WG, S);
    }
#endif
    float u = su - suc, v = sv - svc;
    sum2_reduce_local(&u, &v, lu, lv);
    if (lid == 0) {
        part[(c * G + g) * 2] = u;
        part[(c * G + g) * 2 + 1] = v;
    }
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
    float is = invstd[c];
    float gbias = su - suc, gscale = (sv - svc) * is;
    if (flags & F_GRADS) {
        if (flags & F_ACCUM) {
            dscale[c] = alpha * gscale + beta * dscale[c];
            dbias[c] = alpha * gbias + beta * dbias[c];
        } else {
            dscale[c] = alpha * gscale;
            dbias[c] = alpha * gbias;
        }
    }
    if (flags & F_DX) {
        float k1 = (flags & F_AFFINE) ? scale[c] * is : is;
        float invN = 1.0f / (float)N;
        coef[4 * c] = mean[c];
        coef[4 * c + 1] = k1;
        coef[4 * c + 2] = -k1 * is * gscale * invN;
        coef[4 * c + 3] = -k1 * gbias * invN;
    }
}

/* Per-activation backward, one launch: CPU 16 columns per work-item, GPU one. */
__kernel void bn_pa_backward(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                             __global stype *dx, ulong dxoff, ulong B, ulong K, __global const float *scale,
                             __global const float *smean, __global const float *sinvstd, __global float *dscale,
                             __global float *dbias, float alpha, float beta, float eps, uint flags) {
    ulong j = get_global_id(0);
#if defined(STRATEGY_CPU)
    ulong k0 = j * 16;
    if (k0 >= K)
        return;
    if (k0 + 16 <= K) {
        pa_backward_w16(x + xoff + k0, dy + dyoff + k0, dx + dxoff + k0, B, K, k0, scale, smean, sinvstd, dscale,
                        dbias, alpha, beta, eps, flags);
        return;
    }
    for (ulong k = k0; k < K; ++k)
#else
    ulong k = j;
    if (k < K)
#endif
        pa_backward_w1(x + xoff + k, dy + dyoff + k, dx + dxoff + k, B, K, k, scale, smean, sinvstd, dscale, dbias,
                       alpha, beta, eps, flags);
}
