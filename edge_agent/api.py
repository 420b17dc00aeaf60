"""The local HTTP API on loopback: a stdlib ``ThreadingHTTPServer`` in one daemon thread.

A tiny server on purpose (an idle agent must stay under 40 MB, aiohttp alone is ~15 MB). It
parses nothing itself: each request is handed to ``handler(method, path, body)`` which returns
``(status, payload)``; a ``dict``/``list`` payload is sent as JSON, a ``str`` as plain text
(Prometheus ``/metrics``). The agent's handler forwards requests to its core thread, so the
journal keeps a single writer.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Handler", "LocalApi"]

Handler = Callable[[str, str, bytes], tuple[int, object]]
_MAX_BODY = 256 * 1024
log = logging.getLogger("edge_agent.api")


class LocalApi:
    def __init__(self, host: str, port: int, handler: Handler) -> None:
        dispatch = handler

        class _Request(BaseHTTPRequestHandler):
            server_version = "edge-agent"
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_BODY:
                    self._reply(413, {"error": "too_large", "max_bytes": _MAX_BODY})
                    return
                body = self.rfile.read(length) if length else b""
                try:
                    status, payload = dispatch(method, self.path, body)
                except Exception:  # a bug must not take the API thread down
                    log.exception("local API handler failed")
                    status, payload = 500, {"error": "internal"}
                self._reply(status, payload)

            def _reply(self, status: int, payload: object) -> None:
                if isinstance(payload, str):
                    data, ctype = payload.encode(), "text/plain; version=0.0.4"
                else:
                    data, ctype = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: object) -> None:
                log.debug("api " + format, *args)

        self._server = ThreadingHTTPServer((host, port), _Request)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-api", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
