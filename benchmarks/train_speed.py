"""Training speed: this project's Trainer vs easyfsl's PrototypicalNetworks with TaskSampler.

Both sides train Prototypical Networks on the same episodes shape: Conv-4, Omniglot train split
(5 alphabets, rotations as classes, 28x28 grayscale), 60-way 5-shot 5-query, Adam lr 1e-3, same
seed, default torch thread count. A few warm-up episodes are not timed; then `--episodes` are.

easyfsl never enters the project's environment: it is installed (first run only) with
`pip install --no-deps --target benchmarks/.easyfsl`, together with pandas, which
`easyfsl.samplers` imports; their other dependencies come from the project's venv.

    .venv/bin/python benchmarks/train_speed.py --episodes 30 [--warmup 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from fewshot_metric.backbones import create_backbone
from fewshot_metric.config import load_recipe
from fewshot_metric.data import OmniglotDataset, build_transform
from fewshot_metric.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "omniglot_protonet.yaml"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "omniglot"
EASYFSL_DIR = Path(__file__).resolve().parent / ".easyfsl"
EASYFSL_PINS = ("easyfsl==1.5.0", "pandas==3.1.1")
N_WAY, K_SHOT, N_QUERY, LR = 60, 5, 5, 1e-3
TARGET = 1.5


def import_easyfsl():
    """easyfsl's TaskSampler and PrototypicalNetworks, installed into benchmarks/.easyfsl."""
    if not (EASYFSL_DIR / "easyfsl").is_dir() or not (EASYFSL_DIR / "pandas").is_dir():
        print(f"installing {' '.join(EASYFSL_PINS)} into {EASYFSL_DIR} (first run only)",
              flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--upgrade", "--target", str(EASYFSL_DIR), *EASYFSL_PINS], check=True)
    if str(EASYFSL_DIR) not in sys.path:
        sys.path.append(str(EASYFSL_DIR))  # last: the venv's own packages win over anything here
    import easyfsl
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.samplers import TaskSampler
    return easyfsl.__version__, TaskSampler, PrototypicalNetworks


@contextmanager
def sampler_init_accepting_data_source():
    """easyfsl 1.5.0's TaskSampler.__init__ calls `Sampler.__init__(data_source=None)`, which
    current torch (no Sampler.__init__ of its own) rejects; accept and ignore it meanwhile."""
    saved = Sampler.__dict__.get("__init__")
    Sampler.__init__ = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        if saved is None:
            del Sampler.__init__
        else:
            Sampler.__init__ = saved


def build_task_sampler(TaskSampler, dataset, n_tasks: int):
    """TaskSampler(dataset, 60, 5, 5, n_tasks) and whether torch's Sampler had to be patched."""
    try:
        return TaskSampler(dataset, n_way=N_WAY, n_shot=K_SHOT, n_query=N_QUERY,
                           n_tasks=n_tasks), False
    except TypeError:
        with sampler_init_accepting_data_source():
            return TaskSampler(dataset, n_way=N_WAY, n_shot=K_SHOT, n_query=N_QUERY,
                               n_tasks=n_tasks), True


class LabelledView(Dataset):
    """A FewShotDataset with the `get_labels()` that easyfsl's TaskSampler reads."""

    def __init__(self, dataset: OmniglotDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]

    def get_labels(self) -> list[int]:
        return self.dataset.labels.tolist()


def time_steps(step: Callable[[int], object], warmup: int, episodes: int) -> float:
    """Runs episodes 0..warmup-1 untimed, then `episodes` more; seconds of the timed ones."""
    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(warmup, warmup + episodes):
        step(i)
    return time.perf_counter() - start


def run_easyfsl(data: Path, warmup: int, episodes: int, seed: int) -> dict:
    """easyfsl's usual pipeline: decode + preprocess every image of every episode."""
    version, TaskSampler, PrototypicalNetworks = import_easyfsl()
    random.seed(seed)  # TaskSampler draws with `random`
    torch.manual_seed(seed)
    backbone = create_backbone("conv4")  # same init as the Trainer's (same seed, built first)
    dataset = OmniglotDataset(data, split="train", rotations=True, cache=False,
                              transform=build_transform(backbone.input_config))
    sampler, patched = build_task_sampler(TaskSampler, LabelledView(dataset), warmup + episodes)
    loader = DataLoader(LabelledView(dataset), batch_sampler=sampler, num_workers=0,
                        collate_fn=sampler.episodic_collate_fn)
    model = PrototypicalNetworks(backbone)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    batches = iter(loader)

    def step(_episode: int) -> float:
        support, support_labels, query, query_labels, _class_ids = next(batches)
        optimizer.zero_grad()
        model.process_support_set(support, support_labels)
        loss = F.cross_entropy(model(query), query_labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    seconds = time_steps(step, warmup, episodes)
    return {"version": version, "sampler_init_patched": patched, "seconds": seconds,
            "classes": len(dataset.class_names), "images": len(dataset)}


def run_ours(data: Path, warmup: int, episodes: int, seed: int) -> dict:
    """Trainer.train_step, as fit() runs it, after filling the preprocessed-image cache."""
    # augment off: easyfsl's pipeline does not warp images, so both sides do the same work
    recipe = load_recipe(RECIPE, [f"data.root={json.dumps(str(data))}", f"seed={seed}",
                                  "train.augment=false"])
    cfg = recipe.train
    shape = (recipe.model.backbone, recipe.model.head, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.lr)
    if shape != ("conv4", "prototypical", N_WAY, K_SHOT, N_QUERY, LR):
        raise SystemExit(f"{RECIPE} no longer describes the benchmarked setup: {shape}")
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(recipe, out, progress=False)
        start = time.perf_counter()
        trainer.train_source.all_images()
        fill = time.perf_counter() - start
        trainer.model.train()
        seconds = time_steps(trainer.train_step, warmup, episodes)
    return {"seconds": seconds, "cache_fill_s": fill, "cached": trainer.train_source.keep,
            "classes": len(trainer.train_source.dataset.class_names),
            "images": len(trainer.train_source.dataset)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=30, help="timed episodes per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed episodes first")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="Omniglot folder with the authors' zips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.warmup < 0:
        parser.error("need --episodes >= 1 and --warmup >= 0")
    data = args.data.resolve()
    load = os.getloadavg()[0]
    threads = torch.get_num_threads()
    print(f"{N_WAY}-way {K_SHOT}-shot {N_QUERY}-query Prototypical, Conv-4, Omniglot 28x28 "
          f"train split from {data}; {args.warmup} warm-up + {args.episodes} timed episodes "
          "per side", flush=True)

    print("easyfsl ...", flush=True)
    theirs = run_easyfsl(data, args.warmup, args.episodes, args.seed)
    print("fewshot_metric ...", flush=True)
    ours = run_ours(data, args.warmup, args.episodes, args.seed)

    rate = {"easyfsl": args.episodes / theirs["seconds"],
            "fewshot_metric": args.episodes / ours["seconds"]}
    ratio = rate["fewshot_metric"] / rate["easyfsl"]
    print()
    print("| pipeline | episodes | seconds | episodes/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, result in (("easyfsl", theirs), ("fewshot_metric", ours)):
        print(f"| {name} | {args.episodes} | {result['seconds']:.2f} | {rate[name]:.2f} |")
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"\nratio fewshot_metric / easyfsl: {ratio:.2f}x (target >= {TARGET}x: {verdict})")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} torch threads "
          f"(default, both sides), load average {load:.2f} at start")
    if load > 0.5:
        print(f"WARNING: load average {load:.2f} at start: other work was running, so both "
              "rates are lower and noisier than on an idle machine")
    print(f"data: {ours['classes']} classes, {ours['images']} images (train split, rotations)")
    print(f"fewshot_metric cache fill (one-off, not timed): {ours['cache_fill_s']:.2f} s")
    print("notes:")
    print(f"- easyfsl {theirs['version']} from {EASYFSL_DIR.relative_to(ROOT)} (not in the "
          "project env); its TaskSampler draws with Python's `random`, ours with "
          "EpisodeSampler: same shape, different draws")
    if theirs["sampler_init_patched"]:
        print("- patched at run time: easyfsl's TaskSampler.__init__ calls "
              "Sampler.__init__(data_source=None), which this torch rejects; torch's Sampler "
              "accepted and ignored that argument during the TaskSampler construction only")
    print("- easyfsl decodes, rotates, resizes and normalises all 600 images of each episode "
          "(OmniglotDataset cache=False, DataLoader num_workers=0), conv in contiguous format; "
          "its head scores -euclidean distance (cdist), ours -squared euclidean")
    print("- fewshot_metric keeps the preprocessed images in one tensor (no per-episode decode: "
          "an episode is one index gather) and runs Conv-4 in channels_last memory format; "
          "the recipe's augmentation is turned off here, as easyfsl's pipeline has none"
          + ("" if ours["cached"] else " (WARNING: the recipe turned the cache off)"))

    if args.json:
        record = {
            "setup": {"n_way": N_WAY, "k_shot": K_SHOT, "n_query": N_QUERY, "lr": LR,
                      "backbone": "conv4", "data": str(data), "seed": args.seed,
                      "classes": ours["classes"], "images": ours["images"]},
            "episodes": args.episodes, "warmup": args.warmup,
            "easyfsl": {"version": theirs["version"], "seconds": theirs["seconds"],
                        "episodes_per_s": rate["easyfsl"],
                        "sampler_init_patched": theirs["sampler_init_patched"]},
            "fewshot_metric": {"seconds": ours["seconds"], "episodes_per_s":
                               rate["fewshot_metric"], "cache_fill_s": ours["cache_fill_s"]},
            "ratio": ratio, "target": TARGET, "target_met": ratio >= TARGET,
            "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                        "torch_threads": threads, "loadavg_1min": load},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
