"""Error answers in LiteMaaS's shape, `{"error": message, "code": CODE, "details": {...}}`, for every status."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class ApiError(Exception):
    """An HTTP error answer: raised anywhere below a route, rendered once by the error middleware."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return web.Response(
            body=orjson.dumps(body), status=self.status, content_type="application/json", headers=self.headers
        )
