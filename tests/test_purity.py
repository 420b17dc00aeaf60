"""The sans-IO rule, enforced: ``shared/`` imports no I/O module and reads no clock,
and the agent and the controller never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_SHARED = {
    "asyncio",
    "socket",
    "sqlite3",
    "sqlite_utils",
    "threading",
    "subprocess",
    "time",
    "random",
    "paho",
    "aiohttp",
    "zeroconf",
    "psutil",
    "selectors",
    "multiprocessing",
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_shared_is_pure() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "shared").rglob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN_IN_SHARED
    ]
    assert offenders == []


def test_agent_and_controller_meet_only_through_shared() -> None:
    offenders = []
    for package, other in (("edge_agent", "cloud"), ("cloud", "edge_agent")):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, name in _imports(path):
                if name.split(".")[0] == other:
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offenders == []


def test_numpy_stays_in_placement() -> None:
    """docs/architecture.md: numpy only in ``shared/placement`` (and what builds on it).
    The agent runs with numpy blocked (edge_agent/cli.py: its memory budget), so the agent
    and every ``shared`` package it uses must import without it: checked in a fresh
    interpreter with numpy blocked the same way."""
    probe = (
        "import sys\n"
        "sys.modules['numpy'] = sys.modules['pandas'] = None\n"
        "import edge_agent.agent, shared.decisions, shared.consistency, shared.protocol\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
