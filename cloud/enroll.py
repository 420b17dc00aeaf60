"""One-step enrolment of a node (``cloud-controller enroll NODE``).

Creates the node's broker credentials in the broker's password file, under mutual TLS a
client certificate whose common name is the node id, and returns the ``Bundle``
(``shared/enrolment.py``) that ``edge-agent join`` turns into a complete agent config. How
agents reach the broker (host, port, TLS) comes from ``[agents]`` in controller.toml, so the
bundle cannot disagree with the broker the operator set up.
"""

from __future__ import annotations

from datetime import datetime

from shared.enrolment import Bundle
from shared.vocab import Tier

from .config import ControllerConfig
from .credentials import RESERVED, CredentialsError, add_node
from .tls import CA_CERT, TlsError, issue

__all__ = ["EnrolError", "enroll"]


class EnrolError(Exception):
    """Enrolment cannot proceed (message says what to fix)."""


def _add_node(cfg: ControllerConfig, node_id: str, password: str | None, rotate: bool) -> str:
    """Add the entry (``cloud.credentials.add_node``: the file keeps its owner and group,
    so the broker still reads it after root rewrote it, and is never readable by others);
    the controller's own user is never a node's."""
    reserved = RESERVED | {cfg.broker.username} - {""}
    try:
        return add_node(
            cfg.path(cfg.broker.password_file),
            node_id,
            rotate=rotate,
            password=password,
            reserved=reserved,
        )
    except CredentialsError as exc:
        raise EnrolError(str(exc)) from None


def enroll(
    cfg: ControllerConfig,
    node_id: str,
    *,
    now: datetime,
    tier: str = "edge",
    broker_host: str | None = None,
    broker_port: int | None = None,
    password: str | None = None,
    rotate: bool = False,
) -> Bundle:
    """Create ``node_id``'s broker user and, under mutual TLS, its client certificate;
    return its bundle. A node that has credentials already is refused unless ``rotate``
    (its new password locks out the device until it joins with the new bundle)."""
    if tier not in {t.value for t in Tier}:
        raise EnrolError(f"tier {tier!r} is not one of {', '.join(t.value for t in Tier)}")
    if not cfg.broker.password_file:
        raise EnrolError("set broker.password_file in controller.toml (the broker's password file)")
    agents = cfg.agents
    ca_pem = cert_pem = key_pem = ""
    if agents.tls:
        try:
            ca_pem = (cfg.tls_dir / CA_CERT).read_text(encoding="ascii")
        except FileNotFoundError:
            raise EnrolError(
                f"no CA in {cfg.tls_dir}: run `cloud-controller tls init` (or set agents.tls = "
                "false for a broker without TLS)"
            ) from None
    secret = _add_node(cfg, node_id, password, rotate)  # refused before a certificate is issued
    if agents.mutual_tls:
        try:
            cert, key = issue(
                cfg.tls_dir,
                node_id,
                out_dir=cfg.tls_dir / "nodes",
                server=False,
                now=now,
                days=cfg.tls.cert_days,
            )
        except TlsError as exc:
            raise EnrolError(str(exc)) from None
        cert_pem, key_pem = cert.read_text(encoding="ascii"), key.read_text(encoding="ascii")
    return Bundle(
        node_id=node_id,
        tier=tier,
        broker_host=broker_host or agents.broker_host or cfg.broker.host,
        broker_port=broker_port or agents.broker_port,
        tls=agents.tls,
        username=node_id,
        password=secret,
        ca_pem=ca_pem,
        cert_pem=cert_pem,
        key_pem=key_pem,
    )
