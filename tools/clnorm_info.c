/*
 * clnorm-info — the OpenCL devices clnorm can use, and (with --check) whether it works on each.
 *
 * Usage: clnorm-info [--check] [SELECTOR]
 *
 * Lists every platform and device: the selector strings clnorm_context_create accepts ("P:D" and the name),
 * device type, global memory and largest allocation, OpenCL C version, cl_khr_fp16 / cl_khr_fp64, and marks
 * the device clnorm_context_create(NULL) picks by default and the one $CLNORM_DEVICE picks when it is set.
 * Then the on-disk kernel cache: the folder a context uses (clnorm_context_cache_dir) or why it is off
 * (clnorm_context_cache_status: CLNORM_CACHE=0, a folder another user owns or others can write...), and
 * $CLNORM_KERNEL_DIR when it is set.
 *
 * --check builds the kernels and runs a tiny batch normalization on each device (or only on the device
 * clnorm_context_create(SELECTOR) picks: "P:D" or a case-insensitive substring of the name): training forward (with running and
 * saved statistics) then backward (dx, dscale, dbias), on a few shapes, F32 and F16 storage, SPATIAL and
 * PER_ACTIVATION, compared against a host reference in double. One "ok" or "FAIL" line per device.
 *
 * --version prints the library and header versions and exits.
 *
 * Exit status: 0; 1 when a check fails, no OpenCL device exists, or $CLNORM_DEVICE is set and matches no device;
 * 2 on a usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm.h"
#include "ref_bn.h"

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

/* ---- device information ----------------------------------------------------------------------------------- */

/* a device (d != NULL) or platform string parameter, malloc'ed ("" when the query fails), NULL without memory */
static char *info_string(cl_platform_id p, cl_device_id d, cl_uint param) {
    size_t n = 0;
    if ((d ? clGetDeviceInfo(d, param, 0, NULL, &n) : clGetPlatformInfo(p, param, 0, NULL, &n)) != CL_SUCCESS)
        n = 0;
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    if (n == 0 || (d ? clGetDeviceInfo(d, param, n, s, NULL) : clGetPlatformInfo(p, param, n, s, NULL)) != CL_SUCCESS)
        n = 0;
    s[n] = '\0';
    return s;
}
#define dev_string(d, param) info_string(NULL, (d), (param))
#define plat_string(p, param) info_string((p), NULL, (param))

static int has_word(const char *list, const char *word) {
    size_t n = strlen(word);
    for (const char *p = list; p && (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

static const char *type_name(cl_device_type t) {
    if (t & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (t & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    if (t & CL_DEVICE_TYPE_CPU)
        return "CPU";
    return "other";
}

static void print_bytes(const char *label, cl_ulong b) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        ++u;
    }
    printf("%s %.1f %s", label, v, unit[u]);
}

/* The device that clnorm_context_create(selector) picks, or NULL. */
static cl_device_id pick(const char *selector) {
    clnorm_context *ctx = NULL;
    if (clnorm_context_create(selector, &ctx) != CLNORM_SUCCESS)
        return NULL;
    cl_device_id d = clnorm_context_device(ctx);
    clnorm_context_destroy(ctx);
    return d;
}

/* ---- the check -------------------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform01(void) { /* (0, 1] */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((double)((rng_state * 2685821657736338717ull) >> 11) + 1.0) / 9007199254740992.0;
}
static double normal(void) { return sqrt(-2.0 * log(uniform01())) * cos(6.283185307179586 * uniform01()); }

/* IEEE half <-> float, round to nearest even */
static uint16_t to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    int exp = (int)((x >> 23) & 0xff);
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    int e = exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        int shift = 14 - e;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            ++h;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        ++h; /* may carry into the exponent, which is still right */
    return (uint16_t)(sign | h);
}
static float from_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
    if (exp == 0x1f)
        x = sign | 0x7f800000u | (mant << 13);
    else if (exp != 0)
        x = sign | ((exp + 112) << 23) | (mant << 13);
    else if (mant == 0)
        x = sign;
    else {
        int e = -1;
        do {
            mant <<= 1;
            ++e;
        } while (!(mant & 0x400u));
        x = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

typedef struct {
    char msg[512];
} check_error;

static int close_enough(const char *what, const float *got, const double *ref, size_t n, double atol, double rtol,
                        check_error *err) {
    for (size_t i = 0; i < n; ++i) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= atol + rtol * fabs(ref[i]))) {
            snprintf(err->msg, sizeof err->msg, "%s[%zu] = %.9g, expected %.9g", what, i, (double)got[i], ref[i]);
            return 0;
        }
    }
    return 1;
}

static cl_mem param_buffer(clnorm_context *ctx, const float *host, size_t n, check_error *err) {
    cl_int e;
    cl_mem m = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0),
                              n * sizeof(float), (void *)host, &e);
    if (e != CL_SUCCESS) {
        snprintf(err->msg, sizeof err->msg, "clCreateBuffer failed (%d)", (int)e);
        return NULL;
    }
    return m;
}

static int read_param(clnorm_context *ctx, cl_mem m, float *host, size_t n, check_error *err) {
    cl_int e = clEnqueueReadBuffer(clnorm_context_queue(ctx), m, CL_TRUE, 0, n * sizeof(float), host, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        snprintf(err->msg, sizeof err->msg, "clEnqueueReadBuffer failed (%d)", (int)e);
    return e == CL_SUCCESS;
}

/* x, dy, y, dx as device tensors of the given dtype; host values are the float ones the device sees */
static int make_tensor(clnorm_context *ctx, int ndim, const size_t *shape, clnorm_dtype dt, float *vals, size_t n,
                       clnorm_tensor *t, check_error *err) {
    void *host = NULL;
    uint16_t *h = NULL;
    if (vals && dt == CLNORM_F16) {
        if (!(h = malloc(n * sizeof *h))) {
            snprintf(err->msg, sizeof err->msg, "out of host memory");
            return 0;
        }
        for (size_t i = 0; i < n; ++i) {
            h[i] = to_half(vals[i]);
            vals[i] = from_half(h[i]); /* the reference sees what the device sees */
        }
        host = h;
    } else {
        host = vals;
    }
    clnorm_status st = clnorm_tensor_create(ctx, ndim, shape, dt, host, t);
    free(h);
    if (st != CLNORM_SUCCESS)
        snprintf(err->msg, sizeof err->msg, "clnorm_tensor_create: %s: %s", clnorm_status_string(st),
                 clnorm_last_error());
    return st == CLNORM_SUCCESS;
}

static int read_tensor(clnorm_context *ctx, const clnorm_tensor *t, float *out, size_t n, check_error *err) {
    clnorm_status st;
    if (t->dtype == CLNORM_F16) {
        uint16_t *h = malloc(n * sizeof *h);
        if (!h) {
            snprintf(err->msg, sizeof err->msg, "out of host memory");
            return 0;
        }
        st = clnorm_tensor_read(ctx, t, h);
        for (size_t i = 0; i < n && st == CLNORM_SUCCESS; ++i)
            out[i] = from_half(h[i]);
        free(h);
    } else {
        st = clnorm_tensor_read(ctx, t, out);
    }
    if (st != CLNORM_SUCCESS)
        snprintf(err->msg, sizeof err->msg, "clnorm_tensor_read: %s: %s", clnorm_status_string(st),
                 clnorm_last_error());
    return st == CLNORM_SUCCESS;
}

/* One case: training forward + backward on one shape, dtype and mode. 1: passed. */
static int check_case(clnorm_context *ctx, clnorm_bn_mode mode, clnorm_dtype dt, int ndim, const size_t *shape,
                      check_error *err) {
    size_t n = 1;
    for (int i = 0; i < ndim; ++i)
        n *= shape[i];
    size_t g = ref_groups(mode, ndim, shape);
    const double factor = 0.25, eps = 1e-5;
    /* host arrays */
    float *x = malloc(n * sizeof *x), *dy = malloc(n * sizeof *dy), *y = malloc(n * sizeof *y),
          *dx = malloc(n * sizeof *dx);
    float *p = malloc(11 * g * sizeof *p);
    double *r = malloc((2 * n + 8 * g) * sizeof *r);
    clnorm_tensor tx = {0}, tdy = {0}, ty = {0}, tdx = {0};
    cl_mem m[8] = {0};
    int ok = 0;
    clnorm_status st;
    if (!x || !dy || !y || !dx || !p || !r) {
        snprintf(err->msg, sizeof err->msg, "out of host memory");
        goto done;
    }
    float *scale = p, *bias = p + g, *rm = p + 2 * g, *rv = p + 3 * g, *got = p + 4 * g; /* got: 7 * g */
    double *ry = r, *rdx = r + n, *rmean = r + 2 * n, *rvar = rmean + g, *rinv = rvar + g, *rrm = rinv + g,
           *rrv = rrm + g, *rdscale = rrv + g, *rdbias = rdscale + g;
    for (size_t i = 0; i < n; ++i) {
        x[i] = (float)(0.5 + 2.0 * normal());
        dy[i] = (float)normal();
    }
    for (size_t i = 0; i < g; ++i) {
        scale[i] = (float)(1.0 + 0.1 * normal());
        bias[i] = (float)(0.1 * normal());
        rm[i] = (float)(0.1 * normal());
        rv[i] = (float)(1.0 + 0.1 * uniform01());
    }
    if (!make_tensor(ctx, ndim, shape, dt, x, n, &tx, err) || !make_tensor(ctx, ndim, shape, dt, dy, n, &tdy, err) ||
        !make_tensor(ctx, ndim, shape, dt, NULL, n, &ty, err) || !make_tensor(ctx, ndim, shape, dt, NULL, n, &tdx, err))
        goto done;
    /* m: scale, bias, running mean, running var, save mean, save invstd, dscale, dbias */
    const float *init[8] = {scale, bias, rm, rv, NULL, NULL, NULL, NULL};
    for (int i = 0; i < 8; ++i)
        if (!(m[i] = param_buffer(ctx, init[i], g, err)))
            goto done;
    st = clnorm_bn_forward_training(ctx, mode, &tx, &ty, m[0], m[1], factor, eps, m[2], m[3], m[4], m[5]);
    if (st == CLNORM_SUCCESS)
        st = clnorm_bn_backward(ctx, mode, &tx, &tdy, &tdx, m[0], m[6], m[7], eps, m[4], m[5]);
    if (st == CLNORM_SUCCESS)
        st = clnorm_context_finish(ctx);
    if (st != CLNORM_SUCCESS) {
        snprintf(err->msg, sizeof err->msg, "%s: %s", clnorm_status_string(st), clnorm_last_error());
        goto done;
    }
    ref_bn_forward_training(mode, ndim, shape, x, scale, bias, factor, eps, rm, rv, ry, rmean, rvar, rinv, rrm, rrv);
    if (!read_tensor(ctx, &ty, y, n, err) || !read_tensor(ctx, &tdx, dx, n, err))
        goto done;
    for (int i = 0; i < 6; ++i)
        if (!read_param(ctx, m[2 + i], got + (size_t)i * g, g, err))
            goto done;
    /* the backward reference uses the device's saved statistics, as the device did */
    ref_bn_backward(mode, ndim, shape, x, dy, scale, eps, got + 2 * g, got + 3 * g, rdx, rdscale, rdbias);
    double out_tol = dt == CLNORM_F16 ? 2e-3 : 1e-4; /* y and dx are stored in the tensor dtype */
    ok = close_enough("y", y, ry, n, out_tol, out_tol, err) &&
         close_enough("running_mean", got, rrm, g, 1e-6, 1e-5, err) &&
         close_enough("running_var", got + g, rrv, g, 1e-6, 1e-5, err) &&
         close_enough("save_mean", got + 2 * g, rmean, g, 1e-6, 1e-5, err) &&
         close_enough("save_invstd", got + 3 * g, rinv, g, 1e-6, 1e-5, err) &&
         close_enough("dx", dx, rdx, n, out_tol, dt == CLNORM_F16 ? 2e-3 : 1e-3, err) &&
         close_enough("dscale", got + 4 * g, rdscale, g, 1e-4, 1e-3, err) &&
         close_enough("dbias", got + 5 * g, rdbias, g, 1e-4, 1e-3, err);
done:
    for (int i = 0; i < 8; ++i)
        if (m[i])
            clReleaseMemObject(m[i]);
    clnorm_tensor_release(&tx);
    clnorm_tensor_release(&tdy);
    clnorm_tensor_release(&ty);
    clnorm_tensor_release(&tdx);
    free(x);
    free(dy);
    free(y);
    free(dx);
    free(p);
    free(r);
    return ok;
}

static const char *shape_str(int ndim, const size_t *shape) {
    static char buf[96];
    int k = snprintf(buf, sizeof buf, "(");
    for (int i = 0; i < ndim; ++i)
        k += snprintf(buf + k, sizeof buf - (size_t)k, "%zu%s", shape[i], i + 1 < ndim ? ", " : ")");
    return buf;
}

/* All cases on one device; prints one line; 1: passed. */
static int check_device(const char *selector) {
    static const struct {
        int ndim;
        size_t shape[5];
    } shapes[] = {{2, {8, 5}}, {3, {3, 4, 17}}, {4, {2, 3, 5, 7}}, {5, {2, 2, 3, 4, 5}}};
    static const clnorm_dtype dtypes[] = {CLNORM_F32, CLNORM_F16};
    static const clnorm_bn_mode modes[] = {CLNORM_BN_SPATIAL, CLNORM_BN_PER_ACTIVATION};
    clnorm_context *ctx = NULL;
    clnorm_status st = clnorm_context_create(selector, &ctx);
    if (st != CLNORM_SUCCESS) {
        printf("  %-6s FAIL: clnorm_context_create: %s: %s\n", selector, clnorm_status_string(st),
               clnorm_last_error());
        return 0;
    }
    int cases = 0;
    check_error err = {""};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
        for (size_t d = 0; d < 2; ++d)
            for (size_t m = 0; m < 2; ++m) {
                if (!check_case(ctx, modes[m], dtypes[d], shapes[s].ndim, shapes[s].shape, &err)) {
                    printf("  %-6s FAIL: %s %s %s: %s\n", selector, dtypes[d] == CLNORM_F16 ? "F16" : "F32",
                           modes[m] == CLNORM_BN_SPATIAL ? "SPATIAL" : "PER_ACTIVATION",
                           shape_str(shapes[s].ndim, shapes[s].shape), err.msg);
                    clnorm_context_destroy(ctx);
                    return 0;
                }
                ++cases;
            }
    printf("  %-6s ok (%d cases: training forward + backward, F32 and F16, SPATIAL and PER_ACTIVATION) %s\n",
           selector, cases, clnorm_context_device_name(ctx));
    clnorm_context_destroy(ctx);
    return 1;
}

/* ---- kernel cache ----------------------------------------------------------------------------------------- */

/* the on-disk kernel cache a context would use (the folder, or why it is off) and the kernel source folder */
static void print_cache(const char *selector) {
    clnorm_context *ctx = NULL;
    if (clnorm_context_create(selector, &ctx) == CLNORM_SUCCESS) {
        const char *dir = clnorm_context_cache_dir(ctx);
        if (dir)
            printf("\nkernel cache: %s\n", dir);
        else
            printf("\nkernel cache: %s (kernels are compiled from source in every process)\n",
                   clnorm_context_cache_status(ctx));
        clnorm_context_destroy(ctx);
    }
    const char *kdir = getenv("CLNORM_KERNEL_DIR");
    if (kdir && *kdir)
        printf("kernel sources: CLNORM_KERNEL_DIR=%s (trusted developer input: used only if the folder and its files "
               "are the effective user's and not writable by group or others)\n",
               kdir);
}

/* ---- main ------------------------------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f, "usage: clnorm-info [--check] [SELECTOR] | --version\n"
               "  Lists the OpenCL devices with the selector strings clnorm_context_create accepts.\n"
               "  --check   build the kernels and run a small BatchNorm on each device (or only on the one\n"
               "            SELECTOR picks: \"P:D\" or a case-insensitive substring of the name) against a\n"
               "            host reference in double; exit status 1 if any fails.\n"
               "  --version print the library and header versions and exit.\n"
               "  Exit status 1 also when $CLNORM_DEVICE is set and matches no device.\n");
}

int main(int argc, char **argv) {
    int check = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--check") == 0)
            check = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            unsigned v = clnorm_version();
            printf("clnorm-info %u.%u.%u (header %d.%d.%d)\n", v / 10000, v / 100 % 100, v % 100, CLNORM_VERSION_MAJOR,
                   CLNORM_VERSION_MINOR, CLNORM_VERSION_PATCH);
            return 0;
        } else if (argv[i][0] != '-' && !only)
            only = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    unsigned v = clnorm_version();
    printf("clnorm %u.%u.%u (header %d.%d.%d)\n", v / 10000, v / 100 % 100, v % 100, CLNORM_VERSION_MAJOR,
           CLNORM_VERSION_MINOR, CLNORM_VERSION_PATCH);

    /* which device the default selection and $CLNORM_DEVICE pick */
    const char *env = getenv("CLNORM_DEVICE");
    char *env_copy = env && *env ? strdup(env) : NULL;
    cl_device_id env_pick = NULL, default_pick = NULL;
    if (env_copy) {
        env_pick = pick(NULL);
        unsetenv("CLNORM_DEVICE");
        default_pick = pick(NULL);
        setenv("CLNORM_DEVICE", env_copy, 1);
    } else {
        default_pick = pick(NULL);
    }

    cl_device_id only_pick = only ? pick(only) : NULL; /* --check SELECTOR: the device clnorm picks for it */
    cl_platform_id plats[MAX_PLATFORMS];
    cl_uint np = 0;
    if (clGetPlatformIDs(MAX_PLATFORMS, plats, &np) != CL_SUCCESS || np == 0) {
        printf("no OpenCL platform found (is an ICD such as pocl-opencl-icd installed in /etc/OpenCL/vendors?)\n");
        free(env_copy);
        return 1;
    }
    if (np > MAX_PLATFORMS)
        np = MAX_PLATFORMS;
    int devices = 0, failures = 0, checked = 0;
    char (*selectors)[32] = malloc(sizeof(char[32]) * MAX_PLATFORMS * MAX_DEVICES);
    if (!selectors) {
        free(env_copy);
        return 1;
    }
    for (cl_uint p = 0; p < np; ++p) {
        char *pname = plat_string(plats[p], CL_PLATFORM_NAME), *pver = plat_string(plats[p], CL_PLATFORM_VERSION);
        printf("\nplatform %u: %s (%s)\n", p, pname ? pname : "?", pver ? pver : "?");
        cl_device_id devs[MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd) != CL_SUCCESS)
            nd = 0;
        if (nd > MAX_DEVICES)
            nd = MAX_DEVICES;
        if (nd == 0)
            printf("  (no devices)\n");
        for (cl_uint d = 0; d < nd; ++d) {
            char *dname = dev_string(devs[d], CL_DEVICE_NAME), *cver = dev_string(devs[d], CL_DEVICE_OPENCL_C_VERSION),
                 *ext = dev_string(devs[d], CL_DEVICE_EXTENSIONS), *drv = dev_string(devs[d], CL_DRIVER_VERSION);
            cl_device_type type = 0;
            cl_ulong gmem = 0, amax = 0;
            cl_uint units = 0;
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            clGetDeviceInfo(devs[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gmem, &gmem, NULL);
            clGetDeviceInfo(devs[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof amax, &amax, NULL);
            clGetDeviceInfo(devs[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
            printf("  %u:%u  \"%s %s\"%s%s\n", p, d, pname ? pname : "", dname ? dname : "",
                   devs[d] == default_pick ? "  [default]" : "", devs[d] == env_pick ? "  [$CLNORM_DEVICE]" : "");
            printf("        type %s, %u compute units, ", type_name(type), units);
            print_bytes("global memory", gmem);
            print_bytes(", max alloc", amax);
            printf("\n        %s, driver %s, cl_khr_fp16 %s, cl_khr_fp64 %s\n", cver ? cver : "?", drv ? drv : "?",
                   has_word(ext, "cl_khr_fp16") ? "yes" : "no", has_word(ext, "cl_khr_fp64") ? "yes" : "no");
            if (!only || devs[d] == only_pick)
                snprintf(selectors[checked++], sizeof selectors[0], "%u:%u", p, d);
            ++devices;
            free(dname);
            free(cver);
            free(ext);
            free(drv);
        }
        free(pname);
        free(pver);
    }
    int env_bad = env_copy && !env_pick;
    if (env_copy)
        printf("\n$CLNORM_DEVICE=\"%s\"%s\n", env_copy, env_pick ? "" : ": matches no device (exit status 1)");
    if (!default_pick)
        printf("\nclnorm_context_create(NULL) finds no device: %s\n", clnorm_last_error());
    if (devices == 0)
        printf("\nno OpenCL device found\n");
    print_cache(only);
    if (check) {
        printf("\ncheck (host reference in double):\n");
        if (checked == 0) {
            printf("  no device matches \"%s\": %s\n", only ? only : "", clnorm_last_error());
            failures = 1;
        }
        for (int i = 0; i < checked; ++i)
            failures += !check_device(selectors[i]);
        printf("%s\n", failures ? "check FAILED" : "check passed");
    }
    free(selectors);
    free(env_copy);
    return (failures || devices == 0 || env_bad) ? 1 : 0;
}
