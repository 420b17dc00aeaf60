"""A small simulated world for the CRDT property tests (test_crdt_*.py, test_replica*.py).

``run_program`` interprets a random program (drawn by hypothesis from
:data:`PROGRAMS`) over N replicas: the controller ``cloud`` creates and places
tasks with rising epochs, every node starts attempts, reports statuses (also
stale, losing ones) and requests cancels; deltas travel through a lossy network
that delivers in any order, duplicates and drops. Every delta ever made is kept
(the oracle: the join of all of them is the state every replica must reach).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from shared.clocks import Timestamp
from shared.crdt import (
    AttemptStatus,
    Replica,
    TaskRecord,
    merge,
    new_record,
    place,
    request_cancel,
    set_status,
    start_attempt,
)

NODES = ("cloud", "n1", "n2", "n3")
TASKS = ("t-a", "t-b")
RESULTS = (None, {"ok": True}, [1, 2], "out", 7)


def spec_of(task_id: str) -> dict[str, object]:
    return {"id": task_id, "command": ["echo", task_id], "retry": {"max_attempts": 2}}


_op = st.tuples(
    st.sampled_from(["create", "place", "start", "status", "cancel", "send", "recv", "drop"]),
    st.integers(0, len(NODES) - 1),
    st.integers(0, len(NODES) - 1),
    st.integers(0, len(TASKS) - 1),
    st.integers(0, 63),
)
#: A program: a list of (op, actor, other, task, arg) tuples.
PROGRAMS = st.lists(_op, min_size=20, max_size=80)


@dataclass
class World:
    n: int
    replicas: list[Replica] = field(default_factory=list)
    deltas: list[TaskRecord] = field(default_factory=list)
    snapshots: list[TaskRecord] = field(default_factory=list)
    in_flight: list[tuple[int, int, TaskRecord]] = field(default_factory=list)
    clock: int = 0
    status_went_down: bool = False

    def __post_init__(self) -> None:
        names = NODES[: self.n]
        self.replicas = [Replica(name, peers=[p for p in names if p != name]) for name in names]

    def stamp(self, actor: int) -> Timestamp:
        self.clock += 1
        return Timestamp(1_000 + self.clock, 0, NODES[actor])

    def apply(self, at: int, delta: TaskRecord, origin: str | None = None) -> None:
        replica = self.replicas[at]
        before = replica.get(delta.task_id)
        after = replica.apply(delta, origin=origin)
        if before is not None:
            for dot, attempt in before.attempts.items():
                if after.attempts[dot].status < attempt.status:
                    self.status_went_down = True
        self.snapshots.append(after)

    def local(self, actor: int, delta: TaskRecord) -> None:
        self.deltas.append(delta)
        self.apply(actor, delta)

    def step(self, op: str, actor: int, other: int, task: int, arg: int) -> None:
        actor %= self.n
        other %= self.n
        task_id = TASKS[task]
        writer = NODES[actor]
        rec = self.replicas[actor].get(task_id) or TaskRecord(task_id)
        if op == "create":
            self.local(
                actor, new_record(task_id, spec_of(task_id), writer=writer, hlc=self.stamp(actor))
            )
        elif op == "place":  # only the controller issues epochs, always rising
            rec = self.replicas[0].get(task_id) or TaskRecord(task_id)
            epoch = (rec.placement.epoch if rec.placement else 0) + 1
            node = NODES[1 + arg % (self.n - 1)] if self.n > 1 else "cloud"
            level = ("strong", "causal", "eventual")[arg % 3]
            delta = place(
                rec,
                epoch=epoch,
                node=node,
                level=level,
                lease_s=None if arg % 2 else 30.0,
                writer="cloud",
                hlc=self.stamp(0),
            )
            self.deltas.append(delta)
            self.apply(0, delta)
        elif op == "start":
            epoch = rec.placement.epoch if rec.placement else 0
            status = AttemptStatus.STARTED if arg % 2 else AttemptStatus.PLACED
            _, delta = start_attempt(
                rec, node=writer, epoch=epoch, writer=writer, hlc=self.stamp(actor), status=status
            )
            self.local(actor, delta)
        elif op == "status":
            if not rec.attempts:
                return
            dots = sorted(rec.attempts)
            dot = dots[arg % len(dots)]
            status = AttemptStatus(arg % len(AttemptStatus))
            delta = set_status(
                rec,
                dot,
                status,
                writer=writer,
                hlc=self.stamp(actor),
                exit_code=arg % 3 if status.terminal else None,
                result=RESULTS[arg % len(RESULTS)],
                reason="r" if arg % 4 == 0 else None,
            )
            self.local(actor, delta)
        elif op == "cancel":
            self.local(actor, request_cancel(rec, writer=writer, hlc=self.stamp(actor)))
        elif op == "send" and actor != other:
            peer = NODES[other]
            batch = self.replicas[actor].take(peer)
            for delta in batch.deltas:
                self.in_flight.append((actor, other, delta))
            if arg % 3:  # sometimes the sender does not hear the ack and re-sends later
                self.replicas[actor].ack(peer, batch.up_to)
        elif op == "recv" and self.in_flight:
            # Often the newest first: reordering is what opens gaps.
            index = len(self.in_flight) - 1 if arg % 3 == 0 else arg % len(self.in_flight)
            sender, receiver, delta = self.in_flight[index]
            if arg % 4:  # else: delivered and kept in flight (a duplicate comes later)
                del self.in_flight[index]
            self.apply(receiver, delta, origin=NODES[sender])
        elif op == "drop" and self.in_flight:
            del self.in_flight[0 if arg % 2 else arg % len(self.in_flight)]

    def anti_entropy(self) -> None:
        """Digest-driven exchange through replica 0, both ways, then back out."""
        hub = self.replicas[0]
        for replica in self.replicas[1:]:
            for rec in replica.missing_for(hub.digest()):
                self.apply(0, rec, origin=replica.node_id)
            for rec in hub.missing_for(replica.digest()):
                self.apply(self.replicas.index(replica), rec, origin=hub.node_id)
        for replica in self.replicas[1:]:
            for rec in hub.missing_for(replica.digest()):
                self.apply(self.replicas.index(replica), rec, origin=hub.node_id)

    def oracle(self) -> dict[str, TaskRecord]:
        """The join of every delta ever made, per task."""
        out: dict[str, TaskRecord] = {}
        for delta in self.deltas:
            current = out.get(delta.task_id)
            out[delta.task_id] = delta if current is None else merge(current, delta)
        return out


def run_program(program: list[tuple[str, int, int, int, int]], n: int = 3) -> World:
    world = World(n)
    for op in program:
        world.step(*op)
    return world
