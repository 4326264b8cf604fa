"""Every Redis key this project uses is built here, and only here.

No multi-key command ever spans two keys of different hash slots: the version hash and the stats hash are
single keys; day and result keys are read with per-key commands (pipelined, which a cluster client splits
per node).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from ..dates import DateRange
from ..vocabulary import ContentEncoding, RateBucket

# Fields of the version mirror that are not days (see RedisStore: how a flushed or failed-over mirror is noticed).
MIRROR_INCARNATION = "incarnation"
"""A random id set by the first re-sync into an empty mirror: a FLUSHALL removes it, and no later one repeats it."""
MIRROR_COMPLETE = "complete"
"""Present once a re-sync from PostgreSQL landed in this incarnation: only then may the mirror be trusted."""
MIRROR_GENERATION = "generation"
"""A random id rewritten by every change to the mirror: while it reads the same, no day's version changed."""
MIRROR_META_FIELDS = frozenset({MIRROR_INCARNATION, MIRROR_COMPLETE, MIRROR_GENERATION})

ResultKind = Literal["analytics", "by-user", "by-model", "by-provider", "filter-options"]
RESULT_KINDS: tuple[ResultKind, ...] = ("analytics", "by-user", "by-model", "by-provider", "filter-options")


@dataclass(frozen=True)
class KeySpace:
    prefix: str

    @classmethod
    def of_database(cls, prefix: str, database: str) -> KeySpace:
        """The keys of one cache database (Database.identity): under REDIS_KEY_PREFIX, then the database's
        identity, so another deployment's entries are never read whatever prefix it was given."""
        return cls(f"{prefix}{database}:")

    @property
    def versions(self) -> str:
        """Hash day -> version: mirrors PostgreSQL's daily_usage.version; never expires. It also holds the fields
        the fields of MIRROR_META_FIELDS, so that a flush removes them together with the versions (see mirror.py)."""
        return f"{self.prefix}day-versions"

    @property
    def stats(self) -> str:
        """Hash of hit/miss counters shared by every instance."""
        return f"{self.prefix}stats"

    @property
    def results_index(self) -> str:
        """Sorted set of the live result keys, scored by expiry (epoch seconds): a purge finds the entries that
        overlap its range here, and the stats count them, without a scan of the keyspace."""
        return f"{self.prefix}res-index"

    @property
    def probe(self) -> str:
        """A short-lived key the circuit breaker writes to learn that Redis accepts writes again."""
        return f"{self.prefix}probe"

    def day(self, day: dt.date) -> str:
        return f"{self.prefix}day:{day.isoformat()}"

    def result(self, kind: ResultKind, days: DateRange, fingerprint: str) -> str:
        return f"{self.prefix}res:{kind}:{days.start.isoformat()}:{days.end.isoformat()}:{fingerprint}"

    def result_entry(self, key: str, encoding: ContentEncoding) -> str:
        """Where a result (named by `result`: its lock, index entry and purge go by that name) is stored in one
        encoding. Not a result key itself: result_range parses it to None."""
        return f"{key}:{encoding}"

    def rate_limit(self, bucket: RateBucket, subject: str) -> str:
        """Requests of one caller (a Caller.subject, or an address) in the current window of one rate bucket."""
        return f"{self.prefix}rate:{bucket}:{subject}"

    def lock(self, key: str) -> str:
        return f"{self.prefix}lock:{key.removeprefix(self.prefix)}"

    @property
    def all_pattern(self) -> str:
        return f"{_glob_escape(self.prefix)}*"

    def result_range(self, key: str) -> DateRange | None:
        """The date range a result key covers, or None for a key that is not a well-formed result key."""
        parts = key.removeprefix(self.prefix).split(":")
        if len(parts) != 5 or parts[0] != "res":
            return None
        try:
            return DateRange(dt.date.fromisoformat(parts[2]), dt.date.fromisoformat(parts[3]))
        except ValueError:
            return None


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
