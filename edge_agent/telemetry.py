"""System metrics (read from ``/proc`` and ``/sys``, :mod:`edge_agent._procfs`): capacity for
``hello``, samples for ``telemetry``.

Averages over 1, 5 and 15 minutes are exponentially decayed like the kernel's load average, so
they need no sample history (constant memory on a small device).

An idle node should be nearly silent: a sample is sampled every ``autonomy.telemetry_s`` but
reported only when it moved by a threshold (:func:`worth_reporting`) or the last report is
:data:`REFRESH_S` old, and rounded (:func:`rounded`) to what placement can tell apart.

A sample also carries ``own_cpu``, the cores the agent's own task processes used
(:class:`OwnUsage`), so that admission can tell a busy neighbour from busy tasks of ours
(``shared.autonomy.admit``); it is absent while unknown.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent._procfs import CpuMeter, battery_pct, descendants, memory_mb, proc_times

__all__ = [
    "FORKER_NAME",
    "OWN_EVERY_S",
    "REFRESH_S",
    "OwnUsage",
    "Sampler",
    "capacity",
    "rounded",
    "worth_reporting",
]

_WINDOWS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}

#: The longest time between two telemetry reports while connected (seconds).
REFRESH_S = 60.0
#: How often the task processes' CPU time is read (seconds): a walk of the process table
#: (about a millisecond per hundred processes), not once per scheduling pass.
OWN_EVERY_S = 1.0
#: The shortest window over which the host's CPU share is read (``Sampler._cpu_pct``).
CPU_WINDOW_S = 0.5
#: The name (``comm``) the supervisor's forker gives itself (``edge_agent/_forker.py``): a
#: child of the supervisor that runs no task, so its CPU is not the tasks' (``OwnUsage``).
FORKER_NAME = "continuum-fork"
#: A move of at least this many points (of the one-minute average, where there is one) is
#: reported at once.
_POINTS = {"cpu_pct": 10.0, "memory_pct": 5.0, "battery_pct": 5.0}
#: A move of at least this fraction of the last reported value is reported at once.
_FRACTION = {"memory_free_mb": 0.1, "disk_free_mb": 0.1}
#: Any change of these is reported at once (the controller's queue and backlog views).
_COUNTS = ("queue_len", "running", "reconnects")


def rounded(report: Mapping[str, Any]) -> dict[str, Any]:
    """``report`` (the ``Telemetry`` fields) rounded: percentages and megabytes to whole
    numbers, load averages to hundredths, the decayed averages to tenths, round trips to
    tenths of a millisecond. Fewer bytes, and no change reported that is only noise."""
    out = dict(report)
    for key in ("cpu_pct", "memory_pct", "memory_free_mb", "disk_free_mb", "battery_pct"):
        if out.get(key) is not None:
            out[key] = float(round(out[key]))
    out["load"] = tuple(round(v, 2) for v in out["load"])
    if out.get("rtt_ms_p50") is not None:
        out["rtt_ms_p50"] = round(out["rtt_ms_p50"], 1)
    out["averages"] = {
        metric: {window: round(v, 1) for window, v in windows.items()}
        for metric, windows in out.get("averages", {}).items()
    }
    return out


def _trend(report: Mapping[str, Any], key: str) -> float | None:
    """What a threshold compares: the one-minute average where there is one (a busy
    neighbour's spike is not news), else the sample."""
    value = report.get("averages", {}).get(key, {}).get("1m")
    return report.get(key) if value is None else value


def worth_reporting(last: Mapping[str, Any] | None, now: Mapping[str, Any], age_s: float) -> bool:
    """Whether to send ``now`` when ``last`` was reported ``age_s`` seconds ago (``None``:
    nothing yet on this connection): at least every :data:`REFRESH_S`, and at once when a
    count changed or a figure moved by its threshold."""
    if last is None or age_s >= REFRESH_S:
        return True
    if any(last.get(key) != now.get(key) for key in _COUNTS):
        return True
    if (last.get("battery_pct") is None) != (now.get("battery_pct") is None):
        return True
    for key, points in _POINTS.items():
        before, after = _trend(last, key), _trend(now, key)
        if before is not None and after is not None and abs(after - before) >= points:
            return True
    return any(
        abs(now[key] - last[key]) >= fraction * max(last[key], 1.0)
        for key, fraction in _FRACTION.items()
    )


def _disk_mb(path: Path) -> tuple[float, float]:
    """``(total, free)`` MB of the file system holding ``path`` (free: what an unprivileged
    user may still write)."""
    fs = os.statvfs(path)
    return fs.f_blocks * fs.f_frsize / 2**20, fs.f_bavail * fs.f_frsize / 2**20


def capacity(state_dir: Path) -> dict[str, Any]:
    """What the node offers, for registration."""
    return {
        "cpus": os.cpu_count() or 1,
        "memory_mb": memory_mb()[0],
        "disk_mb": _disk_mb(state_dir)[0],
        "battery_pct": battery_pct(),
    }


@dataclass
class OwnUsage:
    """Cores used by the descendants of ``root()``, the supervisor's pid (0: none known).

    Every task process descends from the supervisor, which is their subreaper, so the sum of
    its descendants' CPU times (each with the children it waited for: a task's short-lived
    helpers count as the task's) is what our tasks used; the supervisor itself is left out, and
    so is its forker (named :data:`FORKER_NAME`: the supervisor's child that makes the tasks'
    processes, with no descendant of its own; a task naming itself so only hides its own
    CPU, which makes ``cpu_busy`` hold starts longer, never shorter). The
    usage is the growth of that sum between two readings at least ``every_s`` apart, per
    second; between readings the last figure stands. A process seen for the first time
    counts with its whole CPU time (it started since the last reading), one that ended
    in between loses its last share (a slight underestimate). A task started since the last
    reading counts as using nothing until the next one (admission's reservation check still
    bounds what we start meanwhile). ``None`` (unknown) before the second reading (unless
    the first finds no task process) and whenever the supervisor is unknown or gone.
    """

    root: Callable[[], int]
    every_s: float = OWN_EVERY_S
    cores: float | None = None
    _root: tuple[int, int] | None = None  # (pid, start) of the root last read
    _times: dict[tuple[int, int], float] = field(default_factory=dict)
    _at: float | None = None

    def measure(self, now: float) -> float | None:
        """The usage as of ``now`` (monotonic seconds), read again when ``every_s`` passed."""
        if self._at is not None and now - self._at < self.every_s:
            return self.cores
        times = self._read()
        if times is None:
            self._times, self._at, self.cores = {}, None, None
            return None
        if self._at is not None and now > self._at:
            used = sum(t - self._times.get(key, 0.0) for key, t in times.items())
            self.cores = max(0.0, used) / (now - self._at)
        elif not times:
            self.cores = 0.0  # nothing of ours runs: known at the first reading
        self._times, self._at = times, now
        return self.cores

    def _read(self) -> dict[tuple[int, int], float] | None:
        """CPU seconds of each descendant, by (pid, start time); ``None`` without a root, and
        once when the root's pid now names another process (its descendants are not ours)."""
        pid = self.root()
        root = None if pid <= 0 else proc_times(pid)
        if root is None:
            self._root = None
            return None
        known, self._root = self._root, (pid, root.start)
        if known is not None and known[0] == pid and known != self._root:
            self._root = None  # a reused pid
            return None
        return {
            (child, t.start): t.cpu_s
            for child, t in descendants(pid).items()
            if t.name != FORKER_NAME
        }


@dataclass
class Sampler:
    """Samples of the node's resources. With ``tasks_root`` (the supervisor's pid, 0 while
    none is known) a sample also has ``own_cpu`` once it is known (:class:`OwnUsage`)."""

    state_dir: Path
    tasks_root: Callable[[], int] | None = None
    _avg: dict[str, dict[str, float]] = field(default_factory=dict)
    _last: float | None = None
    _own: OwnUsage | None = None
    meter: CpuMeter = field(default_factory=CpuMeter)  # started (primed) with the sampler
    _cpu: tuple[float, float] | None = None  # (when read, cpu_pct): see CPU_WINDOW_S

    def __post_init__(self) -> None:
        if self.tasks_root is not None:
            self._own = OwnUsage(self.tasks_root)

    def _cpu_pct(self, now: float) -> float:
        """The host's CPU share since the previous read; read again only after
        :data:`CPU_WINDOW_S`. Two reads a few milliseconds apart (two scheduling passes in a
        burst) give the meaningless 0.0 of an empty interval, which made admission depend on
        tick timing: an agent whose passes came close together saw an idle host however
        busy it was."""
        if self._cpu is not None and now - self._cpu[0] < CPU_WINDOW_S:
            return self._cpu[1]
        value = self.meter.percent()
        self._cpu = (now, value)
        return value

    def sample(self, now: float) -> dict[str, Any]:
        total_mb, available_mb = memory_mb()
        load = os.getloadavg()
        values = {
            "cpus": os.cpu_count() or 1,
            "cpu_pct": self._cpu_pct(now),
            "memory_pct": 100.0 * (total_mb - available_mb) / total_mb,
            "memory_free_mb": available_mb,
            "disk_free_mb": _disk_mb(self.state_dir)[1],
            "load1": load[0],
            "load5": load[1],
            "load15": load[2],
            "battery_pct": battery_pct(),
        }
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        for key in ("cpu_pct", "memory_pct"):
            avgs = self._avg.setdefault(key, {})
            for name, window in _WINDOWS.items():
                prev = avgs.get(name)
                if prev is None:
                    avgs[name] = values[key]
                else:
                    a = math.exp(-dt / window)
                    avgs[name] = a * prev + (1 - a) * values[key]
        values["averages"] = {k: dict(v) for k, v in self._avg.items()}
        own = None if self._own is None else self._own.measure(now)
        if own is not None:
            values["own_cpu"] = own
        return values
