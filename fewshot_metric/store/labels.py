"""The label identity rule: a class label is a visible str, compared in Unicode form NFC.

"caf\u00e9" (e + acute as one code point, what most keyboards type) and "cafe\u0301" (e, then
a combining acute: macOS file names, some input methods) print the same, so they are one
class: every label that enters a store (add, remove, rename, count, `in`, labels read from
disk) is normalised with `unicodedata.normalize("NFC", label)`. Stores written before the
rule may hold two labels that are one under it; `resolve_collisions` refuses them with a
message naming both, or merges or renames them when asked (`fewshot-metric store normalize`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

from fewshot_metric.store.persistence import LABELS_FILE, RESTORE, SavedStore, StoreFormatError

COLLISION_CHOICES = ("refuse", "merge", "rename")


class LabelCollisionError(StoreFormatError):
    """A saved store holds labels that differ only in Unicode normalisation."""


def check_label(label: object, where: str) -> str:
    """A class label: a str that is not empty or whitespace-only and is text (no lone
    surrogates, which UTF-8 cannot hold), returned in NFC."""
    if not isinstance(label, str):
        raise ValueError(f"{where} must be a str class name, got {type(label).__name__} "
                         f"{label!r}")
    if not label.strip():
        raise ValueError(f"{where} = {label!r} is empty or whitespace-only; give every class a "
                         f"visible name")
    try:
        label.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(label[error.start])
        raise ValueError(f"{where} = {label!r} holds the lone surrogate U+{code:04X}, which is "
                         f"not text (a name decoded with errors='surrogateescape'?); decode it "
                         f"as UTF-8, or replace that character") from None
    return unicodedata.normalize("NFC", label)


def collision_groups(labels: Sequence[str]) -> dict[str, list[int]]:
    """{label: its rows [>= 2]} for the labels [C] (in NFC) that occur more than once; {}
    at the cost of one set when none does (the case of every store written in NFC)."""
    if len(set(labels)) == len(labels):
        return {}
    rows: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        rows.setdefault(label, []).append(row)
    return {label: group for label, group in rows.items() if len(group) > 1}


def _checked(saved: SavedStore) -> list[str]:
    """saved.labels [C] as `check_label` returns them (in NFC); a StoreFormatError names
    the first that is not a label."""
    checked = []
    for i, label in enumerate(saved.labels):
        try:
            checked.append(check_label(label, f"labels[{i}]"))
        except ValueError as error:
            raise StoreFormatError(f"{saved.source}/{LABELS_FILE}: {error}") from None
    return checked


def resolve_collisions(saved: SavedStore, how: str, mmap: bool) -> bool:
    """Puts saved.labels [C] in NFC, in place. Labels that collide there: `how` = "refuse"
    raises LabelCollisionError naming them; "merge" pools each group into its first class
    (the means weighted by the shot counts, the shots of instance mode moved; ids of the
    others dropped); "rename" keeps them apart as "label (2)", "label (3)", ... Returns
    whether classes were merged (the caller then rebuilds the index from the classes)."""
    if how not in COLLISION_CHOICES:
        raise ValueError(f"label_collisions must be one of {list(COLLISION_CHOICES)}, got "
                         f"{how!r}")
    normalized = _checked(saved)
    if len(set(saved.labels)) != len(saved.labels):  # no version ever wrote this
        raise StoreFormatError(f"{saved.source}/{LABELS_FILE}: two classes share one label; "
                               f"{RESTORE}")
    # labels saved in NFC (every store since the rule) cannot collide: no second set
    groups = {} if normalized == saved.labels else collision_groups(normalized)
    if groups and (how == "refuse" or mmap):
        raise LabelCollisionError(_collision_message(saved, groups))
    saved.labels = normalized
    if how == "rename":
        taken = set(saved.labels)
        for label, rows in groups.items():
            suffix = 2
            for row in rows[1:]:
                while f"{label} ({suffix})" in taken:
                    suffix += 1
                saved.labels[row] = f"{label} ({suffix})"
                taken.add(saved.labels[row])
        return False
    if groups:
        _merge(saved, list(groups.values()))
    return bool(groups)


def _merge(saved: SavedStore, groups: list[list[int]]) -> None:
    """Pools each group of class rows into its first row (see resolve_collisions)."""
    counts = np.array(saved.counts, np.int64)
    drop = np.zeros(len(counts), bool)
    means = np.array(saved.arrays["means"]) if saved.mode == "prototype" else None
    owners = np.array(saved.arrays["vector_classes"]) if means is None else None
    for rows in groups:
        first, rest = rows[0], rows[1:]
        if means is not None:
            weights = counts[rows].astype(np.float64)[:, None]
            means[first] = (means[rows].astype(np.float64) * weights).sum(0) / weights.sum()
        else:
            owners[np.isin(owners, saved.class_ids[rest])] = saved.class_ids[first]
        counts[first] = counts[rows].sum()
        drop[rest] = True
    keep = ~drop
    saved.labels = [label for label, kept in zip(saved.labels, keep, strict=True) if kept]
    saved.class_ids, saved.counts = np.array(saved.class_ids)[keep], counts[keep]
    if means is not None:
        saved.arrays["means"] = means[keep]
    else:
        saved.arrays["vector_classes"] = owners


def _collision_message(saved: SavedStore, groups: dict[str, list[int]]) -> str:
    described = "; ".join(
        " and ".join(f"{ascii(saved.labels[row])} ({int(saved.counts[row])} shots)"
                     for row in rows) + f", all {label!r}"
        for label, rows in groups.items())
    return (f"{saved.source}/{LABELS_FILE} holds labels that differ only in Unicode "
            f"normalisation, written before labels were compared in NFC: {described}. "
            f"Nothing was changed: merge each group into one class with `fewshot-metric store "
            f"normalize {saved.source} --collisions merge`, or keep them apart under new names "
            f"('label (2)', ...) with `--collisions rename` (in Python: PrototypeStore.load(path, "
            f"label_collisions='merge' or 'rename'), without mmap, then save)")
