"""The host as Linux's ``/proc`` and ``/sys`` show it: what :mod:`edge_agent.telemetry` samples.

These are the reads psutil makes for the same figures, done directly: importing psutil cost an
idle agent about 0.8 MB of resident memory (docs/agent.md, "Footprint"), a fortieth of its
30 MB budget, for a handful of file reads. The agent runs on Linux only (cgroups,
``SO_PEERCRED`` and the subreaper its supervisor relies on, docs/agent.md), so there is no
other platform to fall back to; a file that cannot be read raises :class:`OSError` (a battery
that is not there is ``None``).

The figures have psutil's meaning: available memory is the kernel's ``MemAvailable``; the CPU
share counts every state but ``idle`` and ``iowait`` as busy (``guest`` time is already in
``user``); a process's CPU time includes the children it has waited for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuMeter", "ProcTimes", "battery_pct", "descendants", "memory_mb", "proc_times"]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_POWER_SUPPLY = Path("/sys/class/power_supply")
_MEMINFO_PATH = Path("/proc/meminfo")


_MEMINFO = (b"MemTotal", b"MemAvailable", b"MemFree", b"Buffers", b"Cached")


def memory_mb() -> tuple[float, float]:
    """``(total, available)`` memory in MB, from ``/proc/meminfo``: ``MemAvailable``, or
    on a kernel older than 3.14 that lacks it, free memory plus buffers and page cache."""
    fields: dict[bytes, float] = {}
    with _MEMINFO_PATH.open("rb") as f:
        for line in f:
            name, _, rest = line.partition(b":")
            if name in _MEMINFO:
                fields[name] = int(rest.split()[0]) / 1024  # kB
    available = fields.get(b"MemAvailable")
    if available is None:
        available = sum(fields.get(name, 0.0) for name in (b"MemFree", b"Buffers", b"Cached"))
    return fields[b"MemTotal"], available


def _cpu_ticks() -> tuple[int, int]:
    """``(busy, all)`` CPU ticks of the host since boot (``/proc/stat``'s first line: user,
    nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice)."""
    with open("/proc/stat", "rb") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    total = sum(ticks[:8])  # guest and guest_nice are already counted in user and nice
    return total - ticks[3] - ticks[4], total


class CpuMeter:
    """The host's busy CPU share in percent between two calls of :meth:`percent` (the first
    counts from construction); ``0.0`` when no tick passed in between, as psutil's
    ``cpu_percent(None)``."""

    def __init__(self) -> None:
        self._last = _cpu_ticks()

    def percent(self) -> float:
        now = _cpu_ticks()
        busy, total = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return 0.0 if total <= 0 or busy <= 0 else min(100.0, 100.0 * busy / total)


@dataclass(frozen=True)
class ProcTimes:
    """One process from its ``/proc/<pid>/stat``: its parent, its start (clock ticks since
    boot: with the pid, it names the process across pid reuse) and its CPU seconds, those
    of the children it waited for included."""

    ppid: int
    start: int
    cpu_s: float
    name: str = ""  # its ``comm`` (the kernel's 15 characters of its name)


def proc_times(pid: int) -> ProcTimes | None:
    """``pid``'s :class:`ProcTimes`; ``None`` when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it are
    # counted from its closing parenthesis (state, ppid, ... utime is field 14).
    rest = data[data.rfind(b")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in rest[11:15])
    name = data[data.find(b"(") + 1 : data.rfind(b")")].decode("utf-8", "replace")
    cpu_s = (utime + stime + cutime + cstime) * _TICK_S
    return ProcTimes(int(rest[1]), int(rest[19]), cpu_s, name)


def descendants(root: int) -> dict[int, ProcTimes]:
    """Every living descendant of ``root`` (not ``root`` itself), by pid: one walk of the
    process table, one read per process (about a millisecond per hundred processes)."""
    table = {pid: t for pid in _pids() if (t := proc_times(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, t in table.items():
        children.setdefault(t.ppid, []).append(pid)
    found: dict[int, ProcTimes] = {}
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = table[pid]
            todo.extend(children.get(pid, ()))
    return found


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _read_number(*paths: Path) -> int | None:
    """The number in the first of ``paths`` that holds one."""
    for path in paths:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def battery_pct() -> float | None:
    """The charge of the first battery in ``/sys/class/power_supply`` (``BAT0`` usually), in
    percent; ``None`` without one."""
    try:
        names = [
            n for n in os.listdir(_POWER_SUPPLY) if n.startswith("BAT") or "battery" in n.lower()
        ]
    except OSError:
        return None
    if not names:
        return None
    root = _POWER_SUPPLY / min(names)
    now = _read_number(root / "energy_now", root / "charge_now")
    full = _read_number(root / "energy_full", root / "charge_full")
    if now is not None and full:
        return 100.0 * now / full
    capacity = _read_number(root / "capacity")
    return None if capacity is None else float(capacity)
