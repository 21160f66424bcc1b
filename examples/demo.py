"""The BatchNorm3D example of the PuzzleLib docs, in Python on clnorm (run by `make demo` after clnorm-demo).

Only the two import lines differ from the PuzzleLib program. The script checks the running statistics against
numpy in double precision and exits 1 on a difference.

Usage: python examples/demo.py [DEVICE]   (DEVICE: a clnorm selector, e.g. "pocl"; default: $CLNORM_DEVICE, else
the first GPU, accelerator or CPU)
"""
import sys

import numpy as np

import clnorm
from clnorm import gpuarray                 # was: from PuzzleLib.Backend import gpuarray
from clnorm.modules import BatchNorm3D      # was: from PuzzleLib.Modules import BatchNorm3D

if len(sys.argv) > 1:
    clnorm.set_device(sys.argv[1])
print("clnorm %s (library %d) on %s" % (clnorm.__version__, clnorm.library_version(), clnorm.default_device_name()))

host = np.arange(5 * 3 * 10 * 10 * 10).reshape(5, 3, 10, 10, 10).astype(np.float32)
data = gpuarray.to_gpu(host)

bn = BatchNorm3D(3)
out = bn(data)  # one training forward: factor 1, the running statistics become the batch's

print("running mean:", bn.mean.get().ravel())
print("running var: ", bn.var.get().ravel())
print("scale:       ", bn.scale.get().ravel())
print("bias:        ", bn.bias.get().ravel())

x = host.astype(np.float64)
mean = x.mean(axis=(0, 2, 3, 4))
M = x.size // 3
var = x.var(axis=(0, 2, 3, 4)) * M / (M - 1)
worst = max(np.max(np.abs(bn.mean.get().ravel() - mean) / np.abs(mean)),
            np.max(np.abs(bn.var.get().ravel() - var) / np.abs(var)))
print("largest relative difference from numpy (float64): %.2g" % worst)
if not worst < 1e-5:
    print("demo.py: MISMATCH", file=sys.stderr)
    sys.exit(1)
