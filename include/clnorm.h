/**
 * @file clnorm.h
 * @brief clnorm — batch normalization (the PuzzleLib BatchNorm family) on any OpenCL 1.2 device.
 *
 * The one public header. Conventions:
 * - Every fallible call returns a ::clnorm_status and leaves the detail in clnorm_last_error(); output
 *   parameters come last; `*_destroy(NULL)` is a no-op; the library never prints and never exits.
 * - Operations enqueue on the context's in-order queue and return without waiting, except the read/write
 *   helpers and clnorm_tensor_create() with host data, which block.
 * - A refused call (any status but ::CLNORM_SUCCESS returned before enqueueing) writes nothing.
 * - Threads: a context, and the layers and tensors made on it, is used by one thread at a time (one context
 *   per thread); the last error is thread-local.
 *
 * Two families: the stateless operations `clnorm_bn_*` on buffers the caller owns (like cuDNN/MIOpen), and the
 * layer `clnorm_batchnorm_*`, which owns its parameters, statistics and gradients and follows PuzzleLib's rules.
 * The arithmetic is cuDNN's; see docs/SEMANTICS.md (shipped with the code) and the README.
 */
#ifndef CLNORM_H
#define CLNORM_H

#ifndef CL_TARGET_OPENCL_VERSION
/** @brief The OpenCL headers' target version (1.2), unless the application defined it before including clnorm.h. */
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>

/**
 * @def CLNORM_API
 * @brief Marks the exported functions: default ELF visibility (the library is built with -fvisibility=hidden,
 * so nothing else is exported); empty on other compilers.
 */
#if defined(_WIN32)
#define CLNORM_API
#elif defined(__GNUC__)
#define CLNORM_API __attribute__((visibility("default")))
#else
#define CLNORM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version and errors ---------------------------------------------------------------- */
/** @brief Major version of this header (the library's is in clnorm_version()). */
#define CLNORM_VERSION_MAJOR 0
/** @brief Minor version of this header; the shared library's SONAME is libclnorm.so.MAJOR.MINOR. */
#define CLNORM_VERSION_MINOR 1
/** @brief Patch version of this header. */
#define CLNORM_VERSION_PATCH 0

/**
 * @brief Version of the built library, to compare with the header's CLNORM_VERSION_* at run time.
 * @return MAJOR*10000 + MINOR*100 + PATCH (0.1.0 gives 100). Never fails, never blocks.
 */
CLNORM_API unsigned clnorm_version(void);

/** @brief Result of every fallible call; the detail of a failure is in clnorm_last_error(). */
typedef enum clnorm_status {
    CLNORM_SUCCESS = 0,            /**< the call did what it says (an enqueueing call: the work is enqueued) */
    CLNORM_ERROR_INVALID_ARGUMENT, /**< NULL where not allowed, bad enum, epsilon not finite or below FLT_MIN, factor outside
                                        [0,1], a cl_mem of another context, overlapping x/y, an output over
                                        another argument, half of a pair... */
    CLNORM_ERROR_SHAPE,            /**< wrong ndim, maps mismatch, shapes differ, zero-sized dim, < 2 values
                                        per statistic in training */
    CLNORM_ERROR_BUFFER_TOO_SMALL, /**< a cl_mem is smaller than offset + bytes the call touches */
    CLNORM_ERROR_UNSUPPORTED,      /**< mixed dtypes or layouts in one call; a kernel the device cannot run even
                                        with work-groups of one item */
    CLNORM_ERROR_INVALID_STATE,    /**< inplace in training, backward before a training forward, empty layer
                                        field used before written */
    CLNORM_ERROR_BUILD,            /**< kernel compilation failed: clnorm_last_error() holds the build log */
    CLNORM_ERROR_NO_DEVICE,        /**< no OpenCL platform/device matches the selector */
    CLNORM_ERROR_HOST_MEMORY,      /**< a host allocation (malloc) failed */
    CLNORM_ERROR_DEVICE_MEMORY,    /**< CL_MEM_OBJECT_ALLOCATION_FAILURE / CL_OUT_OF_RESOURCES */
    CLNORM_ERROR_OPENCL            /**< any other OpenCL failure: clnorm_last_error() names call and code */
} clnorm_status;

/**
 * @brief Short English text for a status (e.g. "shape error"), for messages.
 * @param s any value, valid or not.
 * @return static text, never NULL ("unknown status" for values outside the enum); not to be freed.
 */
CLNORM_API const char *clnorm_status_string(clnorm_status s);
/**
 * @brief This thread's detail of its last failure: which argument, expected against got, the OpenCL call and
 * its CL_* code, or the kernel build log with the build options.
 * @return "" if this thread has had no failure yet; never NULL. Thread-local storage owned by the library,
 * valid until this thread's next clnorm call.
 */
CLNORM_API const char *clnorm_last_error(void);

/* ---- context: one device, one in-order queue, the compiled-kernel cache -------------- */
/** @brief Opaque context: one device, one in-order queue, the compiled kernels, scratch buffers. */
typedef struct clnorm_context clnorm_context;

/**
 * @brief Creates a context on one OpenCL device, with a cl_context and an in-order queue of its own.
 *
 * Kernels are compiled on first use (per storage dtype), from the on-disk cache when it has them
 * (`CLNORM_CACHE_DIR`, `CLNORM_CACHE`); programs compiled here are written to that cache by
 * clnorm_context_destroy. Blocking (device discovery).
 * @param device NULL or "": `$CLNORM_DEVICE` if set, else the first GPU, else the first accelerator, else the
 *        first CPU device of any platform (with none of those, the first device of any type). Otherwise "P:D"
 *        (platform and device index, as `clinfo -l` and `clnorm-info` number them) or a case-insensitive
 *        substring of "<platform name> <device name>" (also
 *        matched against the platform vendor and version, so "pocl" finds POCL).
 * @param out receives the context (NULL on failure); the caller owns it and frees it with
 *        clnorm_context_destroy().
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (out NULL; `CLNORM_STRATEGY`,
 *         `CLNORM_MAX_WORK_GROUP_SIZE` or `CLNORM_STREAM_MIN_BYTES` set to a value it does not accept, see
 *         clnorm_context_strategy());
 *         ::CLNORM_ERROR_NO_DEVICE (no platform,
 *         or nothing matches: clnorm_last_error() lists the devices that exist); ::CLNORM_ERROR_HOST_MEMORY;
 *         ::CLNORM_ERROR_DEVICE_MEMORY or ::CLNORM_ERROR_OPENCL (clCreateContext / clCreateCommandQueue).
 */
CLNORM_API clnorm_status clnorm_context_create(const char *device, clnorm_context **out);
/**
 * @brief Creates a context on the application's queue (and its cl_context and device).
 * @param queue an in-order command queue; retained, and released by clnorm_context_destroy(). Work from
 *        clnorm is enqueued on it, interleaved with the application's own commands in queue order.
 * @param out receives the context (NULL on failure); free it with clnorm_context_destroy().
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (NULL, not a queue, an out-of-order queue, or a bad
 *         `CLNORM_STRATEGY` / `CLNORM_MAX_WORK_GROUP_SIZE` / `CLNORM_STREAM_MIN_BYTES`);
 *         ::CLNORM_ERROR_HOST_MEMORY; ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_context_create_from_queue(cl_command_queue queue, clnorm_context **out);
/**
 * @brief Waits for the queue (blocking), then releases kernels, programs, scratch buffers, queue and context.
 * Programs this context compiled from source are first written to the on-disk cache (when it is on): on POCL
 * that compiles each of their kernels once more (~0.1-0.3 s a kernel), here rather than in the first calls.
 * Layers made on ctx must not be used afterwards (clnorm_batchnorm_destroy() on them is still allowed); tensors
 * made with clnorm_tensor_create() stay valid cl_mem objects (OpenCL reference counting) until released.
 * @param ctx the context, or NULL (no-op).
 */
CLNORM_API void clnorm_context_destroy(clnorm_context *ctx);
/**
 * @brief The context's cl_context, to create buffers for tensors and parameters.
 * @param ctx the context (NULL gives NULL).
 * @return borrowed: not retained, valid while ctx lives.
 */
CLNORM_API cl_context clnorm_context_cl_context(const clnorm_context *ctx);
/**
 * @brief The context's device.
 * @param ctx the context (NULL gives NULL).
 * @return borrowed, valid while ctx lives.
 */
CLNORM_API cl_device_id clnorm_context_device(const clnorm_context *ctx);
/**
 * @brief The in-order queue every operation of ctx is enqueued on (the application's, for
 * clnorm_context_create_from_queue()).
 * @param ctx the context (NULL gives NULL).
 * @return borrowed: not retained, valid while ctx lives.
 */
CLNORM_API cl_command_queue clnorm_context_queue(const clnorm_context *ctx);
/**
 * @brief "<platform name> <device name>" of the context's device.
 * @param ctx the context (NULL gives NULL).
 * @return owned by the context, valid while it lives.
 */
CLNORM_API const char *clnorm_context_device_name(const clnorm_context *ctx);
/**
 * @brief Waits until everything enqueued on the context's queue has finished (clFinish), and maps an error.
 * Blocking.
 * @param ctx the context.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (ctx NULL); ::CLNORM_ERROR_DEVICE_MEMORY or
 *         ::CLNORM_ERROR_OPENCL when the queue reports a failure.
 */
CLNORM_API clnorm_status clnorm_context_finish(clnorm_context *ctx);
/**
 * @brief The folder of the on-disk kernel cache that ctx loads compiled kernels from and writes them to.
 *
 * Chosen when the context is created: `$CLNORM_CACHE_DIR`, else `$XDG_CACHE_HOME/clnorm`, else
 * `$HOME/.cache/clnorm`; missing folders are created with mode 0700. A cached binary runs as code of this process
 * (CPU devices) or with access to every buffer of the context (GPUs), so the folder is used only if it is a real
 * folder (not a symbolic link), owned by the effective user and not writable by group or others; otherwise the disk
 * cache is off for ctx (kernels are compiled from source, as with `CLNORM_CACHE=0`) and
 * clnorm_context_cache_status() says why. Inside the folder, only regular files of the effective user with one
 * link and no group or other write permission are loaded. Never fails, never blocks.
 * @param ctx the context (NULL gives NULL).
 * @return the folder as it was named, or NULL when the disk cache is off; owned by the context, valid while it
 *         lives.
 */
CLNORM_API const char *clnorm_context_cache_dir(const clnorm_context *ctx);
/**
 * @brief Whether ctx uses the on-disk kernel cache, and if not, why (for logs and `clnorm-info`).
 * @param ctx the context (NULL gives NULL).
 * @return "on" when clnorm_context_cache_dir() is not NULL; otherwise "off: " and the reason, e.g.
 *         "off: CLNORM_CACHE=0", "off: folder /x is writable by group and others (mode 0777)",
 *         "off: folder /x is owned by uid 65534, not by the effective user (uid 0)" or
 *         "off: folder /x is a symbolic link (only a real folder is trusted)". Owned by the context, valid while
 *         it lives.
 */
CLNORM_API const char *clnorm_context_cache_status(const clnorm_context *ctx);
/**
 * @brief The kernel strategy of the context: "cpu" (each work-item walks a contiguous chunk; picked for CPU
 * devices) or "gpu" (neighbouring work-items on neighbouring addresses; picked for every other device type).
 *
 * Chosen at context creation from the device type, or forced by the environment variable `CLNORM_STRATEGY`
 * ("cpu" or "gpu", any case; any other non-empty value makes clnorm_context_create() and
 * clnorm_context_create_from_queue() fail with ::CLNORM_ERROR_INVALID_ARGUMENT). Creation also reads
 * `CLNORM_MAX_WORK_GROUP_SIZE` (a positive integer capping the work-group size of every kernel; anything else
 * is refused the same way) and `CLNORM_STREAM_MIN_BYTES` (a non-negative integer of bytes: calls whose tensors
 * take at least that much together use streaming stores; anything else is refused the same way).
 * @param ctx the context (NULL gives NULL).
 * @return static text "cpu" or "gpu", not to be freed.
 */
CLNORM_API const char *clnorm_context_strategy(const clnorm_context *ctx);

/* All operations enqueue on the context's queue and return without waiting, except the read and
   write helpers and clnorm_tensor_create with host data, which block. One context per thread at a time. */

/* ---- tensors: a view of an application cl_mem ----------------------------------------- */
/** @brief Most dimensions of a tensor: (batch, maps, d, h, w). */
#define CLNORM_MAX_DIMS 5
/** @brief Storage type of x, y, dy and dx; the arithmetic is always float, parameters are always float32. */
typedef enum clnorm_dtype {
    CLNORM_F32 = 0, /**< 32-bit IEEE float */
    CLNORM_F16 = 1, /**< 16-bit IEEE half, via the core vload_half / vstore_half_rte (no cl_khr_fp16 needed) */
    CLNORM_BF16 = 2 /**< bfloat16 storage, rounded to nearest even on store */
} clnorm_dtype; /* storage; math is float */
/** @brief Memory order of a dense tensor. */
typedef enum clnorm_layout {
    CLNORM_NCHW = 0, /**< (batch, maps, spatial...) — channels second */
    CLNORM_NHWC = 1  /**< (batch, spatial..., maps) — channels last */
} clnorm_layout;
/** @brief A view of (part of) an application cl_mem as a dense tensor; a plain value, owns nothing by itself.
 *
 * Copying a clnorm_tensor copies the view, not the buffer: after clnorm_tensor_release() (or clReleaseMemObject)
 * on one copy, every other copy holds a dangling cl_mem and must not be used. */
typedef struct clnorm_tensor {
    cl_mem buffer;                  /**< the buffer viewed (not retained by the view) */
    size_t offset;                  /**< bytes from the start of buffer */
    int ndim;                       /**< 2..5 */
    size_t shape[CLNORM_MAX_DIMS];  /**< ALWAYS given as (batch, maps, d, h, w) order, whatever the layout */
    clnorm_dtype dtype;             /**< storage type of the elements */
    clnorm_layout layout;           /**< memory order; dense, no padding */
} clnorm_tensor;

/**
 * @brief A view of buffer: F32, NCHW, offset 0; the shape is copied (ndim clamped to 0..5 for the copy,
 * unused dimensions set to 1). Never fails and touches no OpenCL object; validation happens in the call that
 * uses the view. Set offset, dtype and layout on the result for other views.
 * @param buffer the cl_mem (borrowed, not retained).
 * @param ndim number of dimensions, 2..5 for a valid view.
 * @param shape ndim sizes in (batch, maps, d, h, w) order; may be NULL (all 1).
 * @return the view.
 */
CLNORM_API clnorm_tensor clnorm_tensor_make(cl_mem buffer, int ndim, const size_t *shape);
/**
 * @brief Allocates a dense buffer on ctx for the shape (NCHW) and, when host is not NULL, fills it (blocking).
 * @param ctx the context.
 * @param ndim 2..5.
 * @param shape ndim sizes, (batch, maps, d, h, w) order, none 0.
 * @param dtype storage type.
 * @param host numel * element size bytes to copy in, or NULL to leave the buffer uninitialised (non-blocking).
 * @param out receives the view; the caller owns its buffer and frees it with clnorm_tensor_release().
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (NULL ctx, shape or out; bad dtype);
 *         ::CLNORM_ERROR_SHAPE (ndim, a 0 dimension, overflow); ::CLNORM_ERROR_DEVICE_MEMORY (larger than
 *         CL_DEVICE_MAX_MEM_ALLOC_SIZE, or the allocation failed); ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_tensor_create(clnorm_context *ctx, int ndim, const size_t *shape, clnorm_dtype dtype,
                                              const void *host /* NULL: uninitialised */, clnorm_tensor *out);
/**
 * @brief Blocking read of the whole view into host memory (after everything enqueued before it).
 * @param ctx the context the buffer belongs to.
 * @param t the view (validated like an operation's argument).
 * @param host numel * element size bytes, in the view's dtype and layout.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT; ::CLNORM_ERROR_SHAPE;
 *         ::CLNORM_ERROR_BUFFER_TOO_SMALL; ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_tensor_read(clnorm_context *ctx, const clnorm_tensor *t, void *host);
/**
 * @brief Blocking write of the whole view from host memory.
 * @param ctx the context the buffer belongs to.
 * @param t the view (validated like an operation's argument).
 * @param host numel * element size bytes, in the view's dtype and layout; may be reused when the call returns.
 * @return as clnorm_tensor_read().
 */
CLNORM_API clnorm_status clnorm_tensor_write(clnorm_context *ctx, const clnorm_tensor *t, const void *host);
/**
 * @brief Releases t->buffer (clReleaseMemObject) and sets it to NULL; for tensors from clnorm_tensor_create().
 * Not blocking: OpenCL frees the memory once the commands using it are done.
 * @param t the view; NULL, or a NULL buffer: no-op.
 */
CLNORM_API void clnorm_tensor_release(clnorm_tensor *t);

/* ---- functional batch normalization (stateless, cuDNN/MIOpen-like) ------------------- */
/** @brief What one statistic is computed over. */
typedef enum clnorm_bn_mode {
    CLNORM_BN_SPATIAL = 0,       /**< one statistic per map, over (batch, d, h, w): BatchNorm1D/2D/3D */
    CLNORM_BN_PER_ACTIVATION = 1 /**< one statistic per (map, d, h, w), over batch: BatchNorm on (batch, size) */
} clnorm_bn_mode;
/* Parameter vectors (scale, bias, means, variances, saved stats, grads) are float32 cl_mem holding
   maps values (SPATIAL) or maps*d*h*w values (PER_ACTIVATION), in the (maps, d, h, w) order, at offset 0. */

/**
 * @brief Training forward: batch statistics, y = (x - mean) * invstd * scale + bias, optionally the running
 * statistics updated and the batch mean / invstd saved for the backward. Enqueues and returns (non-blocking).
 *
 * Parameter vectors (here and in the other `clnorm_bn_*` calls) are float32 cl_mem of ctx holding maps values
 * (SPATIAL) or maps*d*h*w values (PER_ACTIVATION), in (maps, d, h, w) order, at offset 0. Memory a call writes
 * (y, dx, running and saved statistics, dscale, dbias) must not overlap any other argument of the call (through
 * the same cl_mem or sub-buffers of one parent), apart from the in-place views each call allows:
 * ::CLNORM_ERROR_INVALID_ARGUMENT names both. Inputs may share memory.
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x input view; at least 2 values per statistic.
 * @param y output view, same shape, dtype and layout as x; may be x itself (same buffer, offset, dtype and layout:
 *        normalised in place, the statistics are those of the input) but must not overlap it otherwise.
 * @param scale,bias parameter vectors, or both NULL for scale 1 and bias 0.
 * @param factor in [0, 1]: running = (1 - factor) * running + factor * batch (the variance unbiased).
 * @param epsilon added to the variance: finite and at least FLT_MIN once rounded to float (refused: NaN, Inf, 0,
 *        negative, subnormal).
 * @param running_mean,running_var updated in place, or both NULL: not updated.
 * @param save_mean,save_invstd receive the batch mean and 1/sqrt(var + epsilon), or both NULL: not saved.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT; ::CLNORM_ERROR_SHAPE; ::CLNORM_ERROR_BUFFER_TOO_SMALL;
 *         ::CLNORM_ERROR_UNSUPPORTED (x and y of different dtypes or layouts); ::CLNORM_ERROR_BUILD (first use
 *         of a dtype); ::CLNORM_ERROR_DEVICE_MEMORY; ::CLNORM_ERROR_HOST_MEMORY; ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_bn_forward_training(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                    const clnorm_tensor *y,
                                                    cl_mem scale, cl_mem bias, /* both NULL: scale 1, bias 0 */
                                                    double factor, double epsilon,
                                                    cl_mem running_mean, cl_mem running_var, /* both NULL: not updated */
                                                    cl_mem save_mean, cl_mem save_invstd);   /* both NULL: not saved */
/**
 * @brief Inference forward with given statistics: y = (x - mean) / sqrt(var + epsilon) * scale + bias.
 * Enqueues and returns (non-blocking). One value per statistic is enough.
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x input view.
 * @param y output view, same shape, dtype and layout; may be x itself (same buffer and offset) but must not
 *        overlap it otherwise.
 * @param scale,bias parameter vectors, or both NULL for scale 1 and bias 0.
 * @param mean,var the statistics to normalise with (e.g. the running ones); required.
 * @param epsilon as in clnorm_bn_forward_training(): finite, >= FLT_MIN.
 * @return as clnorm_bn_forward_training().
 */
CLNORM_API clnorm_status clnorm_bn_forward_inference(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                     const clnorm_tensor *y, /* y may be x (same buffer and offset) */
                                                     cl_mem scale, cl_mem bias, cl_mem mean, cl_mem var,
                                                     double epsilon);
/**
 * @brief Backward of the training forward (cuDNN's): dbias = sum(dy), dscale = sum(dy * xhat),
 * dx = scale * invstd / M * (M * dy - dbias - xhat * dscale). Enqueues and returns (non-blocking).
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x the forward's input.
 * @param dy gradient of the output, same shape, dtype and layout as x.
 * @param dx receives the input gradient (same shape, dtype and layout; may be x itself or dy itself, the same
 *        view, but must not overlap either otherwise), or NULL: not computed.
 * @param scale parameter vector, or NULL for 1.
 * @param dscale,dbias receive the parameter gradients (overwritten), or both NULL: not computed.
 * @param epsilon as in clnorm_bn_forward_training() (finite, >= FLT_MIN, checked even when unused); used when
 *        the statistics are recomputed.
 * @param save_mean,save_invstd the statistics the forward saved, or both NULL: recomputed from x.
 * @return as clnorm_bn_forward_training().
 */
CLNORM_API clnorm_status clnorm_bn_backward(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                            const clnorm_tensor *dy,
                                            const clnorm_tensor *dx,    /* NULL: input gradient not computed */
                                            cl_mem scale,               /* NULL: 1 */
                                            cl_mem dscale, cl_mem dbias, /* both NULL: not computed; else overwritten */
                                            double epsilon,
                                            cl_mem save_mean, cl_mem save_invstd); /* both NULL: recomputed from x */

/* ---- fused activation: y = act(BN(x) + z) --------------------------------------------- */
/** @brief The activation fused into the `_ex` calls. */
typedef enum clnorm_activation {
    CLNORM_ACTIVATION_NONE = 0, /**< identity */
    CLNORM_ACTIVATION_RELU = 1  /**< max(v, 0); NaN stays NaN */
} clnorm_activation;

/**
 * @brief Training forward fused with a residual add and an activation: y = act(xhat * scale + bias + z), in the
 * pass the plain call already makes (cuDNN's BN_ADD_ACTIVATION). Enqueues and returns (non-blocking).
 *
 * The statistics are those of x only; running and saved statistics exactly as clnorm_bn_forward_training(),
 * which is this call with z NULL and ::CLNORM_ACTIVATION_NONE (bit for bit: it is one code path).
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x input view; at least 2 values per statistic.
 * @param z the residual, or NULL: none. Same shape (else ::CLNORM_ERROR_SHAPE), dtype and layout (else
 *        ::CLNORM_ERROR_UNSUPPORTED) as x.
 * @param y output view, same shape, dtype and layout as x; may be z itself (same view: written in place) or x
 *        itself, but must not overlap either otherwise.
 * @param scale,bias parameter vectors, or both NULL for scale 1 and bias 0.
 * @param factor in [0, 1], as in clnorm_bn_forward_training().
 * @param epsilon added to the variance: as in clnorm_bn_forward_training() (finite, >= FLT_MIN).
 * @param running_mean,running_var updated in place, or both NULL: not updated.
 * @param save_mean,save_invstd receive the batch mean and 1/sqrt(var + epsilon), or both NULL: not saved.
 * @param activation ::CLNORM_ACTIVATION_NONE or ::CLNORM_ACTIVATION_RELU (else ::CLNORM_ERROR_INVALID_ARGUMENT).
 * @return as clnorm_bn_forward_training(); a refused call writes nothing.
 */
CLNORM_API clnorm_status clnorm_bn_forward_training_ex(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                       const clnorm_tensor *z, /* NULL: no residual */
                                                       const clnorm_tensor *y, cl_mem scale, cl_mem bias, double factor,
                                                       double epsilon, cl_mem running_mean, cl_mem running_var,
                                                       cl_mem save_mean, cl_mem save_invstd,
                                                       clnorm_activation activation);
/**
 * @brief Inference forward fused with a residual add and an activation:
 * y = act((x - mean) / sqrt(var + epsilon) * scale + bias + z). Enqueues and returns (non-blocking).
 * clnorm_bn_forward_inference() is this call with z NULL and ::CLNORM_ACTIVATION_NONE.
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x input view.
 * @param z the residual (x's shape, dtype and layout), or NULL: none.
 * @param y output view; may be x or z itself (same view), must not overlap them otherwise.
 * @param scale,bias parameter vectors, or both NULL for scale 1 and bias 0.
 * @param mean,var the statistics to normalise with; required.
 * @param epsilon as in clnorm_bn_forward_training() (finite, >= FLT_MIN).
 * @param activation ::CLNORM_ACTIVATION_NONE or ::CLNORM_ACTIVATION_RELU.
 * @return as clnorm_bn_forward_training_ex().
 */
CLNORM_API clnorm_status clnorm_bn_forward_inference_ex(clnorm_context *ctx, clnorm_bn_mode mode,
                                                        const clnorm_tensor *x, const clnorm_tensor *z,
                                                        const clnorm_tensor *y, cl_mem scale, cl_mem bias, cl_mem mean,
                                                        cl_mem var, double epsilon,
                                                        clnorm_activation activation); /* y may be x or z */
/**
 * @brief Backward of clnorm_bn_forward_training_ex(): g = dy * (y > 0) for ::CLNORM_ACTIVATION_RELU (dy for NONE),
 * then the plain backward with g: dbias = sum g, dscale = sum g * xhat,
 * dx = scale * invstd / M * (M g - dbias - xhat dscale); and dz = g. Enqueues and returns (non-blocking).
 *
 * The mask comes from the forward's stored output y (no workspace, no saved mask): an element whose stored y is
 * not > 0 passes no gradient, so a pre-activation of exactly 0, or one that F16/BF16 storage rounded to 0, gives
 * gradient 0, and so does a NaN y (whatever dy holds there). The mask is applied as dy is read: no extra pass.
 * clnorm_bn_backward() is this call with y, dz and bias NULL and ::CLNORM_ACTIVATION_NONE.
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x the forward's input.
 * @param y the forward's output (x's shape, dtype and layout); required for RELU (else
 *        ::CLNORM_ERROR_INVALID_ARGUMENT), validated and not read for NONE.
 * @param dy gradient of y.
 * @param dx receives the input gradient, or NULL: not computed. May be dy or x itself (same view); must not
 *        overlap y or dz.
 * @param dz receives the residual's gradient g, or NULL: not computed (the forward had no z). May be dy itself
 *        (same view: dy is replaced by the masked gradient); must not overlap x, y or dx.
 * @param scale parameter vector, or NULL for 1.
 * @param bias the forward's bias, or NULL for 0: validated (a parameter vector) but not needed, since the mask
 *        comes from y and xhat from x and the statistics.
 * @param dscale,dbias receive the parameter gradients (overwritten), or both NULL: not computed.
 * @param epsilon as in clnorm_bn_forward_training() (finite, >= FLT_MIN); used when the statistics are recomputed.
 * @param save_mean,save_invstd the statistics the forward saved, or both NULL: recomputed from x.
 * @param activation ::CLNORM_ACTIVATION_NONE or ::CLNORM_ACTIVATION_RELU: the forward's.
 * @return as clnorm_bn_forward_training_ex().
 */
CLNORM_API clnorm_status clnorm_bn_backward_ex(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                               const clnorm_tensor *y, /* the forward's output: the mask y > 0 */
                                               const clnorm_tensor *dy,
                                               const clnorm_tensor *dx,   /* NULL: not computed */
                                               const clnorm_tensor *dz,   /* NULL: not computed; else masked dy */
                                               cl_mem scale, cl_mem bias, /* bias as in the forward (NULL: 0) */
                                               cl_mem dscale, cl_mem dbias, double epsilon, cl_mem save_mean,
                                               cl_mem save_invstd, /* both NULL: recomputed from x */
                                               clnorm_activation activation);

/* ---- the layer: PuzzleLib BatchNorm / BatchNorm1D / 2D / 3D semantics ------------------ */
/** @brief Opaque layer: PuzzleLib's BatchNorm / BatchNorm1D / 2D / 3D with its parameters, running and saved
 * statistics and accumulated gradients in cl_mem buffers of its context. */
typedef struct clnorm_batchnorm clnorm_batchnorm;
/** @brief Layer configuration; fill it with clnorm_batchnorm_config_init(), then change fields. */
typedef struct clnorm_batchnorm_config {
    int nd;              /**< 0: BatchNorm on (batch, size), PER_ACTIVATION; 1, 2, 3: BatchNorm1D/2D/3D, SPATIAL */
    size_t maps;         /**< number of maps ('size' when nd == 0) */
    float epsilon;       /**< 1e-5; finite and >= FLT_MIN (checked by clnorm_batchnorm_create()) */
    float init_factor;   /**< 1.0 */
    float min_factor;    /**< 0.1 */
    float sscale;        /**< 0.01: scale ~ Normal(1, sscale) when affine */
    int affine;          /**< 1; 0: scale and bias are kept (1 and 0, writable, used) but never trained */
    const char *name;    /**< NULL; copied */
    int empty;           /**< 0; 1: no parameter is initialised until written */
    int inplace;         /**< 0; 1: inference may write y over x (training refuses) */
    uint64_t seed;       /**< 0: a fixed default; same seed => same initial scale */
    clnorm_dtype dtype;  /**< storage type of x/y/dy/dx: CLNORM_F32 */
    clnorm_layout layout; /**< CLNORM_NCHW */
    clnorm_activation activation; /**< CLNORM_ACTIVATION_NONE: y = act(BN(x) + z) in every forward of the layer */
} clnorm_batchnorm_config;

/**
 * @brief Fills cfg with the defaults listed in ::clnorm_batchnorm_config for nd and maps.
 * @param cfg the configuration to fill; NULL: no-op.
 * @param nd 0 (BatchNorm), 1, 2 or 3 (BatchNorm1D/2D/3D); checked by clnorm_batchnorm_create().
 * @param maps number of maps (size for nd 0).
 */
CLNORM_API void clnorm_batchnorm_config_init(clnorm_batchnorm_config *cfg, int nd, size_t maps);
/**
 * @brief Creates a layer: allocates its buffers on ctx and initialises them (scale ~ Normal(1, sscale) from
 * seed when affine, else 1; bias 0, running mean 0, running variance 1, gradients 0; with empty only the gradients). Blocking.
 * @param ctx the context; must outlive the layer.
 * @param cfg the configuration (copied, name included).
 * @param out receives the layer (NULL on failure); the caller owns it and frees it with
 *        clnorm_batchnorm_destroy().
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (NULL, nd, maps 0, epsilon, factors, dtype or layout
 *         out of range); ::CLNORM_ERROR_HOST_MEMORY; ::CLNORM_ERROR_DEVICE_MEMORY; ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_batchnorm_create(clnorm_context *ctx, const clnorm_batchnorm_config *cfg,
                                                 clnorm_batchnorm **out);
/**
 * @brief Releases the layer's buffers (OpenCL frees them once the commands using them are done) and the layer.
 * Not blocking.
 * @param bn the layer, or NULL (no-op).
 */
CLNORM_API void clnorm_batchnorm_destroy(clnorm_batchnorm *bn);

/**
 * @brief Forward through the layer. Enqueues and returns (non-blocking).
 *
 * train != 0: n += 1; factor = max(init_factor / n, min_factor); batch statistics; running stats updated;
 * mean and invstd saved for backward. train == 0: running statistics; y may be x only if inplace.
 * @param bn the layer.
 * @param train nonzero for training, 0 for inference.
 * @param x input of ndim nd + 2 with maps in shape[1], in the layer's dtype and layout.
 * @param y output, same shape, dtype and layout.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_SHAPE (ndim or maps, with PuzzleLib's messages, fewer than 2 values
 *         per statistic in training); ::CLNORM_ERROR_INVALID_ARGUMENT (NULL, dtype or layout not the layer's,
 *         y over x without inplace); ::CLNORM_ERROR_INVALID_STATE (y over x in training; an empty layer's
 *         parameters not written); and the statuses of clnorm_bn_forward_training().
 */
CLNORM_API clnorm_status clnorm_batchnorm_forward(clnorm_batchnorm *bn, int train, const clnorm_tensor *x,
                                                  const clnorm_tensor *y);
/**
 * @brief Backward of the last training forward, with its saved statistics. Enqueues and returns (non-blocking).
 * When affine: grad_acc = scale * grad + momentum * grad_acc for SCALE_GRAD and BIAS_GRAD (PuzzleLib
 * accGradParams); momentum 0 makes them this call's gradients.
 * @param bn the layer.
 * @param x the input of that training forward.
 * @param dy gradient of its output, same shape, dtype and layout.
 * @param dx receives the input gradient, or NULL: not computed.
 * @param scale weight of this gradient in the accumulation; finite.
 * @param momentum weight of the accumulated gradient; finite.
 * A non-affine layer computes dx with its scale (1 unless written) and has no parameter gradients.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_STATE (no training forward since create or reset);
 *         ::CLNORM_ERROR_SHAPE (also: x's shape is not that of the last training forward, whose statistics the
 *         backward uses — clnorm_batchnorm_forward(), _forward_ex() or _forward_from_stats(); the message names
 *         both; no check when the saved statistics were last written by clnorm_batchnorm_write());
 *         ::CLNORM_ERROR_INVALID_ARGUMENT; and the statuses of clnorm_bn_backward().
 */
CLNORM_API clnorm_status clnorm_batchnorm_backward(clnorm_batchnorm *bn, const clnorm_tensor *x,
                                                   const clnorm_tensor *dy,
                                                   const clnorm_tensor *dx, /* NULL: input gradient not computed */
                                                   float scale, float momentum);
/**
 * @brief Forward through the layer with a residual z and the layer's activation (cfg.activation):
 * y = act(BN(x) + z), as clnorm_batchnorm_forward() otherwise (which is this call with z NULL).
 * @param bn the layer.
 * @param train nonzero for training, 0 for inference.
 * @param x input, as in clnorm_batchnorm_forward().
 * @param z the residual (x's shape, dtype and layout), or NULL: none.
 * @param y output, same shape, dtype and layout; may be z itself; over x only in inference with cfg.inplace.
 * @return as clnorm_batchnorm_forward() and clnorm_bn_forward_training_ex().
 */
CLNORM_API clnorm_status clnorm_batchnorm_forward_ex(clnorm_batchnorm *bn, int train, const clnorm_tensor *x,
                                                     const clnorm_tensor *z, const clnorm_tensor *y);
/**
 * @brief Backward of the last training forward with the layer's activation: g = dy * (y > 0) for RELU, then as
 * clnorm_batchnorm_backward() with g (which is this call with y and dz NULL, and refuses a RELU layer since the
 * mask needs y), and dz = g.
 * @param bn the layer.
 * @param x the input of that training forward.
 * @param y its output; required when cfg.activation is RELU.
 * @param dy gradient of its output.
 * @param dx receives the input gradient, or NULL.
 * @param dz receives the residual's gradient, or NULL.
 * @param scale weight of this gradient in the accumulation; finite.
 * @param momentum weight of the accumulated gradient; finite.
 * @return as clnorm_batchnorm_backward() and clnorm_bn_backward_ex().
 */
CLNORM_API clnorm_status clnorm_batchnorm_backward_ex(clnorm_batchnorm *bn, const clnorm_tensor *x,
                                                      const clnorm_tensor *y, const clnorm_tensor *dy,
                                                      const clnorm_tensor *dx, const clnorm_tensor *dz, float scale,
                                                      float momentum);

/** @brief A layer's float32 vectors, each clnorm_batchnorm_param_count() values. */
typedef enum clnorm_field {
    CLNORM_SCALE,        /**< scale (gamma); a non-affine layer has it too (1), uses it, never trains it */
    CLNORM_BIAS,         /**< bias (beta); a non-affine layer has it too (0), uses it, never trains it */
    CLNORM_RUNNING_MEAN, /**< running mean */
    CLNORM_RUNNING_VAR,  /**< running (unbiased) variance */
    CLNORM_SAVE_MEAN,    /**< batch mean of the last training forward */
    CLNORM_SAVE_INVSTD, /**< of the last training forward */
    CLNORM_SCALE_GRAD,   /**< accumulated gradient of the scale; affine layers only */
    CLNORM_BIAS_GRAD    /**< accumulated parameter gradients */
} clnorm_field;
/**
 * @brief Blocking read of one field into host memory (after everything enqueued before it).
 * @param bn the layer.
 * @param f the field.
 * @param host count floats.
 * @param count must equal clnorm_batchnorm_param_count().
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (NULL, bad field, a gradient of a non-affine layer);
 *         ::CLNORM_ERROR_SHAPE (count); ::CLNORM_ERROR_INVALID_STATE (nothing written yet: saved statistics
 *         before a training forward, an empty layer's parameters); ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_batchnorm_read(clnorm_batchnorm *bn, clnorm_field f, float *host, size_t count);
/**
 * @brief Blocking write of one field from host memory (e.g. parameters updated by an optimiser, or loaded).
 * @param bn the layer.
 * @param f the field.
 * @param host count floats; may be reused when the call returns.
 * @param count must equal clnorm_batchnorm_param_count().
 * Saved statistics written here (::CLNORM_SAVE_MEAN, ::CLNORM_SAVE_INVSTD) belong to no training forward: the
 * backward takes them with an x of any shape (of the layer's ndim and maps) until the next training forward.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (also: a ::CLNORM_RUNNING_VAR value negative or NaN,
 *         the message naming the first; nothing is written); ::CLNORM_ERROR_SHAPE; ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_batchnorm_write(clnorm_batchnorm *bn, clnorm_field f, const float *host,
                                                size_t count);
/**
 * @brief The cl_mem holding a field, e.g. to pass to the `clnorm_bn_*` calls or to an optimiser kernel.
 * @param bn the layer (NULL gives NULL).
 * @param f the field.
 * @return borrowed (not retained; valid while the layer lives); NULL if absent (non-affine layers have no
 *         SCALE_GRAD or BIAS_GRAD; their SCALE and BIAS exist).
 */
CLNORM_API cl_mem clnorm_batchnorm_buffer(const clnorm_batchnorm *bn, clnorm_field f);
/**
 * @brief Number of values in each field.
 * @param bn the layer (NULL gives 0).
 * @return cfg.maps.
 */
CLNORM_API size_t clnorm_batchnorm_param_count(const clnorm_batchnorm *bn);
/**
 * @brief Training forwards since create or the last reset (the n of the factor schedule).
 * @param bn the layer (NULL gives 0).
 * @return n.
 */
CLNORM_API uint64_t clnorm_batchnorm_batches(const clnorm_batchnorm *bn);
/**
 * @brief Sets n, the count of training forwards of the factor schedule, so that a restored layer continues its
 * schedule (the next training forward uses factor max(init_factor / (n + 1), min_factor)). Parameters, running and
 * saved statistics are kept. Not blocking.
 * @param bn the layer.
 * @param n the new count (0 is a fresh schedule, as after clnorm_batchnorm_reset).
 * @return CLNORM_SUCCESS, or CLNORM_ERROR_INVALID_ARGUMENT when bn is NULL.
 */
CLNORM_API clnorm_status clnorm_batchnorm_set_batches(clnorm_batchnorm *bn, uint64_t n);
/**
 * @brief Sets n to 0 (the next training forward uses factor init_factor) and drops the saved statistics
 * (a backward needs a new training forward). Parameters and running statistics are kept. Not blocking.
 * @param bn the layer, or NULL (no-op).
 */
CLNORM_API void clnorm_batchnorm_reset(clnorm_batchnorm *bn);
/**
 * @brief The layer's name.
 * @param bn the layer (NULL gives NULL).
 * @return the copy of cfg.name owned by the layer, or NULL if none.
 */
CLNORM_API const char *clnorm_batchnorm_name(const clnorm_batchnorm *bn);
/**
 * @brief The layer's configuration as created (a copy; its name points at the layer's own copy of the name, valid
 * while the layer lives).
 * @param bn the layer.
 * @param out receives the configuration.
 * @return CLNORM_SUCCESS, or CLNORM_ERROR_INVALID_ARGUMENT when bn or out is NULL.
 */
CLNORM_API clnorm_status clnorm_batchnorm_config_get(const clnorm_batchnorm *bn, clnorm_batchnorm_config *out);


/* ---- split-phase statistics: the building blocks of synchronised BatchNorm ------------ */
/**
 * @defgroup split Split-phase statistics (synchronised BatchNorm)
 * @brief One training step split where a collective can sit between the phases, for any transport: several
 * devices in one process, MPI (libclnorm_mpi, clnorm_mpi.h), or a framework's own collective.
 *
 * Forward: every part computes its block with clnorm_bn_stats(); the blocks are exchanged and merged
 * (clnorm_bn_stats_merge() on a device, clnorm_bn_stats_merge_host() on the host), and every part normalises its
 * own x with the merged block (clnorm_bn_forward_training_from_stats()). Backward: every part reduces its
 * (sum dy, sum dy * xhat) with clnorm_bn_backward_reduce(); the sums are added over the parts, and every part
 * finishes with clnorm_bn_backward_from_sums(). The result equals the plain calls on the parts' batches
 * concatenated, to the precision of SEMANTICS.md.
 *
 * **Statistics block**: per statistic group (the parameter order: maps, or maps*d*h*w for PER_ACTIVATION),
 * 3 floats (count, mean, m2 = sum of squared deviations from the mean), group-major: group j at floats
 * 3j, 3j+1, 3j+2 of a float32 cl_mem (offset 0), groups * 3 floats in all. Counts are whole numbers (exact in
 * float up to 2^24 values per statistic per block). The mean is a float: for data whose mean is large next to
 * its spread, the normalised values carry the mean's rounding (half an ulp of the mean times invstd).
 *
 * **Sums block**: per group 2 floats (sum dy, sum dy * xhat), group-major: group j at floats 2j, 2j+1;
 * groups * 2 floats. Sums of several parts add elementwise.
 *
 * A batch of 0 is allowed in these calls (an empty shard); then x's buffer (and y's, dy's, dx's) may be NULL.
 * **Validation only**: a NULL stats (clnorm_bn_stats(), clnorm_bn_forward_training_from_stats()) or sums
 * (clnorm_bn_backward_reduce(), clnorm_bn_backward_from_sums()) checks every other argument exactly as the call
 * would and enqueues nothing: what a collective does on every part before anything is exchanged or written.
 * @{
 */

/**
 * @brief This part's statistics block of x: (count, mean, m2) per group. Enqueues and returns (non-blocking).
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x the input; batch 0 allowed (the block is then all zeros: count 0).
 * @param stats receives the block (groups * 3 floats at offset 0; must not overlap x), or NULL: validation only.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT; ::CLNORM_ERROR_SHAPE; ::CLNORM_ERROR_BUFFER_TOO_SMALL;
 *         ::CLNORM_ERROR_BUILD; ::CLNORM_ERROR_DEVICE_MEMORY; ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_bn_stats(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                         cl_mem stats);
/**
 * @brief Merges parts blocks stored back to back into one: Chan's parallel merge in part order (so the result is
 * the same on every device that runs it on the same blocks), parts with count 0 skipped, shifted by the first
 * non-empty part's mean (mean 1e4, std 1 over 8 parts keeps its variance to float precision). Non-blocking.
 * @param ctx the context.
 * @param parts number of blocks, at least 1.
 * @param groups statistic groups per block, at least 1.
 * @param blocks parts * groups * 3 floats: block q at floats q * groups * 3.
 * @param merged receives the merged block (groups * 3 floats); must not overlap blocks.
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT; ::CLNORM_ERROR_SHAPE (sizes overflow);
 *         ::CLNORM_ERROR_BUFFER_TOO_SMALL; ::CLNORM_ERROR_BUILD; ::CLNORM_ERROR_OPENCL.
 */
CLNORM_API clnorm_status clnorm_bn_stats_merge(clnorm_context *ctx, size_t parts, size_t groups, cl_mem blocks,
                                               cl_mem merged);
/**
 * @brief The same merge on the host, in double precision, rounded to float once at the end: deterministic on
 * every IEEE-754 host whatever the devices (clnorm_mpi merges with it, in rank order, on every rank).
 * @param parts number of blocks, at least 1.
 * @param groups statistic groups per block, at least 1.
 * @param blocks parts * groups * 3 floats (block q at q * groups * 3); counts must be whole numbers >= 0.
 * @param merged receives groups * 3 floats (may not alias blocks).
 * @return ::CLNORM_SUCCESS; ::CLNORM_ERROR_INVALID_ARGUMENT (NULL, 0 parts or groups, a bad count);
 *         ::CLNORM_ERROR_SHAPE (sizes overflow). Nothing is written on refusal.
 */
CLNORM_API clnorm_status clnorm_bn_stats_merge_host(size_t parts, size_t groups, const float *blocks,
                                                    float *merged);
/**
 * @brief Training forward of this part with given (merged, global) statistics: as clnorm_bn_forward_training()
 * with the block's mean and variance m2 / count; the running variance is made unbiased with the block's count
 * (count / (count - 1)). Reads the block's counts back first (blocking until the block is ready), then enqueues.
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x this part's input; batch 0 allowed: then only the running and saved statistics are written.
 * @param y output view, same shape, dtype and layout as x: x itself (in place) or not overlapping it.
 * @param stats the merged block (groups * 3 floats): every count at least 2 (else ::CLNORM_ERROR_SHAPE) and at
 *        least x's values per statistic; or NULL: validation only (the counts are not checked).
 * @param scale,bias parameter vectors, or both NULL for scale 1 and bias 0.
 * @param factor in [0, 1]: running = (1 - factor) * running + factor * global.
 * @param epsilon as in clnorm_bn_forward_training() (finite, >= FLT_MIN).
 * @param running_mean,running_var updated in place, or both NULL.
 * @param save_mean,save_invstd receive the global mean and 1/sqrt(var + epsilon), or both NULL.
 * @return as clnorm_bn_forward_training().
 */
CLNORM_API clnorm_status clnorm_bn_forward_training_from_stats(clnorm_context *ctx, clnorm_bn_mode mode,
                                                               const clnorm_tensor *x, const clnorm_tensor *y,
                                                               cl_mem stats /* merged, global */, cl_mem scale,
                                                               cl_mem bias, double factor, double epsilon,
                                                               cl_mem running_mean, cl_mem running_var,
                                                               cl_mem save_mean, cl_mem save_invstd);
/**
 * @brief This part's backward sums block: (sum dy, sum dy * xhat) per group with xhat = (x - save_mean) *
 * save_invstd, the global statistics of the forward. Enqueues and returns (non-blocking).
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x the forward's input; batch 0 allowed (the block is then zeros).
 * @param dy gradient of the output, same shape, dtype and layout as x.
 * @param save_mean,save_invstd the global statistics (from clnorm_bn_forward_training_from_stats()); required.
 * @param sums receives groups * 2 floats (group-major: sum dy, sum dy * xhat), or NULL: validation only.
 * @return as clnorm_bn_forward_training().
 */
CLNORM_API clnorm_status clnorm_bn_backward_reduce(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                   const clnorm_tensor *dy, cl_mem save_mean, cl_mem save_invstd,
                                                   cl_mem sums);
/**
 * @brief Finishes this part's backward from the sums added over all parts: dbias = sum dy, dscale =
 * sum dy * xhat (the global sums, copied), dx = scale * invstd / count * (count * dy - dbias - xhat * dscale).
 * Enqueues and returns (non-blocking).
 * @param ctx the context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x the forward's input; batch 0 allowed (then only dscale and dbias are written).
 * @param dy gradient of the output, same shape, dtype and layout as x.
 * @param dx receives the input gradient: x itself or dy itself (in place), or a view overlapping neither; or NULL.
 * @param scale parameter vector, or NULL for 1.
 * @param save_mean,save_invstd the global statistics; required.
 * @param sums the sums over all parts (groups * 2 floats), or NULL: validation only.
 * @param count the global values per statistic (the merged block's count): a whole number, at least 2 and at
 *        least x's own values per statistic.
 * @param dscale,dbias receive the global parameter gradients (overwritten), or both NULL: not written.
 * @return as clnorm_bn_forward_training().
 */
CLNORM_API clnorm_status clnorm_bn_backward_from_sums(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                      const clnorm_tensor *dy, const clnorm_tensor *dx, cl_mem scale,
                                                      cl_mem save_mean, cl_mem save_invstd,
                                                      cl_mem sums /* summed over all parts */,
                                                      double count /* global values per statistic */, cl_mem dscale,
                                                      cl_mem dbias);

/**
 * @brief The layer's part of a synchronised training forward, first phase: clnorm_bn_stats() of x with the
 * layer's mode after the layer's own checks (ndim, maps, dtype, layout as clnorm_batchnorm_forward()).
 * @param bn the layer.
 * @param x this part's input; batch 0 allowed.
 * @param stats receives the block (clnorm_batchnorm_param_count() * 3 floats), or NULL: validation only.
 * @return as clnorm_bn_stats(); ::CLNORM_ERROR_SHAPE with PuzzleLib's messages.
 */
CLNORM_API clnorm_status clnorm_batchnorm_stats(clnorm_batchnorm *bn, const clnorm_tensor *x, cl_mem stats);
/**
 * @brief Training forward of the layer with merged (global) statistics: PuzzleLib's rules (n += 1, factor =
 * max(init_factor / n, min_factor), running statistics updated, mean and invstd saved for the backward) with
 * clnorm_bn_forward_training_from_stats().
 * @param bn the layer (every parameter written; see clnorm_batchnorm_forward()).
 * @param x this part's input; batch 0 allowed.
 * @param y output (y must not be x: the backward needs x).
 * @param stats the merged block, or NULL: validation only (n is not changed).
 * @return as clnorm_batchnorm_forward().
 */
CLNORM_API clnorm_status clnorm_batchnorm_forward_from_stats(clnorm_batchnorm *bn, const clnorm_tensor *x,
                                                             const clnorm_tensor *y, cl_mem stats);
/**
 * @brief The layer's backward sums of this part (clnorm_bn_backward_reduce() with its saved statistics).
 * @param bn the layer, after a training forward.
 * @param x this part's input of that forward; batch 0 allowed.
 * @param dy gradient of the output.
 * @param sums receives clnorm_batchnorm_param_count() * 2 floats, or NULL: validation only.
 * @return as clnorm_batchnorm_backward().
 */
CLNORM_API clnorm_status clnorm_batchnorm_backward_reduce(clnorm_batchnorm *bn, const clnorm_tensor *x,
                                                          const clnorm_tensor *dy, cl_mem sums);
/**
 * @brief The layer's backward from global sums: dx (when asked) and, when affine, the gradient accumulation
 * grad = scale * g + momentum * grad of PuzzleLib with the global gradients g.
 * @param bn the layer, after a training forward.
 * @param x this part's input of that forward; batch 0 allowed.
 * @param dy gradient of the output.
 * @param dx receives the input gradient, or NULL.
 * @param sums the sums over all parts, or NULL: validation only.
 * @param count the global values per statistic.
 * @param scale,momentum the accumulation weights (finite).
 * @return as clnorm_batchnorm_backward().
 */
CLNORM_API clnorm_status clnorm_batchnorm_backward_from_sums(clnorm_batchnorm *bn, const clnorm_tensor *x,
                                                             const clnorm_tensor *dy, const clnorm_tensor *dx,
                                                             cl_mem sums, double count, float scale, float momentum);

/**
 * @brief The context a layer was created on (for libraries above the layer: its queue, its device).
 * @param bn the layer (NULL gives NULL).
 * @return the context (borrowed).
 */
CLNORM_API clnorm_context *clnorm_batchnorm_context(const clnorm_batchnorm *bn);
/**
 * @brief Records message as this thread's last error (what clnorm_last_error() returns) and returns s: for
 * libraries built on clnorm (clnorm_mpi, bindings) that report their own refusals the library's way.
 * @param s the status to return.
 * @param message the text (copied, truncated to the library's buffer); NULL records "".
 * @return s.
 */
CLNORM_API clnorm_status clnorm_set_last_error(clnorm_status s, const char *message);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* CLNORM_H */
