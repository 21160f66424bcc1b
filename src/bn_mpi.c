/* clnorm_mpi: synchronised BatchNorm over MPI, a client of the public header only (clnorm.h, the split-phase
 * calls). Each collective:
 *   1. validates locally (the split-phase calls with a NULL block: validation only) and computes what it can
 *      alone (this rank's statistics or sums block, read back to the host);
 *   2. agrees: MPI_Allgather of a fixed 256-byte header per rank (local status and message, and the arguments
 *      that must match); every rank takes the same decision from the same headers (the lowest failing rank's
 *      status, or the first mismatch against rank 0), so a refusal comes back everywhere and nothing is written;
 *   3. exchanges the blocks (MPI_Allgather, O(groups)) and merges them on the host in double precision in rank
 *      order (clnorm_bn_stats_merge_host for statistics, a rank-order sum for the backward sums): the same bits
 *      on every rank and in every run;
 *   4. finishes on the device with the merged block (clnorm_bn_forward_training_from_stats,
 *      clnorm_bn_backward_from_sums, or the layer's variants). */
#include "clnorm_mpi.h"

#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG_CAP 184

/* what every rank sends in the agreement (plain bytes: ranks share one ABI) */
typedef struct {
    int32_t status; /* the local validation / computation result */
    int32_t mode;   /* clnorm_bn_mode, or the layer's nd */
    int32_t dtype, layout;
    uint32_t pattern; /* which optional arguments are given */
    uint32_t pad;
    uint64_t groups; /* statistic groups (parameter vector length) */
    uint64_t maps;
    uint64_t values; /* this rank's values per statistic */
    uint64_t extra;  /* the layer's count n */
    double factor, epsilon;
    char msg[MSG_CAP]; /* the local failure's clnorm_last_error() */
} header;

_Static_assert(sizeof(header) == 256, "the agreement sends 256 bytes per rank");

typedef struct {
    MPI_Comm comm;
    int rank, size;
    uint64_t total; /* values per statistic over all ranks */
} coll;

static clnorm_status mpi_fail(int err, const char *call) {
    char text[MPI_MAX_ERROR_STRING], msg[MPI_MAX_ERROR_STRING + 96];
    int len = 0;
    if (MPI_Error_string(err, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "error %d", err);
    snprintf(msg, sizeof msg, "%s failed: %s", call, text);
    return clnorm_set_last_error(CLNORM_ERROR_INVALID_STATE, msg);
}

static clnorm_status fail(clnorm_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static clnorm_status fail(clnorm_status s, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return clnorm_set_last_error(s, msg);
}

static clnorm_status coll_init(MPI_Comm comm, coll *c) {
    c->comm = comm;
    c->total = 0;
    if (comm == MPI_COMM_NULL)
        return fail(CLNORM_ERROR_INVALID_ARGUMENT, "comm is MPI_COMM_NULL");
    int err = MPI_Comm_rank(comm, &c->rank);
    if (err == MPI_SUCCESS)
        err = MPI_Comm_size(comm, &c->size);
    return err == MPI_SUCCESS ? CLNORM_SUCCESS : mpi_fail(err, "MPI_Comm_rank/MPI_Comm_size");
}

/* the local outcome into the header (the message of a failure travels with it) */
static void header_status(header *h, clnorm_status st) {
    h->status = (int32_t)st;
    if (st != CLNORM_SUCCESS)
        snprintf(h->msg, sizeof h->msg, "%s", clnorm_last_error());
}

/* groups, maps and values per statistic of a view (0 when it is not even a view) */
static void view_sizes(clnorm_bn_mode mode, const clnorm_tensor *x, header *h) {
    if (!x || x->ndim < 2 || x->ndim > CLNORM_MAX_DIMS)
        return;
    uint64_t S = 1;
    for (int i = 2; i < x->ndim; ++i)
        S *= x->shape[i];
    h->maps = x->shape[1];
    h->groups = mode == CLNORM_BN_PER_ACTIVATION ? x->shape[1] * S : x->shape[1];
    h->values = mode == CLNORM_BN_PER_ACTIVATION ? x->shape[0] : x->shape[0] * S;
}

/* Step 2: gather the headers; the same decision on every rank. */
static clnorm_status agree(coll *c, const header *mine) {
    /* (the one allocation a rank cannot report to the others: a few hundred bytes per rank) */
    header *all = malloc(sizeof(header) * (size_t)c->size);
    if (!all)
        return fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory for the agreement's %d headers", c->size);
    int err;
    err = MPI_Allgather(mine, (int)sizeof(header), MPI_BYTE, all, (int)sizeof(header), MPI_BYTE, c->comm);
    if (err != MPI_SUCCESS) {
        free(all);
        return mpi_fail(err, "MPI_Allgather(headers)");
    }
    clnorm_status st = CLNORM_SUCCESS;
    for (int r = 0; r < c->size && st == CLNORM_SUCCESS; ++r)
        if (all[r].status != CLNORM_SUCCESS) {
            all[r].msg[MSG_CAP - 1] = '\0';
            st = fail((clnorm_status)all[r].status, "rank %d of %d: %s", r, c->size, all[r].msg);
        }
    const header *h0 = &all[0];
    for (int r = 1; r < c->size && st == CLNORM_SUCCESS; ++r) {
        const header *h = &all[r];
        if (h->groups != h0->groups || h->maps != h0->maps)
            st = fail(CLNORM_ERROR_SHAPE,
                      "rank %d of %d: %llu maps / %llu statistic groups, but rank 0 has %llu / %llu (every rank "
                      "must pass the same maps and per-activation extent)",
                      r, c->size, (unsigned long long)h->maps, (unsigned long long)h->groups,
                      (unsigned long long)h0->maps, (unsigned long long)h0->groups);
        else if (h->mode != h0->mode)
            st = fail(CLNORM_ERROR_INVALID_ARGUMENT, "rank %d of %d: mode (or layer nd) %d, but rank 0 has %d", r,
                      c->size, (int)h->mode, (int)h0->mode);
        else if (h->dtype != h0->dtype || h->layout != h0->layout)
            st = fail(CLNORM_ERROR_INVALID_ARGUMENT,
                      "rank %d of %d: dtype %d / layout %d, but rank 0 has %d / %d (every rank must pass the same)", r,
                      c->size, (int)h->dtype, (int)h->layout, (int)h0->dtype, (int)h0->layout);
        else if (h->pattern != h0->pattern)
            st = fail(CLNORM_ERROR_INVALID_ARGUMENT,
                      "rank %d of %d: the optional arguments given (pattern 0x%x) differ from rank 0's (0x%x)", r,
                      c->size, (unsigned)h->pattern, (unsigned)h0->pattern);
        else if (memcmp(&h->factor, &h0->factor, sizeof h->factor) != 0 ||
                 memcmp(&h->epsilon, &h0->epsilon, sizeof h->epsilon) != 0)
            st = fail(CLNORM_ERROR_INVALID_ARGUMENT,
                      "rank %d of %d: factor / scale %.17g and epsilon / momentum %.17g, but rank 0 has %.17g / %.17g",
                      r, c->size, h->factor, h->epsilon, h0->factor, h0->epsilon);
        else if (h->extra != h0->extra)
            st = fail(CLNORM_ERROR_INVALID_ARGUMENT,
                      "rank %d of %d: the layer has done %llu training forwards, but rank 0's %llu (the factor "
                      "schedule must match)",
                      r, c->size, (unsigned long long)h->extra, (unsigned long long)h0->extra);
    }
    for (int r = 0; r < c->size; ++r)
        c->total += all[r].values;
    free(all);
    return st;
}

/* Step 3: gather every rank's block (n floats) and one more float: the rank's local status since the agreement
 * (0 when it could do its part). Every rank then takes the same decision: a rank that failed locally after the
 * agreement (only the recomputing backward has local work between two exchanges) fails the call everywhere. */
static clnorm_status gather(coll *c, float *mine, size_t n, float *all, clnorm_status local) {
    mine[n] = (float)local;
    int err = MPI_Allgather(mine, (int)n + 1, MPI_FLOAT, all, (int)n + 1, MPI_FLOAT, c->comm);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Allgather(blocks)");
    if (local != CLNORM_SUCCESS)
        return local; /* its own message */
    for (int r = 0; r < c->size; ++r) {
        float f = all[(size_t)r * (n + 1) + n];
        if (f != 0.0f)
            return fail((clnorm_status)(int)f, "rank %d of %d failed after the agreement (%s)", r, c->size,
                        clnorm_status_string((clnorm_status)(int)f));
    }
    return CLNORM_SUCCESS;
}

/* ---- host and device scratch of one call ---------------------------------------------------------------- */

typedef struct {
    clnorm_context *ctx;
    cl_mem dev;        /* this rank's block, then the merged one */
    float *mine, *all; /* host: this rank's block, every rank's */
    float *merged;
    size_t n; /* floats per block */
} scratch;

static clnorm_status scratch_make(scratch *s, clnorm_context *ctx, const coll *c, size_t groups, size_t per) {
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    if (groups == 0 || groups > (size_t)INT_MAX / per || (size_t)c->size > SIZE_MAX / sizeof(float) / groups / per)
        return fail(CLNORM_ERROR_SHAPE, "%zu statistic groups are too many for one MPI message", groups);
    s->n = groups * per;
    s->mine = malloc((s->n + 1) * sizeof(float)); /* + the status slot (gather) */
    s->merged = malloc(s->n * sizeof(float));
    s->all = malloc((s->n + 1) * sizeof(float) * (size_t)c->size);
    if (!s->mine || !s->merged || !s->all)
        return fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory for %zu statistic groups", groups);
    cl_int err;
    s->dev = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, s->n * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS) {
        s->dev = NULL;
        return fail(err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ? CLNORM_ERROR_DEVICE_MEMORY
                                                                                          : CLNORM_ERROR_OPENCL,
                    "clCreateBuffer(%zu bytes for the exchanged block) failed: %d", s->n * sizeof(float), (int)err);
    }
    return CLNORM_SUCCESS;
}

static void scratch_free(scratch *s) {
    if (s->dev)
        clReleaseMemObject(s->dev);
    free(s->mine);
    free(s->all);
    free(s->merged);
}

static clnorm_status dev_read(scratch *s) {
    cl_int err = clEnqueueReadBuffer(clnorm_context_queue(s->ctx), s->dev, CL_TRUE, 0, s->n * sizeof(float), s->mine, 0,
                                     NULL, NULL);
    return err == CL_SUCCESS ? CLNORM_SUCCESS : fail(CLNORM_ERROR_OPENCL, "clEnqueueReadBuffer(block): %d", (int)err);
}

static clnorm_status dev_write_merged(scratch *s) {
    cl_int err = clEnqueueWriteBuffer(clnorm_context_queue(s->ctx), s->dev, CL_TRUE, 0, s->n * sizeof(float), s->merged,
                                      0, NULL, NULL);
    return err == CL_SUCCESS ? CLNORM_SUCCESS : fail(CLNORM_ERROR_OPENCL, "clEnqueueWriteBuffer(block): %d", (int)err);
}

/* statistics blocks of every rank -> merged (rank order); every count at least 2: a collective decision, the
 * same on every rank (the device write that follows is local) */
static clnorm_status merge_stats(coll *c, scratch *s, size_t groups) {
    clnorm_status st = gather(c, s->mine, s->n, s->all, CLNORM_SUCCESS);
    if (st != CLNORM_SUCCESS)
        return st;
    for (int r = 1; r < c->size; ++r) /* back to back, without the status slots */
        memmove(s->all + (size_t)r * s->n, s->all + (size_t)r * (s->n + 1), s->n * sizeof(float));
    st = clnorm_bn_stats_merge_host((size_t)c->size, groups, s->all, s->merged);
    for (size_t j = 0; st == CLNORM_SUCCESS && j < groups; ++j)
        if (!(s->merged[3 * j] >= 2.0f))
            st = fail(CLNORM_ERROR_SHAPE,
                      "the %d ranks hold %g values per statistic together: training needs at least 2", c->size,
                      (double)s->merged[3 * j]);
    return st;
}

/* sums blocks of every rank -> their sum in rank order (double, rounded once); local: this rank's status */
static clnorm_status sum_sums(coll *c, scratch *s, clnorm_status local) {
    clnorm_status st = gather(c, s->mine, s->n, s->all, local);
    if (st != CLNORM_SUCCESS)
        return st;
    for (size_t i = 0; i < s->n; ++i) {
        double a = 0.0;
        for (int r = 0; r < c->size; ++r)
            a += (double)s->all[(size_t)r * (s->n + 1) + i];
        s->merged[i] = (float)a;
    }
    return CLNORM_SUCCESS;
}

/* ---- functional ------------------------------------------------------------------------------------------- */

clnorm_status clnorm_bn_forward_training_mpi(MPI_Comm comm, clnorm_context *ctx, clnorm_bn_mode mode,
                                             const clnorm_tensor *x, const clnorm_tensor *y, cl_mem scale, cl_mem bias,
                                             double factor, double epsilon, cl_mem running_mean, cl_mem running_var,
                                             cl_mem save_mean, cl_mem save_invstd) {
    coll c;
    clnorm_status st = coll_init(comm, &c);
    if (st != CLNORM_SUCCESS)
        return st;
    header h;
    memset(&h, 0, sizeof h);
    h.mode = (int32_t)mode;
    h.factor = factor;
    h.epsilon = epsilon;
    h.pattern = (scale ? 1u : 0) | (bias ? 2u : 0) | (running_mean ? 4u : 0) | (running_var ? 8u : 0) |
                (save_mean ? 16u : 0) | (save_invstd ? 32u : 0);
    if (x) {
        h.dtype = (int32_t)x->dtype;
        h.layout = (int32_t)x->layout;
    }
    view_sizes(mode, x, &h);
    scratch s;
    memset(&s, 0, sizeof s);
    st = clnorm_bn_stats(ctx, mode, x, NULL);
    if (st == CLNORM_SUCCESS)
        st = clnorm_bn_forward_training_from_stats(ctx, mode, x, y, NULL, scale, bias, factor, epsilon, running_mean,
                                                   running_var, save_mean, save_invstd);
    if (st == CLNORM_SUCCESS)
        st = scratch_make(&s, ctx, &c, (size_t)h.groups, 3);
    if (st == CLNORM_SUCCESS)
        st = clnorm_bn_stats(ctx, mode, x, s.dev);
    if (st == CLNORM_SUCCESS)
        st = dev_read(&s);
    header_status(&h, st);
    st = agree(&c, &h);
    if (st == CLNORM_SUCCESS)
        st = merge_stats(&c, &s, (size_t)h.groups);
    if (st == CLNORM_SUCCESS)
        st = dev_write_merged(&s);
    if (st == CLNORM_SUCCESS)
        st = clnorm_bn_forward_training_from_stats(ctx, mode, x, y, s.dev, scale, bias, factor, epsilon, running_mean,
                                                   running_var, save_mean, save_invstd);
    scratch_free(&s);
    return st;
}

clnorm_status clnorm_bn_backward_mpi(MPI_Comm comm, clnorm_context *ctx, clnorm_bn_mode mode, const clnorm_tensor *x,
                                     const clnorm_tensor *dy, const clnorm_tensor *dx, cl_mem scale, cl_mem dscale,
                                     cl_mem dbias, double epsilon, cl_mem save_mean, cl_mem save_invstd) {
    coll c;
    clnorm_status st = coll_init(comm, &c);
    if (st != CLNORM_SUCCESS)
        return st;
    header h;
    memset(&h, 0, sizeof h);
    h.mode = (int32_t)mode;
    h.epsilon = epsilon;
    int recompute = !save_mean && !save_invstd;
    h.pattern = (dx ? 1u : 0) | (scale ? 2u : 0) | (dscale ? 4u : 0) | (dbias ? 8u : 0) | (save_mean ? 16u : 0) |
                (save_invstd ? 32u : 0);
    if (x) {
        h.dtype = (int32_t)x->dtype;
        h.layout = (int32_t)x->layout;
    }
    view_sizes(mode, x, &h);
    scratch ss, s;
    memset(&ss, 0, sizeof ss);
    memset(&s, 0, sizeof s);
    cl_mem tmean = NULL, tinv = NULL;
    st = CLNORM_SUCCESS;
    if (!save_mean != !save_invstd)
        st = fail(CLNORM_ERROR_INVALID_ARGUMENT, "save_mean and save_invstd go together: %s is NULL but %s is not",
                  save_mean ? "save_invstd" : "save_mean", save_mean ? "save_mean" : "save_invstd");
    if (st == CLNORM_SUCCESS && recompute) {
        /* the global statistics, recomputed: validated here, exchanged below, into temporary saved vectors */
        cl_int err = CL_SUCCESS;
        size_t bytes = (h.groups ? (size_t)h.groups : 1) * sizeof(float);
        st = clnorm_bn_stats(ctx, mode, x, NULL);
        if (st == CLNORM_SUCCESS && !(epsilon > 0.0 && isfinite(epsilon) && (float)epsilon > 0.0f))
            st = fail(CLNORM_ERROR_INVALID_ARGUMENT, "epsilon must be finite and > 0, got %g", epsilon);
        if (st == CLNORM_SUCCESS) {
            tmean = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &err);
            if (err == CL_SUCCESS)
                tinv = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &err);
            if (err != CL_SUCCESS)
                st = fail(CLNORM_ERROR_DEVICE_MEMORY, "clCreateBuffer(saved statistics) failed: %d", (int)err);
        }
        save_mean = tmean;
        save_invstd = tinv;
    }
    double count =
        h.values > 2 ? (double)h.values : 2.0; /* any valid count: the real one is known after the agreement */
    if (st == CLNORM_SUCCESS)
        st = clnorm_bn_backward_reduce(ctx, mode, x, dy, save_mean, save_invstd, NULL);
    if (st == CLNORM_SUCCESS)
        st = clnorm_bn_backward_from_sums(ctx, mode, x, dy, dx, scale, save_mean, save_invstd, NULL, count, dscale,
                                          dbias);
    if (st == CLNORM_SUCCESS)
        st = scratch_make(&s, ctx, &c, (size_t)h.groups, 2);
    if (st == CLNORM_SUCCESS && recompute) {
        st = scratch_make(&ss, ctx, &c, (size_t)h.groups, 3);
        if (st == CLNORM_SUCCESS)
            st = clnorm_bn_stats(ctx, mode, x, ss.dev);
        if (st == CLNORM_SUCCESS)
            st = dev_read(&ss);
    }
    if (st == CLNORM_SUCCESS && !recompute) { /* this rank's sums, before the agreement */
        st = clnorm_bn_backward_reduce(ctx, mode, x, dy, save_mean, save_invstd, s.dev);
        if (st == CLNORM_SUCCESS)
            st = dev_read(&s);
    }
    header_status(&h, st);
    st = agree(&c, &h);
    if (st == CLNORM_SUCCESS) {
        clnorm_status local = CLNORM_SUCCESS;
        if (recompute) {
            /* the global statistics into the temporary saved vectors (an empty view of x: only those are written),
               then this rank's sums; a local failure here travels with the sums, so nobody is left waiting */
            clnorm_tensor e = *x;
            e.buffer = NULL;
            e.shape[0] = 0;
            st = merge_stats(&c, &ss, (size_t)h.groups);
            if (st == CLNORM_SUCCESS) {
                local = dev_write_merged(&ss);
                if (local == CLNORM_SUCCESS)
                    local = clnorm_bn_forward_training_from_stats(ctx, mode, &e, &e, ss.dev, NULL, NULL, 0.0, epsilon,
                                                                  NULL, NULL, save_mean, save_invstd);
                if (local == CLNORM_SUCCESS)
                    local = clnorm_bn_backward_reduce(ctx, mode, x, dy, save_mean, save_invstd, s.dev);
                if (local == CLNORM_SUCCESS)
                    local = dev_read(&s);
            }
        }
        if (st == CLNORM_SUCCESS)
            st = sum_sums(&c, &s, local);
    }
    if (st == CLNORM_SUCCESS)
        st = dev_write_merged(&s);
    if (st == CLNORM_SUCCESS)
        st = clnorm_bn_backward_from_sums(ctx, mode, x, dy, dx, scale, save_mean, save_invstd, s.dev, (double)c.total,
                                          dscale, dbias);
    scratch_free(&s);
    scratch_free(&ss);
    if (tmean)
        clReleaseMemObject(tmean);
    if (tinv)
        clReleaseMemObject(tinv);
    return st;
}

/* ---- the layer ------------------------------------------------------------------------------------------- */

static void layer_header(const clnorm_batchnorm *bn, const clnorm_tensor *x, header *h) {
    memset(h, 0, sizeof *h);
    h->groups = clnorm_batchnorm_param_count(bn);
    h->maps = h->groups;
    h->extra = clnorm_batchnorm_batches(bn);
    /* the layer's own numbers must agree too: epsilon, the factor schedule and affine (config_get cannot fail on a
       layer; a NULL bn leaves zeros and is refused by the local validation) */
    clnorm_batchnorm_config cfg;
    if (clnorm_batchnorm_config_get(bn, &cfg) == CLNORM_SUCCESS) {
        double n1 = (double)h->extra + 1.0;
        double f = (double)cfg.init_factor / n1;
        h->factor = f > (double)cfg.min_factor ? f : (double)cfg.min_factor;
        h->epsilon = (double)cfg.epsilon;
        h->pattern = (cfg.affine ? 1u : 0u) | (cfg.activation != CLNORM_ACTIVATION_NONE ? 2u : 0u);
    }
    if (x) {
        h->dtype = (int32_t)x->dtype;
        h->layout = (int32_t)x->layout;
        h->mode = x->ndim;
        if (x->ndim >= 2 && x->ndim <= CLNORM_MAX_DIMS) {
            uint64_t v = x->shape[0];
            for (int i = 2; i < x->ndim; ++i)
                v *= x->shape[i]; /* nd == 0 has ndim 2: the batch */
            h->values = v;
        }
    }
}

clnorm_status clnorm_batchnorm_forward_mpi(MPI_Comm comm, clnorm_batchnorm *bn, int train, const clnorm_tensor *x,
                                           const clnorm_tensor *y) {
    if (!train)
        return clnorm_batchnorm_forward(bn, 0, x, y);
    coll c;
    clnorm_status st = coll_init(comm, &c);
    if (st != CLNORM_SUCCESS)
        return st;
    header h;
    layer_header(bn, x, &h);
    scratch s;
    memset(&s, 0, sizeof s);
    st = clnorm_batchnorm_forward_from_stats(bn, x, y, NULL);
    if (st == CLNORM_SUCCESS)
        st = scratch_make(&s, clnorm_batchnorm_context(bn), &c, (size_t)h.groups, 3);
    if (st == CLNORM_SUCCESS)
        st = clnorm_batchnorm_stats(bn, x, s.dev);
    if (st == CLNORM_SUCCESS)
        st = dev_read(&s);
    header_status(&h, st);
    st = agree(&c, &h);
    if (st == CLNORM_SUCCESS)
        st = merge_stats(&c, &s, (size_t)h.groups);
    if (st == CLNORM_SUCCESS)
        st = dev_write_merged(&s);
    if (st == CLNORM_SUCCESS)
        st = clnorm_batchnorm_forward_from_stats(bn, x, y, s.dev);
    scratch_free(&s);
    return st;
}

clnorm_status clnorm_batchnorm_backward_mpi(MPI_Comm comm, clnorm_batchnorm *bn, const clnorm_tensor *x,
                                            const clnorm_tensor *dy, const clnorm_tensor *dx, float scale,
                                            float momentum) {
    coll c;
    clnorm_status st = coll_init(comm, &c);
    if (st != CLNORM_SUCCESS)
        return st;
    header h;
    layer_header(bn, x, &h);
    h.factor = scale;
    h.epsilon = momentum;
    h.pattern = dx ? 1u : 0;
    scratch s;
    memset(&s, 0, sizeof s);
    double count = h.values > 2 ? (double)h.values : 2.0;
    st = clnorm_batchnorm_backward_reduce(bn, x, dy, NULL);
    if (st == CLNORM_SUCCESS)
        st = clnorm_batchnorm_backward_from_sums(bn, x, dy, dx, NULL, count, scale, momentum);
    if (st == CLNORM_SUCCESS)
        st = scratch_make(&s, clnorm_batchnorm_context(bn), &c, (size_t)h.groups, 2);
    if (st == CLNORM_SUCCESS)
        st = clnorm_batchnorm_backward_reduce(bn, x, dy, s.dev);
    if (st == CLNORM_SUCCESS)
        st = dev_read(&s);
    header_status(&h, st);
    st = agree(&c, &h);
    if (st == CLNORM_SUCCESS)
        st = sum_sums(&c, &s, CLNORM_SUCCESS);
    if (st == CLNORM_SUCCESS)
        st = dev_write_merged(&s);
    if (st == CLNORM_SUCCESS)
        st = clnorm_batchnorm_backward_from_sums(bn, x, dy, dx, s.dev, (double)c.total, scale, momentum);
    scratch_free(&s);
    return st;
}
