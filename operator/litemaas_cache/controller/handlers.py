"""kopf registrations, and nothing else: each handler is a docstring and a call into warming/invalidation.

Run with `litemaas-cache operator`, or `kopf run -m litemaas_cache.controller.handlers`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any

import kopf

from ..dates import utc_now
from ..errors import CacheError
from ..manager import CacheManager
from ..metrics import CacheMetrics
from ..redaction import Redactor, install_log_redaction
from ..settings import load_settings
from ..webapi.metrics_endpoint import serving_metrics
from . import kube
from .invalidation import (
    TERMINAL_PHASES,
    InvalidationIncomplete,
    failed_status,
    parse_invalidation,
    run_invalidation,
    running_status,
    ttl_expiry,
)
from .resources import GROUP, INVALIDATIONS, VERSION, WARM_POLICIES
from .warming import WarmFailed, reconcile_policy

# How often each policy is checked for being due. Its own spec.interval (>= 1m) decides when it warms;
# the tick only bounds how late a due warm (or a spec change) is picked up. A constant, not a setting:
# decorator arguments are evaluated at import time, before any configuration is read.
WARM_TICK_SECONDS = 5.0
TTL_CHECK_SECONDS = 15.0
# kopf's backoff for unexpected errors; expected ones (a backend down) retry after OPERATOR_RETRY_SECONDS.
UNEXPECTED_ERROR_BACKOFF_SECONDS = 30.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Own every kopf setting in one place and open the cache manager (pools live in memo, closed at cleanup)."""
    # Progress and the last-handled configuration are kept in annotations under our own group.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # The API server closes a watch after server_timeout; the client gives up a little later, so a stuck
    # connection is noticed within ~5 minutes without ever cutting a healthy watch short.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    # Single API calls (patches, events) should never hang a handler for long.
    settings.networking.request_timeout = 60
    # A deleted object keeps kopf's finalizer until its timers exit. A timer that is itself deleting the object
    # (ttlSecondsAfterFinished) exits right after its API call: wait briefly for that instead of re-checking only
    # after kopf's default 60 s.
    settings.background.instant_exit_timeout = 2.0
    settings.background.cancellation_polling = 5.0
    # Events for warnings and our own notable transitions only; routine handler chatter stays in the log.
    settings.posting.level = logging.WARNING
    # Peering: with several replicas, the one of highest priority works and the others pause, so two never warm
    # at once. kopf pauses *every* operator that sees a live peer of equal priority, so replicas must not tie: each
    # process draws a random priority unless OPERATOR_PRIORITY pins one.
    app_settings = load_settings()
    install_log_redaction(app_settings.redact)  # again for `kopf run`, which does not start through the CLI
    settings.peering.clusterwide = True
    settings.peering.mandatory = False
    settings.peering.priority = (
        app_settings.operator_priority
        if app_settings.operator_priority is not None
        else secrets.randbelow(2**31 - 2) + 1
    )

    memo.exit_stack = contextlib.AsyncExitStack()
    try:
        memo.manager = await memo.exit_stack.enter_async_context(CacheManager.open(app_settings))
        metrics = CacheMetrics()
        metrics.attach(memo.manager)
        if app_settings.metrics_port:
            # Every interface: Prometheus scrapes the pod's address. The chart's Service selects this port.
            endpoint = serving_metrics(metrics, "0.0.0.0", app_settings.metrics_port)
            await memo.exit_stack.enter_async_context(endpoint)
    except BaseException:
        await memo.exit_stack.aclose()  # kopf retries this handler: leave no pool open and no port bound
        raise
    port = app_settings.metrics_port
    logger.info(
        "cache manager ready (redis %s, metrics %s)",
        "enabled" if memo.manager.redis.enabled else "disabled",
        f"on :{port}/metrics" if port else "off",
    )


def _redactor(memo: kopf.Memo) -> Redactor:
    """What every status, event and kopf error message passes through before it leaves the operator."""
    manager: CacheManager = memo.manager
    return manager.settings.redact


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else the kubeconfig that KUBECONFIG names when the operator starts."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Close the Redis and PostgreSQL pools."""
    await memo.exit_stack.aclose()


@kopf.on.probe(id="redis")
def redis_probe(memo: kopf.Memo, **_: Any) -> str:
    """Liveness detail: the Redis breaker state (never fails the probe: Redis down only slows us)."""
    manager: CacheManager = memo.manager
    return manager.redis.state


@kopf.index(GROUP, VERSION, WARM_POLICIES)
def warm_policy_specs(namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[str | None, dict[str, Any]]:
    """Index of warm policy specs per namespace (a CacheInvalidation with rewarm uses it)."""
    return {namespace: dict(spec)}


@kopf.timer(GROUP, VERSION, WARM_POLICIES, interval=WARM_TICK_SECONDS, initial_delay=0.5)
async def warm(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Warm the policy when due (interval passed, or spec changed); write the outcome to status."""
    redact = _redactor(memo)
    try:
        outcome = await reconcile_policy(memo.manager, dict(spec), dict(status), meta.get("generation"))
    except WarmFailed as exc:
        patch.status.update(redact.deep(exc.status))
        if exc.permanent:
            kopf.event(body, type="Warning", reason="InvalidSpec", message=redact(str(exc)))
            raise kopf.PermanentError(redact(str(exc))) from None
        raise kopf.TemporaryError(redact(str(exc)), delay=memo.manager.settings.operator_retry_seconds) from None
    if outcome is None:
        return
    patch.status.update(redact.deep(outcome.status))
    for type_, reason, message in outcome.events:
        kopf.event(body, type=type_, reason=reason, message=redact(message))


@kopf.on.create(GROUP, VERSION, INVALIDATIONS, id="start")
def invalidation_start(status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    """Mark a new invalidation Running (a separate step, so a restart resumes at the purge)."""
    if status.get("phase") not in TERMINAL_PHASES:
        patch.status.update(running_status(meta.get("generation")))


@kopf.on.create(GROUP, VERSION, INVALIDATIONS, id="purge", backoff=UNEXPECTED_ERROR_BACKOFF_SECONDS)  # type: ignore[arg-type]
async def invalidation_purge(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    patch: kopf.Patch,
    memo: kopf.Memo,
    warm_policy_specs: kopf.Index[str | None, dict[str, Any]],
    retry: int,
    **_: Any,
) -> None:
    """Purge the range once; Redis down is temporary (retried OPERATOR_MAX_RETRIES times, then Failed), a bad spec
    is permanent (Failed).

    (The type-ignore above: kopf's protocol cannot express the extra index keyword argument.)
    """
    if status.get("phase") in TERMINAL_PHASES:
        return
    generation = meta.get("generation")
    redact = _redactor(memo)
    try:
        parsed = parse_invalidation(dict(spec), generation)
        outcome = await run_invalidation(
            memo.manager, parsed, generation, status.get("conditions"), warm_policy_specs.get(namespace, [])
        )
    except WarmFailed as exc:
        patch.status.update(redact.deep(exc.status))
        kopf.event(body, type="Warning", reason="Failed", message=redact(str(exc)))
        raise kopf.PermanentError(redact(str(exc))) from None
    except (InvalidationIncomplete, CacheError) as exc:
        settings = memo.manager.settings
        if retry + 1 >= settings.operator_max_retries:
            message = redact(f"gave up after {retry + 1} attempts: {exc}")
            patch.status.update(failed_status("RetriesExhausted", message, generation, status.get("conditions")))
            kopf.event(body, type="Warning", reason="Failed", message=message)
            raise kopf.PermanentError(message) from None
        patch.status["message"] = redact(f"retrying ({retry + 1}/{settings.operator_max_retries}): {exc}")
        raise kopf.TemporaryError(redact(str(exc)), delay=settings.operator_retry_seconds) from None
    patch.status.update(redact.deep(outcome.status))
    kopf.event(body, type="Normal", reason="Purged", message=redact(outcome.status["message"]))


@kopf.timer(GROUP, VERSION, INVALIDATIONS, interval=TTL_CHECK_SECONDS, field="spec.ttlSecondsAfterFinished")
async def invalidation_ttl(
    spec: kopf.Spec, status: kopf.Status, name: str, namespace: str | None, logger: kopf.Logger, **_: Any
) -> None:
    """Delete a finished invalidation ttlSecondsAfterFinished after its completion."""
    finished = status.get("completionTime")
    ttl = spec.get("ttlSecondsAfterFinished")
    if status.get("phase") not in TERMINAL_PHASES or not finished or ttl is None:
        return
    if utc_now() >= ttl_expiry(str(finished), int(ttl)):
        logger.info("ttlSecondsAfterFinished passed; deleting")
        await kube.delete_custom_object(GROUP, VERSION, INVALIDATIONS, namespace, name)
