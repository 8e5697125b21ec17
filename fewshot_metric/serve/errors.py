"""Errors over HTTP: exception type <-> (status code, kind), and the JSON error body.

Every error response is `{"error": kind, "detail": message}`, where the message is the one the
Python API gives for the same input (`str(exception)`). `ERRORS` is read both ways: the app
answers with the first entry whose type the exception is an instance of, and
`fewshot_metric.client.Client` raises the type of the kind it gets back. FastAPI's request
validation (422, kind "invalid_request") and starlette's HTTP errors (unknown route, bad
multipart: kind from the status phrase, e.g. "not_found") take the same body shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from fewshot_metric.serve.responses import AsciiJSONResponse
from fewshot_metric.store import (
    ClassExistsError,
    IncompatibleEmbedderError,
    ReadOnlyStoreError,
    UnknownClassError,
)

log = logging.getLogger("fewshot_metric.serve")


class TokenError(PermissionError):
    """A write (or, with --token-for-reads, a read) without the right bearer token."""


class PayloadTooLargeError(OSError):
    """A request body over --max-upload-mb, or an image over --max-image-pixels."""


class UnsupportedMediaError(OSError):
    """A request body of a content type the route does not take."""


class BadImageError(OSError):
    """An uploaded file that is not a decodable image."""


class StorageFullError(OSError):
    """A change the store could not write durably because its disk is full."""


ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (TokenError, 401, "unauthorized"),
    (UnknownClassError, 404, "unknown_class"),
    (ClassExistsError, 409, "class_exists"),
    (ReadOnlyStoreError, 409, "read_only_store"),
    (IncompatibleEmbedderError, 400, "incompatible_embedder"),
    (ValueError, 400, "bad_value"),
    (PayloadTooLargeError, 413, "too_large"),
    (UnsupportedMediaError, 415, "unsupported_media_type"),
    (BadImageError, 415, "bad_image"),
    (StorageFullError, 507, "storage_full"),
    # the client closed the connection before its request was read (a load tester stopping,
    # a browser tab closed): nobody reads the answer, and it is not the server's error
    (ClientDisconnect, 499, "client_disconnected"),
    (OSError, 500, "io_error"),
)


def describe(exc: BaseException) -> tuple[int, str, str]:
    """exception -> (status code, kind, detail)."""
    if isinstance(exc, HTTPException):
        return exc.status_code, _kind_of_status(exc.status_code), str(exc.detail)
    if isinstance(exc, RequestValidationError):
        return 422, "invalid_request", _validation_detail(exc)
    for error_type, status, kind in ERRORS:
        if isinstance(exc, error_type):
            return status, kind, str(exc)
    return 500, "internal", f"{type(exc).__name__}: {exc}"


def install_handlers(app: FastAPI, on_error: Callable[[Request, str], None]) -> None:
    """Answers every exception a route raises with its error body; `on_error(request,
    kind)` is told of each (the metrics count them)."""

    async def handle(request: Request, exc: Exception) -> AsciiJSONResponse:
        status, kind, detail = describe(exc)
        if status >= 500:
            log.error("%s %s answered %d %s", request.method, request.url.path, status, kind,
                      exc_info=exc)
        if isinstance(exc, HTTPException) and detail == HTTPStatus(status).phrase:
            detail = (f"{request.method} {request.url.path}: {detail}; see /docs for this "
                      f"server's routes")  # routing's own errors: say which request
        on_error(request, kind)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return AsciiJSONResponse({"error": kind, "detail": detail}, status, headers)

    for error_type in (HTTPException, RequestValidationError, Exception,
                       *(entry[0] for entry in ERRORS)):
        app.add_exception_handler(error_type, handle)


def _kind_of_status(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def _validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: where, what."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return ("the request does not have the shape this route takes (see /docs): "
            + "; ".join(problems))
