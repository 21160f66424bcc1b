/* Context: one device, one in-order queue (ours or the application's), the program cache, scratch buffers. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* case-insensitive equality with a lowercase word */
static int word_is(const char *s, const char *lower) {
    for (; *s && *lower; ++s, ++lower)
        if ((*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s) != *lower)
            return 0;
    return *s == '\0' && *lower == '\0';
}

/* By default a call writes its tensors with streaming (non-temporal) stores when the tensors it reads and writes
 * take at least a quarter of the last-level cache the device reports together, at most 8 MiB; plain stores below.
 * Measured on an AMD EPYC VM (2 cores, 32 MiB L3 shared with other guests, POCL 3.1; interleaved runs, each op back
 * to back): plain stores win while the call's tensors take up to ~6.4 MB (inference (4,256,28,28), x and y: 0.19
 * -> 0.10 ms; step_ex (256,1024), 3 and 5 MB: 0.48 -> 0.31-0.37 ms); streaming ones from ~9.6 MB on (backward
 * (4,256,28,28) or (16,64,32,32), x dy dx; step_ex (4,256,28,28): 0.76-0.84 streamed vs 0.90-1.23 ms plain) and by
 * far at 12.8 MB tensors ((16,256,28,28) training forward 1.1 vs 1.8 ms). The cap keeps a device that reports a
 * huge cache (a VM's 480 MiB) on streaming stores for the large tensors.
 * Intel CPUs (a CPU device whose CL_DEVICE_VENDOR names Intel: POCL's "GenuineIntel", Intel's runtime "Intel(R)
 * Corporation"; not the vendor id, which POCL 3.1 reports as 0x8086 on AMD CPUs too) stream from 1 MiB: there a
 * line a call wrote plainly on one core and the next call writes on the other (POCL hands work-groups to whichever
 * thread asks first) costs more than the trip to memory. Measured on a 2-core Intel Xeon VM (AVX-512, 2 MiB L2 a
 * core, POCL 3.1), interleaved, plain vs streamed: inference (256,1024) (2 MiB a call) 75-83 vs 49-51 us, training
 * 95-103 vs 85-89 us, backward 136-141 vs 102-119 us; (512,1024) inference 140-163 vs 95-97 us; NCHW (8,32,32,32)
 * inference / backward 46-49 / 79 vs 39 / 65-69 us; on one POCL thread the two variants tie (51 us), so it is the
 * second core, not the store. Below 1 MiB plain still wins there ((2,32,32,32) inference 15.5 vs 18.5-19.3 us,
 * (32,1024) 11.8 vs 13.0 us). */
#define STREAM_MIN_BYTES_CAP ((cl_ulong)8 << 20)
#define STREAM_MIN_BYTES_INTEL_CPU ((cl_ulong)1 << 20)

static cl_ulong default_stream_min_bytes(cl_device_type type, int intel, cl_ulong llc) {
    if ((type & CL_DEVICE_TYPE_CPU) && intel)
        return STREAM_MIN_BYTES_INTEL_CPU;
    return llc && llc / 4 < STREAM_MIN_BYTES_CAP ? llc / 4 : STREAM_MIN_BYTES_CAP;
}

/* a decimal integer without sign or suffix; 0 when it is not one */
static int parse_u64(const char *s, unsigned long long *v) {
    char *end = NULL;
    errno = 0;
    *v = strtoull(s, &end, 10);
    return s[0] >= '0' && s[0] <= '9' && !errno && *end == '\0';
}

/* The environment knobs read once per context: CLNORM_STRATEGY ("cpu" or "gpu", any case; unset or empty: by device
 * type), CLNORM_MAX_WORK_GROUP_SIZE (a positive integer; the reduction work-group is the largest power of two not
 * above it, the device's CL_DEVICE_MAX_WORK_GROUP_SIZE and 256) and CLNORM_STREAM_MIN_BYTES (a non-negative integer:
 * a call whose tensors take at least that many bytes together writes them with streaming stores, else plainly;
 * 0: always streaming).
 * Anything else is refused: a typo must not silently run the other strategy. */
static clnorm_status read_knobs(clnorm_context *c, size_t max_wg, cl_ulong llc, int intel) {
    const char *forced = getenv("CLNORM_STRATEGY");
    if (forced && *forced) {
        if (word_is(forced, "gpu"))
            c->strategy = CN_STRATEGY_GPU;
        else if (word_is(forced, "cpu"))
            c->strategy = CN_STRATEGY_CPU;
        else
            return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                           "CLNORM_STRATEGY must be \"cpu\" or \"gpu\" (or unset: by device type), got \"%s\"", forced);
    } else {
        c->strategy = (c->type & CL_DEVICE_TYPE_CPU) ? CN_STRATEGY_CPU : CN_STRATEGY_GPU;
    }
    const char *cap = getenv("CLNORM_MAX_WORK_GROUP_SIZE");
    if (cap && *cap) {
        unsigned long long v = 0;
        if (!parse_u64(cap, &v) || v == 0)
            return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                           "CLNORM_MAX_WORK_GROUP_SIZE must be a positive integer, got \"%s\"", cap);
        if (v < max_wg)
            max_wg = (size_t)v;
    }
    const char *stream = getenv("CLNORM_STREAM_MIN_BYTES");
    if (stream && *stream) {
        unsigned long long v = 0;
        if (!parse_u64(stream, &v))
            return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT,
                           "CLNORM_STREAM_MIN_BYTES must be a non-negative integer (bytes), got \"%s\"", stream);
        c->stream_min_bytes = (cl_ulong)v;
    } else {
        c->stream_min_bytes = default_stream_min_bytes(c->type, intel, llc);
    }
    /* the reduction work-group: a power of two the device accepts; 1 item per group on the CPU strategy */
    size_t wg = c->strategy == CN_STRATEGY_CPU ? 1 : 256;
    while (wg > max_wg)
        wg /= 2;
    c->wg = wg ? wg : 1;
    c->wg_cap = max_wg ? max_wg : 1;
    return CLNORM_SUCCESS;
}

static clnorm_status fill_device_info(clnorm_context *c, cl_platform_id platform) {
    cl_int err = clGetDeviceInfo(c->device, CL_DEVICE_TYPE, sizeof c->type, &c->type, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(c->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof c->units, &c->units, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(c->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof c->max_alloc, &c->max_alloc, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(c->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof c->local_mem, &c->local_mem, NULL);
    size_t max_wg = 1;
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(c->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
    cl_ulong llc = 0; /* 0 when the device does not say */
    if (clGetDeviceInfo(c->device, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof llc, &llc, NULL) != CL_SUCCESS)
        llc = 0;
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clGetDeviceInfo");
    if (platform == NULL) {
        err = clGetDeviceInfo(c->device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL);
        if (err != CL_SUCCESS)
            return cn_cl_fail(err, "clGetDeviceInfo(CL_DEVICE_PLATFORM)");
    }
    c->name = cn_device_full_name(platform, c->device);
    if (!c->name)
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory reading the device name");
    char driver[256] = "", pversion[256] = "", vname[256] = "";
    cl_uint vendor = 0;
    clGetDeviceInfo(c->device, CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL);
    clGetDeviceInfo(c->device, CL_DEVICE_VENDOR_ID, sizeof vendor, &vendor, NULL);
    clGetDeviceInfo(c->device, CL_DEVICE_VENDOR, sizeof vname - 1, vname, NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof pversion - 1, pversion, NULL);
    size_t n = strlen(c->name) + strlen(driver) + strlen(pversion) + 64;
    if (!(c->cache_id = malloc(n)))
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory reading the device identity");
    snprintf(c->cache_id, n, "%s | vendor 0x%x | driver %s | platform %s", c->name, vendor, driver, pversion);
    if (c->units == 0)
        c->units = 1;
    clnorm_status st = read_knobs(c, max_wg, llc, cn_contains_nocase(vname, "intel"));
    if (st != CLNORM_SUCCESS)
        return st;
    c->prefetch = c->strategy == CN_STRATEGY_CPU && (c->type & CL_DEVICE_TYPE_CPU) && cn_contains_nocase(pversion, "pocl");
    return CLNORM_SUCCESS;
}

clnorm_status clnorm_context_create(const char *device, clnorm_context **out) {
    cl_platform_id platform = NULL;
    cl_int err;
    clnorm_status st;
    if (!out)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_context_create: out is NULL");
    *out = NULL;
    clnorm_context *c = calloc(1, sizeof *c);
    if (!c)
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory creating a context");
    st = cn_select_device(device, &platform, &c->device);
    if (st != CLNORM_SUCCESS)
        goto fail;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)platform, 0};
    c->context = clCreateContext(props, 1, &c->device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        st = cn_cl_fail(err, "clCreateContext");
        goto fail;
    }
    c->queue = clCreateCommandQueue(c->context, c->device, 0, &err);
    if (err != CL_SUCCESS) {
        st = cn_cl_fail(err, "clCreateCommandQueue");
        goto fail;
    }
    st = fill_device_info(c, platform);
    if (st == CLNORM_SUCCESS)
        st = cn_programs_init(c);
    if (st != CLNORM_SUCCESS)
        goto fail;
    cn_disk_cache_open(c);
    *out = c;
    return CLNORM_SUCCESS;
fail:
    clnorm_context_destroy(c);
    return st;
}

clnorm_status clnorm_context_create_from_queue(cl_command_queue queue, clnorm_context **out) {
    clnorm_status st;
    if (!out)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_context_create_from_queue: out is NULL");
    *out = NULL;
    if (!queue)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_context_create_from_queue: queue is NULL");
    cl_command_queue_properties props = 0;
    cl_context cc = NULL;
    cl_device_id dev = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cc, &cc, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof dev, &dev, NULL);
    if (err == CL_INVALID_COMMAND_QUEUE)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "queue is not a valid cl_command_queue");
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clGetCommandQueueInfo");
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "queue: an in-order queue is required "
                                                      "(CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE is set)");
    clnorm_context *c = calloc(1, sizeof *c);
    if (!c)
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory creating a context");
    c->device = dev;
    st = fill_device_info(c, NULL);
    if (st == CLNORM_SUCCESS)
        st = cn_programs_init(c);
    if (st != CLNORM_SUCCESS) {
        cn_programs_release(c);
        free(c->name);
        free(c->cache_id);
        free(c);
        return st;
    }
    clRetainContext(cc);
    clRetainCommandQueue(queue);
    c->context = cc;
    c->queue = queue;
    cn_disk_cache_open(c);
    *out = c;
    return CLNORM_SUCCESS;
}

void clnorm_context_destroy(clnorm_context *c) {
    if (!c)
        return;
    if (c->queue)
        clFinish(c->queue);
    for (int i = 0; i < CN_SCRATCH_COUNT; ++i)
        if (c->scratch[i])
            clReleaseMemObject(c->scratch[i]);
    cn_programs_release(c);
    free(c->kinfo);
    cn_disk_cache_close(c);
    if (c->queue)
        clReleaseCommandQueue(c->queue);
    if (c->context)
        clReleaseContext(c->context);
    free(c->name);
    free(c->cache_id);
    free(c);
}

cl_context clnorm_context_cl_context(const clnorm_context *c) { return c ? c->context : NULL; }
cl_device_id clnorm_context_device(const clnorm_context *c) { return c ? c->device : NULL; }
cl_command_queue clnorm_context_queue(const clnorm_context *c) { return c ? c->queue : NULL; }
const char *clnorm_context_device_name(const clnorm_context *c) { return c ? c->name : NULL; }
const char *clnorm_context_strategy(const clnorm_context *c) {
    return !c ? NULL : c->strategy == CN_STRATEGY_CPU ? "cpu" : "gpu";
}

clnorm_status clnorm_context_finish(clnorm_context *c) {
    if (!c)
        return cn_fail(CLNORM_ERROR_INVALID_ARGUMENT, "clnorm_context_finish: ctx is NULL");
    cl_int err = clFinish(c->queue);
    return err == CL_SUCCESS ? CLNORM_SUCCESS : cn_cl_fail(err, "clFinish");
}

clnorm_status cn_scratch(clnorm_context *c, int slot, size_t bytes, cl_mem *out) {
    if (bytes == 0)
        bytes = 4;
    if (c->scratch_size[slot] < bytes) {
        cl_int err;
        size_t grow = bytes + bytes / 2;
        cl_mem m = clCreateBuffer(c->context, CL_MEM_READ_WRITE, grow, NULL, &err);
        if (err != CL_SUCCESS)
            return cn_cl_fail(err, "clCreateBuffer(scratch)");
        if (c->scratch[slot])
            clReleaseMemObject(c->scratch[slot]); /* freed by OpenCL once the commands using it are done */
        c->scratch[slot] = m;
        c->scratch_size[slot] = grow;
    }
    *out = c->scratch[slot];
    return CLNORM_SUCCESS;
}
