"""Recipe schema: defaults, overrides, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewshot_metric.config import ConfigError, load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name
    assert recipe.model.head in {"prototypical", "matching", "siamese"}


def test_missing_keys_keep_defaults_and_name_comes_from_file(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "train:\n  steps: 7\n"))
    assert recipe.train.steps == 7
    assert recipe.train.n_way == 20  # default
    assert recipe.name == "recipe"


def test_null_never_overrides_a_default(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "train:\n  lr: null\n"))
    assert recipe.train.lr == 1e-3


def test_set_overrides_parse_yaml_values(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "seed: 1\n"),
                         ["train.steps=12", "model.metric=cosine", "data.rotations=true",
                          "train.lr=0.01"])
    assert (recipe.train.steps, recipe.model.metric) == (12, "cosine")
    assert recipe.data.rotations is True
    assert recipe.train.lr == pytest.approx(0.01)


def test_int_is_accepted_for_float(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path, "train:\n  lr: 1\n")).train.lr == 1.0


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  stpes: 10\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml.*unknown key 'train\.stpes'.*steps"):
        load_recipe(path)


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_recipe(write(tmp_path, "trian:\n  steps: 1\n"))


@pytest.mark.parametrize("text,key", [
    ("train:\n  steps: ten\n", "train.steps"),
    ("train:\n  steps: 1.5\n", "train.steps"),
    ("data:\n  rotations: 1\n", "data.rotations"),
    ("model:\n  backbone: 4\n", "model.backbone"),
    ("train: 5\n", "train"),
])
def test_wrong_type_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"recipe\.yaml.*'{key}'"):
        load_recipe(write(tmp_path, text))


def test_wrong_override_names_the_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set train\.stepz=3.*unknown key 'train\.stepz'"):
        load_recipe(write(tmp_path, "seed: 0\n"), ["train.stepz=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_recipe(write(tmp_path, "seed: 0\n"), ["train.steps"])


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_tags_that_build_objects_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(path)
