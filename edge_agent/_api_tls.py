"""TLS for the local API's TCP listener, so that it may listen beyond loopback.

Why: a device elsewhere on the site submits to its edge agent when the controller is out of
reach (``continuum submit --fallback-agent``, docs/operations.md). Across a LAN the bearer
token must not travel in clear, so ``api.host`` may name a non-loopback address only with
``api.tls_cert_file`` and ``api.tls_key_file`` set (``edge_agent/config.py``); the token is
still required on every request.

- The server side: TLS 1.2 or later, the certificate chain and key of the config. The key
  file must be readable by the agent's user alone (``0600``, as ``broker.password_file``).
  The handshake runs in the connection's own thread under the header timeout, never in the
  accepting thread: a client that stalls it holds only its own thread, and a client that
  speaks plain HTTP to the TLS port is closed (logged in one line).
- The agent's own tools (``edge-agent status``, ``LocalClient.for_config``) connect over
  loopback and trust exactly the agent's certificate (pinned: the certificate file is the
  trust anchor, names not checked), whoever signed it.
- Remote clients verify the certificate as any HTTPS client does (a CA bundle and the host
  name: ``cloud/api_client.py``, ``AgentClient``).
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import Any

from shared.errors import Problem, ValidationError

__all__ = ["TlsListener", "pinned_context", "server_context"]


def _problem(key: str, message: str) -> ValidationError:
    return ValidationError([Problem(key, message)], what="agent config")


def _check_key_file(path: Path) -> None:
    """The private key is a regular file that group and others cannot read."""
    try:
        info = path.stat()
    except OSError as exc:
        raise _problem("api.tls_key_file", f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise _problem("api.tls_key_file", f"{path} is not a regular file")
    if stat.S_IMODE(info.st_mode) & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise _problem("api.tls_key_file", f"{path} is mode {mode:04o}: must be 0600 (chmod 600)")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The listener's context; a ``ValidationError`` naming the key when the files cannot be
    used (missing, unreadable, a key that does not match the certificate, a loose mode)."""
    _check_key_file(Path(key_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise _problem(
            "api.tls_cert_file", f"cannot use {cert_file} with {key_file}: {exc}"
        ) from exc
    return context


def pinned_context(cert_file: str) -> ssl.SSLContext:
    """A client context that accepts exactly the certificate in ``cert_file`` (and what it
    signs): the agent's own tools, over loopback, where the name in the certificate is the
    site's, not ``127.0.0.1``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the pinned certificate is the identity
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf may be the anchor
    context.load_verify_locations(cafile=cert_file)
    return context


class TlsListener:
    """Server mixin (before a ``socketserver`` TCP server): accepted connections are wrapped
    without a handshake, which then runs in the connection's thread under ``handshake_s``."""

    tls_context: ssl.SSLContext
    handshake_s: float

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()  # type: ignore[misc]
        try:
            wrapped = self.tls_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ValueError):
            sock.close()
            raise OSError("TLS wrap failed") from None  # socketserver skips the connection
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.handshake_s)
        try:
            request.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConnectionError(f"TLS handshake with {client_address} failed: {exc}") from exc
        super().finish_request(request, client_address)  # type: ignore[misc]
