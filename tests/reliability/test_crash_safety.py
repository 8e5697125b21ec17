"""Crash safety: saves killed with SIGKILL at random moments leave, for stores and training
checkpoints alike, the old or the new version on disk, never a mix or a corrupt file; a
killed and resumed training run ends bit for bit where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from unittest import mock

import pytest
import torch
from kill_trials import (
    FORK,
    CheckpointKillReport,
    checkpoint_kill_trials,
    single_threaded_torch,
    store_kill_trials,
    tiny_training_recipe,
)

from fewshot_metric.training import trainer as trainer_module
from fewshot_metric.training.checkpoint import load_train_state, read_checkpoint
from fewshot_metric.training.trainer import Trainer

STORE_KILLS = 40
TRAINING_KILLS = 12


def test_killed_store_saves_leave_the_old_or_the_new_store(tmp_path: Path) -> None:
    report = store_kill_trials(STORE_KILLS, tmp_path, seed=0)
    assert report.failures == []
    assert report.trials == report.consistent == STORE_KILLS
    # both sides of the commit were hit, mostly by kills that ended a running save
    assert report.old_seen > 0 and report.new_seen > 0
    assert report.killed >= STORE_KILLS // 4


@pytest.fixture(scope="module")
def training_kills(tmp_path_factory: pytest.TempPathFactory) -> CheckpointKillReport:
    return checkpoint_kill_trials(TRAINING_KILLS, tmp_path_factory.mktemp("kills"), seed=0)


def test_killed_training_leaves_loadable_checkpoints(
        training_kills: CheckpointKillReport) -> None:
    assert training_kills.failures == []
    assert training_kills.trials == training_kills.consistent == TRAINING_KILLS
    assert training_kills.old_seen > 0 and training_kills.new_seen > 0
    assert training_kills.killed >= TRAINING_KILLS // 4


def test_a_run_killed_and_resumed_ends_with_the_uninterrupted_weights(
        training_kills: CheckpointKillReport) -> None:
    # bitwise on CPU: both runs use one torch thread (see kill_trials.single_threaded_torch)
    assert training_kills.identical and training_kills.max_abs_diff == 0.0


def _crash_before_the_state_of(step: int, recipe, run: Path, sources: tuple) -> None:
    """Trains `run` in a forked child that SIGKILLs itself when it is about to write the
    last.state.pt of `step`, right after that step's last.safetensors."""
    torch.set_num_threads(1)
    save_train_state = trainer_module.save_train_state

    def crash(path, state) -> None:
        if state["step"] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        save_train_state(path, state)

    with mock.patch.object(trainer_module, "save_train_state", crash):
        trainer = Trainer(recipe, run, progress=False)
        trainer.train_source, trainer.val_source = sources
        trainer.fit()


def test_a_crash_between_last_safetensors_and_its_state_resumes_exactly(tmp_path: Path) -> None:
    """The worst moment: last.safetensors already of step 5, last.state.pt still of step 3."""
    recipe = tiny_training_recipe(steps=5, seed=0)  # saves after steps 3 and 5
    crashed = tmp_path / "crashed"
    with single_threaded_torch():
        straight = Trainer(recipe, tmp_path / "straight", progress=False)
        straight.fit()
        sources = (straight.train_source, straight.val_source)  # preprocessed pixels only
        child = FORK.Process(target=_crash_before_the_state_of,
                             args=(5, recipe, crashed, sources))
        child.start()
        child.join()
        assert child.exitcode == -signal.SIGKILL
        assert read_checkpoint(crashed / "last.safetensors")[0]["info"]["step"] == 5
        assert load_train_state(crashed / "last.state.pt")["step"] == 3
        resumed = Trainer(recipe, crashed, progress=False)
        resumed.train_source, resumed.val_source = sources
        resumed.fit(resume=True)
    expected, found = straight.model.state_dict(), resumed.model.state_dict()
    for key, value in expected.items():
        assert torch.equal(found[key], value), key
