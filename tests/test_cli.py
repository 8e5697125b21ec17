"""fewshot-metric commands end to end on tiny runs of the built-in data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_metric.cli import main

TINY = ["--set", "train.steps=2", "--set", "train.n_way=5", "--set", "train.k_shot=1",
        "--set", "train.n_query=1", "--set", "train.val_interval=2",
        "--set", "train.val_episodes=2", "--set", "eval.episodes=3", "--quiet"]
QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", QUICKSTART, "--out", str(out), *TINY]) == 0
    return out


def test_train_prints_test_accuracy_with_ci(run_dir: Path, capsys) -> None:
    assert (run_dir / "best.safetensors").is_file()
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 3


def test_eval_same_seed_same_number_and_json(run_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["eval", str(run_dir / "best.safetensors"), "--way", "5", "--shot", "1",
            "--query", "2", "--episodes", "10", "--seed", "3"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
    assert capsys.readouterr().out == first
    assert "5-way 1-shot" in first and "95% CI, 10 episodes" in first and "seed 3" in first
    a = json.loads((tmp_path / "a.json").read_text())
    assert a == json.loads((tmp_path / "b.json").read_text())
    assert a["split"] == "test" and a["n_way"] == 5 and a["episodes"] == 10
    assert 0 <= a["mean"] <= 1 and a["ci95"] >= 0


def test_eval_within_group(run_dir: Path, capsys) -> None:
    assert main(["eval", str(run_dir / "best.safetensors"), "--way", "5", "--query", "2",
                 "--episodes", "4", "--same-group"]) == 0
    assert "within-group" in capsys.readouterr().out


def test_errors_are_one_clear_line_and_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stpes: 3\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "train.stpes" in err
    assert main(["eval", str(tmp_path / "none.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_backbones_lists_classic_and_timm(capsys) -> None:
    assert main(["backbones"]) == 0
    names = capsys.readouterr().out.split()
    assert {"conv4", "resnet12", "wrn28_10", "timm/resnet18",
            "timm/vit_tiny_patch16_224"} <= set(names)
    assert main(["backbones", "timm/resnet1*"]) == 0
    filtered = capsys.readouterr().out.split()
    assert "timm/resnet18" in filtered and "conv4" not in filtered
    assert main(["backbones", "no-such-*"]) == 1


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("fewshot-metric")
    result = subprocess.run([str(exe), "backbones", "conv*"], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["conv4"]
