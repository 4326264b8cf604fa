"""Who is calling the HTTP API, and what they may do.

Three credentials, as LiteMaaS knows them: its JWTs (signed with JWT_SECRET, roles in the `roles` claim), its admin
API keys (ADMIN_API_KEYS, roles admin + api), and the service token of application instances (API_TOKEN, whose
scope API_TOKEN_SCOPE makes it an admin-readonly or an admin caller). Decisions only: security.py applies them to
requests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import jwt

from ..errors import ConfigurationError
from ..settings import Settings
from ..vocabulary import Permission, Role, ServiceScope
from .problems import ApiError

JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
"""The HMAC algorithms LiteMaaS's @fastify/jwt verifies; `none` and every other algorithm are refused."""
JWT_LEEWAY_SECONDS = 30
"""Clock skew tolerated on `exp` (and `nbf`/`iat`) between LiteMaaS's hosts and ours."""

ROLE_GRANTS: Mapping[str, frozenset[Permission]] = {
    "admin": frozenset({"admin:usage:read", "admin:usage:write"}),
    "admin-readonly": frozenset({"admin:usage:read"}),
}
"""What each role may do beyond its own usage; a role not listed (user, api, anything else) grants nothing more."""
ADMIN_KEY_ROLES: frozenset[Role] = frozenset({"admin", "api"})
SCOPE_ROLES: Mapping[ServiceScope, Role] = {"read": "admin-readonly", "admin": "admin"}
ADMIN_KEY_PREFIX = "ltm_admin_"
USER_KEY_PREFIX = "sk-"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. `subject` names it stably (the rate-limit key) and never holds a secret."""

    subject: str
    user_id: str | None
    roles: frozenset[str]

    def may(self, permission: Permission) -> bool:
        """Own usage needs a user of one's own; the admin permissions come from the roles."""
        if permission == "usage:own":
            return self.user_id is not None
        return any(permission in ROLE_GRANTS.get(role, frozenset()) for role in self.roles)


def unauthorized(reason: str) -> NoReturn:
    """A 401 whose message says what was wrong with the credential, never what the credential was."""
    raise ApiError(401, "UNAUTHORIZED", reason, headers={"WWW-Authenticate": 'Bearer realm="litemaas-cache"'})


def forbidden(permission: Permission) -> ApiError:
    return ApiError(403, "FORBIDDEN", "the caller's roles do not allow this", {"requiredPermission": permission})


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    """Turns an Authorization header into a Caller, or refuses it with a 401 that names the reason."""

    def __init__(
        self,
        *,
        jwt_secret: str | None = None,
        admin_keys: Iterable[str] = (),
        service_token: str | None = None,
        service_scope: ServiceScope = "read",
    ) -> None:
        # Keys are held and compared as SHA-256 digests: every comparison is constant-time and of equal length.
        self._keys: list[tuple[bytes, Caller]] = [
            (digest, Caller(f"adminkey:{digest.hex()[:16]}", None, ADMIN_KEY_ROLES))
            for digest in map(_digest, admin_keys)
        ]
        if service_token:
            role = SCOPE_ROLES[service_scope]
            self._keys.append((_digest(service_token), Caller(f"service:{service_scope}", None, frozenset({role}))))
        self._jwt_secret = jwt_secret or None
        if not self._keys and self._jwt_secret is None:
            raise ConfigurationError(
                "JWT_SECRET, ADMIN_API_KEYS, API_TOKEN: set at least one: the API serves authenticated callers only"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(
            jwt_secret=None if settings.jwt_secret is None else settings.jwt_secret.get_secret_value(),
            admin_keys=settings.admin_keys,
            service_token=None if settings.api_token is None else settings.api_token.get_secret_value(),
            service_scope=settings.api_token_scope,
        )

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of `Authorization: [Bearer ]<token>` (the prefix is optional, as in LiteMaaS)."""
        token = (authorization or "").strip()
        scheme, _, rest = token.partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
        if not token:
            unauthorized("missing bearer token (Authorization: Bearer <token>)")
        digest = _digest(token)
        known: Caller | None = None
        for key, caller in self._keys:  # no early exit: the time taken does not tell which key matched
            if hmac.compare_digest(key, digest):
                known = caller
        if known is not None:
            return known
        if token.startswith(ADMIN_KEY_PREFIX):
            unauthorized("unknown admin API key")
        if token.startswith(USER_KEY_PREFIX):
            unauthorized("LiteMaaS user API keys cannot call this API; use a LiteMaaS session token")
        if self._jwt_secret is None:
            unauthorized("unknown token (this API accepts no JWTs: JWT_SECRET is not set)")
        return _caller_of(self._claims(token, self._jwt_secret))

    @staticmethod
    def _claims(token: str, secret: str) -> dict[str, Any]:
        """The verified claims of a JWT; PyJWT's own messages are not passed on (they may quote the token)."""
        try:
            return jwt.decode(
                token, secret, algorithms=list(JWT_ALGORITHMS), options={"require": ["exp"]}, leeway=JWT_LEEWAY_SECONDS
            )
        except jwt.ExpiredSignatureError:
            unauthorized("token has expired")
        except jwt.MissingRequiredClaimError as exc:
            unauthorized(f"token has no {exc.claim} claim")
        except jwt.InvalidAlgorithmError:
            unauthorized(f"token algorithm is not accepted (only {', '.join(JWT_ALGORITHMS)})")
        except jwt.InvalidSignatureError:
            unauthorized("token signature is invalid")
        except jwt.ImmatureSignatureError:
            unauthorized("token is not valid yet")
        except jwt.DecodeError:
            unauthorized("token is malformed")
        except jwt.InvalidTokenError:
            unauthorized("token is invalid")


def _caller_of(claims: dict[str, Any]) -> Caller:
    """LiteMaaS puts the user in `userId` (`sub` is read when it is absent) and the roles in `roles`."""
    user_id = claims.get("userId", claims.get("sub"))
    if not isinstance(user_id, str) or not user_id:
        unauthorized("token names no user (userId or sub claim)")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        unauthorized("token's roles claim is not a list of strings")
    return Caller(f"user:{user_id}", user_id, frozenset(roles))
