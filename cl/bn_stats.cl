/* Per-map statistics for the SPATIAL mode: partial (mean, M2) per (map, slice), then the per-map merge
 * that finalises mean / invstd, updates the running statistics and saves mean / invstd.
 * Tensor view: (B, C, S) with S = d*h*w, NCHW. */

/* Work-group (g, c) covers slice g of map c's B*S values; partial mean and M2 go to part[(c*G + g)*2 ..]. */
__kernel void bn_stats_partial(__global const stype *x, ulong xoff, ulong B, ulong C, ulong S, uint G,
                               __global float *part) {
    __local ulong ln[WG];
    __local float lm[WG], lq[WG];
    uint g = get_group_id(0), lid = get_local_id(0);
    ulong c = get_global_id(1);
    ulong N = B * S, start = slice_begin(N, g, G), end = slice_begin(N, g + 1, G);
    __global const stype *xp = x + xoff;
    acc_t a;
    acc_init(&a);
#if defined(STRATEGY_CPU)
    /* each work-item a contiguous piece, walked one contiguous run of a row at a time */
    ulong len = end - start;
    ulong e = start + lid * len / WG, e1 = start + (lid + 1) * len / WG;
    while (e < e1) {
        ulong b = e / S, s = e - b * S;
        ulong run = min(S - s, e1 - e);
        acc_contig(&a, xp + (b * C + c) * S + s, run);
        e += run;
    }
#else
    /* neighbouring work-items on neighbouring elements; register blocks of 8 values per item */
    ulong e = start + lid;
    ulong b = e / S, s = e - b * S;
    while (e < end) {
        float v[8];
        uint nv = 0;
        for (; nv < 8 && e < end; ++nv) {
            v[nv] = LOAD1(xp, (b * C + c) * S + s);
            e += WG;
            advance_bs(&b, &s, WG, S);
        }
        TWO_PASS_SCALAR(&a, nv, v[i]);
    }
#endif
    acc_reduce_local(&a, ln, lm, lq);
    if (lid == 0) {
        part[(c * G + g) * 2] = acc_mean(&a);
        part[(c * G + g) * 2 + 1] = acc_m2(&a);
    }
}

/* One work-item per map: merge the G partials (in order: deterministic), then
 *   mean, var (biased), invstd = 1/sqrt(var + eps) -> smean, sinvstd (the save buffers or scratch);
 *   F_RUNNING: running = (1 - factor) * running + factor * batch (variance unbiased by 'unbias' = M/(M-1)). */
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
    float mean = acc_mean(&a);
    float var = acc_m2(&a) / (float)N;
    if (flags & F_RUNNING) {
        if (factor == 1.0f) { /* the old values are not read: an unwritten (NaN) running buffer is fine */
            rmean[c] = mean;
            rvar[c] = var * unbias;
        } else {
            rmean[c] = (1.0f - factor) * rmean[c] + factor * mean;
            rvar[c] = (1.0f - factor) * rvar[c] + factor * (var * unbias);
        }
    }
    smean[c] = mean;
    sinvstd[c] = rsqrt(var + eps);
}
