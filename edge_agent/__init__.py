"""The edge agent: runs placed tasks, keeps working without the uplink, syncs over MQTT.

Modules: ``config`` (TOML), ``journal`` (SQLite WAL), ``executor`` + ``supervisor`` (processes and
fencing), ``transport`` (paho-mqtt), ``agent`` (the core loop), ``localapi``/``api`` (loopback
HTTP), ``telemetry`` (``/proc``, ``/sys``), ``discovery`` (zeroconf), ``cli`` (``edge-agent``).
Imports stay lazy here: ``edge-agent init`` must not load MQTT or SQLite.
"""

__version__ = "0.1.0"
