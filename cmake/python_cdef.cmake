# cmake -P script: turns include/clnorm.h into plain C declarations for cffi (ABI mode) in OUT.
# The C preprocessor expands the header with cmake/python-stub/ as the only include folder (opaque OpenCL handle
# typedefs, empty stddef.h / stdint.h: cffi knows size_t and uint64_t), so struct layouts and enum values come from
# the header itself, never from a hand-written copy. GCC attributes are removed (cffi's parser does not take them).
# Inputs: CC (the C compiler), HEADER, STUB (cmake/python-stub), OUT; optional STUB2 (a second include folder: the
# generated mpi.h of the MPI declarations) and DEFINES (","-separated NAME or NAME=VALUE, e.g. CLNORM_H so that
# clnorm_mpi.h's #include "clnorm.h" adds nothing: its declarations are already in _clnorm_cdef.h).
set(extra "")
if(STUB2)
  list(APPEND extra -I${STUB2})
endif()
string(REPLACE "," ";" defines "${DEFINES}")
foreach(d ${defines})
  list(APPEND extra -D${d})
endforeach()
execute_process(
  COMMAND ${CC} -E -P -nostdinc -I${STUB} ${extra} -DCLNORM_CFFI_CDEF=1 -x c ${HEADER}
  OUTPUT_VARIABLE text RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "preprocessing ${HEADER} for cffi failed: ${err}")
endif()
string(REGEX REPLACE "__attribute__ *\\(\\([^()]*(\\([^()]*\\))?[^()]*\\)\\)" "" text "${text}")
string(REGEX REPLACE "\n[ \t]*\n+" "\n" text "${text}")
get_filename_component(hname ${HEADER} NAME)
file(WRITE ${OUT} "/* generated from include/${hname} by cmake/python_cdef.cmake: do not edit */\n${text}")
