"""Two CPU processes under torchrun (gloo): identical weights after every step, the loss goes
down, resume is exact, and the checkpoint loads in a single process; for a metric head and
for MAML with a meta-batch of 4 tasks (2 per rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ddp_worker import weights_digest

from fewshot_metric.training.checkpoint import load_model

WORKER = Path(__file__).with_name("ddp_worker.py")
MAML = ["model.head=maml", "model.head_kwargs={n_way: 10}", "train.val_n_way=10",
        "eval.n_way=10", "train.meta_batch=4"]


@pytest.fixture(scope="module", params=[[], MAML], ids=["prototypical", "maml"])
def report(request, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(WORKER), str(out), *request.param],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), out


def test_ranks_hold_identical_parameters_after_every_step(report) -> None:
    data, _ = report
    assert data["world_size"] == 2
    assert data["identical"] == [True] * len(data["losses"]) and len(data["losses"]) == 12


def test_ranks_draw_different_episodes_and_the_loss_goes_down(report) -> None:
    losses = [sum(ranks) / 2 for ranks in report[0]["losses"]]
    assert all(a != b for a, b in report[0]["losses"][:3])  # different episodes per rank
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses


def test_distributed_resume_ends_with_the_same_weights(report) -> None:
    assert report[0]["resumed_digest"] == report[0]["final_digest"]


def test_cli_run_under_torchrun_loads_in_one_process(report) -> None:
    data, out = report
    model, meta = load_model(out / "cli" / "last.safetensors")
    # the CLI run trained the same weights as the step-by-step run
    assert weights_digest(model).tolist() == data["final_digest"]
    assert meta["info"]["step"] == 12
    load_model(out / "cli" / "best.safetensors")
    records = (out / "cli" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in records] == list(range(1, 13))  # rank 0 only
    assert (out / "cli" / "eval.json").is_file()
