"""A reader that goes away (`| head -1`) stops every printing command quietly, exit 141."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from closed_pipes import closed_pipe_cases, commands


def test_every_printing_command_exits_141_without_a_traceback(
        tiny_checkpoint: Path, glyph_images: Path, tmp_path: Path) -> None:
    images = sorted((glyph_images / "glyph00800").glob("*.png"))
    rows = closed_pipe_cases(tiny_checkpoint, images, tmp_path)
    assert [name for name, _, _ in rows] == list(commands(tiny_checkpoint, images, tmp_path))
    assert [(name, message) for name, clean, message in rows if not clean] == []


def test_head_takes_the_first_answer_and_the_pipeline_ends_quietly(
        tiny_checkpoint: Path, glyph_images: Path, tmp_path: Path) -> None:
    """The issue's own pipeline, in a real shell: 2,000 answers (over the 64 KiB a pipe
    buffers, so the command is still writing when head exits)."""
    store = tmp_path / "store"
    cli = [sys.executable, "-m", "fewshot_metric.cli"]
    images = sorted((glyph_images / "glyph00801").glob("*.png"))
    subprocess.run([*cli, "register", "--store", str(store), "--checkpoint",
                    str(tiny_checkpoint), "--label", "a", str(images[0]), "--quiet"],
                   check=True, capture_output=True)
    many = " ".join([str(images[1])] * 2000)
    done = subprocess.run(
        ["bash", "-c", f"{' '.join(cli)} query --store {store} {many} --json --quiet "
                       f"| head -1; echo \"status ${{PIPESTATUS[0]}}\" >&2"],
        capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.count("\n") == 1 and done.stdout.startswith('{"image": ')
    assert done.stderr == "status 141\n"
