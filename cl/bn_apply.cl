/* The elementwise pass over a (B, C, S) NCHW tensor, one coefficient set per map c (see coef_t):
 *   F_COEF: the coefficients of a coef buffer (training forward: from bn_stats_finalize; backward: dx with F_DX)
 *   else (inference): K = 0, m = mean[c], k2 = scale[c] / sqrt(var[c] + eps), k3 = bias[c]
 * (the rows path; the column layouts' kernels are all in bn_columns.cl). */

static inline coef_t map_coef(ulong c, __global const float *scale, __global const float *bias, __global const float *mean,
                       __global const float *var, __global const float *coef, float eps, uint flags) {
    if (flags & F_COEF)
        return coef_load(coef, c);
    float invstd = rsqrt(var[c] + eps);
    coef_t k = {0.0f, mean[c], 0.0f, (flags & F_AFFINE) ? scale[c] * invstd : invstd,
                (flags & F_AFFINE) ? bias[c] : 0.0f};
    return k;
}

/* CPU: each work-item a contiguous chunk of the flat tensor, walked a row run at a time (apply_run);
 * GPU: a 2-D grid over (values of a row, rows), neighbouring work-items on neighbouring values. */
__kernel void bn_apply(__global const stype *x, ulong xoff, __global const stype *dy, ulong dyoff,
                       __global const stype *aux, ulong auxoff, __global stype *out, ulong ooff, ulong C, ulong S, ulong total, ulong chunk,
                       __global const float *scale, __global const float *bias, __global const float *mean,
                       __global const float *var, __global const float *coef, float eps, uint flags) {
    __global const stype *xp = x + xoff;
    __global stype *op = out + ooff;
    __global const stype *gp = (flags & F_DX) ? dy + dyoff : NULL;
    /* aux: the residual z (forward, F_Z) or the forward's y whose sign masks dy (backward, F_RELU) */
    __global const stype *ep = (flags & (F_Z | F_RELU)) ? aux + auxoff : NULL;
#if defined(STRATEGY_CPU)
    ulong e = get_global_id(0) * chunk, e1 = min(e + chunk, total);
    while (e < e1) {
        ulong row = e / S, s = e - row * S;
        ulong run = min(S - s, e1 - e);
        apply_run(xp + e, gp ? gp + e : NULL, ep ? ep + e : NULL, op + e, run,
                  map_coef(row % C, scale, bias, mean, var, coef, eps, flags), flags);
        e += run;
    }
#else
    /* 2-D: dimension 1 walks the rows (b, c), dimension 0 the S values of a row; the map index comes from one
     * division per row, not per element */
    (void)chunk;
    (void)total;
    ulong rows = total / S, G0 = get_global_size(0);
    if (S >= 4 * G0) {
        /* long rows: four values of a row per trip (apply_strided) */
        for (ulong row = get_global_id(1); row < rows; row += get_global_size(1)) {
            coef_t k = map_coef(row % C, scale, bias, mean, var, coef, eps, flags);
            ulong base = row * S;
            apply_strided(xp + base, gp ? gp + base : gp, ep ? ep + base : ep, op + base, S, get_global_id(0), G0, k,
                          flags);
        }
    } else {
        /* short rows: dimension 1 walks groups of four rows (the host sizes it so), one value of each per trip */
        for (ulong r0 = get_global_id(1) * 4; r0 < rows; r0 += get_global_size(1) * 4) {
            uint nr = (uint)min((ulong)4, rows - r0);
            coef_t k[4];
            for (uint j = 0; j < 4; ++j)
                k[j] = map_coef((r0 + min(j, nr - 1)) % C, scale, bias, mean, var, coef, eps, flags);
            for (ulong s = get_global_id(0); s < S; s += G0) {
                float v[4], gv[4];
                for (uint j = 0; j < 4; ++j) {
                    v[j] = j < nr ? LOAD1(xp, (r0 + j) * S + s) : 0.0f;
                    gv[j] = (gp && j < nr) ? grad1(gp, ep, (r0 + j) * S + s, flags) : 0.0f;
                }
                for (uint j = 0; j < 4; ++j) {
                    float r = fma((v[j] - k[j].K) - k[j].m, k[j].k2, k[j].k3);
                    if (gp)
                        r = fma(k[j].k1, gv[j], r);
                    else if (j < nr)
                        r = act1(r, ep, (r0 + j) * S + s, flags);
                    if (j < nr)
                        STORE1(r, op, (r0 + j) * S + s);
                }
            }
        }
    }
#endif
}
