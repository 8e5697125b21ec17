"""Learning-curve PNG from a run's metrics.jsonl (loss, train and validation accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fewshot_metric.atomic import atomic_write


def plot_learning_curve(metrics_path: Path, png_path: Path) -> None:
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    steps = [r["step"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(steps, [r["loss"] for r in records], lw=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log")
    ax_acc.plot(steps, [r["train_accuracy"] for r in records], lw=0.5, alpha=0.5,
                label="train episodes")
    val = [r for r in records if "val_accuracy" in r]
    ax_acc.plot([r["step"] for r in val], [r["val_accuracy"] for r in val], "o-",
                label="validation (held-out classes)")
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
