# Thin wrapper: `make demo`, `make test`, `make bench`, `make install PREFIX=dir`, `make docs`. Checks the Debian packages, configures, builds, runs.
BUILD    ?= build
TYPE     ?= Release
WERROR   ?= OFF
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
CTEST_ARGS ?=
PREFIX   ?= /usr/local
PKGS     := cmake make gcc pkg-config ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libcmocka-dev clinfo \
            python3 python3-venv libopenmpi-dev openmpi-bin oclgrind
# Python package: a venv under the build folder, the package installed into it the README's way (pip install .)
PYTHON   ?= python3
VENV     ?= $(BUILD)/venv
PY_DEPS  := numpy pyopencl h5py cffi pytest scikit-build-core
PY_ENV   := POCL_CACHE_DIR=$(CURDIR)/$(BUILD)/pocl-cache CLNORM_CACHE_DIR=$(CURDIR)/$(BUILD)/clnorm-cache

.PHONY: all deps configure build demo test bench clean format install docs check-memory check-asan check-valgrind fuzz \
        python check-oclgrind check-strict

all: build

deps:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "clnorm needs these Debian packages; run:"; \
	    echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(TYPE) -DCLNORM_WERROR=$(WERROR) $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build python
	./$(BUILD)/clnorm-demo
	$(PY_ENV) $(VENV)/bin/python examples/demo.py

test: build python
	cd $(BUILD) && ctest --output-on-failure -j 1 $(CTEST_ARGS)
	$(PY_ENV) $(VENV)/bin/python -m pytest -q -p no:cacheprovider python/tests
	@# the modules' comm= (python/tests/test_mpi.py) on 2 and 3 ranks, when mpi4py is in the venv
	@if $(VENV)/bin/python -c "import mpi4py" 2>/dev/null; then \
	  root=""; [ "$$(id -u)" = 0 ] && root="--allow-run-as-root"; \
	  for n in 2 3; do echo "python/tests/test_mpi.py under mpirun -np $$n"; \
	    $(PY_ENV) CLNORM_MPI_TEST=1 timeout 600 mpirun $$root --oversubscribe -np $$n \
	      $(VENV)/bin/python -m pytest -q -x -p no:cacheprovider python/tests/test_mpi.py || exit 1; \
	  done; \
	else echo "mpi4py is not importable in $(VENV): the MPI pytest runs are skipped"; fi

# the venv (made once; numpy pyopencl h5py cffi pytest scikit-build-core from PyPI, and mpi4py when mpicc exists),
# then `pip install .` into it:
# scikit-build-core builds this CMakeLists.txt in $(BUILD)/python-build (incremental) and installs the package
python: deps
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@test -f $(VENV)/.clnorm-deps || { $(VENV)/bin/pip install -q --upgrade pip && \
	  $(VENV)/bin/pip install -q $(PY_DEPS) && touch $(VENV)/.clnorm-deps; }
	@# mpi4py (compiled against the system MPI's mpicc) for comm= and its tests: tried once per venv
	@test -f $(VENV)/.clnorm-mpi4py || { if command -v mpicc >/dev/null 2>&1; then \
	  $(VENV)/bin/pip install -q mpi4py || echo "mpi4py did not install: the MPI pytest runs will be skipped"; fi; \
	  touch $(VENV)/.clnorm-mpi4py; }
	$(VENV)/bin/pip install -q --no-build-isolation -C build-dir=$(BUILD)/python-build .

# Memory checks: the whole ctest suite (but `large`) built with -fsanitize=$(SANITIZE) in $(ASAN_BUILD)/, then
# valgrind memcheck over a subset on the normal build (tests/memcheck.sh). Suppressions: tests/lsan.supp,
# tests/valgrind.supp (POCL / LLVM / ld.so internals only). Under ASan tests/asan_run.sh runs each suite and
# repeats it once when its only fault was LeakSanitizer's own tracer crash at exit (see the script). Needs valgrind.
ASAN_BUILD ?= build-asan
SANITIZE   ?= address,undefined
check-memory: check-asan check-valgrind

check-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCLNORM_SANITIZE=$(SANITIZE) -DCLNORM_BUILD_BENCH=OFF -DCLNORM_TEST_TIMEOUT=900 -DCLNORM_TEST_CPU_STREAMING=OFF \
	  -DCMAKE_CROSSCOMPILING_EMULATOR=$(CURDIR)/tests/asan_run.sh $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS) -LE large

check-valgrind: build
	tests/memcheck.sh $(BUILD)

# libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) in $(FUZZ_BUILD)/, FUZZ_SECONDS in all:
# fuzz/fuzz_cache.c (the kernel cache's file parser, no device) a quarter of it, corpus $(FUZZ_BUILD)/corpus-cache;
# then fuzz/fuzz_api.c (the public API on POCL) the rest, corpus $(FUZZ_BUILD)/corpus, through tests/asan_run.sh
# (one repeat when LeakSanitizer's tracer crashes at exit and nothing else failed).
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLNORM_BUILD_FUZZ=ON \
	  -DCLNORM_BUILD_TESTS=OFF -DCLNORM_BUILD_BENCH=OFF -DCLNORM_BUILD_EXAMPLES=OFF $(CMAKE_ARGS)
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_api fuzz_cache
	mkdir -p $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/corpus-cache
	cache_s=$$(( $(FUZZ_SECONDS) / 4 )); [ $$cache_s -ge 1 ] || cache_s=1; \
	api_s=$$(( $(FUZZ_SECONDS) - cache_s )); [ $$api_s -ge 1 ] || api_s=1; \
	cd $(FUZZ_BUILD) && ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 \
	  ./fuzz_cache -max_total_time=$$cache_s -max_len=1024 -print_final_stats=1 corpus-cache && \
	ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  POCL_CACHE_DIR=$(CURDIR)/$(FUZZ_BUILD)/pocl-cache CLNORM_CACHE_DIR=$(CURDIR)/$(FUZZ_BUILD)/clnorm-cache \
	  $(CURDIR)/tests/asan_run.sh ./fuzz_api -max_total_time=$$api_s -timeout=300 -rss_limit_mb=6144 -max_len=64 -len_control=0 -print_final_stats=1 corpus

# Oclgrind (strict OpenCL 1.2 simulator): the cmocka suites but threads (crashes inside Oclgrind 21.10's runtime),
# large (beyond its buffers), MPI and Python, both strategies, on the Oclgrind device with --data-races --check-api,
# in $(OCLGRIND_BUILD)/ where tests/oclgrind.sh wraps every ctest command and fails on any Oclgrind message.
# OCLGRIND_CTEST_ARGS narrows it (e.g. -R 'functional|errors'). Needs oclgrind.
# Each suite may take up to 1200 s on the simulator (fused.gpu took 287 s and then 300+ s, over the default 300 s
# timeout, on a 2-core AMD EPYC VM).
OCLGRIND_BUILD ?= build-oclgrind
OCLGRIND_CTEST_ARGS ?=
check-oclgrind: deps
	@command -v oclgrind >/dev/null 2>&1 || { echo "make check-oclgrind needs oclgrind: sudo apt-get install -y oclgrind"; exit 1; }
	cmake -S . -B $(OCLGRIND_BUILD) -DCMAKE_BUILD_TYPE=$(TYPE) -DCLNORM_WERROR=$(WERROR) -DCLNORM_BUILD_BENCH=OFF -DCLNORM_BUILD_EXAMPLES=OFF -DCLNORM_TEST_TIMEOUT=1200 \
	  -DCMAKE_CROSSCOMPILING_EMULATOR=$(CURDIR)/tests/oclgrind.sh $(CMAKE_ARGS)
	cmake --build $(OCLGRIND_BUILD) -j $(JOBS)
	cd $(OCLGRIND_BUILD) && CLNORM_TEST_DEVICE=oclgrind CLNORM_TEST_REQUIRE_DEVICE=1 \
	  ctest --output-on-failure -j $(JOBS) -LE '^(threads|large|mpi|python)$$' $(OCLGRIND_CTEST_ARGS)

# Strict OpenCL C: every program the library builds (tests/dump_programs), compiled by clang for spir64 at -O0;
# any helper called but not defined (a plain C99 inline, say) fails, as it would on a driver that does not inline.
check-strict: build
	@command -v clang >/dev/null 2>&1 || { echo "make check-strict needs clang: sudo apt-get install -y clang"; exit 1; }
	tests/strict_compile.sh $(BUILD)

NHWC_SHAPES := --shape 32,256,28,28 --shape 8,64,16,32,32
bench: build python
	./$(BUILD)/clnorm-bench $(BENCH_ARGS)
	$(PY_ENV) $(VENV)/bin/python bench/python_bench.py $(PYBENCH_ARGS)
	python3 bench/peers.py --bench ./$(BUILD)/clnorm-bench $(PEERS_ARGS)
	@echo "== channels-last (NHWC; PyTorch channels_last / channels_last_3d) and 16-bit rows"
	python3 bench/peers.py --bench ./$(BUILD)/clnorm-bench --layout nhwc $(NHWC_SHAPES) --op train --op infer --op bwd $(PEERS_ARGS)
	python3 bench/peers.py --bench ./$(BUILD)/clnorm-bench --dtype bf16 $(NHWC_SHAPES) --op train --op infer --op bwd $(PEERS_ARGS)
	python3 bench/peers.py --bench ./$(BUILD)/clnorm-bench --dtype f16 $(NHWC_SHAPES) --op train --op infer --op bwd $(PEERS_ARGS)

# libraries, header, CMake package, pkg-config file and clnorm-info under $(PREFIX) (DESTDIR is honoured)
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

# API reference from the header comments and docs/SEMANTICS.md: $(BUILD)/docs/html; fails on any doxygen warning
# (doxygen is installed like the other targets' packages: apt-get as root, else the command to run is printed)
docs:
	@$(MAKE) --no-print-directory deps PKGS=doxygen
	@mkdir -p $(BUILD)/docs && rm -f $(BUILD)/docs/warnings.log
	{ cat docs/Doxyfile; echo "OUTPUT_DIRECTORY = $(BUILD)/docs"; echo "WARN_LOGFILE = $(BUILD)/docs/warnings.log"; } | doxygen -
	@if [ -s $(BUILD)/docs/warnings.log ]; then cat $(BUILD)/docs/warnings.log; echo "make docs: doxygen warnings (above)"; exit 1; fi
	@echo "API reference: $(BUILD)/docs/html/index.html"

format:
	clang-format -i include/*.h src/*.c src/*.h tests/*.c tests/*.h examples/*.c tools/*.c $(wildcard bench/*.c)

clean:
	rm -rf $(BUILD)
