# cmake -P script: turns include/clnorm.h into plain C declarations for cffi (ABI mode) in OUT.
# The C preprocessor expands the header with cmake/python-stub/ as the only include folder (opaque OpenCL handle
# typedefs, empty stddef.h / stdint.h: cffi knows size_t and uint64_t), so struct layouts and enum values come from
# the header itself, never from a hand-written copy. GCC attributes are removed (cffi's parser does not take them).
# Inputs: CC (the C compiler), HEADER, STUB (cmake/python-stub), OUT.
execute_process(
  COMMAND ${CC} -E -P -nostdinc -I${STUB} -DCLNORM_CFFI_CDEF=1 -x c ${HEADER}
  OUTPUT_VARIABLE text RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "preprocessing ${HEADER} for cffi failed: ${err}")
endif()
string(REGEX REPLACE "__attribute__ *\\(\\([^()]*(\\([^()]*\\))?[^()]*\\)\\)" "" text "${text}")
string(REGEX REPLACE "\n[ \t]*\n+" "\n" text "${text}")
file(WRITE ${OUT} "/* generated from include/clnorm.h by cmake/python_cdef.cmake: do not edit */\n${text}")
