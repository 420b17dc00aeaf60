"""The controller feeds the prediction model (issue 12): what placement reads of the
nodes and tasks, what it learns from finished attempts and pings, and the levels it
chooses by cost. In-memory bus (``memory_bus``), ``adaptive`` placement mode.

A run's length is what the node's own stamps say (start to exit, as an agent reports
it): :class:`Runs` moves the node's clock on by the run's seconds between the two
reports (and the controller's monotonic clock with it), so no test waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloud_harness import Harness, NodeScript, make_config, wall_ms
from memory_bus import MemoryHarness

from cloud.controller import LEARNER_SAVE_S
from shared.clocks import Timestamp
from shared.crdt import AttemptStatus, TaskRecord, set_status, start_attempt
from shared.errors import ValidationError
from shared.placement import PREDICTION_TERMS
from shared.protocol import Telemetry
from shared.vocab import Level


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[MemoryHarness]:
    """The in-memory controller placing in the ``adaptive`` mode."""
    harness = MemoryHarness(tmp_path, make_config(tmp_path, placement={"mode": "adaptive"}))
    try:
        yield harness
    finally:
        harness.close()


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "command": ["true"], **fields}


def on(label: str, task_id: str, **fields: Any) -> dict[str, Any]:
    """A task pinned to the node labelled ``name = label``."""
    return task(task_id, placement={"labels": {"name": label}}, **fields)


ADAPTIVE = {"level": "adaptive", "min": "eventual", "max": "strong"}


class Runs:
    """Attempts that start and end as an agent reports them, ``seconds`` apart by the
    node's own clock (kept ahead of the wall clock by the runs so far; well within
    the controller's skew bound) and by the controller's."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.ahead_ms: dict[str, int] = {}

    def stamp(self, node: NodeScript) -> Timestamp:
        return node.clock.now(wall_ms() + self.ahead_ms.get(node.node_id, 0))

    def start(self, node: NodeScript, task_id: str) -> tuple[str, int]:
        """The node starts the attempt of the ``place`` it was sent."""
        place = self.h.await_msg(node, "place", lambda e: e.body.task_id == task_id)
        return self.attempt(node, task_id, place.body.epoch)

    def attempt(self, node: NodeScript, task_id: str, epoch: int) -> tuple[str, int]:
        """The node starts an attempt (again, for a retry) and reports it."""
        rec = node.records.get(task_id) or TaskRecord(task_id)
        dot, delta = start_attempt(
            rec, node=node.node_id, epoch=epoch, writer=node.node_id, hlc=self.stamp(node)
        )
        node.send_deltas([node._apply(delta)])
        self.h.pump()
        return dot

    def end(
        self,
        node: NodeScript,
        task_id: str,
        dot: tuple[str, int],
        seconds: float,
        status: AttemptStatus = AttemptStatus.SUCCEEDED,
    ) -> None:
        self.ahead_ms[node.node_id] = self.ahead_ms.get(node.node_id, 0) + int(seconds * 1000)
        self.h.clock.advance(seconds)
        delta = set_status(
            node.records[task_id],
            dot,
            status,
            writer=node.node_id,
            hlc=self.stamp(node),
            exit_code=0 if status is AttemptStatus.SUCCEEDED else 1,
        )
        node.send_deltas([node._apply(delta)])
        self.h.pump()

    def run(self, node: NodeScript, task_id: str, seconds: float) -> None:
        self.end(node, task_id, self.start(node, task_id), seconds)


def candidates(h: Harness, task_id: str) -> dict[str, dict[str, float]]:
    """The explanation's candidates of a task: node -> its terms."""
    explanation = h.controller.get_task(task_id)["explanation"]
    return {c["node"]: c["terms"] for c in explanation["candidates"]}


def sample(h: Harness, name: str, **labels: str) -> float | None:
    h.controller.metrics_text()
    return h.controller.metrics.registry.get_sample_value(name, labels)


def telemetry(node: NodeScript, *, cpu_pct: float = 0.0, running: int = 0, queued: int = 0) -> None:
    node.publish(
        "telemetry",
        Telemetry(
            cpu_pct=cpu_pct,
            memory_pct=10.0,
            memory_free_mb=1000.0,
            disk_free_mb=1000.0,
            load=(0.0, 0.0, 0.0),
            running=running,
            queue_len=queued,
        ),
    )


def test_a_node_twice_as_fast_is_learned_predicted_twice_as_fast_and_preferred(
    ha: MemoryHarness,
) -> None:
    slow = ha.node("n-slow", labels={"name": "slow"})
    fast = ha.node("n-fast", labels={"name": "fast"})
    c, runs = ha.controller, Runs(ha)
    for i in range(6):
        c.submit_task(on("slow", f"s{i}", name="job"))
        runs.run(slow, f"s{i}", 2.0)
        c.submit_task(on("fast", f"f{i}", name="job"))
        runs.run(fast, f"f{i}", 1.0)
    learner = c.registry.learner
    ratio = learner.speed_of("n-fast", "edge").value / learner.speed_of("n-slow", "edge").value
    assert ratio == pytest.approx(2.0, rel=0.1)
    assert learner.work_of("job").value == pytest.approx(
        2.0 * learner.speed_of("n-slow", "edge").value, rel=0.1
    )

    c.submit_task(task("free", name="job"))
    assert c.get_task("free")["node"] == "n-fast"
    terms = candidates(ha, "free")
    assert terms["n-slow"]["exec_s"] / terms["n-fast"]["exec_s"] == pytest.approx(2.0, rel=0.1)
    # learned speed and prediction error are exposed per node
    speed = sample(ha, "continuum_node_speed", node="n-fast")
    assert speed == pytest.approx(learner.speed_of("n-fast", "edge").value)
    error = sample(ha, "continuum_node_prediction_error", node="n-slow")
    assert error == pytest.approx(learner.error_of("n-slow", "edge"))


def test_a_backlog_delays_the_prediction_and_moves_work_elsewhere(ha: MemoryHarness) -> None:
    n1 = ha.node("n1", labels={"name": "one"}, cpus=2)
    ha.node("n2", labels={"name": "two"}, cpus=2)
    c = ha.controller
    for i in range(4):  # placed on n1, not finished: 4 x the default 1 s of work
        c.submit_task(on("one", f"q{i}"))
    entry = c.registry.nodes["n1"]
    assert c.scheduler.backlog_s(entry, 1.0, ha.clock()) == pytest.approx(4.0)

    c.submit_task(task("t"))
    assert c.get_task("t")["node"] == "n2"
    terms = candidates(ha, "t")
    assert terms["n1"]["queue_s"] == pytest.approx(4.0 / 2)  # backlog over 2 cores
    assert terms["n2"]["queue_s"] == pytest.approx(0.0)
    assert terms["n1"]["finish_s"] - terms["n2"]["finish_s"] == pytest.approx(2.0)

    # Telemetry shows two tasks the controller did not place: counted at the mean.
    telemetry(n1, running=2, queued=4)
    ha.pump_until(lambda: entry.telemetry.get("queue_len") == 4)
    assert c.scheduler.backlog_s(entry, 1.0, ha.clock()) == pytest.approx(6.0)


def test_a_node_s_executor_slots_from_its_hello_delay_the_prediction(ha: MemoryHarness) -> None:
    # Both nodes have 8 cores and one task placed (not started); n1's agent runs one
    # attempt at once (its hello's slots), n2's advertises none (an older agent).
    ha.node("n1", labels={"name": "one"}, cpus=8, slots=1)
    ha.node("n2", labels={"name": "two"}, cpus=8)
    c = ha.controller
    assert c.registry.nodes["n1"].slots == 1 and c.registry.nodes["n2"].slots == 0
    c.submit_task(on("one", "q1"))
    c.submit_task(on("two", "q2"))
    c.submit_task(task("t"))
    assert c.get_task("t")["node"] == "n2"
    terms = candidates(ha, "t")
    assert terms["n1"]["queue_s"] == pytest.approx(1.0 / 1)  # the backlog over its one slot
    assert terms["n2"]["queue_s"] == pytest.approx(0.0)


def test_a_deadline_excludes_a_slow_node(ha: MemoryHarness) -> None:
    ha.node("n-dev", tier="device", labels={"name": "dev"})
    edge = ha.node("n-edge", tier="edge", labels={"name": "edge"})
    telemetry(edge, cpu_pct=95.0)  # a busy edge: the device is the cheaper node
    ha.pump_until(lambda: ha.controller.registry.nodes["n-edge"].telemetry.get("cpu_pct") == 95.0)
    c = ha.controller
    c.submit_task(task("loose", deadline_s=60.0))
    c.submit_task(task("tight", deadline_s=3.0))
    # The device core is 4 x slower (tier prior): 4 s of predicted run, 9 s with the
    # prediction-error margin; the loose deadline fits both (cheapest wins), the tight
    # one only the edge.
    assert c.get_task("loose")["node"] == "n-dev"
    assert c.get_task("tight")["node"] == "n-edge"
    terms = candidates(ha, "tight")
    assert terms["n-dev"]["margin_s"] < 0 < terms["n-edge"]["margin_s"]
    # explain: the predicted finish broken into its parts, and the margin
    for values in terms.values():
        assert set(values) == set(PREDICTION_TERMS)
        parts = ("dispatch_s", "transfer_s", "queue_s", "exec_s", "return_s")
        assert sum(values[p] for p in parts) == pytest.approx(values["finish_s"])
    assert terms["n-dev"]["exec_s"] == pytest.approx(4.0 * terms["n-edge"]["exec_s"])


def test_the_specs_work_hint_is_the_prior_of_a_kind_never_run(ha: MemoryHarness) -> None:
    """``work_s`` (docs/task-spec.md) is accepted by the API and is the kind's work until
    runs are measured: the predicted execution on the edge is the hint, not the default."""
    ha.node("n-edge", tier="edge", labels={"name": "edge"})
    c = ha.controller
    c.submit_task(task("hinted", name="hinted-kind", work_s=2.5, deadline_s=60.0))
    assert c.get_task("hinted")["node"] == "n-edge"
    assert candidates(ha, "hinted")["n-edge"]["exec_s"] == pytest.approx(2.5)


def test_a_fresh_node_without_a_pong_gets_the_prior_level(ha: MemoryHarness) -> None:
    n1 = ha.node("n1")
    c = ha.controller
    assert c.registry.nodes["n1"].monitor.stats(ha.clock()).rtt_samples == 0
    c.submit_task(task("a", consistency=ADAPTIVE))
    place = n1.expect("place", lambda e: e.body.task_id == "a")
    assert place.body.level == Level.STRONG.value  # not eventual (unknown = emergency)
    assert c.get_task("a")["level"] == "strong"


def test_the_prior_link_is_configured(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path, placement={"mode": "adaptive"}, consistency={"prior_link": "degraded"}
    )
    h = MemoryHarness(tmp_path, cfg)
    try:
        n1 = h.node("n1")
        h.controller.submit_task(task("a", consistency=ADAPTIVE))
        assert n1.expect("place").body.level == Level.CAUSAL.value
    finally:
        h.close()
    with pytest.raises(ValidationError, match="prior_link"):
        make_config(tmp_path, consistency={"prior_link": "partitioned"})


def test_non_idempotent_work_is_never_hedged_to_eventual(ha: MemoryHarness) -> None:
    n1 = ha.node("n1")
    c = ha.controller
    c.submit_task(task("once", consistency=ADAPTIVE))
    c.submit_task(task("again", consistency=ADAPTIVE, idempotent=True))
    assert {c.get_task(t)["level"] for t in ("once", "again")} == {"strong"}
    n1.answer_pings = False  # the node falls silent: its link is partitioned
    for _ in range(12):
        ha.tick(1.0)
    assert c.registry.nodes["n1"].link_state.value in ("partitioned", "failed")
    assert c.get_task("again")["level"] == "eventual"  # a duplicate is harmless: hedged
    assert c.get_task("once")["level"] == "causal"
    to = [e["data"]["to"] for e in ha.events(task_id="once") if e["kind"] == "level_change"]
    assert to and "eventual" not in to


def test_re_executions_of_non_idempotent_work_are_counted(ha: MemoryHarness) -> None:
    n1 = ha.node("n1")
    c, runs = ha.controller, Runs(ha)
    name = "continuum_non_idempotent_reexecutions_total"
    for task_id, idempotent in (("once", False), ("again", True)):
        c.submit_task(task(task_id, idempotent=idempotent))
        first = runs.start(n1, task_id)
        runs.end(n1, task_id, first, 1.0, AttemptStatus.FAILED)
        runs.attempt(n1, task_id, 1)  # the agent retries it
        assert len(c.records[task_id].attempts) == 2
    assert sample(ha, name) == 1.0  # "again" is idempotent: no harm


def test_learned_state_survives_a_controller_restart(ha: MemoryHarness) -> None:
    n1 = ha.node("n1", labels={"name": "one"})
    c, runs = ha.controller, Runs(ha)
    ha.tick()  # a ping and its pong: a round trip learned
    ha.pump_until(lambda: "n1" in c.registry.learner.rtt_ms)
    c.submit_task(on("one", "t", name="job"))
    runs.run(n1, "t", 3.0)
    before = c.registry.learner.to_dict()
    assert before["speed"] and before["work"] and before["error"]

    after = ha.restart().registry.learner
    assert after.to_dict() == before
    assert ha.controller.scheduler.work_of(task("x", name="job")) == pytest.approx(
        after.work_of("job").value
    )


def test_learned_state_is_saved_at_most_every_learner_save_s(ha: MemoryHarness) -> None:
    """Persisting the learner with every batch cost a write of the whole state per batch;
    it is an estimate, so it is saved when a run taught something and the last save is
    ``LEARNER_SAVE_S`` old (the controller's tick saves what is left)."""
    n1 = ha.node("n1", labels={"name": "one"})
    c, runs = ha.controller, Runs(ha)
    c.submit_task(on("one", "a", name="job"))
    runs.run(n1, "a", 3.0)
    first = c.registry.learner.to_dict()
    assert c.store.learner() == first  # the first lesson is saved at once
    c.submit_task(on("one", "b", name="job"))
    runs.run(n1, "b", 3.0)  # 3 s later: learned, not saved yet
    assert c.registry.learner.to_dict() != first and c.store.learner() == first
    ha.tick(LEARNER_SAVE_S)
    assert c.store.learner() == c.registry.learner.to_dict()


def test_the_placement_carries_the_deadline_left_since_submission(ha: MemoryHarness) -> None:
    """``deadline_s`` counts from submission: the agent is sent what is left of it, so
    its queue orders by the deadline the user set, not by when the task reached it."""
    c = ha.controller
    c.submit_task(task("waited", deadline_s=30.0))
    c.submit_task(task("free"))
    c.tasks.meta["waited"].submitted_ms -= 12_000  # queued 12 s before a node came
    n1 = ha.node("n1")
    waited = n1.expect("place", lambda e: e.body.task_id == "waited").body
    assert 30.0 - 12.0 - 5.0 < waited.deadline_left_s <= 30.0 - 12.0
    free = n1.expect("place", lambda e: e.body.task_id == "free").body
    assert free.deadline_left_s is None
