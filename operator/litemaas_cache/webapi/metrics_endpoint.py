"""/metrics over HTTP: the API's public route, and the operator's own small server on METRICS_PORT (kopf's liveness
server serves one path only, so it cannot carry /metrics)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from ..metrics import CacheMetrics

METRICS = web.AppKey("metrics", CacheMetrics)
METRICS_PATH = "/metrics"


async def prometheus_metrics(request: web.Request) -> web.Response:
    """This process's metrics, in Prometheus's text format."""
    body, content_type = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


@asynccontextmanager
async def serving_metrics(metrics: CacheMetrics, host: str, port: int) -> AsyncIterator[None]:
    """Serve GET /metrics on host:port until the block exits (the operator's endpoint)."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get(METRICS_PATH, prometheus_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
