"""Continuum's pure core.

Everything under ``shared`` is deterministic and free of I/O: no sockets, threads,
asyncio, SQLite, clock reads or global randomness. Time and randomness are passed
in by the caller. The agent, the controller, the testbed and the simulator all
drive this same code, which is what makes the simulator's answers worth anything.

Importing ``shared`` itself pulls in nothing heavy; ``shared.placement`` is the
only subpackage that needs numpy, and an edge agent never imports it.
"""

__version__ = "0.1.0"

#: Major version of the wire protocol (envelope field ``v``).
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "__version__"]
