"""``cloud-controller``: init a config, enroll agents, run the controller."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.errors import ValidationError

from .config import ControllerConfig, load_config, render_default_config
from .credentials import add_credentials, agent_snippet

__all__ = ["main"]


def _cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_default_config(), encoding="utf-8")
    path.chmod(0o600)  # it holds the API token
    print(f"wrote {path}; start with: cloud-controller run --config {path}")
    return 0


def _load(path: str) -> ControllerConfig:
    try:
        return load_config(path)
    except FileNotFoundError:
        msg = f"config file {path} not found (create one with `cloud-controller init`)"
        raise SystemExit(msg) from None
    except ValidationError as exc:
        raise SystemExit(str(exc)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from .logs import setup_logging
    from .server import run_forever

    cfg = _load(args.config)
    setup_logging(cfg.controller.log_level)
    return run_forever(cfg)


def _cmd_credentials_add(args: argparse.Namespace) -> int:
    cfg = _load(args.config) if args.config else ControllerConfig()
    password_file = args.password_file or cfg.broker.password_file
    if not password_file:
        print("no password file: pass --password-file or set broker.password_file", file=sys.stderr)
        return 2
    path = Path(password_file)
    if args.config and not path.is_absolute():
        path = cfg.base_dir / path
    try:
        password = add_credentials(path, args.node_id, args.password)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    host = args.broker_host or cfg.broker.host
    port = args.broker_port or cfg.broker.port
    snippet = agent_snippet(
        args.node_id, password, host=host, port=port, tls=cfg.broker.tls, ca_file=cfg.broker.ca_file
    )
    if args.json:
        print(
            json.dumps(
                {
                    "node_id": args.node_id,
                    "password": password,
                    "password_file": str(path),
                    "agent_config": snippet,
                }
            )
        )
    else:
        print(f"# added {args.node_id} to {path}; reload the broker (systemctl reload mosquitto)")
        print(snippet, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloud-controller",
        description="Continuum cloud controller: node registry, placement, adaptive consistency, "
        "leases, reconciliation and the REST API.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write a commented default config with a fresh API token")
    p.add_argument("--path", default="controller.toml", help="where to write (default %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("run", help="run the controller until SIGTERM/SIGINT")
    p.add_argument("--config", required=True, help="controller TOML config")
    p.set_defaults(func=_cmd_run)

    cred = sub.add_parser("credentials", help="per-agent broker credentials")
    cred_sub = cred.add_subparsers(dest="cred_command", required=True, metavar="ACTION")
    p = cred_sub.add_parser(
        "add",
        help="create the broker password entry for NODE_ID and print the agent's config snippet",
    )
    p.add_argument("node_id", metavar="NODE_ID", help="node id = broker username")
    p.add_argument("--config", help="controller TOML (broker address and password_file)")
    p.add_argument("--password-file", help="broker password file (overrides the config)")
    p.add_argument("--password", help="use this password instead of a generated one")
    p.add_argument("--broker-host", help="broker host as the agent sees it")
    p.add_argument("--broker-port", type=int, help="broker port as the agent sees it")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_credentials_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
