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

__all__ = ["EXIT_DEADLINE", "add_fallback_arguments", "submit_failover"]

#: ``continuum submit``'s exit status when no agent took a failed-over task and one of them
#: answered that it cannot meet its deadline (1: not submitted for another reason).
EXIT_DEADLINE = 3


def add_fallback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fallback-agent",
        metavar="URL",
        action="append",
        help="when the controller cannot be reached (connection refused or not made within "
        f"{CONNECT_TIMEOUT_S:g} s, or by the task's deadline_s when sooner; never after any "
        "answer), submit the task to this agent's "
        "local API instead (unix:PATH, http://HOST:PORT on its host, or https://HOST:PORT "
        "for a site agent with api.tls_cert_file): it runs there as causal or "
        "eventual and syncs to the controller later; strong-only tasks and workflows never "
        "fail over. Repeat it for more agents, tried in order: the next when one cannot "
        "be reached or declines (503 deadline_infeasible: it cannot meet deadline_s); "
        f"exit {EXIT_DEADLINE} when none took it and one said it cannot meet the deadline",
    )
    p.add_argument(
        "--fallback-token-file",
        metavar="FILE",
        action="append",
        help="the agent's api.token_file, for an http:// or https:// --fallback-agent (once "
        "for every agent, or once per --fallback-agent, in their order)",
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
    (as without the option), one an agent took is printed with where it went and why, and
    ``--wait`` follows it on that agent. Exit 1 when none took it, ``EXIT_DEADLINE`` when
    one of the agents answered that it cannot meet the deadline."""
    try:
        agents = _agents(args)
    except (OSError, ValueError) as exc:  # before anything is sent: a usage error
        print(f"continuum: {exc}", file=sys.stderr)
        return 2
    try:
        sent = submit_task(api, spec, agents)
    except BothUnreachable as exc:
        print(f"continuum: the task was not submitted: {exc}", file=sys.stderr)
        return EXIT_DEADLINE if exc.deadline_infeasible else 1
    if sent.route is Route.CONTROLLER:
        return done(args, api, sent.answer, console)
    agent = sent.agent
    assert agent is not None
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


def _agents(args: argparse.Namespace) -> list[AgentClient]:
    """The fallback agents' clients; ``OSError``/``ValueError`` naming the option at fault."""
    urls: list[str] = args.fallback_agent
    files: list[str] = args.fallback_token_file or []
    if len(files) not in (0, 1, len(urls)):
        raise ValueError(
            f"--fallback-token-file: give one for every agent or one per --fallback-agent "
            f"({len(urls)}), not {len(files)}"
        )
    tokens = [_token(path) for path in files]
    if len(tokens) == 1:
        tokens *= len(urls)
    return [
        _agent(url, tokens[i] if tokens else None, args.fallback_ca_file)
        for i, url in enumerate(urls)
    ]


def _token(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError as exc:
        raise OSError(f"--fallback-token-file {path}: {exc.strerror}") from exc


def _agent(url: str, token: str | None, ca_file: str | None) -> AgentClient:
    try:
        return AgentClient(url, token, ca_file=ca_file)
    except ValueError as exc:
        raise ValueError(f"--fallback-agent {exc}") from exc
    except OSError as exc:  # the CA bundle
        raise OSError(f"--fallback-ca-file {ca_file}: {exc.strerror or exc}") from exc
