"""Authorisation at the merge (shared.authz): the seven merge attacks of a stolen
device refused one by one, honest agent traffic accepted whole, and the law, for
arbitrary deltas: after authorisation and merge, nothing outside the sender's rights
has changed."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.authz import (
    MergePolicy,
    Reason,
    RefusalEvents,
    Verdict,
    accept_seq,
    authorize_delta,
    local_task_id,
    may_read,
    origin_of,
    pinned_to_origin,
)
from shared.clocks import Timestamp, VersionVector
from shared.crdt import (
    Attempt,
    AttemptStatus,
    Dot,
    Placement,
    TaskRecord,
    merge,
    new_record,
    place,
    request_cancel,
    set_status,
    start_attempt,
)
from shared.crdt._task_record import compact

CONTROLLER = "controller"
N = "edge-1"
OTHER = "edge-2"
LOCAL = "edge-1-0123456789ab"


def _t(n: int, node: str = CONTROLLER) -> Timestamp:
    return Timestamp(1_000 + n, 0, node)


def _spec(task_id: str, command: str = "true") -> dict[str, Any]:
    return {"id": task_id, "command": [command]}


def _placed(task_id: str = "t-1", on: str = OTHER, epoch: int = 1) -> TaskRecord:
    """A controller's record: created through the API and placed on ``on``."""
    rec = new_record(task_id, _spec(task_id), writer=CONTROLLER, hlc=_t(0))
    for e in range(1, epoch + 1):
        rec = merge(
            rec,
            place(
                rec, epoch=e, node=on, level="causal", lease_s=None, writer=CONTROLLER, hlc=_t(e)
            ),
        )
    return rec


def _authorize(
    current: TaskRecord | None,
    delta: TaskRecord,
    *,
    origin: str | None = None,
    originated: int = 0,
    node: str = N,
) -> Verdict:
    return authorize_delta(node, current, delta, origin=origin, originated=originated)


def _reasons(verdict: Verdict) -> set[Reason]:
    return {r.reason for r in verdict.refusals}


def _merged(current: TaskRecord | None, verdict: Verdict) -> TaskRecord | None:
    if verdict.accepted is None:
        return current
    return verdict.accepted if current is None else merge(current, verdict.accepted)


# ------------------------------------------------------------ the seven attacks


def test_a_record_placed_on_another_node_is_not_created() -> None:
    forged = new_record("evil", _spec("evil", "sh"), writer=N, hlc=_t(1, N))
    forged = merge(
        forged,
        place(forged, epoch=1, node=OTHER, level="causal", lease_s=None, writer=N, hlc=_t(2, N)),
    )
    verdict = _authorize(None, forged)
    assert verdict.accepted is None and _reasons(verdict) == {Reason.NAMESPACE}
    # Even in its own namespace, the placement on another node is refused.
    own = forged._replace(task_id=LOCAL, spec=_spec(LOCAL, "sh"))
    verdict = _authorize(None, own)
    assert _reasons(verdict) == {Reason.PLACEMENT}
    after = _merged(None, verdict)
    assert after is not None and after.placement is None and not after.context


def test_the_cancel_flag_of_another_nodes_task_is_refused() -> None:
    rec = _placed()
    verdict = _authorize(rec, request_cancel(rec, writer=N, hlc=_t(5, N)))
    assert _reasons(verdict) == {Reason.CANCEL}
    assert _merged(rec, verdict) == rec


def test_a_forged_success_on_another_nodes_task_is_refused() -> None:
    rec = _placed()
    dot, started = start_attempt(rec, node=OTHER, epoch=1, writer=OTHER, hlc=_t(3, OTHER))
    rec = merge(rec, started)
    # Under its own dot, claiming the other node ran it; then under the other's dot.
    _, mine = start_attempt(rec, node=OTHER, epoch=1, writer=N, hlc=_t(4, N))
    forged = set_status(
        rec, dot, AttemptStatus.SUCCEEDED, writer=N, hlc=_t(5, N), result={"x": "forged"}
    )
    for delta in (mine, forged):
        verdict = _authorize(rec, delta)
        assert _reasons(verdict) == {Reason.FOREIGN_ATTEMPT}
        assert _merged(rec, verdict) == rec
    # Run by itself, on a task not placed on it.
    _, own = start_attempt(rec, node=N, epoch=1, writer=N, hlc=_t(6, N))
    assert _reasons(_authorize(rec, own)) == {Reason.NOT_PLACED}


def test_a_higher_epoch_placement_to_itself_is_refused() -> None:
    rec = _placed()
    grab = place(rec, epoch=7, node=N, level="causal", lease_s=None, writer=N, hlc=_t(9, N))
    verdict = _authorize(rec, grab)
    assert _reasons(verdict) == {Reason.PLACEMENT}
    assert _merged(rec, verdict) == rec


def test_digests_are_answered_only_for_the_nodes_own_tasks() -> None:
    rec = _placed()
    assert not may_read(N, rec, None)
    assert may_read(OTHER, rec, None)
    assert may_read(N, rec, N)  # originated there (then re-placed by its submitter's wish)
    _, started = start_attempt(rec, node=N, epoch=1, writer=N, hlc=_t(3, N))
    assert may_read(N, merge(rec, started), None)  # it ran an attempt of it


def test_empty_records_in_bulk_are_refused_and_the_quota_holds() -> None:
    empty = TaskRecord(LOCAL)
    assert _reasons(_authorize(None, empty)) == {Reason.UNKNOWN_TASK}
    policy = MergePolicy(max_originated=3)
    accepted = 0
    for i in range(10):
        task_id = local_task_id(N, f"{i:012x}")
        delta = new_record(task_id, _spec(task_id), writer=N, hlc=_t(i, N))
        verdict = authorize_delta(N, None, delta, origin=None, originated=accepted, policy=policy)
        if verdict.accepted is not None:
            accepted += 1
        else:
            assert _reasons(verdict) == {Reason.QUOTA}
    assert accepted == 3


def test_an_outbox_seq_jump_is_clamped() -> None:
    policy = MergePolicy(max_seq_step=1_000)
    assert accept_seq(10, 2**62, policy)[0] == 1_010
    assert accept_seq(10, 2**62, policy)[1] is not None
    assert accept_seq(10, 900, policy) == (900, None)
    assert accept_seq(10, 3, policy) == (3, None)  # never moves the mark back: the caller's max


def test_foreign_events_in_the_context_are_refused_and_not_stored() -> None:
    rec = _placed(on=N)
    dot, started = start_attempt(rec, node=N, epoch=1, writer=N, hlc=_t(3, N))
    poisoned = started._replace(context=VersionVector({N: 1, OTHER: 100, CONTROLLER: 99}))
    verdict = _authorize(rec, poisoned)
    assert _reasons(verdict) == {Reason.CONTEXT}
    after = _merged(rec, verdict)
    assert after is not None and dot in after.attempts  # the attempt itself is its right
    assert after.context == rec.context  # no event claimed whose delta was refused


# ------------------------------------------------------------ honest traffic passes


def _agent_copy(rec: TaskRecord) -> TaskRecord:
    """What an agent holds after a ``place``: the controller's record plus its restamp."""
    assert rec.placement is not None
    p = rec.placement
    return merge(
        rec,
        place(
            rec, epoch=p.epoch, node=N, level=p.level, lease_s=p.lease_s, writer=N, hlc=_t(50, N)
        ),
    )


def test_a_placed_task_run_by_its_node_is_accepted_delta_by_delta_and_whole() -> None:
    controller = _placed(on=N)
    agent = _agent_copy(controller)
    restamp = TaskRecord(agent.task_id, None, agent.placement, context=VersionVector({N: 1}))
    deltas = [restamp]
    dot, d = start_attempt(agent, node=N, epoch=1, writer=N, hlc=_t(51, N))
    agent = merge(agent, d)
    deltas.append(d)
    d = set_status(
        agent, dot, AttemptStatus.SUCCEEDED, writer=N, hlc=_t(52, N), exit_code=0, result=[1]
    )
    agent = merge(agent, d)
    deltas.append(d)
    # Delta by delta (the outbox), then the whole record again (anti-entropy).
    rec = controller
    for delta in deltas:
        verdict = _authorize(rec, delta)
        assert verdict.refusals == ()
        rec = merge(rec, delta)
    assert rec == agent
    whole = _authorize(controller, agent)
    assert whole.refusals == () and _merged(controller, whole) == agent
    again = _authorize(agent, agent)  # a duplicate is harmless and refuses nothing
    assert again.refusals == () and _merged(agent, again) == agent


def test_a_report_after_the_controllers_inference_is_accepted() -> None:
    controller = _placed(on=N)
    dot, d = start_attempt(controller, node=N, epoch=1, writer=N, hlc=_t(51, N))
    controller = merge(controller, d)
    lost = set_status(controller, dot, AttemptStatus.LOST, writer=CONTROLLER, hlc=_t(60))
    controller = merge(controller, lost)
    controller = merge(
        controller,
        place(
            controller,
            epoch=2,
            node=OTHER,
            level="causal",
            lease_s=None,
            writer=CONTROLLER,
            hlc=_t(61),
        ),
    )
    report = set_status(
        merge(_placed(on=N), d), dot, AttemptStatus.FAILED, writer=N, hlc=_t(62, N), exit_code=1
    )
    verdict = _authorize(controller, report)
    assert verdict.refusals == ()
    after = _merged(controller, verdict)
    assert after is not None and after.attempts[dot].status is AttemptStatus.FAILED


def test_an_attempt_of_a_superseded_epoch_counts_for_the_node_placed_then() -> None:
    """An eventual task re-placed at once (hedging): the old node started its attempt of
    epoch 1 before the superseding record reached it."""
    rec = _placed(on=N, epoch=1)
    rec = merge(
        rec,
        place(
            rec, epoch=2, node=OTHER, level="eventual", lease_s=None, writer=CONTROLLER, hlc=_t(9)
        ),
    )
    _, late = start_attempt(rec, node=N, epoch=1, writer=N, hlc=_t(10, N))
    verdict = authorize_delta(N, rec, late, origin=None, originated=0, placed={1: N})
    assert verdict.refusals == () and _merged(rec, verdict) == merge(rec, late)
    assert _reasons(_authorize(rec, late)) == {Reason.NOT_PLACED}  # without the history
    forged = authorize_delta(OTHER, rec, late, origin=None, originated=0, placed={1: N})
    assert Reason.FOREIGN_ATTEMPT in _reasons(forged) and forged.accepted is None
    _, other = start_attempt(rec, node=OTHER, epoch=1, writer=OTHER, hlc=_t(11, OTHER))
    refused = authorize_delta(OTHER, rec, other, origin=None, originated=0, placed={1: N})
    assert _reasons(refused) == {Reason.NOT_PLACED}
    assert may_read(N, rec, None, {1: N}) and not may_read(N, rec, None)


def test_the_placement_in_force_speaks_for_its_epoch_over_the_history() -> None:
    """The history passed in may lag the record (or, forged, disagree with it): at the
    epoch in force the record's placement decides, at any other the history."""
    rec = _placed(on=N, epoch=2)
    _, now = start_attempt(rec, node=N, epoch=2, writer=N, hlc=_t(10, N))
    for placed in ({}, {2: OTHER}, {1: OTHER}):
        verdict = authorize_delta(N, rec, now, origin=None, originated=0, placed=placed)
        assert verdict.refusals == () and _merged(rec, verdict) == merge(rec, now)
    _, old = start_attempt(rec, node=N, epoch=1, writer=N, hlc=_t(11, N))
    assert _reasons(authorize_delta(N, rec, old, origin=None, originated=0, placed={1: OTHER})) == {
        Reason.NOT_PLACED
    }
    refused = authorize_delta(OTHER, rec, now, origin=None, originated=0, placed={2: OTHER})
    assert Reason.FOREIGN_ATTEMPT in _reasons(refused)


def test_an_honest_delta_keeps_its_own_events_and_a_mixed_one_only_those() -> None:
    rec = _placed(on=N)
    _, delta = start_attempt(rec, node=N, epoch=1, writer=N, hlc=_t(10, N))
    accepted = _authorize(rec, delta).accepted
    assert accepted is not None
    assert (accepted.context, accepted.dots) == (delta.context, delta.dots)
    # Foreign events the record holds already: no refusal, and only N's are kept.
    mixed = delta._replace(
        context=delta.context.merge(VersionVector({CONTROLLER: rec.context.get(CONTROLLER)}))
    )
    verdict = _authorize(rec, mixed)
    assert verdict.refusals == () and verdict.accepted is not None
    assert verdict.accepted.context == VersionVector({N: delta.context.get(N)})


def test_a_locally_submitted_task_is_adopted_with_its_whole_history() -> None:
    task_id = local_task_id(N, "00000000abcd")
    assert origin_of(task_id) == N
    created = new_record(task_id, _spec(task_id), writer=N, hlc=_t(1, N))
    rec = created
    pl = place(rec, epoch=0, node=N, level="causal", lease_s=None, writer=N, hlc=_t(2, N))
    rec = merge(rec, pl)
    dot, st_ = start_attempt(rec, node=N, epoch=0, writer=N, hlc=_t(3, N))
    rec = merge(rec, st_)
    done = set_status(rec, dot, AttemptStatus.SUCCEEDED, writer=N, hlc=_t(4, N))
    rec = merge(rec, done)
    # As the outbox sends it.
    controller: TaskRecord | None = None
    for i, delta in enumerate((created, pl, st_, done)):
        verdict = _authorize(controller, delta, origin=None if i == 0 else N)
        assert verdict.refusals == ()
        controller = _merged(controller, verdict)
    assert controller == rec
    # As one full record, and its cancel by the origin.
    assert _merged(None, _authorize(None, rec)) == rec
    cancel = request_cancel(rec, writer=N, hlc=_t(5, N))
    assert _authorize(rec, cancel, origin=N).refusals == ()
    assert _reasons(_authorize(rec, cancel, origin=None)) == {Reason.CANCEL}


def test_refusal_events_are_one_per_node_and_reason_per_window() -> None:
    events = RefusalEvents(window_ms=1_000)
    assert events.admit(N, "cancel", 1, 0) == 0
    assert events.admit(N, "cancel", 4, 10) is None  # held back
    assert events.admit(N, "spec", 1, 20) == 0  # another reason
    assert events.admit(OTHER, "cancel", 1, 30) == 0  # another node
    assert events.admit(N, "cancel", 2, 999) is None
    assert events.admit(N, "cancel", 1, 1_000) == 6  # due, with what was held back
    assert events.admit(N, "cancel", 1, 1_500) is None


def test_namespace_is_unambiguous() -> None:
    assert origin_of("edge-1-0123456789ab") == "edge-1"
    assert origin_of("edge-0123456789ab") == "edge"
    assert origin_of("edge-1-job") is None
    assert origin_of("edge-1:job-7") == "edge-1"
    assert origin_of("edge:1-job") == "edge"
    assert origin_of("edge-1:") is None and origin_of("-x:job") is None
    assert origin_of("edge-1-0123456789AB") is None
    assert origin_of("-0123456789ab") is None
    with pytest.raises(ValueError):
        local_task_id("bad/node", "0123456789ab")
    with pytest.raises(ValueError):
        local_task_id(N, "xyz")


def test_agent_originated_tasks_stay_unless_a_mode_was_chosen() -> None:
    assert pinned_to_origin(N, {"placement": {"mode": None}})
    assert not pinned_to_origin(N, {"placement": {"mode": "adaptive"}})
    assert not pinned_to_origin(None, {"placement": {}})


# ------------------------------------------------------------ the law, for arbitrary deltas

WRITERS = (CONTROLLER, N, OTHER)
NODES = WRITERS[1:]
TASK_IDS = ("t-1", LOCAL, "edge-2-0123456789ab", "edge-1-job", "edge-1:job", "edge-2:job")
HLCS = [_t(i, w).encode() for i in range(3) for w in WRITERS]

_placements = st.builds(
    Placement,
    epoch=st.integers(0, 3),
    node=st.sampled_from(WRITERS[1:]),
    level=st.sampled_from(["strong", "causal", "eventual"]),
    lease_s=st.sampled_from([None, 10.0]),
    hlc=st.sampled_from(HLCS),
)


@st.composite
def _attempts(draw: st.DrawFn) -> dict[Dot, Attempt]:
    out: dict[Dot, Attempt] = {}
    for _ in range(draw(st.integers(0, 3))):
        writer = draw(st.sampled_from((N, N, *WRITERS)))  # the sender's own, mostly
        counter = draw(st.integers(1, 3))
        out[(writer, counter)] = Attempt(
            node=draw(st.sampled_from([writer, writer, *WRITERS[1:]])),
            counter=counter,
            epoch=draw(st.integers(0, 3)),
            status=draw(st.sampled_from(list(AttemptStatus))),
            hlc=draw(st.sampled_from(HLCS)),
            result=draw(st.sampled_from([None, 1, {"r": "x"}])),
        )
    return out


@st.composite
def _records(draw: st.DrawFn, task_id: str) -> TaskRecord:
    spec = draw(st.sampled_from([None, _spec(task_id), _spec(task_id, "other")]))
    vv = VersionVector(draw(st.dictionaries(st.sampled_from(WRITERS), st.integers(0, 4))))
    dots = frozenset(
        draw(st.lists(st.tuples(st.sampled_from(WRITERS), st.integers(1, 7)), max_size=3))
    )
    vv, dots = compact(vv, dots)
    return TaskRecord(
        task_id,
        spec,
        draw(st.none() | _placements),
        MappingProxyType(draw(_attempts())),
        draw(st.booleans()),
        vv,
        dots,
    )


def _events(rec: TaskRecord, writer: str) -> tuple[int, frozenset[Dot]]:
    return rec.context.get(writer), frozenset(d for d in rec.dots if d[0] == writer)


def _decision(p: Placement | None) -> tuple[Any, ...] | None:
    return None if p is None else (p.epoch, p.node, p.level, p.lease_s)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[TaskRecord | None, TaskRecord, str | None]:
    task_id = draw(st.sampled_from(TASK_IDS))
    current = draw(st.none() | _records(task_id))
    if current is not None and current.spec is not None:
        # The controller's record and the delta agree on the spec or the delta has none
        # (a conflict is refused by the join itself, before any right is at stake).
        current = current._replace(spec=_spec(task_id))
    delta = draw(_records(task_id))
    if current is not None:
        if delta.spec is not None and current.spec is not None:
            delta = delta._replace(spec=draw(st.sampled_from([None, current.spec])))
        # Often the delta revisits what the record holds: its attempts with other
        # statuses or epochs, its placement restamped or moved.
        revisits = {
            dot: a._replace(
                status=draw(st.sampled_from(list(AttemptStatus))),
                epoch=draw(st.sampled_from([a.epoch, a.epoch, a.epoch + 1])),
                hlc=draw(st.sampled_from(HLCS)),
            )
            for dot, a in current.attempts.items()
            if draw(st.booleans())
        }
        delta = delta._replace(attempts=MappingProxyType({**delta.attempts, **revisits}))
        if current.placement is not None and draw(st.booleans()):
            p = current.placement
            delta = delta._replace(
                placement=p._replace(
                    hlc=draw(st.sampled_from(HLCS)),
                    epoch=draw(st.sampled_from([p.epoch, p.epoch + 1])),
                    node=draw(st.sampled_from([p.node, N])),
                )
            )
    origin = draw(st.sampled_from([None, N, OTHER]))
    return current, delta, origin


@settings(max_examples=400, deadline=None)
@given(
    _cases(), st.integers(0, 2), st.dictionaries(st.integers(0, 3), st.sampled_from(WRITERS[1:]))
)
def test_no_delta_changes_anything_outside_the_senders_rights(
    case: tuple[TaskRecord | None, TaskRecord, str | None],
    originated: int,
    placed: dict[int, str],
) -> None:
    current, delta, origin = case
    policy = MergePolicy(max_originated=2)
    verdict = authorize_delta(
        N, current, delta, origin=origin, originated=originated, placed=placed, policy=policy
    )
    after = _merged(current, verdict)
    if after is None:
        return
    if current is None:
        assert origin_of(delta.task_id) == N and originated < 2 and after.spec is not None
        before, owns = TaskRecord(delta.task_id), True
    else:
        before, owns = current, origin == N
    # Spec and cancel flag: only the origin, the spec only once.
    assert after.spec == before.spec or (owns and before.spec is None)
    assert after.cancel_requested == before.cancel_requested or owns
    # Placement: the decision is the controller's, but for the origin's epoch 0 on itself;
    # only the node it is placed on may restamp it.
    if after.placement != before.placement:
        assert after.placement is not None
        if before.placement is None:
            assert owns and after.placement.epoch == 0 and after.placement.node == N
        else:
            assert _decision(after.placement) == _decision(before.placement)
            assert before.placement.node == N
    # Attempts: only its own, new ones where it is placed, old ones only forward.
    for dot, attempt in after.attempts.items():
        old = before.attempts.get(dot)
        if attempt == old:
            continue
        assert dot[0] == N and attempt.node == N
        if old is None:  # placed on N at its epoch: now, or earlier by the history
            now = after.placement is not None and (after.placement.node, after.placement.epoch)
            assert now == (N, attempt.epoch) or placed.get(attempt.epoch) == N
        else:
            assert attempt.status > old.status and attempt.epoch == old.epoch
    # Context: no other writer's events; its own only when nothing was refused.
    for writer in WRITERS:
        if writer != N or verdict.refusals:
            assert _events(after, writer) == _events(before, writer)
