"""What the runner needs of a peer: answer a request, invalidate a day, count its computations, close."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from .compute import Document, Request


@dataclass(frozen=True)
class PeerConfig:
    """Where a peer runs (picklable: each worker process opens its own peer from it)."""

    dsn: str  # the bench dataset's database (LiteLLM's table, LiteMaaS's tables, the project's day cache)
    redis_url: str
    prefix: str  # every Redis key of the peer starts with it (one per peer and run)
    schema: str  # the seed plan's PostgreSQL cache schema (one per run)
    ttl: int = 600  # result TTL of the caching peers: the project's CACHE_TTL_ANALYTICS default


@dataclass(frozen=True)
class Reply:
    document: Document
    hit: bool  # answered from a stored result, without computing the document


class Peer(Protocol):
    @property
    def computations(self) -> int:
        """Documents this process computed (a Redis hit computes none)."""
        ...

    async def answer(self, request: Request) -> Reply: ...

    async def invalidate(self, day: dt.date) -> None:
        """Make the day's changed source rows show in every later answer, the peer's own way."""
        ...


PeerOpener = Callable[[PeerConfig], AbstractAsyncContextManager[Peer]]
