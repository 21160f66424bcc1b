#!/usr/bin/env bash
# valgrind memcheck over a representative subset of the suites (make check-memory runs it on the normal build):
# layer training / backward / in-place / empty / read-write, functional train-then-backward, in-place and optional
# arguments, refused overlapping views and sub-buffers, wrong counts; both kernel strategies. (The whole layer suite
# takes ~2.5 min per strategy under memcheck, kernels included, so CI runs this subset.)
# Usage: tests/memcheck.sh BUILD_DIR. Fails on any memcheck error or definite leak not in tests/valgrind.supp.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
# Under valgrind POCL runs its 'basic' device; warm POCL's and clnorm's kernel caches for it first (a separate
# folder), so that memcheck does not spend minutes in LLVM compiling the kernels.
export POCL_DEVICES=basic POCL_CACHE_DIR="$build/memcheck-cache/pocl" CLNORM_CACHE_DIR="$build/memcheck-cache/clnorm"
export CLNORM_TEST_REQUIRE_DEVICE="${CLNORM_TEST_REQUIRE_DEVICE:-1}" CLNORM_TEST_DEVICE="${CLNORM_TEST_DEVICE:-pocl}"
runs=("test_layer:test_backward_grads" "test_layer:test_inplace" "test_layer:test_empty" "test_layer:test_read_write"
      "test_functional:test_*_then_*" "test_functional:test_inference_inplace"
      "test_functional:test_backward_optional_args" "test_errors:test_overlap" "test_hostile:test_subbuffer_overlap"
      "test_hostile:test_wrong_counts")
status=0
for strategy in cpu gpu; do
    for r in "${runs[@]}"; do
        bin=${r%%:*} filter=${r#*:}
        CLNORM_STRATEGY=$strategy CLNORM_TEST_FILTER="$filter" "$build/tests/$bin" >/dev/null 2>&1 || true # warm up
        echo "== memcheck $bin ${filter:+($filter) }CLNORM_STRATEGY=$strategy"
        start=$(date +%s)
        if ! CLNORM_STRATEGY=$strategy CLNORM_TEST_FILTER="$filter" valgrind -q --error-exitcode=99 \
                --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
                --num-callers=40 --suppressions="$here/valgrind.supp" "$build/tests/$bin" >/tmp/memcheck.$$.log 2>&1; then
            cat /tmp/memcheck.$$.log
            echo "memcheck: FAILED: $bin $filter ($strategy)"
            status=1
        else
            grep -E "PASSED|FAILED" /tmp/memcheck.$$.log | tail -1
        fi
        echo "   $(( $(date +%s) - start )) s"
    done
done
rm -f /tmp/memcheck.$$.log
exit $status
