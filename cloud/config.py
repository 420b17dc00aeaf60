"""The controller's TOML configuration: one frozen dataclass per section.

Keys are part of the contract with operators and with the testbed, which
generates this file: once a key is published it keeps its name. Unknown keys
are an error (a typo must not silently fall back to a default), and every
problem in a file is reported at once with its dotted path, like a task spec.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shared.errors import Problem, ValidationError
from shared.ids import check_node_id
from shared.placement import TERMS
from shared.vocab import LinkState, PlacementMode

__all__ = [
    "AgentsConfig",
    "ApiConfig",
    "BrokerConfig",
    "ConsistencyConfig",
    "ControllerConfig",
    "ControllerSection",
    "HealthConfig",
    "IngestConfig",
    "PlacementConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
    "render_default_config",
]


@dataclass(frozen=True, slots=True)
class ControllerSection:
    """``node_id`` is the controller's MQTT client identity, HLC node and envelope sender."""

    node_id: str = "controller"
    state_dir: str = "controller-state"
    log_level: str = "info"
    # How often the control loop re-evaluates links, levels, leases and pending work.
    tick_s: float = 0.5
    # A node out of contact this long has departed: left out of system health (and so
    # of adaptive downgrades), not revived as partitioned by a restart.
    departed_after_s: float = 86_400.0


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8470  # 0 = ephemeral; the bound port is written to controller.ready.json
    token: str = ""
    token_file: str = ""
    max_body_bytes: int = 1_048_576


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    password_file: str = ""  # the broker's password file (`init --broker-user`, `enroll`)
    client_id: str = ""  # default: "continuum-controller-<node_id>"
    protocol: str = "5"  # "5" (MQTT 5: message expiry) or "3.1.1"
    keepalive_s: int = 30
    session_expiry_s: int = 86_400
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    command_expiry_s: int = 3_600  # MQTT 5 message expiry of commands on `down`


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    mode: str = PlacementMode.ADAPTIVE.value
    seed: int = 0
    weights: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsistencyConfig:
    upgrade_dwell_s: float = 60.0
    lease_s: float = 30.0
    lease_margin_s: float = 5.0
    max_lease_s: float = 300.0
    # How a node's link is graded for a task's level before any round trip was measured.
    prior_link: str = LinkState.HEALTHY.value


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Failure detector and link grader (``shared.health.LinkPolicy`` fields)."""

    # The controller pings every node this often; also the unit of suspicion.
    heartbeat_interval_s: float = 3.0
    # Nothing heard for this many intervals: link suspected partitioned.
    suspect_missed: int = 3
    # Suspected for this long: failure confirmed.
    confirm_after_s: float = 30.0
    # Window of RTT/loss/disconnect samples that grades a link.
    window_s: float = 300.0


@dataclass(frozen=True, slots=True)
class IngestConfig:
    batch_max: int = 500
    synchronous: str = "full"  # SQLite PRAGMA synchronous: "full" or "normal"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The fleet's certificate authority (``cloud-controller tls``, ``cloud/tls.py``)."""

    dir: str = "tls"  # ca.crt, ca.key (0600) and the certificates issued by `tls issue`
    cert_days: int = 397  # validity of issued certificates; rotate before (docs/operations.md)


@dataclass(frozen=True, slots=True)
class AgentsConfig:
    """How agents reach the broker: what ``cloud-controller enroll`` puts in a bundle."""

    broker_host: str = ""  # the broker as agents dial it; empty: broker.host
    broker_port: int = 8883
    tls: bool = True
    mutual_tls: bool = False  # enroll issues each node a client certificate (CN = node id)


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    controller: ControllerSection = field(default_factory=ControllerSection)
    api: ApiConfig = field(default_factory=ApiConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    base_dir: Path = field(default=Path("."), compare=False)
    # The file this was loaded from (``None`` when built in code).
    source: Path | None = field(default=None, compare=False)

    @property
    def state_dir(self) -> Path:
        """Relative paths in the file are relative to the file's directory."""
        return self.base_dir / self.controller.state_dir

    def path(self, value: str) -> Path:
        """A path from the file: relative ones are relative to the file's directory."""
        return self.base_dir / value

    @property
    def tls_dir(self) -> Path:
        return self.path(self.tls.dir)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "controller.db"

    @property
    def ready_path(self) -> Path:
        return self.state_dir / "controller.ready.json"

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"continuum-controller-{self.controller.node_id}"

    @property
    def token_path(self) -> Path:
        """Where the bearer token lives: ``api.token_file``, or the config file itself."""
        if self.api.token or not self.api.token_file:
            return self.source or self.base_dir / "controller.toml"
        path = Path(self.api.token_file)
        return path if path.is_absolute() else self.base_dir / path

    def api_token(self) -> str:
        """The bearer token: inline, or the first line of ``token_file``."""
        if self.api.token:
            return self.api.token
        return self.token_path.read_text(encoding="utf-8").strip()


_SECTIONS: dict[str, type] = {
    "controller": ControllerSection,
    "api": ApiConfig,
    "broker": BrokerConfig,
    "placement": PlacementConfig,
    "consistency": ConsistencyConfig,
    "health": HealthConfig,
    "ingest": IngestConfig,
    "tls": TlsConfig,
    "agents": AgentsConfig,
}


def _check_type(value: object, default: object) -> str | None:
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "must be an integer"
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "must be a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "must be a string"
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            return "must be a table"
        bad = [k for k, v in value.items() if not isinstance(v, int | float) or isinstance(v, bool)]
        return f"values must be numbers ({', '.join(bad)})" if bad else None
    return None


def _parse_section(name: str, cls: type, data: object, problems: list[Problem]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(Problem(name, "must be a table"))
        return cls()
    defaults = cls()
    known = {f.name for f in fields(cls)}
    values: dict[str, object] = {}
    for key, value in data.items():
        path = f"{name}.{key}"
        if key not in known:
            problems.append(Problem(path, "unknown key"))
            continue
        why = _check_type(value, getattr(defaults, key))
        if why:
            problems.append(Problem(path, why))
            continue
        if isinstance(getattr(defaults, key), float):
            value = float(value)  # type: ignore[arg-type]
        values[key] = value
    return replace(defaults, **values)


def parse_config(
    data: Mapping[str, object], *, base_dir: Path = Path("."), source: Path | None = None
) -> ControllerConfig:
    """Build a config from parsed TOML; raises ``ValidationError`` listing every problem."""
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    for key, value in data.items():
        cls = _SECTIONS.get(key)
        if cls is None:
            problems.append(Problem(key, "unknown section"))
            continue
        sections[key] = _parse_section(key, cls, value, problems)
    cfg = ControllerConfig(**sections, base_dir=base_dir, source=source)
    _check_semantics(cfg, problems)
    if problems:
        raise ValidationError(problems, what="controller config")
    return cfg


def _check_semantics(cfg: ControllerConfig, problems: list[Problem]) -> None:
    why = check_node_id(cfg.controller.node_id)
    if why:
        problems.append(Problem("controller.node_id", why))
    if not 0 <= cfg.api.port <= 65535:
        problems.append(Problem("api.port", "must be 0..65535"))
    for key, port in (
        ("broker.port", cfg.broker.port),
        ("agents.broker_port", cfg.agents.broker_port),
    ):
        if not 1 <= port <= 65535:
            problems.append(Problem(key, "must be 1..65535"))
    if cfg.agents.mutual_tls and not cfg.agents.tls:
        problems.append(Problem("agents.mutual_tls", "needs agents.tls = true"))
    if cfg.tls.cert_days < 1:
        problems.append(Problem("tls.cert_days", "must be at least 1"))
    if not cfg.api.token and not cfg.api.token_file:
        problems.append(Problem("api.token", "set api.token or api.token_file"))
    if cfg.broker.protocol not in ("5", "3.1.1"):
        problems.append(Problem("broker.protocol", 'must be "5" or "3.1.1"'))
    if cfg.placement.mode not in {m.value for m in PlacementMode}:
        modes = ", ".join(m.value for m in PlacementMode)
        problems.append(Problem("placement.mode", f"must be one of {modes}"))
    priors = (LinkState.HEALTHY, LinkState.DEGRADED, LinkState.CRITICAL)
    if cfg.consistency.prior_link not in {s.value for s in priors}:
        names = ", ".join(s.value for s in priors)
        problems.append(Problem("consistency.prior_link", f"must be one of {names}"))
    unknown = sorted(set(cfg.placement.weights) - set(TERMS))
    if unknown:
        known = ", ".join(TERMS)
        problems.append(
            Problem("placement.weights", f"unknown term(s) {', '.join(unknown)}; known: {known}")
        )
    negative = sorted(k for k, v in cfg.placement.weights.items() if v < 0)
    if negative:
        names = ", ".join(negative)
        problems.append(Problem("placement.weights", f"must not be negative ({names})"))
    if cfg.ingest.synchronous not in ("full", "normal"):
        problems.append(Problem("ingest.synchronous", 'must be "full" or "normal"'))
    if cfg.ingest.batch_max < 1:
        problems.append(Problem("ingest.batch_max", "must be at least 1"))
    positive = {
        "controller.tick_s": cfg.controller.tick_s,
        "controller.departed_after_s": cfg.controller.departed_after_s,
        "consistency.lease_s": cfg.consistency.lease_s,
        "consistency.max_lease_s": cfg.consistency.max_lease_s,
        "health.heartbeat_interval_s": cfg.health.heartbeat_interval_s,
        "health.suspect_missed": cfg.health.suspect_missed,
        "health.window_s": cfg.health.window_s,
    }
    problems.extend(Problem(p, "must be positive") for p, v in positive.items() if v <= 0)
    if cfg.consistency.lease_margin_s < 0:
        problems.append(Problem("consistency.lease_margin_s", "must not be negative"))
    if cfg.health.confirm_after_s < 0:
        problems.append(Problem("health.confirm_after_s", "must not be negative"))
    if cfg.consistency.upgrade_dwell_s < 0:
        problems.append(Problem("consistency.upgrade_dwell_s", "must not be negative"))


def load_config(path: Path | str) -> ControllerConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError([Problem("", f"not valid TOML: {exc}")], what=str(path)) from exc
    return parse_config(data, base_dir=path.resolve().parent, source=path.resolve())


def render_default_config(
    *,
    token: str | None = None,
    state_dir: str = "controller-state",
    broker_username: str = "",
    broker_password: str = "",
    password_file: str = "",
    agents_host: str = "",
    agents_port: int = 8883,
) -> str:
    """The file ``cloud-controller init`` writes: every key, its default, a comment; the
    arguments fill what an installation knows (``deploy/install-controller.sh``). The result
    is validated, so a bad argument is a ``ValidationError`` here, not at the next start."""
    token = token or secrets.token_urlsafe(32)
    text = f"""\
# Continuum cloud controller. Relative paths are relative to this file.

[controller]
node_id = "controller"           # MQTT identity and envelope sender (broker username by default)
state_dir = {json.dumps(state_dir)}   # SQLite store, controller.ready.json
log_level = "info"
tick_s = 0.5                     # control loop period (links, levels, leases, pending work)
departed_after_s = 86400.0       # out of contact this long: departed (left out of health)

[api]
host = "127.0.0.1"
port = 8470                      # 0 = ephemeral (see controller.ready.json)
token = "{token}"                # bearer token of the REST API (or token_file = "...")
max_body_bytes = 1048576

[broker]
host = "127.0.0.1"
port = 1883
username = {json.dumps(broker_username)}   # the controller's broker user (ACL: reads/writes all)
password = {json.dumps(broker_password)}
password_file = {json.dumps(password_file)}   # the broker's password file (`enroll` adds nodes)
protocol = "5"                   # "5" (message expiry on commands) or "3.1.1"
keepalive_s = 30
session_expiry_s = 86400         # broker keeps our subscriptions and queued `up` messages
tls = false
ca_file = ""
cert_file = ""
key_file = ""
command_expiry_s = 3600          # MQTT 5 message expiry of commands sent on `down`

[placement]
mode = "adaptive"                # cloud_only, edge_only, hybrid_static, hybrid_dynamic, adaptive
seed = 0
# weights = {{ fit = 1.0, load = 1.0 }}   # score term weights (shared.placement)

[consistency]
upgrade_dwell_s = 60.0           # good samples needed before an adaptive level goes back up
lease_s = 30.0                   # default lease of strong tasks
lease_margin_s = 5.0             # drift margin added before a strong task may be re-placed
max_lease_s = 300.0
prior_link = "healthy"           # a node's link before its first round trip (adaptive levels)

[health]
heartbeat_interval_s = 3.0       # the controller pings every node this often
suspect_missed = 3               # silent this many intervals: partitioned (suspected)
confirm_after_s = 30.0           # suspected this long: failed (confirmed)
window_s = 300.0                 # RTT / loss / disconnect window grading each link

[ingest]
batch_max = 500                  # messages merged per SQLite transaction
synchronous = "full"             # SQLite durability: "full" or "normal"

[tls]
dir = "tls"                      # the fleet's CA (`cloud-controller tls init`) and issued certs
cert_days = 397                  # validity of issued certificates (rotate before they expire)

[agents]                         # how agents reach the broker: what `enroll` bundles
broker_host = {json.dumps(agents_host)}   # as agents dial it (empty: broker.host)
broker_port = {agents_port}
tls = true
mutual_tls = false               # true: enroll issues a client certificate per node
"""
    parse_config(tomllib.loads(text))
    return text
