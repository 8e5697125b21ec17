"""Checkpoint files: bad files give clear errors; only tensors and JSON are ever loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fewshot_metric.config import load_recipe
from fewshot_metric.model import build_model
from fewshot_metric.training.checkpoint import (
    CheckpointError,
    load_model,
    load_train_state,
    save_checkpoint,
)


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(load_recipe(None).model)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, load_recipe(None).to_dict(), {"step": 0})
    return path


def test_round_trip_gives_identical_weights_and_outputs(checkpoint: Path) -> None:
    model, meta = load_model(checkpoint)
    again, _ = load_model(checkpoint)
    images = torch.randn(3, 1, 28, 28)
    assert torch.equal(model.embed(images), again.embed(images))
    assert meta["format_version"] == 1 and meta["info"] == {"step": 0}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.safetensors"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_file(checkpoint: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is not a readable checkpoint"):
        load_model(cut)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(path)


def test_plain_safetensors_without_spec(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a fewshot_metric checkpoint"):
        load_model(path)


class RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_train_state_with_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.state.pt"
    torch.save({"step": 1, "evil": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="cannot load training state safely"):
        load_train_state(path)


def test_failed_save_leaves_previous_checkpoint(checkpoint: Path, monkeypatch) -> None:
    before = checkpoint.read_bytes()
    model = build_model(load_recipe(None).model)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("fewshot_metric.training.checkpoint.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(checkpoint, model, {}, {})
    assert checkpoint.read_bytes() == before
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]
