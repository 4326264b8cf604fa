"""The benchmark's peers (bench/peers/) answer with the project's document, and see a changed day once they have
invalidated it: otherwise the comparison of their figures and wrong answers would mean nothing."""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest_asyncio
from bench.peers import cashews_peer, nocache, project, seedplan
from bench.peers.compute import Request, fingerprint, same
from bench.peers.peer import PeerConfig
from bench.peers.runner import delete_keys, redis_usage
from bench.peers.workloads import dataset_values
from redis.asyncio import Redis

from litemaas_cache.dates import utc_today


@pytest_asyncio.fixture
async def config(fresh_dsn: str, key_prefix: str) -> AsyncIterator[PeerConfig]:
    config = PeerConfig(
        fresh_dsn,
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        key_prefix,
        f"seedplan_{uuid.uuid4().hex[:8]}",
    )
    await seedplan.create_schema(fresh_dsn, config.schema)
    redis = Redis.from_url(config.redis_url)
    try:
        yield config
    finally:
        await delete_keys(redis, config.prefix)
        await redis.aclose()
        await seedplan.drop_schema(fresh_dsn, config.schema)


async def _requests(dsn: str) -> list[Request]:
    values = await dataset_values(dsn, random.Random(3))
    end = utc_today() - dt.timedelta(days=1)
    start = end - dt.timedelta(days=13)
    return [
        Request(start, end),
        Request(start, end, model_ids=(values.models[0],)),
        Request(start, end, provider_ids=(values.providers[0],)),
        Request(start, end, user_ids=tuple(values.users[:3])),
        Request(start, end, api_key_ids=(values.keys[0],)),
        Request(end - dt.timedelta(days=40), end, model_ids=(values.models[1],), provider_ids=(values.providers[0],)),
    ]


async def test_every_peer_answers_the_projects_document(config: PeerConfig) -> None:
    requests = await _requests(config.dsn)
    async with (
        project.open_peer(config) as ours,
        nocache.open_per_day(config) as per_day,
        nocache.open_one_pass(config) as one_pass,
        seedplan.open_peer(config) as seed,
        cashews_peer.open_peer(config) as cashews,
    ):
        for request in requests:
            expected = (await ours.answer(request)).document
            assert expected["totalRequests"] > 0 or request.model_ids  # the filters select usage
            for peer in (per_day, one_pass, seed, cashews):
                answer = await peer.answer(request)
                assert not answer.hit
                assert same(answer.document, expected), (type(peer).__name__, request)
        # the caching peers now hit, and the stored answer is still the same document
        for peer in (seed, cashews):
            again = await peer.answer(requests[0])
            assert again.hit
            assert fingerprint(again.document) == fingerprint((await ours.answer(requests[0])).document)
        assert seed.computations == len(requests)
        assert cashews.computations == len(requests)
        redis = Redis.from_url(config.redis_url)
        keys, size = await redis_usage(redis, config.prefix)
        await redis.aclose()
        assert keys > 0
        assert size > 0


async def test_a_changed_day_shows_after_each_peers_invalidation(config: PeerConfig) -> None:
    request = (await _requests(config.dsn))[0]
    day = request.end - dt.timedelta(days=2)
    async with (
        project.open_peer(config) as ours,
        seedplan.open_peer(config) as seed,
        cashews_peer.open_peer(config) as cashews,
        nocache.open_one_pass(config) as truth,
    ):
        before = {peer: (await peer.answer(request)).document for peer in (ours, seed, cashews)}
        async with await psycopg.AsyncConnection.connect(config.dsn, autocommit=True) as conn:
            await conn.execute(
                b"""INSERT INTO "LiteLLM_DailyUserSpend" (id, user_id, date, api_key, model, endpoint,
                        prompt_tokens, completion_tokens, spend, api_requests, successful_requests, failed_requests)
                    VALUES ('test-extra', 'x', %s, 'test-key', 'gpt-4o', 'test', 10, 5, 1.5, 7, 7, 0)""",
                (day.isoformat(),),
            )
        changed = await truth.compute(request)
        assert changed["totalRequests"] == before[ours]["totalRequests"] + 7
        for peer in (seed, cashews):  # not invalidated yet: the stored answer is served (the project may have
            stale = await peer.answer(request)  # noticed the change already: its freshness check)
            assert stale.hit
            assert same(stale.document, before[peer])
        for peer in (ours, seed, cashews):
            await peer.invalidate(day)
            fresh = await peer.answer(request)
            assert not fresh.hit
            assert same(fresh.document, changed), type(peer).__name__
