"""Omniglot results table: each trained recipe on the four standard test tasks.

Train the three recipes first (each prints its own test accuracy):
    fewshot-metric train recipes/omniglot_protonet.yaml --out runs/omniglot_protonet
    fewshot-metric train recipes/omniglot_matching.yaml --out runs/omniglot_matching
    fewshot-metric train recipes/omniglot_siamese.yaml --out runs/omniglot_siamese
then:
    python benchmarks/omniglot_results.py --runs runs --episodes 1000 --seed 0
Each cell runs exactly `fewshot-metric eval RUN/best.safetensors --way N --shot K --query Q
--episodes E --seed S [--same-group]` on the test alphabets (Greek, Korean, with rotations),
and the markdown table printed here is the one in the README.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from fewshot_metric.cli import main as cli

HEADS = {"omniglot_protonet": "Prototypical", "omniglot_matching": "Matching",
         "omniglot_siamese": "Siamese"}
TASKS = [  # (label, way, shot, query, same_group)
    ("5-way 1-shot", 5, 1, 15, False),
    ("5-way 5-shot", 5, 5, 15, False),
    ("20-way 1-shot", 20, 1, 5, False),
    ("20-way 1-shot, within alphabet", 20, 1, 5, True),
]


def evaluate(checkpoint: Path, way: int, shot: int, query: int, same_group: bool,
             episodes: int, seed: int) -> dict:
    args = ["eval", str(checkpoint), "--way", str(way), "--shot", str(shot), "--query",
            str(query), "--episodes", str(episodes), "--seed", str(seed)]
    if same_group:
        args.append("--same-group")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        if cli([*args, "--json", str(out)]) != 0:
            raise SystemExit(f"eval failed: {' '.join(args)}")
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder holding the three run folders")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for run, head in HEADS.items():
        checkpoint = Path(args.runs) / run / "best.safetensors"
        if not checkpoint.is_file():
            raise SystemExit(f"{checkpoint} not found: train recipes/{run}.yaml first")
        cells = []
        for _, way, shot, query, same_group in TASKS:
            result = evaluate(checkpoint, way, shot, query, same_group, args.episodes,
                              args.seed)
            cells.append(f"{100 * result['mean']:.1f} ± {100 * result['ci95']:.1f}")
        rows.append(f"| {head} (`recipes/{run}.yaml`) | " + " | ".join(cells) + " |")
    print(f"\nOmniglot test alphabets, {args.episodes} episodes, seed {args.seed}, "
          "accuracy % ± 95% CI\n")
    print("| model | " + " | ".join(label for label, *_ in TASKS) + " |")
    print("| --- " * (len(TASKS) + 1) + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
