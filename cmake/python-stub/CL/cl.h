/* Stand-in for <CL/cl.h> when cmake/python_cdef.cmake preprocesses include/clnorm.h into the declarations that
 * the Python package hands to cffi: only the opaque OpenCL handle types that clnorm.h uses. */
typedef struct _cl_context *cl_context;
typedef struct _cl_command_queue *cl_command_queue;
typedef struct _cl_device_id *cl_device_id;
typedef struct _cl_mem *cl_mem;
