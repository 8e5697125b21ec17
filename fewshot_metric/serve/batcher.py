"""QueryBatcher: concurrent queries gathered into one embed + search call.

Each `query(uploads, k)` joins a queue and awaits its future. One worker task takes what is
waiting, up to `max_batch` images (a request is never split; one larger than that goes alone),
waiting up to `max_wait` seconds after the oldest arrived for more, and runs decode + embed +
search in its own thread, never on the event loop: the images of all its requests in one
`Embedder.embed` call, then one `FewShotClassifier.predict` per distinct k. Each request gets
its slice, in its input order, or its own error: an image that fails to decode fails only its
request, and when the joint embed fails, each request is embedded alone to find whose it was.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fewshot_metric.classifier import FewShotClassifier, Prediction
from fewshot_metric.serve.uploads import Upload

Outcome = list[Prediction] | BaseException


@dataclass
class _Job:
    uploads: list[Upload]
    k: int
    future: asyncio.Future
    arrived: float  # loop time
    images: list[Image.Image] | None = None  # decoded, in the worker thread


class QueryBatcher:
    """Answers `query` for `classifier`; `decode(upload)` -> PIL image (may raise, failing that
    request); `on_batch(n_images)` is told of every embed call. `start` and `stop` run on the
    event loop that serves the queries (the app's lifespan)."""

    def __init__(self, classifier: FewShotClassifier, max_batch: int, max_wait: float,
                 decode: Callable[[Upload], Image.Image],
                 on_batch: Callable[[int], None] = lambda n: None):
        self.classifier = classifier
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._decode = decode
        self._on_batch = on_batch
        self._waiting: deque[_Job] = deque()
        self._waiting_images = 0
        self._running: list[_Job] = []  # the batch in the worker thread
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._thread: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="query")
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stops the worker; queries not answered yet fail with RuntimeError."""
        if self._worker is None:
            return
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None
        for job in [*self._running, *self._waiting]:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is stopping; query again "
                                                      "once it is back"))
        self._waiting.clear()
        self._waiting_images = 0
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)

    async def query(self, uploads: list[Upload], k: int) -> list[Prediction]:
        """The k nearest classes of each upload, in input order (as FewShotClassifier.query)."""
        if self._worker is None or self._worker.done():
            raise RuntimeError("the query batcher is not running: serve the app under uvicorn "
                               "or `with TestClient(app)`, which start it")
        loop = asyncio.get_running_loop()
        job = _Job(list(uploads), k, loop.create_future(), loop.time())
        self._waiting.append(job)
        self._waiting_images += len(job.uploads)
        self._arrived.set()
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            while self._waiting_images < self.max_batch:
                left = self._waiting[0].arrived + self.max_wait - loop.time()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            jobs = self._running = self._take()
            outcomes = await loop.run_in_executor(self._thread, self._answer, jobs)
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():  # the request was cancelled meanwhile
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    def _take(self) -> list[_Job]:
        """The waiting jobs that fit in max_batch images (at least one), oldest first."""
        jobs = [self._waiting.popleft()]
        n = len(jobs[0].uploads)
        while self._waiting and n + len(self._waiting[0].uploads) <= self.max_batch:
            jobs.append(self._waiting.popleft())
            n += len(jobs[-1].uploads)
        self._waiting_images -= n
        if self._waiting:  # what did not fit starts the next batch
            self._arrived.set()
        else:
            self._arrived.clear()
        return jobs

    def _answer(self, jobs: list[_Job]) -> list[Outcome]:
        """Decode + embed + search for `jobs` (in the worker thread) -> each job's outcome."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        for i, job in enumerate(jobs):
            try:
                job.images = [self._decode(upload) for upload in job.uploads]
            except Exception as error:
                outcomes[i] = error
        self._predict(jobs, [i for i, outcome in enumerate(outcomes) if outcome is None],
                      outcomes)
        return outcomes

    def _predict(self, jobs: list[_Job], ready: list[int], outcomes: list) -> None:
        """Fills outcomes[i] for the decoded jobs[i], i in `ready`: one embed call for all."""
        if not ready:
            return
        images = [image for i in ready for image in jobs[i].images]
        try:
            embeddings = self.classifier.embedder.embed(images, self.max_batch)
        except Exception as error:
            if len(ready) == 1:
                outcomes[ready[0]] = error
            else:
                for i in ready:
                    self._predict(jobs, [i], outcomes)
            return
        self._on_batch(len(images))
        sizes = [len(jobs[i].uploads) for i in ready]
        starts = np.cumsum([0, *sizes[:-1]])
        for k in dict.fromkeys(jobs[i].k for i in ready):
            group = [(i, int(start), size) for i, start, size in zip(ready, starts, sizes,
                                                                     strict=True)
                     if jobs[i].k == k]
            rows = np.concatenate([np.arange(start, start + size) for _, start, size in group])
            names = [upload.name for i, _, _ in group for upload in jobs[i].uploads]
            try:
                predictions = self.classifier.predict(embeddings[rows], k, names)
            except Exception as error:
                for i, _, _ in group:
                    outcomes[i] = error
                continue
            offset = 0
            for i, _, size in group:
                outcomes[i] = predictions[offset:offset + size]
                offset += size
