"""Per-agent broker credentials: the password entry and the agent's config snippet.

The username is the node id, which the shipped ACL (``deploy/mosquitto/acl``)
turns into the node's own topic namespace through ``%u``. The entry is written
by ``mosquitto_passwd`` when it is installed; without it we write the same
format Mosquitto 2 reads (``$7$``: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte
salt, base64), so enrolment works on a controller host without the broker's
tools.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from shared.ids import check_node_id

__all__ = ["add_credentials", "agent_snippet", "hash_password"]

_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto 2 password-file hash of ``password`` (``$7$`` format)."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return (
        f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


def _mosquitto_passwd() -> str | None:
    return shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if os.access("/usr/bin/mosquitto_passwd", os.X_OK) else None
    )


def add_credentials(
    password_file: Path, node_id: str, password: str | None = None, *, use_tool: bool = True
) -> str:
    """Create or replace ``node_id``'s entry in ``password_file``; return the password.

    Raises ``ValueError`` for an id that cannot be a broker username / topic level.
    """
    why = check_node_id(node_id)
    if why:
        raise ValueError(f"node id {node_id!r} {why}")
    password = password or secrets.token_urlsafe(24)
    password_file.parent.mkdir(parents=True, exist_ok=True)
    tool = _mosquitto_passwd() if use_tool else None
    if tool is not None:
        args = [tool, "-b", str(password_file), node_id, password]
        if not password_file.exists():
            args.insert(1, "-c")
        subprocess.run(args, check=True, capture_output=True)
        return password
    lines = []
    if password_file.exists():
        lines = [
            line
            for line in password_file.read_text(encoding="utf-8").splitlines()
            if line and line.split(":", 1)[0] != node_id
        ]
    lines.append(f"{node_id}:{hash_password(password)}")
    tmp = password_file.with_suffix(password_file.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(password_file)
    return password


def agent_snippet(
    node_id: str, password: str, *, host: str, port: int, tls: bool, ca_file: str = ""
) -> str:
    """The ``[broker]`` part of the agent's TOML config for these credentials."""
    lines = [
        "# edge-agent config (agent.toml): identity and broker credentials of this node",
        "[node]",
        f'id = "{node_id}"',
        "",
        "[broker]",
        f'host = "{host}"',
        f"port = {port}",
        f'username = "{node_id}"',
        f'password = "{password}"',
        f"tls = {'true' if tls else 'false'}",
    ]
    if ca_file:
        lines.append(f'ca_file = "{ca_file}"')
    return "\n".join(lines) + "\n"
