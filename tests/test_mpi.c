/*
 * clnorm_mpi on every rank of MPI_COMM_WORLD (run by ctest through mpirun -np 1..4), each rank with its own
 * context (CLNORM_TEST_DEVICE, default "pocl"). Every rank generates the whole concatenated batch from one seed
 * and keeps its slice (batches uneven, rank 1 empty), so each rank checks its results against the double reference
 * of the concatenated batch (tests/ref_bn.c):
 *   - clnorm_bn_forward_training_mpi / clnorm_bn_backward_mpi, both modes, F32 and F16, NCHW and NHWC, saved and
 *     recomputed statistics; running / saved statistics and dscale / dbias bit-identical on every rank (compared
 *     through MPI) and between two runs;
 *   - the layer (clnorm_batchnorm_forward_mpi / _backward_mpi) over 12 steps against a single-process layer on the
 *     concatenated batch, its fields bit-identical on every rank;
 *   - refusals on one rank (maps that differ, a buffer too small, a dx of the wrong shape) and a total count below
 *     2 come back on every rank with the same status, a message naming the rank, and nothing written.
 * Exit status 0 when every check passed on every rank, 1 otherwise, 77 when there is no device (skip).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm_mpi.h"
#include "ref_bn.h"
#include "test_seed.h"

static int rank, nranks, failures;
static clnorm_context *ctx;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            ++failures;                                                                                                \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", rank, __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
        }                                                                                                              \
    } while (0)
#define OK(call)                                                                                                       \
    do {                                                                                                               \
        clnorm_status st_ = (call);                                                                                    \
        CHECK(st_ == CLNORM_SUCCESS, "%s: %s", clnorm_status_string(st_), clnorm_last_error());                        \
    } while (0)

/* ---- data ---------------------------------------------------------------------------------------------- */
static uint64_t rng;
/* The run's base seed: $CLNORM_TEST_SEED, else drawn from the clock on rank 0; broadcast so that every rank draws
 * the same batch; printed by rank 0. Each case seeds rng with seed_of(its own number). */
static uint64_t base_seed;
static uint64_t seed_of(uint64_t v) {
    uint64_t x = base_seed ^ (v << 32);
    return ts_splitmix64(&x);
}
static double uniform(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double normal(void) {
    double u = uniform(), v = uniform();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

/* float <-> IEEE half (round to nearest even; normal range is all the tests use, plus zero) */
static uint16_t f2h(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u, e = (u >> 23) & 0xffu, m = u & 0x7fffffu;
    if (e == 0xff)
        return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
    int he = (int)e - 127 + 15;
    if (he >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (he <= 0) { /* subnormal half */
        if (he < -10)
            return (uint16_t)sign;
        m |= 0x800000u;
        int shift = 14 - he;
        uint32_t h = m >> shift, rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1)))
            ++h;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)he << 10) | (m >> 13), rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
        ++h;
    return (uint16_t)(sign | h);
}
static float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (e == 31)
        u = sign | 0x7f800000u | (m << 13);
    else
        u = sign | ((e - 15 + 127) << 23) | (m << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct {
    clnorm_bn_mode mode;
    clnorm_dtype dt;
    clnorm_layout lay;
    int ndim;
    size_t rest[3]; /* maps, then spatial dims */
} cfg_t;

static size_t rest_numel(const cfg_t *c) {
    size_t n = 1;
    for (int i = 0; i < c->ndim - 1; ++i)
        n *= c->rest[i];
    return n;
}

/* batches per rank: uneven, rank 1 empty */
static size_t batch_of(int r) {
    return r == 1 ? 0 : (size_t)(2 + r);
}

/* a device tensor of b rows of the case's shape from NCHW floats (NULL: 0xFF bytes = NaN), NULL buffer when b == 0 */
static clnorm_tensor make_tensor(const cfg_t *c, size_t b, const float *nchw) {
    size_t shape[5] = {b, c->rest[0], c->rest[1], c->rest[2], 1};
    clnorm_tensor t = clnorm_tensor_make(NULL, c->ndim, shape);
    t.dtype = c->dt;
    t.layout = c->lay;
    size_t n = b * rest_numel(c), es = c->dt == CLNORM_F32 ? 4 : 2, C = c->rest[0], S = rest_numel(c) / C;
    if (!n)
        return t;
    unsigned char *raw = malloc(n * es);
    for (size_t i = 0; i < n; ++i) {
        size_t src = i; /* NHWC element i = (bb, s, cc) comes from NCHW (bb, cc, s) */
        if (c->lay == CLNORM_NHWC) {
            size_t bb = i / (S * C), s = (i / C) % S, cc = i % C;
            src = (bb * C + cc) * S + s;
        }
        if (!nchw) {
            memset(raw + i * es, 0xff, es);
        } else if (c->dt == CLNORM_F32) {
            memcpy(raw + i * 4, &nchw[src], 4);
        } else {
            uint16_t h = f2h(nchw[src]);
            memcpy(raw + i * 2, &h, 2);
        }
    }
    cl_int err;
    t.buffer =
        clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * es, raw, &err);
    CHECK(err == CL_SUCCESS, "clCreateBuffer %d", (int)err);
    free(raw);
    return t;
}

static void read_tensor(const cfg_t *c, const clnorm_tensor *t, float *nchw) {
    size_t n = t->shape[0] * rest_numel(c), es = c->dt == CLNORM_F32 ? 4 : 2, C = c->rest[0], S = rest_numel(c) / C;
    if (!n)
        return;
    unsigned char *raw = malloc(n * es);
    OK(clnorm_tensor_read(ctx, t, raw));
    for (size_t i = 0; i < n; ++i) {
        size_t dst = i;
        if (c->lay == CLNORM_NHWC) {
            size_t bb = i / (S * C), s = (i / C) % S, cc = i % C;
            dst = (bb * C + cc) * S + s;
        }
        if (c->dt == CLNORM_F32) {
            memcpy(&nchw[dst], raw + i * 4, 4);
        } else {
            uint16_t h;
            memcpy(&h, raw + i * 2, 2);
            nchw[dst] = h2f(h);
        }
    }
    free(raw);
}

static cl_mem vec(const float *host, size_t n) {
    cl_int err;
    float *tmp = NULL;
    if (!host) {
        tmp = malloc(n * 4);
        for (size_t i = 0; i < n; ++i)
            tmp[i] = NAN;
    }
    cl_mem m = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * 4,
                              host ? (void *)host : (void *)tmp, &err);
    CHECK(err == CL_SUCCESS, "clCreateBuffer %d", (int)err);
    free(tmp);
    return m;
}
static void vec_read(cl_mem m, float *host, size_t n) {
    cl_int err = clEnqueueReadBuffer(clnorm_context_queue(ctx), m, CL_TRUE, 0, n * 4, host, 0, NULL, NULL);
    CHECK(err == CL_SUCCESS, "read %d", (int)err);
}
static void release(cl_mem *m) {
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

/* |got - ref| <= atol + rtol |ref| (+ one half ulp for F16 outputs) */
static int close_all(const char *what, const float *got, const double *ref, size_t n, double atol, double rtol,
                     clnorm_dtype dt) {
    size_t bad = 0, worst = 0;
    for (size_t i = 0; i < n; ++i) {
        double tol = atol + rtol * fabs(ref[i]) + (dt == CLNORM_F16 ? fabs(ref[i]) * 0x1p-10 + 0x1p-24 : 0.0);
        if (!(fabs(got[i] - ref[i]) <= tol)) {
            if (!bad)
                worst = i;
            ++bad;
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu off, first at %zu: got %.9g want %.9g", what, bad, n, worst,
          bad ? (double)got[worst] : 0.0, bad ? ref[worst] : 0.0);
    return bad == 0;
}

/* the same bytes on every rank */
static void same_everywhere(const char *what, const void *p, size_t bytes) {
    unsigned char *all = malloc(bytes * (size_t)nranks);
    MPI_Allgather(p, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    for (int r = 1; r < nranks; ++r)
        CHECK(memcmp(all, all + (size_t)r * bytes, bytes) == 0, "%s differs between rank 0 and rank %d", what, r);
    free(all);
}

/* every rank got the same status, and it is want; a failure's message names a rank */
static void same_status(const char *what, clnorm_status st, clnorm_status want) {
    int mine = (int)st, *all = malloc(sizeof(int) * (size_t)nranks);
    MPI_Allgather(&mine, 1, MPI_INT, all, 1, MPI_INT, MPI_COMM_WORLD);
    for (int r = 0; r < nranks; ++r)
        CHECK(all[r] == (int)want, "%s: rank %d returned %d, expected %d (%s)", what, r, all[r], (int)want,
              clnorm_last_error());
    if (want != CLNORM_SUCCESS)
        CHECK(strstr(clnorm_last_error(), "rank") != NULL || strstr(clnorm_last_error(), "ranks") != NULL,
              "%s: the message does not name a rank: %s", what, clnorm_last_error());
    free(all);
}

/* ---- functional ---------------------------------------------------------------------------------------- */
typedef struct {
    float *y, *dx, *stats; /* stats: rm, rv, sm, si, ds, db (6 * G) */
} result;

static void run_functional(const cfg_t *c, uint64_t seed, int recompute, result *res) {
    size_t R = rest_numel(c), total = 0, mine = batch_of(rank), before = 0;
    for (int r = 0; r < nranks; ++r) {
        if (r < rank)
            before += batch_of(r);
        total += batch_of(r);
    }
    size_t shape[5] = {total, c->rest[0], c->rest[1], c->rest[2], 1};
    size_t n = total * R, G = ref_groups(c->mode, c->ndim, shape);
    float *x = malloc(n * 4), *dy = malloc(n * 4), *scale = malloc(G * 4), *bias = malloc(G * 4), *rm = malloc(G * 4),
          *rv = malloc(G * 4);
    rng = seed;
    for (size_t i = 0; i < n; ++i) {
        x[i] = (float)(0.5 + 2.0 * normal());
        dy[i] = (float)normal();
        if (c->dt == CLNORM_F16) {
            x[i] = h2f(f2h(x[i]));
            dy[i] = h2f(f2h(dy[i]));
        }
    }
    for (size_t j = 0; j < G; ++j) {
        scale[j] = (float)(1.0 + 0.3 * normal());
        bias[j] = (float)(0.5 * normal());
        rm[j] = (float)normal();
        rv[j] = (float)(0.5 + uniform());
    }
    double *ry = malloc(n * 8), *rmean = malloc(G * 8), *rvar = malloc(G * 8), *rinv = malloc(G * 8),
           *rrm = malloc(G * 8), *rrv = malloc(G * 8), *rdx = malloc(n * 8), *rds = malloc(G * 8), *rdb = malloc(G * 8);
    ref_bn_forward_training(c->mode, c->ndim, shape, x, scale, bias, 0.3, 1e-5, rm, rv, ry, rmean, rvar, rinv, rrm,
                            rrv);
    clnorm_tensor X = make_tensor(c, mine, x + before * R), Y = make_tensor(c, mine, NULL),
                  DY = make_tensor(c, mine, dy + before * R), DX = make_tensor(c, mine, NULL);
    cl_mem sc = vec(scale, G), bi = vec(bias, G), rmb = vec(rm, G), rvb = vec(rv, G), smb = vec(NULL, G),
           sib = vec(NULL, G), dsb = vec(NULL, G), dbb = vec(NULL, G);
    OK(clnorm_bn_forward_training_mpi(MPI_COMM_WORLD, ctx, c->mode, &X, &Y, sc, bi, 0.3, 1e-5, rmb, rvb, smb, sib));
    OK(clnorm_bn_backward_mpi(MPI_COMM_WORLD, ctx, c->mode, &X, &DY, &DX, sc, dsb, dbb, 1e-5, recompute ? NULL : smb,
                              recompute ? NULL : sib));
    res->y = malloc(mine * R * 4 + 4);
    res->dx = malloc(mine * R * 4 + 4);
    res->stats = malloc(6 * G * 4);
    read_tensor(c, &Y, res->y);
    read_tensor(c, &DX, res->dx);
    cl_mem outs[6] = {rmb, rvb, smb, sib, dsb, dbb};
    for (int f = 0; f < 6; ++f)
        vec_read(outs[f], res->stats + f * G, G);
    ref_bn_backward(c->mode, c->ndim, shape, x, dy, scale, 1e-5, res->stats + 2 * G, res->stats + 3 * G, rdx, rds, rdb);
    close_all("y", res->y, ry + before * R, mine * R, 1e-5, 1e-4, c->dt);
    close_all("running_mean", res->stats, rrm, G, 1e-6, 1e-5, CLNORM_F32);
    close_all("running_var", res->stats + G, rrv, G, 1e-6, 1e-5, CLNORM_F32);
    close_all("save_mean", res->stats + 2 * G, rmean, G, 1e-6, 1e-5, CLNORM_F32);
    close_all("save_invstd", res->stats + 3 * G, rinv, G, 1e-6, 1e-5, CLNORM_F32);
    close_all("dscale", res->stats + 4 * G, rds, G, 1e-4, 1e-3, CLNORM_F32);
    close_all("dbias", res->stats + 5 * G, rdb, G, 1e-4, 1e-3, CLNORM_F32);
    close_all("dx", res->dx, rdx + before * R, mine * R, 1e-4, 1e-3, c->dt);
    same_everywhere("running / saved statistics, dscale, dbias", res->stats, 6 * G * 4);
    clnorm_tensor_release(&X), clnorm_tensor_release(&Y), clnorm_tensor_release(&DY), clnorm_tensor_release(&DX);
    cl_mem *ms[] = {&sc, &bi, &rmb, &rvb, &smb, &sib, &dsb, &dbb};
    for (size_t i = 0; i < 8; ++i)
        release(ms[i]);
    free(x), free(dy), free(scale), free(bias), free(rm), free(rv), free(ry), free(rmean), free(rvar), free(rinv);
    free(rrm), free(rrv), free(rdx), free(rds), free(rdb);
}

static void test_functional(void) {
    static const cfg_t cases[] = {
        {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 4, {3, 4, 5}},
        {CLNORM_BN_SPATIAL, CLNORM_F16, CLNORM_NCHW, 4, {3, 4, 5}},
        {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NHWC, 4, {3, 4, 5}},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_F32, CLNORM_NCHW, 3, {4, 6, 1}},
        {CLNORM_BN_PER_ACTIVATION, CLNORM_F16, CLNORM_NHWC, 3, {4, 6, 1}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; ++k) {
        const cfg_t *c = &cases[k];
        size_t shape[5] = {1, c->rest[0], c->rest[1], c->rest[2], 1};
        size_t G = ref_groups(c->mode, c->ndim, shape), out = batch_of(rank) * rest_numel(c);
        result a, b;
        run_functional(c, seed_of(1000 + k), 0, &a);
        run_functional(c, seed_of(1000 + k), (int)(k % 2), &b); /* a second run (recomputed statistics half the time) */
        CHECK(memcmp(a.stats, b.stats, 6 * G * 4) == 0, "case %zu: statistics or gradients differ between runs", k);
        CHECK(memcmp(a.y, b.y, out * 4) == 0, "case %zu: y differs between runs", k);
        CHECK(memcmp(a.dx, b.dx, out * 4) == 0, "case %zu: dx differs between runs", k);
        free(a.y), free(a.dx), free(a.stats), free(b.y), free(b.dx), free(b.stats);
    }
}

/* ---- the layer ----------------------------------------------------------------------------------------- */
static void test_layer(void) {
    enum { C = 3, STEPS = 12 };
    const size_t H = 3, W = 4;
    size_t total = 0, before = 0, mine = batch_of(rank);
    for (int r = 0; r < nranks; ++r) {
        if (r < rank)
            before += batch_of(r);
        total += batch_of(r);
    }
    clnorm_batchnorm_config cfg;
    clnorm_batchnorm_config_init(&cfg, 2, C);
    cfg.seed = seed_of(5) | 1; /* the initial scale drawn fresh per run (0 would mean the fixed default) */
    clnorm_batchnorm *dist = NULL, *one = NULL;
    OK(clnorm_batchnorm_create(ctx, &cfg, &dist));
    OK(clnorm_batchnorm_create(ctx, &cfg, &one));
    if (!dist || !one)
        return;
    size_t R = C * H * W, n = total * R;
    const cfg_t c = {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 4, {C, H, W}};
    size_t full[4] = {total, C, H, W};
    float *x = malloc(n * 4), *dy = malloc(n * 4), *y1 = malloc(n * 4), *dx1 = malloc(n * 4), *y2 = malloc(n * 4 + 4),
          *dx2 = malloc(n * 4 + 4);
    cl_mem xb = vec(NULL, n), yb = vec(NULL, n), dyb = vec(NULL, n), dxb = vec(NULL, n);
    clnorm_tensor X = clnorm_tensor_make(xb, 4, full), Y = clnorm_tensor_make(yb, 4, full),
                  DY = clnorm_tensor_make(dyb, 4, full), DX = clnorm_tensor_make(dxb, 4, full);
    for (int step = 0; step < STEPS; ++step) {
        rng = seed_of(77 + (uint64_t)step);
        for (size_t i = 0; i < n; ++i) {
            x[i] = (float)(1.0 + 3.0 * normal());
            dy[i] = (float)normal();
        }
        OK(clnorm_tensor_write(ctx, &X, x));
        OK(clnorm_tensor_write(ctx, &DY, dy));
        OK(clnorm_batchnorm_forward(one, 1, &X, &Y));
        OK(clnorm_batchnorm_backward(one, &X, &DY, &DX, 1.0f, 0.9f));
        OK(clnorm_tensor_read(ctx, &Y, y1));
        OK(clnorm_tensor_read(ctx, &DX, dx1));
        clnorm_tensor xs = make_tensor(&c, mine, x + before * R), ys = make_tensor(&c, mine, NULL),
                      dys = make_tensor(&c, mine, dy + before * R), dxs = make_tensor(&c, mine, NULL);
        OK(clnorm_batchnorm_forward_mpi(MPI_COMM_WORLD, dist, 1, &xs, &ys));
        OK(clnorm_batchnorm_backward_mpi(MPI_COMM_WORLD, dist, &xs, &dys, &dxs, 1.0f, 0.9f));
        read_tensor(&c, &ys, y2);
        read_tensor(&c, &dxs, dx2);
        double *ref = malloc(n * 8);
        for (size_t i = 0; i < n; ++i)
            ref[i] = y1[i];
        close_all("layer y", y2, ref + before * R, mine * R, 1e-5, 1e-4, CLNORM_F32);
        for (size_t i = 0; i < n; ++i)
            ref[i] = dx1[i];
        close_all("layer dx", dx2, ref + before * R, mine * R, 1e-4, 1e-3, CLNORM_F32);
        free(ref);
        clnorm_tensor_release(&xs), clnorm_tensor_release(&ys), clnorm_tensor_release(&dys),
            clnorm_tensor_release(&dxs);
    }
    static const clnorm_field fs[] = {CLNORM_RUNNING_MEAN, CLNORM_RUNNING_VAR, CLNORM_SAVE_MEAN,
                                      CLNORM_SAVE_INVSTD,  CLNORM_SCALE_GRAD,  CLNORM_BIAS_GRAD};
    for (size_t f = 0; f < 6; ++f) {
        float got[C], want[C];
        double w[C];
        OK(clnorm_batchnorm_read(dist, fs[f], got, C));
        OK(clnorm_batchnorm_read(one, fs[f], want, C));
        for (int j = 0; j < C; ++j)
            w[j] = want[j];
        close_all("layer field", got, w, C, 1e-4, 1e-4, CLNORM_F32);
        same_everywhere("layer field", got, sizeof got);
    }
    CHECK(clnorm_batchnorm_batches(dist) == STEPS, "n = %llu", (unsigned long long)clnorm_batchnorm_batches(dist));
    /* inference: no communication, the running statistics */
    clnorm_tensor xs = make_tensor(&c, mine ? mine : 1, x), ys = make_tensor(&c, mine ? mine : 1, NULL);
    OK(clnorm_batchnorm_forward_mpi(MPI_COMM_WORLD, dist, 0, &xs, &ys));
    clnorm_tensor_release(&xs), clnorm_tensor_release(&ys);
    clnorm_batchnorm_destroy(dist);
    clnorm_batchnorm_destroy(one);
    release(&xb), release(&yb), release(&dyb), release(&dxb);
    free(x), free(dy), free(y1), free(dx1), free(y2), free(dx2);
}

/* ---- refusals ------------------------------------------------------------------------------------------ */
static int nan_intact(cl_mem m, size_t n) {
    float *h = malloc(n * 4);
    vec_read(m, h, n);
    int ok = 1;
    for (size_t i = 0; i < n; ++i)
        ok &= isnan(h[i]);
    free(h);
    return ok;
}
static int tensor_untouched(const cfg_t *c, const clnorm_tensor *t) {
    size_t n = t->shape[0] * rest_numel(c);
    if (!n)
        return 1;
    float *h = malloc(n * 4);
    read_tensor(c, t, h);
    int ok = 1;
    for (size_t i = 0; i < n; ++i)
        ok &= isnan(h[i]);
    free(h);
    return ok;
}

static void test_refusals(void) {
    int last = nranks - 1;
    /* 1. maps that differ on the last rank (its own buffers are consistent, so only the agreement sees it) */
    {
        cfg_t c = {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 4, {rank == last && nranks > 1 ? 4 : 3, 2, 2}};
        size_t G = c.rest[0], b = batch_of(rank);
        float *x = malloc((b + 1) * rest_numel(&c) * 4);
        rng = seed_of(9);
        for (size_t i = 0; i < (b + 1) * rest_numel(&c); ++i)
            x[i] = (float)normal();
        clnorm_tensor X = make_tensor(&c, b, x), Y = make_tensor(&c, b, NULL);
        cl_mem rm = vec(NULL, G), rv = vec(NULL, G), sm = vec(NULL, G), si = vec(NULL, G);
        clnorm_status st = clnorm_bn_forward_training_mpi(MPI_COMM_WORLD, ctx, CLNORM_BN_SPATIAL, &X, &Y, NULL, NULL,
                                                          0.1, 1e-5, rm, rv, sm, si);
        same_status("maps differ on one rank", st, nranks > 1 ? CLNORM_ERROR_SHAPE : CLNORM_SUCCESS);
        if (nranks > 1) {
            CHECK(tensor_untouched(&c, &Y) && nan_intact(rm, G) && nan_intact(sm, G), "written after a refusal");
            char want[32];
            snprintf(want, sizeof want, "rank %d of %d", last, nranks);
            CHECK(strstr(clnorm_last_error(), want) != NULL, "message %s", clnorm_last_error());
        }
        /* 2. a buffer too small on rank 0 only (fresh poisoned outputs: with one rank, 1. succeeded) */
        clnorm_tensor_release(&Y);
        Y = make_tensor(&c, b, NULL);
        release(&rm), release(&rv), release(&sm);
        rm = vec(NULL, G), rv = vec(NULL, G), sm = vec(NULL, G);
        cl_mem smallrv = vec(NULL, G - 1);
        st = clnorm_bn_forward_training_mpi(MPI_COMM_WORLD, ctx, CLNORM_BN_SPATIAL, &X, &Y, NULL, NULL, 0.1, 1e-5, rm,
                                            rank == 0 ? smallrv : rv, sm, si);
        same_status("running_var too small on rank 0", st, CLNORM_ERROR_BUFFER_TOO_SMALL);
        CHECK(strstr(clnorm_last_error(), "rank 0 of") != NULL, "message %s", clnorm_last_error());
        CHECK(tensor_untouched(&c, &Y) && nan_intact(rm, G) && nan_intact(rv, G) && nan_intact(sm, G),
              "written after a refusal");
        clnorm_tensor_release(&X), clnorm_tensor_release(&Y);
        release(&rm), release(&rv), release(&sm), release(&si), release(&smallrv);
        free(x);
    }
    /* 3. fewer than 2 values per statistic over all ranks: per-activation, rank 0 batch 1, the others empty */
    {
        cfg_t c = {CLNORM_BN_PER_ACTIVATION, CLNORM_F32, CLNORM_NCHW, 2, {5, 1, 1}};
        size_t b = rank == 0 ? 1 : 0;
        float x[5] = {1, 2, 3, 4, 5};
        clnorm_tensor X = make_tensor(&c, b, x), Y = make_tensor(&c, b, NULL);
        cl_mem rm = vec(NULL, 5), rv = vec(NULL, 5);
        clnorm_status st = clnorm_bn_forward_training_mpi(MPI_COMM_WORLD, ctx, CLNORM_BN_PER_ACTIVATION, &X, &Y, NULL,
                                                          NULL, 0.1, 1e-5, rm, rv, NULL, NULL);
        same_status("total count 1", st, CLNORM_ERROR_SHAPE);
        CHECK(tensor_untouched(&c, &Y) && nan_intact(rm, 5) && nan_intact(rv, 5), "written after a refusal");
        clnorm_tensor_release(&X), clnorm_tensor_release(&Y);
        release(&rm), release(&rv);
    }
    /* 4. backward: dx of the wrong shape on the last rank */
    {
        cfg_t c = {CLNORM_BN_SPATIAL, CLNORM_F32, CLNORM_NCHW, 4, {3, 2, 2}};
        size_t b = batch_of(rank);
        float x[64];
        rng = seed_of(3);
        for (int i = 0; i < 64; ++i)
            x[i] = (float)normal();
        clnorm_tensor X = make_tensor(&c, b, x), DY = make_tensor(&c, b, x),
                      DX = make_tensor(&c, rank == last ? b + 1 : b, NULL);
        cl_mem sm = vec(x, 3), si = vec(x + 3, 3), ds = vec(NULL, 3), db = vec(NULL, 3);
        clnorm_status st =
            clnorm_bn_backward_mpi(MPI_COMM_WORLD, ctx, CLNORM_BN_SPATIAL, &X, &DY, &DX, NULL, ds, db, 1e-5, sm, si);
        same_status("dx shape on the last rank", st, CLNORM_ERROR_SHAPE);
        CHECK(nan_intact(ds, 3) && nan_intact(db, 3), "dscale / dbias written after a refusal");
        CHECK(tensor_untouched(&c, &DX), "dx written after a refusal");
        clnorm_tensor_release(&X), clnorm_tensor_release(&DY), clnorm_tensor_release(&DX);
        release(&sm), release(&si), release(&ds), release(&db);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    const char *dev = getenv("CLNORM_TEST_DEVICE");
    clnorm_status st = clnorm_context_create(dev && *dev ? dev : "pocl", &ctx);
    int have = st == CLNORM_SUCCESS, all = 0;
    MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all) {
        const char *req = getenv("CLNORM_TEST_REQUIRE_DEVICE");
        if (rank == 0)
            fprintf(stderr, "test_mpi: no device on some rank (%s)\n", clnorm_last_error());
        clnorm_context_destroy(ctx);
        MPI_Finalize();
        return req && *req && strcmp(req, "0") != 0 ? 1 : 77;
    }
    if (rank == 0) {
        base_seed = ts_seed_from_env();
        fprintf(stderr, "test_mpi: %d ranks, base seed CLNORM_TEST_SEED=%llu\n", nranks, (unsigned long long)base_seed);
    }
    MPI_Bcast(&base_seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    test_functional();
    test_layer();
    test_refusals();
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_mpi: %d ranks, device %s: %s (%d failed checks)\n", nranks, clnorm_context_device_name(ctx),
               total ? "FAILED" : "passed", total);
    clnorm_context_destroy(ctx);
    MPI_Finalize();
    return total ? 1 : 0;
}
