"""Prometheus metrics of one app, in a registry of its own (prometheus_client).

Requests by route, method and status; error responses by route and kind (see `errors`);
request latency by route and method; images per embed call of the query batcher; and, read at
each scrape, the store's classes and shots and the journal's pending entries. The route label
is the route's path template ("other" for paths no route matches), so it stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def route_of(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", None) or "other"


class Metrics:
    """The app's metrics; `classes`, `shots` and `pending` are read at each scrape."""

    def __init__(self, classes: Callable[[], float], shots: Callable[[], float],
                 pending: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter("fewshot_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.errors = Counter("fewshot_http_errors", "error responses, by kind",
                              ["route", "kind"], registry=self.registry)
        self.latency = Histogram("fewshot_http_request_seconds", "time to answer a request",
                                 ["route", "method"], registry=self.registry)
        self.batch_images = Histogram("fewshot_query_batch_images",
                                      "images per embed + search call of the query batcher",
                                      buckets=BATCH_BUCKETS, registry=self.registry)
        for name, help_text, read in (
                ("fewshot_store_classes", "classes in the store", classes),
                ("fewshot_store_shots", "shots added to the store's classes", shots),
                ("fewshot_journal_pending", "journal entries not yet folded into the snapshot",
                 pending)):
            Gauge(name, help_text, registry=self.registry).set_function(read)

    def count_error(self, request: Request, kind: str) -> None:
        self.errors.labels(route_of(request.scope), kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts and times every HTTP request into `metrics`."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route, method = route_of(scope), scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - start)
