# CLNORM_SANITIZE: a comma-separated -fsanitize list (e.g. "address,undefined") applied to everything this
# project compiles and links (library, tests, examples). Empty (default): no sanitizer. Used by `make check-memory`
# (build folder build-asan/); run the tests with ASAN_OPTIONS / LSAN_OPTIONS / UBSAN_OPTIONS as that rule does.
set(CLNORM_SANITIZE "" CACHE STRING "Sanitizers for library and tests, e.g. address,undefined (empty: none)")
if(CLNORM_SANITIZE)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "CLNORM_SANITIZE needs gcc or clang")
  endif()
  add_compile_options(-fsanitize=${CLNORM_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${CLNORM_SANITIZE})
  if(CLNORM_SANITIZE MATCHES "undefined")
    add_compile_options(-fno-sanitize-recover=undefined)
  endif()
  message(STATUS "clnorm: building with -fsanitize=${CLNORM_SANITIZE}")
endif()

# CLNORM_BUILD_FUZZ: the libFuzzer targets fuzz/fuzz_api.c and fuzz/fuzz_cache.c (clang only). Everything is compiled with
# -fsanitize=fuzzer-no-link,address,undefined (coverage for the fuzzer, ASan + UBSan on library and target);
# `make fuzz FUZZ_SECONDS=60` builds them in build-fuzz/ and runs them (a quarter of the time fuzz_cache, the rest fuzz_api).
option(CLNORM_BUILD_FUZZ "Build the libFuzzer targets fuzz_api and fuzz_cache (needs clang)" OFF)
if(CLNORM_BUILD_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "CLNORM_BUILD_FUZZ needs clang (configure with CC=clang)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
  add_subdirectory(${CMAKE_CURRENT_LIST_DIR}/../fuzz ${CMAKE_BINARY_DIR}/fuzz-target)
endif()
