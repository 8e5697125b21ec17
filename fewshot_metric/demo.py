"""The used-by flow on built-in data, through the CLI: register unseen classes, query others.

    python -m fewshot_metric.demo --checkpoint runs/quickstart/best.safetensors

Writes the glyph classes of a split (classes the quickstart model never trained on) as PNG
files, `--shots` per class into OUT/register/<class>/ and `--queries` others into
OUT/query/<class>/; runs `fewshot-metric register --folder` into a new store OUT/store and
`fewshot-metric query --json` on the query images; prints top-1 / top-k accuracy with a 95%
confidence interval, and the `fewshot-metric query` table for a few of the images.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

from fewshot_metric import cli
from fewshot_metric.data import GlyphsDataset
from fewshot_metric.evaluation import accuracy_with_ci


def write_images(dataset: GlyphsDataset, classes: list[int], shots: int, queries: int,
                 out: Path) -> None:
    """PNG files of `classes`: the first `shots` images of each under out/register/<class>/,
    the next `queries` under out/query/<class>/."""
    for c in classes:
        name = dataset.class_names[c]
        indices = np.flatnonzero(dataset.labels == c)[:shots + queries]
        for n, i in enumerate(indices):
            folder = out / ("register" if n < shots else "query") / name
            folder.mkdir(parents=True, exist_ok=True)
            dataset.load_image(int(i)).save(folder / f"{n:02d}.png")


def run_cli(args: list[str]) -> str:
    """Prints `$ fewshot-metric ARGS`, runs it in this process, returns its stdout."""
    print("$ fewshot-metric " + shlex.join(args), flush=True)
    captured = io.StringIO()
    with redirect_stdout(captured):
        code = cli.main(args)
    if code:
        raise SystemExit(f"fewshot-metric {args[0]} failed with exit code {code}")
    return captured.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trained glyphs checkpoint")
    parser.add_argument("--out", default="runs/quickstart/demo", help="images and store go here "
                        "(replaced on each run)")
    parser.add_argument("--split", default="test", help="glyph split to register (default test)")
    parser.add_argument("--classes", type=int, default=200, help="classes to register (at most "
                        "the split's)")
    parser.add_argument("--shots", type=int, default=5, help="images registered per class")
    parser.add_argument("--queries", type=int, default=15, help="images queried per class")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--examples", type=int, default=5, help="example answers to print")
    parser.add_argument("--seed", type=int, default=0, help="which classes and examples")
    args = parser.parse_args(argv)

    dataset = GlyphsDataset(args.split)
    n_classes = len(dataset.class_names)
    if not 1 <= args.classes <= n_classes or args.shots + args.queries > \
            dataset.images_per_class:
        parser.error(f"need 1 <= --classes <= {n_classes} and --shots + --queries <= "
                     f"{dataset.images_per_class}")
    rng = np.random.default_rng(args.seed)
    classes = sorted(rng.choice(n_classes, args.classes, replace=False).tolist())
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    write_images(dataset, classes, args.shots, args.queries, out)
    print(f"wrote {args.classes} unseen glyph classes ({args.split} split): {args.shots} images "
          f"each to {out / 'register'}, {args.queries} each to {out / 'query'}")

    store = str(out / "store")
    print(run_cli(["register", "--store", store, "--checkpoint", args.checkpoint,
                   "--folder", str(out / "register"), "--quiet"]).splitlines()[-1])
    lines = run_cli(["query", "--store", store, str(out / "query"), "--k", str(args.k),
                     "--json", "--quiet"]).splitlines()
    answers = [json.loads(line) for line in lines]
    truth = [Path(answer["image"]).parent.name for answer in answers]
    top1 = [answer["labels"][0] == t for answer, t in zip(answers, truth, strict=True)]
    topk = [t in answer["labels"] for answer, t in zip(answers, truth, strict=True)]
    for name, hits in (("top-1", top1), (f"top-{args.k}", topk)):
        mean, ci, _ = accuracy_with_ci(hits)
        print(f"{name} accuracy: {100 * mean:.2f}% ± {100 * ci:.2f}% (95% CI) over {len(hits)} "
              f"query images, {args.classes}-way, {args.shots} shots per class")
    picks = sorted(rng.choice(len(answers), min(args.examples, len(answers)), replace=False))
    wrong = len(top1) - sum(top1)
    print(f"some answers (the folder is the true class; {wrong} of {len(top1)} top-1 answers "
          f"were wrong):")
    print(run_cli(["query", "--store", store, *(answers[i]["image"] for i in picks), "--k",
                   str(args.k), "--quiet"]), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
