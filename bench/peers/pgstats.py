"""PostgreSQL's work for one database between two moments: pg_stat_statements and pg_stat_database deltas.

pg_stat_statements lives in the admin database (the one of DATABASE_URL) and keeps at most
`pg_stat_statements.max` entries, evicting the least used when others' statements need room (the test suites of a
shared server make many): a plain sum over a database's entries can then go down. So statements are compared entry
by entry (user, query id, top level): an entry's growth, or all of it when it is new (or was evicted and came back).
Rows read come from pg_stat_database (`tup_returned`: rows read by sequential scans and index entries returned), a
per-database counter nothing evicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

Entry = tuple[int, int, bool]  # userid, queryid, toplevel


@dataclass(frozen=True)
class PgCounters:
    calls: int = 0  # statements executed
    rows: int = 0  # rows the statements returned or wrote
    blocks: int = 0  # shared blocks the statements read (hit + read)
    tuples_read: int = 0  # rows the database read (pg_stat_database.tup_returned)

    def __add__(self, other: PgCounters) -> PgCounters:
        return PgCounters(
            self.calls + other.calls,
            self.rows + other.rows,
            self.blocks + other.blocks,
            self.tuples_read + other.tuples_read,
        )


@dataclass(frozen=True)
class PgSnapshot:
    entries: dict[Entry, tuple[int, int, int]]
    tuples_read: int

    def since(self, before: PgSnapshot) -> PgCounters:
        calls = rows = blocks = 0
        for entry, (c, r, b) in self.entries.items():
            bc, br, bb = before.entries.get(entry, (0, 0, 0))
            if c < bc:  # evicted and entered again meanwhile: all of it is new
                bc, br, bb = 0, 0, 0
            calls, rows, blocks = calls + c - bc, rows + r - br, blocks + b - bb
        return PgCounters(calls, rows, blocks, self.tuples_read - before.tuples_read)


async def snapshot(admin_dsn: str, database: str) -> PgSnapshot:
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            b"""SELECT userid::bigint, queryid, toplevel, calls, rows, shared_blks_hit + shared_blks_read
                FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)""",
            (database,),
        )
        entries = {(int(u), int(q), bool(t)): (int(c), int(r), int(b)) for u, q, t, c, r, b in await cur.fetchall()}
        cur = await conn.execute(b"SELECT tup_returned FROM pg_stat_database WHERE datname = %s", (database,))
        row = await cur.fetchone()
    return PgSnapshot(entries, int(row[0]) if row else 0)
