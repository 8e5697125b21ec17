"""ServeOptions: the server's knobs (the `fewshot-metric serve` flags), checked once."""

from __future__ import annotations

import math
from dataclasses import dataclass

MB = 1 << 20


@dataclass(frozen=True)
class ServeOptions:
    """`token`: required as `Authorization: Bearer <token>` for writes (and reads with
    `token_for_reads`); None: open. `cors_origins`: origins allowed to call from a browser
    (none: CORS off). `max_batch` images per embed + search call of the query batcher, which
    waits up to `max_wait_ms` for more queries; bodies over `max_upload_mb` and images over
    `max_image_pixels` are refused (413)."""

    token: str | None = None
    token_for_reads: bool = False
    cors_origins: tuple[str, ...] = ()
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_upload_mb: float = 32.0
    max_image_pixels: int = 16_000_000

    def __post_init__(self) -> None:
        if self.token is not None and not (isinstance(self.token, str) and self.token.strip()):
            raise ValueError("the token is empty: put a secret on the first line of the token "
                             "file")
        if self.token_for_reads and self.token is None:
            raise ValueError("--token-for-reads needs a token: give --token-file too")
        _check("max-batch", self.max_batch, isinstance(self.max_batch, int)
               and self.max_batch >= 1, "an int >= 1")
        _check("max-wait-ms", self.max_wait_ms, _is_number(self.max_wait_ms)
               and self.max_wait_ms >= 0, "a number >= 0")
        _check("max-upload-mb", self.max_upload_mb, _is_number(self.max_upload_mb)
               and self.max_upload_mb > 0, "a number > 0")
        _check("max-image-pixels", self.max_image_pixels, isinstance(self.max_image_pixels, int)
               and self.max_image_pixels >= 1, "an int >= 1")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _check(flag: str, value: object, ok: bool, what: str) -> None:
    if isinstance(value, bool) or not ok:
        raise ValueError(f"--{flag} must be {what}, got {value!r}")
