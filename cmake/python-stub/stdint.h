/* empty: cffi knows uint64_t (see cmake/python_cdef.cmake) */
