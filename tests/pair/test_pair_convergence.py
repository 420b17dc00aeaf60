"""Each agent's copy of a record equals the controller's as soon as the messages in flight
are handled, not at its next anti-entropy digest (``cloud/fanout.py``): the testbed
measured agents that were never cut converging only at their next periodic digest after
a heal (12 s there, ``antientropy_s`` 30 s by default), because their copies differed in
two ways the controller never sent: the agent's own restamp of each ``place`` against the
controller's placement, and, on the node a task left, the new holder's attempt. Here a
real controller and real agents on the in-memory bus; every check also asserts that no
digest was sent meanwhile, so anti-entropy cannot be what made the copies equal."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import sh, spec
from agent_pair import WAIT_S, AgentPair
from memory_bus import MemoryHarness

from shared.crdt import content_hash


def _digests(*pairs: AgentPair) -> int:
    return sum(len(p.sent("up", "digest")) for p in pairs)


def _same(pair: AgentPair, task_id: str) -> bool:
    """The agent holds the task and its copy equals the controller's."""
    mine = pair.agent.replica.get(task_id)
    theirs = pair.h.controller.records.get(task_id)
    return mine is not None and theirs is not None and content_hash(mine) == content_hash(theirs)


def _run_until(pairs: list[AgentPair], pred: Callable[[], Any], what: str) -> None:
    """Step every agent (and the controller) until ``pred`` holds."""
    deadline = time.monotonic() + WAIT_S
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if not any([p.step() for p in pairs]):
            time.sleep(0.01)


@pytest.fixture
def two(h: MemoryHarness, tmp_path: Path) -> Iterator[tuple[AgentPair, AgentPair]]:
    """``edge-1`` runs one task at a time (so a second one waits in its queue), ``edge-2``."""
    one = AgentPair(h, tmp_path, "edge-1", executor={"max_concurrent": 1})
    two = AgentPair(h, tmp_path, "edge-2")
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def test_a_placed_task_runs_and_the_copies_are_equal_without_a_digest(pair: AgentPair) -> None:
    pair.connect()
    digests = _digests(pair)
    pair.submit(spec("t-eq", sh("echo '{\"v\": 1}'")))
    pair.run_until(lambda: pair.upstream("t-eq") == "succeeded", "success at the controller")
    pair.run_until(lambda: _same(pair, "t-eq"), "the agent's copy equal to the controller's")
    assert _digests(pair) == digests
    # the agent kept no placement of its own: the controller's is the one it holds
    placement = pair.agent.replica.get("t-eq").placement
    assert placement is not None and placement.hlc.endswith(".controller")


def test_the_node_a_task_left_holds_the_new_holders_result_without_a_digest(
    h: MemoryHarness, two: tuple[AgentPair, AgentPair], gate: Path
) -> None:
    one, other = two
    one.connect()
    one.submit(spec("t-hold", sh(f"while [ ! -e {gate} ]; do sleep 0.05; done")))
    one.run_until(lambda: one.task_status("t-hold") == "running", "t-hold running on edge-1")
    moving = spec("t-move", sh("echo '{\"v\": 2}'"))
    moving["consistency"] = {"level": "eventual"}
    one.submit(moving)  # queued behind t-hold: edge-1 runs one at a time
    other.connect()
    digests = _digests(one, other)

    h.controller.set_draining("edge-1", True)  # eventual work leaves at once
    one.advance(0.5)
    _run_until([one, other], lambda: one.upstream("t-move") == "succeeded", "t-move's success")
    assert h.controller.get_task("t-move")["node"] == "edge-2"
    _run_until(
        [one, other],
        lambda: _same(one, "t-move") and _same(other, "t-move"),
        "both copies of t-move equal to the controller's",
    )
    assert _digests(one, other) == digests
    gate.touch()
