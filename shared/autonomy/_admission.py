"""Whether work may start or must go: admission, shedding and the consistency gate.

Metrics are a plain mapping, as ``edge_agent.telemetry.Sampler.sample`` returns them (and as
the simulator fakes them): ``memory_free_mb``, ``cpu_pct`` (0-100, all CPUs together),
optionally ``cpus``, ``own_cpu`` (cores our own task processes used over the last sampling
interval) and ``averages["cpu_pct"]["1m"]``. A missing metric is *unknown* and does not
block: the agent must not freeze because a sensor is absent on some device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.autonomy._queue import QueuedTask
from shared.consistency import AgentLease
from shared.vocab import Level

__all__ = ["Admission", "admit", "may_start", "select_for_shedding", "shortage"]


@dataclass(frozen=True, slots=True)
class Admission:
    """An admission decision; falsy when refused, with the reason (for status and events)."""

    ok: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.ok


_ADMITTED = Admission(True)


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def admit(
    resources: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    reserved: Mapping[str, float] | None = None,
    *,
    running: int = 0,
    max_concurrent: int | None = None,
    headroom_mb: float = 0.0,
) -> Admission:
    """May a task requesting ``resources`` (``cpu`` cores, ``memory_mb``) start now?

    Refused, in this order: ``concurrency_limit`` (``running ≥ max_concurrent``);
    ``memory`` (request above free memory less ``headroom_mb``); ``cpu_reserved`` (the
    requests of running tasks, ``reserved["cpu"]``, plus this one exceed ``cpus``);
    ``cpu_busy`` (request above the host's idle CPU share, ``idle = cpus · (1 - cpu_pct/100)``,
    and waiting for our tasks could make room: request ≤ ``idle + own_cpu``).

    The two CPU checks apply only while some of our tasks hold a reservation: with nothing
    of ours running, waiting cannot free any CPU we control, and a busy neighbour (or an
    oversized request) would otherwise starve the queue forever. By the same reasoning
    waiting frees only the CPU our running tasks actually use (``own_cpu``): when even all of
    it would not make room (sleeping or IO-bound tasks beside a busy neighbour), refusing only
    delays the start. An unknown ``own_cpu`` counts as "waiting may help" (the refusal as
    before). Memory is checked always: starting a task into an out-of-memory kill helps
    nobody.
    """
    if max_concurrent is not None and running >= max_concurrent:
        return Admission(False, "concurrency_limit")
    want_cpu = float(resources.get("cpu", 0.0) or 0.0)
    want_mem = float(resources.get("memory_mb", 0.0) or 0.0)
    metrics = metrics or {}
    free_mem = _number(metrics, "memory_free_mb")
    if free_mem is not None and want_mem > free_mem - headroom_mb:
        return Admission(False, "memory")
    held_cpu = float((reserved or {}).get("cpu", 0.0))
    if held_cpu <= 0.0 and running <= 0:
        return _ADMITTED
    cpus = _number(metrics, "cpus")
    if cpus is not None and held_cpu + want_cpu > cpus:
        return Admission(False, "cpu_reserved")
    busy = _number(metrics, "cpu_pct")
    if cpus is None or busy is None:
        return _ADMITTED
    idle = cpus * (1.0 - busy / 100.0)
    own = _number(metrics, "own_cpu")
    if want_cpu > idle and (own is None or want_cpu <= idle + own):
        return Admission(False, "cpu_busy")
    return _ADMITTED


def shortage(
    metrics: Mapping[str, Any] | None, *, min_free_memory_mb: float, max_cpu_percent: float
) -> str | None:
    """``"memory"`` or ``"cpu"`` when the node is short, else ``None``.

    CPU uses the one-minute average when the metrics carry one: a momentary spike (often our
    own task starting) should not drop queued work.
    """
    metrics = metrics or {}
    free_mem = _number(metrics, "memory_free_mb")
    if free_mem is not None and free_mem < min_free_memory_mb:
        return "memory"
    averages = metrics.get("averages")
    cpu = None
    if isinstance(averages, Mapping) and isinstance(averages.get("cpu_pct"), Mapping):
        cpu = _number(averages["cpu_pct"], "1m")
    if cpu is None:
        cpu = _number(metrics, "cpu_pct")
    if cpu is not None and cpu > max_cpu_percent:
        return "cpu"
    return None


def select_for_shedding(
    tasks: Iterable[QueuedTask],
    metrics: Mapping[str, Any] | None,
    *,
    min_free_memory_mb: float = 64.0,
    max_cpu_percent: float = 95.0,
    shed_below: int = 50,
    count: int = 1,
) -> list[QueuedTask]:
    """The queued tasks to drop while the node is short (:func:`shortage`); none otherwise.

    At most ``count`` per call (the agent calls every few seconds, so shedding is gradual
    and stops as soon as the shortage does), lowest priority first, and among equals the most
    recently enqueued (it has lost the least waiting). Tasks with ``priority ≥ shed_below``
    (default 50, the default priority) are never shed: only work marked as less important
    than the default is dropped. Raw priority, not aged: aging decides order, not worth.
    """
    if (
        count <= 0
        or shortage(metrics, min_free_memory_mb=min_free_memory_mb, max_cpu_percent=max_cpu_percent)
        is None
    ):
        return []
    candidates = [t for t in tasks if t.priority < shed_below]
    candidates.sort(key=lambda t: (t.priority, -t.enqueued, t.task_id))
    return candidates[:count]


def may_start(
    level: Level | str,
    lease: AgentLease | None,
    now: float,
    *,
    epoch: int | None = None,
    out_of_contact_s: float = 0.0,
    max_disconnect_s: float = math.inf,
) -> bool:
    """The consistency gate of docs/consistency.md, the same at every autonomy level.

    ``strong``: only under a lease that is granted, unexpired at ``now`` (the lease's clock)
    and, when ``epoch`` is given, for that epoch (fencing token).

    ``causal``: no lease, but not once the node has been out of contact with the controller
    for the task's ``max_disconnect_s`` (``out_of_contact_s``: seconds since the
    last message heard from it, on a clock that also runs while the process is frozen). The
    controller may re-place causal work after exactly that silence
    (``shared.consistency.replacement_allowed``), so a placement held across it may already be
    superseded elsewhere; starting it would run the task twice with no confirmed loss. It
    waits for the next contact, which brings the newer placement if there is one. A running
    attempt is not concerned: this gates starts only. NaN counts as out of contact (the
    safe side).

    ``eventual`` needs neither: concurrent runs are allowed.
    """
    match Level(level):
        case Level.STRONG:
            if lease is None or not lease.valid(now):
                return False
            return epoch is None or lease.epoch == epoch
        case Level.CAUSAL:
            return out_of_contact_s < max_disconnect_s
        case _:
            return True
