"""What the agent does with what the controller tells it, on the in-memory pair
(``agent_pair``): cancels (a user's, and a re-placement's revocation), repeated and stale
placements, an invalid spec, strong work and its lease, retries while partitioned, a real
re-placement during a cut, and malformed messages. Moved here from the broker-backed
``tests/agent/test_agent_e2e.py``, where the broker was not the subject. Placements the
real controller would not send in this state (a repeat, an older epoch, an invalid spec)
are sent as it sends them (:meth:`AgentPair.down`); what "upstream" means there is what
the agent sent (:meth:`AgentPair.sent_record`), as a scripted controller would have
merged it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import sh, spec
from agent_pair import AgentPair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.crdt import AttemptStatus
from shared.protocol import Cancel, topic


def test_cancel_stops_a_running_task(pair: AgentPair) -> None:
    pair.connect()
    pair.submit(spec("t-cancel", ["sleep", "30"]))
    pair.run_until(lambda: pair.task_status("t-cancel") == "running", "the task to start")
    pair.h.controller.cancel_task("t-cancel", "operator")

    def cancelled_upstream() -> bool:
        return any(a["status"] == "cancelled" for a in pair.task("t-cancel")["attempts"])

    pair.run_until(cancelled_upstream, "the stopped attempt upstream")
    assert pair.upstream("t-cancel") == "cancelled"
    assert pair.status()["running"] == []


def test_a_cancel_for_a_replaced_epoch_stops_the_attempt_but_not_the_task(
    pair: AgentPair,
) -> None:
    """The controller re-placed the task elsewhere and revokes epoch 1 here: the attempt
    stops, yet the task stays live for its new placement (the testbed caught tasks and
    their workflow dependents cancelled by a re-placement)."""
    pair.connect()
    pair.submit(spec("t-moved", ["sleep", "30"]))
    pair.run_until(lambda: pair.task_status("t-moved") == "running", "the task to start")
    pair.down("cancel", Cancel(task_id="t-moved", epoch=1, reason="replaced"))

    def revoked_upstream() -> bool:
        rec = pair.sent_record("t-moved")
        return rec is not None and any(
            a.status == AttemptStatus.CANCELLED for a in rec.attempts.values()
        )

    pair.run_until(revoked_upstream, "the revoked attempt upstream")
    rec = pair.sent_record("t-moved")
    assert rec is not None and not rec.cancel_requested
    assert [r for r in pair.status()["running"] if r["epoch"] == 1] == []
    pair.settle()
    assert pair.upstream("t-moved") != "cancelled"


def test_a_repeated_placement_does_not_run_the_task_again(pair: AgentPair) -> None:
    """The controller re-sends a placement after a partition when it has not heard of
    the attempt; the agent already ran that epoch and must not run it twice."""
    pair.connect()
    task = spec("t-once", ["true"])
    pair.submit(task)
    pair.run_until(lambda: pair.upstream("t-once") == "succeeded", "the first run")
    pair.place(task)
    pair.place(task)
    pair.settle()
    assert len(pair.events("duplicate_placement")) == 2  # both handled, neither run
    assert len(pair.task("t-once")["attempts"]) == 1
    assert pair.task_status("t-once") == "succeeded"


def test_a_placement_with_an_older_epoch_is_ignored(pair: AgentPair) -> None:
    pair.connect()
    pair.place(spec("t-epoch", ["sleep", "30"]), epoch=5)
    pair.run_until(lambda: pair.task_status("t-epoch") == "running", "the task to start")
    pair.place(spec("t-epoch", ["sleep", "30"]), epoch=4)
    (stale,) = pair.run_until(lambda: pair.events("stale_placement"), "the stale placement")
    assert (stale["epoch"], stale["current"]) == (4, 5)
    assert [r["epoch"] for r in pair.status()["running"]] == [5]


def test_invalid_spec_becomes_a_failed_attempt_upstream(pair: AgentPair) -> None:
    pair.connect()
    pair.place({"id": "t-bad", "command": "rm -rf /"})  # a shell string, not an argv list

    def failed_upstream() -> list[Any]:
        rec = pair.sent_record("t-bad")
        return [] if rec is None else [a for a in rec.attempts.values() if a.reason]

    (attempt,) = pair.run_until(failed_upstream, "the invalid_spec attempt")
    assert attempt.status == AttemptStatus.FAILED
    assert attempt.reason.startswith("invalid_spec")


def test_strong_task_does_not_start_without_a_lease(pair: AgentPair) -> None:
    """The controller places the task at strong and never hears the lease requests."""
    pair.filter = lambda topic_, payload: b'"lease_request"' not in payload
    pair.connect()
    pair.submit(spec("t-nolease", ["true"], consistency="strong"))
    assert pair.task("t-nolease")["level"] == "strong"
    pair.run_until(lambda: pair.sent("up", "lease_request"), "a lease request")
    pair.skip(1.0)
    pair.skip(1.0)
    assert len(pair.sent("up", "lease_request")) >= 2  # asked again, never answered
    assert pair.task_status("t-nolease") == "pending"
    assert pair.status()["running"] == []


def test_strong_task_starts_on_the_controllers_grant(pair: AgentPair) -> None:
    """The real lease book answers the request; the attempt starts under the granted
    deadline and its success reaches the controller."""
    pair.connect()
    pair.submit(spec("t-granted", sh("echo '{\"strong\": 1}'"), consistency="strong"))
    pair.run_until(lambda: pair.upstream("t-granted") == "succeeded", "success under a lease")
    (granted,) = pair.events("lease_granted")
    assert granted["deadline"] > granted["mono"]
    assert pair.task("t-granted")["level"] == "strong"


def test_a_failed_attempt_is_retried_with_backoff_while_partitioned(
    pair: AgentPair, shared_dir: Path
) -> None:
    pair.connect()
    marker = shared_dir / "failed-once"
    script = f"if [ -e {marker} ]; then echo '{{\"try\": 2}}'; else touch {marker}; exit 3; fi"
    task = spec("t-retry", sh(script), retry={"max_attempts": 3, "backoff_s": 0.2})
    pair.link.partition(up=True, down=False)  # the agent retries on its own: nobody re-places
    pair.h.controller.submit_task(task)
    pair.run_until(lambda: pair.task_status("t-retry") == "succeeded", "the retry to succeed")
    (scheduled,) = pair.events("retry_scheduled")
    assert scheduled["failures"] == 1 and scheduled["delay_s"] > 0
    assert pair.upstream("t-retry") != "succeeded"
    pair.link.heal()
    pair.skip_until(lambda: pair.upstream("t-retry") == "succeeded", "sync")
    outcomes = sorted((a["status"], a["exit_code"]) for a in pair.task("t-retry")["attempts"])
    assert outcomes == [("failed", 3), ("succeeded", 0)]


# ---------------------------------------------------------------- malformed messages

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_types = st.sampled_from(
    [
        "place",
        "cancel",
        "lease_grant",
        "level_change",
        "ack",
        "digest",
        "deltas",
        "ping",
        "hello",
        "heartbeat",
        "bogus",
    ]
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "task_id": st.sampled_from(["t-x", "", "../etc", "a" * 200]) | st.integers(),
        "epoch": st.integers(-5, 2**70) | st.text(max_size=3),
        "spec": _json
        | st.fixed_dictionaries(
            # never a runnable argv: the fuzzer must not execute random programs
            {
                "id": st.just("t-x"),
                "command": _json.filter(lambda v: not isinstance(v, list))
                | st.just(["/nonexistent/fuzz-binary"]),
            }
        ),
        "level": st.sampled_from(["strong", "causal", "eventual", "nope"]) | _json,
        "granted": _json,
        "duration_s": st.floats(allow_nan=True) | _json,
        "up_to_seq": st.integers(-(2**64), 2**64) | _json,
        "entries": _json,
        "records": _json,
    },
)
_envelopes = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, 0, "1"]),
        "type": _types,
        "id": st.text(min_size=0, max_size=40),
        "from": st.sampled_from(["cloud", "controller", "edge-1", "", "x/y"]),
        "hlc": st.sampled_from(["1.0.cloud", "zz", "ffffffffffff.0.cloud"]) | st.text(max_size=10),
        "body": _bodies | _json,
    },
    optional={"seq": _json},
)
_payloads = (
    st.binary(max_size=300)
    | _json.map(lambda v: json.dumps(v).encode())
    | _envelopes.map(lambda v: json.dumps(v).encode())
    | st.just(b"{" * 10_000)
    | st.just(b" " * (300 * 1024))  # over the size limit
)


@pytest.fixture
def fuzzed(pair: AgentPair) -> Iterator[AgentPair]:
    pair.connect()
    yield pair
    # After the whole stream: no bug caught (``close`` checks), rejections counted, and
    # real work still runs.
    counters = pair.status()["counters"]
    assert any(k.startswith("rejected_") for k in counters), counters
    pair.submit(spec("after-fuzz", sh("echo '{\"fine\": 1}'")))
    pair.run_until(lambda: pair.upstream("after-fuzz") == "succeeded", "work after the fuzz")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=st.lists(_payloads, min_size=1, max_size=12))
def test_malformed_down_messages_never_crash_the_agent(
    fuzzed: AgentPair, stream: list[bytes]
) -> None:
    for payload in stream:
        fuzzed.link.deliver(topic("edge-1", "down"), payload)
    fuzzed.step()
    assert fuzzed.agent.core.counters["internal_errors"] == 0
    code, _ = fuzzed.api("GET", "/v1/status")
    assert code == 200


def test_work_re_placed_during_a_cut_stops_here_when_the_link_returns(
    pair: AgentPair, gate: Path
) -> None:
    """The real re-placement: the agent is cut off (its last will reaches the
    controller) while a causal task runs; once the task's ``max_disconnect_s`` is out,
    the controller places it on n2 under epoch 2. When the link returns, the agent
    learns of it and stops its superseded attempt; the task lives on at n2."""
    pair.connect()
    task = spec("t-away", sh(f"while [ ! -e {gate} ]; do sleep 0.05; done"), max_disconnect_s=5)
    pair.submit(task)
    pair.run_until(lambda: pair.task_status("t-away") == "running", "the task to start")
    n2 = pair.h.node("n2")
    pair.link.cut(will=True)
    pair.step()
    for _ in range(8):  # the controller's clock only: a cut agent hears nothing anyway
        pair.h.tick(1.0)
        pair.h.keep_alive("n2")
    placed = n2.expect("place", lambda e: e.body.task_id == "t-away")
    assert placed.body.epoch == 2
    assert pair.task_status("t-away") == "running"  # causal: it ran on through the cut
    pair.link.connect()
    pair.run_until(lambda: pair.status()["running"] == [], "the superseded attempt to stop")
    (finished,) = pair.events("finished")
    assert finished["reason"] == "superseded"
    rec = pair.agent.replica.get("t-away")
    assert rec is not None and rec.placement is not None
    assert (rec.placement.node, rec.placement.epoch) == ("n2", 2)
    assert not rec.cancel_requested
    pair.run_until(
        lambda: any(
            a["node"] == "edge-1" and a["reason"] == "superseded"
            for a in pair.task("t-away")["attempts"]
        ),
        "the stopped attempt upstream",
    )
    row = pair.task("t-away")
    assert (row["node"], row["epoch"]) == ("n2", 2) and row["status"] != "cancelled"
