/* clnorm common OpenCL C 1.2 helpers: storage load/store, the statistics accumulator, index helpers.
 * The host prepends a #define block: DTYPE_F32 (storage), STRATEGY_CPU or STRATEGY_GPU, WG (work-group
 * size used by the reduction kernels, a power of two). No host includes. */

#if defined(DTYPE_F32)
typedef float stype;
#define LOAD1(p, i) ((float)(p)[(i)])
#define STORE1(v, p, i) ((p)[(i)] = (v))
#define LOAD16(p, i) vload16(0, (p) + (i))
#define STORE16(v, p, i) vstore16((v), 0, (p) + (i))
#else
#error "clnorm: unsupported storage type"
#endif

/* flags shared by the host (src/internal.h mirrors these values) */
#define F_AFFINE 1u      /* scale and bias buffers are given */
#define F_RUNNING 2u     /* update running mean / variance */
#define F_SAVE 4u        /* write mean and invstd to the save buffers */
#define F_HAS_INVSTD 8u  /* apply: the 4th parameter vector holds invstd, not a variance */
#define F_GRADS 16u      /* backward: write dscale / dbias */
#define F_DX 32u         /* backward: write dx */
#define F_ACCUM 64u      /* backward: grads = alpha * g + beta * old (else alpha * g) */
#define F_STATS 128u     /* per-activation: compute the batch statistics from x (training / recompute) */
#define F_COEF4 256u     /* apply: coefficients (mean, k1, k2, k3) per map come from one buffer (backward) */

#define BLK 256 /* elements of one contiguous two-pass block (16 float16 vectors) */

inline float hsum16(float16 v) {
    float8 a = v.lo + v.hi;
    float4 b = a.lo + a.hi;
    float2 c = b.lo + b.hi;
    return c.x + c.y;
}

/* Statistics of a run of values: count, mean and M2 = sum((x - mean)^2). The mean and M2 carry Kahan
 * compensation terms so that merging a long sequence of blocks keeps float accuracy. */
typedef struct {
    ulong n;
    float mean, mean_c; /* true mean = mean - mean_c */
    float m2, m2_c;     /* true M2 = m2 - m2_c */
} acc_t;

inline void acc_init(acc_t *a) {
    a->n = 0;
    a->mean = a->mean_c = a->m2 = a->m2_c = 0.0f;
}

inline float kahan_add(float *sum, float *c, float v) {
    float y = v - *c;
    float t = *sum + y;
    *c = (t - *sum) - y;
    *sum = t;
    return t;
}

/* Chan's parallel merge of (nb, mb, m2b) into a. NaN anywhere propagates into mean and M2. */
inline void acc_merge(acc_t *a, ulong nb, float mb, float m2b) {
    if (nb == 0)
        return;
    ulong nt = a->n + nb;
    float w = (float)nb / (float)nt;
    float d = (mb - a->mean) + a->mean_c;
    float na = (float)a->n;
    kahan_add(&a->mean, &a->mean_c, d * w);
    kahan_add(&a->m2, &a->m2_c, m2b + d * d * na * w);
    a->n = nt;
}

inline void acc_merge_acc(acc_t *a, const acc_t *b) { acc_merge(a, b->n, b->mean - b->mean_c, b->m2 - b->m2_c); }

inline float acc_mean(const acc_t *a) { return a->mean - a->mean_c; }
inline float acc_m2(const acc_t *a) {
    float m = a->m2 - a->m2_c;
    return m < 0.0f ? 0.0f : m; /* never negative; NaN stays NaN (the comparison is false) */
}

/* corrected two-pass statistics of len (< 2^24) values v(i), i = 0..len-1, merged into a */
#define TWO_PASS_SCALAR(a, len, VALUE)                                                                                 \
    do {                                                                                                               \
        float s_ = 0.0f;                                                                                               \
        for (uint i = 0; i < (uint)(len); ++i)                                                                         \
            s_ += (VALUE);                                                                                             \
        float inv_ = 1.0f / (float)(len);                                                                              \
        float mb_ = s_ * inv_, d1_ = 0.0f, d2_ = 0.0f;                                                                 \
        for (uint i = 0; i < (uint)(len); ++i) {                                                                       \
            float d_ = (VALUE)-mb_;                                                                                    \
            d1_ += d_;                                                                                                 \
            d2_ = fma(d_, d_, d2_);                                                                                    \
        }                                                                                                              \
        float m2b_ = d2_ - d1_ * d1_ * inv_;                                                                           \
        acc_merge((a), (ulong)(len), mb_ + d1_ * inv_, m2b_ < 0.0f ? 0.0f : m2b_);                                     \
    } while (0)

/* merge the statistics of len contiguous values at p into a: blocks of BLK, vectorised, then the tail */
inline void acc_contig(acc_t *a, __global const stype *p, ulong len) {
    ulong i = 0;
    for (; i + BLK <= len; i += BLK) {
        float16 s = (float16)(0.0f);
        for (int k = 0; k < BLK; k += 16)
            s += LOAD16(p, i + k);
        float mb = hsum16(s) * (1.0f / BLK);
        float16 d1 = (float16)(0.0f), d2 = (float16)(0.0f);
        for (int k = 0; k < BLK; k += 16) {
            float16 d = LOAD16(p, i + k) - mb;
            d1 += d;
            d2 = fma(d, d, d2);
        }
        float sd = hsum16(d1);
        float m2b = hsum16(d2) - sd * sd * (1.0f / BLK);
        acc_merge(a, BLK, mb + sd * (1.0f / BLK), m2b < 0.0f ? 0.0f : m2b);
    }
    if (i < len) {
        __global const stype *q = p + i;
        uint tail = (uint)(len - i); /* the macro's loop variable is i: VALUE below indexes q with it */
        TWO_PASS_SCALAR(a, tail, LOAD1(q, i));
    }
}

/* Tree-merge the accumulators of a work-group (WG items, power of two) into item 0's. */
inline void acc_reduce_local(acc_t *a, __local ulong *ln, __local float *lm, __local float *lq) {
#if WG > 1
    uint lid = get_local_id(0);
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (lid >= h && lid < 2 * h) {
            ln[lid - h] = a->n;
            lm[lid - h] = acc_mean(a);
            lq[lid - h] = acc_m2(a);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < h)
            acc_merge(a, ln[lid], lm[lid], lq[lid]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#endif
}

/* Tree-sum two values over a work-group (WG items, power of two) into item 0's. */
inline void sum2_reduce_local(float *u, float *v, __local float *lu, __local float *lv) {
#if WG > 1
    uint lid = get_local_id(0);
    lu[lid] = *u;
    lv[lid] = *v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (lid < h) {
            lu[lid] += lu[lid + h];
            lv[lid] += lv[lid + h];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *u = lu[0];
    *v = lv[0];
#endif
}

/* The slice [start, end) of a map's flattened (batch, spatial) extent N that work-group g of G covers */
inline ulong slice_begin(ulong N, uint g, uint G) { return (ulong)g * N / G; }

/* Advance the (batch, spatial) position (b, s) of a map by step elements. */
inline void advance_bs(ulong *b, ulong *s, ulong step, ulong S) {
    *s += step;
    if (*s >= S) {
        *b += *s / S;
        *s %= S;
    }
}
