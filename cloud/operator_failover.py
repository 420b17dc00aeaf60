"""``continuum submit FILE --fallback-agent URL``: a task that fails over to an agent's local API
while the controller is out of reach (``api_client.submit_task``, by the rule of
``shared.autonomy.Failover``; docs/operations.md, "Submitting while the controller is out of
reach"). ``cloud/operator_cli.py`` builds the parser and dispatches here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from shared.autonomy import CONNECT_TIMEOUT_S, Route
from shared.vocab import TaskStatus

from .api_client import AgentClient, ApiClient, BothUnreachable, segment, submit_task
from .operator_render import print_json

__all__ = ["add_fallback_arguments", "submit_failover"]


def add_fallback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fallback-agent",
        metavar="URL",
        help="when the controller cannot be reached (connection refused or not made within "
        f"{CONNECT_TIMEOUT_S:g} s, or by the task's deadline_s when sooner; never after any "
        "answer), submit the task to this agent's "
        "local API instead (unix:PATH, http://HOST:PORT on its host, or https://HOST:PORT "
        "for a site agent with api.tls_cert_file): it runs there as causal or "
        "eventual and syncs to the controller later; strong-only tasks and workflows never "
        "fail over",
    )
    p.add_argument(
        "--fallback-token-file",
        metavar="FILE",
        help="the agent's api.token_file, for an http:// or https:// --fallback-agent",
    )
    p.add_argument(
        "--fallback-ca-file",
        metavar="FILE",
        help="CA bundle (PEM) that signed an https:// --fallback-agent's certificate "
        "(default: the system's CAs); the host name in the URL must match the certificate",
    )


def submit_failover(
    args: argparse.Namespace,
    api: ApiClient,
    spec: dict[str, Any],
    console: Console,
    *,
    done: Callable[[argparse.Namespace, ApiClient, dict[str, Any], Console], int],
    wait: Callable[[str, float, Callable[[], dict[str, Any] | None]], dict[str, Any]],
) -> int:
    """Submit ``spec`` by ``submit_task``; a task the controller took is reported by ``done``
    (as without the option), one the agent took is printed with where it went and why, and
    ``--wait`` follows it on the agent. Exit 1 when neither took it."""
    try:
        agent = _agent(args)
    except (OSError, ValueError) as exc:  # before anything is sent: a usage error
        print(f"continuum: {exc}", file=sys.stderr)
        return 2
    try:
        sent = submit_task(api, spec, agent)
    except BothUnreachable as exc:
        print(f"continuum: the task was not submitted: {exc}", file=sys.stderr)
        return 1
    if sent.route is Route.CONTROLLER:
        return done(args, api, sent.answer, console)
    result = sent.answer
    if args.wait:

        def finished() -> dict[str, Any] | None:
            task = agent.request("GET", f"/v1/tasks/{segment(result['id'])}")
            return task if TaskStatus(task["status"]).terminal else None

        result = wait(f"task {result['id']} to finish on the agent", args.timeout, finished)
    if args.json:
        print_json({**result, "submitted_to": "agent", "agent": agent.url, "why": sent.why})
    else:
        where = f"task {result['id']}: {result['status']} on the agent {agent.url}"
        console.print(where, markup=False, soft_wrap=True)
        why = f"  why: {sent.why}; it syncs to the controller later"
        console.print(why, markup=False, soft_wrap=True)
    return 1 if args.wait and result["status"] != TaskStatus.SUCCEEDED else 0


def _agent(args: argparse.Namespace) -> AgentClient:
    """The fallback agent's client; ``OSError``/``ValueError`` naming the option at fault."""
    token = None
    if args.fallback_token_file:
        try:
            token = Path(args.fallback_token_file).read_text(encoding="ascii").strip()
        except OSError as exc:
            why = f"--fallback-token-file {args.fallback_token_file}: {exc.strerror}"
            raise OSError(why) from exc
    try:
        return AgentClient(args.fallback_agent, token, ca_file=args.fallback_ca_file)
    except ValueError as exc:
        raise ValueError(f"--fallback-agent {exc}") from exc
    except OSError as exc:  # the CA bundle
        raise OSError(f"--fallback-ca-file {args.fallback_ca_file}: {exc.strerror or exc}") from exc
