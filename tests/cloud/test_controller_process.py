"""End to end: ``cloud-controller init`` and ``run`` as a real process on a real
Mosquitto, operated with the ``continuum`` CLI, killed with SIGKILL mid-flight and
restarted. The node is scripted (``cloud_harness.ScriptedNode``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloud_harness import ScriptedNode

from cloud.cli import main as controller_main
from cloud.operator_cli import main as continuum_main
from edge_agent.api import LocalClient
from simulations.testbed.broker import stop_process

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def _listening(ready: dict[str, Any]) -> bool:
    """``/readyz``: the broker acknowledged the controller's subscriptions. The ready file
    means the API listens; a scripted node's one hello published before the SUBACK would
    reach no subscriber (an agent's unanswered session reconnects and says hello again; the
    script does not)."""
    try:
        with urllib.request.urlopen(f"{ready['api_url']}/readyz", timeout=10) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):  # 503 (an HTTPError) until then
        return False


class ControllerProc:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.ready_path = config.parent / "controller-state" / "controller.ready.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, Any]:
        log = open(self.config.parent / "controller.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.cli", "run", "--config", str(self.config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.ready_path.exists():
                ready = json.loads(self.ready_path.read_text())
                if ready["pid"] == self.proc.pid and _listening(ready):
                    return ready
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.config.parent / "controller.log").read_text()
                raise AssertionError(f"controller not ready:\n{log_text[-3000:]}")
            time.sleep(0.05)

    def kill(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


def quick_config(tmp_path: Path, broker_port: int, *edits: tuple[str, str]) -> Path:
    """``cloud-controller init``'s config made quick for tests, with ``edits`` on top."""
    config = tmp_path / "controller.toml"
    assert controller_main(["init", "--path", str(config)]) == 0
    text = config.read_text()
    for old, new in (
        ("port = 8470", "port = 0"),
        ("port = 1883", f"port = {broker_port}"),
        ("tick_s = 0.5", "tick_s = 0.1"),
        ("heartbeat_interval_s = 40.0", "heartbeat_interval_s = 0.5"),
        # a round trip slowed by a loaded test machine ages out in seconds
        ("window_s = 300.0", "window_s = 5.0"),
        *edits,
    ):
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    return config


@pytest.fixture
def setup(tmp_path: Path, mosquitto) -> Iterator[tuple[ControllerProc, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    ctl = ControllerProc(quick_config(tmp_path, mosquitto.port))
    ready = ctl.start()
    try:
        yield ctl, ready
    finally:
        if ctl.proc is not None and ctl.proc.poll() is None:
            ctl.kill(signal.SIGKILL)
        # pytest shows a teardown's output only when the test failed: the controller's side
        log = tmp_path / "controller.log"
        if log.exists():
            print("controller.log (last 60 lines):", *log.read_text().splitlines()[-60:], sep="\n")


def _token(ready: dict[str, Any]) -> str:
    """The API token, found where controller.ready.json says it is."""
    assert ready["token_source"] == "config"
    return str(tomllib.loads(Path(ready["token_path"]).read_text())["api"]["token"])


def continuum(ready: dict[str, Any], capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    code = continuum_main(["--url", ready["api_url"], "--token", _token(ready), *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out) if "--json" in argv else out


def wait_for(pred: Any, timeout_s: float = 60.0) -> None:
    """Poll ``pred``; the deadline only bounds a failing test (a passing one returns at once),
    so it is generous: the suite must pass beside two CPU burners (15 s did not)."""
    deadline = time.monotonic() + max(timeout_s, 60.0)
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_run_operate_kill_restart(
    setup: tuple[ControllerProc, dict[str, Any]],
    mosquitto,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ctl, ready = setup
    assert ready["api_url"].startswith("http://127.0.0.1:") and ready["token_source"] == "config"
    node = ScriptedNode(mosquitto.port, "n1")
    try:
        node.hello(tier="edge", labels={"site": "lab"})
        wait_for(
            lambda: any(
                n["node_id"] == "n1" for n in continuum(ready, capsys, "--json", "nodes")["nodes"]
            )
        )
        spec = tmp_path / "task.toml"
        spec.write_text(
            'id = "t1"\ncommand = ["true"]\n[consistency]\nlevel = "strong"\n'
            '[placement]\nlabels = { site = "lab" }\n'
        )
        submitted = continuum(ready, capsys, "--json", "submit", str(spec))
        assert submitted["task_id"] == "t1"
        # Placed at once on a healthy link; a link graded critical by a slow round
        # trip (strong work avoids those) delays it by a few ticks.
        wait_for(lambda: continuum(ready, capsys, "--json", "get", "t1")["node"] == "n1")
        node.expect("place", lambda e: e.body.task_id == "t1")
        node.start("t1", 1)
        node.request_lease("t1", 1, duration_s=30.0)
        assert node.expect("lease_grant").body.granted
        wait_for(lambda: continuum(ready, capsys, "--json", "get", "t1")["status"] == "running")

        got = continuum(ready, capsys, "--json", "get", "t1")
        assert got["lease"]["live"] and got["attempts"][0]["node"] == "n1"
        listed = continuum(ready, capsys, "--json", "list", "--status", "running")
        assert [t["task_id"] for t in listed["tasks"]] == ["t1"]
        explained = continuum(ready, capsys, "explain", "t1")
        assert "n1" in explained and "top candidates" in explained
        assert "t1" in continuum(ready, capsys, "get", "t1")
        kinds = [e["kind"] for e in continuum(ready, capsys, "--json", "events")["events"]]
        assert {"node_registered", "submitted", "placed", "lease_grant"} <= set(kinds)
        assert continuum(ready, capsys, "--json", "drain", "n1")["draining"] is True
        assert continuum(ready, capsys, "--json", "undrain", "n1")["draining"] is False
        assert "n1" in continuum(ready, capsys, "nodes")
        # `continuum events --follow` streams (SSE): the backlog arrives line by line.
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud.operator_cli",
                "--url",
                ready["api_url"],
                "--token",
                _token(ready),
                "--json",
                "events",
                "--follow",
                "--kind",
                "placed",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            assert follower.stdout is not None
            first = json.loads(follower.stdout.readline())
            assert first["kind"] == "placed" and first["task_id"] == "t1"
        finally:
            follower.kill()
            follower.wait()

        # SIGKILL mid-flight, then a new process on the same state directory.
        assert ctl.kill(signal.SIGKILL) == -signal.SIGKILL
        ready = ctl.start()
        got = continuum(ready, capsys, "--json", "get", "t1")
        assert got["status"] == "running" and got["node"] == "n1" and got["epoch"] == 1
        assert got["lease"] is not None and got["lease"]["live"]
        node.request_lease("t1", 1, duration_s=30.0)
        assert node.expect("lease_grant").body.reason == "renewed"

        continuum(ready, capsys, "--json", "cancel", "t1")
        assert node.expect("cancel", lambda e: e.body.task_id == "t1").body.epoch == 1
        assert ctl.kill(signal.SIGTERM) == 0
        assert not ctl.ready_path.exists()
    finally:
        node.close()


@contextlib.contextmanager
def real_agent(
    ready: dict[str, Any],
    port: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    node_id: str = "a1",
) -> Iterator[Path]:
    """A real ``edge-agent run`` process on the broker at ``port``, registered with the
    controller when the block starts (yields its state directory); SIGTERM (then
    SIGKILL) when it ends."""
    agent_toml = tmp_path / "agent.toml"
    # Run as root, the agent runs tasks as an unprivileged user, who must reach the
    # task's files in the agent's state directory (pytest's tmp_path is 0700).
    state_dir = Path(tempfile.mkdtemp(prefix="continuum-agent-"))
    state_dir.chmod(0o755)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "init",
            "--path",
            str(agent_toml),
            "--node-id",
            node_id,
            "--broker",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(state_dir),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    text = agent_toml.read_text()
    for old, new in (("port = 8787", "port = 0"), ("enabled = true", "enabled = false")):
        assert old in text
        text = text.replace(old, new)
    agent_toml.write_text(text)
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(agent_toml)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for(
            lambda: any(
                n["node_id"] == node_id and n["registered"]
                for n in continuum(ready, capsys, "--json", "nodes")["nodes"]
            ),
            timeout_s=30,
        )
        yield state_dir
    finally:
        stop_process(agent, timeout_s=20)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_real_agent_runs_a_workflow_with_outputs_passed_on(
    setup: tuple[ControllerProc, dict[str, Any]],
    mosquitto,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real ``edge-agent run`` process executes a two-task workflow the controller
    places; the second task reads the first one's JSON output as its input."""
    _, ready = setup
    with real_agent(ready, mosquitto.port, tmp_path, capsys):
        write = "import json,os; json.dump({out}, open(os.environ['CONTINUUM_OUTPUT'], 'w'))"
        workflow = {
            "id": "wf",
            "tasks": [
                {"id": "a", "command": ["python3", "-c", write.format(out="{'x': 41}")]},
                {
                    "id": "b",
                    "depends_on": ["a"],
                    "command": [
                        "python3",
                        "-c",
                        "import json,os; i = json.load(open(os.environ['CONTINUUM_INPUTS'])); "
                        + write.format(out="{'y': i['a']['x'] + 1}"),
                    ],
                },
            ],
        }
        spec = tmp_path / "wf.json"
        spec.write_text(json.dumps(workflow))
        continuum(ready, capsys, "--json", "submit", str(spec))
        wait_for(
            lambda: continuum(ready, capsys, "--json", "get", "b")["status"] == "succeeded",
            timeout_s=60,
        )
        b = continuum(ready, capsys, "--json", "get", "b")
        assert [a["result"] for a in b["attempts"] if a["status"] == "succeeded"] == [{"y": 42}]
        a = continuum(ready, capsys, "--json", "get", "a")
        (a_done,) = [x for x in a["attempts"] if x["status"] == "succeeded"]
        (b_done,) = [x for x in b["attempts"] if x["status"] == "succeeded"]
        assert a_done["hlc"] and b_done["started_hlc"]
        from shared.clocks import Timestamp

        # b started only after a had finished (HLC order on one node)
        assert Timestamp.decode(b_done["started_hlc"]) > Timestamp.decode(a_done["hlc"])
        wf = continuum(ready, capsys, "--json", "list", "--workflow", "wf")
        assert {t["status"] for t in wf["tasks"]} == {"succeeded"}


def test_a_user_cancel_stops_the_agent_and_the_task_ends_cancelled(
    setup: tuple[ControllerProc, dict[str, Any]],
    mosquitto,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``continuum cancel`` on a task running on a real agent: the agent stops the
    process (its attempt reported cancelled) and every copy of the record carries the
    task-wide flag, which the agent learns as CRDT state, not from the command."""
    _, ready = setup
    with real_agent(ready, mosquitto.port, tmp_path, capsys) as state_dir:
        spec = tmp_path / "long.json"
        spec.write_text(json.dumps({"id": "long", "command": ["sleep", "60"]}))
        continuum(ready, capsys, "--json", "submit", str(spec))
        wait_for(
            lambda: continuum(ready, capsys, "--json", "get", "long")["status"] == "running",
            timeout_s=30,
        )
        continuum(ready, capsys, "--json", "cancel", "long")

        def stopped() -> bool:
            task = continuum(ready, capsys, "--json", "get", "long")
            return [a["status"] for a in task["attempts"]] == ["cancelled"]

        wait_for(stopped, timeout_s=30)
        assert continuum(ready, capsys, "--json", "get", "long")["status"] == "cancelled"
        local = LocalClient(socket_path=state_dir / "agent.sock")  # the agent's local API

        def agent_sees_cancelled() -> bool:
            status, task = local.request("GET", "/v1/tasks/long")
            return status == 200 and task["status"] == "cancelled"

        wait_for(agent_sees_cancelled, timeout_s=15)


def test_the_api_rate_limit_is_a_setting(tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    """``[api] rate_per_s`` and ``burst`` reach the running API: a bucket of 2 refilled once
    a minute answers the third request 429 with Retry-After."""
    config = quick_config(
        tmp_path,
        mosquitto.port,
        ("rate_per_s = 50.0", "rate_per_s = 0.0167"),
        ("burst = 200.0", "burst = 2"),
    )
    ctl = ControllerProc(config)
    ready = ctl.start()
    try:
        headers = {"Authorization": f"Bearer {_token(ready)}"}
        codes = []
        for _ in range(3):
            req = urllib.request.Request(f"{ready['api_url']}/api/v1/tasks", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    codes.append(resp.status)
            except urllib.error.HTTPError as err:
                codes.append(err.code)
                assert int(err.headers["Retry-After"]) >= 1
        assert codes == [200, 200, 429]
    finally:
        ctl.kill(signal.SIGKILL)
