"""``cloud-controller``: write a config, run the controller, keep the fleet's CA, enroll nodes.

The config is ``--config``, else ``$CONTINUUM_CONFIG``, else
``/etc/continuum/controller.toml`` (where ``deploy/install-controller.sh`` puts it); global
options (``--config``, ``--json``) are accepted before or after the command.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from shared.completion import add_completion_command, completion_script
from shared.enrolment import encode_bundle
from shared.errors import ValidationError

from . import credentials
from .config import ControllerConfig, load_config, render_default_config

__all__ = ["main", "package_version"]

DEFAULT_CONFIG = "/etc/continuum/controller.toml"
SYSTEM_STATE_DIR = "/var/lib/continuum"


def package_version() -> str:
    try:
        return version("continuum-edge")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("CONTINUUM_CONFIG") or DEFAULT_CONFIG)


def _load(args: argparse.Namespace) -> ControllerConfig:
    path = _config_path(args)
    try:
        return load_config(path)
    except FileNotFoundError:
        msg = f"config file {path} not found (create one with `cloud-controller init`)"
        raise SystemExit(msg) from None
    except ValidationError as exc:
        raise SystemExit(str(exc)) from None


def default_state_dir(config: Path) -> str:
    """Where the store goes when ``init`` is not told: ``/var/lib/continuum`` for a config
    installed system-wide (under ``/etc``: the unit may write only its state directory),
    else ``controller-state`` beside the config."""
    return SYSTEM_STATE_DIR if config.absolute().is_relative_to("/etc") else "controller-state"


def _split_host_port(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return value, default_port


def _cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else _config_path(args)
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite", file=sys.stderr)
        return 1
    if bool(args.broker_user) != bool(args.password_file):
        print("--broker-user and --password-file go together", file=sys.stderr)
        return 2
    token = password = None
    if args.keep_secrets and path.exists():
        try:
            old = load_config(path)
        except ValidationError as exc:
            print(f"--keep-secrets: {exc}", file=sys.stderr)
            return 2
        token, password = old.api.token or None, old.broker.password or None
    if args.broker_user:
        password = password or secrets.token_hex(24)
    agents_host, agents_port = _split_host_port(args.agents_broker or "", 8883)
    try:
        text = render_default_config(
            token=token,
            state_dir=args.state_dir or default_state_dir(path),
            broker_username=args.broker_user or "",
            broker_password=password or "",
            password_file=args.password_file or "",
            agents_host=agents_host,
            agents_port=agents_port,
        )
    except ValidationError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.broker_user:
        credentials.set_password(Path(args.password_file), args.broker_user, password)
    from .tls import write_secret

    write_secret(path, text.encode())  # 0600 from the first byte: the API token and password
    print(f"wrote {path}; start with: cloud-controller run --config {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .logs import setup_logging
    from .server import run_forever

    cfg = _load(args)
    setup_logging(cfg.controller.log_level)
    return run_forever(cfg)


def _cmd_dump(args: argparse.Namespace) -> int:
    from .dump import dump

    try:
        document = dump(_load(args))
    except (OSError, sqlite3.Error) as exc:
        print(f"cloud-controller dump: the store could not be read: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(document, sort_keys=True))
    return 0


def _cmd_tls(args: argparse.Namespace) -> int:
    from .tls import CA_CERT, TlsError, describe, init_ca, issue

    cfg = _load(args)
    now = datetime.now(UTC)
    try:
        if args.tls_command == "init":
            info = init_ca(cfg.tls_dir, now=now, days=args.days, force=args.force)
            print(
                f"CA {info.path} valid until {info.not_after:%Y-%m-%d}; its key stays in "
                f"{cfg.tls_dir}"
            )
        elif args.tls_command == "issue":
            out = Path(args.out) if args.out else cfg.tls_dir
            cert, key = issue(
                cfg.tls_dir,
                args.name,
                out_dir=out,
                server=args.server,
                hosts=args.host or (),
                now=now,
                days=args.days or cfg.tls.cert_days,
            )
            info = describe(cert)
            hosts = f" for {', '.join(info.hosts)}" if info.hosts else ""
            print(
                f"issued {cert}{hosts} (key {key}, CA {out / CA_CERT}), valid until "
                f"{info.not_after:%Y-%m-%d}"
            )
        else:
            infos = [describe(p) for p in sorted(cfg.tls_dir.rglob("*.crt"))]
            if args.json:
                print(
                    json.dumps(
                        [
                            {
                                "path": str(i.path),
                                "subject": i.subject,
                                "hosts": list(i.hosts),
                                "not_after": i.not_after.isoformat(),
                                "days_left": i.days_left(now),
                            }
                            for i in infos
                        ]
                    )
                )
            for i in [] if args.json else infos:
                print(
                    f"{i.days_left(now):>5} days  {i.not_after:%Y-%m-%d}  {i.subject:<24} "
                    f"{i.path.relative_to(cfg.tls_dir)}"
                )
    except TlsError as exc:
        print(f"cloud-controller tls: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_enroll(args: argparse.Namespace) -> int:
    from .enroll import EnrolError, enroll
    from .tls import write_secret

    cfg = _load(args)
    try:
        bundle = enroll(
            cfg,
            args.node_id,
            now=datetime.now(UTC),
            tier=args.tier,
            broker_host=args.broker_host,
            broker_port=args.broker_port,
            rotate=args.rotate,
        )
    except EnrolError as exc:
        print(f"cloud-controller enroll: {exc}", file=sys.stderr)
        return 2
    token = encode_bundle(bundle)
    if args.out:
        write_secret(Path(args.out), (token + "\n").encode())
    if args.json:
        print(json.dumps({"node_id": bundle.node_id, "bundle": token, "out": args.out}))
        return 0
    tls = ("mutual TLS" if bundle.mutual_tls else "TLS") if bundle.tls else "no TLS"
    print(
        f"enrolled {bundle.node_id}: broker {bundle.broker_host}:{bundle.broker_port} ({tls}), "
        f"user added to {cfg.path(cfg.broker.password_file)}"
    )
    print("reload the broker so it knows the user: systemctl reload mosquitto", file=sys.stderr)
    where = args.out or token
    print(f"on the device: edge-agent join {where}   (or install-agent.sh --bundle ...)")
    return 0


def _common(*, top: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command: defaults live on the top parser only,
    so a value given after the command is not overwritten by the top parser's default."""
    parent = argparse.ArgumentParser(add_help=False)
    default = None if top else argparse.SUPPRESS
    parent.add_argument(
        "--config",
        default=default,
        help=f"controller TOML (default $CONTINUUM_CONFIG or {DEFAULT_CONFIG})",
    )
    parent.add_argument(
        "--json",
        action="store_true",
        default=False if top else default,
        help="machine-readable output",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    parser = argparse.ArgumentParser(
        prog="cloud-controller",
        description="Continuum cloud controller: node registry, placement, adaptive consistency, "
        "leases, reconciliation and the REST API; the fleet's CA and enrolment.",
        parents=[_common(top=True)],
    )
    parser.add_argument(
        "--version", action="version", version=f"cloud-controller {package_version()}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "init", parents=[common], help="write a commented default config with a fresh API token"
    )
    p.add_argument("--path", help="where to write (default: the --config path)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument(
        "--keep-secrets",
        action="store_true",
        help="with --force: keep the existing file's API token and broker password",
    )
    p.add_argument(
        "--state-dir",
        help="controller.state_dir (default: /var/lib/continuum for a config under /etc, "
        "else controller-state beside the config)",
    )
    p.add_argument(
        "--broker-user",
        help="the controller's broker user: a password is generated, "
        "written into the config and added to --password-file",
    )
    p.add_argument("--password-file", help="the broker's password file (broker.password_file)")
    p.add_argument(
        "--agents-broker",
        metavar="HOST[:PORT]",
        help="the broker as agents dial it ([agents] broker_host/broker_port)",
    )
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("run", parents=[common], help="run the controller until SIGTERM/SIGINT")
    p.set_defaults(func=_cmd_run)

    tls = sub.add_parser("tls", parents=[common], help="the fleet's certificate authority")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    p = tls_sub.add_parser("init", parents=[common], help="create the CA in [tls] dir")
    p.add_argument("--days", type=int, default=3650, help="validity (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p = tls_sub.add_parser(
        "issue", parents=[common], help="issue a broker (--server) or node certificate"
    )
    p.add_argument(
        "name",
        metavar="NAME",
        help="file name and common name (a node id, or the broker's host name with --server)",
    )
    p.add_argument("--server", action="store_true", help="a broker certificate")
    p.add_argument(
        "--host", action="append", help="a name or address agents dial (repeatable; default NAME)"
    )
    p.add_argument(
        "--out", help="directory for NAME.crt, NAME.key (0600) and ca.crt (default [tls] dir)"
    )
    p.add_argument("--days", type=int, help="validity (default tls.cert_days)")
    p = tls_sub.add_parser(
        "list", parents=[common], help="certificates in [tls] dir with their expiry"
    )
    tls.set_defaults(func=_cmd_tls)

    p = sub.add_parser(
        "enroll",
        parents=[common],
        help="create a node's broker credentials and print its join bundle",
    )
    p.add_argument("node_id", metavar="NODE_ID", help="node id = broker username")
    p.add_argument("--tier", default="edge", help="device, edge, regional or cloud")
    p.add_argument("--broker-host", help="override [agents] broker_host")
    p.add_argument("--broker-port", type=int, help="override [agents] broker_port")
    p.add_argument("--out", help="write the bundle to this file (0600) instead of printing it")
    p.add_argument(
        "--rotate", action="store_true", help="replace an enrolled node's password (and bundle)"
    )
    p.set_defaults(func=_cmd_enroll)

    p = sub.add_parser(
        "dump",
        parents=[common],
        help="print the controller's task records as JSON (read-only)",
        description="Print one JSON document of every task record in the store, and of the "
        "attempts the controller presumed lost when it re-placed their task (cloud/dump.py), "
        "read-only: works while the controller runs or after it stopped.",
    )
    p.set_defaults(func=_cmd_dump)

    credentials.add_parser(sub, [common], _password_file)
    add_completion_command(sub, [common], "cloud-controller").set_defaults(
        func=lambda args: _print(completion_script(parser, args.shell))
    )
    return parser


def _print(text: str) -> int:
    print(text, end="")
    return 0


def _password_file(args: argparse.Namespace) -> tuple[Path, frozenset[str]]:
    """The broker's password file and the users that are never a node's."""
    cfg = _load(args)
    if not cfg.broker.password_file:
        raise SystemExit("set broker.password_file in controller.toml (the broker's password file)")
    return cfg.path(cfg.broker.password_file), credentials.RESERVED | {cfg.broker.username} - {""}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
