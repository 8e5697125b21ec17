"""Inference copies of backbones: batch norm folded into the convolution before it.

In eval mode a BatchNorm2d is a per-channel affine map, so a Conv2d followed by one equals a
single Conv2d with scaled weights and a shifted bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`).
With the norm gone, the activation after the convolution can overwrite the convolution's fresh
output instead of allocating another tensor of the same size. On this project's 2-core CPU
that made Conv-4 about 2.8x and ResNet-12 about 1.2x faster per image
(benchmarks/store_bench.py, query section); outputs equal the original's up to float rounding
(tests/backbones/test_inference.py).
"""

from __future__ import annotations

import copy
import itertools

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


def _in_place(activation: nn.Module) -> nn.Module:
    """A new ReLU / LeakyReLU like `activation` that writes into its input."""
    if isinstance(activation, nn.LeakyReLU):
        return nn.LeakyReLU(activation.negative_slope, inplace=True)
    return nn.ReLU(inplace=True)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d
            and norm.running_mean is not None and norm.running_var is not None)


def _ends_in_conv(layer: nn.Module) -> bool:
    """Whether `layer`'s output is a Conv2d's fresh output (a Conv2d, or a Sequential whose
    last layer other than nn.Identity ends in one)."""
    if isinstance(layer, nn.Sequential):
        rest = [inner for inner in layer if not isinstance(inner, nn.Identity)]
        return bool(rest) and _ends_in_conv(rest[-1])
    return type(layer) is nn.Conv2d


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of `module` for inference. Inside every nn.Sequential, a Conv2d
    directly followed by a BatchNorm2d with running statistics becomes one Conv2d (the norm's
    slot an nn.Identity), and a ReLU or LeakyReLU right after a Conv2d (or after a Sequential
    ending in one) becomes an in-place one: within a Sequential only the next layer reads a
    layer's output (forward hooks that keep a convolution's output would see it changed).
    Anything else (norms outside Sequentials, norms before convolutions) is left as it is; a
    module with nothing to fold comes back as itself, in the mode it is in. Parameters and
    buffers that do not change are shared with `module`, not copied, so converting the copy
    (`.half()`, `.to(...)`) converts them in `module` too; `module` is otherwise untouched."""
    if not any(_foldable(first, second) for sequential in module.modules()
               if isinstance(sequential, nn.Sequential)
               for first, second in itertools.pairwise(sequential)):
        return module
    shared = {id(tensor): tensor for tensor in itertools.chain(module.parameters(),
                                                               module.buffers())}
    folded = copy.deepcopy(module, memo=shared).eval()
    sequentials = [m for m in folded.modules() if isinstance(m, nn.Sequential)]
    for sequential in reversed(sequentials):  # inner ones first: their ends are then known
        for i in range(len(sequential)):
            layer = sequential[i]
            if i + 1 < len(sequential) and _foldable(layer, sequential[i + 1]):
                sequential[i] = fuse_conv_bn_eval(layer, sequential[i + 1])
                sequential[i + 1] = nn.Identity()
            elif type(layer) in _ACTIVATIONS and i and _ends_in_conv(sequential[:i]):
                sequential[i] = _in_place(layer)
    return folded
