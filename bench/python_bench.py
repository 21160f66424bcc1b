"""Python module against the same C calls, side by side in one run (run by `make bench`; never a timed test).

1. Large: BatchNorm3D on (8, 32, 32, 64, 64) float32: the module's training forward and backward against the C
   layer's clnorm_batchnorm_forward / clnorm_batchnorm_backward on the same buffers, called through cffi without
   the module; interleaved, median of REPS, each timed to clFinish. Ratio module / C (target: within 3 %).
2. Small: BatchNorm2D on (2, 4, 8, 8): per-call time of CALLS back-to-back calls (then one clFinish), module
   against C, median over REPS; the difference is what the Python layer adds per call (target: <= 25 us).

Usage: python bench/python_bench.py [--large-reps N] [--small-reps N] [--calls N] [--skip-large] [--smoke]
"""
import argparse
import platform
import statistics
import subprocess
import time

import numpy as np
import pyopencl.array as cla

import clnorm
from clnorm import gpuarray
from clnorm._lib import check, ffi, lib
from clnorm.modules import BatchNorm2D, BatchNorm3D


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class RawLayer:
    """The C layer driven directly through cffi: what the module does, minus the module."""

    def __init__(self, queue, nd, maps, shape):
        out = ffi.new("clnorm_context **")
        check(lib.clnorm_context_create_from_queue(ffi.cast("cl_command_queue", queue.int_ptr), out))
        self.ctx = ffi.gc(out[0], lib.clnorm_context_destroy)
        cfg = ffi.new("clnorm_batchnorm_config *")
        lib.clnorm_batchnorm_config_init(cfg, nd, maps)
        bn = ffi.new("clnorm_batchnorm **")
        check(lib.clnorm_batchnorm_create(self.ctx, cfg, bn))
        self.bn = ffi.gc(bn[0], lib.clnorm_batchnorm_destroy)
        self.shape = shape

    def tensor(self, ary):
        t = ffi.new("clnorm_tensor *")
        t.buffer = ffi.cast("cl_mem", ary.base_data.int_ptr)
        t.offset = ary.offset
        t.ndim = len(self.shape)
        for i, n in enumerate(self.shape):
            t.shape[i] = n
        t.dtype = lib.CLNORM_F32
        t.layout = lib.CLNORM_NCHW
        return t


def timed(fn, queue):
    queue.finish()
    t0 = time.perf_counter()
    fn()
    queue.finish()
    return time.perf_counter() - t0


def large(queue, reps):
    shape = (8, 32, 32, 64, 64)
    rng = np.random.default_rng(1)
    x = gpuarray.to_gpu(rng.normal(size=shape).astype(np.float32))
    dy = gpuarray.to_gpu(rng.normal(size=shape).astype(np.float32))
    y = cla.empty(queue, shape, np.float32)
    dx = cla.empty(queue, shape, np.float32)
    bn = BatchNorm3D(32)
    raw = RawLayer(queue, 3, 32, shape)
    tx, ty, tdy, tdx = (raw.tensor(a) for a in (x, y, dy, dx))

    def c_fwd():
        check(lib.clnorm_batchnorm_forward(raw.bn, 1, tx, ty))

    def c_bwd():
        check(lib.clnorm_batchnorm_backward(raw.bn, tx, tdy, tdx, 1.0, 0.0))

    def m_fwd():
        bn(x)

    def m_bwd():
        bn.backward(dy)

    for f in (c_fwd, c_bwd, m_fwd, m_bwd):  # warm-up: kernel builds, first-touch of the buffers
        timed(f, queue)
    res = {k: [] for k in ("c_fwd", "m_fwd", "c_bwd", "m_bwd")}
    for i in range(reps):
        order = [("c_fwd", c_fwd), ("m_fwd", m_fwd)] if i % 2 == 0 else [("m_fwd", m_fwd), ("c_fwd", c_fwd)]
        for k, f in order:
            res[k].append(timed(f, queue))
        order = [("c_bwd", c_bwd), ("m_bwd", m_bwd)] if i % 2 == 0 else [("m_bwd", m_bwd), ("c_bwd", c_bwd)]
        for k, f in order:
            res[k].append(timed(f, queue))
    med = {k: statistics.median(v) for k, v in res.items()}
    for op in ("fwd", "bwd"):
        c, m = med["c_" + op], med["m_" + op]
        name = "training forward" if op == "fwd" else "backward"
        print("large  %-16s (8, 32, 32, 64, 64) f32: C %8.2f ms  module %8.2f ms  module/C %.3f  (median of %d)"
              % (name, c * 1e3, m * 1e3, m / c, reps))
    return med


def small(queue, reps, calls):
    shape = (2, 4, 8, 8)
    rng = np.random.default_rng(2)
    x = gpuarray.to_gpu(rng.normal(size=shape).astype(np.float32))
    dy = gpuarray.to_gpu(rng.normal(size=shape).astype(np.float32))
    y = cla.empty(queue, shape, np.float32)
    dx = cla.empty(queue, shape, np.float32)
    bn = BatchNorm2D(4)
    raw = RawLayer(queue, 2, 4, shape)
    tx, ty, tdy, tdx = (raw.tensor(a) for a in (x, y, dy, dx))
    fwd, bwd = lib.clnorm_batchnorm_forward, lib.clnorm_batchnorm_backward
    rbn = raw.bn

    def c_fwd():
        for _ in range(calls):
            fwd(rbn, 1, tx, ty)

    def m_fwd():
        for _ in range(calls):
            bn(x)

    def c_bwd():
        for _ in range(calls):
            bwd(rbn, tx, tdy, tdx, 1.0, 0.0)

    def m_bwd():
        for _ in range(calls):
            bn.backward(dy)

    fwd(rbn, 1, tx, ty)
    bn(x)
    for f in (c_fwd, m_fwd, c_bwd, m_bwd):
        timed(f, queue)
    res = {k: [] for k in ("c_fwd", "m_fwd", "c_bwd", "m_bwd")}
    for i in range(reps):
        for k, f in ((("c_fwd", c_fwd), ("m_fwd", m_fwd), ("c_bwd", c_bwd), ("m_bwd", m_bwd)) if i % 2 == 0 else
                     (("m_fwd", m_fwd), ("c_fwd", c_fwd), ("m_bwd", m_bwd), ("c_bwd", c_bwd))):
            res[k].append(timed(f, queue) / calls)
    med = {k: statistics.median(v) for k, v in res.items()}
    for op in ("fwd", "bwd"):
        c, m = med["c_" + op], med["m_" + op]
        name = "training forward" if op == "fwd" else "backward"
        print("small  %-16s (2, 4, 8, 8) f32: C %7.1f us/call  module %7.1f us/call  added %+6.1f us  "
              "(median of %d x %d back-to-back calls)" % (name, c * 1e6, m * 1e6, (m - c) * 1e6, reps, calls))
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--large-reps", type=int, default=7)
    ap.add_argument("--small-reps", type=int, default=15)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="a quick run that only shows the script works")
    a = ap.parse_args()
    if a.smoke:
        a.large_reps, a.small_reps, a.calls, a.skip_large = 1, 3, 20, True
    queue = clnorm.default_queue()
    print("clnorm Python bench on %s; CPU: %s" % (clnorm.default_device_name(), cpu_name()))
    small(queue, a.small_reps, a.calls)
    if not a.skip_large:
        large(queue, a.large_reps)


if __name__ == "__main__":
    main()
