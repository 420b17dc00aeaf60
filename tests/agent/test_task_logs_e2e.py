"""``continuum logs`` end to end: a real ``cloud-controller run``, a real ``edge-agent run``
and a real Mosquitto. Tasks that succeed, fail (twice: two attempts) and write more than
the tail keeps; one that runs until the test lets it go: its output so far is asked of the
node (``log_request`` / ``log_chunk``), and ``--follow`` prints it as it comes, then the rest
uploaded with its end; then the node goes offline and the controller still serves what it
uploaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentFactory, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))
from test_controller_process import ROOT, _token, setup  # noqa: F401 (a fixture)

from cloud.api_client import ApiClient
from cloud.operator_cli import main as continuum_main
from shared.crdt import MAX_LOG_TAIL

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.slow]

BIG = 100_000  # bytes the chatty task writes: far more than a tail keeps


@pytest.fixture
def gate() -> Iterator[Path]:
    """A file the gated task waits for, where a task running as ``nobody`` (the agent runs
    tasks as ``executor.run_as`` when it is root) can see it."""
    where = Path(tempfile.mkdtemp(prefix="continuum-gate-"))
    where.chmod(0o755)
    try:
        yield where / "go"
    finally:
        shutil.rmtree(where)


def run(ready: dict[str, Any], capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """``continuum ARGV``: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = continuum_main(["--url", ready["api_url"], "--token", _token(ready), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def api(ready: dict[str, Any], capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(ready, capsys, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def status(ready: dict[str, Any], capsys: pytest.CaptureFixture[str], task: str) -> str:
    return str(api(ready, capsys, "get", task)["status"])


def submit(tmp_path: Path, ready: dict[str, Any], capsys: Any, task: str, script: str) -> None:
    spec = tmp_path / f"{task}.json"
    spec.write_text(
        json.dumps(
            {
                "id": task,
                "command": ["/bin/sh", "-c", script],
                "retry": {"max_attempts": 2, "backoff_s": 0.1, "jitter": 0.0},
            }
        )
    )
    assert api(ready, capsys, "submit", str(spec))["task_id"] == task


def test_logs_of_succeeded_failed_running_and_offline(
    tmp_path: Path,
    setup: tuple[Any, dict[str, Any]],  # noqa: F811 (the imported fixture)
    make_agent: AgentFactory,
    capsys: pytest.CaptureFixture[str],
    gate: Path,
) -> None:
    _, ready = setup  # a `cloud-controller run` process (tests/cloud/test_controller_process.py)
    agent = make_agent("edge-1").start()
    wait_until(
        lambda: any(
            n["node_id"] == "edge-1" and n["presence"] == "online"
            for n in api(ready, capsys, "nodes")["nodes"]
        ),
        30,
        "edge-1 online at the controller",
    )
    submit(tmp_path, ready, capsys, "ok", "echo hello; echo warning >&2")
    submit(tmp_path, ready, capsys, "bad", "echo 'it broke' >&2; exit 3")
    submit(tmp_path, ready, capsys, "chatty", f"head -c {BIG} /dev/zero | tr '\\0' x; echo END")
    submit(
        tmp_path,
        ready,
        capsys,
        "gated",
        f"echo waiting; while [ ! -e {gate} ]; do sleep 0.05; done; echo released",
    )
    for task, want in (("ok", "succeeded"), ("bad", "failed"), ("chatty", "succeeded")):
        wait_until(lambda t=task, w=want: status(ready, capsys, t) == w, 60, f"{task} {want}")
    wait_until(lambda: status(ready, capsys, "gated") == "running", 60, "gated running")

    # Succeeded: stdout by default, stderr on request.
    code, out, err = run(ready, capsys, "logs", "ok")
    assert (code, out) == (0, "hello\n") and "attempt 1 of 1 on edge-1: succeeded" in err
    assert run(ready, capsys, "logs", "ok", "--stderr")[1] == "warning\n"
    # Failed, twice (retried on the node): each attempt has its own log.
    answer = api(ready, capsys, "logs", "bad", "--stderr")
    assert (answer["attempt"], answer["attempts"], answer["status"]) == (2, 2, "failed")
    assert answer["text"] == "it broke\n" and answer["node"] == "edge-1"
    code, out, err = run(ready, capsys, "logs", "bad", "--attempt", "1", "--stderr")
    assert (code, out) == (0, "it broke\n") and "attempt 1 of 2" in err
    code, _, err = run(ready, capsys, "logs", "bad", "--attempt", "3")
    assert code == 1 and "has 2" in err
    # Bounded: the tail keeps the end, and says how much there was.
    chatty = api(ready, capsys, "logs", "chatty")
    assert chatty["truncated"] and chatty["bytes"] == BIG + len("END\n")
    assert chatty["text"].endswith("xxxEND\n") and len(chatty["text"]) <= MAX_LOG_TAIL
    # Running: the output so far, asked of the node (its watchdog publishes it within a second).
    wait_until(
        lambda: run(ready, capsys, "logs", "gated")[1] == "waiting\n", 30, "gated's live output"
    )
    code, out, err = run(ready, capsys, "logs", "gated")
    assert (code, out) == (0, "waiting\n") and "(running: the output so far)" in err
    live = api(ready, capsys, "logs", "gated")
    assert (live["live"], live["status"], live["offset"], live["next_offset"]) == (
        True,
        "started",
        0,
        len("waiting\n"),
    )
    # A reader that has it all gets nothing more, and where to ask next.
    client = ApiClient(ready["api_url"], _token(ready))
    more = client.get("/api/v1/tasks/gated/logs", offset=live["next_offset"])
    assert (more["live"], more["text"], more["next_offset"]) == (True, "", live["next_offset"])

    follower = subprocess.Popen(
        [
            *(sys.executable, "-m", "cloud.operator_cli", "--url", ready["api_url"]),
            *("--token", _token(ready), "logs", "gated", "--follow", "--interval", "0.2"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stderr is not None and follower.stdout is not None
        assert "attempt 1 on edge-1 is running" in follower.stderr.readline()
        assert follower.stdout.readline() == "waiting\n"  # live, before the task ends
        gate.touch()
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out == "released\n"  # the rest, from the tail uploaded with the end
    assert "attempt 1 of 1 on edge-1: succeeded" in err

    # The node goes away: what it uploaded stays readable.
    agent.terminate()
    wait_until(
        lambda: all(
            n["presence"] != "online"
            for n in api(ready, capsys, "nodes")["nodes"]
            if n["node_id"] == "edge-1"
        ),
        30,
        "edge-1 offline at the controller",
    )
    code, out, _ = run(ready, capsys, "logs", "ok")
    assert (code, out) == (0, "hello\n")
    assert api(ready, capsys, "logs", "bad", "--attempt", "1", "--stderr")["text"] == "it broke\n"
