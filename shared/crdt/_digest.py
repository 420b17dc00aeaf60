"""Anti-entropy digests: a short summary per record, and what a peer lacks.

A summary is ``"<vector>|<dots>|<spec>|<hash>"``: the record's causal context
(its version vector digest ``"a:3,b:5"`` and its gap dots ``"c:7,c:9"``),
``s`` when it holds the spec (the spec's delta names no event) else empty, and
the first :data:`HASH_CHARS` hex digits of its :func:`content_hash`.

Soundness (the property anti-entropy needs): if the remote lacks anything we
hold, :func:`missing` returns our record. We skip a record only when

- the remote's summary equals ours (same context *and* same content hash: the
  same record), or
- the remote's context strictly contains ours and it holds the spec if we do.
  Contexts are exact (every record is the join of the deltas whose events its
  context names, plus the spec; see ``_task_record``), so the remote's record
  is then above ours.

Everything else (unknown task, unparsable summary, concurrent contexts, equal
contexts with different hashes) sends the full record; the join makes any
redundant send harmless. The hash guards "equal context ⇒ equal record"
against a broken writer (one that reused event counters after losing state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from shared.clocks import VersionVector
from shared.crdt._serialize import content_hash
from shared.crdt._task_record import Dot, TaskRecord, compact, covers
from shared.errors import ValidationError
from shared.ids import check_node_id

__all__ = [
    "HASH_CHARS",
    "Summary",
    "digest",
    "lacks",
    "missing",
    "parse_summary",
    "record_digest",
]

#: Hex digits of the content hash kept in a summary (48 bits).
HASH_CHARS = 12
#: Longest summary :func:`parse_summary` looks at (longer ones are unparsable).
MAX_SUMMARY_LEN = 16_384


def _context_part(rec: TaskRecord) -> str:
    dots = ",".join(f"{writer}:{counter}" for writer, counter in sorted(rec.dots))
    spec = "" if rec.spec is None else "s"
    return f"{rec.context.digest()}|{dots}|{spec}|"


def record_digest(rec: TaskRecord) -> str:
    """The summary of one record (see the module docstring for the format)."""
    return _context_part(rec) + content_hash(rec)[:HASH_CHARS]


def digest(records: Mapping[str, TaskRecord]) -> dict[str, str]:
    """Summaries of every record, keyed by task id (the ``Digest.entries`` body)."""
    return {task_id: record_digest(rec) for task_id, rec in records.items()}


class Summary(NamedTuple):
    """A parsed remote summary (compact context, spec presence, hash prefix)."""

    context: VersionVector
    dots: frozenset[Dot]
    has_spec: bool
    hash: str


def parse_summary(text: object) -> Summary | None:
    """A remote summary, or ``None`` when it is not one (untrusted input: never raises)."""
    if not isinstance(text, str) or len(text) > MAX_SUMMARY_LEN:
        return None
    parts = text.split("|")
    if len(parts) != 4 or parts[2] not in ("", "s"):
        return None
    vv_text, dots_text, spec_text, hash_text = parts
    try:
        vv = VersionVector.from_digest(vv_text)
    except ValidationError:
        return None
    dots: set[Dot] = set()
    for item in dots_text.split(",") if dots_text else ():
        writer, _, counter = item.partition(":")
        if check_node_id(writer) is not None or not counter.isdigit() or len(counter) > 18:
            return None
        if int(counter) < 1:
            return None
        dots.add((writer, int(counter)))
    vv, compact_dots = compact(vv, frozenset(dots))
    return Summary(vv, compact_dots, spec_text == "s", hash_text)


def lacks(rec: TaskRecord, theirs: object, ours: str | None = None) -> bool:
    """Whether the remote whose summary of this task is ``theirs`` lacks or may
    lack something of ``rec`` (``ours``: ``rec``'s summary when already known)."""
    if not isinstance(theirs, str):
        return True
    if ours is None:
        context = _context_part(rec)
        if not theirs.startswith(context):
            return not _remote_is_above(rec, theirs)
        ours = context + content_hash(rec)[:HASH_CHARS]
    return theirs != ours and not _remote_is_above(rec, theirs)


def _remote_is_above(rec: TaskRecord, theirs: str) -> bool:
    summary = parse_summary(theirs)
    if summary is None or (rec.spec is not None and not summary.has_spec):
        return False
    vv, dots = summary.context, summary.dots
    if vv == rec.context and dots == rec.dots:
        # Same events: above only by holding the spec we lack. Same events and
        # spec with another hash means a broken writer: trust neither side.
        return summary.has_spec and rec.spec is None
    return covers(vv, dots, rec.context, rec.dots)


def missing(records: Mapping[str, TaskRecord], entries: Mapping[str, str]) -> list[TaskRecord]:
    """Full records of ``records`` that the side which sent ``entries`` (its
    digest) lacks or may lack. Tasks only the remote knows are ignored: its own
    :func:`missing` on our digest sends them."""
    return [rec for task_id, rec in records.items() if lacks(rec, entries.get(task_id))]
