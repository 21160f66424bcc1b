/*
 * Programs per kernel group (src/program.c): a call compiles only the kernels its path launches. Every path of the
 * three operations (rows fused and split, per-activation columns in one launch and split, NHWC) is run in F32 and
 * F16 under the strategy ctest sets; then every program the context built must hold exactly its group's kernels
 * (no kernel a call does not launch, no stripped build that fell back to the whole set: cn_programs_check). The
 * training forward's output of each shape is checked against the double-precision reference (tests/ref_bn.c has
 * the full suite; here y = (x - mean) / sqrt(var + eps) per statistic, F32), poisoned first.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "test_util.h"

typedef struct {
    int ndim;
    size_t shape[5];
    clnorm_bn_mode mode;
    clnorm_layout layout;
} spec;

/* (B, C, S) and where element (b, c, s) lives, for the check */
static size_t at(const spec *sp, size_t b, size_t c, size_t s, size_t C, size_t S) {
    return sp->layout == CLNORM_NHWC ? (b * S + s) * C + c : (b * C + c) * S + s;
}

static void run_spec(const spec *sp, clnorm_dtype dt) {
    size_t B = sp->shape[0], C = sp->shape[1], S = 1;
    for (int i = 2; i < sp->ndim; ++i)
        S *= sp->shape[i];
    size_t n = B * C * S, groups = sp->mode == CLNORM_BN_SPATIAL ? C : C * S, es = dt == CLNORM_F32 ? 4 : 2;
    tu_case("%s %s %s ndim %d (%zu, %zu, %zu)", dt == CLNORM_F32 ? "F32" : "F16",
            sp->mode == CLNORM_BN_SPATIAL ? "spatial" : "per-activation", sp->layout == CLNORM_NHWC ? "NHWC" : "NCHW",
            sp->ndim, B, C, S);
    float *hx = tu_floats(n), *hy = tu_floats(n);
    tu_fill_normal(hx, n, 1.5, 2.0);
    cl_mem bx = tu_buffer(n * es), by = tu_buffer(n * es), bdy = tu_buffer(n * es), bdx = tu_buffer(n * es);
    cl_mem sm = tu_buffer(groups * 4), si = tu_buffer(groups * 4), ds = tu_buffer(groups * 4),
           db = tu_buffer(groups * 4);
    if (dt == CLNORM_F32) {
        tu_write(bx, 0, hx, n * 4);
        tu_write(bdy, 0, hx, n * 4);
    } else { /* halves of anything: the check below is F32 only */
        tu_poison(bx, 0, n * es);
        tu_poison(bdy, 0, n * es);
    }
    tu_poison(by, 0, n * es);
    clnorm_tensor x = tu_view(bx, 0, sp->ndim, sp->shape), y = tu_view(by, 0, sp->ndim, sp->shape),
                  dy = tu_view(bdy, 0, sp->ndim, sp->shape), dx = tu_view(bdx, 0, sp->ndim, sp->shape);
    clnorm_tensor *all[] = {&x, &y, &dy, &dx};
    for (int i = 0; i < 4; ++i) {
        all[i]->dtype = dt;
        all[i]->layout = sp->layout;
    }
    TU_OK(clnorm_bn_forward_training(tu_ctx, sp->mode, &x, &y, NULL, NULL, 0.1, 1e-5, NULL, NULL, sm, si));
    TU_OK(clnorm_bn_forward_inference(tu_ctx, sp->mode, &x, &y, NULL, NULL, sm, si, 1e-5));
    TU_OK(clnorm_bn_backward(tu_ctx, sp->mode, &x, &dy, &dx, NULL, ds, db, 1e-5, sm, si));
    TU_OK(clnorm_bn_backward(tu_ctx, sp->mode, &x, &dy, &dx, NULL, ds, db, 1e-5, NULL, NULL));
    if (dt == CLNORM_F32) { /* the training forward once more, y checked */
        tu_poison(by, 0, n * 4);
        TU_OK(clnorm_bn_forward_training(tu_ctx, sp->mode, &x, &y, NULL, NULL, 0.1, 1e-5, NULL, NULL, NULL, NULL));
        tu_read(by, 0, hy, n * 4);
        size_t per = sp->mode == CLNORM_BN_SPATIAL ? 1 : S;
        for (size_t g = 0; g < groups; ++g) { /* statistic g: map g / per, spatial g % per (per-activation) */
            size_t c = g / per, s0 = sp->mode == CLNORM_BN_SPATIAL ? 0 : g % per,
                   s1 = sp->mode == CLNORM_BN_SPATIAL ? S : s0 + 1;
            double mean = 0, var = 0, cnt = (double)(B * (s1 - s0));
            for (size_t b = 0; b < B; ++b)
                for (size_t s = s0; s < s1; ++s)
                    mean += hx[at(sp, b, c, s, C, S)] / cnt;
            for (size_t b = 0; b < B; ++b)
                for (size_t s = s0; s < s1; ++s) {
                    double d = hx[at(sp, b, c, s, C, S)] - mean;
                    var += d * d / cnt;
                }
            for (size_t b = 0; b < B; ++b)
                for (size_t s = s0; s < s1; ++s) {
                    size_t i = at(sp, b, c, s, C, S);
                    double want = (hx[i] - mean) / sqrt(var + 1e-5);
                    if (!(fabs(hy[i] - want) <= 1e-4 + 1e-4 * fabs(want)))
                        tu_fail_at(__FILE__, __LINE__, "%s: y[%zu] = %.9g, expected %.9g", tu_case_label(), i,
                                   (double)hy[i], want);
                }
        }
    }
    tu_finish();
    cl_mem *bufs[] = {&bx, &by, &bdy, &bdx, &sm, &si, &ds, &db};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; ++i)
        tu_release(bufs[i]);
    free(hx);
    free(hy);
}

static void test_programs_hold_their_group(void **state) {
    (void)state;
    static const spec specs[] = {
        {4, {2, 4, 8, 8}, CLNORM_BN_SPATIAL, CLNORM_NCHW},           /* rows, fused (CPU) */
        {4, {4, 3, 5, 7}, CLNORM_BN_SPATIAL, CLNORM_NCHW},           /* rows, split (CPU: 3 maps, 2 units) */
        {2, {16, 40, 0, 0}, CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW},  /* columns, one launch */
        {2, {4096, 8, 0, 0}, CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW}, /* columns, split in row chunks */
        {4, {2, 5, 3, 3}, CLNORM_BN_SPATIAL, CLNORM_NHWC},           /* NHWC */
    };
    for (int d = 0; d < 2; ++d)
        for (size_t i = 0; i < sizeof specs / sizeof specs[0]; ++i)
            run_spec(&specs[i], d ? CLNORM_F16 : CLNORM_F32);
    char why[512];
    int programs = cn_programs_check(tu_ctx, why, sizeof why);
    if (programs < 0)
        tu_fail_at(__FILE__, __LINE__, "%s", why);
    fprintf(stderr, "programs: %d built, each holding only its group's kernels\n", programs);
    TU_TRUE(programs >= 4);
}

/* Streaming or plain stores (cn_variant): every program of a context built with CLNORM_STREAM_MIN_BYTES=0 streams
 * (no -DCLNORM_NO_NT_STORES), with a huge value every one stores plainly, and by default each call takes the
 * variant its tensors' bytes ask for against the default threshold (on an Intel CPU device 1 MiB, elsewhere the
 * smaller of 8 MiB and a quarter of the device's CL_DEVICE_GLOBAL_MEM_CACHE_SIZE): on an F32 per-activation tensor
 * of 1024 columns and rows enough for 2/5 of the threshold, the forward (x, y) and the backward (x, dy, dx) are on
 * either side of it. The outputs of every context are checked as above. */
static int program_streams(const cn_program *p) {
    return strstr(p->options, "-DCLNORM_NO_NT_STORES") == NULL;
}

static void test_store_variants(void **state) {
    (void)state;
    static const spec small[] = {
        {4, {2, 4, 8, 8}, CLNORM_BN_SPATIAL, CLNORM_NCHW},
        {2, {16, 40, 0, 0}, CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW},
        {4, {2, 5, 3, 3}, CLNORM_BN_SPATIAL, CLNORM_NHWC},
    };
    spec tall = {2, {0, 1024, 0, 0}, CLNORM_BN_PER_ACTIVATION, CLNORM_NCHW}; /* rows: from the threshold */
    cl_ulong tall_bytes = 0;
    const cl_ulong small_bytes = 3ull * 2 * 4 * 8 * 8 * 4; /* 3 tensors, largest */
    static const char *const knob[] = {"0", "1099511627776", NULL};
    clnorm_context *group_ctx = tu_ctx;
    for (size_t v = 0; v < TU_COUNT(knob); ++v) {
        clnorm_context *c = NULL;
        TU_OK(tu_context_create_env("CLNORM_STREAM_MIN_BYTES", knob[v], &c));
        tu_ctx = c; /* run_spec's calls and buffers on c */
        for (size_t i = 0; i < TU_COUNT(small); ++i)
            run_spec(&small[i], CLNORM_F32);
        if (!knob[v]) {
            cl_ulong llc = 0, cap = (cl_ulong)8 << 20;
            char vname[256] = "";
            cl_device_type type = 0;
            cl_device_id dev = clnorm_context_device(c);
            TU_TRUE(clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof llc, &llc, NULL) == CL_SUCCESS);
            TU_TRUE(clGetDeviceInfo(dev, CL_DEVICE_VENDOR, sizeof vname - 1, vname, NULL) == CL_SUCCESS);
            TU_TRUE(clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, NULL) == CL_SUCCESS);
            /* Intel by the vendor's name: POCL reports vendor id 0x8086 for AMD CPUs as well */
            int intel_cpu = (type & CL_DEVICE_TYPE_CPU) && cn_contains_nocase(vname, "intel");
            tu_case("default threshold: %llu bytes (device cache %llu, vendor \"%s\"%s)",
                    (unsigned long long)c->stream_min_bytes, (unsigned long long)llc, vname,
                    intel_cpu ? ", an Intel CPU" : "");
            TU_TRUE(c->stream_min_bytes == (intel_cpu ? (cl_ulong)1 << 20 : llc && llc / 4 < cap ? llc / 4 : cap));
            TU_TRUE(c->stream_min_bytes > small_bytes);
            tall.shape[0] = (size_t)(c->stream_min_bytes * 2 / 5 / (1024 * 4));
            tall_bytes = (cl_ulong)tall.shape[0] * 1024 * 4;
            TU_TRUE(2 * tall_bytes < c->stream_min_bytes && 3 * tall_bytes >= c->stream_min_bytes);
            run_spec(&tall, CLNORM_F32);
        }
        /* default: the small specs' programs store plainly, and so does the tall tensor's forward (x and y under the
         * threshold); its backward (x, dy and dx over it) streams: a second program of that group beside the plain one */
        int n_fwd[2] = {0, 0}, n_bwd[2] = {0, 0}, n_other[2] = {0, 0}; /* [streams] */
        for (const cn_program *p = c->programs; p; p = p->next) {
            int streams = program_streams(p);
            if (strstr(p->options, "-DCLNORM_PROGRAM_PA_FORWARD "))
                n_fwd[streams]++;
            else if (strstr(p->options, "-DCLNORM_PROGRAM_PA_BACKWARD "))
                n_bwd[streams]++;
            else
                n_other[streams]++;
        }
        tu_case("CLNORM_STREAM_MIN_BYTES=%s: programs plain / streaming: per-activation forward %d / %d, backward "
                "%d / %d, others %d / %d",
                knob[v] ? knob[v] : "(default)", n_fwd[0], n_fwd[1], n_bwd[0], n_bwd[1], n_other[0], n_other[1]);
        if (v == 0)
            TU_TRUE(n_fwd[0] + n_bwd[0] + n_other[0] == 0 && n_other[1] > 0);
        else if (v == 1)
            TU_TRUE(n_fwd[1] + n_bwd[1] + n_other[1] == 0 && n_other[0] > 0);
        else
            TU_TRUE(n_other[1] == 0 && n_fwd[0] == 1 && n_fwd[1] == 0 && n_bwd[0] == 1 && n_bwd[1] == 1);
        tu_ctx = group_ctx;
        clnorm_context_destroy(c);
    }
}

int main(void) {
    tu_main_init();
    /* programs from source, never from the disk cache: its key names the group, not how the program was cut */
    setenv("CLNORM_CACHE", "0", 1);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_programs_hold_their_group),
                                       cmocka_unit_test(test_store_variants)};
    return cmocka_run_group_tests_name("programs", tests, tu_group_setup, tu_group_teardown);
}
