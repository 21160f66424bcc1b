"""clnorm: PuzzleLib's BatchNorm modules on any OpenCL device, on top of the C library clnorm.

    from clnorm import gpuarray                 # was: from PuzzleLib.Backend import gpuarray
    from clnorm.modules import BatchNorm3D      # was: from PuzzleLib.Modules import BatchNorm3D

Submodules: clnorm.gpuarray (arrays on the default queue), clnorm.modules (BatchNorm, BatchNorm1D/2D/3D,
BatchNormND, ModuleError; keywords activation= and comm=), clnorm.dnn (batchNormNd, batchNormNdBackward,
BatchNormMode, BatchNormActivation). The work runs on each array's own pyopencl queue and buffer (zero copy).
clnorm.mpi_available() is None when the modules' comm= can be used, else the reason.
"""
from ._lib import (ModuleError, default_queue, default_device_name, set_device, live_contexts,
                   release_unused_contexts, mpi_available)
from ._lib import lib as _clib

__version__ = "0.1.0"


def library_version():
    """Version of the loaded libclnorm as MAJOR*10000 + MINOR*100 + PATCH."""
    return int(_clib.clnorm_version())


__all__ = ["ModuleError", "default_queue", "default_device_name", "set_device", "live_contexts",
           "release_unused_contexts", "library_version", "mpi_available", "__version__"]
