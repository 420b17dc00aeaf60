"""The agent's lease requests and the answers it accepts (``shared.protocol.AgentLeases``).

Unit tests of the matching rules, and a property test of the safety law over a model world:
two agent nodes that are killed and restarted (a fresh incarnation each time), the
controller's own ``LeaseBook`` answering requests, a broker that queues, duplicates and
reorders messages, and re-placements to the other node. The law: no two attempts of the
strong task ever hold a lease at the same moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.consistency import LeaseBook, LeasePolicy
from shared.protocol import AgentLeases, GrantOutcome, LeaseGrant, LeaseRequest

TASK = "t-strong"


def _leases(incarnation: str = "inc1", period_s: float = 6.0) -> AgentLeases:
    return AgentLeases(incarnation, period_s=period_s, margin_s=0.2, rng=random.Random(7))


def _grant(req: LeaseRequest, duration_s: float = 6.0, **changes: object) -> LeaseGrant:
    fields: dict[str, object] = {
        "task_id": req.task_id,
        "epoch": req.epoch,
        "granted": True,
        "duration_s": duration_s,
        "request_id": req.request_id,
    }
    fields.update(changes)
    return LeaseGrant(**fields)  # type: ignore[arg-type]


def _request(leases: AgentLeases, now: float, epoch: int = 1) -> LeaseRequest:
    req = leases.due(leases.for_start(TASK, epoch, None, now), now)
    assert req is not None
    return req


def test_request_ids_name_the_incarnation_and_never_repeat() -> None:
    leases = _leases("abc")
    first = _request(leases, 0.0)
    second = leases.due(leases.for_start("t-other", 1, None, 0.0), 0.0)
    assert second is not None
    assert first.request_id == "abc-1" and second.request_id == "abc-2"


def test_deadline_counts_from_the_requests_send_time() -> None:
    leases = _leases()
    req = _request(leases, 10.0)
    answer = leases.answer(_grant(req, 6.0), 12.5)
    assert answer.outcome == GrantOutcome.GRANTED
    # 10 + 6 - (0.2 margin + 1 % drift of 6 s): measured from the send, not the arrival.
    assert answer.deadline is not None and abs(answer.deadline - 15.74) < 1e-9


def test_only_an_exact_answer_of_this_incarnation_is_accepted() -> None:
    old = _leases("old")
    stale = _grant(_request(old, 0.0))  # queued at the broker while the agent restarts
    leases = _leases("new")
    req = _request(leases, 5.0)
    for grant in (
        stale,
        _grant(req, request_id=""),  # a controller that does not echo ids
        _grant(req, epoch=2),
        _grant(req, task_id="t-other"),
    ):
        answer = leases.answer(grant, 5.1)
        assert answer.outcome == GrantOutcome.IGNORED, grant
    lease = leases.get(TASK)
    assert lease is not None and lease.deadline is None
    assert leases.answer(_grant(req), 5.2).outcome == GrantOutcome.GRANTED
    # The same grant again (a broker duplicate) answers nothing.
    assert leases.answer(_grant(req), 5.3).outcome == GrantOutcome.IGNORED


def test_lease_held_is_retried_with_backoff_and_stale_epoch_is_final() -> None:
    leases = _leases()
    req = _request(leases, 0.0)
    answer = leases.answer(_grant(req, granted=False, duration_s=0.0, reason="lease_held"), 0.1)
    assert answer.outcome == GrantOutcome.RETRY
    assert answer.retry_at is not None and answer.retry_at >= 1.1
    lease = leases.for_start(TASK, 1, None, 0.5)
    assert leases.due(lease, answer.retry_at - 0.01) is None
    again = leases.due(lease, answer.retry_at)
    assert again is not None and again.request_id != req.request_id
    refused = leases.answer(
        _grant(again, granted=False, duration_s=0.0, reason="stale_epoch"), answer.retry_at
    )
    assert refused.outcome == GrantOutcome.REFUSED
    assert all(leases.due(lease, answer.retry_at + t) is None for t in (1.0, 10.0, 100.0))


def test_a_queued_tasks_lapsed_lease_is_asked_for_again() -> None:
    leases = _leases(period_s=4.0)
    req = _request(leases, 0.0)
    assert leases.answer(_grant(req, 4.0), 0.1).outcome == GrantOutcome.GRANTED
    # No slot freed before the deadline: the old lease is never renewed ...
    lapsed = leases.get(TASK)
    assert lapsed is not None and not lapsed.valid(10.0) and not lapsed.renew_due(10.0)
    # ... the queued task gets a fresh lease and asks again when it could start.
    fresh = leases.for_start(TASK, 1, 4.0, 10.0)
    assert fresh is not lapsed
    assert leases.due(fresh, 10.0) is not None


def test_the_grant_of_a_killed_process_is_not_credited_after_the_restart() -> None:
    """The overlap seen in the nemesis: agent-1 was granted epoch 1, killed before reading
    the grant, restarted 13 s later and asked again; the queued grant must not count."""
    book = LeaseBook(LeasePolicy(duration_s=6.0, controller_margin_s=1.0))
    before = _leases("before")
    req = _request(before, 0.0)
    decision = book.request(
        task_id=TASK,
        node="agent-1",
        epoch=1,
        duration_s=req.duration_s,
        now=0.0,
        placed_epoch=1,
        placed_node="agent-1",
    )
    queued = _grant(req, decision.duration_s)
    after = _leases("after")
    _request(after, 13.0)
    assert after.answer(queued, 13.1).outcome == GrantOutcome.IGNORED
    lease = after.get(TASK)
    assert lease is not None and not lease.valid(13.1)


# ---------------------------------------------------------------- the safety law

NODES = ("agent-1", "agent-2")
DURATION = 4.0
CONTROLLER = LeasePolicy(duration_s=DURATION, controller_margin_s=1.0)


@dataclass
class _Attempt:
    node: str
    epoch: int
    deadline: float  # the fence; while its agent lives, the lease's current deadline


@dataclass
class _Node:
    name: str
    incarnations: int = 0
    leases: AgentLeases | None = None
    placed_epoch: int | None = None
    attempt: _Attempt | None = None
    down: list[LeaseGrant] = field(default_factory=list)  # queued at the broker

    def start_process(self, now: float, rng: random.Random) -> None:
        self.incarnations += 1
        self.leases = AgentLeases(
            f"{self.name}-i{self.incarnations}", period_s=DURATION, margin_s=0.2, rng=rng
        )
        if self.attempt is not None and now < self.attempt.deadline:
            self.leases.adopt(TASK, self.attempt.epoch, self.attempt.deadline, now)


class _World:
    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.book = LeaseBook(CONTROLLER)
        self.placed = (1, NODES[0])
        self.nodes = {name: _Node(name) for name in NODES}
        self.up: list[tuple[str, LeaseRequest]] = []
        for node in self.nodes.values():
            node.start_process(self.now, self.rng)
        self.nodes[NODES[0]].placed_epoch = 1

    # the agent's moves ------------------------------------------------------------
    def fence(self) -> None:
        """Watchdogs stop attempts at their deadline; a live agent forgets the lease."""
        for node in self.nodes.values():
            if node.attempt is not None and self.now >= node.attempt.deadline:
                node.attempt = None
                if node.leases is not None:
                    node.leases.drop(TASK)

    def request(self, name: str, duplicate: bool) -> None:
        node = self.nodes[name]
        if node.leases is None or node.placed_epoch is None:
            return
        if node.attempt is not None:
            lease = node.leases.for_running(TASK, node.attempt.epoch)
        else:
            lease = node.leases.for_start(TASK, node.placed_epoch, DURATION, self.now)
        req = node.leases.due(lease, self.now)
        if req is not None:
            self.up += [(name, req)] * (2 if duplicate else 1)

    def deliver(self, name: str, index: int, duplicate: bool) -> None:
        node = self.nodes[name]
        if not node.down or node.leases is None:
            return  # a dead process: the broker keeps the message for its restart
        grant = node.down[index % len(node.down)]
        if not duplicate:
            node.down.remove(grant)
        answer = node.leases.answer(grant, self.now)
        if answer.outcome != GrantOutcome.GRANTED or answer.deadline is None:
            return
        if node.attempt is not None and node.attempt.epoch == grant.epoch:
            node.attempt.deadline = answer.deadline
        elif node.attempt is None and node.placed_epoch == grant.epoch:
            lease = node.leases.get(TASK)
            if lease is not None and lease.valid(self.now):
                node.attempt = _Attempt(name, grant.epoch, lease.deadline or 0.0)

    def kill(self, name: str) -> None:
        self.nodes[name].leases = None  # its attempt runs on under the watchdog's fence

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        if node.leases is None:
            node.start_process(self.now, self.rng)

    # the controller's moves -------------------------------------------------------
    def serve(self, index: int) -> None:
        if not self.up:
            return
        name, req = self.up.pop(index % len(self.up))
        epoch, placed_node = self.placed
        decision = self.book.request(
            task_id=req.task_id,
            node=name,
            epoch=req.epoch,
            duration_s=req.duration_s,
            now=self.now,
            placed_epoch=epoch,
            placed_node=placed_node,
        )
        self.nodes[name].down.append(
            LeaseGrant(
                task_id=req.task_id,
                epoch=req.epoch,
                granted=decision.granted,
                duration_s=decision.duration_s,
                reason=None if decision.granted else decision.reason,
                request_id=req.request_id,
            )
        )

    def replace(self) -> None:
        """Re-place on the other node under a new epoch (at any time: the lease book, not
        the re-placement rule, must keep the two attempts apart)."""
        epoch, node = self.placed
        other = NODES[1] if node == NODES[0] else NODES[0]
        self.placed = (epoch + 1, other)
        self.nodes[other].placed_epoch = epoch + 1

    def restart_controller(self) -> None:
        self.book = LeaseBook.restore(list(self.book), now=self.now, policy=CONTROLLER)

    # the law ----------------------------------------------------------------------
    def holders(self) -> list[_Attempt]:
        return [
            n.attempt
            for n in self.nodes.values()
            if n.attempt is not None and self.now < n.attempt.deadline
        ]


_node = st.sampled_from(NODES)
_ARGS: dict[str, st.SearchStrategy[tuple[object, ...]]] = {
    "tick": st.tuples(st.sampled_from([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])),
    "serve": st.tuples(st.integers(0, 7)),
    "deliver": st.tuples(_node, st.integers(0, 7), st.booleans()),
    "request": st.tuples(_node, st.just(True)),  # a duplicated request
    "kill": st.tuples(_node),
    "restart": st.tuples(_node),
    "replace": st.just(()),
    "restart_controller": st.just(()),
}
#: Messages move and time passes three times as often as faults strike, so that grants are
#: issued and taken up between kills, restarts and re-placements.
_KINDS = ["tick", "serve", "deliver"] * 3 + [
    "request",
    "kill",
    "restart",
    "replace",
    "restart_controller",
]
_action = st.sampled_from(_KINDS).flatmap(lambda kind: _ARGS[kind].map(lambda a: (kind, *a)))


#: The overlap the nemesis found: agent-1 granted epoch 1, killed before reading the grant;
#: the task re-placed on agent-2 (epoch 2, granted, running); agent-1 restarted, asked for
#: epoch 1 again and was delivered the old grant (FIFO credited it to the fresh request).
#: Random schedules reach this only rarely (about 1 in 250 of them with FIFO matching), so it
#: is always run.
_NEMESIS = [
    ("request", "agent-1", False),
    ("serve", 0),
    ("kill", "agent-1"),
    ("tick", 3.0),
    ("tick", 3.0),
    ("replace",),
    ("request", "agent-2", False),
    ("serve", 0),
    ("deliver", "agent-2", 0, False),
    ("restart", "agent-1"),
    ("request", "agent-1", False),
    ("deliver", "agent-1", 0, False),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(_action, min_size=60, max_size=150), st.integers(0, 2**16))
@example(_NEMESIS, 0)
def test_no_two_attempts_of_a_strong_task_hold_a_lease_at_once(
    actions: list[tuple[object, ...]], seed: int
) -> None:
    world = _World(seed)
    for action in actions:
        name, *args = action
        if name == "tick":
            world.now += float(args[0])  # type: ignore[arg-type]
        else:
            getattr(world, str(name))(*args)
        world.fence()
        assert len(world.holders()) <= 1, (world.now, world.holders())
        for node in NODES:  # every live agent asks whenever its rules say a request is due
            world.request(node, duplicate=False)
