"""The soak's measuring parts (bench/soak.py): the slope fit and the resident set of a process tree."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench.soak import MIB, Sample, diagnosing, fit, fits, key_kind, tree_rss_bytes

from litemaas_cache.dates import DateRange
from litemaas_cache.redis_tier.keys import KeySpace


def _series(slope_mib_per_hour: float, seconds: int, noise_mib: float, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for t in range(seconds):
        mib = 500 + slope_mib_per_hour * t / 3600 + rng.gauss(0, noise_mib)
        redis = None if 900 <= t < 910 else int((10 + t / 60) * MIB)  # Redis down for 10 s, as in the restart
        samples.append(Sample(float(t), int(mib * MIB), int(300 * MIB), redis, None if redis is None else t))
    return samples


def test_fit_recovers_a_known_slope_through_noise() -> None:
    found = fit(_series(20.0, 1800, noise_mib=30), "api", "after warm-up", 180, 1800)
    assert found is not None
    assert found.points == 1620  # only the window's samples
    assert found.mib_per_day == pytest.approx(480, abs=4 * 24 * found.slope_error)
    assert found.slope_error > 0


def test_fit_ignores_the_warmup_and_the_seconds_redis_did_not_answer() -> None:
    samples = _series(0.0, 1800, noise_mib=0)
    # A steep warm-up that a fit over the whole run would read as growth:
    warm = [Sample(s.seconds, int((100 + s.seconds) * MIB), s.operator, s.redis, s.redis_keys) for s in samples[:180]]
    samples[:180] = warm
    flat = fit(samples, "api", "after warm-up", 180, 1800)
    assert flat is not None
    assert flat.mib_per_day == pytest.approx(0, abs=1e-6)
    redis = fit(samples, "redis", "before restart", 180, 1800)
    assert redis is not None
    assert redis.points == 1620 - 10
    assert redis.slope_mib_per_hour == pytest.approx(60, rel=1e-6)  # 1 MiB a minute


def test_fits_split_redis_at_the_restart() -> None:
    windows = {(f.series, f.window): (f.start, f.end) for f in fits(_series(0.0, 1800, 1), 1800, (900.0, 910.0))}
    assert windows == {
        ("api", "after warm-up"): (180, 1800),
        ("api", "second half"): (900, 1800),
        ("operator", "after warm-up"): (180, 1800),
        ("operator", "second half"): (900, 1800),
        ("redis", "before restart"): (180, 900.0),
        ("redis", "after restart"): (1090.0, 1800),
    }


ALLOCATE = "b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(60)"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_tree_rss_counts_the_children() -> None:
    child = ALLOCATE.format(mib=80)
    parent = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {child!r}]); " + ALLOCATE.format(mib=40)
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 30
        children: list[int] = []
        while time.monotonic() < deadline:
            children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
            if children and _rss(children[0]) > 80 * MIB and _rss(proc.pid) > 40 * MIB:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the child processes did not allocate in 30 s")
        assert tree_rss_bytes(proc.pid) >= _rss(proc.pid) + _rss(children[0]) - 4 * MIB  # both read at once-ish
        assert tree_rss_bytes(proc.pid) > 120 * MIB
        assert tree_rss_bytes(2**22 + 12345) == 0  # no such process
    finally:
        for pid in children:
            subprocess.run(["kill", str(pid)], check=False)
        proc.kill()
        proc.wait()


def test_key_kinds_follow_the_keyspace() -> None:
    keys = KeySpace.of_database("soak:ab12:", "0123456789")
    days = DateRange(dt.date(2026, 11, 1), dt.date(2026, 11, 30))
    result = keys.result("by-user", days, "f00d")
    prefixes = (keys.prefix, "soak:ab12:")
    assert key_kind(keys.result_entry(result, "zstd"), prefixes) == "res:by-user:zstd"
    assert key_kind(keys.result_entry(result, "gzip"), prefixes) == "res:by-user:gzip"
    assert key_kind(keys.day(days.start), prefixes) == "day"
    assert key_kind(keys.versions, prefixes) == "day-versions"
    assert key_kind(keys.lock(result), prefixes) == "lock"


def test_a_diagnosed_child_dumps_its_memory_on_sigusr1(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    env = diagnosing({**os.environ}, log)
    # Holds 200,000 lists, then keeps adding one every millisecond: the growth a dump must name.
    hold = (
        "import time\nkept = [[i] for i in range(200_000)]\nprint('ready', flush=True)\n"
        "while True:\n    kept.append([0])\n    time.sleep(0.001)"
    )
    proc = subprocess.Popen([sys.executable, "-c", hold], env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        dumps = log.with_suffix(".diagnose.jsonl")
        for _ in range(2):
            before = len(dumps.read_text().splitlines()) if dumps.exists() else 0
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (not dumps.exists() or len(dumps.read_text().splitlines()) == before):
                time.sleep(0.1)
            time.sleep(1)
        records = [json.loads(line) for line in dumps.read_text().splitlines()]
        assert len(records) == 2
        last = records[-1]
        assert last["objects"] > 200_000  # the lists the child holds (gc counts containers only)
        assert last["tracedKiB"] > 10_000
        assert last["rssKiB"] > 0
        assert {"line", "KiB", "grownKiB"} <= set(last["linesGrown"][0])
        lists = next(t for t in last["typesGrown"] if t["type"] == "builtins.list")
        assert lists["count"] > 200_000
        assert lists["grown"] >= 100  # a second apart, at most one list a millisecond
    finally:
        proc.kill()
        proc.wait()
