"""Images in requests: the body size limit, the content types a route takes, multipart files
or base64 in JSON -> named bytes, and decoding under the pixel limit.

A route's body is one of two pydantic models: a JSON model (images as base64 strings) and a
form model (images as multipart files, `Upload`s here). `read_body` picks by Content-Type,
validates (422 in the app's error shape) and refuses other types (415). Each image keeps a
name for errors: its part's file name, or "image i" for the i-th base64 string.
"""

from __future__ import annotations

import base64
import binascii
import io
import typing
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, InstanceOf, ValidationError, WithJsonSchema
from starlette.datastructures import Headers, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fewshot_metric.data.base import open_image
from fewshot_metric.serve.errors import BadImageError, PayloadTooLargeError, UnsupportedMediaError
from fewshot_metric.serve.options import MB

JSON = "application/json"
MULTIPART = "multipart/form-data"
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Upload:
    """One image as sent: `name` names it in errors and predictions, `data` its file bytes."""

    name: str
    data: bytes


# an image file part of a multipart form, documented in /docs as a file
FilePart = Annotated[InstanceOf[Upload], WithJsonSchema({"type": "string", "format": "binary"})]


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` (by its Content-Length, or counted as
    it streams in) raises PayloadTooLargeError where the route reads it, before more is read."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise self._too_large()
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._too_large()
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"the request body is larger than this server's upload limit of {self.max_bytes} "
            f"bytes (--max-upload-mb {self.max_bytes / MB:.3g}): send fewer or smaller images "
            f"per request")


async def read_body(request: Request, json_model: type[Model] | None,
                    form_model: type[Model] | None = None) -> Model:
    """The request body as `json_model` (application/json) or `form_model`
    (multipart/form-data; file parts become `Upload`s); other content types: 415."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    try:
        if kind == JSON and json_model is not None:
            return json_model.model_validate_json(await request.body())
        if kind == MULTIPART and form_model is not None:
            async with request.form() as form:
                fields = {name: [await _part(value, i) for i, value in
                                 enumerate(form.getlist(name))]
                          for name in form_model.model_fields if name in form}
            return form_model.model_validate({
                name: values if _is_list(form_model, name) else values[-1]
                for name, values in fields.items()})
    except ValidationError as error:
        raise RequestValidationError([{**problem, "loc": ("body", *problem["loc"])}
                                      for problem in error.errors(include_url=False)]) from None
    takes = " or ".join(name for name, model in ((MULTIPART, form_model), (JSON, json_model))
                        if model is not None)
    raise UnsupportedMediaError(f"{request.method} {request.url.path} takes {takes}, got "
                                f"{kind or 'no Content-Type'}; send the body as {takes} with "
                                f"that Content-Type header")


async def _part(value: str | UploadFile, i: int) -> str | Upload:
    if isinstance(value, str):
        return value
    return Upload(value.filename or f"image {i}", await value.read())


def _is_list(model: type[BaseModel], name: str) -> bool:
    return typing.get_origin(model.model_fields[name].annotation) is list


def request_body_docs(json_model: type[BaseModel] | None,
                      form_model: type[BaseModel] | None = None) -> dict[str, Any]:
    """OpenAPI `requestBody` for a route that reads its body with `read_body`."""
    content = {kind: {"schema": model.model_json_schema()}
               for kind, model in ((JSON, json_model), (MULTIPART, form_model))
               if model is not None}
    return {"requestBody": {"required": True, "content": content}}


def as_uploads(images: list[str] | list[Upload], prefix: str = "") -> list[Upload]:
    """A body's images -> Uploads: multipart files as they are, base64 strings decoded and
    named f"{prefix}image {i}"; a bad base64 string is a ValueError (400) that names it."""
    uploads = []
    for i, image in enumerate(images):
        if isinstance(image, Upload):
            uploads.append(image)
            continue
        name = f"{prefix}image {i}"
        try:
            uploads.append(Upload(name, base64.b64decode(image, validate=True)))
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"{name} is not valid base64 ({error}); send each image file's "
                             f"bytes base64-encoded (standard alphabet, with padding)") from None
    return uploads


def decode_image(upload: Upload, max_pixels: int) -> Image.Image:
    """Decodes an uploaded image, as `open_image` does a file; one over `max_pixels` pixels is
    refused (413) from its header, before any pixel is decoded; undecodable bytes: 415."""
    try:
        with Image.open(io.BytesIO(upload.data)) as probe:
            width, height = probe.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLargeError(f"image {upload.name} is too large to decode safely "
                                   f"({error}); send a smaller image") from None
    except (OSError, ValueError, EOFError):  # not an image: open_image says why, below
        width = height = 0
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"image {upload.name} has {width}x{height} = {width * height} pixels, more than "
            f"this server's limit of {max_pixels} (--max-image-pixels); it may be a "
            f"decompression bomb: send a smaller image")
    try:
        return open_image(upload.data, upload.name)
    except OSError as error:
        raise BadImageError(str(error)) from None
