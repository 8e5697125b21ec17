"""Bearer tokens: with a token (--token-file), writes need `Authorization: Bearer <token>`,
and reads too with --token-for-reads; /health, /docs and the page never do. Tokens are
compared with `secrets.compare_digest` (constant time)."""

from __future__ import annotations

import secrets

from fastapi import Request

from fewshot_metric.serve.errors import TokenError
from fewshot_metric.serve.options import ServeOptions


def _check(request: Request, what: str) -> None:
    options: ServeOptions = request.app.state.service.options
    if options.token is None or (what == "reads" and not options.token_for_reads):
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise TokenError(f"this server needs a token for {what}: send the header "
                         f"'Authorization: Bearer <token>' with the token from the server's "
                         f"--token-file")
    if not secrets.compare_digest(given.strip().encode(), options.token.encode()):
        raise TokenError("the bearer token is wrong: send the token from the server's "
                         "--token-file (its first line)")


def require_write_token(request: Request) -> None:
    """FastAPI dependency of the routes that change the store."""
    _check(request, "writes")


def require_read_token(request: Request) -> None:
    """FastAPI dependency of the routes that read the store."""
    _check(request, "reads")
