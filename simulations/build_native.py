"""``python -m simulations.build_native``: compile the simulator's per-task modules
with mypyc into ``simulations/sim/_native/`` (``simulations.native`` says when a build
is used). ``make install`` runs it with ``--optional``: where it cannot build (no C
compiler or Python headers), the simulator runs interpreted, same results, slower."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from simulations import native

__all__ = ["build", "main"]

#: The group library's module name (mypyc's runtime shared by the compiled modules).
_GROUP = "simulations.sim.native"
#: mypy's options: errors in what the modules import (``shared``, numpy) are not the
#: build's to fix; the compiled modules themselves must type-check.
_MYPY = ["--ignore-missing-imports", "--follow-imports=silent"]


def build(*, jobs: int | None = None) -> Path:
    """Compile ``native.COMPILED`` into ``native.NATIVE_DIR``, replaced whole and its
    manifest written last (a failed build leaves none: the simulator interpreted).
    Raises ``RuntimeError`` with the compiler's output when the build fails."""
    try:
        import mypy.version
        import mypyc.build  # noqa: F401  (the child process uses it)
    except ImportError as exc:
        raise RuntimeError(f"mypyc is not installed ({exc}); pip install mypy") from exc
    here = native.NATIVE_DIR.parent
    source_digest = native.digest()
    shutil.rmtree(native.NATIVE_DIR, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="continuum-native-") as tmp:
        paths = [str(here / f"{m}.py") for m in native.COMPILED]
        # setup() reads the current directory's pyproject.toml: run it from the temp dir
        script = (
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            "setup(name='continuum-sim-native', ext_modules=mypycify("
            f"{[*_MYPY, *paths]!r}, group_name={_GROUP!r}, "
            f"target_dir={str(Path(tmp) / 'c')!r}))\n"
        )
        args = [sys.executable, "-c", script, "build_ext"]
        args += ["--build-lib", str(Path(tmp) / "lib"), "--build-temp", str(Path(tmp) / "obj")]
        args += ["--parallel", str(jobs or os.cpu_count() or 1)]
        env = {**os.environ, "MYPYPATH": str(here.parent.parent)}
        done = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mypyc build failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        native.NATIVE_DIR.mkdir()
        for lib in (Path(tmp) / "lib" / "simulations" / "sim").iterdir():
            shutil.copy2(lib, native.NATIVE_DIR / lib.name)
    manifest = {
        "digest": source_digest,
        "python": sys.implementation.cache_tag,
        "mypy": mypy.version.__version__,
        "modules": list(native.COMPILED),
    }
    (native.NATIVE_DIR / native.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return native.NATIVE_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.build_native",
        description="Compile the simulator's per-task modules with mypyc into "
        "simulations/sim/_native/ (same results, about a sixth fewer instructions). The simulator "
        "uses the build only while it matches the sources; CONTINUUM_SIM_NATIVE=0 runs "
        "it interpreted anyway.",
    )
    parser.add_argument("--jobs", type=int, default=None, help="C compiler jobs (default: CPUs)")
    parser.add_argument(
        "--optional",
        action="store_true",
        help="on failure print why and exit 0 (the simulator then runs interpreted)",
    )
    args = parser.parse_args(argv)
    try:
        where = build(jobs=args.jobs)
    except RuntimeError as exc:
        print(f"the simulator stays interpreted: {exc}", file=sys.stderr)
        return 0 if args.optional else 1
    print(f"compiled {len(native.COMPILED)} simulator modules into {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
