/* empty: cffi knows size_t (see cmake/python_cdef.cmake) */
