"""Memory diagnosis inside a soak child (`python -m bench.soak --diagnose` puts this folder first on its PYTHONPATH).

Python imports `sitecustomize` at start-up, before the program: tracemalloc starts then, and each SIGUSR1 appends one
JSON line to $SOAK_DIAGNOSE_FILE: the resident set, what tracemalloc traces, the lines whose traced memory grew most
since the first dump, the object types whose count grew most (gc), pyarrow's pool, and the resident set again after
glibc's malloc_trim (what the allocator held free). Slow (seconds per dump) and heavy: for finding a leak, not for
measuring one.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

TOP = 20
_first: dict[str, Any] = {}  # the first dump's traced bytes per line and object count per type
_dumping: list[bool] = []  # a signal during a dump is dropped, not nested


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def _grown(now: dict[Any, int], first: dict[Any, int]) -> list[tuple[Any, int, int]]:
    """The TOP keys whose value grew most since the first dump: (key, value now, growth)."""
    growth = sorted(now.keys() | first.keys(), key=lambda k: now.get(k, 0) - first.get(k, 0), reverse=True)[:TOP]
    return [(k, now.get(k, 0), now.get(k, 0) - first.get(k, 0)) for k in growth]


def _dump(_signum: int, _frame: FrameType | None) -> None:
    if _dumping:
        return
    _dumping.append(True)
    try:
        _write()
    finally:
        _dumping.clear()


def _write() -> None:
    started = time.monotonic()
    rss = _rss_kib()
    lines = {str(s.traceback[0]): s.size for s in tracemalloc.take_snapshot().statistics("lineno")}
    objects = gc.get_objects()
    types = collections.Counter(map(type, objects))
    # The decoded days each process holds (local_frames.LocalFrames, bounded by CACHE_LOCAL_FRAMES_MIB).
    frames = sum(getattr(o, "_used", 0) for o in objects if type(o).__name__ == "LocalFrames")
    del objects
    first_lines: dict[str, int] = _first.setdefault("lines", lines)
    first_types: dict[type, int] = _first.setdefault("types", types)
    pyarrow = sys.modules.get("pyarrow")
    trimmed = -1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = _rss_kib()
    record = {
        "time": time.time(),
        "rssKiB": rss,
        "rssAfterMallocTrimKiB": trimmed,
        "tracedKiB": tracemalloc.get_traced_memory()[0] // 1024,
        "localFramesKiB": frames // 1024,
        "pyarrowAllocatedKiB": pyarrow.total_allocated_bytes() // 1024 if pyarrow else None,
        "objects": sum(types.values()),
        "linesGrown": [{"line": k, "KiB": v // 1024, "grownKiB": d // 1024} for k, v, d in _grown(lines, first_lines)],
        "typesGrown": [
            {"type": f"{t.__module__}.{t.__qualname__}", "count": v, "grown": d}
            for t, v, d in _grown(types, first_types)
        ],
        "seconds": round(time.monotonic() - started, 2),
    }
    with open(os.environ["SOAK_DIAGNOSE_FILE"], "a") as out:
        out.write(json.dumps(record) + "\n")


if os.environ.get("SOAK_DIAGNOSE_FILE"):
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, _dump)
