"""The testbed's workload task: a real command that leaves ground truth behind.

Run by an agent as ``python3 /path/to/ledger_task.py --sleep-ms 200`` (or
``python3 -m simulations.testbed.ledger_task``). It appends fsync'd JSON lines to
the ledger file named by ``CONTINUUM_LEDGER`` (``{node}`` in the name is replaced
by the executing node, so each agent gets its own file): ``start`` before the
work, ``tick`` every ``--tick-ms`` while working (so an execution killed without
an ``end`` still has a known lower bound on how long it ran), and ``end`` after
it (also on SIGTERM, which is how an agent fences or cancels). Every line carries
the host clock (``time.time()``), task id, attempt dot, epoch, node and pid.

``--sleep-ms`` is the work on a node of speed 1. When ``CONTINUUM_TB_SPEEDS``
names a JSON file of node → speed factor (the scenario's heterogeneous agents),
the task works ``sleep_ms / speed`` on its node (a node absent from it: speed 1)
and its lines carry that ``speed``.

The checker trusts these lines, not the system's reports: this file uses the
standard library only and must stay runnable by any ``python3`` (the agent may
run it as an unprivileged user, outside the project's venv).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

_LEDGER_ENV = "CONTINUUM_LEDGER"
_SPEEDS_ENV = "CONTINUUM_TB_SPEEDS"


def _context() -> dict[str, object]:
    attempt = os.environ.get("CONTINUUM_ATTEMPT", "")
    node = attempt.rsplit(":", 1)[0] if ":" in attempt else os.environ.get("CONTINUUM_NODE", "")
    epoch_raw = os.environ.get("CONTINUUM_EPOCH", "")
    epoch: int | None = int(epoch_raw) if epoch_raw.lstrip("-").isdigit() else None
    return {
        "task": os.environ.get("CONTINUUM_TASK_ID", ""),
        "attempt": attempt,
        "epoch": epoch,
        "node": node or "unknown",
        "level": os.environ.get("CONTINUUM_TB_LEVEL", ""),
        "pid": os.getpid(),
    }


def _speed(node: object) -> float | None:
    """This node's speed factor from the ``CONTINUUM_TB_SPEEDS`` file; ``None`` without
    one. A bad file is the testbed's bug: it fails the task loudly."""
    path = os.environ.get(_SPEEDS_ENV)
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        speeds = json.load(fh)
    speed = float(speeds.get(str(node), 1.0))
    if not speed > 0:
        raise ValueError(f"{_SPEEDS_ENV}: speed of {node} must be positive, not {speed}")
    return speed


class Ledger:
    """Append-only JSON lines, one ``write`` + ``fsync`` per line (O_APPEND makes
    concurrent writers from several tasks safe for lines this short)."""

    def __init__(self, path_template: str, ctx: dict[str, object]) -> None:
        self.ctx = ctx
        path = path_template.replace("{node}", str(ctx["node"]))
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, event: str, **extra: object) -> None:
        line = json.dumps({"event": event, "t": time.time(), **self.ctx, **extra})
        os.write(self.fd, (line + "\n").encode())
        os.fsync(self.fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Continuum testbed workload task (ledger writer)")
    parser.add_argument("--sleep-ms", type=int, default=100, help="work duration")
    parser.add_argument("--exit", type=int, default=0, dest="exit_code", help="exit status")
    parser.add_argument("--output", default=None, help="JSON result to emit (validated)")
    parser.add_argument("--tick-ms", type=int, default=100, help="progress line period")
    args = parser.parse_args(argv)

    template = os.environ.get(_LEDGER_ENV)
    if not template:
        print(f"{_LEDGER_ENV} is not set", file=sys.stderr)
        return 2
    ctx = _context()
    speed = _speed(ctx["node"])
    if speed is not None:
        ctx["speed"] = speed
    ledger = Ledger(template, ctx)

    def on_term(signum: int, _frame: object) -> None:
        ledger.append("end", exit=-signum, signal=signum)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    ledger.append("start")
    deadline = time.monotonic() + args.sleep_ms / 1000.0 / (speed or 1.0)
    tick = max(args.tick_ms, 10) / 1000.0
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(tick, left))
        if deadline - time.monotonic() > 0:
            ledger.append("tick")
    if args.output is not None:
        result = json.loads(args.output)
        out_path = os.environ.get("CONTINUUM_OUTPUT")
        if out_path:
            with open(out_path, "w", encoding="utf-8") as fh:
                json.dump(result, fh)
        print(json.dumps(result), flush=True)
    ledger.append("end", exit=args.exit_code)
    return args.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
