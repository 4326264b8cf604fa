"""cashews, the generic Python cache one would reach for: `@cache(ttl=..., tags=[...])` around the one SQL pass.

The decorated function is the no-cache peer's one-pass computation; its key is the exact request (cashews formats
the key template from the arguments) under this run's prefix, its value pickled by cashews into the same Redis.
Every result carries one tag, `<prefix>analytics`: a tag template is formatted from the call's arguments, which name
a range, not the days in it, so a changed day can only be invalidated by deleting every tagged result
(`cache.delete_tags`). Defaults otherwise: `protected=True` shares a computation in flight among the callers of one
process ("thunder protection"), `lock=False` takes no lock across processes, so concurrent misses in different
processes each compute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from cashews import Cache

from .compute import Document, Request
from .nocache import NoCache, open_one_pass
from .peer import PeerConfig, Reply


class Cashews:
    def __init__(self, config: PeerConfig, compute: NoCache) -> None:
        self._tag = f"{config.prefix}analytics"
        self._compute = compute
        self.cache = Cache()
        self.cache.setup(config.redis_url)
        self.cache.register_tag(self._tag, f"{config.prefix}analytics:{{identity}}")
        decorate = self.cache(ttl=config.ttl, key=f"{config.prefix}analytics:{{identity}}", tags=[self._tag])
        self._cached: Callable[[str, Request], Awaitable[Document]] = decorate(self._document)

    @property
    def computations(self) -> int:
        return self._compute.computations

    async def _document(self, identity: str, request: Request) -> Document:
        return await self._compute.compute(request)

    async def answer(self, request: Request) -> Reply:
        before = self._compute.computations
        document = await self._cached(request.identity(), request)
        return Reply(document, hit=self._compute.computations == before)

    async def invalidate(self, day: dt.date) -> None:
        await self.cache.delete_tags(self._tag)


@asynccontextmanager
async def open_peer(config: PeerConfig) -> AsyncIterator[Cashews]:
    async with open_one_pass(config) as compute:
        peer = Cashews(config, compute)
        try:
            yield peer
        finally:
            await peer.cache.close()
