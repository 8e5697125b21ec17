"""SIGKILL the server mid-stream: every acknowledged change survives and the store loads
(kill_server.py; benchmarks/serve_bench.py runs 50 trials)."""

from __future__ import annotations

from pathlib import Path

from kill_server import server_kill_trials
from serve_helpers import free_port, shots

from fewshot_metric import FewShotClassifier


def test_acknowledged_changes_survive_sigkill_and_restart(
        tiny_checkpoint: Path, glyph_images: Path, names: list[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    FewShotClassifier.from_checkpoint(tiny_checkpoint).save(store)
    image = shots(glyph_images, names[0], slice(0, 1))[0].read_bytes()
    report = server_kill_trials(3, store, image, free_port(), seed=0, requests=60)
    assert report.problems == []
    assert report.trials == report.loadable == 3
    assert report.acknowledged == report.acknowledged_present == sum(report.killed_after) > 0
    assert report.unacknowledged_present <= report.trials  # one request in flight at most
