/* Platform/device discovery and the selector grammar:
 *   NULL or ""  -> $CLNORM_DEVICE if set, else the first GPU, accelerator, CPU (in that order of preference),
 *                  else the first device of any type
 *   "P:D"       -> platform P, device D (indices as clinfo -l lists them)
 *   other text  -> the first device whose "<platform name> <device name>" contains it, case-insensitively */
#include "internal.h"

#include <CL/cl_ext.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CN_MAX_PLATFORMS 16
#define CN_MAX_DEVICES 64

static char *info_string(cl_platform_id p, cl_device_id d, cl_uint param) {
    size_t n = 0;
    cl_int err = d ? clGetDeviceInfo(d, param, 0, NULL, &n) : clGetPlatformInfo(p, param, 0, NULL, &n);
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    s[0] = '\0';
    if (err == CL_SUCCESS && n > 0)
        err = d ? clGetDeviceInfo(d, param, n, s, NULL) : clGetPlatformInfo(p, param, n, s, NULL);
    s[err == CL_SUCCESS ? n : 0] = '\0';
    return s;
}

char *cn_device_full_name(cl_platform_id platform, cl_device_id device) {
    char *pn = info_string(platform, NULL, CL_PLATFORM_NAME);
    char *dn = info_string(NULL, device, CL_DEVICE_NAME);
    char *out = NULL;
    if (pn && dn) {
        size_t n = strlen(pn) + strlen(dn) + 2;
        out = malloc(n);
        if (out)
            snprintf(out, n, "%s %s", pn, dn);
    }
    free(pn);
    free(dn);
    return out;
}

/* what a substring selector is matched against: "<platform name> <device name>", then the platform vendor and
 * version and the device vendor, so that "pocl" finds "Portable Computing Language" (version "OpenCL 3.0 PoCL ...") */
static char *match_text(cl_platform_id platform, cl_device_id device) {
    char *parts[4] = {cn_device_full_name(platform, device), info_string(platform, NULL, CL_PLATFORM_VENDOR),
                      info_string(platform, NULL, CL_PLATFORM_VERSION), info_string(NULL, device, CL_DEVICE_VENDOR)};
    size_t n = 1;
    for (int i = 0; i < 4; ++i)
        n += (parts[i] ? strlen(parts[i]) : 0) + 3;
    char *out = malloc(n);
    if (out) {
        out[0] = '\0';
        for (int i = 0; i < 4; ++i)
            if (parts[i]) {
                strcat(out, i ? " | " : "");
                strcat(out, parts[i]);
            }
    }
    for (int i = 0; i < 4; ++i)
        free(parts[i]);
    return out;
}

int cn_contains_nocase(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; ++hay) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            ++i;
        if (i == n)
            return 1;
    }
    return n == 0;
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

typedef struct {
    cl_platform_id platform;
    cl_device_id device;
    unsigned p, d;
    cl_device_type type;
} found_t;

/* all devices of all platforms, in clinfo order */
static clnorm_status enumerate(found_t *out, size_t *count) {
    cl_platform_id plats[CN_MAX_PLATFORMS];
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(CN_MAX_PLATFORMS, plats, &np);
    *count = 0;
    if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && np == 0))
        return cn_fail(CLNORM_ERROR_NO_DEVICE, "no OpenCL platform is installed (is an ICD such as "
                                               "pocl-opencl-icd present in /etc/OpenCL/vendors?)");
    if (err != CL_SUCCESS)
        return cn_cl_fail(err, "clGetPlatformIDs");
    if (np > CN_MAX_PLATFORMS)
        np = CN_MAX_PLATFORMS;
    for (cl_uint p = 0; p < np; ++p) {
        cl_device_id devs[CN_MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, CN_MAX_DEVICES, devs, &nd) != CL_SUCCESS)
            continue;
        if (nd > CN_MAX_DEVICES)
            nd = CN_MAX_DEVICES;
        for (cl_uint d = 0; d < nd && *count < CN_MAX_PLATFORMS * CN_MAX_DEVICES; ++d) {
            found_t *f = &out[(*count)++];
            f->platform = plats[p];
            f->device = devs[d];
            f->p = p;
            f->d = d;
            f->type = 0;
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof f->type, &f->type, NULL);
        }
    }
    return CLNORM_SUCCESS;
}

static clnorm_status no_match(const char *selector, const found_t *all, size_t n) {
    cn_fail(CLNORM_ERROR_NO_DEVICE, "no OpenCL device matches \"%s\"; devices present:%s", selector,
            n ? "" : " none");
    for (size_t i = 0; i < n; ++i) {
        char line[512];
        char *name = cn_device_full_name(all[i].platform, all[i].device);
        snprintf(line, sizeof line, "\n  %u:%u  %s (%s)", all[i].p, all[i].d, name ? name : "?",
                 type_name(all[i].type));
        free(name);
        cn_append_error(line);
    }
    return CLNORM_ERROR_NO_DEVICE;
}

clnorm_status cn_select_device(const char *selector, cl_platform_id *platform, cl_device_id *device) {
    found_t *list = malloc(sizeof(found_t) * CN_MAX_PLATFORMS * CN_MAX_DEVICES);
    size_t n = 0;
    clnorm_status st;
    if (!list)
        return cn_fail(CLNORM_ERROR_HOST_MEMORY, "out of host memory listing devices");
    if (!selector || !*selector) {
        const char *env = getenv("CLNORM_DEVICE");
        selector = (env && *env) ? env : NULL;
    }
    st = enumerate(list, &n);
    if (st != CLNORM_SUCCESS)
        goto done;
    const found_t *pick = NULL;
    if (!selector) {
        static const cl_device_type order[] = {CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_ACCELERATOR, CL_DEVICE_TYPE_CPU};
        for (size_t o = 0; o < 3 && !pick; ++o)
            for (size_t i = 0; i < n && !pick; ++i)
                if (list[i].type & order[o])
                    pick = &list[i];
        if (!pick && n)
            pick = &list[0];
        if (!pick) {
            st = no_match("(default: first GPU, accelerator or CPU)", list, n);
            goto done;
        }
    } else {
        unsigned p, d;
        char tail;
        if (sscanf(selector, "%u:%u%c", &p, &d, &tail) == 2) {
            for (size_t i = 0; i < n && !pick; ++i)
                if (list[i].p == p && list[i].d == d)
                    pick = &list[i];
        } else {
            for (size_t i = 0; i < n && !pick; ++i) {
                char *name = match_text(list[i].platform, list[i].device);
                if (name && cn_contains_nocase(name, selector))
                    pick = &list[i];
                free(name);
            }
        }
        if (!pick) {
            st = no_match(selector, list, n);
            goto done;
        }
    }
    *platform = pick->platform;
    *device = pick->device;
done:
    free(list);
    return st;
}
