"""Shared pieces of the Python suite: the test device, a float64 numpy reference of SEMANTICS.md, seeded data fresh
per case, tolerances (SEMANTICS.md "Precision").

As the C suites: the device is $CLNORM_TEST_DEVICE (a clnorm selector, default "pocl"); with no such device every
test is skipped, unless CLNORM_TEST_REQUIRE_DEVICE=1 makes it a failure. The base seed is $CLNORM_TEST_SEED, else
drawn from the clock (under mpirun, rank 0's on every rank); it is printed at the end of the run (and in the header
without -q)."""
import os
import time
import zlib

import numpy as np
import pytest


def _base_seed():
    s = os.environ.get("CLNORM_TEST_SEED", "")
    seed = int(s, 0) if s else (time.time_ns() ^ os.getpid()) % 1000000000
    if os.environ.get("CLNORM_MPI_TEST") == "1":  # under mpirun (test_mpi.py): every rank takes rank 0's
        try:
            from mpi4py import MPI
        except ImportError:
            return seed
        seed = MPI.COMM_WORLD.bcast(seed, root=0)
    return seed


BASE_SEED = _base_seed()


def device_selector():
    return os.environ.get("CLNORM_TEST_DEVICE") or "pocl"


def _describe():
    return "clnorm tests: device selector CLNORM_TEST_DEVICE=%r, base seed CLNORM_TEST_SEED=%d" % (
        device_selector(), BASE_SEED)


def pytest_report_header(config):
    return _describe()


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(_describe())


@pytest.fixture(scope="session", autouse=True)
def clnorm_test_device():
    """The default device of the whole run (clnorm.set_device), before any test makes an array or a module."""
    import clnorm
    try:
        return clnorm.set_device(device_selector())
    except clnorm.ModuleError as e:
        required = os.environ.get("CLNORM_TEST_REQUIRE_DEVICE", "") not in ("", "0")
        if e.status_name == "CLNORM_ERROR_NO_DEVICE" and not required:
            pytest.skip("no device for CLNORM_TEST_DEVICE=%r (set CLNORM_TEST_REQUIRE_DEVICE=1 to fail instead): %s"
                        % (device_selector(), e))
        raise


FWD = dict(atol=1e-5, rtol=1e-4)
BWD = dict(atol=1e-4, rtol=1e-3)
STAT = dict(atol=1e-5, rtol=1e-5)
F16 = dict(atol=2e-2, rtol=2e-2)


@pytest.fixture
def rng(request):
    """A generator seeded from the run's base seed and the test's id, so each case gets its own fresh data."""
    return np.random.default_rng([BASE_SEED, zlib.crc32(request.node.nodeid.encode())])


@pytest.fixture(scope="session")
def queue(clnorm_test_device):
    return clnorm_test_device


def axes(ndim, spatial):
    return (0,) + tuple(range(2, ndim)) if spatial else (0,)


def ref_train(x, scale, bias, eps=1e-5, spatial=True):
    """Batch statistics and output in float64; scale/bias of any shape with the group count of values."""
    x = x.astype(np.float64)
    ax = axes(x.ndim, spatial)
    mean = x.mean(axis=ax, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=ax, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    s = np.asarray(scale, np.float64).reshape(mean.shape)
    b = np.asarray(bias, np.float64).reshape(mean.shape)
    y = (x - mean) * inv * s + b
    M = x.size // mean.size
    return y, mean, var, inv, M


def ref_infer(x, scale, bias, mean, var, eps=1e-5, spatial=True):
    x = x.astype(np.float64)
    shape = ref_param_shape(x, spatial)
    s, b, m, v = (np.asarray(a, np.float64).reshape(shape) for a in (scale, bias, mean, var))
    return (x - m) / np.sqrt(v + eps) * s + b


def ref_param_shape(x, spatial):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2) if spatial else (1,) + x.shape[1:]


def ref_backward(x, dy, scale, smean, sinv, spatial=True):
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    ax = axes(x.ndim, spatial)
    shape = ref_param_shape(x, spatial)
    m = np.asarray(smean, np.float64).reshape(shape)
    inv = np.asarray(sinv, np.float64).reshape(shape)
    s = np.asarray(scale, np.float64).reshape(shape)
    M = x.size // int(np.prod(shape))
    xhat = (x - m) * inv
    db = dy.sum(axis=ax, keepdims=True)
    ds = (dy * xhat).sum(axis=ax, keepdims=True)
    dx = s * inv / M * (M * dy - db - xhat * ds)
    return dx, ds, db


def close(got, ref, atol, rtol, what=""):
    got = np.asarray(got, np.float64).reshape(np.shape(ref))
    err = np.abs(got - ref) - (atol + rtol * np.abs(ref))
    if np.any(~np.isfinite(got)) or np.any(err > 0):
        i = np.unravel_index(int(np.nanargmax(np.where(np.isfinite(err), err, np.inf))), err.shape)
        raise AssertionError("%s: worst index %s got %r expected %r" % (what, i, got[i], ref[i]))
