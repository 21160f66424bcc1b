"""A short PuzzleLib-style training loop on clnorm: a BatchNorm2D fitted by SGD so that its output matches a known
affine map of the normalised input; then the layer is saved to HDF5 (PuzzleLib's layout), loaded into a fresh
module, and both give the same inference output.

Usage: python examples/train.py [STEPS] [FILE]   (default 40 steps, FILE a temporary file)
"""
import os
import sys
import tempfile

import numpy as np

from clnorm import gpuarray
from clnorm.modules import BatchNorm2D

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(tempfile.mkdtemp(), "bn.hdf")

rng = np.random.default_rng(7)
maps = 4
offset = rng.normal(0.0, 3.0, (1, maps, 1, 1))
spread = rng.uniform(0.5, 4.0, (1, maps, 1, 1))
target_scale = rng.uniform(0.5, 2.0, (1, maps, 1, 1))
target_bias = rng.normal(0.0, 1.0, (1, maps, 1, 1))

bn = BatchNorm2D(maps, name="bn")
learnRate = 0.2
losses = []
for step in range(steps):
    x = (offset + spread * rng.normal(size=(16, maps, 6, 6))).astype(np.float32)
    xhat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    target = xhat * target_scale + target_bias
    out = bn(gpuarray.to_gpu(x)).get()
    diff = out - target
    losses.append(float(np.mean(diff ** 2)))
    # loss per sample = mean over its values of (out - target)^2, summed over the batch; PuzzleLib's updateParams
    # adds learnRate * grad, so the module is given the negative gradient
    bn.backward(gpuarray.to_gpu((-2.0 * diff / diff.size * x.shape[0]).astype(np.float32)))
    bn.updateParams(learnRate)
    if step % 10 == 0 or step == steps - 1:
        print("step %3d  loss %.6f" % (step, losses[-1]))

bn.save(path)
print("saved to %s" % path)
fresh = BatchNorm2D(maps, name="bn")
fresh.load(path)
bn.evalMode()
fresh.evalMode()
x = (offset + spread * rng.normal(size=(8, maps, 6, 6))).astype(np.float32)
a, b = bn(gpuarray.to_gpu(x)).get(), fresh(gpuarray.to_gpu(x)).get()
print("inference output of the loaded module %s the trained one's (max |diff| %g)"
      % ("equals" if np.array_equal(a, b) else "DIFFERS FROM", float(np.max(np.abs(a - b)))))
print("learned scale", np.round(bn.scale.get().ravel(), 3), "target", np.round(target_scale.ravel(), 3))
if not (losses[-1] < 0.1 * losses[0] and np.array_equal(a, b)):
    print("train.py: the loss did not fall or the loaded module differs", file=sys.stderr)
    sys.exit(1)
