"""Reliability figures: bad inputs, SIGKILL during saves, concurrency, in one run.

Runs the test suite's own harnesses (tests/reliability/) at larger counts:

- every case of the generated bad-input corpus (`corpus.CASES`: images, labels, embeddings,
  k, recipes, checkpoints, damaged stores, a file given as a store; Python API and CLI),
  counting the cases that gave a clean error (the expected error, naming the input, no
  Python repr in the message, the store and files unchanged);
- every CLI command that prints, run with its output pipe closed by the reader
  (`closed_pipes.closed_pipe_cases`), counting those that exit 141 with nothing on stderr;
- store saves killed with SIGKILL at random moments (`kill_trials.store_kill_trials`) and
  training runs killed during checkpoint writes then resumed
  (`kill_trials.checkpoint_kill_trials`), counting the trials that left a loadable store or
  run holding exactly the old or the new version, and whether the resumed run's final
  weights equal an uninterrupted run's bit for bit;
- a FewShotClassifier queried by reader threads while a writer thread registers and removes
  classes (`stress.thread_stress`, both store modes), and pairs of processes that both
  load-modify-save one store folder under `exclusive_lock`, counting errors and lost classes.

    .venv/bin/python benchmarks/reliability.py [--store-kills 200] [--checkpoint-kills 40]
        [--stress-seconds 10] [--process-pairs 10] [--seed 0] [--json out.json]

Linux only (the kill and process trials fork).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "reliability")]

from closed_pipes import closed_pipe_cases  # noqa: E402
from conftest import train_tiny_checkpoint, write_glyph_images  # noqa: E402
from corpus import run_bad_input_cases  # noqa: E402
from kill_trials import checkpoint_kill_trials, store_kill_trials  # noqa: E402
from stress import thread_stress  # noqa: E402

from fewshot_metric import FewShotClassifier  # noqa: E402
from fewshot_metric.store import PrototypeStore, exclusive_lock  # noqa: E402

FORK = multiprocessing.get_context("fork")


def _locked_add(path: Path, name: str) -> None:
    with exclusive_lock(path):
        store = PrototypeStore.load(path)
        time.sleep(0.05)  # widen the window in which the other process would interleave
        store.add(np.full((1, store.dim), float(len(name)), np.float32), [name])
        store.save(path)


def process_pairs(rounds: int, workdir: Path) -> tuple[int, int]:
    """Rounds of two processes adding one class each to one store -> (classes added, lost)."""
    added = lost = 0
    for r in range(rounds):
        path = workdir / f"pair{r}"
        base = PrototypeStore(4)
        base.add(np.zeros((1, 4), np.float32), ["base"])
        base.save(path)
        names = [f"from process {i} of round {r}" for i in range(2)]
        children = [FORK.Process(target=_locked_add, args=(path, name)) for name in names]
        for child in children:
            child.start()
        for child in children:
            child.join(120)
        classes = set(PrototypeStore.load(path).classes)
        added += 2
        lost += sum(name not in classes for name in names)
    return added, lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store-kills", type=int, default=200)
    parser.add_argument("--checkpoint-kills", type=int, default=40)
    parser.add_argument("--stress-seconds", type=float, default=10.0)
    parser.add_argument("--process-pairs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    rows: list[tuple[str, str, str]] = []
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = train_tiny_checkpoint(work / "run")

        start = time.perf_counter()
        results = run_bad_input_cases(checkpoint, work / "bad_inputs")
        clean = sum(ok for _, ok, _ in results)
        figures["bad_inputs"] = {"cases": len(results), "clean": clean,
                                 "not_clean": [name for name, ok, _ in results if not ok],
                                 "seconds": time.perf_counter() - start}
        rows.append(("bad inputs (images, labels, embeddings, k, recipes, checkpoints, "
                     "stores, a file as a store; API and CLI)", f"{len(results)} cases",
                     f"{clean} clean errors (naming the input, no Python repr in the message), "
                     f"store unchanged ({100 * clean / len(results):.0f}%)"))

        shots = write_glyph_images(work / "glyphs", classes=6, images=3)
        start = time.perf_counter()
        pipes = closed_pipe_cases(checkpoint, sorted(next(iter(shots.values()))),
                                  work / "closed_pipes")
        quiet = sum(ok for _, ok, _ in pipes)
        figures["closed_pipes"] = {"commands": len(pipes), "quiet": quiet,
                                   "not_quiet": [row for row in pipes if not row[1]],
                                   "seconds": time.perf_counter() - start}
        rows.append(("output pipe closed by its reader (as by `head -1`): every command "
                     "that prints",
                     f"{len(pipes)} commands", f"{quiet} exit 141 without a traceback "
                     f"({100 * quiet / len(pipes):.0f}%)"))

        start = time.perf_counter()
        store = store_kill_trials(args.store_kills, work / "store_kills", args.seed)
        figures["store_kills"] = {**vars(store), "seconds": time.perf_counter() - start}
        rows.append(("SIGKILL during store saves", f"{store.trials} trials "
                     f"({store.killed} killed mid-save)",
                     f"{store.consistent} loadable and consistent "
                     f"({100 * store.consistent / store.trials:.0f}%); old {store.old_seen}, "
                     f"new {store.new_seen}"))

        start = time.perf_counter()
        runs = checkpoint_kill_trials(args.checkpoint_kills, work / "checkpoint_kills",
                                      args.seed)
        figures["checkpoint_kills"] = {**vars(runs), "seconds": time.perf_counter() - start}
        rows.append(("SIGKILL during training checkpoint writes, then --resume",
                     f"{runs.trials} trials ({runs.killed} killed mid-run)",
                     f"{runs.consistent} loadable and consistent "
                     f"({100 * runs.consistent / runs.trials:.0f}%); final weights "
                     f"{'bitwise identical' if runs.identical else 'DIFFER'} to an "
                     f"uninterrupted run (max abs diff {runs.max_abs_diff:g})"))

        for mode in ("prototype", "instance"):
            start = time.perf_counter()
            report = thread_stress(FewShotClassifier.from_checkpoint(checkpoint, mode=mode),
                                   shots, args.stress_seconds, readers=2, seed=args.seed)
            figures[f"threads_{mode}"] = {**vars(report), "operations": report.operations,
                                          "seconds": time.perf_counter() - start}
            rows.append((f"2 query threads + 1 register/remove thread, {mode} mode, "
                         f"{args.stress_seconds:g} s", f"{report.operations} operations "
                         f"({report.queries} queries, {report.changes} changes)",
                         f"{len(report.errors)} errors or torn reads"))

        added, lost = process_pairs(args.process_pairs, work / "pairs")
        figures["process_pairs"] = {"rounds": args.process_pairs, "added": added, "lost": lost}
        rows.append(("2 processes load-modify-save one store under exclusive_lock",
                     f"{args.process_pairs} rounds, {added} classes added",
                     f"{lost} classes lost"))

    print("| trial | done | result |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    perfect = (clean == len(results) and quiet == len(pipes) and store.consistent == store.trials
               and runs.consistent == runs.trials and runs.identical and lost == 0
               and not any(figures[f"threads_{m}"]["errors"] for m in ("prototype", "instance")))
    return 0 if perfect else 1


if __name__ == "__main__":
    sys.exit(main())
