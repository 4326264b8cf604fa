"""The version mirror in Redis: the hash `<prefix>day-versions`, day -> version, mirroring PostgreSQL's
daily_usage.version, which stays the truth.

It is only ever raised (a Lua max-merge), and every change to it also rewrites its generation, a random id: while the
generation reads the same, no day's version has changed. A process keeps the versions it has read under the current
generation (a MirrorSnapshot), and checks a read against the mirror by asking for the generation alone, two small
fields instead of one field a day.

A check holds for LEASE_SECONDS from the moment it was sent: within that lease a read that needs nothing else from
Redis (a result body this process holds) is not checked again. In exchange, whoever raises the mirror to invalidate
days waits out a lease before reporting the invalidation done (RedisStore.raise_versions): any check made before the
raise has expired by then, so once an invalidation is done no process serves what it superseded. Clocks are
monotonic, and only their rates must agree across processes over a lease.

Besides the days the hash holds three fields, gone together with them when the hash is flushed or evicted:
MIRROR_INCARNATION (a re-sync's start), MIRROR_COMPLETE (a re-sync landed: only then may the mirror be trusted) and
MIRROR_GENERATION. See RedisStore for how a flushed or failed-over mirror is noticed and re-synced.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .connection import RedisClient
from .keys import MIRROR_COMPLETE, MIRROR_GENERATION, MIRROR_INCARNATION, MIRROR_META_FIELDS

# Raise mirror entries (never lower one). ARGV[1]: a field that must hold ARGV[2] for anything to happen ('' for
# none; an empty ARGV[2] only asks that the field exist); ARGV[3]: '' or a field to set to ARGV[4] after the merge;
# ARGV[5]: the field holding the generation, ARGV[6] the new generation, written whenever anything changed; then
# day, version pairs. Returns how many days were raised, or -1 when the required field was not as asked.
_MAX_MERGE_LUA = """
if ARGV[1] ~= '' then
  local held = redis.call('HGET', KEYS[1], ARGV[1])
  if not held or (ARGV[2] ~= '' and held ~= ARGV[2]) then return -1 end
end
local raised = 0
for i = 7, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    raised = raised + 1
  end
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) end
if raised > 0 or ARGV[3] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], ARGV[6]) end
return raised
"""

# A re-sync's start: the mirror's incarnation, created when the mirror is empty (flushed, evicted, new).
_INCARNATION_LUA = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""

_TOKEN_FIELDS = (MIRROR_COMPLETE, MIRROR_GENERATION)
LEASE_SECONDS = 0.1
"""How long a check of the mirror's generation holds (see the module's docstring)."""

Token = tuple[bytes, bytes | None]
"""Which complete mirror, at which generation: (MIRROR_COMPLETE, MIRROR_GENERATION) as read."""


class MirrorLost(Exception):
    """The version mirror is not complete (flushed, evicted, restarted empty): nothing in Redis can be trusted, and
    no entry's versions may be merged into it, until a re-sync from PostgreSQL completes it again."""


def _token(complete: bytes | None, generation: bytes | None) -> Token:
    if complete is None:
        raise MirrorLost
    return complete, generation


@dataclass
class MirrorSnapshot:
    """Day versions this process read from the mirror, all under one token: still the mirror's while it is, which
    was last confirmed by a read sent at `checked` (monotonic)."""

    token: Token
    checked: float
    versions: dict[dt.date, int] = field(default_factory=dict)

    def of(self, days: Sequence[dt.date]) -> list[int] | None:
        """The versions of `days`, or None when one of them was never read under this token."""
        held = self.versions
        try:
            return [held[day] for day in days]
        except KeyError:
            return None


Queue = Callable[[Any], None]
"""Queues commands on a pipeline, to be sent in the same round trip as the version read."""


class VersionMirror:
    """This process's access to the mirror: raises, re-sync steps, and reads checked against its generation."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._snapshot: MirrorSnapshot | None = None

    def forget(self) -> None:
        """Drop what this process knows of the mirror (after a failure, a flush, a failover): the next read asks
        for every day again."""
        self._snapshot = None

    def leased(self, days: Sequence[dt.date]) -> list[int] | None:
        """The versions of `days` without asking Redis: known, and confirmed within the lease; else None."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() >= snapshot.checked + LEASE_SECONDS:
            return None
        return snapshot.of(days)

    async def read(
        self, client: RedisClient, days: Sequence[dt.date], queue: Queue | None = None
    ) -> tuple[list[Any], list[int]]:
        """The replies of the commands `queue` adds, and the mirror's current version of each day (0 when absent),
        in one round trip; a second one only when the mirror changed since this process last read these days.
        Raises MirrorLost when the mirror is not complete."""
        snapshot = self._snapshot
        known = snapshot.of(days) if snapshot is not None else None
        if known is not None:
            assert snapshot is not None
            sent = time.monotonic()
            replies, mirror = await self._ask(client, _TOKEN_FIELDS, queue)
            if _token(*mirror) == snapshot.token:
                snapshot.checked = sent
                return replies, known
            queue = None
        fields = [*_TOKEN_FIELDS, *(d.isoformat() for d in days)]
        sent = time.monotonic()
        more, mirror = await self._ask(client, fields, queue)
        return (more if known is None else replies), self._remember(mirror, days, sent)

    async def _ask(
        self, client: RedisClient, fields: Sequence[str], queue: Queue | None
    ) -> tuple[list[Any], list[bytes | None]]:
        """HMGET `fields` of the mirror, after the commands `queue` adds, in one round trip."""
        if queue is None:
            return [], cast(list[bytes | None], await client.hmget(self.key, fields))
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        pipe.hmget(self.key, fields)
        *replies, mirror = await pipe.execute()
        return replies, mirror

    def _remember(self, mirror: list[bytes | None], days: Sequence[dt.date], sent: float) -> list[int]:
        """An HMGET of the token fields and `days`, sent at `sent`, as versions, kept in the snapshot of its token."""
        complete, generation, *values = mirror
        token = _token(complete, generation)
        versions = [int(v) if v is not None else 0 for v in values]
        if self._snapshot is None or self._snapshot.token != token:
            self._snapshot = MirrorSnapshot(token, sent)
        self._snapshot.checked = sent
        self._snapshot.versions.update(zip(days, versions, strict=True))
        return versions

    async def merge(
        self,
        client: RedisClient,
        versions: dict[dt.date, int],
        *,
        require: tuple[str, str] | None = None,
        complete: str = "",
    ) -> int:
        """Raise mirror entries to `versions` (never lowers one); returns how many were raised, or -1 when the
        mirror's field `require[0]` is missing or does not hold `require[1]` (when not empty). `complete` marks
        the mirror complete (a re-sync in that incarnation)."""
        if not versions and not complete:
            return 0
        required, value = require or ("", "")
        args: list[str | int] = [required, value, MIRROR_COMPLETE if complete else "", complete]
        args += [MIRROR_GENERATION, secrets.token_hex(8)]
        for day, version in versions.items():
            args += [day.isoformat(), version]
        raised = int(await client.eval(_MAX_MERGE_LUA, 1, self.key, *args))
        if raised:
            self.forget()  # this process sees its own raises at once, whatever its lease
        return raised

    async def merge_into_complete(self, client: RedisClient, versions: dict[dt.date, int]) -> None:
        """Raise the mirror to the versions an entry was computed from, only while it is complete: merged into a
        flushed mirror, a slow computation's stale versions would make its stale entry current again."""
        if await self.merge(client, versions, require=(MIRROR_COMPLETE, "")) < 0:
            raise MirrorLost

    async def incarnation(self, client: RedisClient) -> str:
        """The mirror's incarnation, created now if the mirror is empty: a re-sync starts here."""
        held = await client.eval(_INCARNATION_LUA, 1, self.key, MIRROR_INCARNATION, secrets.token_hex(8))
        return held.decode() if isinstance(held, bytes) else str(held)


def held_days(fields: set[str]) -> list[dt.date]:
    """The days among the mirror's fields (HKEYS), its own bookkeeping fields left out."""
    return [dt.date.fromisoformat(f) for f in fields - MIRROR_META_FIELDS]
