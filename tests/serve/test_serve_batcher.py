"""The query batcher: concurrent queries gathered into few embed calls, each request answered
with its own images' predictions, errors kept to the request that caused them."""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from pathlib import Path

import httpx
import pytest
from serve_helpers import running_server, shots

from fewshot_metric import FewShotClassifier
from fewshot_metric.serve import ServeOptions, create_app
from fewshot_metric.serve.batcher import QueryBatcher
from fewshot_metric.serve.errors import BadImageError
from fewshot_metric.serve.uploads import Upload, decode_image


@pytest.fixture
def ready(classifier: FewShotClassifier, glyph_images: Path, names: list[str]):
    """The classifier with 3 shots of each class, and 16 other images (4 of each class)."""
    for name in names:
        classifier.register(name, shots(glyph_images, name, slice(0, 3)))
    return classifier, [p for name in names for p in shots(glyph_images, name, slice(2, 6))]


def _count_embeds(classifier: FewShotClassifier, monkeypatch) -> list[int]:
    """The number of images of each embed call from now on."""
    calls: list[int] = []
    embed = classifier.embedder.embed

    def counted(images, *args, **kwargs):
        calls.append(len(images))
        return embed(images, *args, **kwargs)

    monkeypatch.setattr(classifier.embedder, "embed", counted)
    return calls


def _uploads(paths: list[Path]) -> list[Upload]:
    return [Upload(str(p), p.read_bytes()) for p in paths]


def _run(classifier: FewShotClassifier, requests: list[tuple[list[Upload], int]],
         max_batch: int = 64, max_wait: float = 0.5) -> list:
    """Sends every request at once (all queued before the worker looks) -> each one's
    predictions, or the exception it raised."""

    async def main() -> list:
        batcher = QueryBatcher(classifier, max_batch, max_wait,
                               partial(decode_image, max_pixels=10**6))
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.query(uploads, k) for uploads, k in requests),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def _same(got, expected) -> None:
    """Same images, labels and rejections; scores and distances up to float rounding (a
    batch of another size may round differently)."""
    assert [(p.image, p.labels, p.rejected) for p in got] == [
        (p.image, p.labels, p.rejected) for p in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.distances == pytest.approx(b.distances, rel=1e-5, abs=1e-6)
        assert a.scores == pytest.approx(b.scores, rel=1e-5, abs=1e-6)


def test_sixteen_concurrent_queries_are_one_embed_call(ready, monkeypatch) -> None:
    classifier, probes = ready
    expected = classifier.query(probes, k=2)  # the same 16 images in one batch
    calls = _count_embeds(classifier, monkeypatch)
    answers = _run(classifier, [([upload], 2) for upload in _uploads(probes)])
    assert calls == [16]
    assert answers == [[p] for p in expected]  # each request its own image's answer, exactly


def test_max_batch_caps_the_images_per_call_and_never_splits_a_request(ready, monkeypatch
                                                                       ) -> None:
    classifier, probes = ready
    expected = classifier.query(probes, k=3)
    calls = _count_embeds(classifier, monkeypatch)
    answers = _run(classifier, [([upload], 3) for upload in _uploads(probes)], max_batch=4)
    assert calls == [4, 4, 4, 4]
    for got, want in zip(answers, expected, strict=True):
        _same(got, [want])
    calls.clear()
    uploads = _uploads(probes)
    # 3 + 3 > 4: one request a call; 6 > 4 alone, whole
    answers = _run(classifier, [(uploads[0:3], 1), (uploads[3:6], 1), (uploads[6:12], 1)],
                   max_batch=4)
    assert calls == [3, 3, 6]
    _same([p for answer in answers for p in answer], classifier.query(probes[:12]))


def test_requests_with_different_k_share_the_embed_call(ready, monkeypatch) -> None:
    classifier, probes = ready
    uploads = _uploads(probes)
    calls = _count_embeds(classifier, monkeypatch)
    answers = _run(classifier, [([upload], 1 + i % 3) for i, upload in enumerate(uploads)])
    assert calls == [16]
    monkeypatch.undo()
    for i, (answer, probe) in enumerate(zip(answers, probes, strict=True)):
        assert len(answer[0].labels) == 1 + i % 3
        _same(answer, classifier.query([probe], k=1 + i % 3))


def test_a_bad_image_fails_only_its_request(ready, monkeypatch) -> None:
    classifier, probes = ready
    calls = _count_embeds(classifier, monkeypatch)
    good = _uploads(probes[:2])
    answers = _run(classifier, [([good[0]], 1), ([Upload("junk.png", b"junk")], 1),
                                ([good[1]], 1)])
    assert calls == [2]
    assert isinstance(answers[1], BadImageError) and "junk.png" in str(answers[1])
    _same(answers[0] + answers[2], classifier.query(probes[:2]))


def test_stopping_fails_waiting_queries_and_a_stopped_batcher_refuses(ready) -> None:
    classifier, probes = ready

    async def main() -> None:
        batcher = QueryBatcher(classifier, 64, 30.0, partial(decode_image, max_pixels=10**6))
        with pytest.raises(RuntimeError, match="not running"):
            await batcher.query(_uploads(probes[:1]), 1)
        batcher.start()
        waiting = asyncio.ensure_future(batcher.query(_uploads(probes[:1]), 1))
        await asyncio.sleep(0.05)  # queued; the worker waits up to 30 s for more
        await batcher.stop()
        with pytest.raises(RuntimeError, match="stopping"):
            await waiting

    asyncio.run(main())


def test_concurrent_http_clients_are_gathered(ready, monkeypatch) -> None:
    classifier, probes = ready
    calls = _count_embeds(classifier, monkeypatch)
    app = create_app(classifier, ServeOptions(max_wait_ms=500))
    answers: dict[int, dict] = {}
    with running_server(app) as url:
        start = threading.Barrier(len(probes))

        def ask(i: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                start.wait(timeout=30)
                answers[i] = http.post("/query", data={"k": "2"}, files=[
                    ("images", (str(probes[i]), probes[i].read_bytes()))]).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(probes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert len(answers) == 16 and sum(calls) == 16 and len(calls) < 16
    monkeypatch.undo()
    for i, probe in enumerate(probes):
        [expected] = classifier.query([probe], k=2)
        [got] = answers[i]["predictions"]
        assert (got["image"], got["labels"]) == (str(probe), list(expected.labels))
        assert got["distances"] == pytest.approx(expected.distances, rel=1e-5, abs=1e-6)
