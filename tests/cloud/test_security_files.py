"""The controller's secrets at rest (issue 11, finding 6): its store holds every task's
spec with its ``env`` secrets, so the state directory is 0700 and the database, its WAL
and shared-memory files 0600, also when an older version left them readable."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path
from typing import Any

from cloud_harness import make_config

from cloud.server import ControllerProcess


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_and_store_are_private(tmp_path: Path, mosquitto: Any) -> None:
    cfg = make_config(tmp_path, broker={"host": "127.0.0.1", "port": mosquitto.port})
    cfg.state_dir.mkdir(mode=0o755)
    cfg.state_dir.chmod(0o755)
    cfg.db_path.touch(mode=0o644)  # as the issue found them
    cfg.db_path.chmod(0o644)

    async def main() -> None:
        proc = ControllerProcess(cfg)
        run = asyncio.create_task(proc.run())
        deadline = time.monotonic() + 30
        while not cfg.ready_path.exists():
            assert not run.done() and time.monotonic() < deadline, "controller did not start"
            await asyncio.sleep(0.05)
        proc.controller.submit_task({"id": "t-secret", "command": ["true"], "env": {"K": "v"}})
        try:
            # While it runs: the database and the WAL that holds the new spec.
            assert _mode(cfg.state_dir) == 0o700
            stored = {p.name for p in cfg.state_dir.iterdir() if p.name.startswith("controller.db")}
            assert {"controller.db", "controller.db-wal"} <= stored
            assert {name: _mode(cfg.state_dir / name) for name in stored} == dict.fromkeys(
                stored, 0o600
            )
        finally:
            proc.stopping.set()
            await run

    asyncio.run(main())
