"""A minimal synchronous client (stdlib only) of the controller's REST API, for ``continuum``
and scripts: JSON in and out, the bearer token on every request, SSE for the event stream."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

__all__ = ["ApiClient", "ApiError", "segment"]


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")


class ApiClient:
    """Minimal synchronous client (stdlib only) of the controller's REST API."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: object = None, *, stream: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            resp = urllib.request.urlopen(req, timeout=None if stream else self.timeout_s)
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
