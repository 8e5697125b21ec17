"""Trainer: episodic training from a recipe, for every head. Prototypical, Matching and the
fast-adaptation heads (MAML, first-order MAML, Meta-SGD, ANIL, Proto-MAML, Reptile) turn each
episode into a loss through the head's one `episode_loss` contract; Siamese trains on pairs
mined from each episode. A step averages the gradients of `train.meta_batch` episodes.

Episode `step` is a pure function of (seed, step) and pair mining uses a generator seeded the
same way, so a run stopped and resumed from its last save ends with the same weights as an
uninterrupted one (last.state.pt holds the weights too, so this holds even after a crash
between the writes of last.safetensors and last.state.pt). Writes into the run folder:
best.safetensors, last.safetensors, last.state.pt, metrics.jsonl, recipe.yaml,
learning_curve.png, eval.json.

Under `torchrun` (WORLD_SIZE > 1) the episode step runs in DistributedDataParallel: each rank
draws its own episodes (seed derived from the recipe seed and the rank; rank 0 draws what a
single process would), meta_batch / world_size of them per step (one without meta_batch),
gradients are averaged, so all ranks hold the same weights, and only rank 0 validates and
writes files. Checkpoints hold the plain model, so they load anywhere.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fewshot_metric.atomic import atomic_write_text, remove_leftover_temps
from fewshot_metric.config import Recipe
from fewshot_metric.data import EpisodeSampler, FewShotDataset, build_transform, split_episode
from fewshot_metric.evaluation import EpisodeAccuracy, evaluate_dataset
from fewshot_metric.losses import contrastive_loss, mine_pairs
from fewshot_metric.model import FewShotModel, build_model
from fewshot_metric.training.augment import random_affine
from fewshot_metric.training.checkpoint import (
    load_model,
    load_train_state,
    read_checkpoint,
    save_checkpoint,
    save_train_state,
)
from fewshot_metric.training.curves import plot_learning_curve
from fewshot_metric.training.distributed import init_distributed
from fewshot_metric.training.splits import open_split, preload_images

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RUN_FILES = ("best.safetensors", "last.safetensors", "last.state.pt", "metrics.jsonl",
             "recipe.yaml", "learning_curve.png", "eval.json")


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    cfg = recipe.train
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    raise ValueError(f"train.optimizer '{cfg.optimizer}' is not known; use adam, adamw or sgd")


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    cfg = recipe.train
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size,
                                               gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.steps)
    if cfg.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"train.scheduler '{cfg.scheduler}' is not known; use step, cosine "
                     "or none")


class EpisodeSource:
    """Images of a split, fetched by dataset indices [n] -> [n, C, H, W].

    With `keep=True` each image is preprocessed once, on first use, into one contiguous
    tensor; otherwise (splits too big for memory) on every fetch. `progress`: show a bar
    while many images are preprocessed.
    """

    def __init__(self, dataset: FewShotDataset, keep: bool, progress: bool = True):
        self.dataset = dataset
        self.keep = keep
        self.progress = progress
        self.images: torch.Tensor | None = None
        self.ready = np.zeros(len(dataset), dtype=bool)

    def fetch(self, indices: list[int] | np.ndarray) -> torch.Tensor:
        indices = np.asarray(indices, dtype=np.int64)
        if not self.keep:
            images = preload_images(self.dataset, indices, self.progress)
            return images.contiguous(memory_format=torch.channels_last)
        missing = np.unique(indices[~self.ready[indices]])
        if len(missing):
            fresh = preload_images(self.dataset, missing, self.progress)
            if self.images is None:
                self.images = torch.empty((len(self.dataset), *fresh.shape[1:]), dtype=fresh.dtype)
            self.images[torch.from_numpy(missing)] = fresh
            self.ready[missing] = True
        return self.images[torch.from_numpy(indices)].contiguous(
            memory_format=torch.channels_last)

    def all_images(self) -> torch.Tensor:
        return self.fetch(np.arange(len(self.dataset)))


def rank_seed(seed: int, rank: int) -> int:
    """The episode seed of a rank: the recipe seed on rank 0, an independent one elsewhere."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class EpisodeLoss(nn.Module):
    """The model plus the recipe's loss: forward(images [N, C, H, W] in episode layout,
    generator) -> (loss [], query accuracy, a float). Every head but Siamese gives its loss
    through the one episode contract (`FewShotModel.episode_loss`: metric heads and heads
    that adapt per task alike); Siamese trains on pairs mined from the episode. One module,
    so DistributedDataParallel sees every parameter used in its forward."""

    def __init__(self, model: FewShotModel, recipe: Recipe):
        super().__init__()
        self.model = model
        self.cfg = recipe.train

    def forward(self, images: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, float]:
        cfg = self.cfg
        if self.model.head_name != "siamese":
            loss, logits = self.model.episode_loss(images, cfg.n_way, cfg.k_shot, cfg.n_query)
            query_labels = split_episode(images, cfg.n_way, cfg.k_shot, cfg.n_query)[3]
            return loss, (logits.argmax(1) == query_labels).float().mean().item()
        emb = self.model.embed(images)
        support, support_labels, query, query_labels = split_episode(
            emb, cfg.n_way, cfg.k_shot, cfg.n_query)
        logits = self.model.episode_logits(support, support_labels, query)
        labels = torch.cat([support_labels, query_labels]).cpu()
        idx_a, idx_b, same = mine_pairs(labels, cfg.positive_fraction, cfg.pairs_per_step,
                                        generator)
        loss = contrastive_loss(self.model.head(emb[idx_a], emb[idx_b]), same.to(emb.device),
                                cfg.margin)
        return loss, (logits.argmax(1) == query_labels).float().mean().item()


class Trainer:
    """Trains `recipe` into `out_dir` with `fit()`; `test()` scores the best checkpoint.
    `device`: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"; under torchrun each
    rank takes its own GPU."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, progress: bool = True,
                 device: str | None = None):
        self.recipe = recipe
        self.out_dir = Path(out_dir)
        self.dist = init_distributed(device)
        self.device = self.dist.device
        self.progress = progress and self.dist.is_main
        if recipe.train.amp not in AMP_DTYPES:
            raise ValueError(f"train.amp '{recipe.train.amp}' is not known; use "
                             f"{', '.join(AMP_DTYPES)}")
        if recipe.train.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("train.amp 'fp16' needs a CUDA device; on CPU use 'bf16' or 'none'")
        self.seed = rank_seed(recipe.seed, self.dist.rank)
        torch.manual_seed(recipe.seed)  # the same initial weights on every rank
        np.random.seed(self.seed)
        # channels_last: ~1.5x faster convolutions on CPU, same results up to rounding
        self.model: FewShotModel = build_model(recipe.model).to(
            self.device, memory_format=torch.channels_last)
        cfg = recipe.train
        for key, n_way in (("train.n_way", cfg.n_way), ("train.val_n_way", cfg.val_n_way),
                           ("eval.n_way", recipe.eval.n_way)):
            self.model.head.check_n_way(n_way, key)
        world = self.dist.world_size
        if cfg.meta_batch is not None and (cfg.meta_batch < 1 or cfg.meta_batch % world):
            raise ValueError(f"train.meta_batch={cfg.meta_batch} must be a positive multiple of "
                             f"the number of processes ({world}): each runs meta_batch / "
                             f"{world} tasks per step; or null for one task per process")
        self.tasks_per_rank = 1 if cfg.meta_batch is None else cfg.meta_batch // world
        if self.dist.is_distributed and recipe.train.sync_batchnorm:
            if self.device.type != "cuda":
                raise ValueError("train.sync_batchnorm needs CUDA devices (PyTorch's "
                                 "SyncBatchNorm runs on GPUs only); set it to false on CPU")
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.episode_loss: nn.Module = EpisodeLoss(self.model, recipe)
        if self.dist.is_distributed:
            self.episode_loss = DistributedDataParallel(
                self.episode_loss, device_ids=[self.device] if self.device.type == "cuda"
                else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=recipe.train.amp == "fp16")
        input_config = self.model.backbone.input_config
        data = recipe.data
        transform = build_transform(input_config)
        train_set = open_split(data, data.train_split, transform)
        val_set = open_split(data, data.val_split, transform)
        # Built first so a split too small for the episodes fails before any work is done.
        self.sampler = EpisodeSampler(train_set.labels, n_way=cfg.n_way, k_shot=cfg.k_shot,
                                      n_query=cfg.n_query,
                                      n_episodes=cfg.steps * self.tasks_per_rank,
                                      seed=self.seed, class_names=train_set.class_names)
        EpisodeSampler(val_set.labels, n_way=cfg.val_n_way, k_shot=cfg.val_k_shot,
                       n_query=cfg.val_n_query, n_episodes=1, seed=recipe.seed,
                       class_names=val_set.class_names)
        self.train_source = EpisodeSource(train_set, data.preload, self.progress)
        self.val_source = EpisodeSource(val_set, data.preload, self.progress)
        self.optimizer = build_optimizer(self.model, recipe)
        self.scheduler = build_scheduler(self.optimizer, recipe)
        self.step = 0
        self.best_val = -1.0

    # -- one step -------------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[float, float]:
        """One update from `tasks_per_rank` episodes on every rank (episode step * tasks + i
        of the rank's sampler): forward and backward of each (the gradient of their mean,
        averaged over ranks), then the optimizer step. -> mean loss and query accuracy."""
        cfg = self.recipe.train
        amp = AMP_DTYPES[cfg.amp]
        tasks = self.tasks_per_rank
        self.optimizer.zero_grad(set_to_none=True)
        losses, accuracies = [], []
        for task in range(tasks):
            episode = step * tasks + task
            images = self.train_source.fetch(self.sampler.episode(episode))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + episode)
            if cfg.augment:
                images = random_affine(images, generator, cfg.augment_rotate,
                                       cfg.augment_scale, cfg.augment_shift)
            images = images.to(self.device, non_blocking=True)
            accumulate = self.dist.is_distributed and task < tasks - 1  # reduce once, at the end
            with self.episode_loss.no_sync() if accumulate else nullcontext():
                with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
                    loss, accuracy = self.episode_loss(images, generator)
                self.scaler.scale(loss / tasks).backward()
            losses.append(loss.item())
            accuracies.append(accuracy)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return sum(losses) / tasks, sum(accuracies) / tasks

    def validate(self) -> EpisodeAccuracy:
        cfg = self.recipe.train
        return evaluate_dataset(self.model, self.val_source.dataset, cfg.val_n_way,
                                cfg.val_k_shot, cfg.val_n_query, cfg.val_episodes,
                                seed=self.recipe.seed, fetch=self.val_source.fetch)

    # -- state ----------------------------------------------------------------------------
    def _save(self, val: EpisodeAccuracy | None) -> None:
        recipe = self.recipe.to_dict()
        info = {"step": self.step, "best_val_accuracy": self.best_val}
        if val is not None:
            info["val"] = val.to_dict()
            if val.mean > self.best_val:
                self.best_val = val.mean
                info["best_val_accuracy"] = val.mean
                save_checkpoint(self.out_dir / "best.safetensors", self.model, recipe, info)
        save_checkpoint(self.out_dir / "last.safetensors", self.model, recipe, info)
        save_train_state(self.out_dir / "last.state.pt", {
            "step": self.step,
            "model": self.model.state_dict(),
            "best_val": self.best_val,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        })

    def _resume(self) -> None:
        meta, tensors = read_checkpoint(self.out_dir / "last.safetensors")
        if meta["recipe"] != self.recipe.to_dict():
            raise ValueError(f"{self.out_dir}: --resume needs the same recipe as the stopped "
                             "run (see its recipe.yaml); start a new --out folder instead")
        state = load_train_state(self.out_dir / "last.state.pt")
        # The weights come from the state file, written after last.safetensors: a crash between
        # the two writes leaves last.safetensors one save ahead of the optimizer state and step.
        # (State files written before they held the weights: those of last.safetensors.)
        self.model.load_state_dict(state["model"] if "model" in state else tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.best_val = float(state["best_val"])
        metrics = self.out_dir / "metrics.jsonl"
        if self.dist.is_main and metrics.is_file():  # drop records after the last save: redone
            kept = [line for line in metrics.read_text(encoding="utf-8").splitlines()
                    if line and json.loads(line)["step"] <= self.step]
            atomic_write_text(metrics, "".join(line + "\n" for line in kept))

    def _barrier(self) -> None:
        """Under torchrun: waits until every rank gets here (rank 0 may be validating)."""
        if self.dist.is_distributed:
            dist.barrier()

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- the run ----------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_at: int | None = None) -> None:
        """Trains to `train.steps` (or stops after `stop_at` steps, saving state to resume)."""
        cfg = self.recipe.train
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for name in RUN_FILES:  # temps of writes a killed run left behind
                remove_leftover_temps(self.out_dir / name)
        if resume:
            self._resume()
        elif main:
            (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        if main:
            atomic_write_text(self.out_dir / "recipe.yaml",
                              yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        self.model.train()
        bar = tqdm(range(self.step, end), initial=self.step, total=cfg.steps,
                   desc=f"train {self.recipe.name}", disable=not self.progress,
                   mininterval=1.0)
        for step in bar:
            loss, accuracy = self.train_step(step)
            self.step = step + 1
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", refresh=False)
            record = {"step": self.step, "loss": loss, "train_accuracy": accuracy,
                      "lr": self.scheduler.get_last_lr()[0]}
            validating = self.step % cfg.val_interval == 0 or self.step == cfg.steps
            if main:  # rank 0 validates, logs and saves; the other ranks wait at the barrier
                val = self.validate() if validating else None
                if val is not None:
                    record.update(val_accuracy=val.mean, val_ci95=val.ci95)
                    bar.write(f"step {self.step}: val {val}")
                self._log(record)
                if val is not None:
                    self._save(val)
                    plot_learning_curve(self.out_dir / "metrics.jsonl",
                                        self.out_dir / "learning_curve.png")
            if validating:
                self._barrier()
        if stop_at is not None and self.step < cfg.steps and self.step % cfg.val_interval:
            if main:
                self._save(None)
            self._barrier()

    def test(self, checkpoint: str = "best.safetensors") -> EpisodeAccuracy:
        """Accuracy of a saved checkpoint on the recipe's test split with its `eval:` task."""
        model, _ = load_model(self.out_dir / checkpoint)
        data, ev = self.recipe.data, self.recipe.eval
        dataset = open_split(data, data.test_split,
                             build_transform(model.backbone.input_config))
        result = evaluate_dataset(model, dataset, ev.n_way, ev.k_shot, ev.n_query, ev.episodes,
                                  seed=self.recipe.seed, same_group=ev.same_group)
        atomic_write_text(self.out_dir / "eval.json",
                          json.dumps({"checkpoint": checkpoint, "split": data.test_split,
                                      **result.to_dict()}, indent=2))
        return result
