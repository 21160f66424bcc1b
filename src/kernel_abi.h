/* What the host and the kernels must agree on, written once.
 *
 * Every entry of CN_KERNEL_ABI becomes an enum constant on the host and reaches every program as a -D define in its
 * build options (program.c appends cn_kernel_abi_defines), so cl/ holds no copy: a kernel that uses a name this
 * table does not define fails to compile, and changing a value here changes host and kernels together (and the
 * program cache key, which includes the options).
 *   flags   bits of the `flags` argument of the kernels
 *   sizes   the column-tile width of the CPU column kernels, the floats per group of a coefficient buffer
 *           (K, m, k1, k2, k3: see coef_t in cl/common.cl) and of a partial-statistics record (mean, M2)
 * The argument order of each kernel is checked at launch: launch() compares its argument count with the kernel's
 * CL_KERNEL_NUM_ARGS (read once, when the kernel is created). */
#ifndef CLNORM_KERNEL_ABI_H
#define CLNORM_KERNEL_ABI_H

/* X(name, value, what) */
#define CN_KERNEL_ABI(X)                                                                                               \
    X(F_AFFINE, 1u, "scale and bias buffers are given")                                                                \
    X(F_RUNNING, 2u, "update the running mean and variance")                                                           \
    X(F_SAVE, 4u, "write mean and invstd to the save buffers")                                                         \
    X(F_GRADS, 16u, "backward: write dscale and dbias")                                                                \
    X(F_DX, 32u, "backward: write dx")                                                                                 \
    X(F_ACCUM, 64u, "backward: grads = alpha * g + beta * old (else alpha * g)")                                       \
    X(F_STATS, 128u, "compute the batch statistics from x")                                                            \
    X(F_COEF, 256u, "the coefficients (K, m, k1, k2, k3) of each group come from a coefficient buffer")                \
    X(F_PMAP, 512u, "columns: the parameter index of column j is (j % pC) * pS + j / pC (NHWC per-activation)")        \
    X(F_Z, 1024u, "forward: add the residual z (the aux tensor) before the activation")                                \
    X(F_RELU, 2048u, "forward: y = max(v, 0) (NaN stays NaN); backward: dy masked by y > 0 (y: aux)")                  \
    X(F_DZ, 4096u, "backward: write dz = g in the pass that sums g")                                                   \
    X(CN_TILE_COLS, 256u, "columns of one CPU column tile (16 groups of 16)")                                          \
    X(CN_COEF_STRIDE, 5u, "floats per group in a coefficient buffer")

#define CN_ABI_ENUM(name, value, what) name = value,
enum { CN_KERNEL_ABI(CN_ABI_ENUM) CN_ABI_END_ };
#undef CN_ABI_ENUM

/* " -DF_AFFINE=1u -DF_RUNNING=2u ...": a string literal, built by the preprocessor */
#define CN_ABI_DEFINE(name, value, what) " -D" #name "=" #value
#define CN_KERNEL_ABI_DEFINES CN_KERNEL_ABI(CN_ABI_DEFINE)

#endif
