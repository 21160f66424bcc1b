# Thin wrapper: `make demo`, `make test`, `make bench`, `make install PREFIX=dir`, `make docs`. Checks the Debian packages, configures, builds, runs.
BUILD    ?= build
TYPE     ?= Release
WERROR   ?= OFF
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
PREFIX   ?= /usr/local
PKGS     := cmake make gcc pkg-config ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libcmocka-dev clinfo

.PHONY: all deps configure build demo test bench clean format install docs

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

demo: build
	./$(BUILD)/clnorm-demo

test: build
	cd $(BUILD) && ctest --output-on-failure -j 1

bench: build
	./$(BUILD)/clnorm-bench $(BENCH_ARGS)
	python3 bench/peers.py --bench ./$(BUILD)/clnorm-bench $(PEERS_ARGS)

# libraries, header, CMake package, pkg-config file and clnorm-info under $(PREFIX) (DESTDIR is honoured)
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

# API reference from the header comments: $(BUILD)/docs/html; fails on any doxygen warning
docs:
	@command -v doxygen >/dev/null 2>&1 || { echo "make docs needs doxygen: sudo apt-get install -y doxygen"; exit 1; }
	@mkdir -p $(BUILD)/docs && rm -f $(BUILD)/docs/warnings.log
	{ cat docs/Doxyfile; echo "OUTPUT_DIRECTORY = $(BUILD)/docs"; echo "WARN_LOGFILE = $(BUILD)/docs/warnings.log"; } | doxygen -
	@if [ -s $(BUILD)/docs/warnings.log ]; then cat $(BUILD)/docs/warnings.log; echo "make docs: doxygen warnings (above)"; exit 1; fi
	@echo "API reference: $(BUILD)/docs/html/index.html"

format:
	clang-format -i include/*.h src/*.c src/*.h tests/*.c tests/*.h examples/*.c tools/*.c $(wildcard bench/*.c)

clean:
	rm -rf $(BUILD)
