/*
 * libFuzzer driver of the public API: every input picks one call (functional training / inference / backward,
 * the layer's forward / backward / read / write, tensor create / read / write) with arbitrary modes, dtypes,
 * layouts, ndim, dims, byte offsets, aliasing between the views (the same buffer, sub-buffers of one parent),
 * NULL / non-NULL optional arguments, epsilon and factors (NaN, Inf, 0, negative, huge, tiny). Buffers are small
 * (32 KiB) so each input runs in well under a millisecond of device time; one context for the whole run.
 *
 * Invariants checked on every input:
 *  - the status is a clnorm_status; a failure leaves a non-empty clnorm_last_error();
 *  - a refused call writes nothing: every buffer is compared byte for byte with its state before the call;
 *  - a successful call on finite inputs (data in [-4, 4] in the call's storage type, positive variances) with a
 *    finite epsilon representable as a positive float gives finite outputs.
 * Device: $CLNORM_TEST_DEVICE or "pocl"; the run aborts if no device.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm.h"

#define NDATA 6           /* root data buffers */
#define NSUB 2            /* sub-buffers of data buffer 0 */
#define DATA_BYTES 32768  /* each data buffer */
#define NPARAM 6          /* parameter buffers */
#define PARAM_BYTES 4096  /* 1024 floats */
#define NROOT (NDATA + NPARAM)

static clnorm_context *ctx;
static cl_mem data[NDATA + NSUB], param[NPARAM];
static size_t sub_origin[NSUB];
static unsigned char before[NROOT][DATA_BYTES], after[NROOT][DATA_BYTES];

static cl_mem root(int i) { return i < NDATA ? data[i] : param[i - NDATA]; }
static size_t root_bytes(int i) { return i < NDATA ? DATA_BYTES : PARAM_BYTES; }

static void die(const char *what) {
    fprintf(stderr, "fuzz_api: %s: %s\n", what, clnorm_last_error());
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dev = getenv("CLNORM_TEST_DEVICE");
    if (clnorm_context_create(dev && *dev ? dev : "pocl", &ctx) != CLNORM_SUCCESS)
        die("no context");
    cl_context c = clnorm_context_cl_context(ctx);
    cl_uint align_bits = 1024;
    clGetDeviceInfo(clnorm_context_device(ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    size_t A = align_bits / 8 ? align_bits / 8 : 128;
    cl_int err;
    for (int i = 0; i < NDATA; i++)
        if (!(data[i] = clCreateBuffer(c, CL_MEM_READ_WRITE, DATA_BYTES, NULL, &err)))
            die("clCreateBuffer");
    for (int i = 0; i < NPARAM; i++)
        if (!(param[i] = clCreateBuffer(c, CL_MEM_READ_WRITE, PARAM_BYTES, NULL, &err)))
            die("clCreateBuffer");
    for (int s = 0; s < NSUB; s++) { /* overlapping halves-and-a-bit of data[0] */
        sub_origin[s] = s * A;
        cl_buffer_region r = {sub_origin[s], DATA_BYTES / 2};
        data[NDATA + s] = clCreateSubBuffer(data[0], CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, &err);
        if (err != CL_SUCCESS)
            die("clCreateSubBuffer");
    }
    /* warm-up: build the programs and let POCL compile the kernels every path uses (cold, this takes minutes
       under the sanitizers; libFuzzer's -timeout would otherwise fire on the first inputs that need them) */
    for (int d = 0; d < 3; d++)
        for (int l = 0; l < 2; l++)
            for (int m = 0; m < 2; m++) {
                const size_t shapes[2][4] = {{4, 3, 5, 7}, {3, 2, 1, 1}};
                for (int k = 0; k < 2; k++) {
                    clnorm_tensor x = clnorm_tensor_make(data[1], 4, shapes[k]), y = clnorm_tensor_make(data[2], 4,
                                                                                                        shapes[k]);
                    x.dtype = y.dtype = (clnorm_dtype)d;
                    x.layout = y.layout = (clnorm_layout)l;
                    clnorm_bn_forward_training(ctx, (clnorm_bn_mode)m, &x, &y, param[0], param[1], 0.1, 1e-5, param[2],
                                               param[3], param[4], param[5]);
                    clnorm_bn_forward_inference(ctx, (clnorm_bn_mode)m, &x, &y, param[0], param[1], param[2], param[3],
                                                1e-5);
                    clnorm_bn_backward(ctx, (clnorm_bn_mode)m, &x, &y, &y, param[0], param[2], param[3], 1e-5,
                                       param[4], param[5]);
                    clnorm_bn_backward(ctx, (clnorm_bn_mode)m, &x, &y, &y, NULL, NULL, NULL, 1e-5, NULL, NULL);
                }
            }
    clnorm_context_finish(ctx);
    return 0;
}

/* ---- input reader: bytes, defaulting to 0 when the input runs out ------------------------------------------ */
typedef struct {
    const uint8_t *p;
    size_t n, i;
} rd;
static unsigned u8(rd *r) { return r->i < r->n ? r->p[r->i++] : 0; }
static unsigned u16(rd *r) { return u8(r) | (u8(r) << 8); }

static const double reals[] = {1e-5, 0.1, 1.0, 0.5, 1e-3, 0.0, -0.0, -1e-5, 1.5, NAN, INFINITY, -INFINITY,
                               1e300, 1e-300, 1e-45, 2.0};

/* ---- fill: data buffers with finite values in [-4, 4] in the given storage, parameters in [0.5, 2] ----------- */
static uint16_t to_half(float f) { /* finite, |f| <= 4: normal or subnormal half, truncation is fine here */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a < 0x38800000u)
        return (uint16_t)s; /* tiny: zero */
    return (uint16_t)(s | ((a - 0x38000000u) >> 13));
}

static void fill(clnorm_dtype dt, uint32_t seed) {
    static unsigned char buf[DATA_BYTES];
    uint32_t x = seed * 2654435761u + 12345u;
    for (int b = 0; b < NROOT; b++) {
        size_t bytes = root_bytes(b);
        int is_param = b >= NDATA;
        size_t es = (is_param || dt == CLNORM_F32 || (unsigned)dt > 2) ? 4 : 2;
        for (size_t i = 0; i < bytes / es; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            float f = is_param ? 0.5f + 1.5f * (float)(x & 0xffff) / 65535.0f
                               : -4.0f + 8.0f * (float)(x & 0xffff) / 65535.0f;
            if (es == 4) {
                memcpy(buf + 4 * i, &f, 4);
            } else {
                uint16_t h;
                if (dt == CLNORM_F16) {
                    h = to_half(f);
                } else {
                    uint32_t u;
                    memcpy(&u, &f, 4);
                    h = (uint16_t)(u >> 16);
                }
                memcpy(buf + 2 * i, &h, 2);
            }
        }
        if (clEnqueueWriteBuffer(clnorm_context_queue(ctx), root(b), CL_TRUE, 0, bytes, buf, 0, NULL, NULL) !=
            CL_SUCCESS)
            die("write");
    }
}

static void snapshot(unsigned char (*dst)[DATA_BYTES]) {
    if (clnorm_context_finish(ctx) != CLNORM_SUCCESS)
        die("finish");
    for (int b = 0; b < NROOT; b++)
        if (clEnqueueReadBuffer(clnorm_context_queue(ctx), root(b), CL_TRUE, 0, root_bytes(b), dst[b], 0, NULL,
                                NULL) != CL_SUCCESS)
            die("read");
}

/* every value of storage type dt in [off, off + bytes) of root buffer b is finite */
static int finite_range(int b, size_t off, size_t bytes, clnorm_dtype dt) {
    const unsigned char *p = after[b];
    if (off > root_bytes(b) || bytes > root_bytes(b) - off)
        return 1;
    if (dt == CLNORM_F32) {
        for (size_t i = 0; i + 4 <= bytes; i += 4) {
            float f;
            memcpy(&f, p + off + i, 4);
            if (!isfinite(f))
                return 0;
        }
    } else {
        for (size_t i = 0; i + 2 <= bytes; i += 2) {
            uint16_t h;
            memcpy(&h, p + off + i, 2);
            unsigned expo = dt == CLNORM_F16 ? (h >> 10) & 0x1f : (h >> 7) & 0xff;
            if (expo == (dt == CLNORM_F16 ? 0x1fu : 0xffu))
                return 0;
        }
    }
    return 1;
}

/* a view: buffer index (0..7: data and sub-buffers), byte offset; its root buffer and absolute offset */
typedef struct {
    clnorm_tensor t;
    int root;
    size_t abs_off;
} view;

static view make_view(rd *r, int ndim, const size_t *shape, clnorm_dtype dt, clnorm_layout lay) {
    view v;
    unsigned bi = u8(r) % (NDATA + NSUB);
    size_t off = u8(r);
    if (u8(r) & 1)
        off *= 4; /* aligned more often */
    v.t = clnorm_tensor_make(data[bi], ndim, shape);
    v.t.offset = off;
    v.t.dtype = dt;
    v.t.layout = lay;
    v.root = bi < NDATA ? (int)bi : 0;
    v.abs_off = off + (bi < NDATA ? 0 : sub_origin[bi - NDATA]);
    return v;
}

static cl_mem pick_param(rd *r, int *idx) {
    unsigned k = u8(r) % (NPARAM + 2);
    if (k >= NPARAM) {
        *idx = -1;
        return NULL;
    }
    *idx = (int)k;
    return param[k];
}

static size_t numel_of(int ndim, const size_t *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim && i < 5; i++)
        n *= shape[i];
    return n;
}

/* the input in hex on stderr before an abort: CI logs then carry what reproduces a finding */
static const uint8_t *cur_bytes;
static size_t cur_size;
static void dump_input(void) {
    fprintf(stderr, "fuzz_api: input (%zu bytes):", cur_size);
    for (size_t i = 0; i < cur_size; i++)
        fprintf(stderr, " %02x", cur_bytes[i]);
    fprintf(stderr, "\n");
}
#define FAIL_ABORT() (dump_input(), abort())

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
    cur_bytes = bytes, cur_size = size;
    rd r = {bytes, size, 0};
    unsigned op = u8(&r) % 9;
    unsigned mraw = u8(&r);
    clnorm_bn_mode mode = (clnorm_bn_mode)(mraw < 250 ? mraw % 2 : (int)mraw - 252); /* mostly valid */
    unsigned draw = u8(&r);
    clnorm_dtype dt = (clnorm_dtype)(draw < 250 ? draw % 3 : (int)draw - 250);
    unsigned lraw = u8(&r);
    clnorm_layout lay = (clnorm_layout)(lraw < 250 ? lraw % 2 : (int)lraw - 250);
    unsigned nraw = u8(&r);
    int ndim = nraw < 240 ? 2 + (int)(nraw % 4) : (int)nraw - 245; /* mostly 2..5, sometimes -5..10 */
    size_t shape[5];
    for (int i = 0; i < 5; i++) {
        unsigned s = u8(&r);
        shape[i] = s < 240 ? 1 + s % 7 : s < 250 ? 0 : (size_t)1 << (s % 64); /* 1..7, 0, or huge */
    }
    double factor = reals[u8(&r) % 16], eps = reals[u8(&r) % 16];
    uint32_t seed = u16(&r);
    fill(dt, seed);

    view x = make_view(&r, ndim, shape, dt, lay), y = make_view(&r, ndim, shape, dt, lay),
         dy = make_view(&r, ndim, shape, dt, lay);
    int is, ib, irm, irv, ism, isi;
    cl_mem scale = pick_param(&r, &is), bias = pick_param(&r, &ib), rm = pick_param(&r, &irm),
           rv = pick_param(&r, &irv), sm = pick_param(&r, &ism), si = pick_param(&r, &isi);
    int with_dx = u8(&r) & 1;

    snapshot(before);
    clnorm_status st = CLNORM_SUCCESS;
    int outputs_y = 0, outputs_params = 0;
    clnorm_batchnorm *bn = NULL;
    switch (op) {
    case 0:
    case 1:
        st = clnorm_bn_forward_training(ctx, mode, &x.t, &y.t, scale, bias, factor, eps, rm, rv, sm, si);
        outputs_y = outputs_params = 1;
        break;
    case 2:
        st = clnorm_bn_forward_inference(ctx, mode, &x.t, &y.t, scale, bias, rm, rv, eps);
        outputs_y = 1;
        break;
    case 3:
    case 4:
        st = clnorm_bn_backward(ctx, mode, &x.t, &dy.t, with_dx ? &y.t : NULL, scale, rm, rv, eps, sm, si);
        outputs_y = with_dx, outputs_params = 1;
        break;
    case 5:
    case 6: { /* the layer: create (maps from the shape), then train / backward / infer */
        clnorm_batchnorm_config cfg;
        clnorm_batchnorm_config_init(&cfg, (int)(u8(&r) % 5) - (u8(&r) == 255), shape[1] < 64 ? shape[1] : 64);
        cfg.dtype = dt;
        cfg.layout = lay;
        cfg.affine = u8(&r) & 1;
        cfg.inplace = u8(&r) & 1;
        cfg.epsilon = (float)eps;
        cfg.min_factor = (float)factor;
        st = clnorm_batchnorm_create(ctx, &cfg, &bn);
        if (st != CLNORM_SUCCESS)
            break;
        st = clnorm_batchnorm_forward(bn, 1, &x.t, &y.t);
        if (st == CLNORM_SUCCESS && op == 6)
            st = clnorm_batchnorm_backward(bn, &x.t, &dy.t, with_dx ? &y.t : NULL, (float)factor, 0.5f);
        else if (st == CLNORM_SUCCESS)
            st = clnorm_batchnorm_forward(bn, 0, &x.t, &y.t);
        outputs_y = 1;
        break;
    }
    case 7: { /* tensor read / write of a view */
        static unsigned char host[DATA_BYTES * 2];
        size_t need = numel_of(ndim, shape);
        if (u8(&r) & 1) {
            memcpy(host, before[x.root], DATA_BYTES); /* writing back what is there: a success changes nothing */
            if (x.abs_off < DATA_BYTES)
                memmove(host, before[x.root] + x.abs_off, DATA_BYTES - x.abs_off);
            st = need <= DATA_BYTES / 4 ? clnorm_tensor_write(ctx, &x.t, host) : CLNORM_SUCCESS;
        } else {
            st = need <= DATA_BYTES / 4 ? clnorm_tensor_read(ctx, &x.t, host) : CLNORM_SUCCESS;
        }
        break;
    }
    default: { /* tensor_create with hostile shapes; released right away */
        clnorm_tensor t;
        memset(&t, 0, sizeof t);
        size_t n = numel_of(ndim, shape);
        static float host[8192];
        st = clnorm_tensor_create(ctx, ndim, shape, dt, (u8(&r) & 1) && n <= 4096 ? host : NULL, &t);
        if (st == CLNORM_SUCCESS)
            clnorm_tensor_release(&t);
        else if (t.buffer)
            FAIL_ABORT(); /* a failure hands out no buffer */
        break;
    }
    }
    snapshot(after);

    if ((int)st < (int)CLNORM_SUCCESS || (int)st > (int)CLNORM_ERROR_OPENCL) {
        fprintf(stderr, "fuzz_api: op %u returned %d, not a clnorm_status\n", op, (int)st);
        FAIL_ABORT();
    }
    if (st != CLNORM_SUCCESS) {
        if (clnorm_last_error()[0] == '\0') {
            fprintf(stderr, "fuzz_api: op %u failed with %s but clnorm_last_error() is empty\n", op,
                    clnorm_status_string(st));
            FAIL_ABORT();
        }
        /* refused: nothing written. (The layer calls 5/6 may fail in the second step after the first wrote.) */
        if (op != 5 && op != 6) {
            for (int b = 0; b < NROOT; b++)
                if (memcmp(before[b], after[b], root_bytes(b)) != 0) {
                    fprintf(stderr, "fuzz_api: op %u refused with %s (%s) but buffer %d changed\n", op,
                            clnorm_status_string(st), clnorm_last_error(), b);
                    FAIL_ABORT();
                }
        }
    } else if (outputs_y || outputs_params) {
        /* finite inputs and a usable epsilon: finite outputs */
        float fe = (float)eps;
        int eps_ok = isfinite(eps) && fe > 0.0f && isnormal(fe);
        if (eps_ok && ndim >= 2 && ndim <= 5 && (unsigned)dt <= 2) {
            size_t es = dt == CLNORM_F32 ? 4 : 2, nb = numel_of(ndim, shape) * es;
            if (outputs_y && !finite_range(y.root, y.abs_off, nb, dt)) {
                fprintf(stderr, "fuzz_api: op %u succeeded but wrote a non-finite output (eps %g, factor %g)\n", op,
                        eps, factor);
                FAIL_ABORT();
            }
            int outs[4] = {op <= 1 ? irm : op >= 3 && op <= 4 ? irm : -1, op <= 1 ? irv : op >= 3 && op <= 4 ? irv : -1,
                           op <= 1 ? ism : -1, op <= 1 ? isi : -1};
            for (int k = 0; k < 4 && outputs_params; k++)
                if (outs[k] >= 0 && !finite_range(NDATA + outs[k], 0, PARAM_BYTES, CLNORM_F32)) {
                    fprintf(stderr, "fuzz_api: op %u succeeded but parameter output %d is not finite\n", op, k);
                    FAIL_ABORT();
                }
        }
    }
    clnorm_batchnorm_destroy(bn);
    return 0;
}
