"""``live.json``: the output so far of a running attempt, in its run directory.

Written by the task supervisor (``supervisor.py``, a ``python -S`` script that imports this
module as it imports ``_tasktree``: standard library plus ``_safefs``) at most every
:data:`LIVE_S` while output arrives; read by the agent to answer the controller's
``log_request`` (``logs_serve.py``, for ``continuum logs`` of a running task). The file
holds ``stdout`` and ``stderr`` (the current tails, their bytes as latin-1 text so that byte
offsets stay exact) and ``stdout_bytes``, ``stderr_bytes`` (all each stream wrote). It is not
synced: it is worthless after a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import _safefs  # the supervisor's directory is sys.path[0]

__all__ = ["LIVE", "LIVE_S", "write_live"]

LIVE = "live.json"
#: Seconds between two writes of one attempt's file (the lag of live output).
LIVE_S = 1.0


def write_live(run_dir: str, tails: Mapping[str, bytes], written: Mapping[str, int]) -> None:
    """Replace the attempt's ``live.json``; a failure costs the live view, never the task."""
    live: dict[str, Any] = {name: bytes(tail).decode("latin-1") for name, tail in tails.items()}
    live.update({f"{name}_bytes": count for name, count in written.items()})
    with contextlib.suppress(OSError):
        run_fd = _safefs.open_dir(run_dir)
        try:
            _safefs.write_file_at(run_fd, LIVE, json.dumps(live).encode(), sync=False)
        finally:
            os.close(run_fd)
