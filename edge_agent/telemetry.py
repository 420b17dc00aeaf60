"""System metrics from psutil: capacity for ``hello``, samples for ``telemetry``.

Averages over 1, 5 and 15 minutes are exponentially decayed like the kernel's load average, so
they need no sample history (constant memory on a small device).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = ["Sampler", "capacity"]

_WINDOWS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}


def _battery() -> float | None:
    try:
        battery = psutil.sensors_battery()
    except (AttributeError, OSError, RuntimeError):
        return None
    return None if battery is None else float(battery.percent)


def capacity(state_dir: Path) -> dict[str, Any]:
    """What the node offers, for registration."""
    return {
        "cpus": psutil.cpu_count() or 1,
        "memory_mb": psutil.virtual_memory().total / 2**20,
        "disk_mb": psutil.disk_usage(str(state_dir)).total / 2**20,
        "battery_pct": _battery(),
    }


@dataclass
class Sampler:
    state_dir: Path
    _avg: dict[str, dict[str, float]] = field(default_factory=dict)
    _last: float | None = None

    def __post_init__(self) -> None:
        psutil.cpu_percent(None)  # prime: the first call always returns 0.0

    def sample(self, now: float) -> dict[str, Any]:
        mem = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.state_dir))
        load = os.getloadavg()
        values = {
            "cpus": psutil.cpu_count() or 1,
            "cpu_pct": psutil.cpu_percent(None),
            "memory_pct": mem.percent,
            "memory_free_mb": mem.available / 2**20,
            "disk_free_mb": disk.free / 2**20,
            "load1": load[0],
            "load5": load[1],
            "load15": load[2],
            "battery_pct": _battery(),
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
        return values
