"""The agent's side of task logs, with the real task supervisor: each stream's tail and its
full byte count come back in the outcome, and what is sent with the attempt's end
(``scheduler.attempt_log``, cut by ``shared.crdt.set_status`` as the agent's end of an
attempt calls it) fits the wire bound whatever the tail size configured."""

from __future__ import annotations

import sys
from pathlib import Path

from test_agent_executor import _launch, _wait

from edge_agent.config import ExecutorConfig
from edge_agent.executor import Executor, Outcome
from edge_agent.scheduler import attempt_log
from shared.clocks import Timestamp
from shared.crdt import (
    MAX_LOG_TAIL,
    AttemptLog,
    AttemptStatus,
    merge,
    new_record,
    set_status,
    start_attempt,
)
from shared.crdt._canonical import canonical_json


def _run(tmp_path: Path, script: str, tail_bytes: int) -> Outcome:
    ex = Executor(
        tmp_path / "runs", ExecutorConfig(run_as="", kill_grace_s=0.5, output_tail_bytes=tail_bytes)
    )
    ex.launch(_launch("t-log", [sys.executable, "-c", script]))
    (out,) = _wait(ex)
    return out


def _sent(log: AttemptLog) -> AttemptLog:
    """The log an ended attempt of a plain task carries in its delta."""
    stamp = Timestamp(1, 0, "edge-1")
    rec = new_record("t-log", {"id": "t-log", "command": ["true"]}, writer="edge-1", hlc=stamp)
    dot, started = start_attempt(rec, node="edge-1", epoch=0, writer="edge-1", hlc=stamp)
    rec = merge(rec, started)
    delta = set_status(rec, dot, AttemptStatus.FAILED, writer="edge-1", hlc=stamp, log=log)
    sent = delta.attempts[dot].log
    assert sent is not None
    return sent


def test_tails_and_byte_counts_come_back(tmp_path: Path) -> None:
    script = (
        "import sys; sys.stdout.write('a' * 50000 + 'END'); sys.stderr.write('oops\\n');"
        " sys.exit(2)"
    )
    out = _run(tmp_path, script, tail_bytes=1000)
    assert (out.stdout_bytes, out.stderr_bytes) == (50003, 5)
    assert len(out.stdout_tail) == 1000 and out.stdout_tail.endswith("aEND")
    log = attempt_log(out)
    assert (log.stdout, log.stderr) == (out.stdout_tail, "oops\n")
    assert (log.stdout_bytes, log.stderr_bytes) == (50003, 5)


def test_what_is_sent_fits_the_wire_bound(tmp_path: Path) -> None:
    # Control characters cost six characters each on the wire: a tail of 40,000 of them
    # is cut to what one attempt may carry.
    script = "import sys; sys.stdout.write('\\x01' * 40000 + 'END')"
    out = _run(tmp_path, script, tail_bytes=40_000)
    assert out.succeeded and len(out.stdout_tail) == 40_000
    log = _sent(attempt_log(out))
    assert log.stdout.endswith("\x01END") and out.stdout_tail.endswith(log.stdout)
    assert MAX_LOG_TAIL - 6 < len(canonical_json(log.stdout)) - 2 <= MAX_LOG_TAIL
    assert log.stdout_bytes == 40_003
