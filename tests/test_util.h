/*
 * Shared helpers of the clnorm cmocka suites: one context per group, seeded random data,
 * tolerance comparison against the double reference, NaN poisoning and sentinel checks.
 *
 * Environment:
 *   CLNORM_TEST_DEVICE          device selector for clnorm_context_create (default "pocl")
 *   CLNORM_TEST_REQUIRE_DEVICE  1: a missing device fails the suite instead of skipping (exit 77)
 *   CLNORM_TEST_SEED            base seed (default: from the clock); every case derives its own seed
 *                               from the base and the case label, so one case reproduces alone.
 *   CLNORM_TEST_VERBOSE         1: print every case label as it starts.
 *   CLNORM_TEST_FILTER          cmocka test-name pattern (e.g. "test_backward*"): run only those tests.
 */
#ifndef CLNORM_TEST_UTIL_H
#define CLNORM_TEST_UTIL_H

/* cmocka needs these before its header */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "clnorm.h"

/* ---- context ------------------------------------------------------------------------- */
void tu_main_init(void);              /* call first in main(): applies CLNORM_TEST_FILTER */
extern clnorm_context *tu_ctx;        /* the group's context */
int tu_group_setup(void **state);     /* creates tu_ctx; exit(77) if no device (unless required) */
int tu_group_teardown(void **state);  /* destroys tu_ctx */
const char *tu_device_selector(void); /* $CLNORM_TEST_DEVICE or "pocl" */
/* clnorm_context_create with the test selector; returns the status (no skip logic). */
clnorm_status tu_context_create(clnorm_context **out);
/* sets (value != NULL) or unsets an environment variable, returning a copy of its previous value (or NULL) for
 * tu_restore_env, which puts it back and frees the copy */
char *tu_swap_env(const char *name, const char *value);
void tu_restore_env(const char *name, char *saved);
/* tu_context_create with name=value in the environment (NULL: unset) for the call only: the knobs read at context
 * creation */
clnorm_status tu_context_create_env(const char *name, const char *value, clnorm_context **out);

/* ---- cases and random numbers -------------------------------------------------------- */
/* Start a case: derives the case seed from the base seed and the label, seeds the RNG. */
void tu_case(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
const char *tu_case_label(void);
uint64_t tu_case_seed(void);
uint64_t tu_base_seed(void);
uint64_t tu_rand_u64(void);
double tu_uniform(void);        /* [0, 1) */
double tu_normal(void);         /* N(0, 1) */
size_t tu_rand_index(size_t n); /* [0, n) */
void tu_fill_normal(float *a, size_t n, double mean, double stddev);
void tu_fill_uniform(float *a, size_t n, double lo, double hi);

/* ---- host memory ---------------------------------------------------------------------- */
void *tu_malloc(size_t bytes); /* fails the test on OOM; never returns NULL */
float *tu_floats(size_t n);
double *tu_doubles(size_t n);

/* ---- device buffers (all blocking) ---------------------------------------------------- */
cl_mem tu_buffer(size_t bytes); /* on tu_ctx */
cl_mem tu_buffer_on(clnorm_context *ctx, size_t bytes);
cl_mem tu_buffer_from(const float *host, size_t n); /* n floats */
void tu_write(cl_mem b, size_t offset, const void *host, size_t bytes);
void tu_read(cl_mem b, size_t offset, void *host, size_t bytes);
void tu_poison(cl_mem b, size_t offset, size_t bytes); /* fills with quiet NaN 0x7fc00000 */
void tu_release(cl_mem *b);                            /* NULL-safe, sets *b = NULL */
void tu_finish(void);                                  /* clnorm_context_finish(tu_ctx), asserted */

#define TU_NAN_BITS 0x7fc00000u
/* Fills bytes of b with a recognisable pattern derived from tag; tu_sentinel_check asserts it is intact. */
void tu_sentinel_fill(cl_mem b, size_t bytes, uint32_t tag);
int tu_sentinel_intact(cl_mem b, size_t bytes, uint32_t tag, const char *what);
/* Checks that [offset, offset+bytes) of b still holds NaN poison bit-for-bit (guard regions). */
int tu_poison_intact(cl_mem b, size_t offset, size_t bytes, const char *what);
/* Bitwise equality of a buffer range with host memory. */
int tu_bits_equal(cl_mem b, size_t offset, const void *host, size_t bytes, const char *what);

/* ---- comparison ----------------------------------------------------------------------- */
/* |got - ref| <= atol + rtol * |ref| for every element (NaN in got fails unless ref is NaN too).
   On failure prints the case label and seed, the number of failures, the worst index, got and
   expected, and returns 0. */
int tu_compare(const char *what, const float *got, const double *ref, size_t n, double atol, double rtol);
/* tu_compare of the first n floats of a device buffer (a parameter or statistics vector) */
int tu_compare_param(const char *what, cl_mem b, const double *ref, size_t n, double atol, double rtol);
int tu_compare_ff(const char *what, const float *got, const float *ref, size_t n, double atol, double rtol);

/* SEMANTICS.md tolerances */
#define TU_FWD_ATOL 1e-5
#define TU_FWD_RTOL 1e-4
#define TU_BWD_ATOL 1e-4
#define TU_BWD_RTOL 1e-3
#define TU_STAT_RTOL 1e-5
#define TU_STAT_ATOL 1e-6

/* ---- status assertions ---------------------------------------------------------------- */
void tu_expect_status(clnorm_status got, clnorm_status want, const char *expr, const char *file, int line);
/* Like tu_expect_status for an error, plus clnorm_last_error() must be non-empty. */
void tu_expect_error(clnorm_status got, clnorm_status want, const char *expr, const char *file, int line);
#define TU_OK(call) tu_expect_status((call), CLNORM_SUCCESS, #call, __FILE__, __LINE__)
#define TU_STATUS(want, call) tu_expect_status((call), (want), #call, __FILE__, __LINE__)
#define TU_ERR(want, call) tu_expect_error((call), (want), #call, __FILE__, __LINE__)
#define TU_TRUE(cond)                                                                                                  \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            tu_fail_at(__FILE__, __LINE__, "%s", #cond);                                                               \
    } while (0)
void tu_fail_at(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- shared test types ------------------------------------------------------------------- */
/* A tensor shape in (batch, maps, d, h, w) order, the order of clnorm_tensor.shape whatever the layout. */
typedef struct tu_shape {
    int ndim;
    size_t shape[CLNORM_MAX_DIMS];
} tu_shape;
#define TU_COUNT(a) (sizeof(a) / sizeof((a)[0]))
const char *tu_mode_name(clnorm_bn_mode m);  /* "SPATIAL", "PER_ACTIVATION" */
const char *tu_layout_name(clnorm_layout l); /* "NCHW", "NHWC" */
/* (B, C, S) of a shape: batch, maps, and the product of the spatial dimensions (1 for ndim 2) */
void tu_bcs(const tu_shape *s, size_t *B, size_t *C, size_t *S);

/* ---- the refusal fixture: every buffer a call could write, sentinel-filled before it and compared bit for bit
 * after it (a refused call must write nothing) ---------------------------------------------------------------- */
#define TU_FIXTURE_MAX 16
typedef struct tu_fixture {
    int n;
    cl_mem buf[TU_FIXTURE_MAX];
    size_t bytes[TU_FIXTURE_MAX];
    const char *name[TU_FIXTURE_MAX];
    uint32_t tag; /* sentinel tag of buffer i: tag + i */
} tu_fixture;
void tu_fixture_init(tu_fixture *f, uint32_t tag);
int tu_fixture_add(tu_fixture *f, const char *name, size_t bytes); /* a buffer on tu_ctx; returns its index */
void tu_fixture_fill(const tu_fixture *f);                         /* sentinels into every buffer */
/* finishes the queue, then fails the test at file:line, naming `what` and each changed buffer, unless every
 * buffer still holds its sentinels */
void tu_fixture_check_at(const tu_fixture *f, const char *what, const char *file, int line);
#define tu_fixture_check(f, what) tu_fixture_check_at((f), (what), __FILE__, __LINE__)
void tu_fixture_free(tu_fixture *f);

/* ---- shapes --------------------------------------------------------------------------- */
size_t tu_numel(int ndim, const size_t *shape);
/* A tensor view with a given byte offset on an existing buffer. */
clnorm_tensor tu_view(cl_mem b, size_t offset, int ndim, const size_t *shape);
const char *tu_shape_str(int ndim, const size_t *shape); /* static buffer, rotating */


/* ---- storage types and layouts (F16 / BF16 host conversions, round to nearest even) ----------- */
size_t tu_esize(clnorm_dtype dt);             /* bytes per element: 4, 2, 2 */
const char *tu_dtype_name(clnorm_dtype dt);   /* "F32", "F16", "BF16" */
uint16_t tu_f32_to_f16(float f);              /* IEEE binary16, RNE, overflow to Inf, NaN stays a quiet NaN */
float tu_f16_to_f32(uint16_t h);              /* exact */
uint16_t tu_f32_to_bf16(float f);             /* the high half of the float, RNE; NaN stays a quiet NaN */
float tu_bf16_to_f32(uint16_t h);             /* exact */
float tu_round_storage(clnorm_dtype dt, float f); /* f rounded to the storage type and back (F32: f) */
/* n floats to / from storage bytes */
void tu_encode(clnorm_dtype dt, const float *src, void *dst, size_t n);
void tu_decode(clnorm_dtype dt, const void *src, float *dst, size_t n);
/* one unit in the last place of the storage type at |v| (subnormal spacing below the smallest normal) */
double tu_ulp(clnorm_dtype dt, double v);
/* (B, C, S) NCHW <-> NHWC ((B, S, C)) permutation of floats; src and dst must not overlap */
void tu_nchw_to_nhwc(const float *src, float *dst, size_t B, size_t C, size_t S);
void tu_nhwc_to_nchw(const float *src, float *dst, size_t B, size_t C, size_t S);
/* tu_compare with one storage ulp of the reference added to every element's tolerance */
int tu_compare_storage(const char *what, const float *got, const double *ref, size_t n, clnorm_dtype dt, double atol,
                       double rtol);

#endif
