"""Who may call the REST API, how often, and the record of what they changed.

**Tokens.** The API's token text (``[api] token`` or the ``token_file``) holds one or
more tokens, one per line (blank lines and ``#`` comments ignored)::

    <secret>                       # one field: an admin token named "default"
    <name> <role> <secret>         # role: admin (everything) or read (GET only)

A request names itself with ``Authorization: Bearer <secret>``; every configured
secret is compared in constant time. A read-only token on a mutating route is 403.

**Rate limit.** Each token has a bucket of ``burst`` requests refilled at ``rate_per_s``;
an empty bucket answers 429 with ``Retry-After``.

**Audit.** Every mutating request (POST, PUT, PATCH, DELETE) to ``/api/`` is logged on the
``continuum.audit`` logger, whatever its outcome: ``actor`` (token name, or ``null``
when none matched), ``method``, ``route``, ``status``, ``outcome``.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web

from .api_http import problem

__all__ = ["ApiToken", "RateLimit", "Role", "access_middlewares", "parse_tokens"]

audit_log = logging.getLogger("continuum.audit")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACTOR_KEY = web.RequestKey("actor", str)


class Role(StrEnum):
    ADMIN = "admin"
    READ = "read"


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: Role
    secret: str = field(repr=False)


def parse_tokens(text: str) -> tuple[ApiToken, ...]:
    """The tokens of a token text (module docstring); ``ValueError`` says which line is wrong."""
    tokens: list[ApiToken] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) == 1:
            tokens.append(ApiToken("default", Role.ADMIN, words[0]))
            continue
        if len(words) != 3 or words[1] not in tuple(Role):
            raise ValueError(
                f"token line {number}: expected '<secret>' or '<name> admin|read <secret>'"
            )
        tokens.append(ApiToken(words[0], Role(words[1]), words[2]))
    if not tokens:
        raise ValueError("the API needs a bearer token")
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise ValueError(f"token names must be unique: {sorted(names)}")
    return tuple(tokens)


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate_per_s: float = 50.0
    burst: float = 200.0


class _Buckets:
    """Token buckets per key; ``take`` returns ``None`` or the seconds to wait."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.clock = clock
        self.state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float | None:
        now = self.clock()
        tokens, at = self.state.get(key, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + (now - at) * self.limit.rate_per_s)
        if tokens < 1.0:
            self.state[key] = (tokens, now)
            return (1.0 - tokens) / self.limit.rate_per_s
        self.state[key] = (tokens - 1.0, now)
        return None


def _match(tokens: Iterable[ApiToken], presented: bytes) -> ApiToken | None:
    found = None
    for token in tokens:  # no early exit: the time taken does not say which one matched
        if hmac.compare_digest(token.secret.encode(), presented):
            found = token
    return found


def access_middlewares(
    tokens: tuple[ApiToken, ...],
    *,
    max_body: int,
    rate: RateLimit,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Callable[..., Awaitable[web.StreamResponse]], ...]:
    """``(audit, access)``: ``audit`` must be outermost (it records the final status),
    ``access`` innermost (authentication, role, rate limit, declared body size)."""
    buckets = _Buckets(rate, clock)

    @web.middleware
    async def audit(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.method not in _MUTATING or not request.path.startswith("/api/"):
            return await handler(request)
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            audit_log.info(
                "api %s %s -> %d",
                request.method,
                request.path,
                status,
                extra={
                    "fields": {
                        "actor": request.get(ACTOR_KEY),
                        "method": request.method,
                        "route": request.path,
                        "status": status,
                        "outcome": _outcome(status),
                        "remote": request.remote,
                    }
                },
            )

    @web.middleware
    async def access(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            token = None
            if scheme.lower() == "bearer":
                token = _match(tokens, presented.strip().encode())
            if token is None:
                resp = problem(401, "unauthorized", "missing or wrong bearer token")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="continuum"'
                return resp
            request[ACTOR_KEY] = token.name
            wait = buckets.take(token.name)
            if wait is not None:
                resp = problem(429, "rate_limited", f"token {token.name!r} is over its rate")
                resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                return resp
            if token.role is Role.READ and request.method in _MUTATING:
                return problem(403, "forbidden", f"token {token.name!r} is read-only")
        if request.content_length is not None and request.content_length > max_body:
            return problem(413, "too_large", f"body exceeds {max_body} bytes")
        return await handler(request)

    return audit, access


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    if status == 429:
        return "rate_limited"
    return "refused" if status < 500 else "error"
