#!/usr/bin/env bash
# Runs one test binary on Oclgrind (a strict OpenCL 1.2 simulator) and fails on any message it prints.
#
# Usage: tests/oclgrind.sh PROGRAM [ARGS...]
#
# `make check-oclgrind` configures a build with this script as CMAKE_CROSSCOMPILING_EMULATOR, so ctest runs every
# suite through it. Oclgrind checks the OpenCL API use (--check-api) and every kernel's memory accesses, barriers
# and work-group divergence, and with --data-races the races between work-items. Its messages go to a log file
# (OCLGRIND_LOG, appended to by child processes too); a non-empty log fails the run even when the program passed.
#
# Environment: OCLGRIND_ARGS replaces the default "--data-races --check-api" (e.g. add --uninitialized at
# CLNORM_BUILD_OPTIONS=-cl-opt-disable, see the README's "Oclgrind" section).
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 PROGRAM [ARGS...]" >&2
    exit 2
fi
command -v oclgrind >/dev/null 2>&1 || { echo "$0: oclgrind not found (sudo apt-get install -y oclgrind)" >&2; exit 1; }

log=$(mktemp "${TMPDIR:-/tmp}/clnorm-oclgrind.XXXXXX")
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086 # OCLGRIND_ARGS is a word list
oclgrind ${OCLGRIND_ARGS:---data-races --check-api} --log "$log" "$@"
rc=$?
if [ -s "$log" ]; then
    echo "== Oclgrind reported (log of $(basename "$1")):" >&2
    cat "$log" >&2
    [ "$rc" = 0 ] && rc=1
fi
exit "$rc"
