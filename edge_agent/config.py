"""The agent's TOML configuration: one frozen dataclass per section, defaults filled.

The testbed generates these files, so the keys are a contract (docs/agent.md lists them);
unknown keys are rejected rather than ignored, because a misspelt ``lease_margin_s`` silently
falling back to a default is the kind of mistake that only shows under a partition.
``EXAMPLE_CONFIG`` is what ``edge-agent init`` writes (``render_example`` fills in a device's
values, for the install script); a test parses it, so it cannot rot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shared.errors import Problem, ValidationError
from shared.ids import check_node_id
from shared.model import read_settings, rule, setting
from shared.protocol import MAX_SLOTS
from shared.vocab import Tier

__all__ = [
    "EXAMPLE_CONFIG",
    "AgentConfig",
    "ApiConfig",
    "AutonomyConfig",
    "BrokerConfig",
    "DiscoveryConfig",
    "ExecutorConfig",
    "MetricsConfig",
    "NodeConfig",
    "bind_address",
    "is_loopback",
    "load_config",
    "parse_config",
    "render_example",
    "take_environ",
]

PASSWORD_ENV = "EDGE_AGENT_BROKER_PASSWORD"
log = logging.getLogger("edge_agent.config")


LOG_LEVELS = ("debug", "info", "warning", "error")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this host only (where the local API needs no TLS)."""
    return host in ("127.0.0.1", "::1", "localhost")


def bind_address(bind: str) -> tuple[str, int] | None:
    """``host:port`` (``[::]:9464`` for IPv6) as a socket address, ``None`` when it is not
    one. Port 0 is an ephemeral port (the bound one goes to ``agent.ready.json``)."""
    host, sep, port = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not (sep and host and port.isascii() and port.isdigit() and int(port) <= 65535):
        return None
    return host, int(port)


def _bind(bind: str) -> str | None:
    ok = not bind or bind_address(bind) is not None
    return None if ok else "must be host:port (e.g. 127.0.0.1:9464), or empty for none"


def _callable_target(target: str) -> str | None:
    module, _, func = target.partition(":")
    return None if module and func else "must be 'module:function'"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: str = ""
    tier: str = setting("edge", choices=tuple(t.value for t in Tier))
    labels: dict[str, str] = field(default_factory=dict)
    state_dir: str = setting("/var/lib/edge-agent", non_empty=True)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the MQTT broker is. An empty ``host`` means: find it with zeroconf."""

    host: str = ""
    port: int = setting(1883, min=0, max=65535)
    username: str = ""
    password: str = ""
    password_file: str = ""  # the password's first line (0600; written by `edge-agent join`)
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 6  # the broker publishes our last will 1.5 x this after we vanish
    reconnect_min_s: float = 0.5  # jittered probes: a restored link is found within ~2 s
    reconnect_max_s: float = 2.0


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The local API: a Unix socket only the agent's user can open, unless TCP is asked for
    explicitly, and then every request needs the bearer token of ``token_file``. TCP listens
    on loopback unless TLS is configured (``tls_cert_file`` and ``tls_key_file``): then
    ``host`` may be the site network's address, so that the site's devices can fail over to
    this agent (``edge_agent/_api_tls.py``)."""

    transport: str = setting("unix", choices=("unix", "tcp"))
    socket: str = ""  # unix: empty = <state_dir>/agent.sock
    host: str = setting("127.0.0.1", non_empty=True)  # tcp: loopback unless TLS
    port: int = setting(8787, min=0, max=65535)  # tcp: 0 = ephemeral (see agent.ready.json)
    token_file: str = ""  # tcp: empty = <state_dir>/api.token (created 0600 when absent)
    tls_cert_file: str = ""  # tcp: PEM certificate (chain) the listener presents
    tls_key_file: str = ""  # tcp: its PEM private key (0600)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The agent's Prometheus endpoint (``edge_agent/metrics.py``), ``GET /metrics`` on
    ``bind``; empty (the default) serves none. It has no token: bind it where only the
    scraper reaches it (loopback, or the management network)."""

    bind: str = setting("", check=_bind)


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    enabled: bool = True
    interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    browse_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class AutonomyConfig:
    """Timing of the sync loop. ``period_s`` is the autonomy period T (docs/agent.md)."""

    period_s: float = setting(15.0, min=0, exclusive_min=True)
    heartbeat_s: float = 0.0  # 0 = 2 * period_s: a heartbeat only after this long unanswered
    telemetry_s: float = 5.0  # sampled this often; sent on a change or every 60 s
    lease_margin_s: float = 0.5  # drift margin subtracted from every lease deadline
    batch_max: int = setting(64, min=1)
    antientropy_s: float = setting(0.0, min=0)  # digest exchange while connected; 0 = 2 * period_s
    retain_finished_s: float = setting(604_800.0, min=0)  # finished records kept; 0 = forever
    # At most this many finished, acknowledged records kept, the oldest forgotten first
    # (each ~6.5 kB in memory: a busy device would otherwise hold days of work); 0 = no bound.
    retain_finished_max: int = setting(2_000, min=0)


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    max_concurrent: int = setting(4, min=1, max=MAX_SLOTS)  # advertised in the hello
    run_as: str = "nobody"  # used only when the agent runs as root
    # RLIMIT_NPROC of run_as (when tasks run as run_as); 0 = none
    max_task_processes: int = setting(256, min=0)
    kill_grace_s: float = 5.0
    shutdown_grace_s: float = 10.0
    output_tail_bytes: int = 16384  # per stream; sent with the attempt (continuum logs)
    min_free_memory_mb: float = 64.0  # below this, queued low-priority work is shed
    max_cpu_percent: float = 95.0
    # name -> "module:function"
    callables: dict[str, str] = field(default_factory=dict, metadata=rule(check=_callable_target))


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node: NodeConfig = field(default_factory=NodeConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    autonomy: AutonomyConfig = field(default_factory=AutonomyConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    log_level: str = setting("info", choices=LOG_LEVELS)

    @property
    def state_dir(self) -> Path:
        return Path(self.node.state_dir)

    @property
    def api_socket(self) -> Path:
        return Path(self.api.socket) if self.api.socket else self.state_dir / "agent.sock"

    @property
    def api_token_file(self) -> Path:
        return Path(self.api.token_file) if self.api.token_file else self.state_dir / "api.token"

    @property
    def heartbeat_s(self) -> float:
        return self.autonomy.heartbeat_s or 2 * self.autonomy.period_s

    @property
    def antientropy_s(self) -> float:
        return self.autonomy.antientropy_s or 2 * self.autonomy.period_s


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Build the config from parsed TOML, listing every problem at once.

    ``broker.password`` may come from ``EDGE_AGENT_BROKER_PASSWORD`` (in ``env``) when neither
    ``password`` nor ``password_file`` is set. Files are not read here: ``load_config`` does
    (the password file, the config file's mode).
    """
    problems: list[Problem] = []
    cfg = read_settings(data, AgentConfig, problems=problems)
    env = os.environ if env is None else env
    if not cfg.broker.password and not cfg.broker.password_file and env.get(PASSWORD_ENV):
        cfg = replace(cfg, broker=replace(cfg.broker, password=env[PASSWORD_ENV]))
    problems.extend(_semantic_problems(cfg))
    if problems:
        raise ValidationError(problems, what="agent config")
    return cfg


def _semantic_problems(cfg: AgentConfig) -> list[Problem]:
    """What one key's rule cannot say: the node id (required), and rules across keys."""
    problems = []
    why = check_node_id(cfg.node.id)
    if why:
        problems.append(Problem("node.id", why))
    if cfg.broker.password and cfg.broker.password_file:
        problems.append(Problem("broker.password_file", "set password or password_file, not both"))
    if cfg.broker.reconnect_min_s <= 0 or cfg.broker.reconnect_max_s < cfg.broker.reconnect_min_s:
        problems.append(Problem("broker.reconnect_min_s", "need 0 < reconnect_min_s <= max"))
    if not cfg.broker.host and not cfg.discovery.enabled:
        problems.append(Problem("broker.host", "empty host needs discovery.enabled = true"))
    return problems + _api_problems(cfg.api)


def _api_problems(api: ApiConfig) -> list[Problem]:
    """TLS goes with TCP, cert with key; beyond loopback only with TLS (the token must not
    cross a network in clear)."""
    problems = []
    tls = bool(api.tls_cert_file or api.tls_key_file)
    if tls and api.transport != "tcp":
        problems.append(Problem("api.tls_cert_file", 'TLS needs transport = "tcp"'))
    if tls and not (api.tls_cert_file and api.tls_key_file):
        problems.append(Problem("api.tls_key_file", "set both tls_cert_file and tls_key_file"))
    if not tls and not is_loopback(api.host):
        problems.append(
            Problem(
                "api.host",
                "the local API listens on loopback only, unless tls_cert_file and "
                "tls_key_file are set",
            )
        )
    return problems


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a TOML file; a TOML syntax error is reported as one problem.

    Secrets: ``EDGE_AGENT_BROKER_PASSWORD`` is taken *out* of the environment (and wiped from
    the process's initial environment, ``/proc/<pid>/environ``), so nothing the agent starts
    inherits it; ``broker.password_file`` must be ``0600`` or stricter (refused otherwise); a
    config file with an inline password that group or others may read is warned about.
    """
    config_path = Path(path)
    text = config_path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError([Problem("", f"not valid TOML: {exc}")], what="agent config") from exc
    from_env = take_environ(PASSWORD_ENV)
    cfg = parse_config(data, env={PASSWORD_ENV: from_env} if from_env else {})
    if cfg.broker.password and _loose(config_path.stat().st_mode):
        log.warning(
            "config holds broker.password but group or others may read it: chmod 600 %s, "
            "or move the password to broker.password_file",
            config_path,
        )
    if not cfg.broker.password_file:
        return cfg
    password = _read_password_file(Path(cfg.broker.password_file))
    return replace(cfg, broker=replace(cfg.broker, password=password))


def _loose(mode: int) -> bool:
    """Group or others have any right on the file."""
    return bool(stat.S_IMODE(mode) & 0o077)


def _read_password_file(path: Path) -> str:
    problem = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ValidationError(
            [Problem("broker.password_file", f"cannot open {path}: {exc.strerror}")],
            what="agent config",
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            problem = f"{path} is not a regular file"
        elif _loose(info.st_mode):
            problem = f"{path} is mode {stat.S_IMODE(info.st_mode):04o}: must be 0600 (chmod 600)"
        password = fh.read(4096).decode("utf-8", "replace").rstrip("\r\n")
    if problem is None and not password:
        problem = f"{path} is empty"
    if problem is not None:
        raise ValidationError([Problem("broker.password_file", problem)], what="agent config")
    return password


def take_environ(name: str) -> str | None:
    """Remove ``name`` from the environment and return its value. Besides ``os.environ``, the
    value is overwritten in the process's initial environment block, which
    ``/proc/<pid>/environ`` shows for the life of the process (``unsetenv`` alone leaves it
    there)."""
    value = os.environ.get(name)
    if value is None:
        return None
    import ctypes  # only when a secret came through the environment: idle memory (agent.md)

    prefix = name.encode() + b"="
    with contextlib.suppress(OSError, ValueError, AttributeError):
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
        index = 0
        while environ[index]:
            address = environ[index]
            entry = ctypes.string_at(address)
            if entry.startswith(prefix):
                ctypes.memset(address + len(prefix), ord("*"), len(entry) - len(prefix))
            index += 1
    os.environ.pop(name, None)
    return value


EXAMPLE_CONFIG = """\
# edge-agent configuration (TOML). Every key is optional except node.id; the values
# shown are the defaults but broker.host (empty by default: find the broker with
# zeroconf). Reference: docs/agent.md.

log_level = "info"                # debug | info | warning | error

[node]
id = "edge-1"                     # letters, digits, . _ - ; also the broker username
tier = "edge"                     # device | edge | regional | cloud
state_dir = "/var/lib/edge-agent" # journal.sqlite, runs/, agent.ready.json
[node.labels]                     # placement constraints match these, e.g.:
# site = "plant-a"

[broker]
host = "127.0.0.1"                # empty = find it with zeroconf (_mqtt._tcp.local.)
port = 1883
username = ""                     # per-agent credentials: username = node id
password = ""                     # inline: keep this file 0600; or EDGE_AGENT_BROKER_PASSWORD
password_file = ""                # or read it from this file (0600; `edge-agent join`)
tls = false
ca_file = ""                      # CA bundle; with cert_file/key_file: mutual TLS
cert_file = ""
key_file = ""
keepalive_s = 6                   # the broker's last will for us comes 1.5 x this after a loss
reconnect_min_s = 0.5             # jittered exponential reconnect, min → max
reconnect_max_s = 2.0

[api]
transport = "unix"                # unix: socket 0600 in the state dir; tcp: loopback + token
socket = ""                       # unix: empty = <state_dir>/agent.sock
host = "127.0.0.1"                # tcp: loopback, or the site's address with TLS below
port = 8787                       # tcp: 0 = ephemeral (see agent.ready.json)
token_file = ""                   # tcp: bearer token; empty = <state_dir>/api.token (made 0600)
tls_cert_file = ""                # tcp: PEM certificate (chain): HTTPS, and any host allowed
tls_key_file = ""                 # tcp: its private key (0600)

[metrics]
bind = ""                         # Prometheus /metrics on host:port, e.g. "0.0.0.0:9464"; "" = off

[discovery]
enabled = true                    # advertise _continuum-agent._tcp.local.; browse for a broker
interfaces = ["127.0.0.1"]
browse_timeout_s = 5.0

[autonomy]
period_s = 15.0                   # T: connectivity grades at T/4, T/2, T of ack age
heartbeat_s = 0.0                 # 0 = 2 * period_s; only when the controller was quiet this long
telemetry_s = 5.0                 # sampled this often; sent on a change or every 60 s
lease_margin_s = 0.5              # drift margin subtracted from strong-task lease deadlines
batch_max = 64                    # CRDT deltas per `up` message
antientropy_s = 0.0               # digest exchange period while connected; 0 = 2 * period_s
retain_finished_s = 604800.0      # drop finished, acknowledged records after this; 0 = keep
retain_finished_max = 2000        # and keep at most this many of them (oldest go); 0 = no bound

[executor]
max_concurrent = 4                # attempts at once; advertised in hello (capacity.slots)
run_as = "nobody"                 # tasks run as this user when the agent runs as root
max_task_processes = 256          # RLIMIT_NPROC of run_as; 0 = no limit
kill_grace_s = 5.0                # SIGTERM → SIGKILL on timeout, cancel or fencing
shutdown_grace_s = 10.0           # SIGTERM of the agent: running tasks may finish this long
output_tail_bytes = 16384         # stdout/stderr tails kept per attempt, sent with its end
min_free_memory_mb = 64.0         # below: admit nothing, shed lowest-priority queued work
max_cpu_percent = 95.0
[executor.callables]              # allow-list of Python callables tasks may name
# checksum = "mypkg.jobs:checksum"
"""


def render_example(values: Mapping[str, object]) -> str:
    """``EXAMPLE_CONFIG`` with some keys set (``{"node.id": "edge-7", "broker.port": 8883}``),
    comments kept; the result is validated like any config file. Unknown keys are a
    ``ValidationError``, as in a config file."""
    pending = dict(values)
    lines = []
    section = ""
    for line in EXAMPLE_CONFIG.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        key, sep, rest = line.partition(" = ")
        name = f"{section}.{key.strip()}"
        if sep and not line.startswith("#") and name in pending:
            value = json.dumps(pending.pop(name))  # a TOML string, number or boolean
            comment = rest[rest.find("#") :] if "#" in rest else ""
            line = f"{key} = {value}".ljust(len(key) + 3 + max(len(rest) - len(comment), 0))
            line = (line + comment).rstrip()
        lines.append(line)
    if pending:
        problems = [Problem(name, "not a key of the example config") for name in pending]
        raise ValidationError(problems, what="agent config")
    text = "\n".join(lines) + "\n"
    parse_config(tomllib.loads(text), env={})
    return text
