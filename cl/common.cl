/* clnorm common OpenCL C 1.2 helpers: storage load/store, the statistics accumulator, index helpers.
 * The host prepends a #define block: DTYPE_F32 (storage), STRATEGY_CPU or STRATEGY_GPU, WG (work-group
 * size used by the reduction kernels, a power of two). No host includes. */

/* Non-temporal stores for outputs that are not read back soon: POCL's clang has the builtin; other compilers fall back
 * to plain stores; -DCLNORM_NO_NT_STORES in CLNORM_BUILD_OPTIONS turns them off. */
#if defined(__has_builtin) && !defined(CLNORM_NO_NT_STORES)
#if __has_builtin(__builtin_nontemporal_store)
#define CN_NT_BUILTIN 1
#endif
#endif
/* one store of vector v (type T) at p, which has T's natural alignment: streamed where CN_NT_BUILTIN, else plain */
#if defined(CN_NT_BUILTIN)
#define NT_STORE(v, T, p) __builtin_nontemporal_store((v), (__global T *)(p))
#else
#define NT_STORE(v, T, p) (*(__global T *)(p) = (v))
#endif

/* A software prefetch of the line at p (clang's builtin; x86 and Arm prefetches never fault) where the host allows
 * it, for the columns statistics (pa_stats) and the rows path's walks over short rows (prefetch_run):
 * -DCLNORM_PREFETCH, given on POCL's CPU device only (the context's prefetch field; POCL's OpenCL prefetch()
 * compiles to nothing, and Oclgrind cannot run llvm.prefetch); elsewhere nothing. -DCLNORM_NO_PREFETCH in
 * CLNORM_BUILD_OPTIONS turns it off. */
#if defined(__has_builtin) && defined(CLNORM_PREFETCH) && defined(STRATEGY_CPU) && !defined(CLNORM_NO_PREFETCH)
#if __has_builtin(__builtin_prefetch)
#define CN_PREFETCH(p) __builtin_prefetch((const __global void *)(p))
#endif
#endif
#if !defined(CN_PREFETCH)
#define CN_PREFETCH(p) ((void)0)
#endif

#if defined(DTYPE_F32)
typedef float stype;
#define ESIZE 4
#define LOAD1(p, i) ((float)(p)[(i)])
#define STORE1(v, p, i) ((p)[(i)] = (v))
#define LOAD16(p, i) vload16(0, (p) + (i))
#define STORE16(v, p, i) vstore16((v), 0, (p) + (i))
#elif defined(DTYPE_F16)
/* half storage through the core vload_half / vstore_half_rte: no cl_khr_fp16 needed */
typedef half stype;
#define ESIZE 2
#define LOAD1(p, i) vload_half((i), (p))
#define STORE1(v, p, i) vstore_half_rte((v), (i), (p))
/* 16 halves at a time: where the compiler targets x86 with AVX-512 (POCL's CPU device on such a machine), one
 * 512-bit conversion each way (vcvtph2ps / vcvtps2ph with round to nearest even: the bits of vload_half16 and
 * vstore_half16_rte, which POCL compiles to eight-value conversions and the shuffles that join them; the float16
 * passes are bound by those operations, not by memory). AMD EPYC Zen 4 VM, POCL 3.1, one thread, (4,256,28,28)
 * float16 in cache: inference 0.106-0.121 -> 0.085-0.088 ms, backward 0.237-0.285 -> 0.200-0.203 ms. Any other
 * compiler (Oclgrind, GPU drivers, strict compile's spir64) uses the core built-ins; -DCLNORM_NO_X86_F16 in
 * CLNORM_BUILD_OPTIONS too. */
#if defined(__AVX512F__) && defined(__has_builtin) && !defined(CLNORM_NO_X86_F16)
#if __has_builtin(__builtin_ia32_vcvtph2ps512_mask) && __has_builtin(__builtin_ia32_vcvtps2ph512_mask)
#define CN_X86_F16 1
#endif
#endif
#if defined(CN_X86_F16)
typedef short16 __attribute__((aligned(2))) cn_half16_bits; /* 16 halves' bits at any half's alignment */
static inline short16 cn_half16_bits_at(__global const half *p) { return *(__global const cn_half16_bits *)p; }
static inline float16 cn_load_half16(__global const half *p) {
    return __builtin_ia32_vcvtph2ps512_mask(cn_half16_bits_at(p), (float16)(0.0f), (ushort)0xffff,
                                            4 /* the current rounding: the conversion is exact */);
}
/* the bits of 16 halves rounded to nearest even, in a register (for whole-vector stores: store16_stream) */
static inline ushort16 half_bits16(float16 v) {
    return as_ushort16(__builtin_ia32_vcvtps2ph512_mask(v, 0 /* nearest even */, (short16)(0), (ushort)0xffff));
}
static inline void cn_store_half16(float16 v, __global half *p) {
    *(__global cn_half16_bits *)p = as_short16(half_bits16(v));
}
#define LOAD16(p, i) cn_load_half16((p) + (i))
#define STORE16(v, p, i) cn_store_half16((v), (p) + (i))
#else
#define LOAD16(p, i) vload_half16(0, (p) + (i))
#define STORE16(v, p, i) vstore_half16_rte((v), 0, (p) + (i))
static inline ushort16 half_bits16(float16 v) {
    ushort16 w;
    vstore_half16_rte(v, 0, (__private half *)&w);
    return w;
}
#endif
/* 32 values at once (see the bfloat16 pairs below): the first and the second 16, put back as one 64-byte store
 * (two 32-byte ones: POCL's x86 code split each into two 16-byte streaming stores) */
#define HAVE_PAIRS 1
static inline void load32(__global const half *p, float16 *a, float16 *b) {
    *a = LOAD16(p, 0);
    *b = LOAD16(p, 16);
}
static inline void store32_stream(float16 a, float16 b, __global half *p) { /* p 64-byte aligned */
    NT_STORE((ulong8)(as_ulong4(half_bits16(a)), as_ulong4(half_bits16(b))), ulong8, p);
}
#elif defined(DTYPE_BF16)
/* bfloat16 storage: the high 16 bits of a float; stores round to nearest even, NaN stays a (quiet) NaN */
typedef ushort stype;
#define ESIZE 2
static inline float bf16_to_f32(ushort h) { return as_float((uint)h << 16); }
static inline float16 bf16_to_f32_16(ushort16 h) { return as_float16(convert_uint16(h) << 16); }
static inline ushort f32_to_bf16(float f) {
    uint u = as_uint(f);
    if (isnan(f))
        return (ushort)((u >> 16) | 0x40u);
    return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline ushort16 f32_to_bf16_16(float16 f) {
    uint16 u = as_uint16(f);
    uint16 r = (u + (uint16)(0x7fffu) + ((u >> 16) & (uint16)(1u))) >> 16;
    uint16 q = (u >> 16) | (uint16)(0x40u);
    return convert_ushort16(select(r, q, isnan(f)));
}
#define LOAD1(p, i) bf16_to_f32((p)[(i)])
#define STORE1(v, p, i) ((p)[(i)] = f32_to_bf16(v))
#define LOAD16(p, i) bf16_to_f32_16(vload16(0, (p) + (i)))
/* a 32-byte aligned run is stored as one ushort16 (POCL's vstore16 on ushort writes the values one by one: a
 * bfloat16 inference ran 2.5x slower than the same pass on half); other runs through vstore16 */
static inline void bf16_store16(float16 v, __global ushort *p) {
    ushort16 w = f32_to_bf16_16(v);
    if ((((ulong)p) & 31) == 0)
        *(__global ushort16 *)p = w;
    else
        vstore16(w, 0, p);
}
#define STORE16(v, p, i) bf16_store16((v), (p) + (i))
/* 32 values at once for elementwise passes whose 32 values share their coefficients (rows runs): a run read as 16
 * uints gives the even-indexed values (the low halves, one shift) and the odd-indexed ones (the high halves, one
 * and) as two float16; the results, rounded in place (the bfloat16 in the high half), go back together with one
 * and / shift / or. About a third fewer vector operations per value than widening and narrowing 16 at a time,
 * and a bfloat16 pass is bound by those, not by memory. The bits are those of STORE16. */
#define HAVE_PAIRS 1
static inline void load32(__global const ushort *p, float16 *even, float16 *odd) { /* p 4-byte aligned */
    uint16 w = vload16(0, (__global const uint *)p);
    *even = as_float16(w << 16);
    *odd = as_float16(w & (uint16)(0xffff0000u));
}
static inline uint16 bf16_high(float16 f) { /* f rounded to nearest even in the high half; NaN quieted */
    uint16 u = as_uint16(f);
    uint16 r = u + (uint16)(0x7fffu) + ((u >> 16) & (uint16)(1u));
    return select(r, u | (uint16)(0x00400000u), isnan(f));
}
static inline void store32_stream(float16 even, float16 odd, __global ushort *p) { /* p 64-byte aligned; streamed */
    NT_STORE((bf16_high(odd) & (uint16)(0xffff0000u)) | (bf16_high(even) >> 16), uint16, p);
}
#else
#error "clnorm: unsupported storage type"
#endif

/* The flags (F_AFFINE, F_RUNNING, ...), CN_TILE_COLS (columns of a CPU column tile) and CN_COEF_STRIDE (floats per
 * group of a coefficient buffer) come from the host's table (src/kernel_abi.h) as -D defines in the build options:
 * host and kernels cannot disagree on them. */
#if !defined(F_AFFINE) || !defined(CN_TILE_COLS) || !defined(CN_COEF_STRIDE)
#error "clnorm: the build options must carry src/kernel_abi.h's defines"
#endif

/* Bytes of one tensor's part that a one-launch backward walks twice (a map: bn_fused_backward; a column tile over
 * all rows: pa_backward) above which its dx pass reads g from dz rather than from dy and y: x, dy and y of that part
 * no longer all stay in a core's cache, so they come back from memory anyway and one stream beats two. Below it,
 * dz (stored with streaming stores) would come back from DRAM while dy and y are still in cache. */
#if !defined(BWD_REREAD_BYTES)
#define BWD_REREAD_BYTES (2048ul * 1024ul)
#endif

/* ---- formulas written once (type-generic: float or floatN; each argument is evaluated at most once, `old` only
 * when it is used, so an unwritten buffer behind it is never read) ---------------------------------------------- */
/* running = (1 - factor) * running + factor * batch; factor == 1 does not read the old value */
#define RUNNING_UPDATE(old, batch, factor) ((factor) == 1.0f ? (batch) : (1.0f - (factor)) * (old) + (factor) * (batch))
/* a parameter gradient as stored: alpha * g, plus beta * old with F_ACCUM */
#define GRAD_UPDATE(old, g, alpha, beta, flags) (((flags) & F_ACCUM) ? (alpha) * (g) + (beta) * (old) : (alpha) * (g))
/* the dx coefficients: dx = k1 * dy + k2 * (x - mean) + k3 with k1 = scale * invstd (is), dscale = gscale,
 * dbias = gbias, invM = 1 / M */
#define DX_K2(k1, is, gscale, invM) (-(k1) * (is) * (gscale) * (invM))
#define DX_K3(k1, gbias, invM) (-(k1) * (gbias) * (invM))

#define BLK 256 /* elements of one contiguous two-pass block (16 float16 vectors) */

/* 16 values as one streaming store (NT_STORE): F32 64 bytes, F16 32 bytes, so callers first peel p to the
 * vector's alignment; BF16 stores them plainly (its 32-value runs stream through store32_stream). */
#if defined(CN_NT_BUILTIN) && defined(DTYPE_F32)
#define HAVE_NT_STORE 1 /* F32 outputs of any alignment: store16_stream_any */
#endif
static inline void store16_stream(float16 v, __global stype *p) {
#if defined(DTYPE_F32)
    NT_STORE(v, float16, p);
#elif defined(DTYPE_F16)
    NT_STORE(half_bits16(v), ushort16, p);
#else
    STORE16(v, p, 0);
#endif
}

/* The forward's epilogue of value v at element i: + z[i] (F_Z), then the activation (F_RELU: v < 0 gives 0, so
 * that NaN stays NaN). Without those flags v is returned as it is (the plain call's bits). */
static inline float act1(float v, __global const stype *z, ulong i, uint flags) {
    if (flags & F_Z)
        v += LOAD1(z, i);
    return ((flags & F_RELU) && v < 0.0f) ? 0.0f : v;
}
static inline float16 relu16(float16 v, uint flags) {
    return (flags & F_RELU) ? select(v, (float16)(0.0f), v < 0.0f) : v;
}
static inline float16 act16(float16 v, __global const stype *z, ulong i, uint flags) {
    if (flags & F_Z)
        v += LOAD16(z, i);
    return relu16(v, flags);
}
/* NO_NULL_LOADS: y here, and the residual z of act1, are read only under their flag, but a pointer that is not read
 * must still point into a tensor (callers pass x), not be NULL. LLVM vectorises the scalar peel and tail loops
 * around these helpers with masked loads of y or z; with the flag clear every lane is masked off, and on x86 a
 * masked-off load at an address near NULL costs a fault-suppression microcode assist, each time. AMD EPYC (Zen 4)
 * VM, POCL 3.1 (the README's "Short rows" sitting): inference on (32,512,7,7) 1.13 -> 0.19 ms, backward 1.13 ->
 * 0.33 ms; on (16,512,14,14) 0.56 -> 0.25 ms and 0.76 -> 0.35 ms (rows of 49 and 196 values: a peel and a tail in
 * every row).
 * grad1 itself: the backward's gradient at element i, dy, where y > 0 only with F_RELU (the stored y decides;
 * y <= 0 or NaN gives 0, whatever dy holds). */
static inline float grad1(__global const stype *dy, __global const stype *y, ulong i, uint flags) {
    float g = LOAD1(dy, i);
    return ((flags & F_RELU) && !(LOAD1(y, i) > 0.0f)) ? 0.0f : g;
}
/* y > 0 of the 16 stored values at y + i, as a select mask. CN_X86_F16 decides it on the halves' bits (positive
 * non-zero, at most infinity: the same answer, NaN and -0 included): LLVM sees through the conversion and narrows
 * a float comparison of a converted half to a half comparison, which x86 without AVX-512 FP16 makes one value at a
 * time (backward_ex on float16 (32,256,28,28) took 12.6 ms instead of 2.6 ms). */
static inline int16 pos16(__global const stype *y, ulong i) {
#if defined(CN_X86_F16)
    short16 b = cn_half16_bits_at(y + i);
    return convert_int16((b > (short16)(0)) & (b <= (short16)(0x7c00)));
#else
    return LOAD16(y, i) > 0.0f;
#endif
}
static inline float16 mask16(float16 g, int16 pos) { return select((float16)(0.0f), g, pos); }
static inline float16 grad16(__global const stype *dy, __global const stype *y, ulong i, uint flags) {
    float16 g = LOAD16(dy, i);
    return (flags & F_RELU) ? mask16(g, pos16(y, i)) : g;
}
#if defined(HAVE_PAIRS)
/* act16 and grad16 on a 32-value run at once, as the two float16 of load32 (bfloat16: even / odd values; half:
 * first / second 16) */
static inline void act_pair(float16 *a, float16 *b, __global const stype *z, ulong i, uint flags) {
    if (flags & F_Z) {
        float16 za, zb;
        load32(z + i, &za, &zb);
        *a += za;
        *b += zb;
    }
    *a = relu16(*a, flags);
    *b = relu16(*b, flags);
}
static inline void grad_pair(float16 *ga, float16 *gb, __global const stype *dy, __global const stype *y, ulong i,
                             uint flags) {
    load32(dy + i, ga, gb);
    if (flags & F_RELU) {
#if defined(DTYPE_F16)
        *ga = mask16(*ga, pos16(y, i));
        *gb = mask16(*gb, pos16(y, i + 16));
#else
        float16 ya, yb;
        load32(y + i, &ya, &yb);
        *ga = mask16(*ga, ya > 0.0f);
        *gb = mask16(*gb, yb > 0.0f);
#endif
    }
}
#endif

/* the same where p happens to be 64-byte aligned (F32), else a plain store (outputs written in runs of any alignment;
 * not F16: a plain half store beside a streamed one compiled to an aligned store at unaligned addresses on POCL) */
static inline void store16_stream_any(float16 v, __global stype *p) {
#if defined(HAVE_NT_STORE)
    if ((((ulong)p) & 63) == 0) {
        store16_stream(v, p);
        return;
    }
#endif
    STORE16(v, p, 0);
}

static inline float hsum16(float16 v) {
    float8 a = v.lo + v.hi;
    float4 b = a.lo + a.hi;
    float2 c = b.lo + b.hi;
    return c.x + c.y;
}

/* Statistics of a run of values: count, mean and M2 = sum((x - mean)^2). The mean and M2 carry Kahan
 * compensation terms so that merging a long sequence of blocks keeps float accuracy.
 * Every group's values are shifted by K, one of the group's own values (x - K is exact for values near K), so
 * that the mean accumulated here is small and precise even when the group's mean is large next to its spread
 * (mean 1e4, std 1): the true mean is K + acc_mean(). */
typedef struct {
    ulong n;
    float mean, mean_c; /* true (shifted) mean = mean - mean_c */
    float m2, m2_c;     /* true M2 = m2 - m2_c */
} acc_t;

static inline void acc_init(acc_t *a) {
    a->n = 0;
    a->mean = a->mean_c = a->m2 = a->m2_c = 0.0f;
}

/* ---- the statistics formulas, written once (type T: float, or floatN for the column tiles) ---------------- */
/* Kahan-compensated sum += v: the true sum is sum - comp */
#define KAHAN_ADD(T, sum, comp, v)                                                                                     \
    do {                                                                                                               \
        T y_ = (v) - (comp);                                                                                           \
        T t_ = (sum) + y_;                                                                                             \
        (comp) = (t_ - (sum)) - y_;                                                                                    \
        (sum) = t_;                                                                                                    \
    } while (0)
/* Chan's parallel merge of a block (mean mb, M2 m2b) into compensated (mean, M2) accumulators; w = nb / (na + nb)
 * is the block's weight and naw = na * w. NaN anywhere propagates into mean and M2. */
#define CHAN_MERGE(T, mean, mean_c, m2, m2_c, mb, m2b, w, naw)                                                         \
    do {                                                                                                               \
        T d_ = ((mb) - (mean)) + (mean_c);                                                                             \
        KAHAN_ADD(T, mean, mean_c, d_ * (w));                                                                          \
        KAHAN_ADD(T, m2, m2_c, (m2b) + d_ * d_ * (naw));                                                               \
    } while (0)
/* The corrected two-pass block: from the first pass's mean mb0 of len values (inv = 1/len) and the second pass's
 * d1 = sum(v - mb0), d2 = sum((v - mb0)^2): the block mean mb0 + d1 / len and M2 = d2 - d1^2 / len, never
 * negative (NaN stays NaN). */
#define TWO_PASS_FINISH(T, mb0, d1, d2, inv, mean_out, m2_out)                                                         \
    do {                                                                                                               \
        T q_ = (d2) - (d1) * (d1) * (inv);                                                                             \
        (m2_out) = q_ < 0.0f ? (T)(0.0f) : q_;                                                                         \
        (mean_out) = (mb0) + (d1) * (inv);                                                                             \
    } while (0)

static inline float kahan_add(float *sum, float *c, float v) {
    KAHAN_ADD(float, *sum, *c, v);
    return *sum;
}

/* Chan's parallel merge of (nb, mb, m2b) into a. */
static inline void acc_merge(acc_t *a, ulong nb, float mb, float m2b) {
    if (nb == 0)
        return;
    ulong nt = a->n + nb;
    float w = (float)nb / (float)nt;
    CHAN_MERGE(float, a->mean, a->mean_c, a->m2, a->m2_c, mb, m2b, w, (float)a->n * w);
    a->n = nt;
}

static inline float acc_mean(const acc_t *a) { return a->mean - a->mean_c; }
/* the true mean K + acc_mean(a), rounded once: K + mean first (exact when the mean is small next to K: the
 * shifted mean is then close to -K), then the compensation, so a map whose shift value lies far from its mean
 * keeps the mean's own precision, not K's */
static inline float acc_mean_at(const acc_t *a, float K) { return (K + a->mean) - a->mean_c; }
static inline float acc_m2(const acc_t *a) {
    float m = a->m2 - a->m2_c;
    return m < 0.0f ? 0.0f : m; /* never negative; NaN stays NaN (the comparison is false) */
}

/* corrected two-pass statistics of len (< 2^24) values VALUE(i), i = 0..len-1, merged into a */
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
        float bm_, bq_;                                                                                                \
        TWO_PASS_FINISH(float, mb_, d1_, d2_, inv_, bm_, bq_);                                                         \
        acc_merge((a), (ulong)(len), bm_, bq_);                                                                        \
    } while (0)

/* merge the statistics of the n values at p (n a multiple of 16, at most 4 * BLK), shifted by K, into a.
 * The first block of an accumulation (a empty): the corrected two-pass over the block (the second pass re-reads it
 * from L1), then Chan's merge. Every later block: one pass of sums of v - m, shifted once more by the mean m of
 * what a holds already. With m that close to the block's values the sums lose nothing to cancellation (the
 * block's M2 errs by ~eps * n * (block mean - m)^2, the part of the group's M2 that the merge adds itself), and
 * the second pass, a tenth of the training forward on 4 MB maps, is gone. K + m is one float: the values are
 * shifted by it exactly (Sterbenz: they are near it), and (K + m) - K is exact too. */
static inline void acc_block(acc_t *a, __global const stype *p, uint n, float K) {
    float inv = 1.0f / (float)n, shift, m, bm, bq;
    if (a->n == 0) { /* first pass: the block's own mean, the second one's shift after K */
        float16 s = (float16)(0.0f);
        for (uint k = 0; k < n; k += 16)
            s += LOAD16(p, k) - K;
        shift = K;
        m = hsum16(s) * inv;
    } else { /* the running mean, folded into the one shift (v - Km, then - 0, which the compiler drops) */
        shift = K + acc_mean(a);
        m = 0.0f;
    }
    float16 d1 = (float16)(0.0f), d2 = (float16)(0.0f);
    for (uint k = 0; k < n; k += 16) {
        float16 d = (LOAD16(p, k) - shift) - m;
        d1 += d;
        d2 = fma(d, d, d2);
    }
    TWO_PASS_FINISH(float, (shift - K) + m, hsum16(d1), hsum16(d2), inv, bm, bq);
    acc_merge(a, n, bm, bq);
}

/* merge the statistics of len contiguous values at p, shifted by K, into a: blocks of up to 4 * BLK values, a
 * multiple of 16 (the merge after each block stalls the stream of loads: on 4 MB maps the training forward's
 * statistics pass went from ~0.8 to ~0.9 of the bench's minimal fused kernel with blocks of 1024 instead of 256;
 * a 28 x 28 row is one block of 784), vectorised, then a scalar tail of under 16 */
static inline void acc_contig(acc_t *a, __global const stype *p, ulong len, float K) {
    ulong i = 0;
    while (i + 16 <= len) {
        uint n = (uint)min(len - i, (ulong)(4 * BLK)) & ~15u;
        acc_block(a, p + i, n, K);
        i += n;
    }
    if (i < len) {
        __global const stype *q = p + i;
        uint tail = (uint)(len - i); /* the macro's loop variable is i: VALUE below indexes q with it */
        TWO_PASS_SCALAR(a, tail, LOAD1(q, i) - K);
    }
}

/* Tree-merge the accumulators of a work-group (WG items, power of two) into item 0's. */
static inline void acc_reduce_local(acc_t *a, __local ulong *ln, __local float *lm, __local float *lq) {
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

/* Tree-sum two values over a work-group (WG items, power of two): every item gets the totals. */
static inline void sum2_reduce_local(float *u, float *v, __local float *lu, __local float *lv) {
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
static inline ulong slice_begin(ulong N, uint g, uint G) { return (ulong)g * N / G; }

/* GPU walks: one work-item's next element, WG further along a map's flattened (batch, spatial) extent, as the
 * offset rb = (b*C + c)*S of its row and the position s in it (CS = C*S) */
static inline void gpu_step(ulong *s, ulong *rb, ulong S, ulong CS) {
    *s += WG;
    if (*s >= S) {
        if (S >= WG) { /* one row further at most: no division */
            *s -= S;
            *rb += CS;
        } else {
            ulong db = *s / S;
            *s -= db * S;
            *rb += db * CS;
        }
    }
}

/* The offsets of the next n (<= 8) elements of a GPU work-item's walk (element e, then every WG-th one, at
 * (s, rb)) into idx, all computed before any load so that the loads go out together; returns how many of them lie
 * below end. */
static inline uint gpu_walk(ulong *idx, uint n, ulong *s, ulong *rb, ulong e, ulong end, ulong S, ulong CS) {
    for (uint k = 0; k < n; ++k) {
        idx[k] = *rb + *s;
        gpu_step(s, rb, S, CS);
    }
    ulong left = (end - e + WG - 1) / WG;
    return left < n ? (uint)left : n;
}

/* Merge partial statistics g0 <= g < g1 of G, over the slices of N values that slice_begin gives: (mean, M2) at
 * m[g * stride] and q[g * stride]. */
static inline void acc_merge_parts(acc_t *a, __global const float *m, __global const float *q, ulong stride, uint g0,
                            uint g1, uint G, ulong N) {
    for (uint g = g0; g < g1; ++g)
        acc_merge(a, slice_begin(N, g + 1, G) - slice_begin(N, g, G), m[g * stride], q[g * stride]);
}

/* The share of a finalize's reduction over a group's P partials that the calling item takes: CPU, the item is
 * group j (its global id) and takes every partial, and 0 is returned past the last group; GPU, the work-group is
 * group j (its group id) and each item a contiguous run of partials [g0, g1). */
static inline int group_share(ulong *j, ulong groups, uint P, uint *g0, uint *g1) {
#if defined(STRATEGY_CPU)
    *j = get_global_id(0);
    *g0 = 0;
    *g1 = P;
    return *j < groups;
#else
    uint lid = get_local_id(0);
    (void)groups;
    *j = get_group_id(0);
    *g0 = lid * P / WG;
    *g1 = (lid + 1) * P / WG;
    return 1;
#endif
}

/* Group j's statistics from its P partials (means at m0[i * ps], M2 at m0[vo + i * ps] with m0 = part + j * gs;
 * partial i counts slice i of N), the one merge of every finalize, shared out by group_share (GPU: then the tree
 * in local memory, ln, lm, lq of GROUP_MERGE_SPACE). Returns 0 for the items with nothing more to do (CPU: past the
 * last group; GPU: all but item 0, whose a then holds the group's statistics). */
static inline int merge_group_parts(acc_t *a, ulong *j, ulong groups, __global const float *part, ulong gs, ulong vo,
                                    ulong ps, uint P, ulong N, __local ulong *ln, __local float *lm,
                                    __local float *lq) {
    uint g0, g1;
    acc_init(a);
    if (!group_share(j, groups, P, &g0, &g1))
        return 0;
    acc_merge_parts(a, part + *j * gs, part + *j * gs + vo, ps, g0, g1, P, N);
#if defined(STRATEGY_CPU)
    return 1;
#else
    acc_reduce_local(a, ln, lm, lq);
    return get_local_id(0) == 0;
#endif
}
/* merge_group_parts' local memory, declared at the kernel's scope (a CPU item needs none) */
#if defined(STRATEGY_CPU)
#define GROUP_MERGE_SPACE __local ulong *ln = NULL; __local float *lm = NULL, *lq = NULL
#else
#define GROUP_MERGE_SPACE __local ulong ln[WG]; __local float lm[WG], lq[WG]
#endif

/* Compensated sums of partials g0 <= g < g1: u of pu[g * stride], v of pv[g * stride]. */
static inline void sum_parts(float *u, float *v, __global const float *pu, __global const float *pv, ulong stride, uint g0,
                      uint g1) {
    float su = 0.0f, suc = 0.0f, sv = 0.0f, svc = 0.0f;
    for (uint g = g0; g < g1; ++g) {
        kahan_add(&su, &suc, pu[g * stride]);
        kahan_add(&sv, &svc, pv[g * stride]);
    }
    *u = su - suc;
    *v = sv - svc;
}

/* Group j's two sums from its P partials (u at u0[i * ps], v at u0[vo + i * ps] with u0 = part + j * gs), the one
 * reduction of every backward finalize, split over the items as merge_group_parts (local memory: lu, lv of
 * GROUP_SUM_SPACE); the same return. */
static inline int sum_group_parts(float *u, float *v, ulong *j, ulong groups, __global const float *part, ulong gs,
                                  ulong vo, ulong ps, uint P, __local float *lu, __local float *lv) {
    uint g0, g1;
    if (!group_share(j, groups, P, &g0, &g1))
        return 0;
    sum_parts(u, v, part + *j * gs, part + *j * gs + vo, ps, g0, g1);
#if defined(STRATEGY_CPU)
    return 1;
#else
    sum2_reduce_local(u, v, lu, lv);
    return get_local_id(0) == 0;
#endif
}
#if defined(STRATEGY_CPU)
#define GROUP_SUM_SPACE __local float *lu = NULL, *lv = NULL
#else
#define GROUP_SUM_SPACE __local float lu[WG], lv[WG]
#endif

/* CPU walks of a map's rows (rows path): each row is its own short stream, C * S values after the last one, which the
 * hardware prefetchers do not pick up when rows are short. So a walk over rows of at most CN_PF_ROW_BYTES prefetches
 * the next row's run while it reads this one (CN_PREFETCH: POCL CPU only). AMD EPYC (Zen 4) VM, POCL 3.1, two
 * interleaved runs without -> with: training forward (256,256,14,14) 5.30 / 5.77 -> 3.51 / 3.63 ms, (64,256,9,9)
 * 0.40 / 0.40 -> 0.34 / 0.35 ms; backward (256,256,14,14) 6.83 / 7.11 -> 6.34 / 6.04 ms; backward_ex
 * (256,256,14,14) 10.90 / 10.91 -> 9.47 / 9.95 ms. */
#define CN_PF_ROW_BYTES 1024
/* the n values from p, one prefetch per 64-byte line, when rows of S values are short (the callers pass the next
 * row's run) */
static inline void prefetch_run(__global const stype *p, ulong n, ulong S) {
    if (S * ESIZE > CN_PF_ROW_BYTES)
        return;
    for (ulong l = 0; l < n; l += 64 / ESIZE)
        CN_PREFETCH(p + l);
}

/* Merge the values of map c in the slice [start, end) of its flattened (batch, spatial) extent, shifted by K,
 * into a. CPU strategy: each work-item a contiguous piece, walked one row run at a time (blocks of BLK,
 * vectorised). GPU strategy: neighbouring work-items on neighbouring elements, register blocks of 8 per item. */
static inline void acc_range(acc_t *a, __global const stype *xp, ulong C, ulong S, ulong c, ulong start, ulong end,
                      float K) {
    uint lid = get_local_id(0);
#if defined(STRATEGY_CPU)
    ulong len = end - start;
    ulong e = start + lid * len / WG, e1 = start + (lid + 1) * len / WG;
    while (e < e1) {
        ulong b = e / S, s = e - b * S;
        ulong run = min(S - s, e1 - e);
        if (e + S < e1)
            prefetch_run(xp + ((b + 1) * C + c) * S + s, run, S);
        acc_contig(a, xp + (b * C + c) * S + s, run, K);
        e += run;
    }
#else
    /* blocks of 8 values per item: the 8 addresses first (arithmetic only), then 8 loads in flight at once */
    ulong e = start + lid, CS = C * S;
    ulong s = e % S, rb = ((e / S) * C + c) * S;
    while (e < end) {
        ulong idx[8];
        uint nv = gpu_walk(idx, 8, &s, &rb, e, end, S, CS);
        float v[8];
        if (nv == 8) {
            for (uint k = 0; k < 8; ++k)
                v[k] = LOAD1(xp, idx[k]) - K;
            TWO_PASS_SCALAR(a, 8, v[i]);
        } else {
            for (uint k = 0; k < 8; ++k)
                v[k] = k < nv ? LOAD1(xp, idx[k]) - K : 0.0f;
            TWO_PASS_SCALAR(a, nv, v[i]);
        }
        e += 8 * WG;
    }
#endif
}

/* Sums of g and g * ((x - K) - m) over map c's slice [start, end), compensated; the walks of acc_range. g is dy,
 * masked by y > 0 with F_RELU (grad1); F_DZ stores it to dz as it goes. */
static inline void dsum_range(float *u, float *v, __global const stype *xp, __global const stype *gp,
                       __global const stype *yp, __global stype *dzp, float K, float m, ulong C, ulong S, ulong c,
                       ulong start, ulong end, uint flags) {
    uint lid = get_local_id(0);
    float su = 0.0f, suc = 0.0f, sv = 0.0f, svc = 0.0f;
#if defined(STRATEGY_CPU)
    if (!(flags & F_RELU))
        yp = xp; /* NO_NULL_LOADS (grad1) */
    ulong len = end - start;
    ulong e = start + lid * len / WG, e1 = start + (lid + 1) * len / WG;
    while (e < e1) {
        ulong b = e / S, s = e - b * S;
        ulong run = min(S - s, e1 - e);
        ulong base = (b * C + c) * S + s, i = 0;
        if (e + S < e1) { /* the next row (prefetch_run) */
            prefetch_run(xp + base + C * S, run, S);
            prefetch_run(gp + base + C * S, run, S);
            if (flags & F_RELU)
                prefetch_run(yp + base + C * S, run, S);
        }
        while (i + 16 <= run) { /* blocks of up to BLK, any multiple of 16: a 28 x 28 row leaves no tail */
            uint n = (uint)min(run - i, (ulong)BLK) & ~15u;
            float16 bu = (float16)(0.0f), bv = (float16)(0.0f);
            for (uint k = 0; k < n; k += 16) {
                float16 g = grad16(gp, yp, base + i + k, flags);
                if (flags & F_DZ)
                    store16_stream_any(g, dzp + base + i + k);
                bu += g;
                bv = fma(g, (LOAD16(xp, base + i + k) - K) - m, bv);
            }
            kahan_add(&su, &suc, hsum16(bu));
            kahan_add(&sv, &svc, hsum16(bv));
            i += n;
        }
        float tu = 0.0f, tv = 0.0f;
        for (; i < run; ++i) {
            float g = grad1(gp, yp, base + i, flags);
            if (flags & F_DZ)
                STORE1(g, dzp, base + i);
            tu += g;
            tv = fma(g, (LOAD1(xp, base + i) - K) - m, tv);
        }
        kahan_add(&su, &suc, tu);
        kahan_add(&sv, &svc, tv);
        e += run;
    }
#else
    /* blocks of 8 values per item, as in acc_range: 16 loads in flight, then the block's sums compensated */
    ulong e = start + lid, CS = C * S;
    ulong s = e % S, rb = ((e / S) * C + c) * S;
    while (e < end) {
        ulong idx[8];
        uint nv = gpu_walk(idx, 8, &s, &rb, e, end, S, CS);
        float g[8], xv[8], tu = 0.0f, tv = 0.0f;
        if (nv == 8) {
            for (uint k = 0; k < 8; ++k) {
                g[k] = grad1(gp, yp, idx[k], flags);
                xv[k] = LOAD1(xp, idx[k]);
            }
            for (uint k = 0; k < 8; ++k) {
                tu += g[k];
                tv = fma(g[k], (xv[k] - K) - m, tv);
            }
        } else {
            for (uint k = 0; k < nv; ++k) {
                g[k] = grad1(gp, yp, idx[k], flags);
                tu += g[k];
                tv = fma(g[k], (LOAD1(xp, idx[k]) - K) - m, tv);
            }
        }
        if (flags & F_DZ)
            for (uint k = 0; k < nv; ++k)
                STORE1(g[k], dzp, idx[k]);
        kahan_add(&su, &suc, tu);
        kahan_add(&sv, &svc, tv);
        e += 8 * WG;
    }
#endif
    *u = su - suc;
    *v = sv - svc;
}

/* parameter index of column j of a (rows, K) column view: identity, or (j % pC) * pS + j / pC for NHWC
 * per-activation, whose memory columns are (s, c) while parameters are in (c, s) order */
static inline ulong param_index(ulong j, ulong pC, ulong pS, uint flags) { return (flags & F_PMAP) ? (j % pC) * pS + j / pC : j; }
static inline float16 param_load16(__global const float *p, ulong k0, ulong pC, ulong pS, uint flags) {
    if (!(flags & F_PMAP))
        return vload16(0, p + k0);
    float v[16];
    for (int l = 0; l < 16; ++l)
        v[l] = p[param_index(k0 + l, pC, pS, flags)];
    return vload16(0, v);
}
static inline void param_store16(float16 x, __global float *p, ulong k0, ulong pC, ulong pS, uint flags) {
    if (!(flags & F_PMAP)) {
        vstore16(x, 0, p + k0);
        return;
    }
    float v[16];
    vstore16(x, 0, v);
    for (int l = 0; l < 16; ++l)
        p[param_index(k0 + l, pC, pS, flags)] = v[l];
}

/* Elementwise coefficients of one group: out = k2 * ((x - K) - m) + k3 (+ k1 * dy in backward). Forward:
 * K + m is the mean, k2 = scale * invstd, k3 = bias (k1 holds invstd). Stored as 5 floats per group in coef
 * buffers, in this order. */
typedef struct {
    float K, m, k1, k2, k3;
} coef_t;

/* Helpers that produce a coef_t write it through an out pointer (*out) rather than return it: a struct return is an
 * sret argument, which is noalias, and once such a call is expanded into a helper that the compiler keeps as a
 * call, LLVM leaves an llvm.experimental.noalias.scope.decl that some OpenCL implementations cannot run (Oclgrind
 * 21.10). */
static inline void coef_load(coef_t *out, __global const float *p, ulong c) {
    coef_t k = {p[CN_COEF_STRIDE * c], p[CN_COEF_STRIDE * c + 1], p[CN_COEF_STRIDE * c + 2], p[CN_COEF_STRIDE * c + 3],
                p[CN_COEF_STRIDE * c + 4]};
    *out = k;
}
static inline void coef_store(coef_t k, __global float *p, ulong c) {
    p[CN_COEF_STRIDE * c] = k.K;
    p[CN_COEF_STRIDE * c + 1] = k.m;
    p[CN_COEF_STRIDE * c + 2] = k.k1;
    p[CN_COEF_STRIDE * c + 3] = k.k2;
    p[CN_COEF_STRIDE * c + 4] = k.k3;
}

/* From the merged (shifted) statistics of group c over N values (a map of the rows path, a column of the columns
 * path, a merged split-phase block): the coefficients (K, m, invstd, a, b) with
 * a = scale * invstd, b = bias (F_AFFINE) or invstd, 0; F_RUNNING updates
 *   running = (1 - factor) * running + factor * batch  (variance unbiased by 'unbias' = N/(N-1))
 * where factor == 1 does not read the old values (an unwritten running buffer is fine); F_SAVE writes the mean
 * and invstd. */
static inline void finalize_stats(coef_t *out, const acc_t *a, float K, ulong N, ulong c, __global const float *scale,
                             __global const float *bias, __global float *rmean, __global float *rvar,
                             __global float *smean, __global float *sinvstd, float factor, float eps, float unbias,
                             uint flags) {
    float m = acc_mean(a);
    float var = acc_m2(a) / (float)N;
    float mean = acc_mean_at(a, K), invstd = rsqrt(var + eps);
    if (flags & F_RUNNING) {
        rmean[c] = RUNNING_UPDATE(rmean[c], mean, factor);
        rvar[c] = RUNNING_UPDATE(rvar[c], var * unbias, factor);
    }
    if (flags & F_SAVE) {
        smean[c] = mean;
        sinvstd[c] = invstd;
    }
    coef_t k = {K, m, invstd, (flags & F_AFFINE) ? scale[c] * invstd : invstd, (flags & F_AFFINE) ? bias[c] : 0.0f};
    *out = k;
}

/* Group c's coefficients for an elementwise pass: F_COEF, those of a coef buffer (training forward: from the
 * statistics' finalize; backward: dx with F_DX); else (inference) K = 0, m = mean[c],
 * k2 = scale[c] / sqrt(var[c] + eps), k3 = bias[c]. Both paths (rows and columns) use it. */
static inline void map_coef(coef_t *out, ulong c, __global const float *scale, __global const float *bias, __global const float *mean,
                       __global const float *var, __global const float *coef, float eps, uint flags) {
    if (flags & F_COEF) {
        coef_load(out, coef, c);
        return;
    }
    float invstd = rsqrt(var[c] + eps);
    coef_t k = {0.0f, mean[c], 0.0f, (flags & F_AFFINE) ? scale[c] * invstd : invstd,
                (flags & F_AFFINE) ? bias[c] : 0.0f};
    *out = k;
}

/* out[i] = k2 * ((x[i] - K) - m) + k3 (+ k1 * g[i] when g) for n contiguous values; float16 vectors with
 * streaming stores once out is 64-byte aligned. e is the aux tensor: forward (g NULL) the residual z and the
 * activation of act1; backward the forward's y that masks g (grad1). */
static inline void apply_run(__global const stype *x, __global const stype *g, __global const stype *e, __global stype *o,
                      ulong n, coef_t k, uint flags) {
    ulong i = 0;
    if (!(flags & (g ? F_RELU : F_Z)))
        e = x; /* NO_NULL_LOADS (grad1): e is read only under F_RELU (backward) or F_Z (forward) */
    ulong mis = ((ulong)o / ESIZE) & 15;
    ulong peel = mis ? min(n, (ulong)(16 - mis)) : 0;
    if (g) {
        for (; i < peel; ++i)
            STORE1(fma(k.k1, grad1(g, e, i, flags), fma(k.k2, (LOAD1(x, i) - k.K) - k.m, k.k3)), o, i);
#if defined(HAVE_PAIRS)
        /* as the forward below: one run of 16 to 64 bytes, then pairs while x, dy (and y) allow 4-byte loads */
        if ((((ulong)(o + i)) & 63) != 0 && i + 16 <= n) {
            store16_stream(fma(k.k1, grad16(g, e, i, flags), fma(k.k2, (LOAD16(x, i) - k.K) - k.m, k.k3)), o + i);
            i += 16;
        }
        if ((((ulong)(x + i) | (ulong)(g + i) | ((flags & F_RELU) ? (ulong)(e + i) : 0)) & 3) == 0 &&
            (((ulong)(o + i)) & 63) == 0)
            for (; i + 32 <= n; i += 32) {
                float16 a, b, ga, gb;
                load32(x + i, &a, &b);
                grad_pair(&ga, &gb, g, e, i, flags);
                store32_stream(fma(k.k1, ga, fma(k.k2, (a - k.K) - k.m, k.k3)),
                               fma(k.k1, gb, fma(k.k2, (b - k.K) - k.m, k.k3)), o + i);
            }
#endif
        for (; i + 16 <= n; i += 16)
            store16_stream(fma(k.k1, grad16(g, e, i, flags), fma(k.k2, (LOAD16(x, i) - k.K) - k.m, k.k3)), o + i);
        for (; i < n; ++i)
            STORE1(fma(k.k1, grad1(g, e, i, flags), fma(k.k2, (LOAD1(x, i) - k.K) - k.m, k.k3)), o, i);
    } else {
        for (; i < peel; ++i)
            STORE1(act1(fma((LOAD1(x, i) - k.K) - k.m, k.k2, k.k3), e, i, flags), o, i);
#if defined(HAVE_PAIRS)
        /* o is 32-byte aligned here: one run of 16 to 64 bytes, then pairs while x (and z) allow 4-byte loads */
        if ((((ulong)(o + i)) & 63) != 0 && i + 16 <= n) {
            store16_stream(act16(fma((LOAD16(x, i) - k.K) - k.m, k.k2, k.k3), e, i, flags), o + i);
            i += 16;
        }
        if ((((ulong)(x + i) | ((flags & F_Z) ? (ulong)(e + i) : 0)) & 3) == 0 && (((ulong)(o + i)) & 63) == 0)
            for (; i + 32 <= n; i += 32) {
                float16 a, b;
                load32(x + i, &a, &b);
                a = fma((a - k.K) - k.m, k.k2, k.k3);
                b = fma((b - k.K) - k.m, k.k2, k.k3);
                act_pair(&a, &b, e, i, flags);
                store32_stream(a, b, o + i);
            }
#endif
        for (; i + 16 <= n; i += 16)
            store16_stream(act16(fma((LOAD16(x, i) - k.K) - k.m, k.k2, k.k3), e, i, flags), o + i);
        for (; i < n; ++i)
            STORE1(act1(fma((LOAD1(x, i) - k.K) - k.m, k.k2, k.k3), e, i, flags), o, i);
    }
}

/* GPU: the same for the values s0, s0 + step, ... below n of one row, four per trip so that each work-item has
 * four loads in flight (x and o may be one buffer: each element is read, then written, by the same item) */
static inline void apply_strided(__global const stype *x, __global const stype *g, __global const stype *e,
                          __global stype *o, ulong n, ulong s0, ulong step, coef_t k, uint flags) {
    ulong s = s0;
    for (; s + 3 * step < n; s += 4 * step) {
        float v[4], r[4];
        for (int j = 0; j < 4; ++j)
            v[j] = LOAD1(x, s + j * step);
        if (g) {
            float gv[4];
            for (int j = 0; j < 4; ++j)
                gv[j] = grad1(g, e, s + j * step, flags);
            for (int j = 0; j < 4; ++j)
                r[j] = fma(k.k1, gv[j], fma(k.k2, (v[j] - k.K) - k.m, k.k3));
        } else {
            for (int j = 0; j < 4; ++j)
                r[j] = act1(fma((v[j] - k.K) - k.m, k.k2, k.k3), e, s + j * step, flags);
        }
        for (int j = 0; j < 4; ++j)
            STORE1(r[j], o, s + j * step);
    }
    for (; s < n; s += step) {
        float r = g ? fma(k.k1, grad1(g, e, s, flags), fma(k.k2, (LOAD1(x, s) - k.K) - k.m, k.k3))
                    : act1(fma((LOAD1(x, s) - k.K) - k.m, k.k2, k.k3), e, s, flags);
        STORE1(r, o, s);
    }
}

/* The elementwise pass over all of map c (B rows of S values): CPU one row at a time, GPU strided. */
static inline void apply_map(__global const stype *xp, __global const stype *gp, __global const stype *ep,
                      __global stype *op, ulong B, ulong C, ulong S, ulong c, coef_t k, uint flags) {
#if defined(STRATEGY_CPU)
    for (ulong b = get_local_id(0); b < B; b += WG) {
        ulong base = (b * C + c) * S;
        apply_run(xp + base, gp ? gp + base : gp, ep ? ep + base : ep, op + base, S, k, flags);
    }
#else
    /* the map's B*S values walked flat (gpu_step), four per trip: four loads of x (and of dy) in flight, then the
     * four stores (x and op may be one buffer: each element is read, then written, by the same item) */
    ulong e = get_local_id(0), N = B * S, CS = C * S;
    ulong s = e % S, rb = ((e / S) * C + c) * S;
    while (e < N) {
        ulong idx[4];
        uint n = gpu_walk(idx, 4, &s, &rb, e, N, S, CS);
        float v[4], gv[4];
        for (uint j = 0; j < 4; ++j) {
            v[j] = j < n ? LOAD1(xp, idx[j]) : 0.0f;
            gv[j] = (gp && j < n) ? grad1(gp, ep, idx[j], flags) : 0.0f;
        }
        for (uint j = 0; j < 4; ++j) {
            float r = fma((v[j] - k.K) - k.m, k.k2, k.k3);
            if (gp)
                r = fma(k.k1, gv[j], r);
            else if (j < n)
                r = act1(r, ep, idx[j], flags);
            if (j < n)
                STORE1(r, op, idx[j]);
        }
        e += 4 * WG;
    }
#endif
}

/* The statistics of group c for the backward pass: recomputed ones (F_STATS: a stats coef buffer) or the
 * saved mean / invstd (K = 0). */
static inline void group_stats(ulong c, __global const float *smean, __global const float *sinvstd,
                        __global const float *scoef, uint flags, float *K, float *m, float *is) {
    if (flags & F_STATS) {
        *K = scoef[CN_COEF_STRIDE * c];
        *m = scoef[CN_COEF_STRIDE * c + 1];
        *is = scoef[CN_COEF_STRIDE * c + 2];
    } else {
        *K = 0.0f;
        *m = smean[c];
        *is = sinvstd[c];
    }
}
