"""The soak's load: admin readers through the HTTP API, and warms and invalidations through the operator.

Readers mix what a LiteMaaS admin console does: mostly repeated dashboard views (the ranges a CacheWarmPolicy keeps
warm), a user filter never asked before, a range never asked before, breakdown pages, filter options, and now and
then an export. The operator side keeps two CacheWarmPolicies warming every minute, changes one of them now and then
(a spec change warms at once), and creates a one-day CacheInvalidation at a steady pace. Every outcome is counted;
nothing is timed for a verdict (the soak measures memory).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from litemaas_cache.dates import DateRange

ADMIN = "/api/v1/admin/usage"
GROUP_VERSION = "cache.litemaas.io/v1alpha1"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=600)
THINK_SECONDS = (0.05, 0.3)  # each reader's pause between two requests
EXPORT_EVERY_SECONDS = 90.0
INVALIDATE_EVERY_SECONDS = 60.0
POLICY_CHANGE_EVERY_SECONDS = 150.0
INVALIDATION_DEADLINE_SECONDS = 300.0
# What a reader does next, and how often (weights): repeated views dominate, as on a dashboard.
MIX = (
    ("warmView", 50),
    ("newFilter", 15),
    ("newRange", 12),
    ("breakdown", 15),
    ("filterOptions", 8),
)


@dataclass
class Tally:
    """Every request's outcome by kind: HTTP status, answering tier, and transport failures."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    tiers: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few unexpected answers, for the report

    def record(self, kind: str, status: int, tier: str, body: bytes) -> None:
        self.statuses[kind, status] += 1
        if status < 300:
            self.tiers[kind, tier] += 1
        elif status != 429 and len(self.examples) < 10:
            self.examples.append(f"{kind}: {status} {body[:200]!r}")

    def failed(self, kind: str, exc: BaseException) -> None:
        self.failures[kind, type(exc).__name__] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {type(exc).__name__}: {exc}")

    def as_dict(self) -> dict[str, Any]:
        kinds = sorted({kind for kind, _ in self.statuses} | {kind for kind, _ in self.failures})
        return {
            kind: {
                "statuses": {str(s): n for (k, s), n in sorted(self.statuses.items()) if k == kind},
                "tiers": {t: n for (k, t), n in sorted(self.tiers.items()) if k == kind},
                "transportFailures": {e: n for (k, e), n in sorted(self.failures.items()) if k == kind},
            }
            for kind in kinds
        }

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    @property
    def throttled(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status == 429)

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)

    @property
    def errors(self) -> int:
        """Non-2xx answers other than 429, and requests that got no answer."""
        unexpected = sum(n for (_, s), n in self.statuses.items() if s >= 300 and s != 429)
        return unexpected + sum(self.failures.values())


@dataclass(frozen=True)
class Workload:
    """What the readers ask about: the dataset's days, its users (a pool of never-asked filters) and models."""

    last_day: dt.date  # the last complete day of the dataset
    first_day: dt.date
    users: list[str]
    models: list[str]

    def last_days(self, n: int) -> DateRange:
        return DateRange(self.last_day - dt.timedelta(days=n - 1), self.last_day)

    @property
    def views(self) -> tuple[DateRange, ...]:
        """The dashboard's ranges, the ones the warm policies keep warm."""
        return (self.last_days(7), self.last_days(30))

    def random_range(self, rng: random.Random) -> DateRange:
        days = rng.randint(1, 45)
        end = self.first_day + dt.timedelta(days=rng.randint(days - 1, (self.last_day - self.first_day).days))
        return DateRange(end - dt.timedelta(days=days - 1), end)


def _body(days: DateRange, **filters: list[str]) -> dict[str, Any]:
    return {"startDate": days.start.isoformat(), "endDate": days.end.isoformat(), **filters}


class Readers:
    """`clients` concurrent admin readers of the HTTP API (each its own connection pool), until `stop` is set."""

    def __init__(self, url: str, token: str, workload: Workload, tally: Tally, seed: int) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.workload = workload
        self.tally = tally
        self.rng = random.Random(seed)
        self.fresh_users = list(workload.users)
        self.rng.shuffle(self.fresh_users)

    async def run(self, clients: int, stop: asyncio.Event) -> None:
        await asyncio.gather(
            *(self._reader(random.Random(self.rng.random()), stop) for _ in range(clients)), self._exporter(stop)
        )

    async def _reader(self, rng: random.Random, stop: asyncio.Event) -> None:
        kinds = [kind for kind, _ in MIX]
        weights = [weight for _, weight in MIX]
        async with aiohttp.ClientSession(headers=self.headers, timeout=HTTP_TIMEOUT) as session:
            while not stop.is_set():
                kind = rng.choices(kinds, weights)[0]
                method, path, body = self._request(kind, rng)
                await self._send(session, kind, method, path, body)
                await _sleep_or_stop(stop, rng.uniform(*THINK_SECONDS))

    def _request(self, kind: str, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
        w = self.workload
        if kind == "warmView":
            return "POST", f"{ADMIN}/analytics", _body(rng.choice(w.views))
        if kind == "newFilter":
            user = self.fresh_users.pop() if self.fresh_users else rng.choice(w.users)
            return "POST", f"{ADMIN}/analytics", _body(rng.choice(w.views), userIds=[user])
        if kind == "newRange":
            return "POST", f"{ADMIN}/analytics", _body(w.random_range(rng))
        if kind == "breakdown":
            dimension = rng.choice(("user", "model", "provider"))
            days = rng.choice(w.views) if rng.random() < 0.7 else w.random_range(rng)
            page = rng.choice((1, 1, 1, 2, 3))
            return "POST", f"{ADMIN}/by-{dimension}?page={page}&limit=50", _body(days)
        days = rng.choice(w.views)
        return "GET", f"{ADMIN}/filter-options?startDate={days.start}&endDate={days.end}", {}

    async def _send(
        self, session: aiohttp.ClientSession, kind: str, method: str, path: str, body: dict[str, Any]
    ) -> None:
        try:
            async with session.request(method, f"{self.url}{path}", json=body or None) as resp:
                data = await resp.read()
                self.tally.record(kind, resp.status, resp.headers.get("X-Cache-Tier", "-"), data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.tally.failed(kind, exc)

    async def _exporter(self, stop: asyncio.Event) -> None:
        """An export of the last 30 days every EXPORT_EVERY_SECONDS, CSV and JSON in turn, streamed and dropped."""
        formats = ("csv", "json")
        async with aiohttp.ClientSession(headers=self.headers, timeout=HTTP_TIMEOUT) as session:
            turn = 0
            while not await _sleep_or_stop(stop, EXPORT_EVERY_SECONDS):
                body = {**_body(self.workload.last_days(30)), "format": formats[turn % 2]}
                turn += 1
                try:
                    async with session.post(f"{self.url}{ADMIN}/export", json=body) as resp:
                        size = 0
                        async for chunk in resp.content.iter_any():
                            size += len(chunk)
                        self.tally.record("export", resp.status, resp.headers.get("X-Cache-Tier", "-"), b"")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.tally.failed("export", exc)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less if `stop` is set meanwhile; True when it is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


@dataclass(frozen=True)
class Kube:
    """kubectl against the soak's control plane, in the soak's namespace."""

    kubectl: Path
    kubeconfig: Path
    namespace: str

    async def run(self, *args: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(self.kubectl),
            f"--kubeconfig={self.kubeconfig}",
            "--request-timeout=30s",
            *args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed ({proc.returncode}): {err.decode()[-500:]}")
        return out.decode()

    async def apply(self, doc: dict[str, Any]) -> None:
        await self.run("apply", "-n", self.namespace, "-f", "-", stdin=yaml.safe_dump(doc))

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(await self.run("get", kind, name, "-n", self.namespace, "-o", "json"))
        except RuntimeError as exc:
            if "NotFound" in str(exc):
                return None
            raise
        return found


def _resource(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _dated(days: DateRange) -> dict[str, str]:
    return {"start": days.start.isoformat(), "end": days.end.isoformat()}


@dataclass
class OperatorOutcomes:
    """What the operator did for the soak: invalidations by final phase, warm runs seen, kubectl failures."""

    invalidations: Counter[str] = field(default_factory=Counter)  # Succeeded, Failed, or Timeout
    invalidation_seconds: list[float] = field(default_factory=list)
    policy_changes: int = 0
    warms_seen: dict[str, set[str]] = field(default_factory=dict)  # policy -> distinct status.lastWarmTime
    kubectl_failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        seconds = sorted(self.invalidation_seconds)
        return {
            "invalidations": dict(self.invalidations),
            "invalidationSecondsMedian": round(seconds[len(seconds) // 2], 1) if seconds else None,
            "invalidationSecondsMax": round(seconds[-1], 1) if seconds else None,
            "policyChanges": self.policy_changes,
            "warmRunsSeen": {name: len(times) for name, times in self.warms_seen.items()},
            "kubectlFailures": self.kubectl_failures[:10],
        }

    @property
    def failed(self) -> int:
        return sum(n for phase, n in self.invalidations.items() if phase != "Succeeded")


class OperatorLoad:
    """Warm policies, spec changes and one-day invalidations, for the operator process to reconcile."""

    DASHBOARD = "dashboard"
    ROTATING = "rotating"

    def __init__(self, kube: Kube, workload: Workload, outcomes: OperatorOutcomes, seed: int) -> None:
        self.kube = kube
        self.workload = workload
        self.outcomes = outcomes
        self.rng = random.Random(seed)
        self._watchers: list[asyncio.Task[None]] = []

    def _rotating_spec(self, turn: int) -> dict[str, Any]:
        """The second policy: filtered ranges that change at every turn (a spec change warms at once)."""
        w = self.workload
        end = w.last_day - dt.timedelta(days=turn % 10)
        models = self.rng.sample(w.models, 3)
        users = self.rng.sample(w.users, 20)
        return {
            "ranges": [_dated(DateRange(end - dt.timedelta(days=13), end)), {"preset": "last-7-days"}],
            "filters": [{"modelIds": models}, {"userIds": users}],
            "breakdowns": ["model"],
            "interval": "1m",
        }

    async def start(self) -> None:
        dashboard = {
            "ranges": [_dated(days) for days in self.workload.views],
            "breakdowns": ["user", "model", "provider"],
            "interval": "1m",
        }
        await self.kube.apply(_resource("CacheWarmPolicy", self.DASHBOARD, self.kube.namespace, dashboard))
        await self.kube.apply(_resource("CacheWarmPolicy", self.ROTATING, self.kube.namespace, self._rotating_spec(0)))

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._invalidations(stop), self._policy_changes(stop), self._watch_warms(stop))
        await asyncio.gather(*self._watchers)

    async def _invalidations(self, stop: asyncio.Event) -> None:
        turn = 0
        while not await _sleep_or_stop(stop, INVALIDATE_EVERY_SECONDS):
            turn += 1
            day = self.workload.last_day - dt.timedelta(days=self.rng.randint(0, 29))
            name = f"soak-{turn}-{day.isoformat()}"
            spec = {
                "startDate": day.isoformat(),
                "endDate": day.isoformat(),
                "rewarm": turn % 2 == 0,
                "ttlSecondsAfterFinished": 30,  # the operator deletes it: its TTL timer and deletion run too
            }
            try:
                await self.kube.apply(_resource("CacheInvalidation", name, self.kube.namespace, spec))
            except RuntimeError as exc:
                self.outcomes.kubectl_failures.append(str(exc))
                continue
            self._watchers.append(asyncio.create_task(self._follow(name, time.monotonic())))

    async def _follow(self, name: str, created: float) -> None:
        """Poll one invalidation until it is Succeeded or Failed (or deleted after succeeding, by its TTL)."""
        while time.monotonic() - created < INVALIDATION_DEADLINE_SECONDS:
            await asyncio.sleep(2)
            try:
                obj = await self.kube.get("cacheinvalidation", name)
            except RuntimeError as exc:
                self.outcomes.kubectl_failures.append(str(exc))
                continue
            phase = "Deleted" if obj is None else obj.get("status", {}).get("phase")
            if phase in ("Succeeded", "Failed", "Deleted"):
                # Deleted: only a finished one is deleted (ttlSecondsAfterFinished), and kopf's finalizer holds a
                # failed one just as long: a polling gap of 2 s against a TTL of 30 s never misses a phase.
                self.outcomes.invalidations["Succeeded" if phase == "Deleted" else phase] += 1
                self.outcomes.invalidation_seconds.append(time.monotonic() - created)
                return
        self.outcomes.invalidations["Timeout"] += 1

    async def _policy_changes(self, stop: asyncio.Event) -> None:
        turn = 0
        while not await _sleep_or_stop(stop, POLICY_CHANGE_EVERY_SECONDS):
            turn += 1
            spec = self._rotating_spec(turn)
            try:
                await self.kube.apply(_resource("CacheWarmPolicy", self.ROTATING, self.kube.namespace, spec))
                self.outcomes.policy_changes += 1
            except RuntimeError as exc:
                self.outcomes.kubectl_failures.append(str(exc))

    async def _watch_warms(self, stop: asyncio.Event) -> None:
        """Every 20 s, each policy's status.lastWarmTime: the distinct ones count the warm runs."""
        while True:
            for name in (self.DASHBOARD, self.ROTATING):
                try:
                    obj = await self.kube.get("cachewarmpolicy", name)
                except RuntimeError as exc:
                    self.outcomes.kubectl_failures.append(str(exc))
                    continue
                last = (obj or {}).get("status", {}).get("lastWarmTime")
                if last:
                    self.outcomes.warms_seen.setdefault(name, set()).add(str(last))
            if await _sleep_or_stop(stop, 20):
                return
