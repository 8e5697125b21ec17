"""The MAML family in the one trainer: tiny runs train, validate, save, resume bit for bit,
evaluate with the test-time inner loop, and serve through Embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import tiny_recipe, weights

from fewshot_metric.cli import main
from fewshot_metric.config import load_recipe
from fewshot_metric.data import GlyphsDataset, build_transform
from fewshot_metric.embedder import Embedder
from fewshot_metric.evaluation import evaluate_dataset, evaluate_images
from fewshot_metric.model import build_model
from fewshot_metric.training.checkpoint import load_model
from fewshot_metric.training.splits import preload_images
from fewshot_metric.training.trainer import Trainer

MAML = ("model.head=maml",
        "model.head_kwargs={n_way: 5, inner_steps: 1, inner_lr: 0.4, test_inner_steps: 2}")


def maml_recipe(*extra: str):
    return tiny_recipe(*MAML, *extra)


def test_maml_run_trains_validates_saves_evals_and_embeds(tmp_path: Path, capsys) -> None:
    trainer = Trainer(maml_recipe(), tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().split("\n")
               if line]
    assert [r["step"] for r in records if "val_accuracy" in r] == [3, 6]
    after = trainer.model.state_dict()
    assert not torch.equal(before["head.classifier.weight"], after["head.classifier.weight"])
    assert not torch.equal(before["backbone.network.0.0.weight"],
                           after["backbone.network.0.0.weight"])
    # batch-norm running statistics were tracked during meta-training (what serving folds)
    assert not torch.equal(before["backbone.network.0.1.running_mean"],
                           after["backbone.network.0.1.running_mean"])

    model, meta = load_model(tmp_path / "best.safetensors")
    assert meta["spec"]["head"] == {"name": "maml", "kwargs": {
        "n_way": 5, "inner_steps": 1, "inner_lr": 0.4, "test_inner_steps": 2,
        "embed_dim": 64}}
    result = trainer.test()
    assert result.episodes == 5 and 0 <= result.mean <= 1

    capsys.readouterr()  # the run's validation lines
    args = ["eval", str(tmp_path / "best.safetensors"), "--way", "5", "--shot", "1",
            "--query", "2", "--episodes", "4", "--seed", "3"]
    assert main(args) == 0 and main(args) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == second and "5-way 1-shot" in first and "4 episodes" in first
    assert main([*args[:3], "3"]) == 2
    assert "--way is 3, but head 'maml' has a 5-way classifier" in capsys.readouterr().err

    embedder = Embedder.from_checkpoint(tmp_path / "best.safetensors", device="cpu")
    images = preload_images(GlyphsDataset("test", images_per_class=2), range(4),
                            progress=False)
    with torch.no_grad():
        expected = model.backbone(images).numpy()
    np.testing.assert_allclose(embedder.embed(images), expected, rtol=1e-4, atol=1e-5)


def test_maml_resume_after_stop_ends_with_identical_weights(tmp_path: Path) -> None:
    recipe = maml_recipe("model.head_kwargs={n_way: 5, meta_sgd: true}", "train.meta_batch=2")
    straight = tmp_path / "straight"
    Trainer(recipe, straight, progress=False).fit()
    resumed = tmp_path / "resumed"
    Trainer(recipe, resumed, progress=False).fit(stop_at=4)
    Trainer(recipe, resumed, progress=False).fit(resume=True)
    a, b = weights(straight / "last.safetensors"), weights(resumed / "last.safetensors")
    assert a.keys() == b.keys() and any(key.startswith("head.lrs.") for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("head, kwargs", [
    ("maml", "{n_way: 5, first_order: true}"),
    ("maml", "{n_way: 5, adapt: [classifier, backbone.network.3]}"),
    ("anil", "{n_way: 5}"),
    ("protomaml", "{inner_steps: 1}"),
    ("reptile", "{n_way: 5, inner_steps: 2}"),
], ids=["fomaml", "maml-subset", "anil", "protomaml", "reptile"])
def test_every_adaptation_head_trains_and_reloads(tmp_path: Path, head: str, kwargs: str
                                                  ) -> None:
    recipe = tiny_recipe(f"model.head={head}", f"model.head_kwargs={kwargs}", "train.steps=2",
                         "train.val_interval=2", "train.optimizer=sgd", "train.lr=0.1")
    trainer = Trainer(recipe, tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert not torch.equal(before["network.0.0.weight"], after["backbone.network.0.0.weight"])
    model, _ = load_model(tmp_path / "last.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, after[key]), key


def test_eval_mode_runs_the_test_inner_loop() -> None:
    recipe = load_recipe(None, ["model.head=maml",
                                "model.head_kwargs={n_way: 2, inner_steps: 1, "
                                "test_inner_steps: 0}"])
    model = build_model(recipe.model)
    images = torch.randn(8, 1, 28, 28)  # 2-way 2-shot 2-query
    _, logits = model.eval().episode_loss(images, 2, 2, 2)
    assert torch.equal(logits, torch.zeros(4, 2))  # no step: the zero classifier
    _, logits = model.train().episode_loss(images, 2, 2, 2)
    assert logits.abs().sum() > 0


def test_metric_heads_score_the_same_on_images_as_on_embeddings() -> None:
    model = build_model(load_recipe(None).model).eval()
    dataset = GlyphsDataset("test", images_per_class=4)
    dataset.transform = build_transform(model.backbone.input_config)
    fast = evaluate_dataset(model, dataset, 5, 1, 3, episodes=6, seed=1)
    slow = evaluate_images(model, lambda indices: preload_images(dataset, indices, False),
                           dataset.labels, dataset.class_groups, 5, 1, 3, episodes=6, seed=1)
    assert slow == fast


@pytest.mark.parametrize("extra, message", [
    (("train.n_way=6",), "train.n_way is 6, but head 'maml' has a 5-way classifier"),
    (("train.val_n_way=3",), "train.val_n_way is 3"),
    (("train.meta_batch=0",), "train.meta_batch=0 must be a positive multiple"),
    (("model.head_kwargs={n_way: 5, inner_lr: 0}",), "inner_lr must be a positive number"),
    (("model.head_kwargs={n_way: 5, test_inner_steps: -1}",),
     "test_inner_steps must be a non-negative integer"),
    (("model.head_kwargs={n_way: 5, meta_sgd: true, test_inner_lr: 0.1}",),
     "test_inner_lr does not apply with meta_sgd"),
    (("model.head_kwargs={inner_steps: 1}",), "head 'maml' needs model.head_kwargs.n_way"),
    (("model.head_kwargs={n_way: 5, adapt: [backbone.network.9]}",),
     "adapt: 'backbone.network.9' names no parameter"),
    (("model.head_kwargs={n_way: 5, adapt: 3}",), "adapt must be \"all\", a parameter name"),
    (("model.head=reptile", "model.head_kwargs={n_way: 5, first_order: true}"),
     r"head 'reptile' got unknown options \['first_order'\]"),
    (("model.head=protomaml", "model.head_kwargs={n_way: 5}"),
     r"head 'protomaml' got unknown options \['n_way'\]"),
], ids=["train-way", "val-way", "meta-batch", "lr", "steps", "meta-sgd-lr", "no-way", "adapt",
        "adapt-type", "reptile-first-order", "protomaml-n-way"])
def test_bad_options_fail_before_training_and_name_the_key(tmp_path: Path, extra, message
                                                           ) -> None:
    with pytest.raises(ValueError, match=message):
        Trainer(maml_recipe(*extra), tmp_path, progress=False)
    assert not (tmp_path / "last.safetensors").exists()


def test_a_meta_batch_step_follows_the_mean_gradient_of_its_tasks(tmp_path: Path) -> None:
    recipe = maml_recipe("train.meta_batch=2", "train.optimizer=sgd", "train.momentum=0",
                         "train.lr=0.1", "train.scheduler=none")
    trainer = Trainer(recipe, tmp_path, progress=False)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    grads = []
    for episode in (0, 1):  # step 0 runs episodes 0 and 1 of the sampler
        images = trainer.train_source.fetch(trainer.sampler.episode(episode))
        loss, _ = trainer.episode_loss(images, torch.Generator())
        grads.append(torch.autograd.grad(loss, params, allow_unused=True,
                                         materialize_grads=True))
    trainer.train_step(0)
    for p, start, g0, g1 in zip(params, theta, *grads, strict=True):
        torch.testing.assert_close(p.detach(), start - 0.1 * (g0 + g1) / 2)
