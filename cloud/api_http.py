"""HTTP edges of the REST API: problem responses, bounded JSON bodies, and the server
below the router (header-read timeout, the HTTP parser's refusals as JSON).

Everything the API answers with an error is ``application/problem+json`` (RFC 9457):
``type``, ``title``, ``status``, plus the API's own ``error`` (a stable kind) and
``message`` (for people), whoever produced it: a handler, a middleware, the router
(404/405) or aiohttp's HTTP parser before any of them ran (an over-long URL or header,
a ``Content-Length`` that is not a number).

Request bodies are read whole (the app's ``client_max_size`` bounds them) and checked
before ``json.loads`` sees them: nesting depth and number length are bounded, so a
100,000-deep array or a 5,000-digit integer is a 400, not a ``RecursionError`` or a
``ValueError`` escaping as a 500. Strings must not hold NUL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from shared.errors import Problem, SpecConflictError, ValidationError

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_CHARS",
    "PROBLEM_JSON",
    "NotFound",
    "error_middleware",
    "json_response",
    "parse_json_body",
    "problem",
    "start_api",
]

log = logging.getLogger("cloud.api")

PROBLEM_JSON = "application/problem+json"
#: Deepest nesting of arrays/objects accepted (a spec's ``args`` nest at most 32 levels).
MAX_JSON_DEPTH = 64
#: Longest number literal accepted, in characters.
MAX_NUMBER_CHARS = 100
#: Seconds a client has from opening a connection (or starting a request on a
#: kept-alive one) to the end of the request's headers.
HEADER_TIMEOUT_S = 10.0
#: Seconds an idle kept-alive connection is held.
KEEPALIVE_S = 30.0

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_LONG_NUMBER = re.compile(rb"[-+0-9.eE]{%d,}" % (MAX_NUMBER_CHARS + 1))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_response(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def problem(status: int, error: str, message: str, **extra: object) -> web.Response:
    """An error response: RFC 9457 fields plus the API's ``error`` and ``message``."""
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "error": error,
        "message": message,
        **extra,
    }
    return web.Response(
        status=status, text=json.dumps(body, default=str), content_type=PROBLEM_JSON
    )


def parse_json_body(raw: bytes) -> Any:
    """Decode a request body, refusing before parsing what would exhaust the parser.

    Raises :class:`ValidationError` (rendered as 400) for anything but JSON within
    :data:`MAX_JSON_DEPTH` and :data:`MAX_NUMBER_CHARS`, or with NUL in a string.
    """
    outside = _STRING.sub(b'""', raw)  # strings cannot open brackets or hold numbers
    brackets = outside.translate(None, _NOT_BRACKETS)
    if len(brackets) > MAX_JSON_DEPTH and (
        max(itertools.accumulate(_STEP[b] for b in brackets)) > MAX_JSON_DEPTH
    ):
        raise _invalid(f"nesting deeper than {MAX_JSON_DEPTH} levels")
    if _LONG_NUMBER.search(outside):
        raise _invalid(f"a number longer than {MAX_NUMBER_CHARS} characters")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise _invalid(f"body is not JSON: {exc}") from None
    where = _nul_path(data, "")
    if where is not None:
        raise ValidationError([Problem(where, "must not contain NUL")], what="body")
    return data


def _invalid(message: str) -> ValidationError:
    return ValidationError([Problem("", message)], what="body")


def _nul_path(value: Any, path: str) -> str | None:
    """The path of the first string (or key) holding NUL, else ``None``."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return sub
            found = _nul_path(item, sub)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


class NotFound(LookupError):
    """An id the controller does not know (rendered as 404)."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.what = what
        self.ident = ident


def error_middleware(max_body: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every error as problem JSON: typed errors, the router's 404/405, and the rest
    (logged) as 500."""

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ValidationError as exc:
            return problem(400, "validation", str(exc), **_validation_extra(exc))
        except NotFound as exc:
            return problem(404, "not_found", str(exc), what=exc.what, id=exc.ident)
        except SpecConflictError as exc:
            return problem(409, "conflict", str(exc))
        except web.HTTPRequestEntityTooLarge:
            return problem(413, "too_large", f"body exceeds {max_body} bytes")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            resp = problem(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
            if "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return problem(500, "internal", "internal error (logged by the controller)")

    return errors


def _validation_extra(exc: ValidationError) -> dict[str, object]:
    extra = exc.as_dict()
    extra.pop("error", None)
    return extra


# ---------------------------------------------------------------- below the router


class _ApiHandler(RequestHandler):
    """aiohttp's per-connection protocol, with its parser errors rendered as problem
    JSON and a deadline on each request's headers (a client that opens connections
    and trickles headers must not hold them: slowloris)."""

    def __init__(self, manager: web.Server, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_body: Any = None  # the payload of the last request whose headers arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm()
            self._last_body = self._messages[-1][1] if self._messages else None
        elif self._header_timer is None and (self._last_body is None or self._last_body.is_eof()):
            self._arm()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request Timeout",
                "status": 408,
                "error": "timeout",
                "message": f"request headers not received within {self._header_timeout_s:g} s",
            }
        ).encode()
        head = (
            f"HTTP/1.1 408 Request Timeout\r\nContent-Type: {PROBLEM_JSON}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        transport.write(head + body)  # type: ignore[attr-defined]
        transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if already sent
        if status >= 500:
            resp = problem(status, "internal", "internal error (logged by the controller)")
        else:
            resp = problem(status, "bad_request", message or HTTPStatus(status).phrase)
        resp.force_close()
        return resp


class _ApiServer(web.Server):
    """Makes :class:`_ApiHandler` protocols (aiohttp's ``Server`` makes its own)."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return _ApiHandler(
            self, loop=self._loop, header_timeout_s=self.header_timeout_s, **self._kwargs
        )


class _ApiRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app, as AppRunner does
        return _ApiServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            header_timeout_s=self.header_timeout_s,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )


async def start_api(
    app: web.Application,
    host: str,
    port: int,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    keepalive_s: float = KEEPALIVE_S,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port); return the runner (to
    ``cleanup()``) and the port it listens on."""
    runner = _ApiRunner(
        app,
        header_timeout_s=header_timeout_s,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=keepalive_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)
