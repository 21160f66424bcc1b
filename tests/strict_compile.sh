#!/usr/bin/env bash
# Compiles every OpenCL program the library builds with clang for spir64 at -O0 and fails on any call to a function
# that is neither defined in the program nor an OpenCL builtin. A vendor compiler that does not inline everything
# (-cl-opt-disable, some ROCm and Intel drivers) fails to link such a program, while POCL, which inlines, builds it.
#
# Usage: tests/strict_compile.sh BUILD_DIR
#
# The sources are the library's own: BUILD_DIR/tests/dump_programs builds every program (each storage dtype x
# strategy x variant) and writes each program's source, exactly as the library passes it to
# clCreateProgramWithSource, to <dir>/<name>.cl and its build options to <dir>/<name>.options.
# OpenCL builtins are declared by clang's default header and mangled (_Z...), LLVM intrinsics start with llvm.;
# anything else declared but not defined is a helper without a definition.
set -euo pipefail

build=${1:?usage: $0 BUILD_DIR}
command -v clang >/dev/null 2>&1 || { echo "$0: clang not found (sudo apt-get install -y clang)" >&2; exit 1; }
dump=$(mktemp -d "${TMPDIR:-/tmp}/clnorm-strict.XXXXXX")
trap 'rm -rf "$dump"' EXIT

# both strategies; the GPU strategy also at a work-group of 1 (the kernels' `#if WG > 1` alternatives)
for variant in cpu gpu gpu-wg1; do
    mkdir -p "$dump/$variant"
    wg=""
    [ "$variant" = gpu-wg1 ] && wg=1
    CLNORM_STRATEGY=${variant%%-*} CLNORM_MAX_WORK_GROUP_SIZE=$wg "$build/tests/dump_programs" "$dump/$variant" \
        "${CLNORM_TEST_DEVICE:-pocl}"
done
shopt -s nullglob
files=("$dump"/*/*.cl)
if [ "${#files[@]}" -eq 0 ]; then
    echo "$0: no program was dumped" >&2
    exit 1
fi
failed=0
for src in "${files[@]}"; do
    name=$(basename "$(dirname "$src")")/$(basename "$src" .cl)
    opts=$(cat "${src%.cl}.options")
    # the options clang understands: the language version and the -D defines (CLNORM_BUILD_OPTIONS may add others)
    copts=()
    for o in $opts; do
        case "$o" in -cl-std=* | -D*) copts+=("$o") ;; esac
    done
    ll="${src%.cl}.ll"
    if ! clang -x cl -target spir64 -O0 -Xclang -finclude-default-header "${copts[@]}" -S -emit-llvm -o "$ll" "$src"; then
        echo "FAIL $name: clang could not compile it (options: $opts)" >&2
        failed=1
        continue
    fi
    undefined=$(grep -E '^declare ' "$ll" | grep -oE '@[A-Za-z_.$][A-Za-z0-9_.$]*' | grep -vE '^@(_Z|llvm\.)' | sort -u ||
        true)
    if [ -n "$undefined" ]; then
        echo "FAIL $name: called but not defined at -O0 (options: $opts):" $undefined >&2
        failed=1
    else
        echo "ok   $name ($opts)"
    fi
done
echo "${#files[@]} programs compiled for spir64 at -O0"
exit $failed
