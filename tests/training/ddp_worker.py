"""Run by tests/training/test_distributed.py under `torchrun --nproc_per_node=2` (gloo, CPU).

1. Trainer.train_step for STEPS steps; after each, every rank's parameters are gathered and
   compared bit for bit, and every rank's loss is recorded.
2. The same recipe with fit(stop_at=STEPS // 2), then a new Trainer with fit(resume=True).
3. The same recipe through `fewshot_metric.cli.main(["train", ...])` (which ends the group).
Rank 0 writes OUT/report.json: losses [step][rank], identical [step], and where the runs'
final weights were written. Arguments: OUT, then extra `--set` overrides of the recipe.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from fewshot_metric.cli import main as cli_main
from fewshot_metric.config import load_recipe
from fewshot_metric.training.trainer import Trainer

STEPS = 12
OVERRIDES = [f"train.steps={STEPS}", "train.n_way=10", "train.k_shot=2", "train.n_query=3",
             f"train.val_interval={STEPS // 2}", "train.val_episodes=5", "train.val_n_query=3",
             "eval.episodes=5"]
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"


def weights_digest(model: torch.nn.Module, buffers: bool = True) -> torch.Tensor:
    """sha256 of all weights (and buffers: batch-norm statistics), as 4 int64."""
    digest = hashlib.sha256()
    tensors = model.state_dict() if buffers else dict(model.named_parameters())
    for key, value in sorted(tensors.items()):
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return torch.frombuffer(bytearray(digest.digest()), dtype=torch.int64).clone()


def gather(value: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, value)
    return parts


def main(out: Path, extra: list[str]) -> None:
    overrides = [*OVERRIDES, *extra]
    recipe = load_recipe(RECIPE, overrides)
    trainer = Trainer(recipe, out / "steps", progress=False)
    losses, identical = [], []
    for step in range(STEPS):
        loss, _ = trainer.train_step(step)
        losses.append([float(x) for x in gather(torch.tensor([loss], dtype=torch.float64))])
        # Parameters: the same everywhere. Batch-norm running statistics follow each rank's own
        # batch until DistributedDataParallel copies rank 0's at the start of the next step.
        digests = gather(weights_digest(trainer.model, buffers=False))
        identical.append(all(torch.equal(d, digests[0]) for d in digests))
    final = weights_digest(trainer.model).tolist()

    Trainer(recipe, out / "resumed", progress=False).fit(stop_at=STEPS // 2)
    resumed = Trainer(recipe, out / "resumed", progress=False)
    resumed.fit(resume=True)
    resumed_digest = weights_digest(resumed.model).tolist()

    rank = dist.get_rank()
    if rank == 0:
        (out / "report.json").write_text(json.dumps({
            "world_size": dist.get_world_size(), "losses": losses, "identical": identical,
            "final_digest": final, "resumed_digest": resumed_digest}))
    code = cli_main(["train", str(RECIPE), "--out", str(out / "cli"), "--quiet",
                     *(arg for override in overrides for arg in ("--set", override))])
    if code:
        raise SystemExit(f"rank {rank}: fewshot-metric train exited with {code}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
