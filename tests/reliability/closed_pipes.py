"""Every CLI command that prints, with its output pipe already closed by the reader.

`fewshot-metric query ... --json | head -1` is normal use: once `head` has its line it exits,
and the command's next write fails (EPIPE). Each case runs one command in a new process whose
stdout is a pipe with no reader left, so its first write fails however little it prints; it
is clean when the command exits 141 (128 + SIGPIPE, what coreutils give) with nothing on
stderr (no traceback). `closed_pipe_cases(checkpoint, images, workdir)` -> (name, clean,
message) rows, as `corpus.run_bad_input_cases` gives them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TINY_TRAINING = ["--set", "train.steps=1", "--set", "train.n_way=2", "--set", "train.k_shot=1",
                 "--set", "train.n_query=1", "--set", "train.val_interval=1",
                 "--set", "train.val_episodes=1", "--set", "train.val_n_query=1",
                 "--set", "eval.episodes=2", "--set", "eval.n_query=1"]


def commands(checkpoint: Path, images: Sequence[Path], workdir: Path) -> dict[str, list[str]]:
    """{case name: fewshot-metric arguments} for every command that prints to stdout."""
    store = workdir / "store"
    root = Path(__file__).resolve().parents[2]
    return {
        "backbones": ["backbones"],
        "register": ["register", "--store", str(store), "--checkpoint", str(checkpoint),
                     "--label", "first", str(images[0]), "--quiet"],
        "query_table": ["query", "--store", str(store), *map(str, images), "--quiet"],
        "query_json": ["query", "--store", str(store), *map(str, images), "--json", "--quiet"],
        "store_info": ["store", "info", str(store)],
        "store_rename": ["store", "rename", str(store), "first", "renamed"],
        "eval": ["eval", str(checkpoint), "--episodes", "2", "--query", "1"],
        "train": ["train", str(root / "recipes" / "quickstart.yaml"), *TINY_TRAINING,
                  "--out", str(workdir / "run"), "--quiet"],
    }


def run_with_closed_stdout(arguments: list[str], timeout: float = 300.0
                           ) -> subprocess.CompletedProcess:
    """Runs `python -m fewshot_metric.cli arguments` with stdout a pipe whose read end is
    closed before the command starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "fewshot_metric.cli", *arguments],
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, check=False)
    finally:
        os.close(write_end)


def closed_pipe_cases(checkpoint: Path, images: Sequence[Path], workdir: Path
                      ) -> list[tuple[str, bool, str]]:
    """Runs every command of `commands` (in order: register creates the store the later ones
    read) with a closed stdout -> (name, clean, what happened)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, arguments in commands(checkpoint, images, workdir).items():
        done = run_with_closed_stdout(arguments)
        clean = done.returncode == 141 and not done.stderr
        rows.append((name, clean, f"exit {done.returncode}; stderr: {done.stderr.strip()!r}"))
    return rows
