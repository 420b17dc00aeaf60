"""The simulator compiled with mypyc (``simulations.native``) gives the results of the
interpreted one, and is used only while it matches the sources.

The rest of the suite imports the simulator interpreted (``tests/conftest.py``: its tests
replace methods, which compiled classes do not allow); here the compiled build runs in a
child process beside an interpreted one, on ``benchmarks/sim_identity.py``'s quick cases
(every shipped and held-out scenario under its policies and the five modes, and the
simulated twin of every testbed scenario), and every fingerprint must be equal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations import native

ROOT = Path(__file__).resolve().parents[2]


def _require_build() -> None:
    if native.built():
        return
    reason = (
        "no compiled simulator matching these sources: `make install` builds it "
        "(python -m simulations.build_native)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI builds the simulator: {reason}")
    pytest.skip(reason)


def _record(out: Path, *, compiled: bool) -> subprocess.Popen[str]:
    code = (
        "import sys, simulations.sim\n"
        "from simulations import native\n"
        f"assert native.active() is {compiled}, 'wrong build'\n"
        "from sim_identity import main\n"
        f"sys.exit(main(['record', '--quick', {str(out)!r}]))\n"
    )
    env = {
        **os.environ,
        native.ENV: "1" if compiled else "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(600)
def test_compiled_and_interpreted_runs_are_identical(tmp_path: Path) -> None:
    _require_build()
    outs = {compiled: tmp_path / f"{compiled}.json" for compiled in (True, False)}
    children = [_record(out, compiled=compiled) for compiled, out in outs.items()]
    for child in children:
        _, err = child.communicate(timeout=560)
        assert child.returncode == 0, err[-3000:]
    compiled, interpreted = (json.loads(outs[c].read_text()) for c in (True, False))
    assert len(compiled) > 50
    differ = [key for key in sorted(interpreted) if compiled.get(key) != interpreted[key]]
    assert not differ, differ
    assert compiled.keys() == interpreted.keys()


def _fake_build(where: Path, digest: str) -> None:
    where.mkdir()
    (where / native.MANIFEST).write_text(json.dumps({"digest": digest}))


def test_a_build_is_used_only_while_it_matches_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path / "none")
    path: list[str] = ["pkg"]
    assert native.attach(path) is False and path == ["pkg"]  # none built: silent
    assert not caplog.records and not native.active()

    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path / "stale")
    _fake_build(tmp_path / "stale", "0" * 64)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.attach(path) is False
    assert path == ["pkg"] and "older than the sources" in caplog.text

    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path / "fresh")
    _fake_build(tmp_path / "fresh", native.digest())
    assert native.attach(path) is True
    assert path == [str(tmp_path / "fresh"), "pkg"] and native.active()

    monkeypatch.setenv(native.ENV, "0")  # asked to run interpreted
    path = ["pkg"]
    assert native.attach(path) is False and path == ["pkg"] and not native.active()


def test_the_digest_follows_every_source_the_build_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the tree: an edit to a simulator module or to ``shared`` changes the
    digest (mypyc reads the types of what a module imports)."""
    copy = tmp_path / "tree"
    for part in ("simulations/sim", "shared"):
        for src in (ROOT / part).rglob("*.py"):
            dst = copy / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    monkeypatch.setattr(native, "_SIM", copy / "simulations" / "sim")
    before = native.digest()
    assert native.digest() == before
    for edited in (copy / "simulations/sim/model.py", copy / "shared/placement/_predict.py"):
        edited.write_text(edited.read_text() + "\n# edited\n")
        after = native.digest()
        assert after != before
        before = after
