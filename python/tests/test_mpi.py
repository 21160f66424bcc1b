"""The modules' comm= keyword (mpi4py communicator, synchronised through libclnorm_mpi).

`make test` runs this file under `mpirun -np 2` and `-np 3` with CLNORM_MPI_TEST=1 when mpi4py is importable
(every rank runs every test; the ranks' batches differ, one is empty with 3 ranks). Checked: each rank's output
and input gradient against the float64 reference of the ranks' batches concatenated in rank order; running
statistics and parameter gradients bit-identical on every rank; the layer over several steps against a
single-process module on the concatenated batch. In the plain pytest run only the refusals without MPI run.
"""
import os

import numpy as np
import pytest

from clnorm import _lib, gpuarray
from clnorm.modules import BatchNorm, BatchNorm2D, BatchNorm3D, ModuleError, Variable
from conftest import BASE_SEED, BWD, FWD, STAT, close, ref_backward, ref_infer, ref_train

UNDER_MPIRUN = os.environ.get("CLNORM_MPI_TEST") == "1"
needs_mpirun = pytest.mark.skipif(not UNDER_MPIRUN, reason="run by `make test` under mpirun (CLNORM_MPI_TEST=1)")


def test_comm_without_libclnorm_mpi_is_a_module_error(monkeypatch):
    """When the package has no libclnorm_mpi (or mpi4py is missing), comm= is refused with a clear message."""
    monkeypatch.setattr(_lib, "_mpi", None)
    monkeypatch.setattr(_lib, "_MPI_LIB_PATH", "/nonexistent/libclnorm_mpi.so")
    with pytest.raises(ModuleError, match="libclnorm_mpi"):
        BatchNorm3D(3, comm=object())
    assert _lib.mpi_available() is not None


def test_comm_without_mpi4py_is_a_module_error(monkeypatch):
    import sys
    monkeypatch.setattr(_lib, "_mpi", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    if not (os.path.exists(_lib._MPI_LIB_PATH) and os.path.exists(_lib._MPI_CDEF_PATH)):
        pytest.skip("this package has no libclnorm_mpi (the other refusal applies)")
    with pytest.raises(ModuleError, match="mpi4py"):
        BatchNorm2D(3, comm=object())


@pytest.fixture(scope="module")
def mpi():
    if not UNDER_MPIRUN:
        pytest.skip("run by `make test` under mpirun (CLNORM_MPI_TEST=1)")
    reason = _lib.mpi_available()
    if reason is not None:
        pytest.skip(reason)
    from mpi4py import MPI
    return MPI


def batches(size, total_min=4):
    """Per-rank batch sizes: uneven, one rank empty when there are 3 or more."""
    sizes = [3 + (r % 3) for r in range(size)]
    if size >= 3:
        sizes[1] = 0
    return sizes


def shared_rng(request, salt=0):
    """The same generator on every rank (the global batch is drawn identically everywhere): BASE_SEED is rank 0's
    on every rank under mpirun (conftest)."""
    import zlib
    return np.random.default_rng([BASE_SEED, zlib.crc32(request.node.nodeid.encode()), salt])


def identical_on_all_ranks(comm, ary, what):
    blobs = comm.allgather(np.ascontiguousarray(ary).tobytes())
    assert all(b == blobs[0] for b in blobs), "%s differs between ranks" % what


CASES = [(BatchNorm3D, (3, 2, 3, 4), True), (BatchNorm2D, (4, 5, 3), True), (BatchNorm, (6,), False)]


@needs_mpirun
@pytest.mark.parametrize("cls,inner,spatial", CASES)
def test_layer_steps_vs_single_process(mpi, request, cls, inner, spatial):
    comm = mpi.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes = batches(size)
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    rng = shared_rng(request)
    maps = inner[0]
    dist = cls(maps, comm=comm, minFactor=0.2)
    single = cls(maps, minFactor=0.2)
    scale0 = rng.normal(1.0, 0.3, dist.scale.shape).astype(np.float32)
    for m in (dist, single):
        m.setVar("scale", Variable(scale0.copy()))
    assert dist.comm is comm
    for step in range(3):
        xg = rng.normal(0.5, 2.0, (sum(sizes),) + inner).astype(np.float32)
        dyg = rng.normal(size=xg.shape).astype(np.float32)
        scale, bias = dist.scale.get(), dist.bias.get()
        y = dist(gpuarray.to_gpu(xg[lo:hi]))
        yg = single(gpuarray.to_gpu(xg))
        assert y.shape == (hi - lo,) + inner
        ry, m, v, inv, M = ref_train(xg, scale, bias, spatial=spatial)
        close(y.get(), ry[lo:hi], **FWD, what="y rank %d step %d" % (rank, step))
        close(y.get(), yg.get()[lo:hi], **FWD, what="y vs single process")
        for key in ("mean", "var", "savemean", "saveinvvar"):
            got = getattr(dist, key).get()
            identical_on_all_ranks(comm, got, key)
            close(got, getattr(single, key).get(), **STAT, what="%s vs single process" % key)
        close(dist.savemean.get(), m, **STAT, what="savemean vs reference")
        assert dist.numOfProps == single.numOfProps == step + 1
        dist.backward(gpuarray.to_gpu(dyg[lo:hi]), momentum=0.5)
        single.backward(gpuarray.to_gpu(dyg), momentum=0.5)
        rdx, rds, rdb = ref_backward(xg, dyg, scale, m, inv, spatial=spatial)
        close(dist.grad.get(), rdx[lo:hi], **BWD, what="dx rank %d step %d" % (rank, step))
        close(dist.grad.get(), single.grad.get()[lo:hi], **BWD, what="dx vs single process")
        for key in ("scale", "bias"):
            g = dist.vars[key].grad.get()
            identical_on_all_ranks(comm, g, key + " grad")
            close(g, single.vars[key].grad.get(), **BWD, what="%s grad vs single process" % key)
        close(dist.scalegrad.get(), rds, **BWD, what="dscale vs reference")
        close(dist.biasgrad.get(), rdb, **BWD, what="dbias vs reference")
        dist.updateParams(0.05)
        single.updateParams(0.05)
        identical_on_all_ranks(comm, dist.scale.get(), "scale after update")
    # inference: running statistics, no communication
    dist.evalMode()
    x = rng.normal(size=(2,) + inner).astype(np.float32)
    y = dist(gpuarray.to_gpu(x))
    close(y.get(), ref_infer(x, dist.scale.get(), dist.bias.get(), dist.mean.get(), dist.var.get(),
                             spatial=spatial), **FWD, what="inference")


@needs_mpirun
def test_functional_backward_paths(mpi, request):
    """updParamGrads=False and scale != 1 go through clnorm_bn_backward_mpi: global gradients of this call."""
    comm = mpi.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes = batches(size)
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    rng = shared_rng(request)
    inner = (3, 4, 5)
    bn = BatchNorm2D(3, comm=comm)
    xg = rng.normal(size=(sum(sizes),) + inner).astype(np.float32)
    dyg = rng.normal(size=xg.shape).astype(np.float32)
    scale, bias = bn.scale.get(), bn.bias.get()
    bn(gpuarray.to_gpu(xg[lo:hi]))
    ry, m, v, inv, M = ref_train(xg, scale, bias)
    rdx, rds, rdb = ref_backward(xg, dyg, scale, m, inv)
    acc = bn.vars["scale"].grad.get()
    bn.backward(gpuarray.to_gpu(dyg[lo:hi]), updParamGrads=False)
    close(bn.grad.get(), rdx[lo:hi], **BWD, what="dx")
    close(bn.scalegrad.get(), rds, **BWD, what="dscale")
    identical_on_all_ranks(comm, bn.scalegrad.get(), "dscale")
    assert np.array_equal(bn.vars["scale"].grad.get(), acc)
    bn.backward(gpuarray.to_gpu(dyg[lo:hi]), scale=2.0, momentum=0.0)
    close(bn.vars["scale"].grad.get(), 2.0 * rds, **BWD, what="2 * dscale accumulated")
    close(bn.scalegrad.get(), rds, **BWD, what="dscale of the call")
    identical_on_all_ranks(comm, bn.vars["bias"].grad.get(), "bias grad")


@needs_mpirun
def test_refusals_with_comm(mpi, request):
    comm = mpi.COMM_WORLD
    with pytest.raises(ModuleError, match="mpi4py communicator"):
        BatchNorm2D(3, comm="world")
    with pytest.raises(ModuleError, match="activation"):
        BatchNorm2D(3, comm=comm, activation="relu")
    bn = BatchNorm2D(3, comm=comm)
    x = gpuarray.to_gpu(np.ones((2, 3, 2, 2), np.float32))
    with pytest.raises(ModuleError, match="residual"):
        bn(x, residual=x)
    # a factor schedule count that differs between ranks is refused on every rank with the same status (no rank
    # left waiting), nothing written
    rank = comm.Get_rank()
    if comm.Get_size() > 1:
        odd = BatchNorm2D(3, comm=comm)
        odd.numOfProps = rank
        mean = odd.mean.get()
        with pytest.raises(ModuleError) as e:
            odd(x)
        names = comm.allgather(e.value.status_name)
        assert names[0] is not None and all(n == names[0] for n in names), names
        assert "training forwards" in str(e.value)
        assert odd.numOfProps == rank and np.array_equal(odd.mean.get(), mean)
