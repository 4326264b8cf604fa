"""The gate in front of every route: authentication, the route's permission, and the caller's rate limit.

In this order, and why:
1. Public routes (policy None) pass untouched; a path or method no route serves gets aiohttp's 404/405 as usual.
2. A route missing from the policy table is refused (403) whoever calls: a new route stays closed until it has one.
3. The caller is authenticated (no I/O). A refused credential is counted against the client's address in the route's
   bucket, so a client guessing tokens is limited like any other. LiteMaaS counts before authentication, keyed by
   the unverified token's userId, which lets anyone spend another user's allowance with forged tokens; here a
   caller is counted under its own name only once verified.
4. A caller without the route's permission gets 403 (not counted: it costs nothing).
5. The request is counted in the route's bucket under the caller's subject: 429 past the limit.
Every counted answer carries the x-ratelimit-* headers, streamed ones included.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ..vocabulary import Permission, RateBucket
from .auth import Authenticator, Caller, forbidden
from .problems import ApiError
from .ratelimit import Allowance, RateLimiter

log = logging.getLogger(__name__)

CALLER = web.RequestKey("caller", Caller)
"""The authenticated caller of a request, for the routes that need it (a user's own usage)."""
_ALLOWANCE = web.RequestKey("rate_allowance", Allowance)


@dataclass(frozen=True)
class RoutePolicy:
    """What a route requires of its caller, and the rate bucket its requests are counted in."""

    permission: Permission
    bucket: RateBucket


RoutePolicies = Mapping[tuple[str, str], RoutePolicy | None]
"""(method, path as registered on the router) -> policy, None for a public route. A HEAD request follows the policy
of its GET route; a route not in the table is refused."""


def install_security(
    app: web.Application, authenticator: Authenticator, limiter: RateLimiter, policies: RoutePolicies
) -> None:
    """Guard every route of `app` (call before the app starts; innermost of the middlewares added so far)."""
    app.middlewares.append(_security_middleware(authenticator, limiter, dict(policies)))
    app.on_response_prepare.append(_rate_limit_headers)


def _security_middleware(authenticator: Authenticator, limiter: RateLimiter, policies: RoutePolicies) -> Middleware:
    async def counted(request: web.Request, bucket: RateBucket, subject: str) -> Allowance:
        allowance = await limiter.count(bucket, subject)
        request[_ALLOWANCE] = allowance
        return allowance

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if request.match_info.http_exception is not None or resource is None:
            return await handler(request)
        method = hdrs.METH_GET if request.method == hdrs.METH_HEAD else request.method
        key = (method, resource.canonical)
        if key in policies and policies[key] is None:
            return await handler(request)
        policy = policies.get(key)
        if policy is None:
            log.error("refused %s %s: the route has no access policy", method, resource.canonical)
            return ApiError(403, "FORBIDDEN", "this route has no access policy").response()
        try:
            caller = authenticator.authenticate(request.headers.get(hdrs.AUTHORIZATION))
        except ApiError as refused:
            allowance = await counted(request, policy.bucket, f"ip:{request.remote or 'unknown'}")
            log.info("refused %s %s from %s: %s", method, resource.canonical, request.remote, refused.message)
            return (refused if allowance.allowed else allowance.refusal()).response()
        if not caller.may(policy.permission):
            return forbidden(policy.permission).response()
        allowance = await counted(request, policy.bucket, caller.subject)
        if not allowance.allowed:
            return allowance.refusal().response()
        request[CALLER] = caller
        return await handler(request)

    return security


async def _rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    allowance = request.get(_ALLOWANCE)
    if allowance is not None:
        response.headers.update(allowance.headers())
