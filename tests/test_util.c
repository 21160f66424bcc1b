#define _POSIX_C_SOURCE 200809L /* setenv, strdup */
#include "test_util.h"
#include "test_seed.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

clnorm_context *tu_ctx = NULL;

/* ---- context ------------------------------------------------------------------------- */
const char *tu_device_selector(void) {
    const char *s = getenv("CLNORM_TEST_DEVICE");
    return (s && *s) ? s : "pocl";
}

clnorm_status tu_context_create(clnorm_context **out) {
    *out = NULL;
    return clnorm_context_create(tu_device_selector(), out);
}

char *tu_swap_env(const char *name, const char *value) {
    const char *old = getenv(name);
    char *saved = old ? strdup(old) : NULL;
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
    return saved;
}

void tu_restore_env(const char *name, char *saved) {
    if (saved)
        setenv(name, saved, 1);
    else
        unsetenv(name);
    free(saved);
}

clnorm_status tu_context_create_env(const char *name, const char *value, clnorm_context **out) {
    char *saved = tu_swap_env(name, value);
    clnorm_status st = tu_context_create(out);
    tu_restore_env(name, saved);
    return st;
}

void tu_main_init(void) {
    const char *f = getenv("CLNORM_TEST_FILTER");
    if (f && *f)
        cmocka_set_test_filter(f);
}

static int require_device(void) {
    const char *s = getenv("CLNORM_TEST_REQUIRE_DEVICE");
    return s && *s && strcmp(s, "0") != 0;
}

int tu_group_setup(void **state) {
    (void)state;
    clnorm_status st = tu_context_create(&tu_ctx);
    if (st != CLNORM_SUCCESS) {
        fprintf(stderr, "clnorm tests: no context for device selector \"%s\": %s: %s\n", tu_device_selector(),
                clnorm_status_string(st), clnorm_last_error());
        if (st == CLNORM_ERROR_NO_DEVICE && !require_device()) {
            fprintf(stderr, "clnorm tests: skipping (set CLNORM_TEST_REQUIRE_DEVICE=1 to fail instead)\n");
            fflush(stderr);
            exit(77);
        }
        return -1;
    }
    fprintf(stderr, "clnorm tests: device \"%s\", base seed CLNORM_TEST_SEED=%llu, CLNORM_STRATEGY=%s\n",
            clnorm_context_device_name(tu_ctx), (unsigned long long)tu_base_seed(),
            getenv("CLNORM_STRATEGY") ? getenv("CLNORM_STRATEGY") : "(default)");
    return 0;
}

int tu_group_teardown(void **state) {
    (void)state;
    clnorm_context_destroy(tu_ctx);
    tu_ctx = NULL;
    return 0;
}

/* ---- seeds and RNG (splitmix64 seeding a xoshiro256**) ------------------------------- */
static uint64_t g_base_seed;
static int g_base_seed_set;
static uint64_t g_case_seed;
static char g_case_label[256] = "(no case)";
static uint64_t g_s[4];
static int g_have_spare;
static double g_spare;

uint64_t tu_base_seed(void) {
    if (!g_base_seed_set) {
        g_base_seed = ts_seed_from_env();
        g_base_seed_set = 1;
    }
    return g_base_seed;
}

static void rng_seed(uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        g_s[i] = ts_splitmix64(&x);
    g_have_spare = 0;
}

void tu_case(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_case_label, sizeof g_case_label, fmt, ap);
    va_end(ap);
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the label */
    for (const char *p = g_case_label; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint64_t x = tu_base_seed() ^ h;
    g_case_seed = ts_splitmix64(&x);
    rng_seed(g_case_seed);
    const char *v = getenv("CLNORM_TEST_VERBOSE");
    if (v && *v && strcmp(v, "0") != 0) {
        fprintf(stderr, "  case: %s (seed %llu)\n", g_case_label, (unsigned long long)g_case_seed);
        fflush(stderr);
    }
}

const char *tu_case_label(void) {
    return g_case_label;
}
uint64_t tu_case_seed(void) {
    return g_case_seed;
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t tu_rand_u64(void) {
    uint64_t r = rotl(g_s[1] * 5, 7) * 9, t = g_s[1] << 17;
    g_s[2] ^= g_s[0];
    g_s[3] ^= g_s[1];
    g_s[1] ^= g_s[2];
    g_s[0] ^= g_s[3];
    g_s[2] ^= t;
    g_s[3] = rotl(g_s[3], 45);
    return r;
}

double tu_uniform(void) {
    return (double)(tu_rand_u64() >> 11) * (1.0 / 9007199254740992.0);
}

double tu_normal(void) {
    if (g_have_spare) {
        g_have_spare = 0;
        return g_spare;
    }
    double u, v, s;
    do {
        u = 2.0 * tu_uniform() - 1.0;
        v = 2.0 * tu_uniform() - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double m = sqrt(-2.0 * log(s) / s);
    g_spare = v * m;
    g_have_spare = 1;
    return u * m;
}

size_t tu_rand_index(size_t n) {
    return n ? (size_t)(tu_rand_u64() % n) : 0;
}

void tu_fill_normal(float *a, size_t n, double mean, double stddev) {
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(mean + stddev * tu_normal());
}

void tu_fill_uniform(float *a, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(lo + (hi - lo) * tu_uniform());
}

/* ---- failures ---------------------------------------------------------------------------- */
void tu_fail_at(const char *file, int line, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_error("FAILED: %s\n  case: %s\n  reproduce with CLNORM_TEST_SEED=%llu (case seed %llu)\n", msg, g_case_label,
                (unsigned long long)tu_base_seed(), (unsigned long long)g_case_seed);
    _fail(file, line);
}

static void print_case(void) {
    print_error("  case: %s\n  reproduce with CLNORM_TEST_SEED=%llu (case seed %llu)\n", g_case_label,
                (unsigned long long)tu_base_seed(), (unsigned long long)g_case_seed);
}

void tu_expect_status(clnorm_status got, clnorm_status want, const char *expr, const char *file, int line) {
    if (got != want)
        tu_fail_at(file, line, "%s returned %d (%s), expected %d (%s); last error: \"%s\"", expr, (int)got,
                   clnorm_status_string(got), (int)want, clnorm_status_string(want), clnorm_last_error());
}

void tu_expect_error(clnorm_status got, clnorm_status want, const char *expr, const char *file, int line) {
    tu_expect_status(got, want, expr, file, line);
    const char *e = clnorm_last_error();
    if (e == NULL || e[0] == '\0')
        tu_fail_at(file, line, "%s returned %s but clnorm_last_error() is empty", expr, clnorm_status_string(got));
}

/* ---- host memory ------------------------------------------------------------------------ */
void *tu_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        tu_fail_at(__FILE__, __LINE__, "out of host memory (%zu bytes)", bytes);
    return p;
}
float *tu_floats(size_t n) {
    return (float *)tu_malloc(n * sizeof(float));
}
double *tu_doubles(size_t n) {
    return (double *)tu_malloc(n * sizeof(double));
}

/* ---- device buffers ----------------------------------------------------------------------- */
static const char *cl_err_name(cl_int e) {
    switch (e) {
    case CL_SUCCESS:
        return "CL_SUCCESS";
    case CL_INVALID_VALUE:
        return "CL_INVALID_VALUE";
    case CL_INVALID_MEM_OBJECT:
        return "CL_INVALID_MEM_OBJECT";
    case CL_INVALID_BUFFER_SIZE:
        return "CL_INVALID_BUFFER_SIZE";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
        return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case CL_OUT_OF_RESOURCES:
        return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY:
        return "CL_OUT_OF_HOST_MEMORY";
    case CL_INVALID_CONTEXT:
        return "CL_INVALID_CONTEXT";
    case CL_INVALID_COMMAND_QUEUE:
        return "CL_INVALID_COMMAND_QUEUE";
    default:
        return "CL_?";
    }
}

cl_mem tu_buffer_on(clnorm_context *ctx, size_t bytes) {
    cl_int err = CL_SUCCESS;
    cl_mem b = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &err);
    if (err != CL_SUCCESS || !b)
        tu_fail_at(__FILE__, __LINE__, "clCreateBuffer(%zu) failed: %d %s", bytes, (int)err, cl_err_name(err));
    return b;
}

cl_mem tu_buffer(size_t bytes) {
    return tu_buffer_on(tu_ctx, bytes);
}

void tu_write(cl_mem b, size_t offset, const void *host, size_t bytes) {
    if (!bytes)
        return;
    cl_int err = clEnqueueWriteBuffer(clnorm_context_queue(tu_ctx), b, CL_TRUE, offset, bytes, host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        tu_fail_at(__FILE__, __LINE__, "clEnqueueWriteBuffer failed: %d %s", (int)err, cl_err_name(err));
}

void tu_read(cl_mem b, size_t offset, void *host, size_t bytes) {
    if (!bytes)
        return;
    cl_int err = clEnqueueReadBuffer(clnorm_context_queue(tu_ctx), b, CL_TRUE, offset, bytes, host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        tu_fail_at(__FILE__, __LINE__, "clEnqueueReadBuffer failed: %d %s", (int)err, cl_err_name(err));
}

cl_mem tu_buffer_from(const float *host, size_t n) {
    cl_mem b = tu_buffer(n * sizeof(float));
    tu_write(b, 0, host, n * sizeof(float));
    return b;
}

void tu_poison(cl_mem b, size_t offset, size_t bytes) {
    size_t n = bytes / 4;
    uint32_t *p = (uint32_t *)tu_malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        p[i] = TU_NAN_BITS;
    tu_write(b, offset, p, n * 4);
    free(p);
}

void tu_release(cl_mem *b) {
    if (b && *b) {
        clReleaseMemObject(*b);
        *b = NULL;
    }
}

void tu_finish(void) {
    TU_OK(clnorm_context_finish(tu_ctx));
}

static uint32_t sentinel_word(uint32_t tag, size_t i) {
    uint32_t v = (uint32_t)i * 2654435761u ^ tag ^ 0xA5C3E1F7u;
    /* keep it a finite, odd-looking float that a kernel would never produce by accident */
    return (v & 0x807FFFFFu) | 0x3E000000u;
}

void tu_sentinel_fill(cl_mem b, size_t bytes, uint32_t tag) {
    size_t n = bytes / 4;
    uint32_t *p = (uint32_t *)tu_malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        p[i] = sentinel_word(tag, i);
    tu_write(b, 0, p, n * 4);
    free(p);
}

int tu_sentinel_intact(cl_mem b, size_t bytes, uint32_t tag, const char *what) {
    size_t n = bytes / 4, bad = 0, first = 0;
    uint32_t *p = (uint32_t *)tu_malloc(n * 4);
    tu_read(b, 0, p, n * 4);
    for (size_t i = 0; i < n; i++)
        if (p[i] != sentinel_word(tag, i)) {
            if (!bad)
                first = i;
            bad++;
        }
    if (bad) {
        print_error("%s: %zu of %zu words were modified (first at %zu: 0x%08x, expected 0x%08x)\n", what, bad, n, first,
                    p[first], sentinel_word(tag, first));
        print_case();
    }
    free(p);
    return bad == 0;
}

int tu_poison_intact(cl_mem b, size_t offset, size_t bytes, const char *what) {
    size_t n = bytes / 4, bad = 0, first = 0;
    if (!n)
        return 1;
    uint32_t *p = (uint32_t *)tu_malloc(n * 4);
    tu_read(b, offset, p, n * 4);
    for (size_t i = 0; i < n; i++)
        if (p[i] != TU_NAN_BITS) {
            if (!bad)
                first = i;
            bad++;
        }
    if (bad) {
        print_error("%s: %zu of %zu guard words outside the view were written (first at byte %zu: 0x%08x)\n", what, bad,
                    n, offset + 4 * first, p[first]);
        print_case();
    }
    free(p);
    return bad == 0;
}

int tu_bits_equal(cl_mem b, size_t offset, const void *host, size_t bytes, const char *what) {
    size_t n = bytes / 4, bad = 0, first = 0;
    uint32_t *p = (uint32_t *)tu_malloc(n * 4);
    const uint32_t *h = (const uint32_t *)host;
    tu_read(b, offset, p, n * 4);
    for (size_t i = 0; i < n; i++)
        if (p[i] != h[i]) {
            if (!bad)
                first = i;
            bad++;
        }
    if (bad) {
        print_error("%s: %zu of %zu words differ (first at %zu: 0x%08x, expected 0x%08x)\n", what, bad, n, first,
                    p[first], h[first]);
        print_case();
    }
    free(p);
    return bad == 0;
}

/* ---- comparison --------------------------------------------------------------------------- */
/* dt < 0: no storage ulp added */
static int compare_impl(const char *what, const float *got, const double *ref, size_t n, double atol, double rtol,
                        int dt) {
    size_t bad = 0, worst = 0;
    double worst_excess = -1.0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i];
        double excess;
        if (isnan(r)) {
            excess = isnan(g) ? 0.0 : INFINITY;
        } else if (isinf(r)) {
            excess = (g == r) ? 0.0 : INFINITY;
        } else {
            double d = fabs(g - r), tol = atol + rtol * fabs(r) + (dt >= 0 ? tu_ulp((clnorm_dtype)dt, r) : 0.0);
            excess = (d <= tol) ? 0.0 : (isnan(d) ? INFINITY : d / tol);
        }
        if (excess > 0.0) {
            bad++;
            if (excess > worst_excess) {
                worst_excess = excess;
                worst = i;
            }
        }
    }
    if (bad) {
        print_error("%s: %zu of %zu elements out of tolerance (atol %g, rtol %g); worst at index %zu: got %.9g, "
                    "expected %.9g (diff %.3g)\n",
                    what, bad, n, atol, rtol, worst, (double)got[worst], ref[worst],
                    fabs((double)got[worst] - ref[worst]));
        print_case();
    }
    return bad == 0;
}

int tu_compare(const char *what, const float *got, const double *ref, size_t n, double atol, double rtol) {
    return compare_impl(what, got, ref, n, atol, rtol, -1);
}

int tu_compare_storage(const char *what, const float *got, const double *ref, size_t n, clnorm_dtype dt, double atol,
                       double rtol) {
    return compare_impl(what, got, ref, n, atol, rtol, (int)dt);
}

int tu_compare_ff(const char *what, const float *got, const float *ref, size_t n, double atol, double rtol) {
    double *r = tu_doubles(n);
    for (size_t i = 0; i < n; i++)
        r[i] = ref[i];
    int ok = tu_compare(what, got, r, n, atol, rtol);
    free(r);
    return ok;
}

/* ---- shapes ------------------------------------------------------------------------------- */
size_t tu_numel(int ndim, const size_t *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

clnorm_tensor tu_view(cl_mem b, size_t offset, int ndim, const size_t *shape) {
    clnorm_tensor t = clnorm_tensor_make(b, ndim, shape);
    t.offset = offset;
    return t;
}

const char *tu_shape_str(int ndim, const size_t *shape) {
    static char bufs[4][96];
    static int k;
    char *s = bufs[k++ & 3];
    size_t len = 0;
    s[len++] = '(';
    s[len] = '\0';
    for (int i = 0; i < ndim && len < 80; i++)
        len += (size_t)snprintf(s + len, 96 - len, i ? ", %zu" : "%zu", shape[i]);
    snprintf(s + len, 96 - len, ")");
    return s;
}

/* ---- storage types and layouts -------------------------------------------------------------- */
size_t tu_esize(clnorm_dtype dt) {
    return dt == CLNORM_F32 ? 4 : 2;
}

const char *tu_dtype_name(clnorm_dtype dt) {
    return dt == CLNORM_F32 ? "F32" : dt == CLNORM_F16 ? "F16" : dt == CLNORM_BF16 ? "BF16" : "?";
}

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t tu_f32_to_f16(float f) {
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 (65504 + half an ulp, a tie that goes to the even Inf): Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* normal half (>= 2^-14): drop 13 mantissa bits, round to nearest even */
        uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
    }
    if (a <= 0x33000000u) /* <= 2^-25 (half the smallest subnormal; the tie goes to the even 0) */
        return (uint16_t)sign;
    /* subnormal half: units of 2^-24 */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126u - e; /* 14..24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u)))
        q++;
    return (uint16_t)(sign | q);
}

float tu_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31)
        return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t tu_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if (isnan(f))
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float tu_bf16_to_f32(uint16_t h) {
    return u2f((uint32_t)h << 16);
}

float tu_round_storage(clnorm_dtype dt, float f) {
    switch (dt) {
    case CLNORM_F16: return tu_f16_to_f32(tu_f32_to_f16(f));
    case CLNORM_BF16: return tu_bf16_to_f32(tu_f32_to_bf16(f));
    default: return f;
    }
}

void tu_encode(clnorm_dtype dt, const float *src, void *dst, size_t n) {
    if (dt == CLNORM_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    uint16_t *d = (uint16_t *)dst;
    for (size_t i = 0; i < n; i++)
        d[i] = dt == CLNORM_F16 ? tu_f32_to_f16(src[i]) : tu_f32_to_bf16(src[i]);
}

void tu_decode(clnorm_dtype dt, const void *src, float *dst, size_t n) {
    if (dt == CLNORM_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    const uint16_t *s = (const uint16_t *)src;
    for (size_t i = 0; i < n; i++)
        dst[i] = dt == CLNORM_F16 ? tu_f16_to_f32(s[i]) : tu_bf16_to_f32(s[i]);
}

double tu_ulp(clnorm_dtype dt, double v) {
    int mant = dt == CLNORM_F16 ? 10 : dt == CLNORM_BF16 ? 7 : 23; /* stored mantissa bits */
    int emin = dt == CLNORM_F16 ? -14 : -126;                      /* exponent of the smallest normal */
    int e = emin;
    if (isfinite(v) && v != 0.0) {
        frexp(fabs(v), &e); /* |v| = f * 2^e, f in [0.5, 1): floor(log2 |v|) = e - 1 */
        e -= 1;
        if (e < emin)
            e = emin;
    }
    return ldexp(1.0, e - mant);
}

void tu_nchw_to_nhwc(const float *src, float *dst, size_t B, size_t C, size_t S) {
    for (size_t b = 0; b < B; b++)
        for (size_t c = 0; c < C; c++)
            for (size_t s = 0; s < S; s++)
                dst[(b * S + s) * C + c] = src[(b * C + c) * S + s];
}

void tu_nhwc_to_nchw(const float *src, float *dst, size_t B, size_t C, size_t S) {
    for (size_t b = 0; b < B; b++)
        for (size_t c = 0; c < C; c++)
            for (size_t s = 0; s < S; s++)
                dst[(b * C + c) * S + s] = src[(b * S + s) * C + c];
}

/* ---- shared test types --------------------------------------------------------------------------- */
const char *tu_mode_name(clnorm_bn_mode m) {
    return m == CLNORM_BN_SPATIAL ? "SPATIAL" : "PER_ACTIVATION";
}

const char *tu_layout_name(clnorm_layout l) {
    return l == CLNORM_NCHW ? "NCHW" : "NHWC";
}

void tu_bcs(const tu_shape *s, size_t *B, size_t *C, size_t *S) {
    *B = s->shape[0];
    *C = s->shape[1];
    *S = 1;
    for (int i = 2; i < s->ndim; i++)
        *S *= s->shape[i];
}

/* ---- the refusal fixture ------------------------------------------------------------------------------ */
void tu_fixture_init(tu_fixture *f, uint32_t tag) {
    memset(f, 0, sizeof *f);
    f->tag = tag;
}

int tu_fixture_add(tu_fixture *f, const char *name, size_t bytes) {
    if (f->n >= TU_FIXTURE_MAX)
        tu_fail_at(__FILE__, __LINE__, "tu_fixture_add: more than %d buffers", TU_FIXTURE_MAX);
    int i = f->n++;
    f->buf[i] = tu_buffer(bytes);
    f->bytes[i] = bytes;
    f->name[i] = name;
    tu_sentinel_fill(f->buf[i], bytes, f->tag + (uint32_t)i);
    return i;
}

void tu_fixture_fill(const tu_fixture *f) {
    for (int i = 0; i < f->n; i++)
        tu_sentinel_fill(f->buf[i], f->bytes[i], f->tag + (uint32_t)i);
}

void tu_fixture_check_at(const tu_fixture *f, const char *what, const char *file, int line) {
    tu_expect_status(clnorm_context_finish(tu_ctx), CLNORM_SUCCESS, "clnorm_context_finish(tu_ctx)", file, line);
    int ok = 1;
    for (int i = 0; i < f->n; i++) {
        char label[256];
        snprintf(label, sizeof label, "%s: buffer %s", what, f->name[i]);
        ok &= tu_sentinel_intact(f->buf[i], f->bytes[i], f->tag + (uint32_t)i, label);
    }
    if (!ok)
        tu_fail_at(file, line, "%s: a refused call wrote to a buffer", what);
}

void tu_fixture_free(tu_fixture *f) {
    for (int i = 0; i < f->n; i++)
        tu_release(&f->buf[i]);
    f->n = 0;
}

int tu_compare_param(const char *what, cl_mem b, const double *ref, size_t n, double atol, double rtol) {
    float *got = tu_floats(n);
    tu_read(b, 0, got, n * 4);
    int ok = tu_compare(what, got, ref, n, atol, rtol);
    free(got);
    return ok;
}
