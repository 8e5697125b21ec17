"""Crash-safety trials: SIGKILL a process while it saves a store or trains, then check the files.

Each child is forked (`multiprocessing.get_context("fork")`) from a parent that has already
imported torch and FAISS, so it starts in milliseconds; it saves (or trains and saves) once and
the parent kills it at a random moment, then checks what is on disk. Plain functions, so that
`benchmarks/reliability.py` can run larger counts than the tests (put `tests/reliability` on
`sys.path` and import `kill_trials`).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import select
import shutil
import signal
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewshot_metric.config import Recipe, load_recipe
from fewshot_metric.store import PrototypeStore
from fewshot_metric.training.checkpoint import load_model, load_train_state
from fewshot_metric.training.trainer import Trainer

FORK = multiprocessing.get_context("fork")
QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
# the quickstart recipe, tiny: 5-way 1-shot episodes, an 8-filter Conv-4, validation every 3rd
# step (2 episodes); the steps in between are saved by `fit(stop_at=...)` without validation
TINY_TRAINING = ("train.n_way=5", "train.k_shot=1", "train.n_query=1", "train.val_interval=3",
                 "train.val_episodes=2", "train.val_n_query=1", "model.backbone_kwargs={hidden: 8}")
CALIBRATION_STEPS = 3  # unkilled children that train the first steps and time one save each
CHILD_TIMEOUT = 120.0  # seconds a child may take to reach its save


@dataclass
class KillReport:
    """trials: children killed (or found finished) at a random moment; consistent: trials after
    which every file loaded and held exactly the old or the new version, never a mix;
    old_seen / new_seen: trials that found the version from before the save / the one being
    saved; killed: trials where SIGKILL ended the child before it finished; leftovers: temp
    files or folders killed saves left behind (the trials delete them); failures: one line
    per inconsistent trial."""

    trials: int = 0
    consistent: int = 0
    old_seen: int = 0
    new_seen: int = 0
    killed: int = 0
    leftovers: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class CheckpointKillReport(KillReport):
    """A KillReport of a training run killed and resumed once per trial, plus its final weights
    against an uninterrupted run's with the same seed: identical (bitwise) and max_abs_diff."""

    identical: bool = False
    max_abs_diff: float = float("nan")


class Inconsistent(AssertionError):
    """Files on disk that are neither the old nor the new version."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise Inconsistent(message)


def _kill(process: multiprocessing.process.BaseProcess, report: KillReport) -> None:
    """SIGKILLs `process` (a no-op when it has finished) and reaps it; counts a real kill."""
    process.kill()
    process.join()
    if process.exitcode == -signal.SIGKILL:
        report.killed += 1
    elif process.exitcode != 0:
        raise Inconsistent(f"the child failed by itself (exit code {process.exitcode})")


def _clear_leftovers(folder: Path, pattern: str) -> int:
    """Deletes the temp files or folders matching `pattern` in `folder`; returns how many."""
    found = list(folder.glob(pattern))
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return len(found)


# ---------------------------------------------------------------------------------- stores
def store_versions(kind: str, seed: int) -> dict[str, PrototypeStore]:
    """An old and a new version of one store. "small": instance mode, 30 classes x 3 shots
    (a save is mostly its fsyncs); "large": prototype mode, 40,000 classes of dim 64 (about
    11 MB, so a kill often lands mid-write). The new one lost a class, gained one and has more
    shots in another; `info` names the version."""
    mode, n_classes, shots, dim = (("instance", 30, 3, 16) if kind == "small" else
                                   ("prototype", 40_000, 1, 64))
    rng = np.random.default_rng(seed)
    labels = [f"c{i}" for i in range(n_classes)] * shots
    vectors = rng.normal(size=(len(labels), dim)).astype(np.float32)
    versions = {}
    for name in ("old", "new"):
        store = PrototypeStore(dim, mode=mode)
        store.add(vectors, labels)
        store.info = {"version": name}
        versions[name] = store
    versions["new"].remove("c0")
    versions["new"].add(rng.normal(size=(3, dim)), ["c1", "fresh", "fresh"])
    return versions


def store_signature(store: PrototypeStore, probes: np.ndarray) -> tuple:
    """Everything a user sees of a store: classes, shot counts, info and the answers (labels,
    distances) to `probes`."""
    result = store.search(probes, k=3)
    return store.classes, store.counts, store.info, result.labels, result.distances.tobytes()


@dataclass
class _StoreSetup:
    """One store's trials: its two versions and their signatures for `probes`, its folder,
    which version is on disk and how long an unkilled child takes to save."""

    versions: dict[str, PrototypeStore]
    probes: np.ndarray
    expected: dict[str, tuple]
    path: Path
    on_disk: str
    duration: float


def _store_setup(kind: str, path: Path, seed: int) -> _StoreSetup:
    """Saves the versions of store `kind` to `path` from unkilled children, timing them from
    the fork to the exit; leaves "old" on disk."""
    versions = store_versions(kind, seed)
    probes = np.random.default_rng(seed + 1).normal(size=(8, versions["old"].dim))
    durations = []
    for name in ("new", "old", "new", "old"):
        process = FORK.Process(target=versions[name].save, args=(path,))
        process.start()
        start = time.perf_counter()
        process.join()
        durations.append(time.perf_counter() - start)
        _expect(process.exitcode == 0, f"an unkilled save failed ({process.exitcode})")
    expected = {name: store_signature(store, probes) for name, store in versions.items()}
    return _StoreSetup(versions, probes, expected, path, "old", statistics.median(durations[1:]))


def store_kill_trials(n: int, workdir: Path, seed: int = 0) -> KillReport:
    """Kills `n` children, each saving a store over the other version of it (alternately a
    small and a large store), at a uniform random moment within 1.2 x the measured life of an
    unkilled child (from the fork to its exit), then loads the store and compares it with both
    versions."""
    rng = np.random.default_rng(seed)
    report = KillReport()
    setups = [_store_setup(kind, workdir / kind / "store", seed) for kind in ("small", "large")]
    for trial in range(n):
        setup = setups[trial % 2]
        old = setup.on_disk
        new = "new" if old == "old" else "old"
        report.trials += 1
        try:
            process = FORK.Process(target=setup.versions[new].save, args=(setup.path,))
            process.start()
            process.join(rng.uniform(0.0, 1.2 * setup.duration))
            _kill(process, report)
            found = store_signature(PrototypeStore.load(setup.path), setup.probes)
            _expect(found in (setup.expected[old], setup.expected[new]),
                    "the loaded store is neither the old nor the new version")
            setup.on_disk = old if found == setup.expected[old] else new
            report.consistent += 1
            report.old_seen += setup.on_disk == old
            report.new_seen += setup.on_disk == new
        except Exception as error:  # noqa: BLE001 - every failure is reported, then repaired
            report.failures.append(f"store trial {trial} ({setup.path}): "
                                   f"{type(error).__name__}: {error}")
            setup.versions[old].save(setup.path)
        report.leftovers += _clear_leftovers(setup.path.parent, f".{setup.path.name}.*.tmp")
    return report


# ----------------------------------------------------------------------------- training
def tiny_training_recipe(steps: int, seed: int) -> Recipe:
    """The quickstart recipe with TINY_TRAINING, `steps` steps and `seed`."""
    return load_recipe(QUICKSTART, [*TINY_TRAINING, f"train.steps={steps}", f"seed={seed}"])


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch on one thread, as in the training children, so that runs here and there do the
    same arithmetic bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _digest(value: Any) -> str:
    """sha256 of nested dicts, lists and tuples of tensors and plain values (tensors by
    dtype, shape and bytes, whatever their memory layout)."""
    digest = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous()
            digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            for key in sorted(item, key=repr):
                digest.update(f"key {key!r}".encode())
                feed(item[key])
        elif isinstance(item, list | tuple):
            digest.update(f"sequence {len(item)}".encode())
            for element in item:
                feed(element)
        else:
            digest.update(f"value {item!r}".encode())

    feed(value)
    return digest.hexdigest()


@dataclass
class _Reference:
    """An uninterrupted run: digests of the weights and the optimizer state after each step
    (by step number), and the final weights."""

    weights: dict[int, str] = field(default_factory=dict)
    optimizer: dict[int, str] = field(default_factory=dict)
    final: dict[str, torch.Tensor] = field(default_factory=dict)


def _reference_run(recipe: Recipe, out: Path) -> tuple[_Reference, Trainer]:
    """Trains `recipe` uninterrupted in this process, recording every step."""
    trainer = Trainer(recipe, out, progress=False)
    reference = _Reference()
    train_step = trainer.train_step

    def recorded(step: int) -> tuple[float, float]:
        result = train_step(step)
        reference.weights[step + 1] = _digest(trainer.model.state_dict())
        reference.optimizer[step + 1] = _digest(trainer.optimizer.state_dict())
        return result

    trainer.train_step = recorded
    trainer.fit()
    reference.final = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    return reference, trainer


def _train_child(recipe: Recipe, run: Path, sources: tuple, stop_at: int | None,
                 signal_fd: int) -> None:
    """A new Trainer continues the run in `run` (from its last.state.pt, if any) to `stop_at`,
    writing b"b" to `signal_fd` when a save begins and b"e" when it ends. It borrows the
    parent's preprocessed images (`sources`: plain pixel caches) to skip drawing them again."""
    torch.set_num_threads(1)
    trainer = Trainer(recipe, run, progress=False)
    trainer.train_source, trainer.val_source = sources
    save = trainer._save

    def signalled(val: Any) -> None:
        os.write(signal_fd, b"b")
        save(val)
        os.write(signal_fd, b"e")

    trainer._save = signalled
    trainer.fit(resume=(run / "last.state.pt").is_file(), stop_at=stop_at)


def _start_training(recipe: Recipe, run: Path, sources: tuple, stop_at: int | None
                    ) -> tuple[multiprocessing.process.BaseProcess, int]:
    """Forks `_train_child`; returns it and the read end of its signal pipe."""
    read_fd, write_fd = os.pipe()
    process = FORK.Process(target=_train_child, args=(recipe, run, sources, stop_at, write_fd))
    process.start()
    os.close(write_fd)
    return process, read_fd


def _next_signal(read_fd: int) -> bytes:
    """The child's next signal byte (b"" once it has exited)."""
    ready, _, _ = select.select([read_fd], [], [], CHILD_TIMEOUT)
    if not ready:
        raise TimeoutError(f"the training child sent nothing for {CHILD_TIMEOUT:g} s")
    return os.read(read_fd, 1)


def _check_run(run: Path, reference: _Reference, old: int) -> int:
    """Checks that every checkpoint file of `run`, after a kill while step old + 1 was being
    saved, loads and is a genuine version: best.safetensors of any step up to old + 1,
    last.safetensors and last.state.pt of step old or old + 1, weights and optimizer state
    bitwise those of the uninterrupted run at their step. Returns last.state.pt's step."""
    new = old + 1
    steps = {}
    for name in ("best", "last"):
        model, meta = load_model(run / f"{name}.safetensors")
        step = steps[name] = meta["info"]["step"]
        allowed = range(1, new + 1) if name == "best" else (old, new)
        _expect(step in allowed, f"{name}.safetensors is of step {step}, not one of "
                                 f"{list(allowed)}")
        _expect(_digest(model.state_dict()) == reference.weights[step],
                f"the weights in {name}.safetensors are not those of step {step}")
    state = load_train_state(run / "last.state.pt")
    step = state["step"]
    _expect(step in (old, new), f"last.state.pt is of step {step}, not {old} or {new}")
    _expect(step <= steps["last"], f"last.state.pt (step {step}) is newer than "
                                   f"last.safetensors (step {steps['last']})")
    _expect(_digest(state["model"]) == reference.weights[step],
            f"the weights in last.state.pt are not those of step {step}")
    _expect(_digest(state["optimizer"]) == reference.optimizer[step],
            f"the optimizer state in last.state.pt is not that of step {step}")
    return step


def _calibrate(recipe: Recipe, run: Path, sources: tuple) -> tuple[dict[bool, float], float]:
    """Unkilled children train the first CALIBRATION_STEPS steps of the run, one each. Returns
    the duration of a save, keyed by whether its step validates, and the longest life of a
    child."""
    save_time = {}
    life = 0.0
    for step in range(1, CALIBRATION_STEPS + 1):
        start = time.perf_counter()
        process, read_fd = _start_training(recipe, run, sources, step)
        _expect(_next_signal(read_fd) == b"b", "a calibration child did not save")
        begin = time.perf_counter()
        _expect(_next_signal(read_fd) == b"e", "a calibration save did not finish")
        save_time[step % recipe.train.val_interval == 0] = time.perf_counter() - begin
        process.join()
        os.close(read_fd)
        life = max(life, time.perf_counter() - start)
        _expect(process.exitcode == 0, f"a calibration child failed ({process.exitcode})")
    return save_time, life


def checkpoint_kill_trials(n: int, workdir: Path, seed: int = 0) -> CheckpointKillReport:
    """Trains a tiny run of n + 5 steps in forked children, one step and one save each, and
    kills `n` of them: three in four at a uniform random moment within 1.2 x a measured save
    (best?, last.safetensors, last.state.pt), the others at a random moment of the child's
    whole life. After each kill it checks the files (`_check_run`); the next child resumes
    from them. Then a last child resumes and finishes the run, and its final weights are
    compared with those of an uninterrupted run (trained here, in this process)."""
    rng = np.random.default_rng(seed)
    recipe = tiny_training_recipe(n + CALIBRATION_STEPS + 2, seed)
    run = workdir / "killed"
    report = CheckpointKillReport()
    with single_threaded_torch():
        reference, trainer = _reference_run(recipe, workdir / "uninterrupted")
        sources = (trainer.train_source, trainer.val_source)
        save_time, life = _calibrate(recipe, run, sources)
        old = CALIBRATION_STEPS
        for trial in range(n):
            report.trials += 1
            process, read_fd = _start_training(recipe, run, sources, old + 1)
            try:
                if trial % 4:
                    _expect(_next_signal(read_fd) == b"b", "the child did not reach its save")
                    validated = (old + 1) % recipe.train.val_interval == 0
                    time.sleep(rng.uniform(0.0, 1.2 * save_time[validated]))
                else:
                    process.join(rng.uniform(0.0, 1.2 * life))
                _kill(process, report)
                found = _check_run(run, reference, old)
                report.consistent += 1
                report.old_seen += found == old
                report.new_seen += found == old + 1
                old = found
            except Exception as error:  # noqa: BLE001 - every failure is reported
                process.kill()
                process.join()
                report.failures.append(f"training trial {trial} (saving step {old + 1}): "
                                       f"{type(error).__name__}: {error}")
            finally:
                os.close(read_fd)
            report.leftovers += _clear_leftovers(run, ".*.tmp")
        process, read_fd = _start_training(recipe, run, sources, None)
        process.join()
        os.close(read_fd)
    _expect(process.exitcode == 0, f"the resumed run failed ({process.exitcode})")
    model, meta = load_model(run / "last.safetensors")
    _expect(meta["info"]["step"] == recipe.train.steps, "the resumed run did not finish")
    final = model.state_dict()
    report.identical = all(torch.equal(final[key], value)
                           for key, value in reference.final.items())
    report.max_abs_diff = max((final[key].double() - value.double()).abs().max().item()
                              for key, value in reference.final.items())
    return report
