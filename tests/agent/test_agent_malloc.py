"""`edge-agent run` as a program re-execs itself once with MALLOC_ARENA_MAX set (glibc
reads it at start: one arena saves the idle agent ~0.4 MB), and never when the operator
set it or when main() is called with arguments (in process, as these tests do)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_agent.cli import MALLOC_ARENAS, main

PROGRAM = """
import os, sys
print("env", os.environ.get("MALLOC_ARENA_MAX"), file=sys.stderr, flush=True)
sys.argv = ["edge-agent", "run", "--config", "/nonexistent/agent.toml"]
from edge_agent.cli import main
sys.exit(main())
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_agent_program_runs_with_one_malloc_arena() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = _run(env)
    lines = done.stderr.splitlines()
    assert lines[:2] == ["env None", f"env {MALLOC_ARENAS}"]  # re-exec'd once, then ran
    assert done.returncode == 2 and "No such file" in done.stderr


def test_an_operators_setting_is_kept() -> None:
    done = _run({**os.environ, "MALLOC_ARENA_MAX": "4"})
    assert done.stderr.splitlines()[0] == "env 4"
    assert "env 1" not in done.stderr


def test_in_process_main_never_execs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert main(["run", "--config", "/nonexistent/agent.toml"]) == 2
    assert "MALLOC_ARENA_MAX" not in os.environ
