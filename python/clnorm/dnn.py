"""PuzzleLib's Backend.Dnn.Basic batch-normalization calls on clnorm's functional C API.

    batchNormNd(data, scale, bias, mean, var, epsilon=1e-5, factor=1.0, test=False, mode=BatchNormMode.spatial,
                out=None)
        test=False: returns (out, savemean, saveinvvar); mean and var are updated in place with factor
        test=True:  returns out (out may be data itself)
    batchNormNdBackward(data, grad, scale, savemean, saveinvvar, epsilon=1e-5, mode=BatchNormMode.spatial)
        returns (ingrad, scalegrad, biasgrad)

Fused residual add and activation (the C library's _ex calls), keywords after PuzzleLib's:
    batchNormNd(..., activation=None, z=None): out = act(BN(data) + z); activation None / "none" /
        BatchNormActivation.none, or "relu" / BatchNormActivation.relu; z the residual (data's shape and dtype) or
        None; out may be z itself. Return values as without them.
    batchNormNdBackward(..., activation=None, out=None, residual=False, bias=None): out is the forward's output
        (required for relu: the mask is out > 0, so a pre-activation of exactly 0 passes no gradient);
        residual=True (the forward had a z) returns (ingrad, scalegrad, biasgrad, zgrad), zgrad being the
        gradient of z (the masked grad).

The work runs on data's queue, over data's own buffer and offset. Parameter arrays are float32 with the group
count of values in any shape (PuzzleLib's (1, maps, 1, ...) included); returned parameter-shaped arrays have the
shape of the parameter array passed in. numpy arrays are accepted and copied to data's device (a numpy mean or
var is updated in place too).
"""
from enum import IntEnum

import numpy as np
import pyopencl as cl
import pyopencl.array as cla

from . import _lib
from ._lib import ModuleError, check, ffi, lib

__all__ = ["BatchNormMode", "BatchNormActivation", "batchNormNd", "batchNormNdBackward"]


class BatchNormMode(IntEnum):
    """What one statistic is computed over (the values are cuDNN's)."""
    perActivation = 0  # one statistic per (map, d, h, w), over the batch
    spatial = 1  # one statistic per map, over (batch, d, h, w)


class BatchNormActivation(IntEnum):
    """The activation fused after the batch normalization (and the residual add): the C library's values."""
    none = 0
    relu = 1


def activation_value(activation):
    """None, "none", "relu" (any case) or a BatchNormActivation -> the C clnorm_activation value."""
    if activation is None:
        return lib.CLNORM_ACTIVATION_NONE
    if isinstance(activation, str):
        key = activation.lower()
        if key in BatchNormActivation.__members__:
            return int(BatchNormActivation[key])
    elif isinstance(activation, BatchNormActivation):
        return int(activation)
    raise ModuleError("Unsupported activation %r (expected None, 'none', 'relu' or a BatchNormActivation)"
                      % (activation,))


def _cmode(mode):
    if mode == BatchNormMode.spatial:
        return lib.CLNORM_BN_SPATIAL
    if mode == BatchNormMode.perActivation:
        return lib.CLNORM_BN_PER_ACTIVATION
    raise ModuleError("Unsupported batch norm mode %s" % (mode,))


def _view_shape(shape, mode):
    """The (batch, maps, ...) shape given to the C library: at most 5 dimensions (extra ones folded, which leaves
    the groups as they are)."""
    if len(shape) < 2:
        raise ModuleError("Data must be at least a 2d tensor, got shape %s" % (shape,))
    if len(shape) <= 5:
        return tuple(shape)
    if mode == BatchNormMode.spatial:
        return (shape[0], shape[1], int(np.prod(shape[2:])))
    return (shape[0], int(np.prod(shape[1:])))


def _groups(shape, mode):
    return shape[1] if mode == BatchNormMode.spatial else int(np.prod(shape[1:]))


class _Param:
    """A parameter vector as the C API wants it: a float32 cl_mem of data's context at offset 0. A numpy array, or
    a device array at an offset, goes through a temporary; writeback() copies an output back."""

    __slots__ = ("orig", "dev", "queue")

    def __init__(self, ary, queue, count, name):
        self.orig, self.queue = ary, queue
        if isinstance(ary, cla.Array):
            if ary.dtype != np.float32:
                raise ModuleError("%s must be float32, got %s" % (name, ary.dtype))
            if ary.size != count:
                raise ModuleError("%s has %d values, expected %d" % (name, ary.size, count))
            if not ary.flags.c_contiguous:
                raise ModuleError("%s must be C-contiguous" % name)
            if ary.offset == 0:
                self.dev = ary
            else:
                self.dev = cla.empty(queue, ary.shape, np.float32)
                cl.enqueue_copy(queue, self.dev.base_data, ary.base_data, byte_count=ary.nbytes,
                                src_offset=ary.offset, dst_offset=0)
        else:
            host = np.ascontiguousarray(ary, dtype=np.float32)
            if host.size != count:
                raise ModuleError("%s has %d values, expected %d" % (name, host.size, count))
            self.dev = cla.to_device(queue, host)

    @property
    def mem(self):
        return _lib.mem_of(self.dev)

    def writeback(self):
        if self.dev is self.orig:
            return
        if isinstance(self.orig, cla.Array):
            cl.enqueue_copy(self.queue, self.orig.base_data, self.dev.base_data, byte_count=self.orig.nbytes,
                            src_offset=0, dst_offset=self.orig.offset)
        elif isinstance(self.orig, np.ndarray):
            np.copyto(self.orig, self.dev.get().reshape(self.orig.shape).astype(self.orig.dtype, copy=False))


def _prepare(data, mode):
    queue = data.queue if isinstance(data, cla.Array) else _lib.default_queue()
    data = _lib.as_device(data, queue, "data")
    if data.dtype not in _lib.DTYPES:
        raise ModuleError("Unsupported dtype %s (float32 or float16)" % data.dtype)
    return data, queue, _view_shape(data.shape, mode)


def _param_shape(*candidates):
    for c in candidates:
        if c is not None:
            return c.shape
    return None


def _residual(z, data, queue, vshape):
    """The residual's tensor (or ffi.NULL) and its device array."""
    if z is None:
        return ffi.NULL, None
    z = _lib.as_device(z, queue, "z", dtype=data.dtype)
    if z.shape != data.shape:  # the C library would see the folded view shape: name the caller's shapes here
        raise ModuleError("z has shape %s but data has %s" % (z.shape, data.shape))
    tz = _lib.new_tensor()
    _lib.fill_tensor(tz, z, vshape)
    return tz, z


def batchNormNd(data, scale, bias, mean, var, epsilon=1e-5, factor=1.0, test=False, mode=BatchNormMode.spatial,
                out=None, activation=None, z=None):
    """Batch normalization forward (training with test=False, inference with test=True), with an optional residual
    z and activation: out = act(BN(data) + z); see the module doc."""
    cmode = _cmode(mode)
    act = activation_value(activation)
    fused = act != lib.CLNORM_ACTIVATION_NONE or z is not None
    data, queue, vshape = _prepare(data, mode)
    tz, z = _residual(z, data, queue, vshape)
    ctx = _lib.context_for(queue)
    count = _groups(vshape, mode)
    if (scale is None) != (bias is None):
        raise ModuleError("scale and bias must both be given or both be None")
    ps = _Param(scale, queue, count, "scale") if scale is not None else None
    pb = _Param(bias, queue, count, "bias") if bias is not None else None
    if out is None:
        out = ctx.empty_like(data)
    elif not isinstance(out, cla.Array) or out.shape != data.shape or out.dtype != data.dtype:
        raise ModuleError("out must be a device array of data's shape %s and dtype %s" % (data.shape, data.dtype))
    tx, ty = _lib.new_tensor(), _lib.new_tensor()
    _lib.fill_tensor(tx, data, vshape)
    _lib.fill_tensor(ty, out, vshape)
    smem = ps.mem if ps is not None else ffi.NULL
    bmem = pb.mem if pb is not None else ffi.NULL
    if test:
        if mean is None or var is None:
            raise ModuleError("inference needs mean and var")
        pm, pv = _Param(mean, queue, count, "mean"), _Param(var, queue, count, "var")
        if fused:
            check(lib.clnorm_bn_forward_inference_ex(ctx.ptr, cmode, tx, tz, ty, smem, bmem, pm.mem, pv.mem,
                                                     float(epsilon), act), "batchNormNd")
        else:
            check(lib.clnorm_bn_forward_inference(ctx.ptr, cmode, tx, ty, smem, bmem, pm.mem, pv.mem,
                                                  float(epsilon)), "batchNormNd")
        return out
    pshape = _param_shape(scale, mean, var) or (count,)
    savemean = cla.empty(queue, pshape, np.float32)
    saveinvvar = cla.empty(queue, pshape, np.float32)
    if (mean is None) != (var is None):
        raise ModuleError("mean and var must both be given or both be None")
    pm = _Param(mean, queue, count, "mean") if mean is not None else None
    pv = _Param(var, queue, count, "var") if var is not None else None
    if fused:
        check(lib.clnorm_bn_forward_training_ex(ctx.ptr, cmode, tx, tz, ty, smem, bmem, float(factor),
                                                float(epsilon), pm.mem if pm else ffi.NULL,
                                                pv.mem if pv else ffi.NULL, _lib.mem_of(savemean),
                                                _lib.mem_of(saveinvvar), act), "batchNormNd")
    else:
        check(lib.clnorm_bn_forward_training(ctx.ptr, cmode, tx, ty, smem, bmem, float(factor), float(epsilon),
                                             pm.mem if pm else ffi.NULL, pv.mem if pv else ffi.NULL,
                                             _lib.mem_of(savemean), _lib.mem_of(saveinvvar)), "batchNormNd")
    if pm is not None:
        pm.writeback()
        pv.writeback()
    return out, savemean, saveinvvar


def batchNormNdBackward(data, grad, scale, savemean, saveinvvar, epsilon=1e-5, mode=BatchNormMode.spatial,
                        activation=None, out=None, residual=False, bias=None):
    """Batch normalization backward: returns (ingrad, scalegrad, biasgrad), and zgrad fourth with residual=True;
    see the module doc. With savemean and saveinvvar None the statistics are recomputed from data. With
    activation "relu", out (the forward's output) gives the mask out > 0."""
    cmode = _cmode(mode)
    act = activation_value(activation)
    fused = act != lib.CLNORM_ACTIVATION_NONE or residual or out is not None or bias is not None
    data, queue, vshape = _prepare(data, mode)
    grad = _lib.as_device(grad, queue, "grad", dtype=data.dtype)
    if grad.shape != data.shape:
        raise ModuleError("grad has shape %s but data has %s" % (grad.shape, data.shape))
    ctx = _lib.context_for(queue)
    count = _groups(vshape, mode)
    ps = _Param(scale, queue, count, "scale") if scale is not None else None
    if (savemean is None) != (saveinvvar is None):
        raise ModuleError("savemean and saveinvvar must both be given or both be None")
    psm = _Param(savemean, queue, count, "savemean") if savemean is not None else None
    psi = _Param(saveinvvar, queue, count, "saveinvvar") if saveinvvar is not None else None
    ingrad = ctx.empty_like(data)
    pshape = _param_shape(scale, savemean, saveinvvar) or (count,)
    scalegrad = cla.empty(queue, pshape, np.float32)
    biasgrad = cla.empty(queue, pshape, np.float32)
    tx, tdy, tdx = _lib.new_tensor(), _lib.new_tensor(), _lib.new_tensor()
    _lib.fill_tensor(tx, data, vshape)
    _lib.fill_tensor(tdy, grad, vshape)
    _lib.fill_tensor(tdx, ingrad, vshape)
    if not fused:
        check(lib.clnorm_bn_backward(ctx.ptr, cmode, tx, tdy, tdx, ps.mem if ps else ffi.NULL,
                                     _lib.mem_of(scalegrad), _lib.mem_of(biasgrad), float(epsilon),
                                     psm.mem if psm else ffi.NULL, psi.mem if psi else ffi.NULL),
              "batchNormNdBackward")
        return ingrad, scalegrad, biasgrad
    ty = ffi.NULL
    if out is not None:
        out = _lib.as_device(out, queue, "out", dtype=data.dtype)
        if out.shape != data.shape:
            raise ModuleError("out (the forward's output) has shape %s but data has %s" % (out.shape, data.shape))
        ty = _lib.new_tensor()
        _lib.fill_tensor(ty, out, vshape)
    pb = _Param(bias, queue, count, "bias") if bias is not None else None
    zgrad, tdz = None, ffi.NULL
    if residual:
        zgrad = ctx.empty_like(data)
        tdz = _lib.new_tensor()
        _lib.fill_tensor(tdz, zgrad, vshape)
    check(lib.clnorm_bn_backward_ex(ctx.ptr, cmode, tx, ty, tdy, tdx, tdz, ps.mem if ps else ffi.NULL,
                                    pb.mem if pb else ffi.NULL, _lib.mem_of(scalegrad), _lib.mem_of(biasgrad),
                                    float(epsilon), psm.mem if psm else ffi.NULL, psi.mem if psi else ffi.NULL, act),
          "batchNormNdBackward")
    if residual:
        return ingrad, scalegrad, biasgrad, zgrad
    return ingrad, scalegrad, biasgrad
