"""`fewshot-metric <command>`: one function per command, wired by the COMMANDS table.

Exit status: 0 done, 2 an error the message explains, 141 (128 + SIGPIPE, as coreutils exit)
when the reader of the output went away (`fewshot-metric query ... --json | head -1`): the
command stops quietly, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fewshot_metric.config import ConfigError
from fewshot_metric.store import KIND_OPTIONS, MODES, flat_kernel

if TYPE_CHECKING:  # imported where used: torch loads only for the commands that need it
    from fewshot_metric.meta.finetune import FineTune


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
    from fewshot_metric.training.distributed import shutdown_distributed
    from fewshot_metric.training.trainer import Trainer

    recipe = load_recipe(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    try:
        trainer = Trainer(recipe, out, progress=not args.quiet, device=args.device)
        trainer.fit(resume=args.resume)
        if trainer.dist.is_main:  # under torchrun, rank 0 tests and reports
            result = trainer.test()
            print(f"test ({recipe.data.kind} {recipe.data.test_split}, held-out classes) "
                  f"{result}")
            print(f"checkpoint: {out / 'best.safetensors'}  curve: "
                  f"{out / 'learning_curve.png'}")
    finally:
        shutdown_distributed()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fewshot_metric.config import recipe_from_dict
    from fewshot_metric.data import build_transform
    from fewshot_metric.evaluation import evaluate_dataset
    from fewshot_metric.training.checkpoint import load_model
    from fewshot_metric.training.splits import open_split

    finetune = _finetune(args)
    model, meta = load_model(args.checkpoint)
    model.head.check_n_way(args.way, "--way")
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
    result = evaluate_dataset(model, dataset, args.way, args.shot, args.query, args.episodes,
                              args.seed, same_group=args.same_group, batch_size=args.batch_size,
                              finetune=finetune)
    print(f"{data.kind} {split}: {result}" + (f"; {finetune}" if finetune else ""))
    record = {"checkpoint": str(args.checkpoint), "data": data.kind, "root": data.root,
              "split": split, "rotations": data.rotations, **result.to_dict(),
              "adapt": finetune.to_dict() if finetune else None}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def _finetune(args: argparse.Namespace) -> FineTune | None:
    """eval's --adapt-steps / --adapt-lr / --adapt -> a FineTune, or None without them."""
    from fewshot_metric.meta.finetune import DEFAULT_LR, FineTune
    from fewshot_metric.meta.inner_loop import check_steps
    from fewshot_metric.meta.maml import check_lr

    if args.adapt_steps is None:
        given = [flag for flag, value in (("--adapt", args.adapt), ("--adapt-lr", args.adapt_lr))
                 if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} given without --adapt-steps N, which turns "
                             "on test-time fine-tuning: add it, e.g. --adapt-steps 10")
        return None
    lr = DEFAULT_LR if args.adapt_lr is None else args.adapt_lr
    return FineTune(check_steps(args.adapt_steps, "--adapt-steps"), check_lr(lr, "--adapt-lr"),
                    args.adapt or "head")


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _printable(label: str) -> str:
    """A label as typed, or its repr when it holds characters a terminal would not show."""
    return label if label.isprintable() else repr(label)


def cmd_register(args: argparse.Namespace) -> int:
    from fewshot_metric.store import exclusive_lock

    Path(args.store).parent.mkdir(parents=True, exist_ok=True)  # for the lock file
    with exclusive_lock(args.store):  # no other process saves between our load and save
        return _register(args)


def _register(args: argparse.Namespace) -> int:
    from fewshot_metric.classifier import FewShotClassifier, list_images
    from fewshot_metric.store.persistence import check_new_store_folder, store_exists

    folder = Path(args.store)
    if store_exists(folder):
        classifier = FewShotClassifier.load(args.store, args.checkpoint, args.device)
        store = classifier.store
        for name, asked, has in (("--mode", args.mode, store.mode),
                                 ("--index", args.index, store.index_kind)):
            if asked is not None and asked != has:
                raise ValueError(f"the store {args.store} already exists with {name[2:]} "
                                 f"{has!r}; {name} {asked} only applies to a new store (change "
                                 f"the index with `fewshot-metric store index`)")
    else:
        check_new_store_folder(folder)
        if args.checkpoint is None:
            raise ValueError(f"there is no store at {args.store} yet: pass --checkpoint CKPT to "
                             f"create one for that model")
        classifier = FewShotClassifier.from_checkpoint(args.checkpoint, args.device,
                                                       mode=args.mode, index=args.index or "flat")
    if args.folder is not None:
        if args.label is not None or args.images:
            raise ValueError("give either --folder DIR or --label NAME IMAGE..., not both")
        counts = classifier.register_folder(args.folder, args.batch_size, _progress(args))
    else:
        if args.label is None or not args.images:
            raise ValueError("give --label NAME and its IMAGE files or folders (or --folder DIR "
                             "with one subfolder per class)")
        images = list_images(args.images)
        counts = {args.label: classifier.register(args.label, images, args.batch_size,
                                                  _progress(args))}
    classifier.save(args.store)
    for label, count in counts.items():
        print(f"{_printable(label)}: {count} shots")
    print(f"store {args.store}: {len(classifier)} classes ({classifier.store.mode} mode, "
          f"{classifier.store.index_kind} index)")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from fewshot_metric.classifier import FewShotClassifier, list_images

    classifier = FewShotClassifier.load(args.store, args.checkpoint, args.device, args.mmap)
    if not len(classifier):
        raise ValueError(f"the store {args.store} has no classes yet: add some with "
                         f"`fewshot-metric register --store {args.store}`")
    if args.reject_distance is not None:
        classifier.reject_distance = args.reject_distance
    images = list_images(args.images)
    predictions = classifier.query(images, args.k, args.batch_size, _progress(args))
    if args.json:
        for prediction in predictions:
            print(json.dumps(prediction.to_dict(), ensure_ascii=False))
        return 0
    width = max(len("image"), *(len(p.image) for p in predictions))
    print(f"{'image':<{width}}  top classes (score)")
    for p in predictions:
        answers = "  ".join(f"{_printable(label)} ({score:.3f})"
                            for label, score in zip(p.labels, p.scores, strict=True))
        print(f"{p.image:<{width}}  {answers}")
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from fewshot_metric.store import JournalPendingError, PrototypeStore, exclusive_lock
    from fewshot_metric.store.persistence import store_exists

    if args.action == "info":
        try:
            store = PrototypeStore.load(args.store, mmap=True)  # reads only what it shows
        except JournalPendingError:  # a server's changes not yet folded: replay them
            store = PrototypeStore.load(args.store)
        _print_info(args, store)
        return 0
    collisions = args.collisions if args.action == "normalize" else "refuse"
    if not store_exists(args.store):
        PrototypeStore.load(args.store)  # the error that says what is missing
    with exclusive_lock(args.store):  # no other process saves between our load and save
        store = PrototypeStore.load(args.store, label_collisions=collisions)
        if args.action == "remove":
            for label in args.labels:
                store.remove(label)
        elif args.action == "rename":
            store.rename(args.old, args.new)
        elif args.action == "index":
            store.set_index(args.kind, **dict(_option(text) for text in args.option))
        store.save(args.store)
    print(f"store {args.store}: {len(store)} classes, {store.index_kind} index")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fewshot_metric.serve import ServeOptions
    from fewshot_metric.serve.server import read_token_file, serve_store

    options = ServeOptions(
        token=read_token_file(args.token_file) if args.token_file else None,
        token_for_reads=args.token_for_reads, cors_origins=tuple(args.cors_origin),
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_upload_mb=args.max_upload_mb, max_image_pixels=args.max_image_pixels)
    serve_store(args.store, args.checkpoint, args.device, args.host, args.port, options,
                args.fold_entries, args.fold_seconds, args.log_level)
    return 0


def _print_info(args: argparse.Namespace, store) -> None:
    counts = store.counts
    print(f"store:        {args.store}")
    print(f"classes:      {len(store)} ({sum(counts.values())} shots)")
    print(f"embeddings:   dim {store.dim}, metric {store.metric}, {store.mode} mode")
    print(f"index:        {store.index_kind} {store.index_options or ''}".rstrip())
    if store.index_kind == "flat":
        kernel = flat_kernel.unavailable_reason()
        screening = ("int8 screening" if flat_kernel.screens()
                     else "float32 only: no AVX512-VNNI")
        print("exact search: " + (f"fused AVX-512 kernel for {flat_kernel.MIN_QUERIES}+ queries"
                                  f" ({screening})" if kernel is None else f"FAISS ({kernel})"))
    print(f"checkpoint:   {store.info.get('checkpoint')}")
    print(f"fingerprint:  {store.fingerprint}")
    print(f"reject above: {store.info.get('reject_distance')}")
    shown = list(counts.items())[:args.show]
    for label, count in shown:
        print(f"  {_printable(label)}: {count} shots")
    if len(counts) > len(shown):
        print(f"  ... {len(counts) - len(shown)} more (--show N)")


def _option(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.strip().isdigit():
        raise ValueError(f"--option {text!r}: write NAME=INTEGER, e.g. nprobe=32")
    return name.strip(), int(value)


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
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, "
                   "cuda:N; under torchrun each rank takes GPU LOCAL_RANK")
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
    p.add_argument("--adapt-steps", type=int, metavar="N", help="fine-tune on each episode's "
                   "support set for N gradient steps before scoring its queries (0: the "
                   "Proto-MAML head as initialised, the Prototypical predictions); not for "
                   "MAML-family checkpoints, which adapt with their own inner loop")
    p.add_argument("--adapt-lr", type=float, metavar="LR",
                   help="step size of --adapt-steps (default 0.01)")
    p.add_argument("--adapt", choices=["head", "all"],
                   help="what --adapt-steps fine-tunes: head (default: a linear head from the "
                   "support prototypes, on embeddings computed once) or all (backbone too, "
                   "per episode; batch norm keeps the checkpoint's running statistics)")

    p = sub.add_parser("register", help="add classes from a few images each to a store")
    p.add_argument("--store", required=True, help="store folder (created if missing)")
    p.add_argument("--checkpoint", help="model checkpoint; needed to create a store, "
                   "otherwise the one the store remembers")
    p.add_argument("--label", help="class name of IMAGE...")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders")
    p.add_argument("--folder", help="register one class per subfolder of this folder")
    p.add_argument("--mode", choices=MODES, help="new store only: prototype (class means) or "
                   "instance (every shot); default from the model's head")
    p.add_argument("--index", choices=list(KIND_OPTIONS), help="new store only (default flat)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("query", help="nearest classes of images, from a store")
    p.add_argument("--store", required=True, help="store folder")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    p.add_argument("--k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--checkpoint", help="override the checkpoint the store remembers")
    p.add_argument("--reject-distance", type=float,
                   help="answer 'unknown' beyond this distance (default: the store's)")
    p.add_argument("--mmap", action="store_true", help="map the store from its files instead "
                   "of reading it into memory (for stores larger than memory)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("store", help="inspect or edit a store: info, remove, rename, index, "
                       "normalize")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("info", help="size, model, index and classes of a store")
    a.add_argument("store")
    a.add_argument("--show", type=int, default=20, help="list this many classes (default 20)")
    a = actions.add_parser("remove", help="remove classes")
    a.add_argument("store")
    a.add_argument("labels", nargs="+", metavar="LABEL")
    a = actions.add_parser("rename", help="rename a class")
    a.add_argument("store")
    a.add_argument("old")
    a.add_argument("new")
    a = actions.add_parser("index", help="rebuild the store with another index kind")
    a.add_argument("store")
    a.add_argument("kind", choices=list(KIND_OPTIONS))
    a.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="index option, e.g. nprobe=32 (repeatable)")
    a = actions.add_parser("normalize", help="put labels in NFC; for a store written before "
                           "that rule whose labels collide in NFC, merge or rename them")
    a.add_argument("store")
    a.add_argument("--collisions", choices=["merge", "rename"], required=True,
                   help="merge: pool each group of colliding classes into one; rename: keep "
                   "them apart as 'label (2)', ...")

    p = sub.add_parser("serve", help="serve a store over HTTP (register, query, the web page)")
    p.add_argument("--store", required=True, help="store folder (created if missing, when "
                   "--checkpoint is given); the server owns it while it runs")
    p.add_argument("--checkpoint", help="model checkpoint; needed to create a store, "
                   "otherwise the one the store remembers")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", help="file whose first line is the token that writes "
                   "need (Authorization: Bearer <token>)")
    p.add_argument("--token-for-reads", action="store_true",
                   help="reads need the token too (/health never does)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable)")
    p.add_argument("--max-batch", type=int, default=64,
                   help="most images per embed call of concurrent queries (default 64)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long a query waits for others to join its batch (default 2)")
    p.add_argument("--fold-entries", type=int, default=1000,
                   help="fold the journal into the snapshot after this many changes")
    p.add_argument("--fold-seconds", type=float, default=60.0,
                   help="... or when its oldest change is this old (default 60)")
    p.add_argument("--max-upload-mb", type=float, default=32.0,
                   help="largest request body (default 32)")
    p.add_argument("--max-image-pixels", type=int, default=16_000_000,
                   help="largest image, width x height (default 16000000)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level; info logs every request (default info)")
    return parser


COMMANDS = {"backbones": cmd_backbones, "train": cmd_train, "eval": cmd_eval,
            "register": cmd_register, "query": cmd_query, "store": cmd_store,
            "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # Python's exit flush would raise again: point stdout at /dev/null first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ConfigError, ValueError, OSError, KeyError) as exc:
        print(f"fewshot-metric {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
