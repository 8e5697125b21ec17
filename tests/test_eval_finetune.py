"""`fewshot-metric eval --adapt-steps`: test-time fine-tuning of any metric checkpoint on the
same seeded episodes, its flags and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewshot_metric.cli import main
from fewshot_metric.config import load_recipe
from fewshot_metric.data import EpisodeSampler, GlyphsDataset, build_transform, split_episode
from fewshot_metric.evaluation import embed_dataset, evaluate_embeddings
from fewshot_metric.heads import PrototypicalHead
from fewshot_metric.meta import FineTune
from fewshot_metric.model import build_model
from fewshot_metric.training.checkpoint import load_model, save_checkpoint

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EPISODES = ["--way", "5", "--shot", "2", "--query", "2", "--episodes", "4", "--seed", "3"]


def run_eval(checkpoint: Path, out: Path, *extra: str) -> dict:
    """eval on EPISODES with --json `out` and `extra` flags -> the JSON record."""
    assert main(["eval", str(checkpoint), *EPISODES, "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_zero_steps_are_the_prototypical_episodes(tiny_checkpoint: Path, tmp_path: Path,
                                                  capsys) -> None:
    plain = run_eval(tiny_checkpoint, tmp_path / "plain.json")
    head = run_eval(tiny_checkpoint, tmp_path / "head.json", "--adapt-steps", "0")
    every = run_eval(tiny_checkpoint, tmp_path / "all.json", "--adapt-steps", "0",
                        "--adapt", "all")
    lines = capsys.readouterr().out.splitlines()
    assert plain.pop("adapt") is None
    assert head.pop("adapt") == {"steps": 0, "lr": 0.01, "what": "head"}
    assert every.pop("adapt") == {"steps": 0, "lr": 0.01, "what": "all"}
    assert head == plain and every == plain
    assert lines[1].startswith(lines[0]) and "linear head fine-tuned" in lines[1]
    assert "whole network fine-tuned on each support set (0 steps, lr 0.01" in lines[2]

    model, _ = load_model(tiny_checkpoint)
    dataset = GlyphsDataset("test", images_per_class=4)
    dataset.transform = build_transform(model.backbone.input_config)
    embeddings = embed_dataset(model, dataset)
    for indices in EpisodeSampler(dataset.labels, 5, 1, 3, n_episodes=5, seed=2):
        support, labels, query, _ = split_episode(embeddings[indices], 5, 1, 3)
        with torch.no_grad():
            expected = model.episode_logits(support, labels, query).argmax(1)
        assert torch.equal(FineTune(0).head_logits(support, labels, query).argmax(1), expected)


def test_steps_adapt_and_leave_the_checkpoint_unchanged(tiny_checkpoint: Path,
                                                        tmp_path: Path, capsys) -> None:
    before = tiny_checkpoint.read_bytes()
    every = run_eval(tiny_checkpoint, tmp_path / "all.json", "--adapt-steps", "2",
                        "--adapt", "all", "--adapt-lr", "0.05")
    head = run_eval(tiny_checkpoint, tmp_path / "head.json", "--adapt-steps", "2")
    assert tiny_checkpoint.read_bytes() == before
    assert every["adapt"] == {"steps": 2, "lr": 0.05, "what": "all"}
    assert head["adapt"] == {"steps": 2, "lr": 0.01, "what": "head"}
    out = capsys.readouterr().out
    assert "whole network fine-tuned on each support set (2 steps, lr 0.05" in out


@pytest.mark.parametrize("extra, message", [
    (["--adapt-lr", "0.1"], "--adapt-lr given without --adapt-steps N"),
    (["--adapt", "all"], "--adapt given without --adapt-steps N"),
    (["--adapt-steps", "-1"], "--adapt-steps must be a non-negative integer"),
    (["--adapt-steps", "1", "--adapt-lr", "0"], "--adapt-lr must be a positive number"),
    (["--adapt-steps", "1", "--adapt-lr", "-0.1"], "--adapt-lr must be a positive number"),
])
def test_bad_flags_are_one_line_naming_the_flag(tiny_checkpoint: Path, extra: list[str],
                                                message: str, capsys) -> None:
    assert main(["eval", str(tiny_checkpoint), *EPISODES, *extra]) == 2
    assert message in capsys.readouterr().err


def untrained_checkpoint(path: Path, *overrides: str) -> Path:
    """A checkpoint of the quickstart recipe with `overrides`, untrained (no run needed)."""
    recipe = load_recipe(PROJECT_ROOT / "recipes" / "quickstart.yaml", list(overrides))
    save_checkpoint(path, build_model(recipe.model), recipe.to_dict(), {"step": 0})
    return path


def test_a_maml_checkpoint_keeps_its_own_inner_loop(tmp_path: Path, capsys) -> None:
    checkpoint = untrained_checkpoint(tmp_path / "maml.safetensors", "model.head=maml",
                                      "model.head_kwargs={n_way: 5}")
    assert main(["eval", str(checkpoint), *EPISODES, "--adapt-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--adapt-steps does not apply to a 'maml' checkpoint" in err
    assert "test_inner_steps=1, test_inner_lr=0.4" in err


def test_a_matching_checkpoint_is_fine_tuned_from_its_embeddings(tmp_path: Path) -> None:
    checkpoint = untrained_checkpoint(tmp_path / "matching.safetensors", "model.head=matching")
    head = run_eval(checkpoint, tmp_path / "head.json", "--adapt-steps", "0")
    model, _ = load_model(checkpoint)
    dataset = GlyphsDataset("test")
    dataset.transform = build_transform(model.backbone.input_config)
    model.head = PrototypicalHead()  # 0 steps: the prototypes of the same embeddings
    proto = evaluate_embeddings(model, embed_dataset(model, dataset), dataset.labels,
                                dataset.class_groups, 5, 2, 2, 4, 3)
    assert head["mean"] == proto.mean and head["std"] == proto.std
