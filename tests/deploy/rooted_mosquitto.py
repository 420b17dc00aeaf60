#!/usr/bin/env python3
"""Run the real Mosquitto on the configuration installed under a test root.

``rooted_mosquitto.py ROOT`` copies ``ROOT/etc/mosquitto/mosquitto.conf`` and every
``conf.d/*.conf`` with each absolute ``/etc/``, ``/var/``, ``/run/`` path moved under ROOT
(nothing else changes: the shipped snippet is what Mosquitto parses), then replaces itself
with ``mosquitto -c`` on the copy, so SIGHUP (``systemctl reload``) reaches the broker. It is
the ``ExecStart`` of the test root's ``mosquitto.service``; started as root, Mosquitto drops
to the ``mosquitto`` user as on a real host, so files it cannot read fail as they would there.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_ABSOLUTE = re.compile(r"(?<=\s)/(etc|var|run)/")


def rooted(text: str, root: Path) -> str:
    return _ABSOLUTE.sub(lambda m: f"{root}/{m.group(1)}/", text)


def main(root: Path) -> None:
    out = root / "run" / "mosquitto-rooted"
    (out / "conf.d").mkdir(parents=True, exist_ok=True)
    for snippet in sorted((root / "etc/mosquitto/conf.d").glob("*.conf")):
        (out / "conf.d" / snippet.name).write_text(rooted(snippet.read_text(), root))
    main_conf = rooted((root / "etc/mosquitto/mosquitto.conf").read_text(), root)
    main_conf = main_conf.replace(
        f"include_dir {root}/etc/mosquitto/conf.d", f"include_dir {out}/conf.d"
    )
    (out / "mosquitto.conf").write_text(main_conf)
    os.execv("/usr/sbin/mosquitto", ["mosquitto", "-c", str(out / "mosquitto.conf")])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
