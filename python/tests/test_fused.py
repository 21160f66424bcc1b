"""Fused BatchNorm + add + ReLU (the C library's _ex calls) through clnorm.dnn (activation=, z=, out=, residual=)
and the modules (activation=, m(data, residual=z), m.residualGrad), against a float64 numpy reference: fresh
seeded data per case, outputs poisoned first."""
import numpy as np
import pyopencl.array as cla
import pytest

from clnorm import gpuarray
from clnorm.dnn import BatchNormActivation, BatchNormMode, batchNormNd, batchNormNdBackward
from clnorm.modules import BatchNorm, BatchNorm2D, BatchNorm3D, ModuleError
from conftest import BWD, F16, FWD, STAT, close, ref_backward, ref_infer, ref_train, ref_param_shape

NAN32 = np.float32(np.nan)


def poisoned(shape, dtype=np.float32):
    return gpuarray.to_gpu(np.full(shape, np.nan, dtype=dtype))


def relu(v):
    return np.maximum(v, 0.0)


def ref_fused_backward(x, y_stored, dy, scale, smean, sinv, relu_on, spatial=True):
    """g = dy * (y > 0) with the stored y (relu), then the plain backward with g; returns (dx, ds, db, g)."""
    g = dy.astype(np.float64)
    if relu_on:
        g = np.where(np.asarray(y_stored, np.float64) > 0, g, 0.0)
    dx, ds, db = ref_backward(x, g, scale, smean, sinv, spatial)
    return dx, ds, db, g


CASES = [((6, 4, 5, 7), BatchNormMode.spatial), ((5, 3, 2, 3, 4), BatchNormMode.spatial),
         ((9, 11), BatchNormMode.perActivation)]


@pytest.mark.parametrize("activation,with_z", [("relu", True), (BatchNormActivation.relu, False), (None, True)])
@pytest.mark.parametrize("shape,mode", CASES)
def test_dnn_train_forward_backward(shape, mode, with_z, activation, rng):
    spatial = mode == BatchNormMode.spatial
    pshape = ref_param_shape(np.empty(shape), spatial)
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    z = rng.normal(0.0, 1.0, shape).astype(np.float32) if with_z else None
    scale = rng.normal(1.0, 0.5, pshape).astype(np.float32)
    bias = rng.normal(0.0, 0.5, pshape).astype(np.float32)
    rmean = rng.normal(size=pshape).astype(np.float32)
    rvar = rng.uniform(0.5, 2.0, pshape).astype(np.float32)
    dmean, dvar = gpuarray.to_gpu(rmean), gpuarray.to_gpu(rvar)
    out = poisoned(shape)
    dz_dev = gpuarray.to_gpu(z) if with_z else None
    y, smean, sinv = batchNormNd(gpuarray.to_gpu(x), gpuarray.to_gpu(scale), gpuarray.to_gpu(bias), dmean, dvar,
                                 factor=0.3, mode=mode, out=out, activation=activation, z=dz_dev)
    assert y is out and smean.shape == pshape
    ry, m, v, inv, M = ref_train(x, scale, bias, spatial=spatial)
    pre = ry + (z.astype(np.float64) if with_z else 0.0)
    ref = relu(pre) if activation is not None else pre
    close(y.get(), ref, **FWD, what="y")
    if activation is not None:
        assert np.all(y.get() >= 0)
    close(smean.get(), m, **STAT, what="savemean")
    close(sinv.get(), inv, **STAT, what="saveinvvar")
    close(dmean.get(), 0.7 * rmean + 0.3 * m.reshape(pshape), **STAT, what="running mean")
    close(dvar.get(), 0.7 * rvar + 0.3 * v.reshape(pshape) * M / (M - 1), **STAT, what="running var")

    dy = rng.normal(size=shape).astype(np.float32)
    yh = y.get()
    res = batchNormNdBackward(gpuarray.to_gpu(x), gpuarray.to_gpu(dy), gpuarray.to_gpu(scale), smean, sinv,
                              mode=mode, activation=activation, out=y, residual=with_z,
                              bias=gpuarray.to_gpu(bias))
    assert len(res) == (4 if with_z else 3)
    rdx, rds, rdb, g = ref_fused_backward(x, yh, dy, scale, m, inv, activation is not None, spatial)
    close(res[0].get(), rdx, **BWD, what="dx")
    close(res[1].get(), rds, **BWD, what="dscale")
    close(res[2].get(), rdb, **BWD, what="dbias")
    if with_z:
        close(res[3].get(), g, atol=0, rtol=0, what="dz")  # the masked dy itself


@pytest.mark.parametrize("with_z", [True, False])
def test_dnn_inference(with_z, rng):
    shape = (3, 5, 4, 6)
    pshape = (1, 5, 1, 1)
    x = rng.normal(size=shape).astype(np.float32)
    z = rng.normal(size=shape).astype(np.float32)
    scale, bias = rng.normal(1, 0.5, pshape).astype(np.float32), rng.normal(0, 0.5, pshape).astype(np.float32)
    mean, var = rng.normal(size=pshape).astype(np.float32), rng.uniform(0.5, 2, pshape).astype(np.float32)
    ref = relu(ref_infer(x, scale, bias, mean, var) + (z if with_z else 0.0))
    out = poisoned(shape)
    y = batchNormNd(gpuarray.to_gpu(x), scale, bias, mean, var, test=True, out=out, activation="relu",
                    z=gpuarray.to_gpu(z) if with_z else None)
    assert y is out
    close(y.get(), ref, **FWD, what="y")
    if with_z:  # out may be z itself: written in place
        dz = gpuarray.to_gpu(z)
        y2 = batchNormNd(gpuarray.to_gpu(x), scale, bias, mean, var, test=True, out=dz, activation="RELU", z=dz)
        assert y2 is dz
        close(dz.get(), ref, **FWD, what="y over z")
    # residual without activation
    y3 = batchNormNd(gpuarray.to_gpu(x), scale, bias, mean, var, test=True, out=poisoned(shape), z=z)
    close(y3.get(), ref_infer(x, scale, bias, mean, var) + z, **FWD, what="add only")


def test_relu_mask_from_stored_output(rng):
    """A map whose scale and bias are 0 has pre-activation exactly 0: y = 0 there and no gradient passes."""
    shape = (4, 3, 5, 5)
    x = rng.normal(size=shape).astype(np.float32)
    scale = np.array([1.5, 0.0, 0.7], np.float32).reshape(1, 3, 1, 1)
    bias = np.array([0.1, 0.0, -0.2], np.float32).reshape(1, 3, 1, 1)
    y, sm, si = batchNormNd(gpuarray.to_gpu(x), gpuarray.to_gpu(scale), gpuarray.to_gpu(bias), None, None,
                            activation="relu", out=poisoned(shape))
    yh = y.get()
    assert np.all(yh[:, 1] == 0)
    dy = rng.normal(size=shape).astype(np.float32) + 0.5  # sum dy over map 1 is far from 0
    dx, ds, db = batchNormNdBackward(gpuarray.to_gpu(x), gpuarray.to_gpu(dy), gpuarray.to_gpu(scale), sm, si,
                                     activation="relu", out=y)
    assert db.get().ravel()[1] == 0 and ds.get().ravel()[1] == 0
    assert np.all(dx.get()[:, 1] == 0)
    rdx, rds, rdb, _ = ref_fused_backward(x, yh, dy, scale, sm.get(), si.get(), True)
    close(dx.get(), rdx, **BWD, what="dx")
    close(db.get(), rdb, **BWD, what="dbias")
    close(ds.get(), rds, **BWD, what="dscale")


def test_dnn_float16(rng):
    shape = (4, 3, 6, 6)
    pshape = (1, 3, 1, 1)
    x = rng.normal(size=shape).astype(np.float16)
    z = rng.normal(size=shape).astype(np.float16)
    scale, bias = rng.normal(1, 0.3, pshape).astype(np.float32), rng.normal(0, 0.3, pshape).astype(np.float32)
    y, sm, si = batchNormNd(gpuarray.to_gpu(x), scale, bias, None, None, activation="relu",
                            z=gpuarray.to_gpu(z), out=poisoned(shape, np.float16))
    assert y.dtype == np.float16
    ry, m, v, inv, M = ref_train(x, scale, bias)
    close(y.get(), relu(ry + z.astype(np.float64)), **F16, what="y f16")
    dy = rng.normal(size=shape).astype(np.float16)
    dx, ds, db, dz = batchNormNdBackward(gpuarray.to_gpu(x), gpuarray.to_gpu(dy), scale, sm, si, activation="relu",
                                         out=y, residual=True)
    rdx, rds, rdb, g = ref_fused_backward(x, y.get(), dy, scale, m, inv, True)
    assert dx.dtype == np.float16 and dz.dtype == np.float16
    close(dx.get(), rdx, **F16, what="dx f16")
    close(ds.get(), rds, atol=5e-2, rtol=2e-2, what="dscale f16")
    close(db.get(), rdb, atol=5e-2, rtol=2e-2, what="dbias f16")
    close(dz.get(), g, atol=0, rtol=0, what="dz f16")


def test_dnn_refusals(rng):
    shape = (4, 3, 5)
    x = gpuarray.to_gpu(rng.normal(size=shape).astype(np.float32))
    scale, bias = np.ones(3, np.float32), np.zeros(3, np.float32)
    mean, var = np.zeros(3, np.float32), np.ones(3, np.float32)
    for bad in ("gelu", 7, "relu6"):
        with pytest.raises(ModuleError, match="Unsupported activation"):
            batchNormNd(x, scale, bias, mean, var, activation=bad)
    # z of another shape: refused, the output untouched
    out = poisoned(shape)
    with pytest.raises(ModuleError, match="z has shape"):
        batchNormNd(x, scale, bias, mean, var, out=out, z=gpuarray.to_gpu(np.zeros((4, 3, 6), np.float32)))
    # z of another dtype (a device array is taken as it is): the C library's refusal, nothing written
    with pytest.raises(ModuleError) as e:
        batchNormNd(x, scale, bias, mean, var, out=out, activation="relu",
                    z=gpuarray.to_gpu(np.zeros(shape, np.float16)))
    assert e.value.status_name is not None and "CLNORM_ERROR" in e.value.status_name
    assert np.all(np.isnan(out.get())) and np.array_equal(mean, np.zeros(3, np.float32))
    # relu backward without the forward's output: CLNORM_ERROR_INVALID_ARGUMENT
    y, sm, si = batchNormNd(x, scale, bias, None, None, activation="relu")
    with pytest.raises(ModuleError) as e:
        batchNormNdBackward(x, gpuarray.to_gpu(np.ones(shape, np.float32)), scale, sm, si, activation="relu")
    assert e.value.status_name == "CLNORM_ERROR_INVALID_ARGUMENT"
    with pytest.raises(ModuleError, match="out"):
        batchNormNdBackward(x, np.ones(shape, np.float32), scale, sm, si, activation="relu",
                            out=np.ones((4, 3, 4), np.float32))


@pytest.mark.parametrize("cls,shape,spatial", [(BatchNorm2D, (5, 4, 3, 6), True),
                                               (BatchNorm3D, (3, 2, 3, 2, 4), True),
                                               (BatchNorm, (7, 6), False)])
@pytest.mark.parametrize("activation,with_z", [("relu", True), ("relu", False), (None, True)])
def test_module_fused(cls, shape, spatial, activation, with_z, rng):
    maps = shape[1]
    bn = cls(maps, activation=activation, sscale=0.4)
    bn.setVar("bias", type(bn.vars["bias"])(rng.normal(0, 0.3, bn.bias.shape).astype(np.float32)))
    assert bn.activation == activation
    rm, rv = bn.mean.get(), bn.var.get()
    for step in range(2):
        x = rng.normal(1.0, 2.0, shape).astype(np.float32)
        z = rng.normal(size=shape).astype(np.float32) if with_z else None
        scale, bias = bn.scale.get(), bn.bias.get()
        y = bn(gpuarray.to_gpu(x), residual=gpuarray.to_gpu(z) if with_z else None)
        ry, m, v, inv, M = ref_train(x, scale, bias, spatial=spatial)
        pre = ry + (z if with_z else 0.0)
        close(y.get(), relu(pre) if activation else pre, **FWD, what="y step %d" % step)
        f = max(1.0 / (step + 1), 0.1)
        rm = (1 - f) * rm + f * m.reshape(rm.shape)
        rv = (1 - f) * rv + f * v.reshape(rv.shape) * M / (M - 1)
        close(bn.mean.get(), rm, **STAT, what="running mean")
        close(bn.var.get(), rv, **STAT, what="running var")
        dy = rng.normal(size=shape).astype(np.float32)
        gacc = bn.vars["scale"].grad.get()
        bn.backward(gpuarray.to_gpu(dy), momentum=0.5)
        rdx, rds, rdb, g = ref_fused_backward(x, y.get(), dy, scale, m, inv, activation is not None, spatial)
        close(bn.grad.get(), rdx, **BWD, what="dx")
        close(bn.scalegrad.get(), rds, **BWD, what="dscale")
        close(bn.biasgrad.get(), rdb, **BWD, what="dbias")
        close(bn.vars["scale"].grad.get(), rds.reshape(gacc.shape) + 0.5 * gacc, **BWD, what="acc dscale")
        if with_z:
            close(bn.residualGrad.get(), g, atol=0, rtol=0, what="residualGrad")
        else:
            assert bn.residualGrad is None
        # updParamGrads=False: this call's gradients, the accumulators untouched (the functional _ex call)
        before = bn.vars["bias"].grad.get()
        bn.backward(gpuarray.to_gpu(dy), updParamGrads=False)
        close(bn.grad.get(), rdx, **BWD, what="dx (no accumulation)")
        assert np.array_equal(bn.vars["bias"].grad.get(), before)
        if with_z:
            close(bn.residualGrad.get(), g, atol=0, rtol=0, what="residualGrad (no accumulation)")
    # inference: running statistics, the residual and the activation
    bn.evalMode()
    x = rng.normal(size=shape).astype(np.float32)
    z = rng.normal(size=shape).astype(np.float32)
    y = bn(x, residual=z if with_z else None)
    pre = ref_infer(x, bn.scale.get(), bn.bias.get(), bn.mean.get(), bn.var.get(), spatial=spatial)
    pre = pre + (z if with_z else 0.0)
    close(y.get(), relu(pre) if activation else pre, **FWD, what="inference")


def test_module_float16_and_plain_unchanged(rng):
    shape = (4, 3, 5, 5)
    bn = BatchNorm2D(3, activation="relu")
    bn.calcMode(np.float16)
    x = rng.normal(size=shape).astype(np.float16)
    z = rng.normal(size=shape).astype(np.float16)
    scale, bias = bn.scale.get(), bn.bias.get()
    y = bn(gpuarray.to_gpu(x), residual=gpuarray.to_gpu(z))
    assert y.dtype == np.float16
    ry, m, v, inv, M = ref_train(x, scale, bias)
    close(y.get(), relu(ry + z), **F16, what="y f16")
    dy = rng.normal(size=shape).astype(np.float16)
    bn.backward(gpuarray.to_gpu(dy))
    rdx, rds, rdb, g = ref_fused_backward(x, y.get(), dy, scale, m, inv, True)
    close(bn.grad.get(), rdx, **F16, what="dx f16")
    close(bn.residualGrad.get(), g, atol=0, rtol=0, what="dz f16")
    # a module without the keywords: PuzzleLib's results, residualGrad stays None
    plain = BatchNorm2D(3)
    x32 = rng.normal(size=shape).astype(np.float32)
    y = plain(gpuarray.to_gpu(x32))
    close(y.get(), ref_train(x32, plain.scale.get(), plain.bias.get())[0], **FWD, what="plain")
    plain.backward(gpuarray.to_gpu(rng.normal(size=shape).astype(np.float32)))
    assert plain.residualGrad is None and plain.activation is None


def test_module_refusals(rng):
    with pytest.raises(ModuleError, match="Unsupported activation"):
        BatchNorm2D(3, activation="tanh")
    bn = BatchNorm2D(3, activation="relu")
    x = gpuarray.to_gpu(rng.normal(size=(2, 3, 4, 4)).astype(np.float32))
    with pytest.raises(ModuleError, match="residual has shape"):
        bn(x, residual=np.zeros((2, 3, 4, 5), np.float32))
    # a residual of another dtype on the device: the C library's refusal
    with pytest.raises(ModuleError) as e:
        bn(x, residual=gpuarray.to_gpu(np.zeros((2, 3, 4, 4), np.float16)))
    assert e.value.status_name is not None
    assert bn.numOfProps == 0  # the refused forwards counted nothing
    # inplace in training is refused as before
    with pytest.raises(ModuleError, match="inplace"):
        BatchNorm2D(3, inplace=True, activation="relu")(x, residual=x)
