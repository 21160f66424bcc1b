/* Split-phase statistics (the building blocks of synchronised BatchNorm, src/bn_split.c). The partial statistics
 * and backward partial sums come from the existing kernels (bn_stats_partial / bn_col_partial, bn_bwd_partial /
 * bn_col_bwd_partial); these kernels finish them into the exchanged blocks, merge blocks, and turn merged blocks
 * into the coefficients of the existing elementwise passes (bn_apply / bn_col_apply with F_COEF).
 *
 * A statistics block: per group (parameter order) 3 floats (count, mean, m2 = sum of squared deviations).
 * A sums block: per group 2 floats (sum dy, sum dy * xhat).
 * Partials of group j (a map of the row kernels, a column of the column kernels): the P values at
 * part[j * gs + g * ps] and their second values vo further; group j's values are shifted by x[j * shs] (the
 * shift the partial kernels used: a map's first value, a column's row-0 value). */

/* Merge the P partials of group j (fixed order) into the block of its parameter index. CPU: one work-item per
 * group; GPU: one work-group per group (each item a contiguous run of the partials, then the tree). */
__kernel void bn_split_stats(__global const stype *x, ulong xoff, __global const float *part, uint P, ulong N,
                             ulong groups, ulong gs, ulong vo, ulong ps, ulong shs, ulong pC, ulong pS, uint flags,
                             __global float *stats) {
    acc_t a;
    ulong j;
    GROUP_MERGE_SPACE;
    if (!merge_group_parts(&a, &j, groups, part, gs, vo, ps, P, N, ln, lm, lq))
        return;
    ulong p = param_index(j, pC, pS, flags);
    stats[3 * p] = (float)N;
    stats[3 * p + 1] = acc_mean_at(&a, LOAD1(x + xoff, j * shs));
    stats[3 * p + 2] = acc_m2(&a);
}

/* Chan's merge of parts blocks (back to back) into one, in part order, parts with count 0 skipped; shifted by the
 * first non-empty part's mean so that large means next to small spreads keep their precision. One work-item per
 * group. */
__kernel void bn_split_merge(__global const float *blocks, uint parts, ulong groups, __global float *merged) {
    ulong j = get_global_id(0);
    if (j >= groups)
        return;
    acc_t a;
    acc_init(&a);
    float K = 0.0f;
    for (uint q = 0; q < parts; ++q) {
        __global const float *b = blocks + ((ulong)q * groups + j) * 3;
        float n = b[0];
        if (!(n > 0.0f && n < 1.8e19f))
            continue;
        if (a.n == 0)
            K = b[1];
        acc_merge(&a, (ulong)n, b[1] - K, b[2]);
    }
    merged[3 * j] = (float)a.n;
    merged[3 * j + 1] = a.n ? acc_mean_at(&a, K) : 0.0f;
    merged[3 * j + 2] = a.n ? acc_m2(&a) : 0.0f;
}

/* From a merged block: running update (unbiased with the block's count), saved statistics, and (F_COEF) the
 * coefficients of column k (parameter index through param_index) for the elementwise pass. One work-item per
 * column. */
__kernel void bn_split_coef(__global const float *stats, ulong K, __global const float *scale,
                            __global const float *bias, __global float *rmean, __global float *rvar,
                            __global float *smean, __global float *sinvstd, __global float *coef, float factor,
                            float eps, ulong pC, ulong pS, uint flags) {
    ulong k = get_global_id(0);
    if (k >= K)
        return;
    ulong p = param_index(k, pC, pS, flags);
    float n = stats[3 * p];
    acc_t a;
    acc_init(&a);
    a.n = (ulong)n;
    a.m2 = stats[3 * p + 2];
    coef_t c;
    finalize_stats(&c, &a, stats[3 * p + 1], a.n, p, scale, bias, rmean, rvar, smean, sinvstd, factor, eps,
                   n / (n - 1.0f), flags);
    if (flags & F_COEF)
        coef_store(c, coef, k);
}

/* Sums of the P backward partials of group j (fixed order) into the sums block of its parameter index:
 * (sum dy, invstd * sum dy * (x - mean)). CPU one work-item per group, GPU one work-group. */
__kernel void bn_split_sums(__global const float *part, uint P, ulong groups, ulong gs, ulong vo, ulong ps,
                            __global const float *sinvstd, ulong pC, ulong pS, uint flags, __global float *sums) {
    float u, v;
    ulong j;
    GROUP_SUM_SPACE;
    if (!sum_group_parts(&u, &v, &j, groups, part, gs, vo, ps, P, lu, lv))
        return;
    ulong p = param_index(j, pC, pS, flags);
    sums[2 * p] = u;
    sums[2 * p + 1] = v * sinvstd[p];
}

/* From global sums (su = sum dy, sv = sum dy * xhat over count values): F_GRADS writes dbias = su, dscale = sv
 * (alpha * g, plus beta * old with F_ACCUM); F_DX writes column k's dx coefficients (K = 0, m = mean):
 *   k1 = scale * invstd, k2 = -k1 * invstd * dscale / count, k3 = -k1 * dbias / count.
 * One work-item per column. */
__kernel void bn_split_bwd_coef(__global const float *sums, ulong K, float count, __global const float *scale,
                                __global const float *smean, __global const float *sinvstd, __global float *dscale,
                                __global float *dbias, __global float *coef, float alpha, float beta, ulong pC,
                                ulong pS, uint flags) {
    ulong k = get_global_id(0);
    if (k >= K)
        return;
    ulong p = param_index(k, pC, pS, flags);
    float su = sums[2 * p], sv = sums[2 * p + 1];
    if (flags & F_GRADS) {
        dscale[p] = GRAD_UPDATE(dscale[p], sv, alpha, beta, flags);
        dbias[p] = GRAD_UPDATE(dbias[p], su, alpha, beta, flags);
    }
    if (flags & F_DX) {
        float is = sinvstd[p];
        float k1 = (flags & F_AFFINE) ? scale[p] * is : is;
        float invN = 1.0f / count;
        coef_t c = {0.0f, smean[p], k1, DX_K2(k1, is, sv, invN), DX_K3(k1, su, invN)};
        coef_store(c, coef, k);
    }
}
