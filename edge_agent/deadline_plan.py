"""Deadline-feasible admission of the local API's submissions (docs/agent.md, "Local API").

A task submitted here with a ``deadline_s`` is kept only when this agent can still finish it
by then together with the local deadline work it already holds: the plan is the simulator's
edges' (``shared.autonomy.plan_edf``: EDF list scheduling over when each executor slot
frees, Moore-Hodgson's rule for the fewest late tasks). A task the plan cannot keep is
refused at once (``DeadlineInfeasible``: ``503 deadline_infeasible``, nothing journaled), so
its submitter tries the next agent or the controller while there is time. Queued local
tasks the plan refuses to keep the newcomer are *handed back*: they end ``cancelled``, their
attempt ``failed`` with reason ``deadline_infeasible`` and an event ``handed_back``, synced
upstream like any change (``LocalScheduler.hand_back``); none had started, so none runs
twice.

What the plan reads, and its assumptions:

- **run times** (``RunTimes``): per task kind (``shared.learning.task_kind``: its name, else
  its callable, else its command), learned from this agent's own succeeded attempts by the
  controller's learner (``shared.learning.observe_run``: a Kalman/EWMA update in log space,
  this node's speed and the kind's work together); before a kind's first run, the spec's
  optional ``work_s`` hint (docs/task-spec.md) over the tier's prior speed; with neither, no
  plan: the task is admitted as before (nothing is promised for it, and later plans leave
  it out). Kept in the journal (``meta`` key ``run_times``), saved at most every ``SAVE_S``
  while runs teach something and at shutdown, so a restarted agent plans with what it had
  learned (a crash loses at most the last ``SAVE_S``: an estimate, learned again from the
  next runs; a malformed copy is dropped with a warning).
- **slots**: ``executor.max_concurrent``, each free now or when the attempt on it is expected
  to end (its start plus its kind's expected run, at least now); an attempt of a kind with no
  estimate holds its slot until its ``timeout_s`` (the only bound the agent has).
- **queued work**: the local submissions waiting with a deadline and an estimate. Work the
  controller placed here is left out (its placement already counted this node's backlog, and
  only the controller may move it), as is work without a deadline (the queue starts deadline
  work first within a priority band, ``shared.autonomy.order_queue``). The plan assumes EDF
  order, which the queue follows within a band; a higher-priority task runs first whatever
  its deadline, so across bands the plan may be optimistic. It is made at each local
  submission with a deadline, and again while such tasks wait: once the least slack of the
  last plan has passed (a delay grows no faster than time), and after each start (which may
  take a slot the plan counted on); what became hopeless is handed back then.

Tasks without a deadline pay nothing for planning; every succeeded attempt pays one learner
update (a few float operations).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.autonomy import DeadlineJob, edf_finish, plan_edf
from shared.crdt import request_cancel
from shared.learning import LearnerState, observe_run, work_key
from shared.vocab import Tier

if TYPE_CHECKING:
    from edge_agent.core import Core

__all__ = [
    "HANDED_BACK",
    "RUN_TIMES_KEY",
    "SAVE_S",
    "DeadlineInfeasible",
    "DeadlinePlanner",
    "RunTimes",
    "slot_free_at",
]

#: The reason of a refusal and of a hand-back (the local API's ``error``, the attempt's reason).
HANDED_BACK = "deadline_infeasible"
#: The journal's ``meta`` key of the learned run times, and the seconds between saves.
RUN_TIMES_KEY = "run_times"
SAVE_S = 10.0

log = logging.getLogger(__name__)


class DeadlineInfeasible(Exception):
    """The agent cannot finish ``task_id`` by its deadline with the work it holds: refused,
    nothing journaled. Times in seconds from the submission: ``predicted_finish_s`` where
    EDF would finish it with everything held, ``earliest_finish_s`` on the first free slot
    with nothing ahead, ``deadline_s`` the spec's, ``run_s`` its expected run."""

    def __init__(
        self,
        task_id: str,
        *,
        predicted_finish_s: float,
        earliest_finish_s: float,
        deadline_s: float,
        run_s: float,
    ) -> None:
        self.task_id = task_id
        self.predicted_finish_s = predicted_finish_s
        self.earliest_finish_s = earliest_finish_s
        self.deadline_s = deadline_s
        self.run_s = run_s
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.earliest_finish_s > self.deadline_s:
            why = f"even with nothing ahead it would finish at {self.earliest_finish_s:.3g} s"
        elif self.predicted_finish_s > self.deadline_s:
            why = f"behind the work held it would finish at {self.predicted_finish_s:.3g} s"
        else:
            why = (
                f"it would finish at {self.predicted_finish_s:.3g} s, but tasks already "
                "promised would then miss theirs"
            )
        return (
            f"this agent cannot meet the deadline of {self.deadline_s:g} s "
            f"(expected run {self.run_s:.3g} s): {why}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The local API's answer body (``503``)."""
        return {
            "error": HANDED_BACK,
            "message": self.message,
            "id": self.task_id,
            "predicted_finish_s": _finite(self.predicted_finish_s),
            "earliest_finish_s": _finite(self.earliest_finish_s),
            "deadline_s": self.deadline_s,
            "run_s": self.run_s,
        }


def _finite(value: float) -> float | None:
    """JSON has no infinity: ``None`` for a slot that never frees."""
    return round(value, 4) if math.isfinite(value) else None


def slot_free_at(slots: int, ends: Iterable[float], now: float) -> list[float]:
    """When each of ``slots`` executor slots is free for queued work, given the expected ends
    of the running attempts (``ends``, one per attempt): ``now`` for a slot nothing runs on,
    an end (at least ``now``) otherwise. More attempts than slots (a lower limit after a
    restart): a slot frees only as the surplus ends, so the latest ``slots`` ends count."""
    if slots <= 0:
        return []
    busy = sorted(max(now, end) for end in ends)[-slots:]
    return [now] * (slots - len(busy)) + busy


class RunTimes:
    """What this agent expects a task's run to take (seconds on one of its slots), learned
    from its own succeeded attempts (``shared.learning``; see the module docstring)."""

    def __init__(self, node_id: str, tier: str, stored: str | None = None) -> None:
        """``stored``: what ``to_json`` saved (``None``: nothing yet)."""
        self.node_id, self.tier = node_id, Tier(tier)  # an enum: the learner's fast path
        self.state = LearnerState()
        self.learned = False  # since the last save
        if stored is not None:
            try:
                self.state = LearnerState.from_dict(json.loads(stored))
            except ValueError as exc:  # not JSON, or not a learner state
                log.warning("stored run times dropped: %s", exc)

    def to_json(self) -> str:
        return json.dumps(self.state.to_dict(), separators=(",", ":"))

    def observe(self, spec: Mapping[str, Any], seconds: float) -> None:
        """A succeeded attempt of ``spec`` ran ``seconds`` (start to exit)."""
        self.learned = True
        kind, hint_s, bound_s = work_key(spec)
        observe_run(
            self.state,
            node_id=self.node_id,
            tier=self.tier,
            kind=kind,
            seconds=seconds,
            hint_s=hint_s,
            bound_s=bound_s,
        )

    def expected_s(self, spec: Mapping[str, Any]) -> float | None:
        """The kind's expected run here: learned, else from the spec's ``work_s`` hint;
        ``None`` with neither."""
        kind, hint_s, _ = work_key(spec)
        work = self.state.work.get(kind)
        if work is None:
            if hint_s is None:
                return None
            work = self.state.work_of(kind, hint_s)
        return work.value / self.state.speed_of(self.node_id, self.tier).value


class DeadlinePlanner:
    """The agent's side of the plan: gathers its inputs from the core (slots, running
    attempts, the queue) and asks ``plan_edf``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.runs = RunTimes(core.node, core.cfg.node.tier, core.journal.get_meta(RUN_TIMES_KEY))
        #: when to plan the held tasks again (wall seconds; ``inf``: none held): once the
        #: least slack of what the last plan kept has passed, since a delay (an overrun)
        #: grows no faster than time passes; at once after a start (``started``), which may
        #: take a slot the plan counted on (work it does not plan: placed, no deadline)
        self.next_s = math.inf

    def admit(self, spec: Mapping[str, Any], now: float) -> list[DeadlineJob]:
        """Plan ``spec`` (just submitted, not journaled) at ``now`` (wall seconds, the clock
        of the queue's deadlines): the queued local tasks to hand back for it (none when it
        has no deadline or no expected run: no plan). Raises ``DeadlineInfeasible`` when
        the plan does not keep it."""
        deadline_s = spec.get("deadline_s")
        if deadline_s is None:
            return []
        run_s = self.runs.expected_s(spec)
        if run_s is None:
            return []
        new = DeadlineJob(str(spec["id"]), now + float(deadline_s), run_s)
        free_at = slot_free_at(self.core.cfg.executor.max_concurrent, self._ends(now), now)
        queued = self._queued()
        plan = plan_edf(free_at, queued, now, new)
        if not plan.admits(new.key):
            raise DeadlineInfeasible(
                new.key,
                predicted_finish_s=edf_finish(free_at, [*plan.kept, new], now, new.key) - now,
                earliest_finish_s=edf_finish(free_at, [new], now, new.key) - now,
                deadline_s=float(deadline_s),
                run_s=run_s,
            )
        self._planned(plan.kept, plan.starts, now)
        return [job for job in plan.refused if job.key != new.key]

    def save(self) -> None:
        """Journal the run times if a run taught something since the last save (the
        agent calls it every ``SAVE_S`` and at shutdown)."""
        if self.runs.learned:
            with self.core.txn():
                self.core.journal.set_meta(RUN_TIMES_KEY, self.runs.to_json())
            self.runs.learned = False

    def started(self) -> None:
        """Attempts started: plan the held tasks again at the next pass."""
        if self.next_s != math.inf:
            self.next_s = 0.0

    def replan_if_due(self) -> None:
        """Plan the held tasks again when ``next_s`` came (a scheduling pass calls this:
        one comparison while nothing is held), and hand back what became hopeless (its own
        transaction)."""
        if self.next_s == math.inf:
            return
        now = self.core.clock.wall_ms() / 1000.0
        if now < self.next_s:
            return
        queued = self._queued()
        free_at = slot_free_at(self.core.cfg.executor.max_concurrent, self._ends(now), now)
        plan = plan_edf(free_at, queued, now)
        self._planned(plan.kept, plan.starts, now)
        if plan.refused:
            with self.core.txn():
                self.hand_back(plan.refused, for_task=None)

    def _planned(self, kept: Sequence[DeadlineJob], starts: Sequence[float], now: float) -> None:
        slack = [job.deadline - start - job.run_s for job, start in zip(kept, starts, strict=True)]
        self.next_s = now + max(0.0, min(slack)) if slack else math.inf

    def hand_back(self, jobs: Iterable[DeadlineJob], *, for_task: str | None) -> None:
        """Hand back queued local tasks the plan refused, to keep ``for_task`` (inside the
        caller's transaction, the one that admits it) or, ``None``, because they became
        hopeless (an overrun ahead of them): each leaves the queue and ends
        ``cancelled`` (nothing waits for it, nothing retries it), its attempt ``failed``
        with reason ``deadline_infeasible`` (what its submitter reads), with an event."""
        core = self.core
        for job in jobs:
            rec = core.replica.get(job.key)
            row = core.journal.runq.get(job.key)
            if rec is None or row is None:
                continue
            core.fail_unrun(rec, row.epoch, HANDED_BACK)
            current = core.replica.get(job.key)
            assert current is not None
            core.change(request_cancel(current, writer=core.node, hlc=core.stamp()))
            core.journal.remove_queued(job.key)
            core.event(
                "handed_back",
                job.key,
                reason=HANDED_BACK,
                deadline_ms=row.deadline_ms,
                run_s=round(job.run_s, 4),
                for_task=for_task,
            )
            core.counters["handed_back"] += 1

    def _ends(self, now: float) -> list[float]:
        """When each running attempt is expected to end (wall seconds)."""
        core = self.core
        if not core.running:
            return []
        ends = []
        for proc in core.journal.processes():
            if proc.attempt not in core.running:
                continue
            rec = core.replica.get(proc.task_id)
            spec = rec.spec if rec is not None else None
            if spec is None:
                ends.append(math.inf)
                continue
            run_s = self.runs.expected_s(spec)
            if run_s is None:
                run_s = float(spec.get("timeout_s", math.inf))
            ends.append(proc.started_ms / 1000.0 + run_s)
        return ends

    def _queued(self) -> Sequence[DeadlineJob]:
        """The queued local submissions with a deadline and an expected run, in the order
        they were admitted."""
        core = self.core
        jobs = []
        rows = sorted(core.journal.runq.rows(), key=lambda row: (row.enqueued_ms, row.task_id))
        for row in rows:
            if row.source != "local" or row.deadline_ms is None:
                continue
            rec = core.replica.get(row.task_id)
            if rec is None or rec.spec is None:
                continue
            run_s = self.runs.expected_s(rec.spec)
            if run_s is not None:
                jobs.append(DeadlineJob(row.task_id, row.deadline_ms / 1000.0, run_s))
        return jobs
