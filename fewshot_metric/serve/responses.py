"""The app's JSON response: ASCII-escaped, so that any label the store holds (even one with a
lone surrogate, which UTF-8 cannot encode) reaches the client intact."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


class AsciiJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")
