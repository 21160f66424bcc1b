/* Per-map statistics for the SPATIAL mode: partial (mean, M2) per (map, slice), then the per-map merge
 * that finalises mean / invstd, updates the running statistics and saves mean / invstd.
 * Tensor view: (B, C, S) with S = d*h*w, NCHW. */

/* Work-group (g, c) covers slice g of map c's B*S values; partial mean and M2 go to part[(c*G + g)*2 ..]. */
__kernel void bn_stats_partial(__global const stype *x, ulong xoff, ulong B, ulong C, ulong S, uint G,
                               __global float *part) {
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    uint g = get_group_id(0);
    ulong c = get_global_id(1);
    ulong N = B * S;
    acc_t a;
    acc_init(&a);
    acc_range(&a, x + xoff, C, S, c, slice_begin(N, g, G), slice_begin(N, g + 1, G));
    acc_reduce_local(&a, ln, lm, lq);
    if (get_local_id(0) == 0) {
        part[(c * G + g) * 2] = acc_mean(&a);
        part[(c * G + g) * 2 + 1] = acc_m2(&a);
    }
}

/* From the merged statistics of map c (N values): mean, biased var, invstd; F_RUNNING updates
 *   running = (1 - factor) * running + factor * batch (variance unbiased by 'unbias' = N/(N-1));
 * factor == 1 does not read the old values, so an unwritten (NaN) running buffer is fine. */
inline void finalize_stats(const acc_t *a, ulong N, ulong c, __global float *rmean, __global float *rvar,
                           float factor, float eps, float unbias, uint flags, float *mean, float *invstd) {
    float m = acc_mean(a);
    float var = acc_m2(a) / (float)N;
    if (flags & F_RUNNING) {
        if (factor == 1.0f) {
            rmean[c] = m;
            rvar[c] = var * unbias;
        } else {
            rmean[c] = (1.0f - factor) * rmean[c] + factor * m;
            rvar[c] = (1.0f - factor) * rvar[c] + factor * (var * unbias);
        }
    }
    *mean = m;
    *invstd = rsqrt(var + eps);
}

/* One work-item per map: merge the G partials in order (deterministic), finalise, write smean / sinvstd
 * (the save buffers or scratch). */
__kernel void bn_stats_finalize(__global const float *part, uint G, ulong N, ulong C, __global float *rmean,
                                __global float *rvar, __global float *smean, __global float *sinvstd, float factor,
                                float eps, float unbias, uint flags) {
    ulong c = get_global_id(0);
    if (c >= C)
        return;
    acc_t a;
    acc_init(&a);
    for (uint g = 0; g < G; ++g)
        acc_merge(&a, slice_begin(N, g + 1, G) - slice_begin(N, g, G), part[(c * G + g) * 2],
                  part[(c * G + g) * 2 + 1]);
    float mean, invstd;
    finalize_stats(&a, N, c, rmean, rvar, factor, eps, unbias, flags, &mean, &invstd);
    smean[c] = mean;
    sinvstd[c] = invstd;
}

/* Training forward in one launch, one work-group per map: statistics, then the normalisation while the map is
 * still in cache (the second read of x comes from L2/L3), outputs streamed out. */
__kernel void bn_fused_forward(__global const stype *x, ulong xoff, __global stype *y, ulong yoff, ulong B, ulong C,
                               ulong S, __global const float *scale, __global const float *bias,
                               __global float *rmean, __global float *rvar, __global float *smean,
                               __global float *sinvstd, float factor, float eps, float unbias, uint flags) {
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    __local float lk[3];
    ulong c = get_group_id(0);
    __global const stype *xp = x + xoff;
    acc_t a;
    acc_init(&a);
    acc_range(&a, xp, C, S, c, 0, B * S);
    acc_reduce_local(&a, ln, lm, lq);
    if (get_local_id(0) == 0) {
        float mean, invstd;
        finalize_stats(&a, B * S, c, rmean, rvar, factor, eps, unbias, flags, &mean, &invstd);
        if (flags & F_SAVE) {
            smean[c] = mean;
            sinvstd[c] = invstd;
        }
        lk[0] = mean;
        lk[1] = (flags & F_AFFINE) ? scale[c] * invstd : invstd;
        lk[2] = (flags & F_AFFINE) ? bias[c] : 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    coef_t k = {lk[0], 0.0f, lk[1], lk[2]};
    apply_map(xp, NULL, y + yoff, B, C, S, c, k);
}
