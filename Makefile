# Thin wrapper: `make demo`, `make test`, `make bench`. Checks the Debian packages, configures, builds, runs.
BUILD    ?= build
TYPE     ?= Release
WERROR   ?= OFF
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
PKGS     := cmake make gcc pkg-config ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libcmocka-dev clinfo

.PHONY: all deps configure build demo test bench clean format

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

format:
	clang-format -i include/*.h src/*.c src/*.h tests/*.c tests/*.h examples/*.c $(wildcard bench/*.c)

clean:
	rm -rf $(BUILD)
