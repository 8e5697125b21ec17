"""Batch norm in the inner loop: per-task batch statistics, as in the MAML paper.

Finn et al. 2017 normalise with the statistics of the batch at hand, in training and at test
time alike: every forward of a task (the support set at each inner step, then the query set)
is normalised with its own mean and variance. `task_batch_norm` gives every batch-norm layer
of a module that behaviour for the duration of a `with` block, whatever mode the module is in:

- module in train mode (meta-training): batch statistics, and the running statistics are
  updated as usual, so they track an average over the tasks' batches. They are not used by
  the inner loop, but a checkpoint holds them: `Embedder` folds them into the convolutions,
  so a meta-trained backbone serves through the store like any other.
- module in eval mode (episodic evaluation): batch statistics too, and the running statistics
  are left as they are, so scoring episodes never changes the model. Each query set is
  normalised by its own statistics (transductive, as in the paper): accuracy is computed on
  the whole query set of an episode at once, never one query at a time.

Serving (`Embedder`, `PrototypeStore`) runs the backbone in plain eval mode, with the running
statistics: embeddings of one image do not depend on what else is in its batch, and differ
(slightly, by how far a task's statistics are from the running ones) from what the inner loop
saw during meta-training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def task_batch_norm(module: nn.Module) -> Iterator[None]:
    """Within the block, every batch-norm layer of `module` normalises with batch statistics;
    layers in eval mode leave their running statistics untouched. Restored on exit."""
    frozen = [layer for layer in module.modules()
              if isinstance(layer, _BatchNorm) and not layer.training]
    tracking = [layer.track_running_stats for layer in frozen]
    for layer in frozen:
        layer.training, layer.track_running_stats = True, False
    try:
        yield
    finally:
        for layer, track in zip(frozen, tracking, strict=True):
            layer.training, layer.track_running_stats = False, track
