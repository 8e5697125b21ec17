"""Thread stress for a shared FewShotClassifier: readers query while a writer registers and
removes classes. A plain function, so that `benchmarks/reliability.py` can run it longer."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fewshot_metric import FewShotClassifier
from fewshot_metric.embedder import ImageInput


@dataclass
class StressReport:
    """queries: query calls answered; changes: registrations and removals done; errors: one
    line per exception, torn read or missing class at the end."""

    queries: int = 0
    changes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def operations(self) -> int:
        return self.queries + self.changes


def class_distances(shots: np.ndarray, probes: np.ndarray, mode: str, metric: str
                    ) -> np.ndarray:
    """The distance from each of probes [Q, D] to a class with shots [n, D], as the store
    answers it: to the mean of the shots ("prototype" mode) or to the nearest shot
    ("instance"); squared L2 or 1 - cos. float64 [Q]."""
    shots, probes = shots.astype(np.float64), probes.astype(np.float64)
    if metric == "cosine":
        shots = shots / np.linalg.norm(shots, axis=1, keepdims=True)
        probes = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    vectors = shots.mean(0, keepdims=True) if mode == "prototype" else shots
    if metric == "cosine":
        distances = 1.0 - probes @ (vectors / np.linalg.norm(vectors, axis=1,
                                                             keepdims=True)).T
    else:
        distances = ((probes[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    return distances.min(1)


def thread_stress(classifier: FewShotClassifier, shots: dict[str, Sequence[ImageInput]],
                  seconds: float, readers: int = 2, seed: int = 0) -> StressReport:
    """For `seconds`, one writer thread registers (all its images in one call) or removes a
    random class of `shots` other than the first, which stays registered throughout, while
    `readers` threads query every image of `shots` for all its classes. Every answered
    distance must be the one to the class with all its shots (`class_distances`): a class
    seen with some of its shots, or none, is a torn read. At the end the writer registers the
    classes it left out, and every class must be there with all its shots.

    `classifier` must start empty and not reject (reject_distance None). Raises ValueError if
    the shots are too alike for a class missing one of them to be told apart."""
    if len(classifier) or classifier.reject_distance is not None:
        raise ValueError("thread_stress needs an empty classifier without a reject_distance")
    store = classifier.store
    labels = list(shots)
    images = [image for label in labels for image in shots[label]]
    probes = classifier.embedder.embed(images)
    embedded = {label: classifier.embedder.embed(shots[label]) for label in labels}
    expected = {label: class_distances(emb, probes, store.mode, store.metric)
                for label, emb in embedded.items()}
    tolerance = 1e-4 * (1.0 + max(float(d.max()) for d in expected.values()))
    for label, emb in embedded.items():
        for left_out in range(len(emb) if len(emb) > 1 else 0):  # one shot: whole or absent
            partial = class_distances(np.delete(emb, left_out, 0), probes, store.mode,
                                      store.metric)
            if np.abs(partial - expected[label]).max() <= 10 * tolerance:
                raise ValueError(f"class {label!r} without its shot {left_out} answers like "
                                 f"the whole class; give the classes more distinct shots")

    report = StressReport()
    counts = [0] * (readers + 1)
    done = threading.Event()

    def read(slot: int) -> None:
        while not done.is_set():
            try:
                predictions = classifier.query(images, k=len(labels))
            except Exception as error:  # noqa: BLE001 - reported
                report.errors.append(f"query: {type(error).__name__}: {error}")
                continue
            counts[slot] += 1
            torn = [(q, label, distance) for q, prediction in enumerate(predictions)
                    for label, distance in zip(prediction.labels, prediction.distances,
                                               strict=True)
                    if abs(distance - expected[label][q]) > tolerance]
            if torn:
                q, label, distance = torn[0]
                report.errors.append(f"torn read: image {q} is at {distance:.6g} from class "
                                     f"{label!r}, whose complete shots are at "
                                     f"{expected[label][q]:.6g}")

    def write() -> None:
        rng = random.Random(seed)
        registered = {labels[0]}
        deadline = time.monotonic() + seconds
        try:
            classifier.register(labels[0], shots[labels[0]])
            while time.monotonic() < deadline:
                label = rng.choice(labels[1:])
                if label in registered:
                    classifier.remove(label)
                    registered.remove(label)
                else:
                    classifier.register(label, shots[label])
                    registered.add(label)
                counts[readers] += 1
            for label in labels:
                if label not in registered:
                    classifier.register(label, shots[label])
        except Exception as error:  # noqa: BLE001 - reported
            report.errors.append(f"register/remove: {type(error).__name__}: {error}")
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not len(classifier) and writer.is_alive():  # readers start once a class exists
        time.sleep(0.001)
    threads = [threading.Thread(target=read, args=(slot,)) for slot in range(readers)]
    for thread in threads:
        thread.start()
    for thread in (writer, *threads):
        thread.join()
    report.queries, report.changes = sum(counts[:readers]), counts[readers]
    wanted = {label: len(shots[label]) for label in labels}
    if classifier.store.counts != wanted:
        report.errors.append(f"at the end the classes are {classifier.store.counts}, not "
                             f"{wanted}")
    return report
