"""`fewshot-metric <command>`: one function per command, wired by the COMMANDS table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fewshot_metric.config import ConfigError


def cmd_backbones(args: argparse.Namespace) -> int:
    from fewshot_metric.backbones import list_backbones

    names = list_backbones(args.pattern)
    for name in names:
        print(name)
    if not names:
        print(f"no backbone matches '{args.pattern}'", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from fewshot_metric.config import load_recipe
    from fewshot_metric.training.trainer import Trainer

    recipe = load_recipe(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    trainer = Trainer(recipe, out, progress=not args.quiet)
    trainer.fit(resume=args.resume)
    result = trainer.test()
    print(f"test ({recipe.data.kind} {recipe.data.test_split}, held-out classes) {result}")
    print(f"checkpoint: {out / 'best.safetensors'}  curve: {out / 'learning_curve.png'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fewshot_metric.config import recipe_from_dict
    from fewshot_metric.data import build_transform
    from fewshot_metric.evaluation import embed_dataset, evaluate_embeddings
    from fewshot_metric.training.checkpoint import load_model
    from fewshot_metric.training.splits import open_split

    model, meta = load_model(args.checkpoint)
    data = recipe_from_dict(meta["recipe"], source=f"{args.checkpoint} recipe").data
    if args.data is not None:
        data.kind = args.data
        data.root = None
    if args.root is not None:
        data.root = args.root
    if args.rotations is not None:
        data.rotations = args.rotations
    split = args.split or data.test_split
    dataset = open_split(data, split, build_transform(model.backbone.input_config))
    embeddings = embed_dataset(model, dataset, args.batch_size)
    result = evaluate_embeddings(model, embeddings, dataset.labels, dataset.class_groups,
                                 args.way, args.shot, args.query, args.episodes, args.seed,
                                 same_group=args.same_group)
    print(f"{data.kind} {split}: {result}")
    record = {"checkpoint": str(args.checkpoint), "data": data.kind, "root": data.root,
              "split": split, "rotations": data.rotations, **result.to_dict()}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot-metric", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("backbones", help="list backbone names (classic and timm/<model>)")
    p.add_argument("pattern", nargs="?", default=None, help="filter, e.g. 'timm/resnet*'")

    p = sub.add_parser("train", help="train an embedder from a recipe, then test it")
    p.add_argument("recipe", help="recipe YAML, e.g. recipes/quickstart.yaml")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe value (repeatable)")
    p.add_argument("--out", help="run folder (default runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue the stopped run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("eval", help="episodic accuracy of a checkpoint with a 95%% CI")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="data kind (glyphs, omniglot, folder, csv); default: "
                   "the checkpoint's recipe")
    p.add_argument("--root", help="data folder (default: the checkpoint's recipe)")
    p.add_argument("--split", help="split name or CSV/folder (default: the recipe's test split)")
    rotations = p.add_mutually_exclusive_group()
    rotations.add_argument("--rotations", dest="rotations", action="store_true", default=None)
    rotations.add_argument("--no-rotations", dest="rotations", action="store_false")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--same-group", action="store_true",
                   help="all classes of a task from one group (e.g. one Omniglot alphabet)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", help="also write the result to this JSON file")
    return parser


COMMANDS = {"backbones": cmd_backbones, "train": cmd_train, "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError, OSError, KeyError) as exc:
        print(f"fewshot-metric {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
