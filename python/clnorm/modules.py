"""PuzzleLib's BatchNorm modules (BatchNorm, BatchNorm1D, BatchNorm2D, BatchNorm3D, BatchNormND) on clnorm.

Each module owns a clnorm layer (clnorm_batchnorm_*, the C library's PuzzleLib-style layer) on the queue of the
data it runs on. Its parameters and statistics (``scale``, ``bias``, ``mean``, ``var``, ``savemean``,
``saveinvvar``, the gradients) are pyopencl arrays over the layer's own buffers: reading or writing them reads or
writes what the C library uses, with no copy. Assigning another array (``setVar``, ``setAttr``, ``m.scale = a``,
``load``) copies its values into the layer. ``savemean`` and ``saveinvvar`` are overwritten by the next training
forward (PuzzleLib allocates new ones).

Data may come from any pyopencl context and queue: the first call with data of another queue moves the layer
there (its values copied through the host); numpy data are copied to the module's device.

Extension points (for options such as an MPI communicator ``comm=`` or a fused activation): the C layer's
configuration is made in one place (``BatchNormND._newLayer`` -> ``_Layer``), the forward's C call in
``updateData`` and the backward's in ``backward``; a new keyword is stored by ``_init`` and read there, and
``_rebuild`` carries every value across a new layer.

Two keywords beyond PuzzleLib's, last in every constructor:
- ``activation=None``: None / "none", or "relu" (or a clnorm.dnn.BatchNormActivation): every forward computes
  y = act(BN(x) + residual) in one pass (the C layer's cfg.activation). ``m(data, residual=z)`` adds the residual z
  (data's shape and dtype; any module, with or without activation). The backward masks the gradient with the
  stored output (m.data > 0 for relu: keep m.data unmodified until then) and, when the training forward had a
  residual, sets ``m.residualGrad`` (the gradient of z; None otherwise).
- ``comm=None``: an mpi4py communicator; training forwards and backwards are then collectives over it
  (libclnorm_mpi): the statistics and parameter gradients are those of every rank's batch together (batches may
  differ per rank, 0 included) and come out identical on every rank. Needs libclnorm_mpi in the package and
  mpi4py, else ModuleError. Not combined with activation or residual (libclnorm_mpi has no fused variant).
"""
import json
import os
import tempfile

import numpy as np
import pyopencl as cl
import pyopencl.array as cla

from . import _lib
from ._lib import ModuleError, check, ffi, lib

__all__ = ["Module", "ModuleError", "Variable", "BatchNorm", "BatchNorm1D", "BatchNorm2D", "BatchNorm3D",
           "BatchNormND"]

#: when True, a module created with inplace=True prints PuzzleLib's warning (PuzzleLib's Config.showWarnings)
showWarnings = False


class Variable:
    """PuzzleLib's Variable: ``data`` and ``grad`` (zeros of data's shape unless given or withgrad=False)."""

    index = 0

    def __init__(self, data, name=None, withgrad=True, grad=None, updater=None, postUpdater=None):
        if name is None:
            self.name = str(type(self).index)
            type(self).index += 1
        else:
            self.name = name
        self.data = data
        self.updater = updater
        self.postUpdater = postUpdater
        self.grad = None
        if updater is not None:
            return
        if grad is not None:
            self.grad = grad
        elif withgrad:
            self.grad = _zeros_like(data)
        self.learnRate, self.momRate = 1.0, 1.0
        self.wc = 0.0

    @property
    def hasUpdater(self):
        return self.updater is not None

    @property
    def hasPostUpdater(self):
        return self.postUpdater is not None

    def update(self, learnRate):
        self.updater(self, learnRate)

    def postUpdate(self):
        self.postUpdater(self)

    def set(self, variable):
        self.data.set(variable.data.get() if isinstance(variable.data, cla.Array) else variable.data)
        if self.grad is not None:
            self.grad.set(variable.grad.get() if isinstance(variable.grad, cla.Array) else variable.grad)


def _zeros_like(ary):
    if isinstance(ary, cla.Array):
        return cla.to_device(ary.queue or _lib.default_queue(), np.zeros(ary.shape, dtype=ary.dtype))
    return np.zeros(np.shape(ary), dtype=np.asarray(ary).dtype)


def _host(ary):
    return ary.get() if isinstance(ary, cla.Array) else np.asarray(ary)


class Module:
    """The part of PuzzleLib's Module that the BatchNorm family uses: vars / attrs, call and backward, modes,
    parameter updates, HDF5 save / load in PuzzleLib's layout."""

    def __init__(self, name=None):
        self.name = name
        self.blueprint = None
        self.vars = {}
        self.attrs = {}
        self.gradUsesOutData = False
        self.movesData = False
        self.movesGrad = False
        self.grad = None
        self.inData = None
        self.data = None
        self.train = True
        self.calctype = np.float32
        self.varLoader = None
        self.attrLoader = None

    # -- blueprint, vars, attrs (PuzzleLib's names) --
    def registerBlueprint(self, args, exclude=None):
        exclude = set() if exclude is None else exclude
        ignore = {"self", "__class__"}
        self.blueprint = {k: None if k in exclude else v for k, v in args.items() if k not in ignore}

    def getBlueprint(self):
        return {"classname": self.__class__.__name__, "scheme": self.blueprint}

    def setVar(self, name, var):
        setattr(self, name, var.data)
        self.vars[name] = var

    def getVar(self, name):
        return self.vars[name]

    def getVarTable(self, vartable=None, name=None, root=True):
        if root and name is None:
            name = self.name if self.name is not None else ""
        vartable = {} if vartable is None else vartable
        for paramName, var in self.vars.items():
            vartable.setdefault(var, []).append("%s%s" % (name, paramName))
        return vartable

    def setAttr(self, name, attr):
        setattr(self, name, attr)
        self.attrs[name] = attr

    def hasAttr(self, name):
        return name in self.attrs

    # -- running --
    def __call__(self, data, residual=None):
        data = self._acceptData(data)
        self.checkDataShape(data.shape)
        self.checkDataType(data.dtype)
        self.data = None
        self.inData = data
        if residual is not None:
            self._setResidual(data, residual)
        try:
            self.updateData(data)
        finally:
            self._residual = None
        return self.data

    _residual = None

    def _setResidual(self, data, residual):
        raise ModuleError("%s does not take a residual" % self)

    def backward(self, grad, updParamGrads=True, updGrad=True, scale=1.0, momentum=0.0):
        grad = self._acceptGrad(grad)
        self.checkGradShape(grad.shape)
        self.checkGradType(grad.dtype)
        self.grad = None
        if updGrad:
            self.updateGrad(grad)
        if updParamGrads and self.train:
            self.accGradParams(grad, scale=scale, momentum=momentum)

    def _acceptData(self, data):
        return data

    def _acceptGrad(self, grad):
        return grad

    def updateData(self, data):
        raise NotImplementedError()

    def updateGrad(self, grad):
        raise NotImplementedError()

    def accGradParams(self, grad, scale=1.0, momentum=0.0):
        pass

    def zeroGradParams(self):
        for var in self.vars.values():
            if var.hasUpdater or var.grad is None:
                continue
            var.grad.set(np.zeros(var.grad.shape, dtype=var.grad.dtype))

    def updateParams(self, learnRate):
        """param += learnRate * grad for every variable (on the host: the vectors are small, and no kernel build)."""
        for var in self.vars.values():
            if var.grad is None:
                continue
            d, g = _host(var.data), _host(var.grad)
            var.data.set((d + np.float32(learnRate) * g).astype(var.data.dtype, copy=False))

    def optimizeForShape(self, shape, memlimit=None):
        pass

    # -- modes --
    def trainMode(self):
        self.train = True
        self.reset()

    def evalMode(self):
        self.train = False
        self.reset()

    def calcMode(self, T):
        if T != np.float32:
            raise ModuleError("Unsupported dtype %s" % T)
        self.calctype = T

    def reset(self):
        self.inData, self.data, self.grad = None, None, None

    # -- checks --
    def checkDataShape(self, shape):
        pass

    def checkDataType(self, dtype):
        self.genericCheckDataType(dtype)

    def checkGradShape(self, shape):
        pass

    def checkGradType(self, dtype):
        self.genericCheckDataType(dtype)

    def genericCheckDataType(self, dtype):
        if isinstance(dtype, (tuple, list)):
            for d in dtype:
                self.genericCheckDataType(d)
        elif dtype != self.calctype:
            raise ModuleError("Expected dtype %s, got %s" % (self.calctype, dtype))

    def dataShapeFrom(self, shape):
        return shape

    def gradShapeFrom(self, shape):
        return shape

    def __str__(self):
        return "Module %s (name: %s)" % (self.__class__.__name__, self.name)

    def numOfParams(self):
        return sum(var.data.size for var in self.vars.values())

    def paramSize(self, unit=None):
        size = sum(var.data.nbytes for var in self.vars.values())
        if unit is None:
            return size
        return size / {"kb": 1024, "mb": 1024 ** 2}[str(getattr(unit, "value", unit))]

    @staticmethod
    def repeat(val, ntimes):
        return (val,) * ntimes if isinstance(val, int) else tuple(val)

    # -- HDF5, PuzzleLib's layout --
    @staticmethod
    def ensureHdf(file, mode):
        import h5py
        from h5py import h5f, h5p

        if isinstance(file, (str, os.PathLike)) or file is None:
            driver, kwds = None, {}
            if file is None:
                file = tempfile.mktemp(suffix=".hdf")
                driver, kwds = "core", {"backing_store": False}
            else:
                file = os.fspath(file)
                dirname = os.path.dirname(os.path.abspath(file))
                os.makedirs(dirname, exist_ok=True)
            return h5py.File(file, mode, libver="earliest", driver=driver, **kwds)
        if isinstance(file, (bytes, bytearray, memoryview)):
            fapl = h5p.create(h5p.FILE_ACCESS)
            fapl.set_fapl_core(backing_store=False)
            fapl.set_file_image(bytes(file))
            fid = h5f.open(tempfile.mktemp(suffix=".hdf").encode(), h5f.ACC_RDONLY, fapl=fapl)
            return h5py.File(fid)
        return file

    def save(self, hdf=None, varlinks=None, name=None, compress="gzip", assumeUniqueNames=False,
             withBlueprint=False, isRoot=True):
        """Writes params/"<i>", links/"<name>.<var>" and attrs/"<name>.<attr>" (PuzzleLib's layout); returns the
        file's bytes when hdf is None. hdf may be a path or an open h5py.File."""
        import h5py

        serialize = hdf is None
        hdf = self.ensureHdf(hdf, "w")
        varlinks = {} if varlinks is None else varlinks
        if name is None:
            name = self.name if self.name is not None else ""
        if assumeUniqueNames and len(name) > 0:
            tokens = name.split(sep=".")
            name = "%s.%s" % (tokens[0], tokens[-1])
        buffer = None
        try:
            paramGrp, linkGrp = hdf.require_group("params"), hdf.require_group("links")
            for paramName, var in self.vars.items():
                if var in varlinks:
                    idx = varlinks[var]
                else:
                    idx = len(varlinks)
                    paramGrp.create_dataset(str(idx), data=_host(var.data), compression=compress)
                    varlinks[var] = idx
                linkGrp["%s.%s" % (name, paramName)] = idx
            if len(self.attrs) > 0:
                attrGrp = hdf.require_group("attrs")
                for attrName, attr in self.attrs.items():
                    attrGrp.create_dataset("%s.%s" % (name, attrName), data=_host(attr), compression=compress)
            if withBlueprint:
                hdf.create_dataset("blueprint", (), dtype=h5py.special_dtype(vlen=str),
                                   data=json.dumps(self.getBlueprint(), indent=4, sort_keys=True, default=str))
            if isRoot and serialize:
                hdf.flush()
                buffer = hdf.id.get_file_image()
        except Exception as e:
            raise ModuleError("Module %s save error: %s" % (name, e))
        finally:
            if isRoot:
                hdf.close()
        return buffer

    def load(self, hdf, initvars=None, name=None, assumeUniqueNames=False, isRoot=True):
        """Reads PuzzleLib's layout (see save); hdf may be a path, an open h5py.File or the file's bytes."""
        import warnings

        hdf = self.ensureHdf(hdf, "r")
        initvars = {} if initvars is None else initvars
        if name is None:
            name = self.name if self.name is not None else ""
        if assumeUniqueNames and len(name) > 0:
            tokens = name.split(sep=".")
            name = "%s.%s" % (tokens[0], tokens[-1])
        with warnings.catch_warnings():
            warnings.filterwarnings("error")
            try:
                paramGrp, linkGrp = hdf["params"], hdf["links"]
                for paramName, var in list(self.vars.items()):
                    if var in initvars:
                        continue
                    idx = str(linkGrp["%s.%s" % (name, paramName)][()])
                    param = np.array(paramGrp[idx])
                    if self.varLoader is not None:
                        self.varLoader(paramName, param)
                    else:
                        self._loadVar(paramName, var, param)
                    initvars[var] = True
                self._loadMissing(hdf, name)
                if len(self.attrs) > 0:
                    attrGrp = hdf["attrs"]
                    for attrName, attr in list(self.attrs.items()):
                        attrVal = np.array(attrGrp["%s.%s" % (name, attrName)])
                        if self.attrLoader is not None:
                            self.attrLoader(attrName, attrVal)
                        else:
                            self._loadAttr(attrName, attr, attrVal)
            except ModuleError:
                raise
            except Exception as e:
                raise ModuleError("Module %s load error: %s" % (name, e))
            finally:
                if isRoot:
                    hdf.close()

    def _loadVar(self, paramName, var, param):
        _checkShape(param, var.data.shape, paramName)
        var.data.set(param.astype(var.data.dtype, casting="safe", copy=False))

    def _loadAttr(self, attrName, attr, attrVal):
        _checkShape(attrVal, attr.shape, attrName)
        if isinstance(attr, cla.Array):
            attr.set(attrVal.astype(attr.dtype, casting="safe", copy=False))
        else:
            np.copyto(attr, attrVal.astype(attr.dtype, casting="safe", copy=False))

    def _loadMissing(self, hdf, name):
        pass


def _checkShape(value, shape, what):
    if value.shape != tuple(shape):
        raise ValueError("%s has shape %s in the file, expected %s" % (what, value.shape, tuple(shape)))


# ---- the C layer of a module, on one queue -------------------------------------------------------------------
_FIELD = {"scale": lib.CLNORM_SCALE, "bias": lib.CLNORM_BIAS, "mean": lib.CLNORM_RUNNING_MEAN,
          "var": lib.CLNORM_RUNNING_VAR, "savemean": lib.CLNORM_SAVE_MEAN, "saveinvvar": lib.CLNORM_SAVE_INVSTD,
          "scalegrad": lib.CLNORM_SCALE_GRAD, "biasgrad": lib.CLNORM_BIAS_GRAD}


class _Layer:
    """A clnorm_batchnorm on the clnorm context of one queue, with pyopencl views of its buffers and the tensor
    structs of the hot path allocated once."""

    __slots__ = ("ctx", "ptr", "queue", "views", "tx", "ty", "tdy", "tdx", "tz", "tdz", "maps", "__weakref__")

    def __init__(self, queue, cnd, maps, pshape, epsilon, initFactor, minFactor, affine, name, inplace, dtype,
                 activation=0):
        self.ctx = _lib.context_for(queue)
        self.queue = queue
        self.maps = maps
        cfg = ffi.new("clnorm_batchnorm_config *")
        lib.clnorm_batchnorm_config_init(cfg, cnd, maps)
        cfg.epsilon = epsilon
        cfg.init_factor = initFactor
        cfg.min_factor = minFactor
        cfg.sscale = 0.0  # the module writes PuzzleLib's numpy-drawn scale itself
        cfg.affine = 1 if affine else 0
        cname = ffi.new("char[]", name.encode("utf-8")) if name is not None else ffi.NULL
        cfg.name = cname
        cfg.empty = 1  # the module writes every value it has
        cfg.inplace = 1 if inplace else 0
        cfg.dtype = _lib.DTYPES[np.dtype(dtype)]
        cfg.activation = activation
        out = ffi.new("clnorm_batchnorm **")
        check(lib.clnorm_batchnorm_create(self.ctx.ptr, cfg, out), "clnorm_batchnorm_create")
        self.ptr = ffi.gc(out[0], lib.clnorm_batchnorm_destroy)
        self.views = {}
        for key, field in _FIELD.items():
            mem = lib.clnorm_batchnorm_buffer(self.ptr, field)
            if mem != ffi.NULL:
                buf = cl.Buffer.from_int_ptr(int(ffi.cast("intptr_t", mem)), retain=True)
                self.views[key] = cla.Array(queue, pshape, np.float32, data=buf)
        self.tx, self.ty, self.tdy, self.tdx, self.tz, self.tdz = (_lib.new_tensor() for _ in range(6))

    def write(self, key, host):
        host = np.ascontiguousarray(host, dtype=np.float32).ravel()
        if host.size != self.maps:
            raise ModuleError("%s has %d values, expected %d" % (key, host.size, self.maps))
        check(lib.clnorm_batchnorm_write(self.ptr, _FIELD[key], ffi.cast("float *", ffi.from_buffer(host)),
                                         self.maps), "write %s" % key)

    def read(self, key):
        host = np.empty(self.maps, dtype=np.float32)
        check(lib.clnorm_batchnorm_read(self.ptr, _FIELD[key], ffi.cast("float *", ffi.from_buffer(host)),
                                        self.maps), "read %s" % key)
        return host


class BatchNormND(Module):
    """PuzzleLib's BatchNormND(nd, maps): data (batch, maps, nd spatial dims), one statistic per map; parameters
    and statistics of shape (1, maps) + (1,) * nd, float32."""

    _paramKeys = ("scale", "bias")
    _attrKeys = ("mean", "var")

    def __init__(self, nd, maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False, inplace=False, activation=None, comm=None):
        super().__init__(name)
        self.registerBlueprint(locals(), exclude=["comm"])
        self._nd = nd
        self._pshape = (1, maps) + self.repeat(1, nd)
        self._groups = maps
        self._init(maps, epsilon, initFactor, minFactor, sscale, affine, empty, inplace, activation, comm)

    # -- construction --
    def _init(self, maps, epsilon, initFactor, minFactor, sscale, affine, empty, inplace, activation=None,
              comm=None):
        from .dnn import activation_value

        self._activation = activation_value(activation)
        self.activation = None if self._activation == lib.CLNORM_ACTIVATION_NONE else "relu"
        self.comm, self._comm = None, None
        if comm is not None:
            if self._activation != lib.CLNORM_ACTIVATION_NONE:
                raise ModuleError("%s: comm= cannot be combined with activation= (libclnorm_mpi has no fused "
                                  "activation)" % self)
            self._comm = _lib.comm_handle(comm)
            self._mpilib = _lib.mpi_binding()[1]
            self.comm = comm
        self._residualUsed = False
        self.residualGrad = None
        self.inplace = inplace
        if inplace and showWarnings:
            print("[clnorm] Warning: %s is using inplace flag" % self)
        self.maps = maps
        self.__dict__["epsilon"] = epsilon
        self.__dict__["initFactor"] = initFactor
        self.__dict__["minFactor"] = minFactor
        self.affine = affine
        self._set = set()  # which of scale, bias, mean, var hold values
        self._layer = None
        self._ownScaleGrad = self._ownBiasGrad = None
        self.savemean, self.saveinvvar, self.scalegrad, self.biasgrad = None, None, None, None
        self._layer = self._newLayer(_lib.default_queue(), self.calctype)
        if empty:
            return
        scale = np.random.normal(1.0, sscale if affine else 0.0, self._pshape).astype(np.float32)
        self.setVar("scale", Variable(scale))
        self.setVar("bias", Variable(np.zeros(self._pshape, dtype=np.float32)))
        self.setAttr("mean", np.zeros(self._pshape, dtype=np.float32))
        self.setAttr("var", np.ones(self._pshape, dtype=np.float32))

    def _cnd(self):
        return self._nd if 1 <= self._nd <= 3 else 1

    def _cshape(self, shape):
        """The shape given to the C layer: the data's own, or (batch, maps, rest) past 3 spatial dims."""
        if 1 <= self._nd <= 3:
            return shape
        return (shape[0], shape[1], int(np.prod(shape[2:])))

    def _newLayer(self, queue, dtype):
        return _Layer(queue, self._cnd(), self._groups, self._pshape, self.epsilon, self.initFactor, self.minFactor,
                      self.affine, self.name, self.inplace, dtype, self._activation)

    # -- parameters: views of the layer's buffers --
    def _field(key):
        def get(self):
            return self._layer.views[key] if key in self._set else None

        def put(self, value):
            self._assign(key, value)

        return property(get, put)

    scale = _field("scale")
    bias = _field("bias")
    mean = _field("mean")
    var = _field("var")
    del _field

    def _assign(self, key, value):
        if value is None:
            self._set.discard(key)
            return
        if self._layer is None:
            raise ModuleError("%s: the module has no layer yet" % self)
        view = self._layer.views[key]
        if value is not view:
            self._layer.write(key, _host(value))
        self._set.add(key)

    def setVar(self, name, var):
        if name in self._paramKeys:
            self._assign(name, var.data)
            var.data = self._layer.views[name]
            gkey = name + "grad"
            if self.affine:
                if var.grad is not None and var.grad is not self._layer.views[gkey]:
                    self._layer.write(gkey, _host(var.grad))
                var.grad = self._layer.views[gkey]
            elif var.grad is not None and not isinstance(var.grad, cla.Array):
                var.grad = cla.to_device(self._layer.queue, np.zeros(self._pshape, dtype=np.float32))
            elif var.grad is not None and var.grad.queue is not self._layer.queue:
                var.grad = cla.to_device(self._layer.queue, np.zeros(self._pshape, dtype=np.float32))
            self.vars[name] = var
        else:
            super().setVar(name, var)

    def setAttr(self, name, attr):
        if name in self._attrKeys:
            self._assign(name, attr)
            self.attrs[name] = self._layer.views[name]
        else:
            super().setAttr(name, attr)

    # hyperparameters: the C layer keeps its own copy, so a change rebuilds it
    def _hyper(key):
        def get(self):
            return self.__dict__[key]

        def put(self, value):
            self.__dict__[key] = value
            if self.__dict__.get("_layer") is not None:
                self._rebuild(self._layer.queue, self.calctype)

        return property(get, put)

    epsilon = _hyper("epsilon")
    initFactor = _hyper("initFactor")
    minFactor = _hyper("minFactor")
    del _hyper

    @property
    def numOfProps(self):
        """Training forwards since creation (the n of factor = max(initFactor / n, minFactor)); writable, so that
        a restored module continues its schedule."""
        return int(lib.clnorm_batchnorm_batches(self._layer.ptr))

    @numOfProps.setter
    def numOfProps(self, n):
        if n < 0:
            raise ModuleError("numOfProps must be >= 0, got %s" % n)
        check(lib.clnorm_batchnorm_set_batches(self._layer.ptr, int(n)), "numOfProps")

    def _rebuild(self, queue, dtype):
        """Moves the layer to another queue or data type, with every value it holds."""
        old = self._layer
        keep = [k for k in ("scale", "bias", "mean", "var") if k in self._set]
        if self.affine:
            keep += ["scalegrad", "biasgrad"]
        saved = self.savemean is not None
        if saved:
            keep += ["savemean", "saveinvvar"]
        values = {k: old.read(k) for k in keep}
        n = self.numOfProps
        new = self._newLayer(queue, dtype)
        for k, v in values.items():
            new.write(k, v)
        check(lib.clnorm_batchnorm_set_batches(new.ptr, n), "numOfProps")
        self._layer = new
        for name, var in self.vars.items():
            if name in self._paramKeys:
                var.data = new.views[name]
                if self.affine:
                    var.grad = new.views[name + "grad"]
                elif var.grad is not None:
                    var.grad = cla.to_device(queue, _host(var.grad))
        for name in list(self.attrs):
            if name in self._attrKeys:
                self.attrs[name] = new.views[name]
        if saved:
            self.savemean, self.saveinvvar = new.views["savemean"], new.views["saveinvvar"]
        if self.scalegrad is not None:
            self.scalegrad, self.biasgrad = self._gradViews(queue)
        self._ownScaleGrad = self._ownBiasGrad = None

    # -- running --
    def _acceptData(self, data):
        layer = self._layer
        if isinstance(data, cla.Array):
            if data.queue is not layer.queue:
                if data.queue is None:
                    raise ModuleError("%s: the data array has no queue" % self)
                if data.queue != layer.queue:
                    self._rebuild(data.queue, self.calctype)
                else:
                    layer.queue = data.queue
            if not data.flags.c_contiguous:
                raise ModuleError("%s: data must be C-contiguous, got strides %s" % (self, data.strides))
            return data
        return _lib.as_device(data, layer.queue, "data", dtype=self.calctype)

    def _acceptGrad(self, grad):
        if isinstance(grad, cla.Array):
            if not grad.flags.c_contiguous:
                raise ModuleError("%s: grad must be C-contiguous, got strides %s" % (self, grad.strides))
            return grad
        return _lib.as_device(grad, self._layer.queue, "grad", dtype=self.calctype)

    def _needParams(self):
        missing = [k for k in ("scale", "bias", "mean", "var") if k not in self._set]
        if missing:
            raise ModuleError("%s: %s not set (the module was created empty: set them with setVar / setAttr or "
                              "load)" % (self, ", ".join(missing)))

    def _setResidual(self, data, residual):
        if self._comm is not None:
            raise ModuleError("%s: a residual cannot be combined with comm= (libclnorm_mpi has no fused add)" % self)
        if isinstance(residual, cla.Array):
            if residual.queue != self._layer.queue:
                raise ModuleError("%s: the residual must be on the data's queue" % self)
            if not residual.flags.c_contiguous:
                raise ModuleError("%s: the residual must be C-contiguous, got strides %s" % (self, residual.strides))
        else:
            residual = _lib.as_device(residual, self._layer.queue, "residual", dtype=self.calctype)
        if residual.shape != data.shape:
            raise ModuleError("%s: the residual has shape %s but the data has %s" % (self, residual.shape,
                                                                                   data.shape))
        self._residual = residual

    def _forward(self, train, ty):
        layer = self._layer
        if self._comm is not None and train:
            return self._mpilib.clnorm_batchnorm_forward_mpi(self._comm, layer.ptr, 1, layer.tx, ty)
        if self._residual is not None or self._activation != lib.CLNORM_ACTIVATION_NONE:
            tz = ffi.NULL
            if self._residual is not None:
                _lib.fill_tensor(layer.tz, self._residual, self._cshape(self._residual.shape))
                tz = layer.tz
            return lib.clnorm_batchnorm_forward_ex(layer.ptr, 1 if train else 0, layer.tx, tz, ty)
        return lib.clnorm_batchnorm_forward(layer.ptr, 1 if train else 0, layer.tx, ty)

    def updateData(self, data):
        self._needParams()
        layer = self._layer
        shape = self._cshape(data.shape)
        _lib.fill_tensor(layer.tx, data, shape)
        if self.train:
            if self.inplace:
                raise ModuleError("%s: using inplace flag in train mode is prohibited" % self)
            out = layer.ctx.empty(data.shape, data.dtype)
            _lib.fill_tensor(layer.ty, out, shape)
            st = self._forward(True, layer.ty)
            if st:
                raise _lib.error(st, str(self))
            self.savemean, self.saveinvvar = layer.views["savemean"], layer.views["saveinvvar"]
            self._residualUsed = self._residual is not None
        else:
            if self.inplace:
                out = data
                ty = layer.tx
            else:
                out = layer.ctx.empty(data.shape, data.dtype)
                ty = layer.ty
                _lib.fill_tensor(ty, out, shape)
            st = self._forward(False, ty)
            if st:
                raise _lib.error(st, str(self))
        self.data = out

    def backward(self, grad, updParamGrads=True, updGrad=True, scale=1.0, momentum=0.0):
        """m.grad = the input gradient (updGrad); when affine and training (updParamGrads):
        vars[p].grad = scale * d(p) + momentum * vars[p].grad; m.scalegrad and m.biasgrad are this call's
        gradients."""
        grad = self._acceptGrad(grad)
        self.checkGradShape(grad.shape)
        self.checkGradType(grad.dtype)
        self.grad = None
        self.residualGrad = None
        if self.inData is None or self.savemean is None:
            raise ModuleError("%s: backward needs a training forward first (no saved statistics)" % self)
        if grad.shape != self.inData.shape:
            raise ModuleError("%s: grad has shape %s but the data had %s" % (self, grad.shape, self.inData.shape))
        layer = self._layer
        accumulate = updParamGrads and self.train and self.affine
        if not updGrad and not accumulate:
            return
        shape = self._cshape(grad.shape)
        _lib.fill_tensor(layer.tx, self.inData, shape)
        _lib.fill_tensor(layer.tdy, grad, shape)
        fused = self._activation != lib.CLNORM_ACTIVATION_NONE or self._residualUsed
        if fused:
            if self.data is None or self.data.shape != grad.shape:
                raise ModuleError("%s: backward with activation / residual needs the training forward's output "
                                  "(m.data)" % self)
            _lib.fill_tensor(layer.ty, self.data, shape)
        dx = None
        tdx = ffi.NULL
        if updGrad:
            dx = layer.ctx.empty(grad.shape, grad.dtype)
            _lib.fill_tensor(layer.tdx, dx, shape)
            tdx = layer.tdx
        dz, tdz = None, ffi.NULL
        if self._residualUsed:
            dz = layer.ctx.empty(grad.shape, grad.dtype)
            _lib.fill_tensor(layer.tdz, dz, shape)
            tdz = layer.tdz
        if accumulate or not self.affine:
            # one C call: dx and the accumulation vars grad = scale * g + momentum * vars grad
            if self._comm is not None:
                st = self._mpilib.clnorm_batchnorm_backward_mpi(self._comm, layer.ptr, layer.tx, layer.tdy, tdx,
                                                                scale, momentum)
            elif fused:
                st = lib.clnorm_batchnorm_backward_ex(layer.ptr, layer.tx, layer.ty, layer.tdy, tdx, tdz, scale,
                                                      momentum)
            else:
                st = lib.clnorm_batchnorm_backward(layer.ptr, layer.tx, layer.tdy, tdx, scale, momentum)
            if st:
                raise _lib.error(st, str(self))
            if self.affine:
                self.scalegrad, self.biasgrad = self._gradViews(layer.queue, scale, momentum)
        else:
            # the input gradient and this call's parameter gradients, the accumulators untouched
            sg, bg = self._ownGrads(layer.queue)
            self._bnBackward(tdx, tdz, sg, bg)
            self.scalegrad, self.biasgrad = sg, bg
        if updGrad:
            self.grad = dx
        self.residualGrad = dz

    def _bnBackward(self, tdx, tdz, sg, bg):
        """The functional backward with the layer's saved statistics into sg / bg (tensors tx, tdy and, fused, ty
        already filled): collective with comm=, with the activation's mask and dz otherwise."""
        layer = self._layer
        args = (lib.clnorm_batchnorm_buffer(layer.ptr, lib.CLNORM_SCALE), _lib.mem_of(sg), _lib.mem_of(bg),
                float(self.epsilon), lib.clnorm_batchnorm_buffer(layer.ptr, lib.CLNORM_SAVE_MEAN),
                lib.clnorm_batchnorm_buffer(layer.ptr, lib.CLNORM_SAVE_INVSTD))
        if self._comm is not None:
            check(self._mpilib.clnorm_bn_backward_mpi(self._comm, layer.ctx.ptr, self._cmode(), layer.tx, layer.tdy,
                                                      tdx, *args), str(self))
        elif self._activation != lib.CLNORM_ACTIVATION_NONE or self._residualUsed:
            check(lib.clnorm_bn_backward_ex(layer.ctx.ptr, self._cmode(), layer.tx, layer.ty, layer.tdy, tdx, tdz,
                                            args[0], ffi.NULL, args[1], args[2], args[3], args[4], args[5],
                                            self._activation), str(self))
        else:
            check(lib.clnorm_bn_backward(layer.ctx.ptr, self._cmode(), layer.tx, layer.tdy, tdx, *args), str(self))

    def _cmode(self):
        return lib.CLNORM_BN_SPATIAL

    def _ownGrads(self, queue):
        if self._ownScaleGrad is None or self._ownScaleGrad.queue is not queue:
            self._ownScaleGrad = cla.empty(queue, self._pshape, np.float32)
            self._ownBiasGrad = cla.empty(queue, self._pshape, np.float32)
        return self._ownScaleGrad, self._ownBiasGrad

    def _gradViews(self, queue, scale=1.0, momentum=0.0):
        """This call's parameter gradients: the accumulators themselves when they equal them (scale 1, momentum
        0, the usual case: no extra work); otherwise computed again into arrays of the module's own."""
        layer = self._layer
        if scale == 1.0 and momentum == 0.0:
            return layer.views["scalegrad"], layer.views["biasgrad"]
        sg, bg = self._ownGrads(queue)
        self._bnBackward(ffi.NULL, ffi.NULL, sg, bg)
        return sg, bg

    def accGradParams(self, grad, scale=1.0, momentum=0.0):
        pass  # done by backward's C call

    def reset(self):
        super().reset()
        self.savemean, self.saveinvvar = None, None
        self.residualGrad = None
        self._residualUsed = False
        if self.affine:
            self.scalegrad, self.biasgrad = None, None

    def calcMode(self, T):
        if T not in {np.float16, np.float32}:
            raise ModuleError("Unsupported dtype %s" % T)
        if T != self.calctype:
            self.calctype = T
            self._rebuild(self._layer.queue, T)
        self.calctype = T

    def _loadMissing(self, hdf, name):
        """An empty module takes the parameters and statistics a file has for it (PuzzleLib loads only the
        variables a module already has; an empty module then stays unusable)."""
        links = hdf["links"]
        for key in self._paramKeys:
            link = "%s.%s" % (name, key)
            if key not in self.vars and link in links:
                param = np.array(hdf["params"][str(links[link][()])])
                _checkShape(param, self._pshape, key)
                self.setVar(key, Variable(param.astype(np.float32, casting="safe")))
        if "attrs" in hdf:
            for key in self._attrKeys:
                link = "%s.%s" % (name, key)
                if key not in self.attrs and link in hdf["attrs"]:
                    val = np.array(hdf["attrs"][link])
                    _checkShape(val, self._pshape, key)
                    self.setAttr(key, val.astype(np.float32, casting="safe"))

    def checkDataShape(self, shape):
        if len(shape) != self._nd + 2:
            raise ModuleError("Data must be %dd tensor" % (self._nd + 2))
        if shape[1] != self.maps:
            raise ModuleError("Data has %d maps (expected: %d)" % (shape[1], self.maps))

    def checkGradShape(self, shape):
        if len(shape) != self._nd + 2:
            raise ModuleError("Grad must be %dd tensor" % (self._nd + 2))
        if shape[1] != self.maps:
            raise ModuleError("Grad has %d maps (expected: %d)" % (shape[1], self.maps))


class BatchNorm1D(BatchNormND):
    """PuzzleLib's BatchNorm1D(maps): data (batch, maps, length); parameters (1, maps, 1, 1)."""

    def __init__(self, maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False, inplace=False, activation=None, comm=None):
        Module.__init__(self, name)
        self.registerBlueprint(locals(), exclude=["comm"])
        self._nd = 1
        self._pshape = (1, maps, 1, 1)
        self._groups = maps
        self._init(maps, epsilon, initFactor, minFactor, sscale, affine, empty, inplace, activation, comm)


class BatchNorm2D(BatchNormND):
    """PuzzleLib's BatchNorm2D(maps): data (batch, maps, h, w); parameters (1, maps, 1, 1)."""

    def __init__(self, maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False, inplace=False, activation=None, comm=None):
        super().__init__(2, maps, epsilon, initFactor, minFactor, sscale, affine, name, empty, inplace, activation,
                         comm)
        self.registerBlueprint(locals(), exclude=["comm"])


class BatchNorm3D(BatchNormND):
    """PuzzleLib's BatchNorm3D(maps): data (batch, maps, d, h, w); parameters (1, maps, 1, 1, 1)."""

    def __init__(self, maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False, inplace=False, activation=None, comm=None):
        super().__init__(3, maps, epsilon, initFactor, minFactor, sscale, affine, name, empty, inplace, activation,
                         comm)
        self.registerBlueprint(locals(), exclude=["comm"])


class BatchNorm(BatchNormND):
    """PuzzleLib's BatchNorm(size): data (batch, size), one statistic per value (per activation); parameters
    (1, size, 1, 1)."""

    def __init__(self, size, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False, inplace=False, activation=None, comm=None):
        Module.__init__(self, name)
        self.registerBlueprint(locals(), exclude=["comm"])
        self.size = size
        self._nd = 0
        self._pshape = (1, size, 1, 1)
        self._groups = size
        self._init(size, epsilon, initFactor, minFactor, sscale, affine, empty, inplace, activation, comm)

    def _cnd(self):
        return 0

    def _cshape(self, shape):
        return shape

    def _cmode(self):
        return lib.CLNORM_BN_PER_ACTIVATION

    def checkDataShape(self, shape):
        if len(shape) != 2:
            raise ModuleError("Data must be 2d matrix")
        if int(np.prod(shape[1])) != self.size:
            raise ModuleError("Expected %d data dimensions, %d were given" % (self.size, shape[1]))

    def checkGradShape(self, shape):
        if len(shape) != 2:
            raise ModuleError("Grad must be 2d matrix")
        if int(np.prod(shape[1])) != self.size:
            raise ModuleError("Expected %d grad dimensions, %d were given" % (self.size, shape[1]))
