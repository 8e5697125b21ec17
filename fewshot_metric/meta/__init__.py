"""Fast adaptation: MAML, first-order MAML, Meta-SGD, Reptile, ANIL and Proto-MAML.

Functional inner loops (`torch.func.functional_call` + `torch.autograd.grad`): a task's
parameters live in a dict held by a `Learner`, the module is never copied. One module per
concept:

  maml.py        MAML / MetaSGD: wrap a module, `clone()` a learner per task
  learner.py     Learner: `adapt(loss)`, `learner(x)`
  inner_loop.py  gradient_step (one functional step), inner_loop (steps on a support set)
  batch_norm.py  per-task batch statistics in the inner loop (and what that means for eval
                 and serving)
  linear.py      LinearClassifier: learned output layer, or one given per task
  anil.py        ANIL: the classifier adapts on features computed once per task
  protomaml.py   Proto-MAML: the classifier initialised from the support prototypes
  reptile.py     Reptile as a loss: one trainer, one optimizer step
  finetune.py    FineTune: test-time fine-tuning of any checkpoint (`eval --adapt-steps`)
"""

from fewshot_metric.meta.anil import anil_logits
from fewshot_metric.meta.batch_norm import task_batch_norm
from fewshot_metric.meta.finetune import FineTune
from fewshot_metric.meta.inner_loop import gradient_step, inner_loop
from fewshot_metric.meta.learner import Learner
from fewshot_metric.meta.linear import LinearClassifier
from fewshot_metric.meta.maml import MAML, MetaSGD
from fewshot_metric.meta.protomaml import prototype_init
from fewshot_metric.meta.reptile import reptile_loss

__all__ = ["MAML", "FineTune", "Learner", "LinearClassifier", "MetaSGD", "anil_logits",
           "gradient_step", "inner_loop", "prototype_init", "reptile_loss", "task_batch_norm"]
