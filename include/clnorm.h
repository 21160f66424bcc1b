/*
 * clnorm — batch normalization (the PuzzleLib BatchNorm family) on any OpenCL 1.2 device.
 *
 * The one public header. Conventions: every fallible call returns a clnorm_status and leaves
 * the detail in clnorm_last_error(); output parameters come last; *_destroy(NULL) is a no-op;
 * the library never prints. Operations enqueue on the context's in-order queue and return
 * without waiting, except the read/write helpers and clnorm_tensor_create with host data.
 * A refused call (any status but CLNORM_SUCCESS returned before enqueueing) writes nothing.
 */
#ifndef CLNORM_H
#define CLNORM_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>

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
#define CLNORM_VERSION_MAJOR 0
#define CLNORM_VERSION_MINOR 1
#define CLNORM_VERSION_PATCH 0

/** MAJOR*10000 + MINOR*100 + PATCH of the built library. */
CLNORM_API unsigned clnorm_version(void);

typedef enum clnorm_status {
    CLNORM_SUCCESS = 0,
    CLNORM_ERROR_INVALID_ARGUMENT, /**< NULL where not allowed, bad enum, epsilon <= 0 or NaN, factor outside
                                        [0,1], a cl_mem of another context, overlapping x/y, half of a pair... */
    CLNORM_ERROR_SHAPE,            /**< wrong ndim, maps mismatch, shapes differ, zero-sized dim, < 2 values
                                        per statistic in training */
    CLNORM_ERROR_BUFFER_TOO_SMALL, /**< a cl_mem is smaller than offset + bytes the call touches */
    CLNORM_ERROR_UNSUPPORTED,      /**< dtype / layout / mode the device or this build cannot do */
    CLNORM_ERROR_INVALID_STATE,    /**< inplace in training, backward before a training forward, empty layer
                                        field used before written */
    CLNORM_ERROR_BUILD,            /**< kernel compilation failed: clnorm_last_error() holds the build log */
    CLNORM_ERROR_NO_DEVICE,        /**< no OpenCL platform/device matches the selector */
    CLNORM_ERROR_HOST_MEMORY,
    CLNORM_ERROR_DEVICE_MEMORY,    /**< CL_MEM_OBJECT_ALLOCATION_FAILURE / CL_OUT_OF_RESOURCES */
    CLNORM_ERROR_OPENCL            /**< any other OpenCL failure: clnorm_last_error() names call and code */
} clnorm_status;

/** Static text for a status; never NULL (unknown values give "unknown status"). */
CLNORM_API const char *clnorm_status_string(clnorm_status s);
/** This thread's detail of its last failure ("" if none yet). Valid until this thread's next clnorm call. */
CLNORM_API const char *clnorm_last_error(void);

/* ---- context: one device, one in-order queue, the compiled-kernel cache -------------- */
typedef struct clnorm_context clnorm_context;

/** device NULL or "": $CLNORM_DEVICE if set, else the first GPU, else the first accelerator, else the first
 *  CPU device of any platform. Otherwise "P:D" (platform and device index) or a case-insensitive substring of
 *  "<platform name> <device name>". CLNORM_ERROR_NO_DEVICE lists the devices that exist. */
CLNORM_API clnorm_status clnorm_context_create(const char *device, clnorm_context **out);
/** Use the application's in-order queue (retained; released on destroy). */
CLNORM_API clnorm_status clnorm_context_create_from_queue(cl_command_queue queue, clnorm_context **out);
/** Waits for the queue, releases kernels, programs, scratch buffers, queue and context. NULL: no-op. */
CLNORM_API void clnorm_context_destroy(clnorm_context *ctx);
CLNORM_API cl_context clnorm_context_cl_context(const clnorm_context *ctx);
CLNORM_API cl_device_id clnorm_context_device(const clnorm_context *ctx);
CLNORM_API cl_command_queue clnorm_context_queue(const clnorm_context *ctx);
/** "<platform name> <device name>"; owned by the context. */
CLNORM_API const char *clnorm_context_device_name(const clnorm_context *ctx);
/** clFinish + error mapping. */
CLNORM_API clnorm_status clnorm_context_finish(clnorm_context *ctx);

/* All operations enqueue on the context's queue and return without waiting, except the read and
   write helpers and clnorm_tensor_create with host data, which block. One context per thread at a time. */

/* ---- tensors: a view of an application cl_mem ----------------------------------------- */
#define CLNORM_MAX_DIMS 5
typedef enum clnorm_dtype { CLNORM_F32 = 0, CLNORM_F16 = 1, CLNORM_BF16 = 2 } clnorm_dtype; /* storage; math is float */
typedef enum clnorm_layout {
    CLNORM_NCHW = 0, /**< (batch, maps, spatial...) — channels second */
    CLNORM_NHWC = 1  /**< (batch, spatial..., maps) — channels last */
} clnorm_layout;
typedef struct clnorm_tensor {
    cl_mem buffer;
    size_t offset;                  /**< bytes from the start of buffer */
    int ndim;                       /**< 2..5 */
    size_t shape[CLNORM_MAX_DIMS];  /**< ALWAYS given as (batch, maps, d, h, w) order, whatever the layout */
    clnorm_dtype dtype;
    clnorm_layout layout;           /**< memory order; dense, no padding */
} clnorm_tensor;

/** A view of buffer: F32, NCHW, offset 0; shape copied (ndim clamped to 0..5 for the copy). Never fails;
 *  validation happens in the call that uses it. */
CLNORM_API clnorm_tensor clnorm_tensor_make(cl_mem buffer, int ndim, const size_t *shape);
/** Allocates a dense buffer for the shape (NCHW) and, when host is not NULL, fills it (blocking). */
CLNORM_API clnorm_status clnorm_tensor_create(clnorm_context *ctx, int ndim, const size_t *shape, clnorm_dtype dtype,
                                              const void *host /* NULL: uninitialised */, clnorm_tensor *out);
/** Blocking read of the whole view into host (numel * element size bytes). */
CLNORM_API clnorm_status clnorm_tensor_read(clnorm_context *ctx, const clnorm_tensor *t, void *host);
/** Blocking write of the whole view from host. */
CLNORM_API clnorm_status clnorm_tensor_write(clnorm_context *ctx, const clnorm_tensor *t, const void *host);
/** Releases t->buffer, sets it to NULL. NULL t: no-op. */
CLNORM_API void clnorm_tensor_release(clnorm_tensor *t);

/* ---- functional batch normalization (stateless, cuDNN/MIOpen-like) ------------------- */
typedef enum clnorm_bn_mode {
    CLNORM_BN_SPATIAL = 0,       /**< one statistic per map, over (batch, d, h, w): BatchNorm1D/2D/3D */
    CLNORM_BN_PER_ACTIVATION = 1 /**< one statistic per (map, d, h, w), over batch: BatchNorm on (batch, size) */
} clnorm_bn_mode;
/* Parameter vectors (scale, bias, means, variances, saved stats, grads) are float32 cl_mem holding
   maps values (SPATIAL) or maps*d*h*w values (PER_ACTIVATION), in the (maps, d, h, w) order, at offset 0. */

CLNORM_API clnorm_status clnorm_bn_forward_training(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                    const clnorm_tensor *y,
                                                    cl_mem scale, cl_mem bias, /* both NULL: scale 1, bias 0 */
                                                    double factor, double epsilon,
                                                    cl_mem running_mean, cl_mem running_var, /* both NULL: not updated */
                                                    cl_mem save_mean, cl_mem save_invstd);   /* both NULL: not saved */
CLNORM_API clnorm_status clnorm_bn_forward_inference(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                                     const clnorm_tensor *y, /* y may be x (same buffer and offset) */
                                                     cl_mem scale, cl_mem bias, cl_mem mean, cl_mem var,
                                                     double epsilon);
CLNORM_API clnorm_status clnorm_bn_backward(clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                            const clnorm_tensor *dy,
                                            const clnorm_tensor *dx,    /* NULL: input gradient not computed */
                                            cl_mem scale,               /* NULL: 1 */
                                            cl_mem dscale, cl_mem dbias, /* both NULL: not computed; else overwritten */
                                            double epsilon,
                                            cl_mem save_mean, cl_mem save_invstd); /* both NULL: recomputed from x */

/* ---- the layer: PuzzleLib BatchNorm / BatchNorm1D / 2D / 3D semantics ------------------ */
typedef struct clnorm_batchnorm clnorm_batchnorm;
typedef struct clnorm_batchnorm_config {
    int nd;              /**< 0: BatchNorm on (batch, size), PER_ACTIVATION; 1, 2, 3: BatchNorm1D/2D/3D, SPATIAL */
    size_t maps;         /**< number of maps ('size' when nd == 0) */
    float epsilon;       /**< 1e-5 */
    float init_factor;   /**< 1.0 */
    float min_factor;    /**< 0.1 */
    float sscale;        /**< 0.01: scale ~ Normal(1, sscale) when affine */
    int affine;          /**< 1 */
    const char *name;    /**< NULL; copied */
    int empty;           /**< 0; 1: no parameter is initialised until written */
    int inplace;         /**< 0; 1: inference may write y over x (training refuses) */
    uint64_t seed;       /**< 0: a fixed default; same seed => same initial scale */
    clnorm_dtype dtype;  /**< storage type of x/y/dy/dx: CLNORM_F32 */
    clnorm_layout layout; /**< CLNORM_NCHW */
} clnorm_batchnorm_config;

/** Fills cfg with the defaults above for nd and maps. NULL cfg: no-op. */
CLNORM_API void clnorm_batchnorm_config_init(clnorm_batchnorm_config *cfg, int nd, size_t maps);
CLNORM_API clnorm_status clnorm_batchnorm_create(clnorm_context *ctx, const clnorm_batchnorm_config *cfg,
                                                 clnorm_batchnorm **out);
CLNORM_API void clnorm_batchnorm_destroy(clnorm_batchnorm *bn);

/** train != 0: n += 1; factor = max(init_factor / n, min_factor); batch statistics; running stats updated;
 *  mean and invstd saved for backward. train == 0: running statistics; y may be x only if inplace. */
CLNORM_API clnorm_status clnorm_batchnorm_forward(clnorm_batchnorm *bn, int train, const clnorm_tensor *x,
                                                  const clnorm_tensor *y);
/** Backward of the last training forward. affine: grad_acc = scale * grad + momentum * grad_acc for
 *  SCALE_GRAD and BIAS_GRAD (PuzzleLib accGradParams). */
CLNORM_API clnorm_status clnorm_batchnorm_backward(clnorm_batchnorm *bn, const clnorm_tensor *x,
                                                   const clnorm_tensor *dy,
                                                   const clnorm_tensor *dx, /* NULL: input gradient not computed */
                                                   float scale, float momentum);

typedef enum clnorm_field {
    CLNORM_SCALE,
    CLNORM_BIAS,
    CLNORM_RUNNING_MEAN,
    CLNORM_RUNNING_VAR,
    CLNORM_SAVE_MEAN,
    CLNORM_SAVE_INVSTD, /**< of the last training forward */
    CLNORM_SCALE_GRAD,
    CLNORM_BIAS_GRAD    /**< accumulated parameter gradients */
} clnorm_field;
/** Blocking; count must equal clnorm_batchnorm_param_count (else CLNORM_ERROR_SHAPE). */
CLNORM_API clnorm_status clnorm_batchnorm_read(clnorm_batchnorm *bn, clnorm_field f, float *host, size_t count);
CLNORM_API clnorm_status clnorm_batchnorm_write(clnorm_batchnorm *bn, clnorm_field f, const float *host,
                                                size_t count);
/** Borrowed; NULL if absent (non-affine layers have no scale, bias or their gradients). */
CLNORM_API cl_mem clnorm_batchnorm_buffer(const clnorm_batchnorm *bn, clnorm_field f);
CLNORM_API size_t clnorm_batchnorm_param_count(const clnorm_batchnorm *bn);
CLNORM_API uint64_t clnorm_batchnorm_batches(const clnorm_batchnorm *bn);
CLNORM_API void clnorm_batchnorm_reset(clnorm_batchnorm *bn);
CLNORM_API const char *clnorm_batchnorm_name(const clnorm_batchnorm *bn);

#ifdef __cplusplus
}
#endif
#endif /* CLNORM_H */
