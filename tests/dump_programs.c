/*
 * dump_programs: writes the source and build options of every OpenCL program the library builds, exactly as it
 * hands them to OpenCL, for tests/strict_compile.sh (clang, spir64, -O0).
 *
 * Usage: CLNORM_STRATEGY=cpu|gpu dump_programs DIR [DEVICE]   (DEVICE: default "pocl")
 *
 * It builds the fallback program (the whole kernel set, unstripped) and fetches every kernel (cn_get_kernel, each
 * program variant -- storage dtype x streaming or plain stores -- x each kernel id), which builds every program the
 * library can build for this strategy and
 * work-group size (CLNORM_MAX_WORK_GROUP_SIZE picks another). The link wraps clCreateProgramWithSource and clBuildProgram
 * (-Wl,--wrap, see tests/CMakeLists.txt): the first records the program's source, the second writes it with its
 * options to DIR/program-<n>.cl and DIR/program-<n>.options. The disk cache is turned off (CLNORM_CACHE=0) so that
 * every program is built from source. Exit status 0 when every kernel was built.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

cl_program __real_clCreateProgramWithSource(cl_context context, cl_uint count, const char **strings,
                                            const size_t *lengths, cl_int *err);
cl_int __real_clBuildProgram(cl_program program, cl_uint ndev, const cl_device_id *devices, const char *options,
                             void(CL_CALLBACK *notify)(cl_program, void *), void *user);

#define MAX_PROGRAMS 256
static struct {
    cl_program program;
    char *text;
} recorded[MAX_PROGRAMS];
static int n_recorded, n_written;
static const char *dump_dir;

cl_program __wrap_clCreateProgramWithSource(cl_context context, cl_uint count, const char **strings,
                                            const size_t *lengths, cl_int *err) {
    cl_program p = __real_clCreateProgramWithSource(context, count, strings, lengths, err);
    size_t total = 0;
    for (cl_uint i = 0; i < count; ++i)
        total += lengths && lengths[i] ? lengths[i] : strlen(strings[i]);
    char *text = malloc(total + 1);
    if (p && text && n_recorded < MAX_PROGRAMS) {
        size_t at = 0;
        for (cl_uint i = 0; i < count; ++i) {
            size_t n = lengths && lengths[i] ? lengths[i] : strlen(strings[i]);
            memcpy(text + at, strings[i], n);
            at += n;
        }
        text[at] = '\0';
        recorded[n_recorded].program = p;
        recorded[n_recorded++].text = text;
    } else {
        free(text);
    }
    return p;
}

cl_int __wrap_clBuildProgram(cl_program program, cl_uint ndev, const cl_device_id *devices, const char *options,
                             void(CL_CALLBACK *notify)(cl_program, void *), void *user) {
    for (int i = 0; i < n_recorded; ++i)
        if (recorded[i].program == program && recorded[i].text) {
            char path[4096];
            snprintf(path, sizeof path, "%s/program-%03d.cl", dump_dir, n_written);
            FILE *f = fopen(path, "w");
            if (f) {
                fputs(recorded[i].text, f);
                fclose(f);
            }
            snprintf(path, sizeof path, "%s/program-%03d.options", dump_dir, n_written);
            f = fopen(path, "w");
            if (f) {
                fprintf(f, "%s\n", options ? options : "");
                fclose(f);
            }
            ++n_written;
            free(recorded[i].text);
            recorded[i].text = NULL;
        }
    return __real_clBuildProgram(program, ndev, devices, options, notify, user);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dump_programs DIR [DEVICE]\n");
        return 2;
    }
    dump_dir = argv[1];
    const char *device = argc > 2 ? argv[2] : "pocl";
    setenv("CLNORM_CACHE", "0", 1);
    clnorm_context *ctx = NULL;
    clnorm_status st = clnorm_context_create(device, &ctx);
    if (st != CLNORM_SUCCESS) {
        fprintf(stderr, "dump_programs: no context on \"%s\": %s: %s\n", device, clnorm_status_string(st),
                clnorm_last_error());
        return 1;
    }
    int failed = 0;
    for (int v = 0; v < CN_VARIANT_COUNT; ++v) {
        /* the fallback program too: the whole kernel set unstripped */
        st = cn_build_whole_set(ctx, v);
        if (st != CLNORM_SUCCESS) {
            fprintf(stderr, "dump_programs: the whole set, variant %d: %s: %s\n", v, clnorm_status_string(st),
                    clnorm_last_error());
            failed = 1;
        }
        for (int id = 0; id < K_COUNT; ++id) {
            cl_kernel k = NULL;
            st = cn_get_kernel(ctx, v, (cn_kernel_id)id, &k);
            if (st != CLNORM_SUCCESS) {
                fprintf(stderr, "dump_programs: kernel %d, variant %d: %s: %s\n", id, v, clnorm_status_string(st),
                        clnorm_last_error());
                failed = 1;
            }
        }
    }
    printf("dump_programs: %d programs written to %s (device \"%s\", strategy %s)\n", n_written, dump_dir,
           clnorm_context_device_name(ctx), clnorm_context_strategy(ctx));
    clnorm_context_destroy(ctx);
    return failed || n_written == 0 ? 1 : 0;
}
