"""Minimal synchronous clients (stdlib only) for ``continuum`` and scripts: the controller's
REST API (JSON in and out, the bearer token on every request, SSE for the event stream), an
agent's local API (``AgentClient``), and a task submission that fails over from the first to
the second while the controller is out of reach (``submit_task``, by
``shared.autonomy.Failover``; docs/operations.md, "Submitting while the controller is out of
reach")."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shared.autonomy import ConnectWait, Failover, Route
from shared.model import parse_task_spec
from shared.vocab import Level

__all__ = [
    "AgentClient",
    "AgentUnreachable",
    "ApiClient",
    "ApiError",
    "BothUnreachable",
    "Submitted",
    "deadline_refusal",
    "segment",
    "submit_task",
    "undelivered",
]


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")


class ApiClient:
    """Minimal synchronous client (stdlib only) of the controller's REST API."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        #: a shorter limit on the connection alone (``None``: ``timeout_s``); the answer
        #: still has ``timeout_s`` (a slow answer is not an unreachable controller)
        self.connect_timeout_s = connect_timeout_s

    def _request(self, method: str, path: str, body: object = None, *, stream: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        timeout = None if stream else self.timeout_s
        try:
            if self.connect_timeout_s is None:
                resp = urllib.request.urlopen(req, timeout=timeout)
            else:
                handlers = (_Http(self.connect_timeout_s), _Https(self.connect_timeout_s))
                resp = urllib.request.build_opener(*handlers).open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode(errors="replace")
            try:
                raise ApiError(exc.code, json.loads(raw)) from None
            except json.JSONDecodeError:
                raise ApiError(exc.code, raw) from None
        if stream:
            return resp
        with resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str, **query: Any) -> Any:
        return self._request("GET", path + _query(query))

    def post(self, path: str, body: object = None) -> Any:
        return self._request("POST", path, body if body is not None else {})

    def delete(self, path: str, **query: Any) -> Any:
        return self._request("DELETE", path + _query(query))

    def follow_events(self, **query: Any) -> Iterator[dict[str, Any]]:
        """Yield events from the SSE stream until the connection closes."""
        query = {k: v for k, v in query.items() if v is not None}
        qs = urllib.parse.urlencode({**query, "follow": 1})
        resp = self._request("GET", f"/api/v1/events?{qs}", stream=True)
        with resp:
            data: list[str] = []
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []


def _query(query: dict[str, Any]) -> str:
    """``?k=v&…`` of the values given (``None`` left out, a list or tuple repeated)."""
    items = [(k, v) for k, v in query.items() if v is not None]
    flat = [(k, x) for k, v in items for x in (v if isinstance(v, list | tuple) else [v])]
    return "?" + urllib.parse.urlencode(flat) if flat else ""


def segment(value: str) -> str:
    """``value`` quoted as one path segment (``/`` included)."""
    return urllib.parse.quote(value, safe="")


# -- a connection timeout of its own ---------------------------------------------------


class _ConnectTimeout(http.client.HTTPConnection):
    """Connects within ``connect_timeout``, then reads with the request's timeout."""

    def __init__(self, *args: Any, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        read, self.timeout = self.timeout, self.connect_timeout
        try:
            super().connect()
        finally:
            self.timeout = read
        self.sock.settimeout(read)


class _ConnectTimeoutTls(_ConnectTimeout, http.client.HTTPSConnection):
    pass


class _Http(urllib.request.HTTPHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self.connect_timeout = connect_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_ConnectTimeout, req, connect_timeout=self.connect_timeout)


class _Https(urllib.request.HTTPSHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self.connect_timeout = connect_timeout

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_ConnectTimeoutTls, req, connect_timeout=self.connect_timeout)


def undelivered(exc: BaseException) -> bool:
    """Whether ``exc`` says a request never reached the server: its connection was refused,
    timed out, or failed before the request was sent (urllib raises ``URLError`` only then;
    an HTTP error answer is ``ApiError``, and a request sent whose answer never came is a
    plain ``OSError``, which may have been acted on: neither counts)."""
    return (
        isinstance(exc, urllib.error.URLError)
        and not isinstance(exc, urllib.error.HTTPError)
        and isinstance(exc.reason, OSError)
    )


# -- an agent's local API --------------------------------------------------------------


#: ``sun_path``'s 108 bytes, less room for the terminating NUL and a margin (as the agent's)
_SUN_PATH = 100


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        """Connect to ``path``; one too long for ``sun_path`` (108 bytes: a deep state
        directory) is reached through a descriptor of its directory, as the agent binds it
        (docs/agent.md, "Local API")."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        directory = -1
        try:
            address = self.path
            if len(os.fsencode(address)) >= _SUN_PATH:
                head, name = os.path.split(address)
                directory = os.open(head or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                address = f"/proc/self/fd/{directory}/{name}"
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        finally:
            if directory >= 0:
                os.close(directory)
        self.sock = sock


class AgentUnreachable(OSError):
    """The connection to an agent's local API was not made: nothing was sent to it."""


class AgentClient:
    """An agent's local API (docs/agent.md, "Local API"): ``unix:PATH`` (or a bare path) is
    its Unix socket (run as the agent's user or root), ``http://HOST:PORT`` its loopback TCP
    listener and ``https://HOST:PORT`` its TLS one (the site's agents), both with the bearer
    ``token`` of its ``api.token_file``. HTTPS verifies the agent's certificate and host name
    against ``ca_file`` (else the system's CAs). A connection that is not made (a
    certificate that does not verify included) raises ``AgentUnreachable``, one that fails
    after the request may have been sent another ``OSError``; an answer other than 2xx
    ``ApiError``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        ca_file: str | None = None,
    ) -> None:
        self.url, self.token, self.timeout_s = url, token, timeout_s
        self._tls: ssl.SSLContext | None = None
        if url.startswith(("http://", "https://")):
            parsed = urllib.parse.urlsplit(url)
            if not parsed.hostname or parsed.port is None:
                raise ValueError(f"{url}: give the agent's API as {parsed.scheme}://HOST:PORT")
            self._tcp: tuple[str, int] | None = (parsed.hostname, parsed.port)
            self._socket = ""
            if parsed.scheme == "https":
                self._tls = ssl.create_default_context(cafile=ca_file)
        elif url.startswith(("unix:", "/", ".")):
            self._tcp, self._socket = None, url.removeprefix("unix:")
        else:
            raise ValueError(
                f"{url}: give the agent's API as unix:PATH, http://HOST:PORT or https://HOST:PORT"
            )
        if ca_file and self._tls is None:
            raise ValueError(f"{url}: a CA file is for an https:// agent")

    def request(self, method: str, path: str, body: object = None) -> Any:
        conn: http.client.HTTPConnection
        if self._tcp is None:
            conn = _UnixConnection(self._socket, self.timeout_s)
        elif self._tls is not None:
            conn = http.client.HTTPSConnection(
                *self._tcp, timeout=self.timeout_s, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(*self._tcp, timeout=self.timeout_s)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise AgentUnreachable(str(exc.strerror or exc)) from exc
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except http.client.HTTPException as exc:
            raise OSError(f"bad answer from the agent: {exc}") from exc
        finally:
            conn.close()
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, payload)
        return payload


# -- a submission that fails over -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submitted:
    """Where a task went (``Route``) and the answer: the controller's task, or the agent's
    ``{"id", "level", "status"}``; ``why`` says why it went to an agent, ``agent`` which."""

    route: Route
    answer: dict[str, Any]
    why: str = ""
    agent: AgentClient | None = None


class BothUnreachable(Exception):
    """Neither the controller nor any fallback agent took the task. ``agents``: each agent
    asked, with why it did not take it (``agent``: the last one's)."""

    def __init__(
        self, controller: BaseException, agents: Sequence[tuple[str, BaseException]]
    ) -> None:
        self.controller, self.agents = controller, list(agents)
        self.agent = self.agents[-1][1]
        named = len(self.agents) > 1  # one agent: the caller named it
        said = "; ".join(
            f"the agent{f' {url}' if named else ''}: {_reason(exc)}" for url, exc in self.agents
        )
        super().__init__(f"the controller: {_reason(controller)}; {said}")

    @property
    def deadline_infeasible(self) -> bool:
        """Whether an agent answered that it cannot meet the task's deadline (the others, if
        any, were out of reach or refused it too): the task is late everywhere it was
        offered, not lost in transit."""
        return any(deadline_refusal(exc) for _, exc in self.agents)


def deadline_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is an agent's ``503 deadline_infeasible``: an answer (the agent is up
    and took nothing), so the next agent may be tried; never evidence against the controller."""
    return (
        isinstance(exc, ApiError)
        and exc.status == 503
        and isinstance(exc.body, dict)
        and exc.body.get("error") == "deadline_infeasible"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, ApiError) and isinstance(exc.body, dict):
        return f"HTTP {exc.status}: {exc.body.get('message', exc.body)}"
    return str(exc)


def min_level(spec: object) -> Level | None:
    """The spec's weakest allowed level, ``None`` when it is not a valid task spec (the
    controller will say why). A spec without an id is read as if it had one (both APIs
    name it)."""
    if isinstance(spec, dict) and "id" not in spec:
        spec = {**spec, "id": "unnamed"}
    try:
        return parse_task_spec(spec).consistency.min
    except Exception:  # a ValidationError, or anything a malformed spec raises
        return None


def connect_wait(breaker: Failover, spec: dict[str, Any], fallback: bool) -> ConnectWait:
    """How long ``submit_task`` waits for the controller's connection (``Failover.connect_wait``,
    from the round trips ``breaker`` measured; RFC 6298's initial second before any): for a
    task that may fail over (a fallback given, not strong-only), never past its ``deadline_s``
    (a connection not made by then delivered nothing, so the agent cannot run it twice, and
    waiting longer only makes it later there; the agent's expected finish is unknown here:
    0)."""
    deadline = spec.get("deadline_s")
    weak = (min_level(spec) or Level.CAUSAL) is not Level.STRONG
    if fallback and weak and isinstance(deadline, int | float) and not isinstance(deadline, bool):
        return breaker.connect_wait(deadline_left_s=float(deadline))
    return breaker.connect_wait()


def submit_task(
    api: ApiClient,
    spec: dict[str, Any],
    agent: AgentClient | Sequence[AgentClient] | None,
    *,
    breaker: Failover | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Submitted:
    """Submit ``spec`` where ``shared.autonomy.Failover`` says: the controller first (the
    breaker closed; a fresh one unless the caller keeps one across submissions), waiting
    ``connect_wait`` for the connection (set on ``api``); when the request is not delivered
    (``undelivered``) and the rule allows (an agent given, the spec not strong-only), to the
    agents' local APIs in the order given. Only an RTT-based timeout opens the breaker; a
    deadline-driven give-up sends this task alone to the agents. An agent that answers
    without taking the task (``503 deadline_infeasible``: it cannot meet the deadline, or
    any other error) or cannot be connected to is followed by the next; one whose answer
    never came (it may hold the task) ends the search with that error, as two agents could
    then run it. Agents' answers never touch the breaker (it is the controller's). Raises
    the controller's error when it does not fail over, ``BothUnreachable`` when no agent
    took it."""
    agents = [] if agent is None else [agent] if isinstance(agent, AgentClient) else list(agent)
    br = breaker if breaker is not None else Failover()
    lo = min_level(spec) or Level.CAUSAL  # an invalid spec: the controller's 400 says why
    may_fail_over = bool(agents) and lo is not Level.STRONG
    failure: BaseException | None = None
    if br.route(min_level=lo, fallback=bool(agents)) is Route.CONTROLLER:
        wait = connect_wait(br, spec, bool(agents))
        api.connect_timeout_s = wait.timeout_s
        try:
            answer = api.post("/api/v1/tasks", spec)
        except urllib.error.URLError as exc:
            if not undelivered(exc):
                raise
            if wait.opens:
                br.failed(clock())
            failure = exc
            if not may_fail_over:
                raise
        else:
            br.reached(clock())
            return Submitted(Route.CONTROLLER, answer)
    assert agents  # the route is an agent only with one
    why = f"the controller at {api.url} is unreachable"
    if failure is not None:
        why += f" ({_reason(failure)})"
    declined: list[tuple[str, BaseException]] = []
    for client in agents:
        try:
            answer = client.request("POST", "/v1/tasks", spec)
        except (AgentUnreachable, ApiError) as exc:
            declined.append((client.url, exc))
            continue
        except OSError as exc:  # sent, unanswered: this agent may hold the task
            declined.append((client.url, exc))
            break
        said = "".join(f"; the agent {url}: {_reason(exc)}" for url, exc in declined)
        return Submitted(Route.AGENT, answer, why + said, client)
    raise BothUnreachable(failure or OSError(why), declined)
