"""Task logs in the record and at the API: an attempt's output tail is written once, with
its end, by the node that ran it (``shared.crdt.AttemptLog``); the merge authorisation
keeps everyone else out; the wire form is bounded; ``cloud/api_logs.py`` numbers the
attempts and says why a tail is missing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloud_harness import wall_ms
from hypothesis import given
from hypothesis import strategies as st

from cloud.api_http import NotFound
from cloud.api_logs import task_logs
from shared.authz import Reason, authorize_delta
from shared.clocks import Timestamp
from shared.crdt import (
    MAX_LOG_TAIL,
    AttemptLog,
    AttemptStatus,
    TaskRecord,
    log_tail,
    merge,
    new_record,
    place,
    set_status,
    start_attempt,
)
from shared.crdt._canonical import canonical_json
from shared.errors import ValidationError

CONTROLLER, N, OTHER = "controller", "edge-1", "edge-2"
LOG = AttemptLog("out\n", "err\n", 4, 4)


def _t(n: int, node: str = CONTROLLER) -> Timestamp:
    return Timestamp(1_000 + n, 0, node)


def _running(on: str = N) -> tuple[TaskRecord, tuple[str, int]]:
    """A controller's record placed on ``on`` whose attempt there has started."""
    rec = new_record("t-1", {"id": "t-1", "command": ["true"]}, writer=CONTROLLER, hlc=_t(0))
    rec = merge(
        rec,
        place(rec, epoch=1, node=on, level="causal", lease_s=None, writer=CONTROLLER, hlc=_t(1)),
    )
    dot, started = start_attempt(rec, node=on, epoch=1, writer=on, hlc=_t(2, on))
    return merge(rec, started), dot


def _authorize(node: str, rec: TaskRecord, delta: TaskRecord) -> Any:
    return authorize_delta(node, rec, delta, origin=None, originated=0)


# ------------------------------------------------------------ who may write a tail


def test_the_attempts_node_writes_its_tail_with_its_end() -> None:
    rec, dot = _running()
    ended = set_status(rec, dot, AttemptStatus.FAILED, writer=N, hlc=_t(3, N), log=LOG)
    verdict = _authorize(N, rec, ended)
    assert verdict.refusals == () and verdict.accepted is not None
    assert merge(rec, verdict.accepted).attempts[dot].log == LOG


def test_another_node_cannot_write_a_tail_to_someone_elses_attempt() -> None:
    rec, dot = _running()
    forged = AttemptLog("", "rm -rf / went fine\n", 19, 19)
    for status in (AttemptStatus.FAILED, AttemptStatus.SUCCEEDED):
        delta = set_status(rec, dot, status, writer=OTHER, hlc=_t(3, OTHER), log=forged)
        verdict = _authorize(OTHER, rec, delta)
        assert {r.reason for r in verdict.refusals} == {Reason.FOREIGN_ATTEMPT}
        assert verdict.accepted is None or not verdict.accepted.attempts


def test_a_tail_once_written_is_not_rewritten() -> None:
    rec, dot = _running()
    rec = merge(rec, set_status(rec, dot, AttemptStatus.FAILED, writer=N, hlc=_t(3, N), log=LOG))
    again = set_status(
        rec, dot, AttemptStatus.FAILED, writer=N, hlc=_t(4, N), log=LOG._replace(stderr="other")
    )
    verdict = _authorize(N, rec, again)
    assert {r.reason for r in verdict.refusals} == {Reason.REWRITE}
    assert verdict.accepted is None or not verdict.accepted.attempts


# ------------------------------------------------------------ wire form and bound


def test_the_tail_travels_in_the_records_wire_form() -> None:
    rec, dot = _running()
    rec = merge(rec, set_status(rec, dot, AttemptStatus.FAILED, writer=N, hlc=_t(3, N), log=LOG))
    wire = json.loads(json.dumps(rec.to_dict()))
    assert wire["attempts"]["edge-1:1"]["log"] == {
        "stdout": "out\n",
        "stderr": "err\n",
        "stdout_bytes": 4,
        "stderr_bytes": 4,
    }
    assert TaskRecord.from_dict(wire) == rec
    # A stream that wrote nothing costs nothing on the wire.
    quiet = set_status(
        rec, dot, AttemptStatus.FAILED, writer=N, hlc=_t(3, N), log=AttemptLog("x", "", 1, 0)
    )
    assert quiet.to_dict()["attempts"]["edge-1:1"]["log"] == {"stdout": "x", "stdout_bytes": 1}


def test_an_oversized_or_malformed_tail_from_the_network_is_refused() -> None:
    rec, dot = _running()
    wire = set_status(rec, dot, AttemptStatus.FAILED, writer=N, hlc=_t(3, N), log=LOG).to_dict()
    for bad in (
        {"stdout": "x" * (MAX_LOG_TAIL + 1)},
        {"stderr": "\x00" * (MAX_LOG_TAIL // 6 + 1)},  # escaped: 6 characters each
        {"stdout_bytes": -1},
        {"stdout": 3},
        {"secret": "x"},
        "text",
    ):
        wire["attempts"]["edge-1:1"]["log"] = bad
        with pytest.raises(ValidationError) as caught:
            TaskRecord.from_dict(wire)
        assert all(p.path.startswith("attempts.edge-1:1.log") for p in caught.value.problems)
    # a writer's own log is cut to what the attempt may carry, not refused
    mine = (
        set_status(
            rec, dot, AttemptStatus.FAILED, writer=N, hlc=_t(3, N), log=AttemptLog("x" * 20_000)
        )
        .attempts[dot]
        .log
    )
    assert mine is not None and mine.stdout == "x" * MAX_LOG_TAIL


@given(st.text(max_size=400), st.integers(0, 200))
def test_log_tail_keeps_the_longest_end_that_fits(text: str, limit: int) -> None:
    tail = log_tail(text, limit)
    assert text.endswith(tail)
    assert len(canonical_json(tail)) - 2 <= limit
    if tail != text:  # one more character would not fit
        assert len(canonical_json(text[-len(tail) - 1 :])) - 2 > limit


# ------------------------------------------------------------ the API's answer


class _Service:
    def __init__(self, rec: TaskRecord) -> None:
        self.rec = rec

    def get_task(self, task_id: str) -> dict[str, Any]:
        if task_id != self.rec.task_id:
            raise NotFound("task", task_id)
        return {"record": self.rec.to_dict()}


def test_attempts_are_numbered_in_start_order_and_missing_tails_say_why() -> None:
    rec, first = _running()
    rec = merge(rec, set_status(rec, first, AttemptStatus.FAILED, writer=N, hlc=_t(3, N), log=LOG))
    # A second attempt, on a node whose id sorts first: numbering follows start, not dot.
    rec = merge(
        rec,
        place(
            rec, epoch=2, node="a-node", level="causal", lease_s=None, writer=CONTROLLER, hlc=_t(4)
        ),
    )
    second, started = start_attempt(
        rec, node="a-node", epoch=2, writer="a-node", hlc=_t(5, "a-node")
    )
    rec = merge(rec, started)
    service = _Service(rec)

    latest = task_logs(service, "t-1", attempt=None, stream="stdout")
    assert (latest["attempt"], latest["attempts"], latest["node"]) == (2, 2, "a-node")
    assert not latest["available"] and not latest["ended"] and latest["text"] == ""
    assert latest["message"] == "running on a-node; its log is available when it ends"
    one = task_logs(service, "t-1", attempt=1, stream="stderr")
    assert (one["text"], one["status"], one["truncated"], one["message"]) == (
        "err\n",
        "failed",
        False,
        None,
    )
    lost = merge(rec, set_status(rec, second, AttemptStatus.LOST, writer=CONTROLLER, hlc=_t(9)))
    assert (
        "never reported its end"
        in task_logs(_Service(lost), "t-1", attempt=2, stream="stdout")["message"]
    )
    with pytest.raises(NotFound):
        task_logs(service, "t-1", attempt=3, stream="stdout")
    with pytest.raises(NotFound):
        task_logs(service, "t-2", attempt=None, stream="stdout")
    unstarted = new_record("t-1", {"id": "t-1", "command": ["true"]}, writer=CONTROLLER, hlc=_t(0))
    with pytest.raises(NotFound) as caught:
        task_logs(_Service(unstarted), "t-1", attempt=None, stream="stdout")
    assert caught.value.what == "attempt"


def test_a_cut_tail_says_how_much_there_was() -> None:
    rec, dot = _running()
    cut = AttemptLog("END\n", "", 100_004, 0)
    rec = merge(rec, set_status(rec, dot, AttemptStatus.SUCCEEDED, writer=N, hlc=_t(3, N), log=cut))
    answer = task_logs(_Service(rec), "t-1", attempt=None, stream="stdout")
    assert (answer["bytes"], answer["kept_bytes"], answer["truncated"]) == (100_004, 4, True)


# ------------------------------------------------------------ through the controller


def test_the_controller_keeps_only_the_running_nodes_tail(h: Any) -> None:
    """A node forges a tail (and an end) for another node's attempt: the controller
    refuses it (a ``delta_refused`` event names the forger) and still says the attempt is
    running; the real node's tail, sent with its end, is what the logs route serves."""
    runner = h.node(N, labels={"site": "a"})
    forger = h.node(OTHER, labels={"site": "b"})
    h.controller.submit_task(
        {"id": "t-1", "command": ["true"], "placement": {"labels": {"site": "a"}}}
    )
    h.await_msg(runner, "place", lambda e: e.body.task_id == "t-1")
    dot = runner.start("t-1", 1)
    h.pump_until(lambda: h.controller.get_task("t-1")["status"] == "running")

    rec = h.controller.tasks.records["t-1"]
    forged = set_status(
        rec,
        dot,
        AttemptStatus.FAILED,
        writer=OTHER,
        hlc=forger.clock.now(wall_ms()),
        log=AttemptLog("", "forged\n", 7, 7),
    )
    forger.send_deltas([forged])
    h.pump_until(
        lambda: any(
            (e["node_id"], e["reason"]) == (OTHER, "foreign_attempt")
            for e in h.events(kind="delta_refused")
        )
    )
    answer = task_logs(h.controller, "t-1", attempt=None, stream="stderr")
    assert (answer["status"], answer["available"], answer["text"]) == ("started", False, "")

    ended = set_status(
        runner.records["t-1"],
        dot,
        AttemptStatus.FAILED,
        writer=N,
        hlc=runner.clock.now(wall_ms()),
        exit_code=1,
        log=LOG,
    )
    runner.send_deltas([runner._apply(ended)])
    h.pump_until(lambda: h.controller.get_task("t-1")["attempts"][0]["log_bytes"] is not None)
    answer = task_logs(h.controller, "t-1", attempt=None, stream="stderr")
    assert (answer["status"], answer["text"], answer["node"]) == ("failed", "err\n", N)
