"""The binding: cffi in ABI mode over the public C API (include/clnorm.h), nothing else.

The declarations are not written here: CMake runs include/clnorm.h through the C preprocessor at build time
(cmake/python_cdef.cmake) and installs the result, _clnorm_cdef.h, next to libclnorm.so inside this package, so
struct layouts and enum values always come from the header the library was built with. No compiler is needed at
import time.

Also here: ModuleError (C failures carry the status name and clnorm_last_error()), the clnorm context of each
pyopencl queue (one per queue, cached, released once the queue is gone), the default device and queue, and the
zero-copy tensor views of pyopencl arrays.
"""
import collections
import os
import threading
import weakref

import cffi
import numpy as np
import pyopencl as cl
import pyopencl.array as cla
import pyopencl.tools as cl_tools

_HERE = os.path.dirname(os.path.abspath(__file__))
_LIB_PATH = os.environ.get("CLNORM_PYTHON_LIBRARY") or os.path.join(_HERE, "libclnorm.so")
_CDEF_PATH = os.environ.get("CLNORM_PYTHON_CDEF") or os.path.join(_HERE, "_clnorm_cdef.h")

ffi = cffi.FFI()
with open(_CDEF_PATH, encoding="utf-8") as _f:
    ffi.cdef(_f.read())
lib = ffi.dlopen(_LIB_PATH)

#: status value -> enumerator name ("CLNORM_ERROR_SHAPE"), from the header's enum
STATUS_NAMES = dict(ffi.typeof("clnorm_status").elements)
SUCCESS = lib.CLNORM_SUCCESS


class ModuleError(Exception):
    """PuzzleLib's ModuleError; also raised for every failure of the C library.

    For a C failure: ``status`` (the clnorm_status value), ``status_name`` ("CLNORM_ERROR_SHAPE") and ``detail``
    (clnorm_last_error()) are set, and the message is "CLNORM_ERROR_SHAPE: <detail>". Otherwise they are None.
    """

    def __init__(self, message, status=None, detail=None):
        super().__init__(message)
        self.status = status
        self.status_name = STATUS_NAMES.get(status) if status is not None else None
        self.detail = detail


def error(status, where=None):
    """The ModuleError of a failed C call (reads this thread's clnorm_last_error())."""
    name = STATUS_NAMES.get(status, "status %d" % status)
    detail = ffi.string(lib.clnorm_last_error()).decode("utf-8", "replace")
    msg = "%s: %s" % (name, detail) if where is None else "%s: %s: %s" % (where, name, detail)
    return ModuleError(msg, status, detail)


def check(status, where=None):
    if status != SUCCESS:
        raise error(status, where)


# ---- clnorm contexts: one per pyopencl queue ----------------------------------------------------------------
class Context:
    """A clnorm_context on one OpenCL command queue (the C library retains the queue until it is destroyed), with
    a pyopencl memory pool for the outputs made on that queue (as PuzzleLib's backends do: a new output buffer
    each call would cost its page faults every time on a CPU device)."""

    __slots__ = ("ptr", "queue_ptr", "queue", "pool", "tmpl", "__weakref__")

    def __init__(self, ptr, queue=None):
        self.ptr = ffi.gc(ptr, lib.clnorm_context_destroy)
        self.queue_ptr = int(ffi.cast("intptr_t", lib.clnorm_context_queue(ptr)))
        self.queue = queue
        self.pool = None
        self.tmpl = {}

    def device_name(self):
        return ffi.string(lib.clnorm_context_device_name(self.ptr)).decode("utf-8", "replace")

    def empty_like(self, ary):
        """An uninitialised array of ary's shape and dtype on this queue, from the pool (pyopencl's fast path:
        about 2 us)."""
        key = (ary.shape, ary.dtype)
        t = self.tmpl.get(key)
        if t is None:
            if self.pool is None:
                self.pool = cl_tools.MemoryPool(cl_tools.ImmediateAllocator(self.queue))
                self.tmpl.clear()
            if len(self.tmpl) > 64:
                self.tmpl.clear()
            dummy = cl.Buffer(self.queue.context, cl.mem_flags.READ_WRITE, 4)  # never used: a template's data
            t = self.tmpl[key] = cla.Array(self.queue, ary.shape, ary.dtype, allocator=self.pool, data=dummy)
        return cla.empty_like(t)

    def empty(self, shape, dtype):
        """empty_like for a shape and dtype; an empty shape (batch 0) gives an array without a buffer."""
        if int(np.prod(shape)) == 0:
            return cla.empty(self.queue, shape, dtype)
        return self.empty_like(_Proto(tuple(shape), np.dtype(dtype)))


_Proto = collections.namedtuple("_Proto", "shape dtype")


_lock = threading.Lock()
# queue int_ptr -> Context. Weak: a context lives while something uses it: a module's layer on that queue, one of
# the RECENT queues of the latest calls (kept so that dnn calls on a queue reuse its compiled kernels), or the
# default queue. The C library retains the queue while the context lives; once a context goes, it releases it.
_contexts = weakref.WeakValueDictionary()
_recent = collections.OrderedDict()
RECENT = 8
_live = weakref.WeakSet()  # every Context object still alive, for live_contexts()
_default = None  # (Context, pyopencl.Context, pyopencl.CommandQueue) of the default device
_selector = None


def context_for(queue):
    """The clnorm context of a pyopencl queue: created on first use, cached, released once neither a module nor
    the recent-queue cache uses it."""
    key = queue.int_ptr
    ctx = _recent.get(key)
    if ctx is not None:
        return ctx
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            out = ffi.new("clnorm_context **")
            check(lib.clnorm_context_create_from_queue(ffi.cast("cl_command_queue", key), out),
                  "clnorm_context_create_from_queue")
            ctx = Context(out[0], queue)
            _contexts[key] = ctx
            _live.add(ctx)
        _recent[key] = ctx
        while len(_recent) > RECENT:
            _recent.popitem(last=False)
        return ctx


def release_unused_contexts():
    """Drops the recent-queue cache, so that every clnorm context no module uses is released (with its hold on the
    queue). Returns the number of clnorm contexts still alive."""
    import gc
    with _lock:
        _recent.clear()
    gc.collect()
    return live_contexts()


def live_contexts():
    """Number of clnorm contexts alive in this process (the default one, recent queues', modules')."""
    return len(_live)


def set_device(selector=None):
    """Chooses the default device, with the C library's selector grammar: None or "" for $CLNORM_DEVICE, else the
    first GPU, accelerator, CPU; "P:D"; or a substring of "<platform> <device>" ("pocl"). Arrays made by
    clnorm.gpuarray and modules created afterwards use it; existing arrays keep their queue."""
    global _default, _selector
    out = ffi.new("clnorm_context **")
    sel = ffi.NULL if selector is None else selector.encode("utf-8")
    check(lib.clnorm_context_create(sel, out), "clnorm_context_create")
    ctx = Context(out[0])
    clctx = cl.Context.from_int_ptr(int(ffi.cast("intptr_t", lib.clnorm_context_cl_context(out[0]))), retain=True)
    queue = cl.CommandQueue.from_int_ptr(ctx.queue_ptr, retain=True)
    ctx.queue = queue
    with _lock:
        _contexts[ctx.queue_ptr] = ctx
        _live.add(ctx)
        _default = (ctx, clctx, queue)  # keeps the default context alive
        _selector = selector
    return queue


def default_queue():
    """The queue of the default device (created on first use, see set_device)."""
    d = _default
    if d is None:
        set_device(None)
        d = _default
    return d[2]


def default_device_name():
    default_queue()
    return _default[0].device_name()


# ---- tensors ------------------------------------------------------------------------------------------------
DTYPES = {np.dtype(np.float32): lib.CLNORM_F32, np.dtype(np.float16): lib.CLNORM_F16}


def fill_tensor(t, ary, shape):
    """Fills the clnorm_tensor t (a cffi cdata) as a zero-copy view of the pyopencl array ary: its cl_mem and byte
    offset, with shape (up to 5 dims, batch and maps first)."""
    if ary.base_data is None:  # an empty array (batch 0: an empty MPI rank) has no buffer
        t.buffer = ffi.NULL
        t.offset = 0
    else:
        t.buffer = ffi.cast("cl_mem", ary.base_data.int_ptr)
        t.offset = ary.offset
    t.ndim = len(shape)
    sh = t.shape
    for i, n in enumerate(shape):
        sh[i] = n
    t.dtype = DTYPES[ary.dtype]
    t.layout = lib.CLNORM_NCHW


def new_tensor():
    return ffi.new("clnorm_tensor *")


def mem_of(ary):
    """The cl_mem of a parameter array (the C API wants parameter vectors at offset 0)."""
    return ffi.cast("cl_mem", ary.base_data.int_ptr)


def as_device(ary, queue, what="data", dtype=None):
    """A pyopencl array as is; a numpy array (or anything array-like) copied to the device of queue (converted to
    dtype when given: host data of another type is converted, as a copy is made anyway)."""
    if isinstance(ary, cla.Array):
        if ary.queue is None:
            raise ModuleError("%s: the pyopencl array has no queue (clnorm runs on the array's queue)" % what)
        if not ary.flags.c_contiguous:
            raise ModuleError("%s: the array must be C-contiguous (dense), got strides %s" % (what, ary.strides))
        return ary
    host = np.ascontiguousarray(ary, dtype=dtype)
    return cla.to_device(queue, host)


# ---- libclnorm_mpi (optional): the modules' comm= keyword ----------------------------------------------------
# CMake installs libclnorm_mpi.so and _clnorm_mpi_cdef.h (include/clnorm_mpi.h preprocessed, with MPI_Comm typed
# as the MPI implementation found at build time has it) next to libclnorm.so when it finds MPI. Both are loaded on
# first use only, so that a process without MPI never loads libmpi.
_MPI_LIB_PATH = os.environ.get("CLNORM_PYTHON_MPI_LIBRARY") or os.path.join(_HERE, "libclnorm_mpi.so")
_MPI_CDEF_PATH = os.environ.get("CLNORM_PYTHON_MPI_CDEF") or os.path.join(_HERE, "_clnorm_mpi_cdef.h")
_mpi = None  # (ffi, lib, mpi4py.MPI) once loaded


def mpi_available():
    """None when comm= can be used (libclnorm_mpi is in the package and mpi4py imports), else the reason."""
    try:
        mpi_binding()
    except ModuleError as e:
        return str(e)
    return None


def mpi_binding():
    """(ffi, libclnorm_mpi, mpi4py.MPI); raises ModuleError saying what is missing."""
    global _mpi
    if _mpi is not None:
        return _mpi
    with _lock:
        if _mpi is not None:
            return _mpi
        if not (os.path.exists(_MPI_LIB_PATH) and os.path.exists(_MPI_CDEF_PATH)):
            raise ModuleError("comm= needs libclnorm_mpi, which this clnorm package was built without (CMake did "
                              "not find MPI when it was installed: install an MPI development package, e.g. "
                              "libopenmpi-dev, and reinstall clnorm); %s is missing" % _MPI_LIB_PATH)
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ModuleError("comm= needs mpi4py (pip install mpi4py): %s" % e)
        mffi = cffi.FFI()
        mffi.include(ffi)  # clnorm_context, clnorm_tensor, clnorm_batchnorm are clnorm.h's
        with open(_MPI_CDEF_PATH, encoding="utf-8") as f:
            mffi.cdef(f.read())
        # libclnorm.so is loaded already: libclnorm_mpi's dependency on it resolves to that copy (by its soname)
        mlib = mffi.dlopen(_MPI_LIB_PATH)
        _mpi = (mffi, mlib, MPI)
        return _mpi


def comm_handle(comm):
    """The C MPI_Comm of an mpi4py communicator, as a cdata of libclnorm_mpi's declarations."""
    mffi, _, MPI = mpi_binding()
    if not isinstance(comm, MPI.Comm):
        raise ModuleError("comm must be an mpi4py communicator (mpi4py.MPI.Comm), got %s" % type(comm).__name__)
    if comm == MPI.COMM_NULL:
        raise ModuleError("comm is MPI.COMM_NULL")
    return mffi.cast("MPI_Comm", MPI._handleof(comm))
