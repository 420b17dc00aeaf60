"""A stolen device's credentials reach only its own work (issue 11, findings 1 and 2).

Each attack of the issue is replayed against a real Mosquitto running the shipped ACL
(``deploy/mosquitto/acl``) and the shipped client-id binding
(``deploy/mosquitto/continuum.conf``), with a real controller behind it: edge-1 speaks
only on its own topics (the ACL holds) and says what an attacker would. Each attack
must now fail to have its effect, and each refusal is an event with edge-1 as actor.

Non-delivery is asserted by order, never by waiting: the controller publishes in
order on one connection, so once a later message to a node has arrived, an earlier
one would have too.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cloud_harness import WAIT_S, Harness, ScriptedNode

from shared.authz import local_task_id
from shared.clocks import Timestamp
from shared.crdt import (
    AttemptStatus,
    TaskRecord,
    merge,
    new_record,
    place,
    request_cancel,
    set_status,
    start_attempt,
)
from shared.decisions import DOWN
from shared.protocol import Deltas, Digest, Presence, topic

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
USERS = {"controller": "ctl-pw", "edge-1": "e1-pw", "edge-2": "e2-pw"}
SECRET = "s3cr3t-value"

pytestmark = pytest.mark.broker


def _binding() -> list[str]:
    """The shipped client-id binding, as the shipped broker config states it."""
    lines = [
        line.strip()
        for line in (DEPLOY / "continuum.conf").read_text().splitlines()
        if line.strip().startswith("use_username_as_clientid")
    ]
    assert lines == ["use_username_as_clientid true"]
    return lines


_Paho = mqtt.Client


class _Logins:
    """Stands in for ``paho.mqtt.client.Client`` while the harness builds its clients:
    each logs in as the broker user its client id names (``ctl-*``: the controller,
    ``<node>-*``: that node), and its disconnections are recorded per user."""

    def __init__(self) -> None:
        self.dropped: dict[str, queue.Queue[object]] = {user: queue.Queue() for user in USERS}
        self.ids: dict[str, str] = {}  # user -> the client id its client asked for

    def __call__(self, *args: Any, client_id: str = "", **kwargs: Any) -> mqtt.Client:
        user = "controller" if client_id.startswith("ctl-") else client_id.rsplit("-", 1)[0]
        self.ids[user] = client_id
        return _login(user, client_id, self.dropped[user], *args, **kwargs)


def _login(user: str, client_id: str, dropped: queue.Queue[object], *args: Any, **kw: Any) -> Any:
    if not args:
        args = (mqtt.CallbackAPIVersion.VERSION2,)
    c = _Paho(*args, client_id=client_id, **{"protocol": mqtt.MQTTv5, **kw})
    c.username_pw_set(user, USERS[user])
    c.on_disconnect = lambda _c, _u, _f, rc, _p: dropped.put(rc)
    return c


@pytest.fixture
def logins(monkeypatch: pytest.MonkeyPatch) -> _Logins:
    made = _Logins()
    monkeypatch.setattr(mqtt, "Client", made)
    return made


@pytest.fixture
def h(tmp_path: Path, mosquitto_factory: Any, logins: _Logins) -> Iterator[Harness]:
    broker = mosquitto_factory(users=USERS, acl_file=DEPLOY / "acl", extra_config=_binding())
    harness = Harness(tmp_path, broker.port)
    try:
        yield harness
    finally:
        harness.close()


def _victim_task(h: Harness, edge2: ScriptedNode) -> tuple[str, tuple[str, int]]:
    """A task placed on edge-2 (only it has the label), started there, with a secret."""
    h.controller.submit_task(
        {
            "id": "t-victim",
            "command": ["true"],
            "env": {"TOKEN": SECRET},
            "placement": {"labels": {"only": "edge-2"}},
        }
    )
    placed = h.await_msg(edge2, "place", lambda e: e.body.task_id == "t-victim")
    # the record that comes before each ``place`` (cloud.scheduling.send_place)
    h.await_msg(edge2, "deltas", lambda e: any(r.task_id == "t-victim" for r in e.body.records))
    rec = new_record("t-victim", placed.body.spec, writer="edge-2", hlc=edge2.clock.now(0))
    edge2.records["t-victim"] = merge(
        rec,
        place(
            rec,
            epoch=placed.body.epoch,
            node="edge-2",
            level=placed.body.level,
            lease_s=placed.body.lease_s,
            writer="edge-2",
            hlc=edge2.clock.now(0),
        ),
    )
    dot = edge2.start("t-victim", placed.body.epoch)
    h.await_msg(edge2, "ack", lambda e: e.body.up_to_seq == edge2.seq)
    assert h.controller.get_task("t-victim")["status"] == "running"
    return "t-victim", dot


def _place(
    rec: TaskRecord, epoch: int, node: str, stamp: Timestamp, level: str = "causal"
) -> TaskRecord:
    """A placement delta written by edge-1 (only the controller may place)."""
    return place(rec, epoch=epoch, node=node, level=level, lease_s=None, writer="edge-1", hlc=stamp)


def _sent(h: Harness, edge1: ScriptedNode, deltas: list[TaskRecord], **kw: Any) -> None:
    """edge-1 sends ``deltas`` on its own ``up`` topic; wait for the controller's ack."""
    seq = kw.pop("seq", None)
    if seq is None:
        seq = edge1.send_deltas(deltas)
    else:
        edge1.publish("up", Deltas(records=tuple(deltas)), seq=seq)
    h.await_msg(edge1, "ack")


def _settled(h: Harness, *nodes: ScriptedNode) -> None:
    """Everything the controller queued so far has reached ``nodes`` (order argument)."""
    h.keep_alive(*(n.node_id for n in nodes))


def _refused(h: Harness, reason: str) -> list[dict[str, Any]]:
    events = [e for e in h.events(kind="delta_refused") if e["reason"] == reason]
    assert events and all(e["node_id"] == "edge-1" for e in events), h.events(kind="delta_refused")
    assert all(e["data"]["actor"] == "edge-1" for e in events)
    return events


def _refused_count(h: Harness, reason: str) -> float:
    value = h.controller.metrics.registry.get_sample_value(
        "continuum_refused_writes_total", {"reason": reason}
    )
    return value or 0.0


def test_seven_merge_attacks_from_a_stolen_device_have_no_effect(h: Harness) -> None:
    edge1 = h.node("edge-1")
    edge2 = h.node("edge-2", labels={"only": "edge-2"})
    victim, victim_dot = _victim_task(h, edge2)
    before = h.controller.records[victim]
    stamp = edge1.clock.now(0)

    # 1. A record placed on edge-2 whose shell command edge-2 would run.
    for task_id in ("evil", local_task_id("edge-1", "0000000000e1")):
        spec = {"id": task_id, "command": ["sh", "-c", "id"]}
        evil = new_record(task_id, spec, writer="edge-1", hlc=stamp)
        evil = merge(evil, _place(evil, 1, "edge-2", stamp))
        _sent(h, edge1, [evil])
    assert "evil" not in h.controller.records
    _refused(h, "namespace")
    _refused(h, "placement")
    # 2. The cancel flag of edge-2's task.
    _sent(h, edge1, [request_cancel(before, writer="edge-1", hlc=stamp)])
    _refused(h, "cancel")
    # 3. A succeeded attempt with a forged result on edge-2's running task.
    forged = set_status(
        before, victim_dot, AttemptStatus.SUCCEEDED, writer="edge-1", hlc=stamp, result={"x": 1}
    )
    _, mine = start_attempt(before, node="edge-1", epoch=1, writer="edge-1", hlc=stamp)
    _sent(h, edge1, [forged, mine])
    _refused(h, "not_placed")
    # 4. A placement with a higher epoch on itself (to be sent the spec and its env).
    grab = place(
        before, epoch=99, node="edge-1", level="causal", lease_s=None, writer="edge-1", hlc=stamp
    )
    _sent(h, edge1, [grab])
    # 5. A digest naming edge-2's task, to be sent its full record.
    edge1.publish("up", Digest(entries={victim: "x"}))
    h.await_msg(edge1, "digest")
    # 6. 4,096 empty pending tasks in one message.
    _sent(h, edge1, [TaskRecord(f"junk-{i}") for i in range(4_096)])
    (junk,) = _refused(h, "unknown_task")
    assert junk["data"]["count"] == 4_096  # one event for the flood, not 4,096
    # 7. Its outbox seq set to 2**62.
    edge1.publish("up", Deltas(records=()), seq=2**62)
    ack = h.await_msg(edge1, "ack", lambda e: e.body.up_to_seq is not None)
    assert ack.body.up_to_seq < 2**62
    _refused(h, "seq_jump")

    _settled(h, edge1, edge2)
    after = h.controller.records[victim]
    assert after == before  # no cancel, no forged attempt, same placement
    status = h.controller.get_task(victim)
    assert status["status"] == "running" and status["node"] == "edge-2" and status["epoch"] == 1
    assert not any(t.startswith("junk-") or t == "evil" for t in h.controller.records)
    evil_local = h.controller.records.get(local_task_id("edge-1", "0000000000e1"))
    assert evil_local is None or evil_local.placement is None
    # edge-2 was told nothing of it all: no place, no cancel, no record.
    assert not edge2.received("place") and not edge2.received("cancel")
    assert not edge2.received("deltas")
    # edge-1 never saw the victim's spec (its env secret) in any message.
    assert not edge1.received("place", lambda e: e.body.task_id == victim)
    assert not edge1.received("deltas", lambda e: any(r.spec for r in e.body.records))
    for reason in ("namespace", "placement", "cancel", "not_placed", "unknown_task", "seq_jump"):
        assert _refused_count(h, reason) >= 1, reason
    assert _refused_count(h, "unreadable") >= 1
    # ... and the victim's own work still counts: it finishes as it should.
    edge2.finish(victim, victim_dot, result={"ok": True})
    h.await_msg(edge2, "ack", lambda e: e.body.up_to_seq == edge2.seq)
    assert h.controller.get_task(victim)["status"] == "succeeded"


def test_a_flood_of_refused_messages_is_counted_but_bounded_in_the_event_log(h: Harness) -> None:
    edge1 = h.node("edge-1")
    edge2 = h.node("edge-2", labels={"only": "edge-2"})
    victim, _ = _victim_task(h, edge2)
    rec = h.controller.records[victim]
    started = time.monotonic()
    for _ in range(40):
        _sent(h, edge1, [request_cancel(rec, writer="edge-1", hlc=edge1.clock.now(0))])
    windows = 1 + int((time.monotonic() - started) // 10)  # one event per 10 s at most
    events = _refused(h, "cancel")
    assert len(events) <= windows
    assert sum(e["data"]["count"] + e["data"]["held_back"] for e in events) <= 40
    assert _refused_count(h, "cancel") == 40
    assert not h.controller.records[victim].cancel_requested


def test_a_local_submission_is_adopted_and_stays_on_its_node(h: Harness) -> None:
    edge1 = h.node("edge-1")
    h.node("edge-2")
    task_id = local_task_id("edge-1", "00000000abcd")
    spec = {
        **h.controller.submit_task({"id": "t-shape", "command": ["true"]})[0]["spec"],
        "id": task_id,
    }
    stamp = edge1.clock.now(0)
    rec = new_record(task_id, spec, writer="edge-1", hlc=stamp)
    rec = merge(rec, _place(rec, 0, "edge-1", stamp, level="eventual"))
    edge1.records[task_id] = rec
    _sent(h, edge1, [rec])
    task = h.controller.get_task(task_id)
    assert task["node"] == "edge-1" and task["epoch"] == 0
    assert not h.events(kind="delta_refused")
    # Its origin may read it back.
    edge1.publish("up", Digest(entries={task_id: "x"}))
    answer = h.await_msg(
        edge1, "deltas", lambda e: any(r.task_id == task_id for r in e.body.records)
    )
    assert answer.body.records[0].spec is not None
    # edge-1 drops off the broker for good: an eventual task would be re-placed at once,
    # but one submitted on edge-1 stays there (it asked for no placement mode).
    edge1.publish("presence", Presence(status="offline"))
    entry = h.controller.registry.get("edge-1")
    assert entry is not None
    h.pump_until(lambda: entry.link_state in DOWN)
    for _ in range(3):
        h.keep_alive("edge-2")
        h.tick(1.0)
    assert h.controller.get_task(task_id)["node"] == "edge-1"
    assert not h.events(task_id=task_id, kind="replaced")


# ---------------------------------------------------------------- client-id takeovers


def _connect(port: int, user: str, client_id: str) -> tuple[mqtt.Client, queue.Queue[object]]:
    connected: queue.Queue[object] = queue.Queue()
    c = _login(user, client_id, queue.Queue())
    c.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    rc = connected.get(timeout=WAIT_S)
    assert not rc.is_failure, rc  # type: ignore[attr-defined]
    return c, connected


@pytest.mark.parametrize("victim", ["controller", "edge-2"])
def test_a_devices_credentials_cannot_displace_the_controller_or_another_node(
    h: Harness, logins: _Logins, victim: str
) -> None:
    """edge-1's credentials with the victim's client id: the one its client asked for,
    the product's (``continuum-controller-<id>``, ``continuum-agent-<node>``) and the bare
    username. The binding makes each of them edge-1's own id."""
    h.node("edge-1")
    h.node("edge-2")
    product = (
        "continuum-controller-controller" if victim == "controller" else "continuum-agent-edge-2"
    )
    for stolen_id in (logins.ids[victim], product, victim):
        intruder, _ = _connect(h.port, "edge-1", stolen_id)
        try:
            # The controller and edge-2 still talk, both ways, after the intrusion.
            h.keep_alive("edge-2")
            assert logins.dropped["controller"].empty() and logins.dropped["edge-2"].empty()
            entry = h.controller.registry.get("edge-2")
            assert entry is not None and entry.presence == "online"
            # The intruder is edge-1 to the broker: edge-1's topics only. Junk on edge-2's
            # presence first, then on edge-1's telemetry: once the second is refused by
            # the controller, the first would have been too, had the broker passed it.
            before = _rejected(h)
            intruder.publish(topic("edge-2", "presence"), b"junk", qos=1).wait_for_publish(WAIT_S)
            intruder.publish(topic("edge-1", "telemetry"), b"junk", qos=1).wait_for_publish(WAIT_S)
            h.pump_until(lambda b=before: _rejected(h) > b)
            h.keep_alive("edge-2")
            assert _rejected(h) == before + 1
        finally:
            intruder.disconnect()
            intruder.loop_stop()


def _rejected(h: Harness) -> float:
    """Messages the controller rejected so far, every reason together."""
    return sum(
        sample.value
        for metric in h.controller.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "continuum_rejected_messages_total"
    )
