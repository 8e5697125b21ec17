"""Loading never runs code: checkpoints, training state and backbone weights are read as
tensors and JSON only, recipes with yaml.safe_load, store metadata as JSON; and no path is
ever built from a label."""

from __future__ import annotations

import ast
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from corpus import (
    STORED_UNUSUAL_LABELS,
    VALID_UNUSUAL_LABELS,
    write_good_images,
    write_malicious_files,
)

import fewshot_metric
from fewshot_metric import Embedder, FewShotClassifier, PrototypeStore
from fewshot_metric.backbones import create_backbone
from fewshot_metric.backbones.weights import read_state_dict
from fewshot_metric.cli import main
from fewshot_metric.config import ConfigError, load_recipe
from fewshot_metric.model import build_model
from fewshot_metric.store import StoreFormatError
from fewshot_metric.training.checkpoint import CheckpointError, load_model, load_train_state


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file the payloads create when they run."""
    return tmp_path / "code_ran"


@pytest.fixture
def files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    return write_malicious_files(tmp_path / "files", marker)


def test_the_payloads_run_code_when_loaded_unsafely(files: dict[str, Path],
                                                    marker: Path) -> None:
    """The control: loaded the unsafe way, each kind of payload creates the marker."""
    pickle.loads(files["checkpoint_pt"].read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(files["train_state"], weights_only=False)
    assert marker.exists()
    marker.unlink()
    yaml.unsafe_load(files["recipe"].read_text())
    assert marker.exists()


@pytest.mark.parametrize("name", ["checkpoint_pt", "checkpoint_safetensors",
                                  "checkpoint_torch_zip"])
def test_a_checkpoint_that_runs_code_is_refused(files: dict[str, Path], marker: Path,
                                                name: str, tmp_path: Path, capsys) -> None:
    path = files[name]
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} is not a readable "
                                              rf"checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        Embedder.from_checkpoint(path)
    image = write_good_images(tmp_path / "good")["h0"]
    assert main(["register", "--store", str(tmp_path / "store"), "--checkpoint", str(path),
                 "--label", "x", str(image), "--quiet"]) == 2
    assert f"{path} is not a readable checkpoint" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "store").exists()


def test_a_training_state_that_runs_code_is_refused(files: dict[str, Path], marker: Path,
                                                    tiny_checkpoint: Path, tmp_path: Path,
                                                    capsys) -> None:
    with pytest.raises(CheckpointError, match=r"cannot load training state safely: "
                                              r"torch\.load\(weights_only=True\) refused it"
                       ) as error:
        load_train_state(files["train_state"])
    assert "weights_only` set to `False`" not in str(error.value)  # torch's advice: not given
    run = tmp_path / "run"  # a finished run whose last.state.pt was replaced
    shutil.copytree(tiny_checkpoint.parent, run)
    shutil.copy(files["train_state"], run / "last.state.pt")
    assert main(["train", str(run / "recipe.yaml"), "--out", str(run), "--resume",
                 "--quiet"]) == 2
    assert f"{run / 'last.state.pt'}: cannot load training state safely" in (
        capsys.readouterr().err)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["weights_pt", "weights_safetensors"])
def test_backbone_weights_that_run_code_are_refused(files: dict[str, Path], marker: Path,
                                                    name: str, tmp_path: Path) -> None:
    path = files[name]
    with pytest.raises(ValueError, match=rf"weights file {re.escape(str(path))} could not be "
                                         rf"read"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="could not be read"):
        create_backbone("conv4", weights=path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  weights: {json.dumps(str(path))}\n")
    with pytest.raises(ValueError, match="could not be read"):
        build_model(load_recipe(recipe).model)
    assert not marker.exists()


def test_a_recipe_with_a_python_tag_is_refused(files: dict[str, Path], marker: Path,
                                               tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(str(files['recipe']))}: not valid "
                                          rf"YAML: could not determine a constructor"):
        load_recipe(files["recipe"])
    assert main(["train", str(files["recipe"]), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "tags such as !!python/... are refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_store_metadata_that_is_not_json_is_refused(files: dict[str, Path], marker: Path,
                                                    capsys) -> None:
    with pytest.raises(StoreFormatError, match=r"store\.json: not valid JSON"):
        PrototypeStore.load(files["store"])
    assert main(["store", "info", str(files["store"])]) == 2
    assert "store.json: not valid JSON" in capsys.readouterr().err
    assert not marker.exists()


def _unsafe_loads(source: str) -> list[str]:
    """Calls in `source` that could unpickle: torch.load without weights_only=True, np.load
    without allow_pickle=False, any pickle/marshal/dill/joblib load, yaml's unsafe loaders."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            continue
        owner, name = node.func.value.id, node.func.attr
        keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
        if ((owner == "torch" and name == "load" and keywords.get("weights_only") is not True)
                or (owner in ("np", "numpy") and name == "load"
                    and keywords.get("allow_pickle") is not False)
                or (owner in ("pickle", "marshal", "dill", "joblib")
                    and name in ("load", "loads", "Unpickler"))
                or (owner == "yaml" and name in ("load", "load_all", "unsafe_load",
                                                 "unsafe_load_all", "full_load"))):
            found.append(f"{owner}.{name} line {node.lineno}")
    return found


def test_no_loader_in_the_package_can_unpickle() -> None:
    assert _unsafe_loads("torch.load(f)\nnp.load(f)\npickle.loads(b)\nyaml.load(s)\n"
                         "torch.load(f, weights_only=True)\n") == [
        "torch.load line 1", "np.load line 2", "pickle.loads line 3", "yaml.load line 4"]
    package = Path(fewshot_metric.__file__).parent
    found = {str(path.relative_to(package)): _unsafe_loads(path.read_text(encoding="utf-8"))
             for path in sorted(package.rglob("*.py"))}
    assert {path: calls for path, calls in found.items() if calls} == {}
    assert len(found) > 30  # the whole package was read


PATH_LIKE_LABELS = [VALID_UNUSUAL_LABELS[name] for name in (
    "parent", "slash", "absolute", "backslash", "dot", "newline", "windows_device")]


def test_labels_never_become_paths(tiny_checkpoint: Path, tmp_path: Path, monkeypatch,
                                   capsys) -> None:
    good = write_good_images(tmp_path / "good")
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # a label used as a relative path would land in tmp_path
    absolute = Path(VALID_UNUSUAL_LABELS["absolute"])
    absolute_existed = absolute.exists()
    before = set(tmp_path.rglob("*"))
    store = work / "store"
    for label in PATH_LIKE_LABELS:
        assert main(["register", "--store", str(store), "--checkpoint", str(tiny_checkpoint),
                     "--label", label, str(good["v0"]), "--quiet"]) == 0
    classifier = FewShotClassifier.from_checkpoint(tiny_checkpoint, mode="instance")
    classifier.register_many({label: [good["h0"]] for label in VALID_UNUSUAL_LABELS.values()})
    classifier.save(work / "instance")

    COMMON_FILES = ("store.json", "labels.json", "class_ids.npy", "class_counts.npy",
                    "index.faiss")
    assert set(tmp_path.rglob("*")) - before == {
        store, work / "store.lock", *(store / name for name in (
            *COMMON_FILES, "means.npy")),
        work / "instance", work / "instance.lock", *(work / "instance" / name for name in (
            *COMMON_FILES, "vectors.npy", "vector_ids.npy", "vector_classes.npy"))}
    assert absolute.exists() == absolute_existed
    assert PrototypeStore.load(store).classes == PATH_LIKE_LABELS
    assert PrototypeStore.load(work / "instance").classes == list(STORED_UNUSUAL_LABELS.values())
    capsys.readouterr()
    assert main(["query", "--store", str(store), str(good["v0"]), "--k", "10", "--json",
                 "--quiet"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["labels"]) == sorted(PATH_LIKE_LABELS)
