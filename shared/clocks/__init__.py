"""Clocks for replicated task state: hybrid logical clocks and version vectors.

An HLC :class:`Timestamp` stamps an event (readable, monotone, close to wall
time) and gives a total order used to break ties deterministically. A
:class:`VersionVector` records which events of which writer a replica has seen;
it gives causality (``compare``) and the compact digests used by anti-entropy.
Both are pure values: the caller passes physical time in.
"""

from shared.clocks._hlc import HybridClock, Timestamp
from shared.clocks._version_vector import Ordering, VersionVector

__all__ = ["HybridClock", "Ordering", "Timestamp", "VersionVector"]
