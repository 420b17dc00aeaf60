"""What the devices submit: arrivals and workflow starts drawn up front, tasks made on demand.

Per device, Poisson or bursty on/off arrivals (numpy, one draw for the whole run);
each arrival's type, compute, input/output sizes and failure draw too. Workflows
are layered DAGs: a layer's tasks are submitted when the previous layer's results
are back (``flow_step``), and a failed task stops its workflow. The consistency
policy decides each type's level bounds (``bounds``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.decisions import Readiness, task_readiness, workflow_status
from shared.vocab import Level, TaskStatus
from simulations.sim.metrics import Counters
from simulations.sim.records import Flow, Task, TaskState
from simulations.sim.scenario import Policy, SimScenario, TaskType
from simulations.sim.topology import Topology

__all__ = ["Workload"]


class Workload:
    """Arrivals for one run (see the module docstring). ``arrive`` receives every
    new task at its arrival time; ``now`` reads the loop's clock."""

    def __init__(
        self,
        sc: SimScenario,
        policy: Policy,
        topo: Topology,
        counters: Counters,
        seed: int,
    ) -> None:
        self.types: tuple[TaskType, ...] = sc.workload.types
        self.workflows = sc.workload.workflows
        self.policy = policy
        self.dev_site = topo.dev_site
        self.counters = counters
        self.arrive: Callable[[Task], None] = lambda task: None
        self.jrng = random.Random(f"{seed}:jitter")
        self._bounds = [self._bounds_of(tt) for tt in self.types]
        self._draw(sc, topo.devices, seed)

    def _draw(self, sc: SimScenario, D: int, seed: int) -> None:
        wl = sc.workload
        rng = np.random.default_rng([seed, 33])
        start = wl.start_s
        stop = min(sc.duration_s, wl.stop_s if wl.stop_s is not None else sc.duration_s)
        span = max(0.0, stop - start)
        if wl.arrival == "poisson":
            counts = rng.poisson(wl.rate_per_device * span, D)
            devs = np.repeat(np.arange(D), counts)
            times = rng.uniform(start, stop, int(counts.sum()))
        else:
            on_rate = wl.rate_per_device * wl.burst_factor
            off_rate = max(
                0.0,
                (wl.rate_per_device * (wl.burst_on_s + wl.burst_off_s) - on_rate * wl.burst_on_s)
                / wl.burst_off_s,
            )
            tt: list[np.ndarray] = []
            dd: list[np.ndarray] = []
            for d in range(D):
                t, on = start, bool(rng.random() < wl.burst_on_s / (wl.burst_on_s + wl.burst_off_s))
                while t < stop:
                    length = rng.exponential(wl.burst_on_s if on else wl.burst_off_s)
                    end = min(stop, t + length)
                    rate = on_rate if on else off_rate
                    n = int(rng.poisson(rate * (end - t)))
                    if n:
                        tt.append(rng.uniform(t, end, n))
                        dd.append(np.full(n, d))
                    t, on = end, not on
            times = np.concatenate(tt) if tt else np.zeros(0)
            devs = np.concatenate(dd) if dd else np.zeros(0, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        self.arr_t = times[order]
        self.arr_dev = devs[order].astype(np.int64)
        n = len(self.arr_t)
        types = self.types
        w = np.array([t.weight for t in types], dtype=np.float64)
        self.arr_type = rng.choice(len(types), n, p=w / w.sum())
        u = rng.random((4, n))
        k = self.arr_type

        def spread(pairs: list[tuple[float, float]], draw: np.ndarray) -> np.ndarray:
            lo = np.array([p[0] for p in pairs])
            hi = np.array([p[1] for p in pairs])
            return lo[k] + (hi - lo)[k] * draw  # type: ignore[no-any-return]

        self.arr_mi = spread([t.compute_mi for t in types], u[0])
        self.arr_in = spread([t.input_kb for t in types], u[1]) * 8192.0
        self.arr_out = spread([t.output_kb for t in types], u[2]) * 8192.0
        self.arr_fail = u[3]
        self.cursor = 0
        flows: list[tuple[float, int, int]] = []
        for i, wf in enumerate(wl.workflows):
            m = int(rng.poisson(wf.rate_per_s * span))
            for t0, d in zip(
                np.sort(rng.uniform(start, stop, m)).tolist(),
                rng.integers(0, D, m).tolist(),
                strict=True,
            ):
                flows.append((t0, i, d))
        flows.sort()
        self.flow_starts = flows
        names = [t.name for t in types]
        self.flow_type = [names.index(wf.type) if wf.type else 0 for wf in wl.workflows]

    def replace(
        self,
        arrivals: list[tuple[float, int, int, float, float, float, float]] | None,
        flows: list[tuple[float, int, int]] | None,
    ) -> None:
        """Explicit arrivals ``(t, device, type, MI, input bits, output bits, failure
        draw)`` and workflow starts ``(t, workflow index, device)`` instead of the
        drawn ones (a testbed plan, ``simulations.sim.realgap``)."""
        if arrivals is not None:
            arrivals = sorted(arrivals)
            cols = list(zip(*arrivals, strict=True)) if arrivals else [()] * 7
            self.arr_t = np.array(cols[0], dtype=np.float64)
            self.arr_dev = np.array(cols[1], dtype=np.int64)
            self.arr_type = np.array(cols[2], dtype=np.int64)
            self.arr_mi, self.arr_in, self.arr_out, self.arr_fail = (
                np.array(c, dtype=np.float64) for c in cols[3:]
            )
        if flows is not None:
            self.flow_starts = sorted(flows)

    def bounds(self, k: int) -> tuple[Level, Level]:
        """The level bounds of type ``k`` under the run's consistency policy."""
        return self._bounds[k]

    def spec(self, k: int) -> dict[str, Any]:
        """What the level functions read of type ``k``'s task spec: the bounds (as the
        consistency policy sets them), ``idempotent``, ``max_disconnect_s``."""
        tt = self.types[k]
        lo, hi = self._bounds[k]
        if lo is hi:
            consistency: dict[str, str] = {"level": lo.value}
        else:
            consistency = {"level": "adaptive", "min": lo.value, "max": hi.value}
        return {
            "consistency": consistency,
            "idempotent": tt.idempotent,
            "max_disconnect_s": tt.max_disconnect_s,
        }

    def _bounds_of(self, tt: TaskType) -> tuple[Level, Level]:
        c = self.policy.consistency
        if c == "declared":
            if tt.level == "adaptive":
                return Level(tt.min), Level(tt.max)
            return Level(tt.level), Level(tt.level)
        if c == "adaptive":
            return Level(tt.min), Level(tt.max)
        return Level(c), Level(c)

    def new_task(
        self, dev: int, tt: int, t: float, mi: float, ib: float, ob: float, u: float
    ) -> Task:
        c = self.counters
        lo, hi = self._bounds[tt]
        task = Task(f"t{c.generated}", dev, self.dev_site[dev], tt, t, mi, ib, ob, u, lo, hi)
        task.entered = t
        c.generated += 1
        c.open_due[task.id] = t + self.types[tt].deadline_s
        return task

    def pump(self, now: float) -> None:
        """Arrivals up to ``now`` (drawn up front), in order."""
        end = int(np.searchsorted(self.arr_t, now, side="right"))
        i = self.cursor
        if end <= i:
            return
        ts = self.arr_t[i:end].tolist()
        ds = self.arr_dev[i:end].tolist()
        ks = self.arr_type[i:end].tolist()
        mis = self.arr_mi[i:end].tolist()
        ins = self.arr_in[i:end].tolist()
        outs = self.arr_out[i:end].tolist()
        us = self.arr_fail[i:end].tolist()
        self.cursor = end
        arrive, new = self.arrive, self.new_task
        for t, d, k, mi, ib, ob, u in zip(ts, ds, ks, mis, ins, outs, us, strict=True):
            arrive(new(d, k, t, mi, ib, ob, u))

    def arrival_event(self, index: int) -> None:
        """Exact mode (no batching tick): one event per arrival."""
        self.pump(self.arr_t[index])

    def flow_start(self, item: tuple[float, int, int]) -> None:
        t0, i, dev = item
        wf = self.workflows[i]
        self.flow_layer(Flow(dev, self.flow_type[i], wf.width, wf.depth, t0), t0)

    def flow_layer(self, flow: Flow, t: float) -> None:
        tt = self.types[flow.tt]
        r = self.jrng
        flow.layer_ids = []
        tasks = []
        for _ in range(flow.width):
            task = self.new_task(
                flow.dev,
                flow.tt,
                t,
                r.uniform(*tt.compute_mi),
                r.uniform(*tt.input_kb) * 8192.0,
                r.uniform(*tt.output_kb) * 8192.0,
                r.random(),
            )
            task.flow = flow
            flow.layer_ids.append(task.id)
            flow.statuses[task.id] = None
            tasks.append(task)
        for task in tasks:
            self.arrive(task)

    def flow_step(self, task: Task, now: float) -> None:
        """``task`` ended (its result reached its device, or it failed): the next
        layer goes once ``shared.decisions.task_readiness`` says it is ready, and is
        cancelled (never submitted) when it says so; the workflow's final status is
        ``workflow_status``'s."""
        flow = task.flow
        if flow is None or flow.done:
            return
        ok = task.state is TaskState.SUCCEEDED
        flow.statuses[task.id] = TaskStatus.SUCCEEDED if ok else TaskStatus.FAILED
        verdict = task_readiness([flow.statuses[tid] for tid in flow.layer_ids])
        if verdict.readiness is Readiness.WAITING:
            return
        c = self.counters
        if verdict.readiness is Readiness.CANCEL:
            remaining = flow.width * (flow.depth - flow.layer - 1)
            c.dependents_cancelled += remaining
            statuses = [*flow.statuses.values(), *[TaskStatus.CANCELLED] * remaining]
        else:
            flow.layer += 1
            if flow.layer < flow.depth:
                self.flow_layer(flow, now)
                return
            statuses = list(flow.statuses.values())
        flow.done = True
        if workflow_status(s for s in statuses if s is not None).status is TaskStatus.SUCCEEDED:
            c.flows_done.append(now - flow.t0)
        else:
            c.flows_failed += 1
