"""PuzzleLib's Backend.gpuarray surface on pyopencl: arrays on the default queue (clnorm.default_queue())."""
import numpy as np
import pyopencl.array as _cla

from . import _lib

#: PuzzleLib's GPUArray: the pyopencl array class. Arrays of any pyopencl context and queue are accepted.
GPUArray = _cla.Array


def to_gpu(ary, queue=None):
    """A device copy of the host array ary (on the default queue unless queue is given)."""
    return _cla.to_device(queue or _lib.default_queue(), np.ascontiguousarray(ary))


def empty(shape, dtype=np.float32, queue=None):
    """An uninitialised array (on the default queue unless queue is given)."""
    return _cla.empty(queue or _lib.default_queue(), shape, dtype)


def zeros(shape, dtype=np.float32, queue=None):
    """An array of zeros (on the default queue unless queue is given). Filled from the host: no kernel build."""
    return _cla.to_device(queue or _lib.default_queue(), np.zeros(shape, dtype=dtype))
