"""Request ids: each request gets the X-Request-Id its caller sent (when it is a plain token), or a new one; it is
returned in the answer's X-Request-Id and written into every JSON log line logged while serving the request."""

from __future__ import annotations

import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from ..logs import REQUEST_ID

REQUEST_ID_HEADER = "X-Request-Id"
# What a caller's id may be: enough for UUIDs and tracing ids, nothing that could forge or break a log line.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID = web.RequestKey("request_id", str)


def install_request_ids(app: web.Application) -> None:
    """Give every request of `app` an id (call before any other middleware is added: it must wrap them all)."""
    app.middlewares.insert(0, _request_id_middleware)
    app.on_response_prepare.append(_request_id_header)


@web.middleware
async def _request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _ACCEPTED.fullmatch(given) else os.urandom(16).hex()
    request[_REQUEST_ID] = request_id
    token = REQUEST_ID.set(request_id)
    try:
        return await handler(request)
    finally:
        REQUEST_ID.reset(token)


async def _request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, streamed ones and aiohttp's own errors included (set as the headers are sent)."""
    request_id = request.get(_REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
