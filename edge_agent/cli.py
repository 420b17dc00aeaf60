"""``edge-agent``: ``join`` turns an enrolment bundle into a config, ``init`` writes an example
config, ``run`` runs the daemon, ``status`` asks a running agent through its local API.

The config is ``--config``, else ``$EDGE_AGENT_CONFIG``, else ``/etc/edge-agent/agent.toml``
(where ``deploy/install-agent.sh`` puts it); ``--config`` and ``--json`` are accepted before or
after the command."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import signal
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path

from edge_agent import __version__
from edge_agent._safefs import write_private
from edge_agent.config import EXAMPLE_CONFIG, load_config, render_example
from shared.completion import add_completion_command, completion_script
from shared.errors import ValidationError

__all__ = ["main"]

_DESCRIPTION = """\
Continuum edge agent: runs the tasks the controller places on this device, keeps running
them when the uplink is gone (journal in SQLite, sync over MQTT when it returns), and accepts
local work on an HTTP API (a Unix socket by default; TCP on loopback, or beyond it with TLS).

  edge-agent join BUNDLE                config, password and certificates from an enrolment
                                        bundle (cloud-controller enroll NODE)
  edge-agent init --path agent.toml     write a commented example config to fill in by hand
  edge-agent run                        run in the foreground (SIGTERM: drain and exit 0)
  edge-agent status                     show connectivity, queue, running tasks, outbox
  edge-agent dump                       print the journal's task records as JSON (read-only)
"""

DEFAULT_CONFIG = "/etc/edge-agent/agent.toml"


def _common(*, top: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (defaults only on the top parser, so
    a value given after the command is not overwritten)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        default=None if top else argparse.SUPPRESS,
        help=f"agent TOML (default $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG})",
    )
    parent.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="machine-readable output",
    )
    return parent


def _config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("EDGE_AGENT_CONFIG") or DEFAULT_CONFIG


def _parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    join = sub.add_parser(
        "join",
        parents=[common],
        help="write this node's config and secrets from an enrolment bundle",
        description="Decode BUNDLE (the token `cloud-controller enroll NODE` printed, a file "
        "holding it, or - for stdin) into the config (--config) plus, beside it, "
        "broker.password and the node's key (mode 0600), ca.crt and the node's certificate; "
        "the result is validated as `edge-agent run` reads it.",
    )
    join.add_argument("bundle", metavar="BUNDLE", help="token, file or -")
    join.add_argument("--state-dir", help="node.state_dir (default /var/lib/edge-agent)")
    join.add_argument("--force", action="store_true", help="replace this node's config")

    init = sub.add_parser(
        "init",
        parents=[common],
        help="write a commented example config",
        description="Write a commented example configuration (every key with its default).",
    )
    init.add_argument("--path", default="agent.toml", help="where to write (default: agent.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    device = init.add_argument_group(
        "device values", "fill these keys in the written example (install-agent.sh uses them)"
    )
    device.add_argument("--node-id", help="node.id (also the broker username by default)")
    device.add_argument("--tier", help="node.tier: device, edge, regional or cloud")
    device.add_argument("--state-dir", help="node.state_dir")
    device.add_argument("--broker", help="broker.host[:port] (empty: find it with zeroconf)")
    device.add_argument("--username", help="broker.username (default: the node id)")
    device.add_argument("--tls", action="store_true", help="broker.tls = true")
    device.add_argument("--ca-file", help="broker.ca_file")
    device.add_argument("--cert-file", help="broker.cert_file (mutual TLS)")
    device.add_argument("--key-file", help="broker.key_file (mutual TLS)")
    device.add_argument("--password-file", help="broker.password_file (a joined node's)")

    sub.add_parser(
        "run",
        parents=[common],
        help="run the agent in the foreground",
        description="Run the agent. Logs go to stderr, as JSON lines when not on a terminal. "
        "SIGTERM/SIGINT: stop taking work, let running tasks finish for "
        "executor.shutdown_grace_s, stop the rest, persist, exit 0. SIGUSR1: every "
        "thread's stack on stderr (nothing else changes). Writes <state_dir>/agent.ready.json "
        '({"pid", "api_port", "metrics_port", "node_id"}) once listening.',
    )

    status = sub.add_parser(
        "status",
        parents=[common],
        help="show a running agent's state",
        description="Ask the running agent (local API, port from the config or from "
        "agent.ready.json) for connectivity, autonomy level, queue, running tasks, outbox depth "
        "and last sync.",
    )
    status.add_argument("--port", type=int, help="local API port (overrides the config)")
    status.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the agent to answer (right after a start)",
    )
    sub.add_parser(
        "dump",
        parents=[common],
        help="print this agent's task records and outbox depth as JSON (read-only)",
        description="Print one JSON document: every task record in the journal and the "
        "outbox depth (edge_agent/dump.py). Reads the journal read-only: works while the "
        "agent runs or after it stopped.",
    )
    add_completion_command(sub, [common], "edge-agent")
    return parser


def _device_values(args: argparse.Namespace) -> dict[str, object]:
    """The ``init`` options as config keys (only those given)."""
    values: dict[str, object] = {}
    if args.node_id is not None:
        values["node.id"] = args.node_id
        values["broker.username"] = args.node_id
    for option, key in (
        ("tier", "node.tier"),
        ("state_dir", "node.state_dir"),
        ("username", "broker.username"),
        ("ca_file", "broker.ca_file"),
        ("cert_file", "broker.cert_file"),
        ("key_file", "broker.key_file"),
        ("password_file", "broker.password_file"),
    ):
        if getattr(args, option) is not None:
            values[key] = getattr(args, option)
    if args.tls:
        values["broker.tls"] = True
    if args.broker is not None:
        host, sep, port = args.broker.rpartition(":")
        if sep and port.isdigit():
            values["broker.host"], values["broker.port"] = host, int(port)
        else:
            values["broker.host"] = args.broker
    return values


def _init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"{target} exists; use --force to overwrite", file=sys.stderr)
        return 1
    values = _device_values(args)
    text = render_example(values) if values else EXAMPLE_CONFIG
    # 0600 from its creation: an inline broker.password may be added to it later (issue 11).
    write_private(target, text.encode("utf-8"), replace=True)
    edit = "" if values else "edit node.id and broker.host, then: "
    print(f"wrote {target}; {edit}edge-agent run --config {target}")
    return 0


#: glibc's malloc arenas: one per thread by default, each keeping freed memory of its own.
#: The agent's few threads allocate little, so one arena costs no contention and saves
#: ~0.4 MB of the idle agent's RSS (benchmarks/bench_agent.py). Tasks and the supervisor do
#: not inherit it (the executor passes them only ``_PASSED_ENV``).
MALLOC_ARENAS = "1"


def _lean_malloc() -> None:
    """Re-exec this process once with ``MALLOC_ARENA_MAX`` set: glibc reads it when the
    process starts, so it cannot be set from inside. Only for the agent run as a program
    (``edge-agent run``, ``python -m edge_agent run``), before any thread starts."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    os.environ["MALLOC_ARENA_MAX"] = MALLOC_ARENAS
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:  # not fatal: the agent runs with the default arenas
        del os.environ["MALLOC_ARENA_MAX"]


def _run(config_path: str) -> int:
    # The agent never needs numpy/pandas; sqlite-utils imports them when present (~25 MB).
    for heavy in ("numpy", "pandas"):
        sys.modules.setdefault(heavy, None)  # type: ignore[arg-type]
    cfg = load_config(config_path)
    from edge_agent.logs import setup_logging

    setup_logging(cfg.log_level)
    from edge_agent.agent import Agent

    agent = Agent(cfg)
    # ``kill -USR1``: every thread's stack on stderr, for an agent that looks stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())
    signal.signal(signal.SIGINT, lambda *_: agent.request_stop())
    # What start-up left in cycles (the command line's parser among it) is freed now, so the
    # agent's own allocations reuse that memory rather than grow the heap (~0.1 MB idle RSS).
    gc.collect()
    return agent.run()


def _ago(ms: int | None) -> str:
    """Epoch milliseconds as local clock time and age, for people."""
    if ms is None:
        return "never"
    when = datetime.fromtimestamp(ms / 1000).astimezone()
    age = max(time.time() - ms / 1000, 0.0)
    return f"{when:%Y-%m-%d %H:%M:%S} ({age:.0f} s ago)"


def _status(config_path: str, port: int | None, raw: bool, wait_s: float = 0.0) -> int:
    from edge_agent.api import LocalClient  # the Unix socket, or TCP with the token (issue 11)

    if port is not None and not Path(config_path).exists():
        client = LocalClient(port=port)  # TCP without a config: no token to send
    else:
        client = LocalClient.for_config(load_config(config_path), port)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            code, status = client.request("GET", "/v1/status")
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                print(f"no agent answering on {client}: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    if code != 200:
        print(f"the agent at {client} answered {code}: {status}", file=sys.stderr)
        return 1
    if raw:
        print(json.dumps(status, indent=2))
        return 0
    last = status["last_sync_ms"]
    print(f"node          {status['node_id']} ({status['tier']}), pid {status['pid']}")
    print(f"connectivity  {status['connectivity']} (link {'up' if status['link_up'] else 'down'})")
    print(f"autonomy      {status['autonomy']}")
    print(f"outbox        {status['outbox_depth']} unacknowledged")
    print(f"last sync     {_ago(last)}")
    print(f"queue         {len(status['queue'])}")
    for item in status["queue"]:
        print(f"  {item['task_id']}  priority {item['priority']}  {item['level']}")
    print(f"running       {len(status['running'])}")
    for item in status["running"]:
        print(f"  {item['task_id']}  attempt {item['attempt']}  {item['level']}")
    if status["admission_stopped"]:
        print(f"ADMISSION STOPPED: {status['admission_stopped']}")
    return 0


def _join(args: argparse.Namespace) -> int:
    from edge_agent.join import JoinError, join, read_bundle

    try:
        joined = join(
            read_bundle(args.bundle),
            Path(_config_path(args)),
            state_dir=args.state_dir,
            force=args.force,
        )
    except JoinError as exc:
        print(f"edge-agent join: {exc}", file=sys.stderr)
        return 1
    b = joined.bundle
    if args.json:
        print(
            json.dumps(
                {
                    "config": str(joined.config),
                    "node_id": b.node_id,
                    "files": [str(p) for p in joined.written],
                }
            )
        )
        return 0
    tls = ("mutual TLS" if b.mutual_tls else "TLS") if b.tls else "no TLS"
    print(
        f"wrote {joined.config} for {b.node_id} ({b.tier}): broker {b.broker_host}:"
        f"{b.broker_port}, {tls}; secrets beside it (0600)"
    )
    print(f"start it: systemctl restart edge-agent, or edge-agent run --config {joined.config}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if argv is None and args.command == "run":  # this process is the agent
        _lean_malloc()
    if args.command == "completion":
        print(completion_script(parser, args.shell), end="")
        return 0
    del parser  # every subcommand's actions and help: not to be held for an agent's lifetime
    try:
        if args.command == "join":
            return _join(args)
        if args.command == "init":
            return _init(args)
        if args.command == "run":
            return _run(_config_path(args))
        if args.command == "dump":
            from edge_agent.dump import dump

            print(json.dumps(dump(load_config(_config_path(args))), sort_keys=True))
            return 0
        return _status(_config_path(args), args.port, args.json, args.wait)
    except ValidationError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"edge-agent: the journal could not be read: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
