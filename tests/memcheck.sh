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
# folder, filled under valgrind's no-op tool, which sees the same CPU model as memcheck), so that memcheck does not
# spend minutes in LLVM compiling the kernels.
export POCL_DEVICES=basic POCL_CACHE_DIR="$build/memcheck-cache/pocl" CLNORM_CACHE_DIR="$build/memcheck-cache/clnorm"
export CLNORM_TEST_REQUIRE_DEVICE="${CLNORM_TEST_REQUIRE_DEVICE:-1}" CLNORM_TEST_DEVICE="${CLNORM_TEST_DEVICE:-pocl}"
runs=("test_layer:test_backward_grads" "test_layer:test_inplace" "test_layer:test_empty" "test_layer:test_read_write"
      "test_functional:test_*_then_*" "test_functional:test_inference_inplace"
      "test_functional:test_backward_optional_args" "test_errors:test_overlap" "test_hostile:test_subbuffer_overlap"
      "test_hostile:test_wrong_counts")
# one strategy's runs, its report on stdout; exit status 1 when any run failed
run_strategy() {
    local strategy=$1 status=0 tmp
    tmp=$(mktemp "${TMPDIR:-/tmp}/memcheck.$strategy.XXXXXX")
    for r in "${runs[@]}"; do
        bin=${r%%:*} filter=${r#*:}
        # warm up under valgrind's no-op tool: under valgrind the CPU looks like another one (haswell here, no
        # AVX-512), so POCL's device and both kernel caches differ from a native run's; filling them without
        # memcheck's instrumentation costs ~50 s instead of minutes of LLVM under memcheck
        CLNORM_STRATEGY=$strategy CLNORM_TEST_FILTER="$filter" valgrind --tool=none -q "$build/tests/$bin" \
            >/dev/null 2>&1 || true
        echo "== memcheck $bin ${filter:+($filter) }CLNORM_STRATEGY=$strategy"
        start=$(date +%s)
        if ! CLNORM_STRATEGY=$strategy CLNORM_TEST_FILTER="$filter" valgrind -q --error-exitcode=99 \
                --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
                --num-callers=40 --suppressions="$here/valgrind.supp" "$build/tests/$bin" >"$tmp" 2>&1; then
            cat "$tmp"
            echo "memcheck: FAILED: $bin $filter ($strategy)"
            status=1
        else
            grep -E "PASSED|FAILED" "$tmp" | tail -1
        fi
        echo "   $(( $(date +%s) - start )) s"
    done
    rm -f "$tmp"
    return $status
}

# the two strategies side by side (valgrind runs a process on one core; the warm-ups write the shared caches
# atomically), reports printed in order
logs=$(mktemp -d "${TMPDIR:-/tmp}/memcheck.XXXXXX")
trap 'rm -rf "$logs"' EXIT
run_strategy cpu >"$logs/cpu" 2>&1 &
cpu_pid=$!
run_strategy gpu >"$logs/gpu" 2>&1 &
gpu_pid=$!
status=0
wait $cpu_pid || status=1
wait $gpu_pid || status=1
cat "$logs/cpu" "$logs/gpu"
exit $status
