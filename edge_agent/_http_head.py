"""Reading an HTTP/1.1 request head for the local API (``edge_agent/api.py``).

The stdlib's ``http.server`` parsed this before; its ``email``-based header parser cost more
per request than the rest of a local submission's parsing, and the module and its ``html``
tables ~0.4 MB of an idle agent. The answers to malformed input are the same as its.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_BODY", "BadRequest", "content_length", "header", "read_head"]

MAX_BODY = 256 * 1024
_MAX_LINE = 65536  # a longer request line is 414, a longer header line 431 (as http.server)
_MAX_HEADERS = 100


class BadRequest(Exception):
    """A request that is answered ``status`` (JSON) and whose connection is then closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_head(rfile: Any) -> tuple[str, str, str, dict[str, list[str]]] | None:
    """``(method, path, version, headers)`` of the next request on ``rfile`` (header names
    lower-cased, values stripped of spaces and tabs), ``None`` when the client closed.

    414 for a request line over 64 KiB, 431 for a header line over 64 KiB or more than 100
    headers, 400 for a line that is not ``METHOD PATH HTTP/1.x``, 505 for HTTP/2 and later."""
    raw = rfile.readline(_MAX_LINE + 1)
    if not raw:
        return None
    if len(raw) > _MAX_LINE:
        raise BadRequest(414, "Request-URI Too Long")
    words = raw.decode("iso-8859-1").rstrip("\r\n").split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise BadRequest(400, "Bad request syntax")
    method, path, version = words
    numbers = version[5:].split(".")
    if len(numbers) != 2 or not all(n.isascii() and n.isdigit() and len(n) < 10 for n in numbers):
        raise BadRequest(400, "Bad request version")
    if int(numbers[0]) >= 2:
        raise BadRequest(505, "Invalid HTTP version")
    if path.startswith("//"):  # as http.server: never a scheme-relative reference
        path = "/" + path.lstrip("/")
    headers: dict[str, list[str]] = {}
    last: list[str] | None = None
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise BadRequest(431, "Line too long")
        if line in (b"\r\n", b"\n", b""):
            return method, path, version, headers
        if sum(map(len, headers.values())) >= _MAX_HEADERS:
            raise BadRequest(431, "Too many headers")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and last:  # an obsolete folded continuation line
            last[-1] += " " + text.strip(" \t")
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, "Bad header line")
        last = headers.setdefault(name.lower(), [])
        last.append(value.strip(" \t"))


def header(headers: dict[str, list[str]], name: str) -> str:
    return (headers.get(name) or [""])[0]


def content_length(headers: dict[str, list[str]]) -> tuple[int, tuple[int, str, str] | None]:
    """The body's length, or ``(0, (status, error, message))`` for a request we refuse."""
    if header(headers, "transfer-encoding"):
        return 0, (411, "length_required", "send the body with a Content-Length")
    values = {v.strip() for v in headers.get("content-length", [])}
    if not values:
        return 0, None
    if len(values) > 1:
        return 0, (400, "bad_content_length", "conflicting Content-Length headers")
    (value,) = values
    if not (value.isascii() and value.isdigit()):
        return 0, (400, "bad_content_length", "Content-Length must be a decimal byte count")
    digits = value.lstrip("0") or "0"  # leading zeros are legal; int() of huge input is not cheap
    if len(digits) > 12 or int(digits) > MAX_BODY:
        return 0, (413, "too_large", f"bodies are limited to {MAX_BODY} bytes")
    return int(digits), None
