"""End to end, a node's lifecycle as an operator drives it: ``continuum drain NODE
--deadline S`` moves movable work away and returns once the node is empty, ``continuum
node NODE`` shows it, ``continuum nodes remove`` is refused while a node holds work and
forced otherwise; the controller (a real process on a real Mosquitto) logs one INFO line
per join, placement, re-placement, drain and removal, exports per-node series, and
logs its own disconnect at a normal stop at INFO. Nodes are scripted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cloud_harness import ScriptedNode
from test_controller_process import ROOT, ControllerProc, _token, continuum, setup, wait_for

from cloud.operator_cli import main as continuum_main

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

__all__ = ["setup"]  # the controller process fixture, shared with test_controller_process

SPEC = {"command": ["true"], "placement": {"labels": {"site": "a"}}}


def _submit(
    ready: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp: Path,
    task_id: str,
    level: str,
    **extra: Any,
) -> None:
    path = tmp / f"{task_id}.json"
    spec = {"id": task_id, **SPEC, "consistency": {"level": level}, **extra}
    path.write_text(json.dumps(spec))
    continuum(ready, capsys, "--json", "submit", str(path))


def _log_lines(config: Path) -> list[dict[str, Any]]:
    lines = (config.parent / "controller.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_drain_node_remove_logs_and_metrics(
    setup: tuple[ControllerProc, dict[str, Any]],
    mosquitto,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ctl, ready = setup
    n1, n2 = ScriptedNode(mosquitto.port, "n1"), ScriptedNode(mosquitto.port, "n2")
    try:
        for n in (n1, n2):
            n.hello(tier="edge", labels={"site": "a"})
        wait_for(lambda: len(continuum(ready, capsys, "--json", "nodes")["nodes"]) == 2)
        continuum(ready, capsys, "drain", "n2")  # both tasks land on n1
        # a drain moves started eventual work only when it is idempotent (shared/decisions)
        _submit(ready, capsys, tmp_path, "e", "eventual", idempotent=True)
        _submit(ready, capsys, tmp_path, "c", "causal")
        n1.expect("place", lambda e: e.body.task_id == "e")
        n1.expect("place", lambda e: e.body.task_id == "c")
        n1.start("e", 1)  # started: no policy trigger moves them (a drain moves e)
        dot_c = n1.start("c", 1)
        wait_for(lambda: continuum(ready, capsys, "--json", "get", "c")["status"] == "running")
        continuum(ready, capsys, "undrain", "n2")

        metrics = urllib.request.urlopen(f"{ready['api_url']}/metrics", timeout=10).read().decode()
        assert 'continuum_node_running_tasks{node="n1"} 2.0' in metrics
        assert 'continuum_node_link_state{link_state="healthy",node="n2"} 1.0' in metrics

        # drain n1 and wait for it to be empty: e moves at once, c (started) runs out here
        drain = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud.operator_cli",
                "--url",
                ready["api_url"],
                "--token",
                _token(ready),
                "drain",
                "n1",
                "--deadline",
                "60",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        n2.expect("place", lambda e: e.body.task_id == "e" and e.body.epoch == 2)
        assert drain.stderr is not None
        while "n1: 1 task(s) still on it" not in drain.stderr.readline():  # c, started
            assert drain.poll() is None
        n1.finish("c", dot_c)
        out, err = drain.communicate(timeout=60)
        assert drain.returncode == 0, err
        assert "n1: drained (empty)" in out
        assert "drained (empty)" in continuum(ready, capsys, "node", "n1")
        assert continuum(ready, capsys, "--json", "node", "n2")["tasks"] == ["e"]

        # n2 holds e: refused, then forced (n1 drains: e has nowhere to go, it is cancelled)
        capsys.readouterr()
        assert (
            continuum_main(
                ["--url", ready["api_url"], "--token", _token(ready), "nodes", "remove", "n2"]
            )
            == 1
        )
        assert "error 409" in capsys.readouterr().err
        forced = continuum(ready, capsys, "--json", "nodes", "remove", "n2", "--force")
        assert forced == {"node_id": "n2", "removed": True, "replaced": [], "cancelled": ["e"]}
        assert "removed" in continuum(ready, capsys, "nodes", "remove", "n1")
        assert continuum(ready, capsys, "--json", "nodes")["nodes"] == []
        events = continuum(ready, capsys, "--json", "events", "--task", "c")["events"]
        assert {e["kind"]: e["node_id"] for e in events}["task_succeeded"] == "n1"
        assert "node=n1" in continuum(ready, capsys, "events", "--task", "c")
    finally:
        n1.close()
        n2.close()
    assert ctl.kill(signal.SIGTERM) == 0

    lines = _log_lines(ctl.config)
    said = {
        (line["msg"].split(":")[0], line.get("node_id"))
        for line in lines
        if line["level"] == "info"
    }
    assert {
        ("node joined", "n1"),
        ("task placed", "n1"),
        ("task re-placed", "n2"),
        ("node drained", "n1"),
        ("node removed", "n2"),
    } <= said
    moved = next(line for line in lines if line["msg"].startswith("task re-placed"))
    assert (moved["event"], moved["task_id"], moved["epoch"]) == ("replaced", "e", 2)
    assert moved["reason"].startswith("drain: eventual task leaves n1")
    assert moved["data_level"] == "eventual"
    stop = [line for line in lines if line["msg"].startswith("disconnected from broker")]
    assert stop and all(line["level"] == "info" for line in stop)
