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
from dataclasses import dataclass, field, replace
from pathlib import Path

from shared.errors import Problem, ValidationError
from shared.ids import check_node_id
from shared.model import NOT_A_SETTING, read_settings, rule, setting
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


LOG_LEVELS = ("debug", "info", "warning", "error")
# The grades a link may be given before its first round trip (never partitioned or failed).
PRIOR_LINKS = tuple(s.value for s in (LinkState.HEALTHY, LinkState.DEGRADED, LinkState.CRITICAL))


@dataclass(frozen=True, slots=True)
class ControllerSection:
    """``node_id`` is the controller's MQTT client identity, HLC node and envelope sender."""

    node_id: str = setting("controller", check=check_node_id)
    state_dir: str = "controller-state"
    log_level: str = setting("info", choices=LOG_LEVELS)
    # How often the control loop re-evaluates links, levels, leases and pending work.
    tick_s: float = setting(0.5, min=0, exclusive_min=True)
    # A node out of contact this long has departed: left out of system health (and so
    # of adaptive downgrades), not revived as partitioned by a restart.
    departed_after_s: float = setting(86_400.0, min=0, exclusive_min=True)
    # A finished task unchanged this long leaves memory (the store keeps it, and it
    # comes back when a node or a new dependent names it): memory holds the recent
    # work, not the whole history. 0 keeps every task in memory.
    keep_finished_s: float = setting(3_600.0, min=0)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    # 0 = ephemeral; the bound port is written to controller.ready.json
    port: int = setting(8470, min=0, max=65535)
    token: str = ""
    token_file: str = ""
    max_body_bytes: int = 1_048_576
    # Each token's bucket (cloud/api_access.py): refilled at rate_per_s, holding burst.
    rate_per_s: float = setting(50.0, min=0, exclusive_min=True)
    burst: float = setting(200.0, min=1)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = setting(1883, min=1, max=65535)
    username: str = ""
    password: str = ""
    password_file: str = ""  # the broker's password file (`init --broker-user`, `enroll`)
    client_id: str = ""  # default: "continuum-controller-<node_id>"
    protocol: str = setting("5", choices=("5", "3.1.1"))  # MQTT 5: message expiry
    keepalive_s: int = 30
    session_expiry_s: int = 86_400
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    command_expiry_s: int = 3_600  # MQTT 5 message expiry of commands on `down`


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    mode: str = setting(PlacementMode.ADAPTIVE.value, choices=tuple(m.value for m in PlacementMode))
    seed: int = 0
    weights: Mapping[str, float] = field(default_factory=dict, metadata=rule(min=0))


@dataclass(frozen=True, slots=True)
class ConsistencyConfig:
    upgrade_dwell_s: float = setting(60.0, min=0)
    lease_s: float = setting(30.0, min=0, exclusive_min=True)
    lease_margin_s: float = setting(5.0, min=0)
    max_lease_s: float = setting(300.0, min=0, exclusive_min=True)
    # How a node's link is graded for a task's level before any round trip was measured.
    prior_link: str = setting(LinkState.HEALTHY.value, choices=PRIOR_LINKS)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Failure detector and link grader (``shared.health.LinkPolicy`` fields)."""

    # The controller pings a node it has heard nothing from for this long (a node that
    # talks needs no probe); also the unit of suspicion by silence. A lost connection is
    # faster: the broker publishes the node's last will (1.5 x its MQTT keep-alive).
    heartbeat_interval_s: float = setting(40.0, min=0, exclusive_min=True)
    # Nothing heard for this many intervals: link suspected partitioned.
    suspect_missed: int = setting(3, min=1)
    # Suspected for this long: failure confirmed.
    confirm_after_s: float = setting(30.0, min=0)
    # Window of RTT/loss/disconnect samples that grades a link.
    window_s: float = setting(300.0, min=0, exclusive_min=True)


@dataclass(frozen=True, slots=True)
class IngestConfig:
    batch_max: int = setting(500, min=1)
    synchronous: str = setting("full", choices=("full", "normal"))  # SQLite PRAGMA synchronous


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The fleet's certificate authority (``cloud-controller tls``, ``cloud/tls.py``)."""

    dir: str = "tls"  # ca.crt, ca.key (0600) and the certificates issued by `tls issue`
    # Validity of issued certificates; rotate before (docs/operations.md).
    cert_days: int = setting(397, min=1)


@dataclass(frozen=True, slots=True)
class AgentsConfig:
    """How agents reach the broker: what ``cloud-controller enroll`` puts in a bundle."""

    broker_host: str = ""  # the broker as agents dial it; empty: broker.host
    broker_port: int = setting(8883, min=1, max=65535)
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
    base_dir: Path = field(default=Path("."), compare=False, metadata=NOT_A_SETTING)
    # The file this was loaded from (``None`` when built in code).
    source: Path | None = field(default=None, compare=False, metadata=NOT_A_SETTING)

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


def parse_config(
    data: Mapping[str, object], *, base_dir: Path = Path("."), source: Path | None = None
) -> ControllerConfig:
    """Build a config from parsed TOML; raises ``ValidationError`` listing every problem."""
    problems: list[Problem] = []
    cfg = read_settings(data, ControllerConfig, problems=problems)
    cfg = replace(cfg, base_dir=base_dir, source=source)
    _check_semantics(cfg, problems)
    if problems:
        raise ValidationError(problems, what="controller config")
    return cfg


def _check_semantics(cfg: ControllerConfig, problems: list[Problem]) -> None:
    """What one key's rule cannot say: rules across keys, and the score terms' names."""
    if cfg.agents.mutual_tls and not cfg.agents.tls:
        problems.append(Problem("agents.mutual_tls", "needs agents.tls = true"))
    if not cfg.api.token and not cfg.api.token_file:
        problems.append(Problem("api.token", "set api.token or api.token_file"))
    unknown = sorted(set(cfg.placement.weights) - set(TERMS))
    if unknown:
        known = ", ".join(TERMS)
        problems.append(
            Problem("placement.weights", f"unknown term(s) {', '.join(unknown)}; known: {known}")
        )


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
    token = token or secrets.token_hex(32)
    text = f"""\
# Continuum cloud controller. Relative paths are relative to this file.

[controller]
node_id = "controller"           # MQTT identity and envelope sender (broker username by default)
state_dir = {json.dumps(state_dir)}   # SQLite store, controller.ready.json
log_level = "info"
tick_s = 0.5                     # control loop period (links, levels, leases, pending work)
departed_after_s = 86400.0       # out of contact this long: departed (left out of health)
keep_finished_s = 3600.0         # a finished task quiet this long leaves memory (stays stored)

[api]
host = "127.0.0.1"
port = 8470                      # 0 = ephemeral (see controller.ready.json)
token = "{token}"                # bearer token of the REST API (or token_file = "...")
max_body_bytes = 1048576
rate_per_s = 50.0                # requests a second per token (a bucket of `burst`); 429 past it
burst = 200.0

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
heartbeat_interval_s = 40.0      # ping a node unheard this long; the unit of suspicion
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
