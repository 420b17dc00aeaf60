"""``shared.authz.readers``/``lacking``, the controller's fan-out (``cloud/fanout.py``).

The law, over arbitrary histories of controller and node writes: after a change, the
readers that lack it are exactly the record's readers other than a node that wrote every
new event itself; a change that adds no event is sent to nobody; ``may_read`` is
membership in ``readers``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.authz import lacking, may_read, new_writers, readers
from shared.clocks import Timestamp
from shared.crdt import AttemptStatus, TaskRecord, merge, new_record, place, start_attempt
from shared.crdt import set_status as set_attempt_status

NODES = ("n1", "n2", "n3")
CONTROLLER = "controller"

#: One step of a history: ("place", node) by the controller, ("start", node) by that node,
#: ("finish", node) of that node's latest attempt, or ("lost", node) by the controller.
_steps = st.lists(
    st.tuples(st.sampled_from(["place", "start", "finish", "lost"]), st.sampled_from(NODES)),
    min_size=1,
    max_size=12,
)


def _delta(rec: TaskRecord, step: tuple[str, str], t: int) -> tuple[TaskRecord | None, str]:
    """The delta of ``step`` on ``rec`` and its writer (``None``: not applicable now)."""
    kind, node = step
    epoch = rec.placement.epoch if rec.placement is not None else 0
    if kind == "place":
        stamp = Timestamp(t, 0, CONTROLLER)
        return place(
            rec,
            epoch=epoch + 1,
            node=node,
            level="eventual",
            lease_s=None,
            writer=CONTROLLER,
            hlc=stamp,
        ), CONTROLLER
    if kind == "start":
        if rec.placement is None or rec.placement.node != node:
            return None, node
        _, delta = start_attempt(
            rec, node=node, epoch=epoch, writer=node, hlc=Timestamp(t, 0, node)
        )
        return delta, node
    mine = sorted(d for d, a in rec.attempts.items() if a.node == node and not a.status.terminal)
    if not mine:
        return None, node
    status, writer = (
        (AttemptStatus.SUCCEEDED, node) if kind == "finish" else (AttemptStatus.LOST, CONTROLLER)
    )
    delta = set_attempt_status(rec, mine[-1], status, writer=writer, hlc=Timestamp(t, 0, writer))
    return delta, writer


@settings(max_examples=200, deadline=None)
@given(steps=_steps, origin=st.sampled_from([None, *NODES]))
def test_the_readers_lacking_a_change_are_all_but_its_only_writer(
    steps: list[tuple[str, str]], origin: str | None
) -> None:
    rec = new_record(
        "t", {"id": "t", "command": ["true"]}, writer=CONTROLLER, hlc=Timestamp(1, 0, CONTROLLER)
    )
    placed: dict[int, str] = {}
    for t, step in enumerate(steps, start=2):
        delta, writer = _delta(rec, step, t)
        if delta is None:
            continue
        after = merge(rec, delta)
        if after.placement is not None:
            placed.setdefault(after.placement.epoch, after.placement.node)
        assert new_writers(rec, after) == {writer}
        everyone = readers(after, origin, placed)
        assert lacking(rec, after, origin, placed) == everyone - {writer}
        assert lacking(after, after, origin, placed) == frozenset()  # nothing new: no one
        for node in NODES:
            assert may_read(node, after, origin, placed) == (node in everyone)
        rec = after
