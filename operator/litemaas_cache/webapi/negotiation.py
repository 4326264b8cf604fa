"""Content negotiation of result documents: which stored encoding a client gets, read from its Accept-Encoding,
and the response that serves that encoding's bytes as they are."""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from ..codec import Body
from ..vocabulary import ContentEncoding

PREFERENCE: tuple[ContentEncoding, ...] = ("zstd", "gzip")
"""Best first: zstd is smaller and faster to decode; gzip is what every client accepts."""


@functools.lru_cache(maxsize=256)
def accepted(header: str | None) -> ContentEncoding | None:
    """The best stored encoding the client accepts (RFC 9110 Accept-Encoding: names with optional q-values, `*`
    for any other, q=0 for a refusal); None without the header or when it accepts neither: identity JSON.
    Remembered per header: clients send one of a few."""
    if not header:
        return None
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if name:
            weights[name.lower()] = weight
    wildcard = weights.get("*", 0.0)
    scored = [(weights.get(encoding, wildcard), encoding) for encoding in PREFERENCE]
    best = max(scored, key=lambda scored_encoding: scored_encoding[0])  # the first of the best: PREFERENCE's order
    return best[1] if best[0] > 0 else None


async def encoded_response(request: web.Request, body: Body, headers: dict[str, str]) -> web.Response:
    """The document in the encoding the client accepts best, as stored (compressed off the event loop only when it
    was not yet: a fresh computation, or an identity client)."""
    encoding = accepted(request.headers.get("Accept-Encoding"))
    headers = {**headers, "Vary": "Accept-Encoding"}
    make = body.json if encoding is None else functools.partial(body.encoded, encoding)
    data = make() if body.has(encoding) else await asyncio.to_thread(make)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return web.Response(body=data, content_type="application/json", headers=headers)
