#!/usr/bin/env python3
"""peers.py - PyTorch's CPU BatchNorm next to clnorm-bench, in the same run.

For each (shape, op) it times PyTorch (torch.set_num_threads(2)) and then runs
`clnorm-bench --csv --no-first-call --shape S --op OP` on the same shape, so the two measurements
of one row are seconds apart (memory bandwidth on shared machines swings by tens of percent over
tens of seconds: only side-by-side figures compare). It prints per (op, shape): torch ms,
clnorm ms, clnorm's speed over PyTorch (torch_ms / clnorm_ms) and clnorm's fraction of the
device copy bandwidth as measured, interleaved, by clnorm-bench.

Ops, as in clnorm-bench (epsilon 1e-5, momentum/factor 0.1, affine, running statistics):
  train  F.batch_norm(x, running_mean, running_var, weight, bias, training=True)
  infer  F.batch_norm(..., training=False)
  bwd    torch.ops.aten.native_batch_norm_backward with the save_mean/save_invstd of
         torch.ops.aten.native_batch_norm, output_mask (dx, dweight, dbias) - see time_torch().
  step_ex  the fused training step against clnorm-bench's step_ex (clnorm_bn_forward_training_ex with a
         residual and RELU, then clnorm_bn_backward_ex with dx and dz): in PyTorch
         y = relu(F.batch_norm(x, ..., training=True) + z), then y.backward(dy) through autograd (dx,
         dweight, dbias, dz; the .grad fields are reset to None after each step, so nothing accumulates).

PyTorch is a comparison tool, not a dependency: without it this script says so and exits 0.

With --torch-device cuda (a CUDA build of PyTorch and an NVIDIA GPU), PyTorch runs on the GPU (its own
CUDA kernels, timed with torch.cuda.synchronize() after each block): the peer for clnorm on the same
card through its OpenCL driver (--device nvidia).

--layout nhwc runs clnorm-bench on NHWC tensors and PyTorch on torch.channels_last (4-d) or
torch.channels_last_3d (5-d) tensors (2-d shapes: no channels-last form, rows skipped); --dtype f16 / bf16
runs both on 16-bit tensors (PyTorch: torch.float16 / torch.bfloat16 inputs with float32 weight, bias and
running statistics; GB/s on the 16-bit byte counts). A row PyTorch cannot run (PyTorch 1.13 has no CPU
float16 batch_norm; 2.x runs it) says so and shows clnorm alone.

Each row also shows clnorm's synchronous latency (one call + clFinish, median) beside its back-to-back time:
PyTorch's CPU call returns when done, so its time is both.

Usage: python3 bench/peers.py [--bench ./build/clnorm-bench] [--shape 8,32,32,64,64]...
                              [--op train|infer|bwd|step_ex|all]... [--device SEL] [--min-time S] [--rounds N]
                              [--torch-device cpu|cuda] [--layout nchw|nhwc] [--dtype f32|f16|bf16]
"""
import argparse
import csv
import io
import math
import os
import statistics
import subprocess
import sys
import time

# Outputs are allocated per call by PyTorch (F.batch_norm has no out=). With glibc's defaults a
# 134 MB block is mmap'ed fresh and unmapped on free, so every call pays ~34 ms of page faults
# for its output. Keep big blocks on the heap and never trim it: the freed output is reused by
# the next call, as a real training loop with a caching allocator would.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
FALLBACK_MARK = "CLNORM_PEERS_REEXEC"

DEFAULT_SHAPES = [
    (8, 32, 32, 64, 64),
    (64, 4, 32, 64, 64),
    (16, 64, 16, 32, 32),
    (32, 256, 28, 28),
    (256, 1024),
    (2, 4, 8, 8, 8),
]
OPS = ("train", "infer", "bwd", "step_ex")
TRAFFIC = {"train": 3.0, "infer": 2.0, "bwd": 5.0, "step_ex": 9.0}  # minimal traffic in units of T
EPS = 1e-5
MOMENTUM = 0.1


def reexec(python, extra_env):
    env = dict(os.environ)
    env.update(extra_env)
    sys.stdout.flush()
    os.execve(python, [python, os.path.abspath(__file__)] + sys.argv[1:], env)


def parse_shape(text):
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not 2 <= len(dims) <= 5 or min(dims) <= 0:
        raise argparse.ArgumentTypeError("want 2 to 5 positive sizes, e.g. 8,32,32,64,64: %r" % text)
    return dims


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", default="./build/clnorm-bench", help="clnorm-bench executable")
    p.add_argument("--shape", type=parse_shape, action="append", help="shape (repeatable)")
    p.add_argument("--op", choices=OPS + ("all",), action="append", help="op (repeatable)")
    p.add_argument("--device", help="clnorm device selector, passed to clnorm-bench")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timed block (default 0.3)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, medians over them (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--torch-device", default="cpu", choices=("cpu", "cuda"),
                   help="where PyTorch runs (default cpu)")
    p.add_argument("--layout", default="nchw", choices=("nchw", "nhwc"),
                   help="memory layout: nhwc = PyTorch channels_last / channels_last_3d (default nchw)")
    p.add_argument("--dtype", default="f32", choices=("f32", "f16", "bf16"),
                   help="storage type of x, dy, z, y (default f32)")
    a = p.parse_args()
    a.shape = a.shape or DEFAULT_SHAPES
    ops = []
    for op in a.op or ["all"]:
        ops.extend(OPS if op == "all" else [op])
    a.op = ops
    if a.rounds < 1 or not a.min_time > 0:
        p.error("--rounds must be >= 1 and --min-time > 0")
    return a


def import_torch():
    try:
        import torch  # noqa: F401
        return torch, None
    except ImportError as e:
        # A pyenv/venv python3 first on PATH hides Debian's python3-torch: try the system interpreter.
        system = "/usr/bin/python3"
        if (os.environ.get(FALLBACK_MARK) is None and os.path.exists(system)
                and os.path.realpath(sys.executable) != os.path.realpath(system)):
            reexec(system, {FALLBACK_MARK: "1"})
        return None, e


SYNC = [lambda: None]  # torch.cuda.synchronize with --torch-device cuda


def time_block(fn, k):
    SYNC[0]()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    SYNC[0]()
    return (time.perf_counter() - t0) / k


def calibrate(fn, min_time):
    """Warm-up, then the number of calls that fills min_time (the same rule as clnorm-bench)."""
    fn()
    t0 = time.perf_counter()
    n = 0
    while n < 3 or time.perf_counter() - t0 < 0.1:
        fn()
        n += 1
    single = statistics.median(time_block(fn, 1) for _ in range(3))
    return max(1, min(1000000, math.ceil(min_time / single))) if single > 0 else 1000000


def time_torch(torch, fn, min_time, rounds):
    k = calibrate(fn, min_time)
    return statistics.median(time_block(fn, k) for _ in range(rounds)), k


def torch_dtype(torch, name):
    return {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[name]


def torch_case(torch, shape, device, layout="nchw", dtype="f32"):
    """Inputs like clnorm-bench's: x uniform in [-1, 5), dy in [-1, 1), scale ~1, bias ~0; x, dy, z in the
    given layout (channels_last / channels_last_3d for nhwc) and storage type, the parameters float32."""
    g = torch.Generator().manual_seed(1000)
    maps = shape[1]
    # (N, C) input: PyTorch normalises per feature over the batch, i.e. clnorm's PER_ACTIVATION.
    c = {
        "x": torch.empty(shape).uniform_(-1.0, 5.0, generator=g),
        "dy": torch.empty(shape).uniform_(-1.0, 1.0, generator=g),
        "z": torch.empty(shape).uniform_(-1.0, 1.0, generator=g),
        "w": torch.empty(maps).uniform_(0.9, 1.1, generator=g),
        "b": torch.empty(maps).uniform_(-0.1, 0.1, generator=g),
        "rm": torch.zeros(maps),
        "rv": torch.ones(maps),
    }
    c = {k: v.to(device) for k, v in c.items()}
    fmt = None
    if layout == "nhwc":
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}[len(shape)]
    for k in ("x", "dy", "z"):
        c[k] = c[k].to(dtype=torch_dtype(torch, dtype))
        if fmt is not None:
            c[k] = c[k].contiguous(memory_format=fmt)
    _, c["save_mean"], c["save_invstd"] = torch.ops.aten.native_batch_norm(
        c["x"], c["w"], c["b"], c["rm"], c["rv"], True, MOMENTUM, EPS)
    return c


def torch_fn(torch, c, op):
    F = torch.nn.functional
    if op == "step_ex":
        # relu(bn(x) + z) and its autograd backward: the fused training step of clnorm-bench's step_ex
        leaves = [c[k].detach().requires_grad_() for k in ("x", "w", "b", "z")]
        xs, ws, bs, zs = leaves

        def step():
            with torch.enable_grad():
                y = F.relu(F.batch_norm(xs, c["rm"], c["rv"], ws, bs, training=True, momentum=MOMENTUM,
                                        eps=EPS) + zs)
                y.backward(c["dy"])
            for t in leaves:
                t.grad = None
        return step
    if op == "train":
        return lambda: F.batch_norm(c["x"], c["rm"], c["rv"], c["w"], c["b"], training=True,
                                    momentum=MOMENTUM, eps=EPS)
    if op == "infer":
        return lambda: F.batch_norm(c["x"], c["rm"], c["rv"], c["w"], c["b"], training=False,
                                    momentum=MOMENTUM, eps=EPS)
    # Backward: autograd's BatchNorm node calls exactly this kernel (native_batch_norm_backward with
    # the statistics saved by the training forward, computing dx, dweight and dbias). Calling it
    # directly times only the backward - no forward, no graph building, no autograd engine or
    # .grad accumulation - which is the same 5 T work clnorm_bn_backward does with saved mean/invstd.
    return lambda: torch.ops.aten.native_batch_norm_backward(
        c["dy"], c["x"], c["w"], c["rm"], c["rv"], c["save_mean"], c["save_invstd"], True, EPS,
        [True, True, True])


def run_clnorm(args, shape, op):
    """One clnorm-bench run for (shape, op): returns (row dict or None, '#' header lines, error text)."""
    cmd = [args.bench, "--csv", "--no-first-call", "--shape", ",".join(map(str, shape)), "--op", op,
           "--min-time", repr(args.min_time), "--rounds", str(args.rounds), "--layout", args.layout,
           "--dtype", args.dtype]
    if args.device:
        cmd += ["--device", args.device]
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV and k != FALLBACK_MARK}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    header = [l for l in p.stderr.splitlines() if l.startswith("#")]
    if p.returncode != 0:
        return None, header, (p.stderr.strip() or "exit status %d" % p.returncode)
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    if len(rows) != 1:
        return None, header, "unexpected output: %r" % p.stdout
    return rows[0], header, ""


def load_average():
    """1-minute load average, or None. PyTorch's 2 OpenMP threads stall ~35 ms per call at their
    barriers when another process holds one of the cores: a busy machine wrecks the torch column."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def shape_text(shape):
    return "(" + ",".join(map(str, shape)) + ")"


def main():
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        reexec(sys.executable, MALLOC_ENV)
    args = parse_args()
    torch, err = import_torch()
    if torch is None:
        print("peers.py: PyTorch comparison skipped: import torch failed (%s); "
              "`apt-get install -y python3-torch` provides it" % err)
        return 0
    if not os.access(args.bench, os.X_OK):
        print("peers.py: %s is not an executable clnorm-bench (build it, or pass --bench)" % args.bench,
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.torch_device == "cuda":
        if not torch.cuda.is_available():
            print("peers.py: --torch-device cuda: this PyTorch sees no CUDA device", file=sys.stderr)
            return 2
        SYNC[0] = torch.cuda.synchronize
        where = "CUDA on %s" % torch.cuda.get_device_name(0)
    else:
        where = "CPU, %d threads" % torch.get_num_threads()

    print("peers.py: PyTorch %s %s (%s), against %s; medians of %d rounds of ~%.2f s"
          % (torch.__version__, where, sys.executable, args.bench, args.rounds, args.min_time))
    load = load_average()
    if load is not None:
        print("load average (1 min) at start: %.2f on %d CPUs" % (load, os.cpu_count() or 0))
    print("torch and clnorm of a row are timed one right after the other; speed = torch ms / clnorm ms; "
          "x copy = clnorm GB/s over clEnqueueCopyBuffer GB/s, interleaved in clnorm-bench; "
          "sync us = one clnorm call + clFinish")
    print("layout %s (PyTorch %s), dtype %s" % (
        args.layout, "contiguous" if args.layout == "nchw" else "channels_last / channels_last_3d", args.dtype))
    hdr = "%-5s  %-20s %10s %10s %9s %10s %11s %7s %9s" % (
        "op", "shape", "torch ms", "clnorm ms", "speed", "torch GB/s", "clnorm GB/s", "x copy", "sync us")
    failures = 0
    printed_header = False
    esize = 4.0 if args.dtype == "f32" else 2.0
    with torch.no_grad():
        for shape in args.shape:
            if args.layout == "nhwc" and len(shape) not in (4, 5):
                print("%-5s  %-20s   skipped: PyTorch has no channels-last form of a %d-d tensor"
                      % ("-", shape_text(shape), len(shape)))
                continue
            try:
                c = torch_case(torch, shape, args.torch_device, args.layout, args.dtype)
            except RuntimeError as e:  # e.g. PyTorch 1.13: "batch_norm" not implemented for 'Half' on CPU
                c, case_why = None, str(e).splitlines()[0]
            tensor_bytes = esize * math.prod(shape)
            for op in args.op:
                t_s, why = None, None
                if c is None:
                    why = case_why
                else:
                    try:
                        t_s, _ = time_torch(torch, torch_fn(torch, c, op), args.min_time, args.rounds)
                    except RuntimeError as e:
                        why = str(e).splitlines()[0]
                row, header, error = run_clnorm(args, shape, op)
                if not printed_header:
                    for line in header:
                        print("clnorm-bench " + line)
                    print("\n" + hdr)
                    printed_header = True
                if row is None:
                    failures += 1
                    print("%-5s  %-20s %10s %10s   clnorm-bench failed: %s"
                          % (op, shape_text(shape), "-" if t_s is None else "%.4f" % (1e3 * t_s), "-", error))
                elif t_s is None:
                    print("%-5s  %-20s %10s %10.4f %9s %10s %11.2f %7.2f %9s   PyTorch cannot: %s"
                          % (op, shape_text(shape), "-", float(row["ms"]), "-", "-", float(row["gbs"]),
                             float(row["ratio"]), row.get("sync_us", "-"), why))
                else:
                    torch_ms = 1e3 * t_s
                    torch_gbs = TRAFFIC[op] * tensor_bytes / t_s * 1e-9
                    ms = float(row["ms"])
                    print("%-5s  %-20s %10.4f %10.4f %8.2fx %10.2f %11.2f %7.2f %9s"
                          % (op, shape_text(shape), torch_ms, ms, torch_ms / ms, torch_gbs,
                             float(row["gbs"]), float(row["ratio"]), row.get("sync_us", "-")))
                sys.stdout.flush()
            del c
    load = load_average()
    if load is not None:
        print("load average (1 min) at end: %.2f" % load)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
