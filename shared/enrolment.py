"""The enrolment bundle: everything a new agent needs, in one copyable token.

``cloud-controller enroll NODE`` builds a ``Bundle`` (the node's broker credentials, how to
reach the broker, the fleet's CA and, under mutual TLS, the node's client certificate and
key); ``edge-agent join TOKEN`` decodes it into ``agent.toml`` and secret files. The token is
``cj1.`` followed by the bundle as compact JSON in unpadded URL-safe base64, so it survives a
terminal, a chat window or a shell argument unchanged. It carries a password and possibly a
private key: it is a secret until ``join`` has run.

This module is the contract between the two (they never import each other): pure encoding
and validation, no file or network access.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields

from shared.errors import Problem, ValidationError
from shared.ids import check_node_id
from shared.vocab import Tier

__all__ = ["TOKEN_PREFIX", "Bundle", "decode_bundle", "encode_bundle"]

TOKEN_PREFIX = "cj1."


@dataclass(frozen=True, slots=True)
class Bundle:
    """One node's enrolment. PEM fields are empty when not used (no TLS / no mutual TLS)."""

    node_id: str
    tier: str
    broker_host: str
    broker_port: int
    tls: bool
    username: str
    password: str
    ca_pem: str = ""
    cert_pem: str = ""
    key_pem: str = ""

    @property
    def mutual_tls(self) -> bool:
        return bool(self.cert_pem)


def encode_bundle(bundle: Bundle) -> str:
    raw = json.dumps(asdict(bundle), separators=(",", ":"), sort_keys=True).encode()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _problems(data: Mapping[str, object]) -> list[Problem]:
    problems: list[Problem] = []
    for f in fields(Bundle):
        if f.name not in data:
            if f.default is MISSING:
                problems.append(Problem(f.name, "missing"))
            continue
        kind = _KINDS.get(str(f.type), str)
        value = data[f.name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(Problem(f.name, f"must be a {kind.__name__}"))
    problems.extend(Problem(k, "unknown key") for k in sorted(set(data) - _NAMES))
    if problems:
        return problems
    why = check_node_id(data["node_id"])
    if why:
        problems.append(Problem("node_id", why))
    if data["tier"] not in {t.value for t in Tier}:
        problems.append(Problem("tier", f"must be one of {', '.join(t.value for t in Tier)}"))
    if not data["broker_host"]:
        problems.append(Problem("broker_host", "must not be empty"))
    if not 1 <= int(data["broker_port"]) <= 65535:  # type: ignore[call-overload]
        problems.append(Problem("broker_port", "must be 1..65535"))
    if data["tls"] and not data.get("ca_pem"):
        problems.append(Problem("ca_pem", "TLS needs the CA certificate"))
    if bool(data.get("cert_pem")) != bool(data.get("key_pem")):
        problems.append(Problem("key_pem", "a client certificate needs its key, and back"))
    if data.get("cert_pem") and not data["tls"]:
        problems.append(Problem("cert_pem", "a client certificate needs tls = true"))
    return problems


_NAMES = frozenset(f.name for f in fields(Bundle))
_KINDS: dict[str, type] = {"int": int, "bool": bool}


def decode_bundle(token: str) -> Bundle:
    """Parse a token from ``encode_bundle``; ``ValidationError`` lists what is wrong with it."""
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX):
        msg = f"not an enrolment bundle (those start with {TOKEN_PREFIX!r})"
        raise ValidationError([Problem("", msg)], what="enrolment bundle")
    body = token[len(TOKEN_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError) as exc:
        problem = Problem("", f"damaged (copied incompletely?): {exc}")
        raise ValidationError([problem], what="enrolment bundle") from None
    if not isinstance(data, dict):
        raise ValidationError([Problem("", "must be a JSON object")], what="enrolment bundle")
    problems = _problems(data)
    if problems:
        raise ValidationError(problems, what="enrolment bundle")
    return Bundle(**{f.name: data.get(f.name, f.default) for f in fields(Bundle)})
