/* Status strings and the thread-local last error. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define CN_ERROR_CAP 16384
static _Thread_local char last_error[CN_ERROR_CAP];

unsigned clnorm_version(void) {
    return CLNORM_VERSION_MAJOR * 10000u + CLNORM_VERSION_MINOR * 100u + CLNORM_VERSION_PATCH;
}

const char *clnorm_status_string(clnorm_status s) {
    switch (s) {
    case CLNORM_SUCCESS: return "success";
    case CLNORM_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case CLNORM_ERROR_SHAPE: return "shape error";
    case CLNORM_ERROR_BUFFER_TOO_SMALL: return "buffer too small";
    case CLNORM_ERROR_UNSUPPORTED: return "unsupported";
    case CLNORM_ERROR_INVALID_STATE: return "invalid state";
    case CLNORM_ERROR_BUILD: return "kernel build failed";
    case CLNORM_ERROR_NO_DEVICE: return "no matching OpenCL device";
    case CLNORM_ERROR_HOST_MEMORY: return "out of host memory";
    case CLNORM_ERROR_DEVICE_MEMORY: return "out of device memory or resources";
    case CLNORM_ERROR_OPENCL: return "OpenCL error";
    }
    return "unknown status";
}

const char *clnorm_last_error(void) { return last_error; }

void cn_clear_error(void) { last_error[0] = '\0'; }

clnorm_status cn_fail(clnorm_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

void cn_append_error(const char *text) {
    size_t n = strlen(last_error);
    if (n + 1 < sizeof last_error)
        snprintf(last_error + n, sizeof last_error - n, "%s", text);
}

const char *cn_cl_error_name(cl_int err) {
    switch (err) {
#define N(x) case x: return #x;
        N(CL_SUCCESS) N(CL_DEVICE_NOT_FOUND) N(CL_DEVICE_NOT_AVAILABLE) N(CL_COMPILER_NOT_AVAILABLE)
        N(CL_MEM_OBJECT_ALLOCATION_FAILURE) N(CL_OUT_OF_RESOURCES) N(CL_OUT_OF_HOST_MEMORY)
        N(CL_PROFILING_INFO_NOT_AVAILABLE) N(CL_MEM_COPY_OVERLAP) N(CL_IMAGE_FORMAT_MISMATCH)
        N(CL_IMAGE_FORMAT_NOT_SUPPORTED) N(CL_BUILD_PROGRAM_FAILURE) N(CL_MAP_FAILURE)
        N(CL_MISALIGNED_SUB_BUFFER_OFFSET) N(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        N(CL_COMPILE_PROGRAM_FAILURE) N(CL_LINKER_NOT_AVAILABLE) N(CL_LINK_PROGRAM_FAILURE)
        N(CL_DEVICE_PARTITION_FAILED) N(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) N(CL_INVALID_VALUE)
        N(CL_INVALID_DEVICE_TYPE) N(CL_INVALID_PLATFORM) N(CL_INVALID_DEVICE) N(CL_INVALID_CONTEXT)
        N(CL_INVALID_QUEUE_PROPERTIES) N(CL_INVALID_COMMAND_QUEUE) N(CL_INVALID_HOST_PTR)
        N(CL_INVALID_MEM_OBJECT) N(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) N(CL_INVALID_IMAGE_SIZE)
        N(CL_INVALID_SAMPLER) N(CL_INVALID_BINARY) N(CL_INVALID_BUILD_OPTIONS) N(CL_INVALID_PROGRAM)
        N(CL_INVALID_PROGRAM_EXECUTABLE) N(CL_INVALID_KERNEL_NAME) N(CL_INVALID_KERNEL_DEFINITION)
        N(CL_INVALID_KERNEL) N(CL_INVALID_ARG_INDEX) N(CL_INVALID_ARG_VALUE) N(CL_INVALID_ARG_SIZE)
        N(CL_INVALID_KERNEL_ARGS) N(CL_INVALID_WORK_DIMENSION) N(CL_INVALID_WORK_GROUP_SIZE)
        N(CL_INVALID_WORK_ITEM_SIZE) N(CL_INVALID_GLOBAL_OFFSET) N(CL_INVALID_EVENT_WAIT_LIST)
        N(CL_INVALID_EVENT) N(CL_INVALID_OPERATION) N(CL_INVALID_GL_OBJECT) N(CL_INVALID_BUFFER_SIZE)
        N(CL_INVALID_MIP_LEVEL) N(CL_INVALID_GLOBAL_WORK_SIZE) N(CL_INVALID_PROPERTY)
        N(CL_INVALID_IMAGE_DESCRIPTOR) N(CL_INVALID_COMPILER_OPTIONS) N(CL_INVALID_LINKER_OPTIONS)
        N(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef N
    default: return "unknown OpenCL error";
    }
}

clnorm_status cn_cl_fail(cl_int err, const char *call) {
    clnorm_status s = CLNORM_ERROR_OPENCL;
    if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES)
        s = CLNORM_ERROR_DEVICE_MEMORY;
    else if (err == CL_OUT_OF_HOST_MEMORY)
        s = CLNORM_ERROR_HOST_MEMORY;
    return cn_fail(s, "%s failed: %s (%d)", call, cn_cl_error_name(err), (int)err);
}

clnorm_status clnorm_set_last_error(clnorm_status s, const char *message) {
    return cn_fail(s, "%s", message ? message : "");
}
