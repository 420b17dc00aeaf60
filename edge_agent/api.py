"""The local API's transport: a small threading HTTP/1.1 server (``socketserver`` and a request
parser of ~40 lines, :func:`edge_agent._http_head.read_head`), and the client that talks to it.

A tiny server on purpose (an idle agent must stay under 30 MB, aiohttp alone is ~15 MB, and the
stdlib's ``http.server`` with its ``email`` header parsing and ``html`` tables cost ~0.4 MB
resident and more time per request than the rest of a local submission's parsing). It
parses nothing itself: each request is handed to ``handler(method, path, body)`` which returns
``(status, payload)``; a ``dict``/``list`` payload is sent as JSON, a ``str`` as plain text
(Prometheus ``/metrics``). The agent's handler forwards requests to its core thread, so the
journal keeps a single writer.

Who may call it (docs/agent.md, "Security"):

- ``api.transport = "unix"`` (the default): a Unix socket, ``<state_dir>/agent.sock``, mode
  0600, owned by the agent's user, in the agent's private state directory; the peer's uid
  (``SO_PEERCRED``) must be the agent's or root's.
- ``api.transport = "tcp"``: loopback ``host:port``, and every request carries
  ``Authorization: Bearer <token>`` with the token of ``api.token_file`` (created 0600 when
  absent); anything else is ``401``. With ``api.tls_cert_file``/``tls_key_file`` it is
  HTTPS, and ``host`` may be the site network's (``edge_agent/_api_tls.py``).

Bodies: ``Content-Length`` must be a plain decimal number of at most ``MAX_BODY`` bytes (a
negative, non-numeric, repeated-and-different or oversized value is ``400``/``413`` JSON and
the connection is closed unread); chunked bodies are refused (``411``). Headers must arrive
within ``HEADER_TIMEOUT_S``. No error ever reaches the caller as a traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import logging
import os
import secrets
import select
import socket
import socketserver
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any

from edge_agent import _safefs
from edge_agent._http_head import MAX_BODY, BadRequest, content_length, header, read_head
from edge_agent.config import AgentConfig

__all__ = ["HEADER_TIMEOUT_S", "MAX_BODY", "Handler", "LocalApi", "LocalClient", "api_token"]

Handler = Callable[[str, str, bytes], tuple[int, object]]
HEADER_TIMEOUT_S = 10.0
_MAX_PATH = 100  # sun_path holds 108 bytes; longer paths go through /proc/self/fd
log = logging.getLogger("edge_agent.api")


def api_token(path: Path) -> str:
    """The bearer token of the TCP API, created (0600 from the first byte) when absent."""
    with contextlib.suppress(FileExistsError):
        _safefs.write_private(path, secrets.token_hex(32).encode() + b"\n")
    fd = _safefs.open_dir(path.parent)
    try:
        raw = _safefs.read_file_at(fd, path.name, 4096)
    finally:
        os.close(fd)
    token = (raw or b"").decode("ascii", "replace").strip()
    if not token:
        raise ValueError(f"{path} holds no token")
    return token


@contextlib.contextmanager
def _unix_address(path: Path) -> Iterator[str]:
    """An address for ``bind``/``connect`` to ``path``: the path itself, or, when it is too
    long for ``sun_path``, the same name reached through a descriptor of its directory."""
    if len(os.fsencode(path)) < _MAX_PATH:
        yield str(path)
        return
    fd = _safefs.open_dir(path.parent)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


_METHODS = frozenset({"GET", "POST", "DELETE"})
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def _make_handler(dispatch: Handler, token: str | None) -> type[socketserver.BaseRequestHandler]:
    expected = f"Bearer {token}".encode() if token is not None else None

    class _Request(socketserver.StreamRequestHandler):
        """HTTP/1.1 with keep-alive, one request at a time; every answer is JSON (or the
        Prometheus text) with a ``Content-Length``."""

        timeout = HEADER_TIMEOUT_S  # a half-open request cannot hold a thread for long
        close_connection = True

        def handle(self) -> None:
            try:
                while self._one():
                    pass
            except TimeoutError:
                log.debug("api: request timed out")
            except BadRequest as exc:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self._reply(exc.status, {"error": "bad_request", "message": str(exc)})

        def _one(self) -> bool:
            """Serve one request; whether the connection stays open for another."""
            head = read_head(self.rfile)
            if head is None:
                return False
            method, path, version, headers = head
            connection = header(headers, "connection").lower()
            old = version in ("HTTP/1.0", "HTTP/0.9")  # keep-alive only when asked for
            self.close_connection = connection == "close" or (old and connection != "keep-alive")
            if method not in _METHODS:
                raise BadRequest(501, f"Unsupported method ({method!r})")
            if header(headers, "expect").lower() == "100-continue" and not old:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._serve(method, path, headers)
            return not self.close_connection

        def _serve(self, method: str, path: str, headers: dict[str, list[str]]) -> None:
            if expected is not None and not hmac.compare_digest(
                header(headers, "authorization").encode(), expected
            ):
                self._fail(401, "unauthorized", "send Authorization: Bearer <api.token_file>")
                return
            length, problem = content_length(headers)
            if problem is not None:
                self._fail(*problem)
                return
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                self.close_connection = True  # the client gave up mid-body
                return
            try:
                status, payload = dispatch(method, path, body)
            except Exception:  # a bug must not take the API thread down
                log.exception("local API handler failed")
                status, payload = 500, {"error": "internal", "message": "see the agent's log"}
            self._reply(status, payload)

        def _fail(self, status: int, error: str, message: str) -> None:
            """Answer without reading the body: the connection cannot be reused."""
            self.close_connection = True
            self._reply(status, {"error": error, "message": message})

        def _reply(self, status: int, payload: object) -> None:
            if isinstance(payload, str):
                data, ctype = payload.encode(), "text/plain; version=0.0.4"
            else:
                data, ctype = json.dumps(payload).encode(), "application/json"
            head = [
                f"HTTP/1.1 {status} {_PHRASES.get(status, '')}",
                "Server: edge-agent",
                f"Date: {formatdate(usegmt=True)}",
                f"Content-Type: {ctype}",
                f"Content-Length: {len(data)}",
            ]
            if status == 401:
                head.append("WWW-Authenticate: Bearer")
            if self.close_connection:
                head.append("Connection: close")
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

    return _Request


class _Quiet:
    """Server mixin: a failing connection is logged in one line, never a traceback on stderr.

    The listen backlog is 64, not socketserver's 5: a Unix socket refuses (EAGAIN) a
    connection beyond the backlog instead of queueing it, so a few local clients submitting
    at once got errors while the agent was busy."""

    request_queue_size = 64

    def handle_error(self, request: object, client_address: object) -> None:
        log.warning("local API connection failed", exc_info=False)


class _TcpServer(_Quiet, socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _UnixServer(_Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The socket file is created 0600 (umask during ``bind``); a stale socket left by a dead
    agent is replaced; a live one (another agent on this state directory) or anything that is
    not a socket is an error."""

    daemon_threads = True

    def server_bind(self) -> None:
        path = Path(self.server_address)  # type: ignore[arg-type]
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise FileExistsError(f"{path} exists and is not a socket")
            if _answers(path):
                raise FileExistsError(f"another agent is listening on {path}")
            path.unlink()
        previous = os.umask(0o177)
        try:
            with _unix_address(path) as address:
                self.socket.bind(address)
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)

    def verify_request(self, request: Any, client_address: object) -> bool:
        """Only the agent's own user and root, whatever the file's mode."""
        ucred = request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", ucred)
        return uid in (0, os.geteuid())


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            with _unix_address(path) as address:
                probe.connect(address)
        except OSError:
            return False
    return True


def _tls_server(
    address: tuple[str, int], request: type[socketserver.BaseRequestHandler], cert: str, key: str
) -> socketserver.BaseServer:
    from edge_agent._api_tls import TlsListener, server_context

    class _TlsServer(TlsListener, _TcpServer):
        tls_context, handshake_s = server_context(cert, key), HEADER_TIMEOUT_S

    return _TlsServer(address, request)


class LocalApi:
    """The server, listening as ``cfg.api`` says, in one daemon thread."""

    def __init__(self, cfg: AgentConfig, handler: Handler) -> None:
        self.socket_path: Path | None = None
        if cfg.api.transport == "tcp":
            request = _make_handler(handler, api_token(cfg.api_token_file))
            address = (cfg.api.host, cfg.api.port)
            self._server: socketserver.BaseServer = (
                _tls_server(address, request, cfg.api.tls_cert_file, cfg.api.tls_key_file)
                if cfg.api.tls_cert_file  # HTTPS; ssl is imported only by an agent that needs it
                else _TcpServer(address, request)
            )
        else:
            self.socket_path = cfg.api_socket
            request = _make_handler(handler, None)
            self._server = _UnixServer(str(self.socket_path), request)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-api", daemon=True
        )

    @property
    def port(self) -> int | None:
        """The TCP port, ``None`` on a Unix socket."""
        if self.socket_path is not None:
            return None
        return int(self._server.server_address[1])  # type: ignore[index]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with _unix_address(self._path) as address:
                sock.connect(address)
        except OSError:
            sock.close()
            raise
        self.sock = sock


#: How long a kept-alive connection may sit idle before it is not reused: well under the
#: server's ``HEADER_TIMEOUT_S``, after which it closes it (a request sent just as the server
#: closes could not be told from one the agent dropped).
_REUSE_IDLE_S = HEADER_TIMEOUT_S / 4


class LocalClient:
    """Talks to a running agent: ``edge-agent status``, the tests and the benchmark use it.
    Connection failures raise ``OSError``.

    By default every request has a connection of its own. With ``keep_alive`` each thread
    keeps its connection for its next requests (HTTP/1.1 keep-alive: no connect, and no
    server thread started, per request), used again only while the agent has not closed it
    and for at most ``_REUSE_IDLE_S`` idle, so a request is never sent on a connection the
    server may be closing; :meth:`close` closes them all."""

    def __init__(
        self,
        *,
        socket_path: Path | None = None,
        port: int | None = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        keep_alive: bool = False,
        pinned_cert: str | None = None,
    ) -> None:
        if (socket_path is None) == (port is None):
            raise ValueError("give a socket path or a port")
        #: HTTPS trusting exactly this certificate (the agent's own, ``api.tls_cert_file``)
        self.pinned_cert = pinned_cert
        self.socket_path, self.port, self.token = socket_path, port, token
        self.host, self.timeout = host, timeout
        self.keep_alive = keep_alive
        self._mine = threading.local()  # this thread's kept connection and its last use
        self._kept: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, cfg: AgentConfig, port: int | None = None) -> LocalClient:
        """The client for the agent ``cfg`` describes (``port`` forces TCP); the TCP port of an
        ephemeral listener comes from ``agent.ready.json``."""
        if cfg.api.transport != "tcp" and port is None:
            return cls(socket_path=cfg.api_socket)
        if port is None:
            port = cfg.api.port
            ready = cfg.state_dir / "agent.ready.json"
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                port = int(json.loads(ready.read_text(encoding="utf-8"))["api_port"])
        token = None
        with contextlib.suppress(OSError):
            token = cfg.api_token_file.read_text(encoding="ascii").strip()
        # a listener on every interface is reached over loopback
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.api.host, cfg.api.host)
        return cls(port=port, token=token, host=host, pinned_cert=cfg.api.tls_cert_file or None)

    def __str__(self) -> str:
        return str(self.socket_path) if self.socket_path else f"{self.host}:{self.port}"

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        """``(status, payload)``: JSON answers parsed, anything else as text."""
        conn = self._kept_connection() if self.keep_alive else None
        kept = conn is not None
        if conn is None:
            conn = self._connection()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except http.client.HTTPException as exc:
            self._forget(conn)
            raise OSError(f"bad answer from the agent: {exc}") from exc
        except BaseException:
            self._forget(conn)
            raise
        if self.keep_alive and not resp.will_close:
            self._keep(conn, kept)
        else:
            conn.close()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(raw)
        return resp.status, raw.decode("utf-8", "replace")

    def close(self) -> None:
        """Close the kept connections (of every thread)."""
        with self._lock:
            kept, self._kept = self._kept, []
        for conn in kept:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(self.socket_path, self.timeout)
        if self.pinned_cert is not None:
            from edge_agent._api_tls import pinned_context

            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=pinned_context(self.pinned_cert)
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _kept_connection(self) -> http.client.HTTPConnection | None:
        """This thread's kept connection when it may be used again, else ``None`` (a stale
        one is closed)."""
        conn, used = getattr(self._mine, "conn", None), getattr(self._mine, "used", 0.0)
        if conn is None:
            return None
        self._mine.conn = None
        sock = conn.sock
        if (
            sock is not None
            and time.monotonic() - used < _REUSE_IDLE_S
            and not select.select([sock], [], [], 0)[0]  # readable: closed by the agent
        ):
            return conn
        self._forget(conn)
        return None

    def _keep(self, conn: http.client.HTTPConnection, kept: bool) -> None:
        self._mine.conn, self._mine.used = conn, time.monotonic()
        if not kept:
            with self._lock:
                self._kept.append(conn)

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock, contextlib.suppress(ValueError):
            self._kept.remove(conn)
