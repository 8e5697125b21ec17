"""The HTTP routes: read the request, call the Service (in a worker thread, or through the
query batcher), shape the answer. Labels travel in query strings and bodies only, never in
URL paths. See `fewshot_metric.serve` for the table of routes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fewshot_metric.classifier import Prediction
from fewshot_metric.serve.auth import require_read_token, require_write_token
from fewshot_metric.serve.service import Service
from fewshot_metric.serve.uploads import FilePart, Upload, as_uploads, read_body, request_body_docs

STATIC = Path(__file__).with_name("static")


class ErrorBody(BaseModel):
    error: str = Field(description="the kind of error, e.g. unknown_class, bad_image")
    detail: str = Field(description="what was wrong (the file, label or key) and what to do")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in (
        (400, "a bad value: label, k, embeddings, base64"),
        (401, "missing or wrong bearer token"),
        (413, "body over --max-upload-mb, or an image over --max-image-pixels"),
        (415, "wrong Content-Type, or a file that is not a decodable image"),
        (422, "the request does not have the route's shape"))}
CLASS_ERRORS = {404: {"model": ErrorBody, "description": "no such class"}}


class RegisterJSON(BaseModel):
    label: str = Field(description="the class: new, or existing to add shots to")
    images: list[str] = Field(min_length=1, description="base64 of each image file")


class RegisterForm(BaseModel):
    label: str
    images: list[FilePart] = Field(min_length=1)


class RegisterManyJSON(BaseModel):
    classes: dict[str, list[str]] = Field(min_length=1,
                                          description="label -> base64 of each image file")


class RegisterManyForm(BaseModel):
    labels: list[str] = Field(min_length=1, description="the label of each images part, in "
                                                        "the same order")
    images: list[FilePart] = Field(min_length=1)


class RenameJSON(BaseModel):
    label: str
    new_label: str


class QueryJSON(BaseModel):
    images: list[str] = Field(min_length=1, description="base64 of each image file")
    k: int = Field(1, description="classes per image")


class QueryForm(BaseModel):
    images: list[FilePart] = Field(min_length=1)
    k: int = 1


class EmbeddingsJSON(BaseModel):
    embeddings: list[list[float]] = Field(min_length=1, description="[N, D], as the model "
                                                                    "embeds")
    k: int = 1


def get_service(request: Request) -> Service:
    return request.app.state.service


Served = Annotated[Service, Depends(get_service)]
READS = [Depends(require_read_token)]
WRITES = [Depends(require_write_token)]
router = APIRouter(responses=ERROR_RESPONSES)


def _predictions(predictions: list[Prediction]) -> dict[str, Any]:
    return {"predictions": [{**p.to_dict(), "label": p.label} for p in predictions]}


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/info", dependencies=READS)
def info(service: Served) -> dict[str, Any]:
    """The store and the model it serves."""
    return service.info()


@router.get("/metrics", dependencies=READS, response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/classes", dependencies=READS)
def classes(service: Served, offset: Annotated[int, Query(ge=0)] = 0,
            limit: Annotated[int, Query(ge=0, le=1000)] = 100) -> dict[str, Any]:
    """A page of the classes with their shot counts, in insertion order."""
    return service.page(offset, limit)


@router.get("/class", dependencies=READS, responses=CLASS_ERRORS)
def one_class(service: Served, label: str) -> dict[str, Any]:
    return service.count(label)


@router.delete("/class", dependencies=WRITES, responses=CLASS_ERRORS)
def remove_class(service: Served, label: str) -> dict[str, Any]:
    """Removes the class and its shots."""
    return service.remove(label)


@router.post("/register", dependencies=WRITES, status_code=201,
             openapi_extra=request_body_docs(RegisterJSON, RegisterForm))
async def register(request: Request, response: Response, service: Served) -> dict[str, Any]:
    """Adds shots to a class, new (201) or existing (200): all of them, or none."""
    body = await read_body(request, RegisterJSON, RegisterForm)
    [answer] = await run_in_threadpool(service.register, {body.label: as_uploads(body.images)})
    response.status_code = 201 if answer["created"] else 200
    return answer


@router.post("/register_many", dependencies=WRITES, status_code=201,
             openapi_extra=request_body_docs(RegisterManyJSON, RegisterManyForm))
async def register_many(request: Request, response: Response, service: Served
                        ) -> dict[str, Any]:
    """Adds shots to several classes in one step (201 when one is new): all, or none."""
    body = await read_body(request, RegisterManyJSON, RegisterManyForm)
    answers = await run_in_threadpool(service.register, _shots(body))
    response.status_code = 201 if any(a["created"] for a in answers) else 200
    return {"classes": answers}


def _shots(body: RegisterManyJSON | RegisterManyForm) -> dict[str, list[Upload]]:
    if isinstance(body, RegisterManyJSON):
        return {label: as_uploads(images, f"class {label!r} ")
                for label, images in body.classes.items()}
    if len(body.labels) != len(body.images):
        raise ValueError(f"got {len(body.labels)} labels for {len(body.images)} images; send "
                         f"one labels field per images file, in the same order")
    shots: dict[str, list[Upload]] = {}
    for label, upload in zip(body.labels, body.images, strict=True):
        shots.setdefault(label, []).append(upload)
    return shots


@router.post("/rename", dependencies=WRITES, responses={404: CLASS_ERRORS[404], 409: {
    "model": ErrorBody, "description": "a class new_label exists"}},
             openapi_extra=request_body_docs(RenameJSON))
async def rename(request: Request, service: Served) -> dict[str, Any]:
    body = await read_body(request, RenameJSON)
    return await run_in_threadpool(service.rename, body.label, body.new_label)


@router.post("/query", dependencies=READS,
             openapi_extra=request_body_docs(QueryJSON, QueryForm))
async def query(request: Request, service: Served) -> dict[str, Any]:
    """The k nearest classes of each image, in input order."""
    body = await read_body(request, QueryJSON, QueryForm)
    return _predictions(await service.query(as_uploads(body.images), body.k))


@router.post("/query/embeddings", dependencies=READS,
             openapi_extra=request_body_docs(EmbeddingsJSON))
async def query_embeddings(request: Request, service: Served) -> dict[str, Any]:
    """The k nearest classes of each embedding, in input order."""
    body = await read_body(request, EmbeddingsJSON)
    return _predictions(await run_in_threadpool(service.predict, body.embeddings, body.k))


@router.get("/thumbnail", dependencies=READS, response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def thumbnail(service: Served, label: str) -> Response:
    """The class's 64x64 PNG thumbnail (404 when it has none)."""
    png = service.thumbnail(label)
    if png is None:
        raise HTTPException(404, f"no thumbnail for class {label!r}: only classes registered "
                                 f"through this server have one")
    return Response(png, media_type="image/png")


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")
