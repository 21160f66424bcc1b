/*
 * dump_programs: builds every OpenCL program the library can build for one context (each storage dtype, and each
 * variant of the program for this strategy), so that CLNORM_DUMP_SOURCE=<dir> writes all of their sources and build
 * options; tests/strict_compile.sh then compiles them with clang for spir64 at -O0.
 *
 * Usage: CLNORM_STRATEGY=cpu|gpu CLNORM_DUMP_SOURCE=<dir> dump_programs [DEVICE]   (DEVICE: default "pocl")
 * Exit status 0 when every program built.
 */
#include <stdio.h>

#include "internal.h"

int main(int argc, char **argv) {
    const char *device = argc > 1 ? argv[1] : "pocl";
    clnorm_context *ctx = NULL;
    clnorm_status st = clnorm_context_create(device, &ctx);
    if (st != CLNORM_SUCCESS) {
        fprintf(stderr, "dump_programs: no context on \"%s\": %s: %s\n", device, clnorm_status_string(st),
                clnorm_last_error());
        return 1;
    }
    int n = 0;
    st = cn_build_all_programs(ctx, &n);
    if (st != CLNORM_SUCCESS)
        fprintf(stderr, "dump_programs: %s: %s\n", clnorm_status_string(st), clnorm_last_error());
    else
        printf("dump_programs: %d programs built on \"%s\", strategy %s\n", n, clnorm_context_device_name(ctx),
               clnorm_context_strategy(ctx));
    clnorm_context_destroy(ctx);
    return st == CLNORM_SUCCESS ? 0 : 1;
}
