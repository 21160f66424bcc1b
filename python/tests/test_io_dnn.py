"""HDF5 save / load in PuzzleLib's layout (both ways, a file laid out by hand as PuzzleLib writes it), the dnn
calls, device selection, lifetimes (1,000 modules and contexts), interpreter exit."""
import gc
import os
import resource
import subprocess
import sys

import h5py
import numpy as np
import pyopencl as cl
import pyopencl.array as cla
import pytest

import clnorm
from clnorm import dnn, gpuarray
from clnorm.dnn import BatchNormMode, batchNormNd, batchNormNdBackward
from clnorm.modules import BatchNorm, BatchNorm2D, BatchNorm3D, ModuleError
from conftest import BWD, FWD, STAT, close, device_selector, ref_backward, ref_infer, ref_train


def trained(rng, cls=BatchNorm3D, maps=3, shape=(4, 3, 2, 3, 4), name=None, affine=True):
    bn = cls(maps, name=name, affine=affine, sscale=0.3)
    for _ in range(3):
        x = rng.normal(1.0, 2.0, shape).astype(np.float32)
        bn(gpuarray.to_gpu(x))
        bn.backward(gpuarray.to_gpu(rng.normal(size=shape).astype(np.float32)))
        bn.updateParams(0.1)
    return bn


def check_layout(f, name, maps, pshape):
    """Exactly PuzzleLib's groups, names, shapes and dtypes."""
    assert sorted(f.keys()) == ["attrs", "links", "params"]
    assert sorted(f["params"].keys()) == ["0", "1"]
    assert sorted(f["links"].keys()) == sorted(["%s.scale" % name, "%s.bias" % name])
    assert sorted(f["attrs"].keys()) == sorted(["%s.mean" % name, "%s.var" % name])
    assert f["links"]["%s.scale" % name][()] == 0 and f["links"]["%s.bias" % name][()] == 1
    for ds in list(f["params"].values()) + list(f["attrs"].values()):
        assert ds.shape == pshape and ds.dtype == np.float32
    assert f["params"]["0"].compression == "gzip"


def same_params(a, b):
    for k in ("scale", "bias", "mean", "var"):
        assert np.array_equal(getattr(a, k).get(), getattr(b, k).get()), k


@pytest.mark.parametrize("name", [None, "bn"])
def test_save_load_path(tmp_path, rng, name):
    bn = trained(rng, name=name)
    path = str(tmp_path / "sub" / "bn.hdf")
    assert bn.save(path) is None
    with h5py.File(path, "r") as f:
        check_layout(f, name or "", 3, (1, 3, 1, 1, 1))
        assert np.array_equal(f["params"]["0"][()], bn.scale.get())
        assert np.array_equal(f["attrs"]["%s.var" % (name or "")][()], bn.var.get())
    fresh = BatchNorm3D(3, name=name)
    fresh.load(path)
    same_params(bn, fresh)
    # the same inference output
    bn.evalMode()
    fresh.evalMode()
    x = gpuarray.to_gpu(rng.normal(size=(2, 3, 2, 3, 4)).astype(np.float32))
    assert np.array_equal(bn(x).get(), fresh(x).get())


def test_save_bytes_and_open_file(tmp_path, rng):
    bn = trained(rng, cls=BatchNorm, maps=7, shape=(9, 7), name="head")
    data = bn.save()
    assert isinstance(data, bytes) and data[:8] == b"\x89HDF\r\n\x1a\n"
    fresh = BatchNorm(7, name="head")
    fresh.load(data)
    same_params(bn, fresh)
    path = str(tmp_path / "open.hdf")
    with h5py.File(path, "w") as f:
        bn.save(f)
    with h5py.File(path, "r") as f:
        check_layout(f, "head", 7, (1, 7, 1, 1))
    fresh2 = BatchNorm(7, name="head")
    with h5py.File(path, "r") as f:
        fresh2.load(f)
    same_params(bn, fresh2)
    fresh3 = BatchNorm(7, name="other")
    fresh3.load(data, name="head")
    same_params(bn, fresh3)
    with pytest.raises(ModuleError, match="load error"):
        BatchNorm(7, name="nothere").load(data)
    with pytest.raises(ModuleError, match="load error"):
        BatchNorm(8, name="head").load(data)


def test_load_file_laid_out_as_puzzlelib_writes_it(tmp_path, rng):
    """Written with h5py alone, exactly as PuzzleLib's Module.save lays it out."""
    pshape = (1, 4, 1, 1)
    scale = rng.normal(1.0, 0.3, pshape).astype(np.float32)
    bias = rng.normal(size=pshape).astype(np.float32)
    mean = rng.normal(size=pshape).astype(np.float32)
    var = rng.uniform(0.5, 2.0, pshape).astype(np.float32)
    path = str(tmp_path / "puzzlelib.hdf")
    with h5py.File(path, "w", libver="earliest") as f:
        p, lk, at = f.require_group("params"), f.require_group("links"), f.require_group("attrs")
        p.create_dataset("0", data=scale, compression="gzip")
        lk["net.bn2.scale"] = 0
        p.create_dataset("1", data=bias, compression="gzip")
        lk["net.bn2.bias"] = 1
        at.create_dataset("net.bn2.mean", data=mean, compression="gzip")
        at.create_dataset("net.bn2.var", data=var, compression="gzip")
    for empty in (False, True):
        bn = BatchNorm2D(4, name="net.bn2", empty=empty)
        bn.load(path)
        assert np.array_equal(bn.scale.get(), scale) and np.array_equal(bn.bias.get(), bias)
        assert np.array_equal(bn.mean.get(), mean) and np.array_equal(bn.var.get(), var)
        bn.evalMode()
        x = rng.normal(size=(3, 4, 5, 5)).astype(np.float32)
        close(bn(gpuarray.to_gpu(x)).get(), ref_infer(x, scale, bias, mean, var), **FWD, what="loaded inference")
    # assumeUniqueNames: "net.bn2" -> "net.bn2" (first and last token)
    bn = BatchNorm2D(4, name="net.block.bn2")
    bn.load(path, assumeUniqueNames=True)
    assert np.array_equal(bn.scale.get(), scale)


def test_non_affine_save_load(rng):
    bn = trained(rng, affine=False, cls=BatchNorm2D, maps=2, shape=(3, 2, 4, 4))
    bn.scale.set(rng.normal(1.0, 0.2, (1, 2, 1, 1)).astype(np.float32))
    fresh = BatchNorm2D(2, affine=False)
    fresh.load(bn.save())
    same_params(bn, fresh)


def test_blueprint(rng):
    bn = BatchNorm2D(3, name="b")
    data = bn.save(withBlueprint=True)
    f = BatchNorm2D.ensureHdf(data, "r")
    try:
        import json
        bp = json.loads(f["blueprint"][()])
        assert bp["classname"] == "BatchNorm2D" and bp["scheme"]["maps"] == 3
    finally:
        f.close()


# ---- dnn -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,mode", [((4, 3, 5, 6), BatchNormMode.spatial), ((5, 6, 1, 1), BatchNormMode.perActivation),
                                        ((3, 2, 3, 4, 5), BatchNormMode.spatial), ((6, 4), BatchNormMode.perActivation),
                                        ((2, 3, 2, 2, 2, 3), BatchNormMode.spatial)])
def test_dnn(shape, mode, rng):
    spatial = mode == BatchNormMode.spatial
    pshape = (1, shape[1]) + (1,) * (len(shape) - 2) if spatial else (1,) + shape[1:]
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    scale = rng.normal(1.0, 0.3, pshape).astype(np.float32)
    bias = rng.normal(size=pshape).astype(np.float32)
    rm = rng.normal(size=pshape).astype(np.float32)
    rv = rng.uniform(0.5, 2, pshape).astype(np.float32)
    d_mean, d_var = gpuarray.to_gpu(rm), gpuarray.to_gpu(rv)
    out, sm, si = batchNormNd(gpuarray.to_gpu(x), gpuarray.to_gpu(scale), gpuarray.to_gpu(bias), d_mean, d_var,
                              1e-5, 0.3, False, mode=mode)
    y, mean, var, inv, M = ref_train(x, scale, bias, 1e-5, spatial)
    close(out.get(), y, **FWD, what="dnn y")
    assert sm.shape == pshape and si.shape == pshape
    close(sm.get(), mean.reshape(pshape), **STAT, what="dnn savemean")
    close(si.get(), inv.reshape(pshape), **STAT, what="dnn saveinvvar")
    close(d_mean.get(), 0.7 * rm + 0.3 * mean.reshape(pshape), **STAT, what="dnn running mean")
    close(d_var.get(), 0.7 * rv + 0.3 * var.reshape(pshape) * M / (M - 1), **STAT, what="dnn running var")
    dy = rng.normal(size=shape).astype(np.float32)
    gi, gs, gb = batchNormNdBackward(gpuarray.to_gpu(x), gpuarray.to_gpu(dy), gpuarray.to_gpu(scale), sm, si,
                                     mode=mode)
    dx, ds, db = ref_backward(x, dy, scale, mean, inv, spatial)
    close(gi.get(), dx, **BWD, what="dnn ingrad")
    assert gs.shape == pshape and gb.shape == pshape
    close(gs.get(), ds.reshape(pshape), **BWD, what="dnn scalegrad")
    close(gb.get(), db.reshape(pshape), **BWD, what="dnn biasgrad")
    # without saved statistics: recomputed
    gi2, gs2, _ = batchNormNdBackward(gpuarray.to_gpu(x), gpuarray.to_gpu(dy), gpuarray.to_gpu(scale), None, None,
                                      mode=mode)
    close(gi2.get(), dx, **BWD, what="dnn ingrad recomputed")
    # inference, into data itself
    d = gpuarray.to_gpu(x)
    res = batchNormNd(d, gpuarray.to_gpu(scale), gpuarray.to_gpu(bias), d_mean, d_var, test=True, mode=mode, out=d)
    assert res is d
    close(d.get(), ref_infer(x, scale, bias, d_mean.get(), d_var.get(), spatial=spatial), **FWD, what="dnn test")


def test_dnn_numpy_and_offsets_and_errors(rng):
    x = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    scale = rng.normal(1.0, 0.2, (1, 3, 1, 1)).astype(np.float32)
    bias = np.zeros((1, 3, 1, 1), np.float32)
    mean, var = np.zeros(3, np.float32), np.ones(3, np.float32)  # numpy statistics: updated in place
    out, sm, si = batchNormNd(x, scale, bias, mean, var, factor=1.0)
    y, m, v, inv, M = ref_train(x, scale, bias)
    close(out.get(), y, **FWD, what="numpy dnn")
    close(mean, m.ravel(), **STAT, what="numpy mean updated")
    close(var, v.ravel() * M / (M - 1), **STAT, what="numpy var updated")
    # parameters at an offset of their buffer
    big = gpuarray.to_gpu(np.concatenate([np.zeros(5, np.float32), scale.ravel()]))
    sc = big[5:]
    assert sc.offset > 0
    out2, _, _ = batchNormNd(gpuarray.to_gpu(x), sc, gpuarray.to_gpu(bias), None, None)
    close(out2.get(), y, **FWD, what="offset scale")
    with pytest.raises(ModuleError, match="values"):
        batchNormNd(gpuarray.to_gpu(x), gpuarray.to_gpu(np.ones(4, np.float32)), gpuarray.to_gpu(bias), None, None)
    with pytest.raises(ModuleError) as e:
        batchNormNd(gpuarray.to_gpu(x[:1, :, :1, :1]), scale, bias, None, None)
    assert e.value.status_name == "CLNORM_ERROR_SHAPE"


def test_dnn_second_context_and_float16(rng, queue):
    ctx2 = cl.Context([queue.device])
    q2 = cl.CommandQueue(ctx2)
    x = rng.normal(size=(3, 2, 4, 4)).astype(np.float16)
    scale = rng.normal(1.0, 0.2, (1, 2, 1, 1)).astype(np.float32)
    bias = np.zeros((1, 2, 1, 1), np.float32)
    out, sm, si = batchNormNd(cla.to_device(q2, x), cla.to_device(q2, scale), cla.to_device(q2, bias), None, None)
    assert out.queue == q2 and out.dtype == np.float16
    close(out.get(), ref_train(x, scale, bias)[0], atol=2e-2, rtol=2e-2, what="f16 on a second context")


# ---- device selection ---------------------------------------------------------------------------------------
def test_default_queue_and_set_device():
    q = clnorm.default_queue()
    assert clnorm.default_queue() is q
    assert gpuarray.zeros((2, 3)).queue is q and gpuarray.empty((4,), np.float16).dtype == np.float16
    assert gpuarray.GPUArray is cla.Array
    with pytest.raises(ModuleError) as e:
        clnorm.set_device("no-such-device-anywhere")
    assert e.value.status_name == "CLNORM_ERROR_NO_DEVICE"
    assert clnorm.default_queue() is q
    assert clnorm.library_version() == 100


def test_set_device_in_a_fresh_interpreter():
    # the suite's device (CLNORM_TEST_DEVICE), so that the test runs wherever the others do
    code = ("import clnorm, numpy as np\n"
            "q = clnorm.set_device(%r)\n"
            "from clnorm import gpuarray\n"
            "from clnorm.modules import BatchNorm2D\n"
            "assert clnorm.default_queue() is q and q.device.name.strip() in clnorm.default_device_name()\n"
            "bn = BatchNorm2D(2)\n"
            "out = bn(gpuarray.to_gpu(np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)))\n"
            "assert out.queue is q\n"
            "print('ok')\n") % device_selector()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ---- lifetimes -----------------------------------------------------------------------------------------------
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_1000_modules_and_contexts_no_growth(queue, rng):
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    base = clnorm.release_unused_contexts()
    marks = []
    for i in range(1000):
        q = cl.CommandQueue(queue.context)  # a queue of its own: a clnorm context of its own
        bn = BatchNorm2D(3)
        y = bn(cla.to_device(q, x))
        bn.backward(cla.to_device(q, x))
        if i % 250 == 249:
            y.get()
            gc.collect()
            marks.append(rss_mb())
        del q, bn, y
        assert clnorm.live_contexts() <= base + 9  # the default and the recent queues at most
    assert clnorm.release_unused_contexts() == base
    # memory: whatever the first 250 set up, the next 750 do not add to it
    assert marks[-1] - marks[0] < 30, marks
    # modules on one queue
    for i in range(1000):
        bn = BatchNorm2D(3)
        bn(gpuarray.to_gpu(x))
    del bn
    assert clnorm.release_unused_contexts() == base


def test_no_crash_at_interpreter_exit():
    code = ("import numpy as np, pyopencl as cl, pyopencl.array as cla\n"
            "import clnorm\n"
            "from clnorm import gpuarray, dnn\n"
            "from clnorm.modules import BatchNorm3D, BatchNorm\n"
            "q2 = cl.CommandQueue(cl.Context([clnorm.default_queue().device]))\n"
            "mods = [BatchNorm3D(2) for _ in range(5)] + [BatchNorm(4)]\n"
            "outs = [m(gpuarray.to_gpu((np.ones((2, 2, 2, 2, 2)) * np.arange(2).reshape(1, 2, 1, 1, 1)).astype(np.float32)))\n"
            "        for m in mods[:5]]\n"
            "m2 = BatchNorm3D(2); o2 = m2(cla.to_device(q2, np.random.rand(2, 2, 2, 2, 2).astype(np.float32)))\n"
            "r = dnn.batchNormNd(cla.to_device(q2, np.random.rand(3, 2).astype(np.float32)), np.ones(2), np.zeros(2),"
            " None, None, mode=dnn.BatchNormMode.perActivation)\n"
            "print('done')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "done", (r.returncode, r.stderr)
