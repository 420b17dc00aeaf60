"""What an operator reads of a real agent (issue 15, logs and metrics): the Prometheus endpoint
on ``[metrics] bind`` (outbox depth, connectivity, running and queued tasks, lease requests and
answers, rejected messages by reason, task outcomes by status) and the log lines for task
failures, broker disconnects with their reason, TLS failures and a normal stop."""

from __future__ import annotations

import json
import socket
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentFactory, AgentProcess, ScriptedCloud, place, sh, spec, wait_until
from prometheus_client.parser import text_string_to_metric_families

from cloud.tls import init_ca, issue
from edge_agent.config import bind_address, parse_config
from shared.errors import ValidationError
from shared.protocol import LeaseGrant, LeaseRequest, topic

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return _samples(answer.read().decode())


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _lines(agent: AgentProcess) -> list[dict[str, Any]]:
    """The agent's JSON log lines (its stderr is not a terminal)."""
    lines = []
    for line in agent.log().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _metrics_port(agent: AgentProcess) -> int:
    ready = json.loads((agent.state_dir / "agent.ready.json").read_text(encoding="utf-8"))
    assert isinstance(ready["metrics_port"], int), ready
    return ready["metrics_port"]


def _refuse(node: str, req: LeaseRequest) -> LeaseGrant:
    return LeaseGrant(
        task_id=req.task_id,
        epoch=req.epoch,
        granted=False,
        reason="stale_epoch",
        request_id=req.request_id,
    )


def test_metrics_endpoint_and_task_failure_lines(
    make_agent: AgentFactory, cloud: ScriptedCloud
) -> None:
    agent = make_agent(metrics={"bind": "127.0.0.1:0"}).start()
    port = _metrics_port(agent)
    wait_until(lambda: cloud.messages("hello"), 15, "the agent's hello")
    cloud.lease_answer = _refuse
    once = {"max_attempts": 1}
    place(cloud, "edge-1", spec("ok", sh("exit 0")))
    place(cloud, "edge-1", spec("bad", sh("echo oops >&2; exit 3"), retry=once))
    place(cloud, "edge-1", spec("strong", sh("exit 0")), level="strong", lease_s=5.0)
    cloud.client.publish(topic("edge-1", "down"), b"not json", qos=1)
    wait_until(lambda: cloud.status("ok") == "succeeded", 20, "ok to succeed")

    for name, labels, want in (
        ("edge_agent_task_outcomes_total", {"status": "failed"}, 1),
        ("edge_agent_lease_answers_total", {"outcome": "refused"}, 1),
        ("edge_agent_connectivity", {"state": "connected"}, 1),
        ("edge_agent_outbox_depth", {}, 0),
    ):
        wait_until(
            lambda n=name, lb=labels, w=want: _value(_scrape(port), n, **lb) == w,
            30,
            f"{name}{labels} == {want}",
        )
    s = _scrape(port)
    assert _value(s, "edge_agent_task_outcomes_total", status="succeeded") == 1
    assert _value(s, "edge_agent_task_outcomes_total", status="cancelled") == 0
    assert (_value(s, "edge_agent_lease_requests_total") or 0) >= 1
    assert (_value(s, "edge_agent_rejected_messages_total", reason="not_json") or 0) >= 1
    assert _value(s, "edge_agent_connectivity", state="disconnected") == 0
    assert _value(s, "edge_agent_link_up") == 1
    assert _value(s, "edge_agent_running_tasks") == 0
    assert _value(s, "edge_agent_queued_tasks") == 0
    assert (_value(s, "edge_agent_reconnects_total") or 0) >= 1
    info = [k for k in s if k[0] == "edge_agent_info"]
    assert info and ("node", "edge-1") in info[0][1]
    # The local API serves the same series (rendered on the core thread).
    code, text = agent.api("GET", "/metrics")
    assert code == 200
    assert _value(_samples(text), "edge_agent_task_outcomes_total", status="failed") == 1

    failed = [line for line in _lines(agent) if line.get("task_id") == "bad"]
    assert failed and failed[0]["level"] == "warning", failed
    assert failed[0]["exit_code"] == 3 and failed[0]["reason"] == "exit_code 3"
    assert failed[0]["attempt"].startswith("bad/")
    assert failed[0]["msg"].startswith("task bad failed")


def test_disconnects_carry_their_reason_and_a_normal_stop_is_info(
    make_agent: AgentFactory, cloud: ScriptedCloud, mosquitto: Any
) -> None:
    agent = make_agent().start()
    wait_until(lambda: agent.status()["link_up"], 15, "the agent to connect")
    mosquitto.restart()
    wait_until(
        lambda: [ln for ln in _lines(agent) if ln["msg"].startswith("disconnected from broker")],
        20,
        "the lost connection to be logged",
    )
    wait_until(lambda: agent.status()["link_up"], 30, "the agent to reconnect")
    lost = next(ln for ln in _lines(agent) if ln["msg"].startswith("disconnected from broker"))
    assert lost["level"] == "warning" and lost["was_up"] is True
    assert isinstance(lost["reason_code"], int) and lost["reason"], lost
    wait_until(lambda: cloud.messages("hello"), 15, "the agent's hello")
    place(cloud, "edge-1", spec("long", sh("sleep 60")))
    wait_until(lambda: agent.status()["running"], 15, "the long task to start")
    mark = len(_lines(agent))
    assert agent.terminate() == 0
    tail = _lines(agent)[mark:]
    assert [ln for ln in tail if ln["level"] in ("warning", "error")] == [], tail
    stopped = [ln for ln in tail if ln.get("task_id") == "long"]
    assert stopped and stopped[0]["reason"] == "agent_shutdown", tail  # stopped: INFO
    stop = [ln for ln in tail if ln["msg"].startswith("disconnected from broker")]
    assert stop and stop[0]["level"] == "info" and stop[0]["reason"] == "Normal disconnection"
    assert tail[-1]["msg"] == "agent stopped" and tail[-1]["level"] == "info"


def test_a_broker_certificate_from_another_ca_is_an_error_with_the_reason(
    tmp_path: Path, make_agent: AgentFactory, mosquitto_factory: Any
) -> None:
    now = datetime.now(UTC)
    init_ca(tmp_path / "ca", now=now)
    init_ca(tmp_path / "other-ca", now=now)
    certs = tmp_path / "certs"
    certs.mkdir()
    crt, key = issue(
        tmp_path / "ca", "server", out_dir=certs, server=True, hosts=["127.0.0.1"], now=now
    )
    key.chmod(0o644)  # mosquitto may drop privileges before reading its key
    broker = mosquitto_factory(
        extra_config=[f"cafile {certs / 'ca.crt'}", f"certfile {crt}", f"keyfile {key}"]
    )
    agent = make_agent(
        port=broker.port,
        broker={"tls": True, "ca_file": str(tmp_path / "other-ca" / "ca.crt")},
    ).start()

    def refused() -> list[dict[str, Any]]:
        return [ln for ln in _lines(agent) if ln["msg"].startswith("TLS verification")]

    line = wait_until(refused, 20, "the TLS failure to be logged")[0]
    assert line["level"] == "error", line
    # OpenSSL's verification message, e.g. "self-signed certificate in certificate chain"
    assert "certificate" in line["msg"] and line["verify_code"] > 0, line
    assert line["broker"] == f"127.0.0.1:{broker.port}"
    assert not any(ln["msg"].startswith("broker unreachable") for ln in _lines(agent))


def test_a_metrics_bind_that_cannot_listen_is_an_error_and_the_agent_runs_on(
    make_agent: AgentFactory,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = make_agent(metrics={"bind": f"127.0.0.1:{port}"}).start()
        assert agent.status()["node_id"] == "edge-1"
    line = next(ln for ln in _lines(agent) if ln["msg"] == "metrics endpoint not started")
    assert line["level"] == "error" and line["bind"] == f"127.0.0.1:{port}", line
    ready = json.loads((agent.state_dir / "agent.ready.json").read_text(encoding="utf-8"))
    assert ready["metrics_port"] is None


@pytest.mark.parametrize("bind", ["9464", "host:", ":9464", "host:port", "127.0.0.1:70000"])
def test_a_bad_metrics_bind_is_a_config_problem(bind: str) -> None:
    data = {"node": {"id": "edge-1"}, "broker": {"host": "h"}, "metrics": {"bind": bind}}
    with pytest.raises(ValidationError, match=r"metrics\.bind"):
        parse_config(data, env={})


@pytest.mark.parametrize(
    ("bind", "address"),
    [("", None), ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0))],
)
def test_bind_addresses(bind: str, address: tuple[str, int] | None) -> None:
    assert bind_address(bind) == address
