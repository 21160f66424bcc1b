/* Tensor views of application buffers: validation (shape, dtype, layout, offset, CL_MEM_SIZE, CL_MEM_CONTEXT,
 * aliasing) and the blocking host I/O helpers. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

size_t cn_dtype_size(clnorm_dtype d) {
    switch (d) {
    case CLNORM_F32: return 4;
    case CLNORM_F16:
    case CLNORM_BF16: return 2;
    }
    return 0;
}

static const char *dtype_name(clnorm_dtype d) {
    switch (d) {
    case CLNORM_F32: return "CLNORM_F32";
    case CLNORM_F16: return "CLNORM_F16";
    case CLNORM_BF16: return "CLNORM_BF16";
    }
    return "?";
}

clnorm_tensor clnorm_tensor_make(cl_mem buffer, int ndim, const size_t *shape) {
    clnorm_tensor t;
    memset(&t, 0, sizeof t);
    t.buffer = buffer;
    t.ndim = ndim;
    t.dtype = CLNORM_F32;
    t.layout = CLNORM_NCHW;
    for (int i = 0; i < CLNORM_MAX_DIMS; ++i)
        t.shape[i] = (shape && i < ndim) ? shape[i] : 1;
    return t;
}

/* ndim, dims and their product (no overflow, in bytes too) */
static clnorm_status check_shape(int ndim, const size_t *shape, size_t esize, const char *what, size_t *numel) {
    if (ndim < 2 || ndim > CLNORM_MAX_DIMS)
        return cn_fail(CLNORM_ERROR_SHAPE, "%s: ndim must be 2..5 (batch, maps, d, h, w), got %d", what, ndim);
    size_t n = 1;
    for (int i = 0; i < ndim; ++i) {
        if (shape[i] == 0)
            return cn_fail(CLNORM_ERROR_SHAPE, "%s: dimension %d is 0 (every dimension must be at least 1)", what,
                           i);
        if (n > SIZE_MAX / shape[i] || n * shape[i] > SIZE_MAX / (esize ? esize : 1))
            return cn_fail(CLNORM_ERROR_SHAPE, "%s: the product of the dimensions overflows size_t", what);
        n *= shape[i];
    }
    *numel = n;
    return CLNORM_SUCCESS;
}

static clnorm_status check_mem(const clnorm_context *ctx, cl_mem m, size_t offset, size_t bytes, const char *what) {
    cl_context mc = NULL;
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof mc, &mc, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err == CL_INVALID_MEM_OBJECT)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s: not a valid cl_mem", what);
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clGetMemObjectInfo");
    if (mc != ctx->context)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s: the cl_mem belongs to another cl_context than the clnorm "
                                                      "context's",
                       what);
    if (offset > size || bytes > size - offset)
        return cn_fail(CLNORM_ERROR_BUFFER_TOO_SMALL,
                       "%s: the call touches bytes [%zu, %zu + %zu) but the cl_mem holds %zu bytes", what, offset,
                       offset, bytes, size);
    return CLNORM_SUCCESS;
}

clnorm_status cn_check_tensor(const clnorm_context *ctx, const clnorm_tensor *t, const char *what, size_t *numel) {
    if (!t)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s is NULL", what);
    if (!t->buffer)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s.buffer is NULL", what);
    size_t esize = cn_dtype_size(t->dtype);
    if (esize == 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s.dtype: %d is not a clnorm_dtype", what, (int)t->dtype);
    if (t->layout != CLNORM_NCHW && t->layout != CLNORM_NHWC)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s.layout: %d is not a clnorm_layout", what, (int)t->layout);
    clnorm_status st = check_shape(t->ndim, t->shape, esize, what, numel);
    if (st != CLNORM_SUCCESS)
        return st;
    if (t->offset % esize != 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s.offset %zu is not a multiple of the %s element size %zu",
                       what, t->offset, dtype_name(t->dtype), esize);

    return check_mem(ctx, t->buffer, t->offset, *numel * esize, what);
}

/* A view with batch 0 (the split-phase calls allow it): the other dimensions, dtype, layout and offset as
 * cn_check_tensor; the buffer may be NULL (nothing is touched), else it must be of ctx's context. */
clnorm_status cn_check_tensor_empty(const clnorm_context *ctx, const clnorm_tensor *t, const char *what) {
    if (!t)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s is NULL", what);
    size_t esize = cn_dtype_size(t->dtype);
    if (esize == 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s.dtype: %d is not a clnorm_dtype", what, (int)t->dtype);
    if (t->layout != CLNORM_NCHW && t->layout != CLNORM_NHWC)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s.layout: %d is not a clnorm_layout", what, (int)t->layout);
    if (t->ndim < 2 || t->ndim > CLNORM_MAX_DIMS)
        return cn_fail(CLNORM_ERROR_SHAPE, "%s: ndim must be 2..5 (batch, maps, d, h, w), got %d", what, t->ndim);
    size_t shape[CLNORM_MAX_DIMS], numel;
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = 1; /* the other dimensions must be valid */
    clnorm_status st = check_shape(t->ndim, shape, esize, what, &numel);
    if (st != CLNORM_SUCCESS)
        return st;
    if (t->offset % esize != 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s.offset %zu is not a multiple of the %s element size %zu",
                       what, t->offset, dtype_name(t->dtype), esize);
    return t->buffer ? check_mem(ctx, t->buffer, t->offset, 0, what) : CLNORM_SUCCESS;
}

clnorm_status cn_check_param(const clnorm_context *ctx, cl_mem m, size_t count, const char *what) {
    if (!m)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s is NULL", what);
    return check_mem(ctx, m, 0, count * sizeof(float), what);
}

/* the buffer a view really lives in (sub-buffers resolved to their parent) and the absolute byte offset */
static cl_mem root_of(cl_mem m, size_t *offset) {
    for (int depth = 0; depth < 4; ++depth) {
        cl_mem parent = NULL;
        size_t off = 0;
        if (clGetMemObjectInfo(m, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) != CL_SUCCESS || !parent)
            break;
        if (clGetMemObjectInfo(m, CL_MEM_OFFSET, sizeof off, &off, NULL) != CL_SUCCESS)
            break;
        *offset += off;
        m = parent;
    }
    return m;
}

static size_t view_bytes(const clnorm_tensor *t) {
    size_t n = cn_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; ++i)
        n *= t->shape[i];
    return n;
}

cn_region cn_region_param(cl_mem m, size_t count, const char *name, int out) {
    cn_region r = {name, NULL, 0, 0, out, 0};
    if (m) {
        r.root = root_of(m, &r.begin);
        r.end = r.begin + count * sizeof(float);
    }
    return r;
}

cn_region cn_region_view(const clnorm_tensor *t, const char *name, int out) {
    cn_region r = {name, NULL, 0, 0, out, 1};
    if (t) {
        r.begin = t->offset;
        r.root = root_of(t->buffer, &r.begin);
        r.end = r.begin + view_bytes(t);
    }
    return r;
}

clnorm_status cn_check_regions(const cn_region *r, int n) {
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) {
            const cn_region *a = &r[i], *b = &r[j];
            if (!a->root || a->root != b->root || (!a->out && !b->out) || (a->view && b->view))
                continue;
            if (a->begin < b->end && b->begin < a->end) {
                const cn_region *w = a->out ? a : b, *o = a->out ? b : a;
                return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                               "%s (bytes %zu..%zu of its buffer) and %s (bytes %zu..%zu) share memory: the call "
                               "writes %s, so it must not overlap any other argument",
                               w->name, w->begin, w->end, o->name, o->begin, o->end, w->name);
            }
        }
    return CLNORM_SUCCESS;
}

int cn_same_view(const clnorm_tensor *a, const clnorm_tensor *b) {
    size_t oa = a->offset, ob = b->offset;
    return root_of(a->buffer, &oa) == root_of(b->buffer, &ob) && oa == ob;
}

clnorm_status cn_check_overlap(const clnorm_tensor *in, const char *in_name, const clnorm_tensor *out,
                               const char *out_name, int *same) {
    size_t oi = in->offset, oo = out->offset;
    cl_mem ri = root_of(in->buffer, &oi), ro = root_of(out->buffer, &oo);
    *same = 0;
    if (ri != ro)
        return CLNORM_SUCCESS;
    if (oi == oo && in->dtype == out->dtype && in->layout == out->layout) {
        *same = 1;
        return CLNORM_SUCCESS;
    }
    size_t bi = view_bytes(in), bo = view_bytes(out);
    if (oi < oo + bo && oo < oi + bi)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                       "%s (bytes %zu..%zu) and %s (bytes %zu..%zu) overlap without being the same view", out_name, oo,
                       oo + bo, in_name, oi, oi + bi);
    return CLNORM_SUCCESS;
}

clnorm_status clnorm_tensor_create(clnorm_context *ctx, int ndim, const size_t *shape, clnorm_dtype dtype,
                                   const void *host, clnorm_tensor *out) {
    size_t numel = 0, esize = cn_dtype_size(dtype);
    if (!ctx || !shape || !out)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_tensor_create: %s is NULL",
                       !ctx ? "ctx" : !shape ? "shape" : "out");
    if (esize == 0)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_tensor_create: dtype %d is not a clnorm_dtype",
                       (int)dtype);
    clnorm_status st = check_shape(ndim, shape, esize, "clnorm_tensor_create", &numel);
    if (st != CLNORM_SUCCESS)
        return st;
    if (numel * esize > ctx->max_alloc)
        return cn_fail(CLNORM_ERROR_DEVICE_MEMORY,
                       "clnorm_tensor_create: %zu bytes exceed the device's CL_DEVICE_MAX_MEM_ALLOC_SIZE (%llu)",
                       numel * esize, (unsigned long long)ctx->max_alloc);
    cl_int err;
    cl_mem m = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0), numel * esize,
                              (void *)host, &err);
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clCreateBuffer");
    *out = clnorm_tensor_make(m, ndim, shape);
    out->dtype = dtype;
    return CLNORM_SUCCESS;
}

static clnorm_status host_io(clnorm_context *ctx, const clnorm_tensor *t, void *host, int write) {
    size_t numel = 0;
    const char *fn = write ? "clnorm_tensor_write" : "clnorm_tensor_read";
    if (!ctx || !host)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !ctx ? "ctx" : "host");
    clnorm_status st = cn_check_tensor(ctx, t, "t", &numel);
    if (st != CLNORM_SUCCESS)
        return st;
    size_t bytes = numel * cn_dtype_size(t->dtype);
    cl_int err = write ? clEnqueueWriteBuffer(ctx->queue, t->buffer, CL_TRUE, t->offset, bytes, host, 0, NULL, NULL)
                       : clEnqueueReadBuffer(ctx->queue, t->buffer, CL_TRUE, t->offset, bytes, host, 0, NULL, NULL);
    return err == CL_SUCCESS ? CLNORM_SUCCESS
                             : cn_cl_fail(err, write ? "clEnqueueWriteBuffer" : "clEnqueueReadBuffer");
}

clnorm_status clnorm_tensor_read(clnorm_context *ctx, const clnorm_tensor *t, void *host) {
    return host_io(ctx, t, host, 0);
}

clnorm_status clnorm_tensor_write(clnorm_context *ctx, const clnorm_tensor *t, const void *host) {
    return host_io(ctx, t, (void *)host, 1);
}

void clnorm_tensor_release(clnorm_tensor *t) {
    if (t && t->buffer) {
        clReleaseMemObject(t->buffer);
        t->buffer = NULL;
    }
}
