"""Trainer on tiny runs of the built-in data: files written, resume equality, every head."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from fewshot_metric.config import load_recipe
from fewshot_metric.training.checkpoint import load_model, read_checkpoint
from fewshot_metric.training.trainer import Trainer

TINY = [
    "data.kind=glyphs", "model.backbone=conv4", "train.steps=6", "train.n_way=5",
    "train.k_shot=2", "train.n_query=2", "train.val_interval=3", "train.val_episodes=5",
    "train.val_n_query=2", "train.step_size=2", "train.gamma=0.5", "eval.episodes=5",
    "eval.n_query=2",
]


def tiny_recipe(*extra: str):
    return load_recipe(None, [*TINY, *extra])


def weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_run_writes_checkpoints_metrics_curve_and_recipe(tmp_path: Path) -> None:
    leftover = tmp_path / ".last.safetensors.partial-k1ll3d_0.tmp"  # from a killed write
    leftover.write_bytes(b"half a checkpoint")
    trainer = Trainer(tiny_recipe(), tmp_path, progress=False)
    trainer.fit()
    for name in ("best.safetensors", "last.safetensors", "last.state.pt", "metrics.jsonl",
                 "recipe.yaml", "learning_curve.png"):
        assert (tmp_path / name).is_file(), name
    assert not leftover.exists() and not list(tmp_path.glob(".*"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().split("\n")
               if line]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_accuracy" in r] == [3, 6]
    assert records[0]["lr"] == pytest.approx(1e-3) and records[2]["lr"] == pytest.approx(5e-4)
    saved = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert saved["train"]["steps"] == 6

    meta, _ = read_checkpoint(tmp_path / "last.safetensors")
    spec = meta["spec"]
    assert spec["backbone"]["name"] == "conv4"
    assert spec["input_config"]["image_size"] == [28, 28]
    assert spec["head"]["name"] == "prototypical"
    assert spec["distance"]["name"] == "sqeuclidean"
    assert meta["recipe"]["train"]["n_way"] == 5
    assert meta["info"]["step"] == 6
    best_val = max(r["val_accuracy"] for r in records if "val_accuracy" in r)
    assert read_checkpoint(tmp_path / "best.safetensors")[0]["info"]["best_val_accuracy"] == \
        pytest.approx(best_val)

    result = trainer.test()
    assert 0.0 <= result.mean <= 1.0 and result.episodes == 5
    assert json.loads((tmp_path / "eval.json").read_text())["mean"] == result.mean


def test_resume_after_stop_ends_with_identical_weights(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    Trainer(tiny_recipe(), straight, progress=False).fit()

    resumed = tmp_path / "resumed"
    Trainer(tiny_recipe(), resumed, progress=False).fit(stop_at=4)
    assert read_checkpoint(resumed / "last.safetensors")[0]["info"]["step"] == 4
    Trainer(tiny_recipe(), resumed, progress=False).fit(resume=True)

    a, b = weights(straight / "last.safetensors"), weights(resumed / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in
             (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_with_another_recipe_is_refused(tmp_path: Path) -> None:
    Trainer(tiny_recipe(), tmp_path, progress=False).fit(stop_at=2)
    with pytest.raises(ValueError, match="same recipe"):
        Trainer(tiny_recipe("train.lr=0.1"), tmp_path, progress=False).fit(resume=True)


@pytest.mark.parametrize("extra", [
    ("model.head=matching",),
    ("model.head=matching", "model.head_kwargs={fce: true, process_steps: 2}"),
    ("model.head=siamese", "train.pairs_per_step=16"),
    ("model.metric=cosine",),
], ids=["matching", "matching-fce", "siamese", "proto-cosine"])
def test_every_head_trains_and_reloads(tmp_path: Path, extra: tuple[str, ...]) -> None:
    recipe = tiny_recipe(*extra, "train.steps=3")
    trainer = Trainer(recipe, tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    model, meta = load_model(tmp_path / "last.safetensors")
    assert meta["spec"]["head"]["name"] == recipe.model.head
    for key, value in model.state_dict().items():
        assert torch.equal(value, after[key]), key


def test_too_few_classes_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class"):
        Trainer(tiny_recipe("train.n_way=5000"), tmp_path, progress=False)
    assert not (tmp_path / "last.safetensors").exists()


def test_device_and_mixed_precision_choices(tmp_path: Path) -> None:
    from fewshot_metric.training.distributed import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU; use --device cpu"):
            Trainer(tiny_recipe(), tmp_path, progress=False, device="cuda")
        with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
            Trainer(tiny_recipe("train.amp=fp16"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="train.amp 'fp8' is not known"):
        Trainer(tiny_recipe("train.amp=fp8"), tmp_path, progress=False)
    trainer = Trainer(tiny_recipe("train.amp=bf16", "train.steps=2"), tmp_path, progress=False,
                      device="cpu")
    loss, _ = trainer.train_step(0)
    assert math.isfinite(loss) and all(p.dtype == torch.float32
                                       for p in trainer.model.parameters())
