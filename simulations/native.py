"""The simulator's hot modules compiled with mypyc, used only while they match the sources.

Why: a ``pureedgesim-10k`` run is about a million tasks through a flat profile (no
function above 6 % of the time, issue 14): what is left to win is the interpreter's own
cost per attribute read, call and float operation. mypyc compiles the modules as they
are, from their type hints (classes become C structs, typed locals unboxed floats and
ints), for the same results (``tests/sim/test_sim_native.py`` runs both side by
side) and about a sixth fewer instructions on the ``adaptive`` mode (docs/simulator.md).

The contract:

- ``python -m simulations.build_native`` compiles ``COMPILED`` into
  ``simulations/sim/_native/``, with a manifest naming the digest of the sources it was
  built from (every ``.py`` of ``simulations/sim`` and ``shared``: mypyc reads the types
  of what a module imports). ``make install`` runs it; where it cannot (no C compiler, no mypyc),
  the simulator runs interpreted, same results, slower.
- ``attach`` (called by the package's ``__init__``) puts ``_native/`` first on the
  package's search path only when the manifest's digest (which includes the
  interpreter's tag) matches the sources now: an edited source is never shadowed by an
  older build (the run is interpreted, with one warning, until the next build).
- ``CONTINUUM_SIM_NATIVE=0`` runs interpreted whatever is built (the side-by-side test
  and bench use it).

Nothing here is imported by the compiled modules; the pure decisions in ``shared`` are
not compiled (the agent and controller run them interpreted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path

__all__ = ["COMPILED", "ENV", "MANIFEST", "NATIVE_DIR", "active", "attach", "built", "digest"]

log = logging.getLogger(__name__)

#: The simulator's modules on the per-task path (``scenario``, ``cli``, ``report``,
#: ``runner`` and ``realgap*`` stay interpreted: setup and output, and ``scenario`` reads
#: its dataclasses' annotations at run time).
COMPILED = (
    "agent",
    "controller",
    "failover",
    "inputs",
    "ledger",
    "loop",
    "metrics",
    "model",
    "network",
    "placer",
    "predicted",
    "ranks",
    "records",
    "rows",
    "scheduling",
    "stats",
    "timelines",
    "topology",
    "workload",
)
#: The simulator's package directory; its build goes to ``_native/`` inside it.
_SIM = Path(__file__).resolve().parent / "sim"
NATIVE_DIR = _SIM / "_native"
MANIFEST = "manifest.json"
ENV = "CONTINUUM_SIM_NATIVE"
_state = {"active": False}


def _sources() -> list[Path]:
    shared = _SIM.parent.parent / "shared"
    return sorted(_SIM.glob("*.py")) + sorted(shared.rglob("*.py"))


def digest() -> str:
    """SHA-256 over the names and bytes of the sources a build depends on, and the
    interpreter's tag (a build is for one Python)."""
    h = hashlib.sha256(sys.implementation.cache_tag.encode())
    root = _SIM.parent.parent
    for path in _sources():
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def built() -> bool | None:
    """Whether the build in ``NATIVE_DIR`` was made from the sources as they are now
    (``None``: there is no build, or no readable manifest)."""
    try:
        data = json.loads((NATIVE_DIR / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return isinstance(data, dict) and data.get("digest") == digest()


def attach(path: MutableSequence[str]) -> bool:
    """Put the compiled build first on the package's ``__path__`` when it matches the
    sources; returns whether it did. A missing build is silent; a stale one warns once."""
    _state["active"] = False
    if os.environ.get(ENV, "1") == "0":
        return False
    matches = built()
    if matches is None:
        return False
    if not matches:
        log.warning(
            "the simulator runs interpreted: its compiled build (%s) is older than the "
            "sources; `make install` or `python -m simulations.build_native` rebuilds it",
            NATIVE_DIR,
        )
        return False
    path.insert(0, str(NATIVE_DIR))
    _state["active"] = True
    return True


def active() -> bool:
    """Whether this process runs the compiled modules (for reports and benches)."""
    return _state["active"]
