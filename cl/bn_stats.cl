/* Per-map statistics for the NCHW SPATIAL mode, tensor viewed as (B, C, S) with S = d*h*w:
 * partial (mean, M2) per (map, slice), then the per-map merge that finalises the statistics, updates the running
 * ones, saves mean / invstd and writes the elementwise coefficients; and the fused one-launch forward.
 * Map c is shifted by K = its first value x[0, c, 0] (see acc_t). */

static inline float map_shift(__global const stype *xp, ulong S, ulong c) { return LOAD1(xp, c * S); }

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

/* From the merged (shifted) statistics of map c over N values: the coefficients (K, m, invstd, a, b) with
 * a = scale * invstd, b = bias (F_AFFINE) or invstd, 0; F_RUNNING updates
 *   running = (1 - factor) * running + factor * batch  (variance unbiased by 'unbias' = N/(N-1))
 * where factor == 1 does not read the old values (an unwritten running buffer is fine); F_SAVE writes the mean
 * and invstd. */
static inline coef_t finalize_stats(const acc_t *a, float K, ulong N, ulong c, __global const float *scale,
                             __global const float *bias, __global float *rmean, __global float *rvar,
                             __global float *smean, __global float *sinvstd, float factor, float eps, float unbias,
                             uint flags) {
    float m = acc_mean(a);
    float var = acc_m2(a) / (float)N;
    float mean = K + m, invstd = rsqrt(var + eps);
    if (flags & F_RUNNING) {
        rmean[c] = RUNNING_UPDATE(rmean[c], mean, factor);
        rvar[c] = RUNNING_UPDATE(rvar[c], var * unbias, factor);
    }
    if (flags & F_SAVE) {
        smean[c] = mean;
        sinvstd[c] = invstd;
    }
    coef_t k = {K, m, invstd, (flags & F_AFFINE) ? scale[c] * invstd : invstd, (flags & F_AFFINE) ? bias[c] : 0.0f};
    return k;
}

/* Merge the G partials of map c (fixed order: deterministic), finalise, coefficients to scoef. CPU: one work-item
 * per map. GPU: one work-group per map, each item merging a contiguous run of the partials, then the tree. */
__kernel void bn_stats_finalize(__global const stype *x, ulong xoff, ulong S, __global const float *part, uint G,
                                ulong N, ulong C, __global const float *scale, __global const float *bias,
                                __global float *rmean, __global float *rvar, __global float *smean,
                                __global float *sinvstd, __global float *scoef, float factor, float eps, float unbias,
                                uint flags) {
    acc_t a;
    acc_init(&a);
#if defined(STRATEGY_CPU)
    ulong c = get_global_id(0);
    if (c >= C)
        return;
    acc_merge_parts(&a, part + c * G * 2, part + c * G * 2 + 1, 2, 0, G, G, N);
#else
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    ulong c = get_group_id(0);
    uint lid = get_local_id(0);
    acc_merge_parts(&a, part + c * G * 2, part + c * G * 2 + 1, 2, lid * G / WG, (lid + 1) * G / WG, G, N);
    acc_reduce_local(&a, ln, lm, lq);
    if (lid != 0)
        return;
#endif
    coef_store(finalize_stats(&a, map_shift(x + xoff, S, c), N, c, scale, bias, rmean, rvar, smean, sinvstd, factor,
                              eps, unbias, flags),
               scoef, c);
}

/* Training forward in one launch, one work-group per map: statistics, then the normalisation while the map is
 * still in cache (the second read of x comes from L2/L3), outputs streamed out. */
__kernel void bn_fused_forward(__global const stype *x, ulong xoff, __global const stype *z, ulong zoff,
                               __global stype *y, ulong yoff, ulong B, ulong C,
                               ulong S, __global const float *scale, __global const float *bias,
                               __global float *rmean, __global float *rvar, __global float *smean,
                               __global float *sinvstd, float factor, float eps, float unbias, uint flags) {
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    __local float lk[5];
    ulong c = get_group_id(0);
    __global const stype *xp = x + xoff;
    float K = map_shift(xp, S, c);
    acc_t a;
    acc_init(&a);
    acc_range(&a, xp, C, S, c, 0, B * S, K);
    acc_reduce_local(&a, ln, lm, lq);
    if (get_local_id(0) == 0) {
        coef_t k = finalize_stats(&a, K, B * S, c, scale, bias, rmean, rvar, smean, sinvstd, factor, eps, unbias,
                                  flags);
        lk[0] = k.K;
        lk[1] = k.m;
        lk[2] = 0.0f;
        lk[3] = k.k2;
        lk[4] = k.k3;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    coef_t k = {lk[0], lk[1], lk[2], lk[3], lk[4]};
    apply_map(xp, NULL, (flags & F_Z) ? z + zoff : NULL, y + yoff, B, C, S, c, k, flags);
}
