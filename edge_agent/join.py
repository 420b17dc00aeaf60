"""``edge-agent join BUNDLE``: turn an enrolment bundle into a complete, validated config.

The bundle (``shared/enrolment.py``, made by ``cloud-controller enroll``) carries the node
id, how to reach the broker, the broker password, the CA and, under mutual TLS, the node's
client certificate and key. ``join`` writes them beside the config (``broker.password``,
``ca.crt``, ``NODE.crt``, ``NODE.key``), then ``agent.toml`` (the commented example with this
node's values), each 0600 from its first byte and replaced atomically, and validates the
result as ``edge-agent run`` would. The agent runs as root: nothing else needs to read them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from shared.enrolment import Bundle, decode_bundle

from ._safefs import write_private
from .config import load_config, render_example

__all__ = ["JoinError", "Joined", "join", "read_bundle"]

PASSWORD_FILE = "broker.password"
CA_FILE = "ca.crt"


class JoinError(Exception):
    """The bundle cannot be applied as asked (message says why)."""


@dataclass(frozen=True, slots=True)
class Joined:
    config: Path
    bundle: Bundle
    written: tuple[Path, ...]


def read_bundle(source: str) -> Bundle:
    """``source`` is the token itself, a file holding it, or ``-`` for standard input."""
    if source == "-":
        text = sys.stdin.read()
    elif source.startswith("cj"):
        text = source
    else:
        try:
            text = Path(source).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise JoinError(f"cannot read the bundle file {source}: {exc}") from None
    return decode_bundle(text)


def _write(path: Path, data: str) -> Path:
    write_private(path, data.encode("utf-8"), replace=True)  # 0600 from its creation
    return path


def join(
    bundle: Bundle, config: Path, *, state_dir: str | None = None, force: bool = False
) -> Joined:
    """Write ``config`` and the secret files beside it for ``bundle``.

    An existing config is replaced only with ``force`` (re-enrolment: a new password or
    certificate), and then only when it belongs to the same node, so a bundle meant for
    another device cannot silently rename this one.
    """
    config = config.absolute()
    if config.exists():
        if not force:
            raise JoinError(f"{config} exists; --force replaces it (same node only)")
        current = load_config(config).node.id
        if current != bundle.node_id:
            raise JoinError(
                f"{config} is node {current!r}, the bundle is for {bundle.node_id!r}; "
                "remove the config first to make this device another node"
            )
    directory = config.parent
    directory.mkdir(parents=True, exist_ok=True)
    written = [_write(directory / PASSWORD_FILE, bundle.password + "\n")]
    values: dict[str, object] = {
        "node.id": bundle.node_id,
        "node.tier": bundle.tier,
        "broker.host": bundle.broker_host,
        "broker.port": bundle.broker_port,
        "broker.username": bundle.username,
        "broker.password_file": str(written[0]),
        "broker.tls": bundle.tls,
    }
    if state_dir:
        values["node.state_dir"] = state_dir
    if bundle.ca_pem:
        written.append(_write(directory / CA_FILE, bundle.ca_pem))
        values["broker.ca_file"] = str(written[-1])
    if bundle.mutual_tls:
        written.append(_write(directory / f"{bundle.node_id}.key", bundle.key_pem))
        values["broker.key_file"] = str(written[-1])
        written.append(_write(directory / f"{bundle.node_id}.crt", bundle.cert_pem))
        values["broker.cert_file"] = str(written[-1])
    text = render_example(values)  # validated: a bad bundle never leaves a config behind
    written.append(_write(config, text))
    load_config(config)  # as `edge-agent run` reads it, secret files included
    return Joined(config=config, bundle=bundle, written=tuple(written))
