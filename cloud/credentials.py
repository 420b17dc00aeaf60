"""Per-node broker credentials in the broker's password file.

The username is the node id, which the shipped ACL (``deploy/mosquitto/acl``) turns into
the node's own topic namespace through ``%u`` (and the shipped broker config into its
client id). Entries are Mosquitto 2's ``$7$`` format (PBKDF2-HMAC-SHA512, 101 iterations,
12-byte salt, base64), hashed here in Python: a password never appears in a process's
argv (``mosquitto_passwd -b`` would show it to every local user in ``ps``).

The file is rewritten atomically: a new file in the same directory, created with its
final mode (``0600`` for a new password file; an existing one keeps its owner and group
and its mode minus any bits for others), synced, then renamed over the old one.

Python API (``cloud-controller enroll`` is built on it): :func:`add_node` (refuses the
reserved names and, without ``rotate``, a node that already has an entry),
:func:`remove_node`, :func:`users`, and :func:`set_password` for the controller's own
user. :func:`add_parser` adds ``credentials list|remove`` to a command line.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shared.ids import check_node_id

__all__ = [
    "RESERVED",
    "CredentialsError",
    "add_node",
    "add_parser",
    "hash_password",
    "remove_node",
    "set_password",
    "users",
]

#: Broker users that are never a node's: the controller's own.
RESERVED = frozenset({"controller"})

_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


class CredentialsError(ValueError):
    """A credentials change that is refused (the message says why)."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto 2 password-file hash of ``password`` (``$7$`` format)."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return (
        f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


def _entries(path: Path) -> list[tuple[str, str]]:
    """``(user, line)`` of every entry, in file order (none when the file is absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [(line.split(":", 1)[0], line) for line in text.splitlines() if ":" in line]


def users(path: Path) -> list[str]:
    """The usernames in the password file, in file order."""
    return [user for user, _ in _entries(path)]


def _write(path: Path, lines: Iterable[str]) -> None:
    """Replace ``path`` atomically by ``lines``, the new file never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    mode = 0o600 if old is None else old.st_mode & 0o770
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have narrowed it
            if old is not None:
                with contextlib.suppress(PermissionError):  # only root may give it away
                    os.fchown(f.fileno(), old.st_uid, old.st_gid)
            f.write("".join(f"{line}\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def set_password(path: Path, user: str, password: str | None = None) -> str:
    """Create or replace ``user``'s entry (no policy: the controller's own user, or a
    node once :func:`add_node` has decided); return the password."""
    why = check_node_id(user)
    if why:
        raise CredentialsError(f"username {user!r} {why}")
    password = password or secrets.token_hex(24)
    lines = [line for name, line in _entries(path) if name != user]
    lines.append(f"{user}:{hash_password(password)}")
    _write(path, lines)
    return password


def add_node(
    path: Path,
    node_id: str,
    *,
    rotate: bool = False,
    password: str | None = None,
    reserved: Iterable[str] = RESERVED,
) -> str:
    """Give ``node_id`` a broker password (generated unless given) and return it.

    Refused: a reserved name (the controller's user: a node must never log in as it),
    and a node that already has an entry unless ``rotate`` (re-adding must not silently
    lock out a running device).
    """
    why = check_node_id(node_id)
    if why:
        raise CredentialsError(f"node id {node_id!r} {why}")
    if node_id in set(reserved):
        raise CredentialsError(f"{node_id!r} is reserved for the controller, not a node")
    if node_id in users(path) and not rotate:
        raise CredentialsError(
            f"{node_id!r} already has credentials; rotating them locks out the device "
            "until it gets the new password (--rotate)"
        )
    return set_password(path, node_id, password)


def remove_node(path: Path, node_id: str, *, reserved: Iterable[str] = RESERVED) -> bool:
    """Remove ``node_id``'s entry; ``False`` when it had none. A reserved name is refused."""
    if node_id in set(reserved):
        raise CredentialsError(f"{node_id!r} is reserved for the controller, not a node")
    entries = _entries(path)
    kept = [line for name, line in entries if name != node_id]
    if len(kept) == len(entries):
        return False
    _write(path, kept)
    return True


# ---------------------------------------------------------------- command line


def add_parser(
    sub: Any,
    parents: list[argparse.ArgumentParser],
    password_file: Callable[[argparse.Namespace], tuple[Path, frozenset[str]]],
) -> argparse.ArgumentParser:
    """Add ``credentials list|remove NODE`` to ``sub`` (an argparse subparsers action).

    ``password_file(args)`` returns the broker's password file and the reserved
    usernames (the controller's own) from the loaded configuration. New credentials
    come from ``cloud-controller enroll`` (a password alone is not a working agent).
    """
    p = sub.add_parser("credentials", parents=parents, help="the nodes' broker credentials")
    actions = p.add_subparsers(dest="credentials_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=parents, help="nodes with a broker password")
    remove = actions.add_parser("remove", parents=parents, help="revoke a node's password")
    remove.add_argument("node_id", metavar="NODE_ID")

    def run(args: argparse.Namespace) -> int:
        path, reserved = password_file(args)
        if args.credentials_command == "list":
            nodes = [u for u in users(path) if u not in reserved]
            print(json.dumps({"nodes": nodes}) if args.json else "\n".join(nodes))
            return 0
        try:
            removed = remove_node(path, args.node_id, reserved=reserved)
        except CredentialsError as exc:
            print(f"credentials: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps({"node_id": args.node_id, "removed": removed}))
        else:
            print(f"{'removed' if removed else 'no entry for'} {args.node_id} in {path}")
            if removed:
                print("reload the broker to apply: systemctl reload mosquitto", file=sys.stderr)
        return 0 if removed else 1

    p.set_defaults(func=run)
    return p
