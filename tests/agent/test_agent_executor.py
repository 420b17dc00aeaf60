"""Executor and task supervisor with real processes: env contract, results, timeouts, bounded
output, fencing (also when the launching process is killed), renewal, cancel, unprivileged
user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

from edge_agent.config import ExecutorConfig
from edge_agent.executor import Executor, Launch, Outcome

PY = sys.executable


def _launch(task_id: str, argv: list[str] | None, **kw: object) -> Launch:
    base: dict[str, object] = dict(
        task_id=task_id,
        attempt=f"n1:{zlib.crc32(task_id.encode())}",  # same id, same attempt; hash() is salted
        epoch=1,
        argv=argv,
        callable_target=None,
        args={},
        env={},
        inputs={},
        timeout_s=30.0,
        deadline=None,
    )
    base.update(kw)
    return Launch(**base)  # type: ignore[arg-type]


def _wait(ex: Executor, n: int = 1, limit: float = 30.0) -> list[Outcome]:
    out: list[Outcome] = []
    end = time.monotonic() + limit
    while len(out) < n and time.monotonic() < end:
        out += ex.poll()
        time.sleep(0.02)
    assert len(out) == n, f"only {len(out)} of {n} attempts ended"
    return out


@pytest.fixture
def ex(tmp_path: Path) -> Executor:
    return Executor(tmp_path / "runs", ExecutorConfig(run_as="", kill_grace_s=0.5))


def test_env_contract_inputs_and_result(ex: Executor) -> None:
    script = textwrap.dedent(
        """
        import json, os
        keys = ["CONTINUUM_TASK_ID", "CONTINUUM_ATTEMPT", "CONTINUUM_EPOCH", "MY_VAR"]
        env = {k: os.environ[k] for k in keys}
        env["inputs"] = json.load(open(os.environ["CONTINUUM_INPUTS"]))
        print("noise")
        print(json.dumps(env))
        """
    )
    ex.launch(_launch("t-env", [PY, "-c", script], env={"MY_VAR": "v"}, inputs={"up": 7}))
    (out,) = _wait(ex)
    assert out.succeeded
    assert out.result == {
        "CONTINUUM_TASK_ID": "t-env",
        "CONTINUUM_ATTEMPT": _launch("t-env", None).attempt,
        "CONTINUUM_EPOCH": "1",
        "MY_VAR": "v",
        "inputs": {"up": 7},
    }


def test_output_file_wins_over_stdout(ex: Executor) -> None:
    script = (
        "import json,os; json.dump({'f': 1}, open(os.environ['CONTINUUM_OUTPUT'],'w'));"
        " print('[2]')"
    )
    ex.launch(_launch("t-out", [PY, "-c", script]))
    (out,) = _wait(ex)
    assert out.result == {"f": 1}


def test_a_result_is_bounded_as_the_wire_writes_it(ex: Executor) -> None:
    """30,000 'é' are 60 kB of UTF-8 in the file, under 64 KiB, but 180 kB as the wire's
    ASCII JSON: a record with that result could not be sent. 10,000 (60 kB on the wire) is
    kept."""
    for task_id, n in (("t-wide", 30_000), ("t-fits", 10_000)):
        script = (
            "import json,os; open(os.environ['CONTINUUM_OUTPUT'],'w',encoding='utf-8')"
            f".write(json.dumps('\u00e9' * {n}, ensure_ascii=False))"
        )
        ex.launch(_launch(task_id, [PY, "-c", script]))
        (out,) = _wait(ex)
        assert out.succeeded
        assert out.result == (None if n == 30_000 else "\u00e9" * n)


def test_nonzero_exit_and_bounded_tails(ex: Executor) -> None:
    script = (
        "import sys; sys.stdout.write('x' * 100000 + 'END'); sys.stderr.write('boom'); sys.exit(3)"
    )
    ex.launch(_launch("t-fail", [PY, "-c", script]))
    (out,) = _wait(ex)
    assert (out.reason, out.exit_code) == ("exited", 3)
    assert len(out.stdout_tail) == ex.cfg.output_tail_bytes and out.stdout_tail.endswith("END")
    assert out.stderr_tail == "boom"


def test_spawn_failure_is_an_outcome(ex: Executor) -> None:
    ex.launch(_launch("t-missing", ["/nonexistent/binary"]))
    (out,) = _wait(ex)
    assert out.reason == "spawn_failed" and not out.succeeded


def test_timeout_terms_then_kills_the_whole_group(ex: Executor, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "60"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """
    )
    ex.launch(_launch("t-timeout", [PY, "-c", script], timeout_s=1.0))
    (out,) = _wait(ex)
    assert out.reason == "timeout" and out.signal == signal.SIGKILL
    grandchild = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(grandchild, 0)
            time.sleep(0.05)


def _ticker(ledger: Path) -> list[str]:
    script = textwrap.dedent(
        f"""
        import time
        while True:
            with open({str(ledger)!r}, "a") as fh:
                fh.write(repr(time.monotonic()) + "\\n")
            time.sleep(0.05)
        """
    )
    return [PY, "-c", script]


def test_fenced_at_deadline_and_not_before(ex: Executor, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    deadline = time.monotonic() + 1.0
    ex.launch(_launch("t-fence", _ticker(ledger), deadline=deadline))
    (out,) = _wait(ex)
    ticks = [float(x) for x in ledger.read_text().split()]
    assert out.reason == "fenced"
    assert out.deadline == deadline and out.fenced_at is not None
    assert out.fenced_at >= deadline  # not before the deadline
    assert max(ticks) <= out.fenced_at  # nothing ran after the fence
    assert min(ticks) < deadline


def test_renewal_moves_the_fence(ex: Executor, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    first = time.monotonic() + 0.8
    running = ex.launch(_launch("t-renew", _ticker(ledger), deadline=first))
    while not (running.run_dir / "started.json").exists():
        time.sleep(0.01)
    second = first + 1.0
    assert ex.set_deadline(running.attempt, second)
    (out,) = _wait(ex)
    assert out.reason == "fenced" and out.fenced_at is not None and out.fenced_at >= second
    assert max(float(x) for x in ledger.read_text().split()) > first  # it outlived the first


def test_fence_holds_when_the_agent_is_killed(tmp_path: Path) -> None:
    """The launching process (standing in for the agent) is SIGKILLed right after the launch:
    the supervisor alone stops the task at its deadline."""
    ledger = tmp_path / "ledger"
    runs = tmp_path / "runs"
    code = textwrap.dedent(
        f"""
        import time, sys
        from pathlib import Path
        from edge_agent.config import ExecutorConfig
        from edge_agent.executor import Executor, Launch
        ex = Executor(Path({str(runs)!r}), ExecutorConfig(run_as=""))
        deadline = time.monotonic() + 1.5
        r = ex.launch(Launch("t-k", "n1:1", 1, {_ticker(ledger)!r}, None, {{}}, {{}}, {{}}, 60.0,
                             deadline))
        print(deadline, r.watchdog_pid, flush=True)
        time.sleep(60)
        """
    )
    agent = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    deadline_s, wd_pid = agent.stdout.readline().split()
    agent.kill()
    agent.wait()
    status = runs / "t-k--1" / "status.json"
    end = time.monotonic() + 20
    while not status.exists() and time.monotonic() < end:
        time.sleep(0.05)
    result = json.loads(status.read_text())
    assert result["reason"] == "fenced" and result["fenced_at"] >= float(deadline_s)
    # No tick after the fence (under heavy load the task may not have ticked at all).
    ticks = ledger.read_text().split() if ledger.exists() else []
    assert all(float(x) <= result["fenced_at"] for x in ticks)
    # A restarted agent re-attaches and harvests the outcome the supervisor left.
    ex = Executor(runs, ExecutorConfig(run_as=""))
    assert ex.adopt("t-k", "n1:1", int(wd_pid)) is not None
    (out,) = _wait(ex)
    assert out.reason == "fenced"


def test_killing_the_supervisor_kills_the_task(ex: Executor, tmp_path: Path) -> None:
    running = ex.launch(_launch("t-pdeath", ["sleep", "60"]))
    while not (running.run_dir / "started.json").exists():
        time.sleep(0.01)
    task_pid = json.loads((running.run_dir / "started.json").read_text())["pid"]
    os.kill(running.watchdog_pid, signal.SIGKILL)
    (out,) = _wait(ex)
    assert out.reason == "lost"
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(task_pid, 0)
            time.sleep(0.05)


def test_cancel_stops_with_reason(ex: Executor) -> None:
    running = ex.launch(_launch("t-cancel", ["sleep", "60"]))
    while not (running.run_dir / "started.json").exists():
        time.sleep(0.01)
    assert ex.stop(running.attempt, "cancelled")
    (out,) = _wait(ex)
    assert out.reason == "cancelled"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_runs_as_unprivileged_user(tmp_path: Path) -> None:
    ex = Executor(tmp_path / "runs", ExecutorConfig(run_as="nobody"))
    ex.launch(_launch("t-user", ["id", "-u"]))
    (out,) = _wait(ex)
    assert out.result == 65534 and out.result != 0


def test_callable_runs_in_its_own_process(ex: Executor, tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(
        "def double(args, inputs):\n    return {'v': args['x'] * 2}\n"
    )
    ex.launch(
        _launch(
            "t-call",
            None,
            callable_target="jobs:double",
            args={"x": 21},
            env={"PYTHONPATH": str(tmp_path)},
        )
    )
    (out,) = _wait(ex)
    assert out.succeeded and out.result == {"v": 42}


def test_a_stop_sent_right_after_the_launch_is_not_lost(ex: Executor) -> None:
    """A stop sent right after ``launch``, before the task has even been forked, still
    stops it (a cancel arriving with the placement must; the supervisor reads its socket in
    order)."""
    ex.launch(_launch("t-early", ["sleep", "30"]))
    assert ex.stop(_launch("t-early", None).attempt, "cancelled")
    (out,) = _wait(ex, limit=10)
    assert out.reason == "cancelled"


def test_a_restart_acknowledges_outcomes_nobody_claims(tmp_path: Path) -> None:
    """An outcome journaled just before a crash (its ack lost) stays with the supervisor while
    other attempts keep it alive; the restarted agent, adopting only what its journal still
    lists, acknowledges the rest, and the supervisor forgets it."""
    runs = tmp_path / "runs"
    first = Executor(runs, ExecutorConfig(run_as=""))
    sleeper = first.launch(_launch("t-sleeper", ["sleep", "60"]))
    done = first.launch(_launch("t-done", ["true"]))
    (out,) = _wait(first)
    assert out.attempt == done.attempt  # journaled here; the crash comes before the ack
    first.close()
    second = Executor(runs, ExecutorConfig(run_as=""))
    assert second.adopt(sleeper.task_id, sleeper.attempt, sleeper.watchdog_pid) is not None
    assert second.release_unclaimed() == [done.attempt]
    second.stop(sleeper.attempt, "cancelled")
    (stopped,) = _wait(second)
    assert stopped.reason == "cancelled"
    second.cleanup(sleeper.task_id, sleeper.attempt)
    third = Executor(runs, ExecutorConfig(run_as=""))
    hello = third.link.connect(start=False)
    assert hello is None or done.attempt not in hello["done"]  # forgotten (or it left)
    third.close()
    second.close()
