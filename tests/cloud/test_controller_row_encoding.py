"""The controller's stored task rows: the record text is its canonical JSON and the
hash ``shared.crdt.content_hash``, byte for byte, although ``TaskTable.row`` splices
the spec's kept encoding (``TaskMeta.spec_json``) instead of re-encoding it."""

from __future__ import annotations

import hashlib
import json

from cloud_harness import Harness

from cloud.tasks import TaskMeta
from shared.crdt import AttemptStatus, TaskRecord, canonical_bytes, canonical_json, content_hash


def test_stored_rows_are_the_canonical_encoding_at_every_change(h: Harness) -> None:
    n1 = h.node("n1")
    c = h.controller
    c.submit_task({"id": "k", "command": ["echo", "é\u2028"], "env": {"Z": "\ud800"}})
    n1.expect("place", lambda env: env.body.task_id == "k")
    stored: list[tuple[str, str]] = []

    def row() -> tuple[str, str]:
        return c.store.conn.execute(
            "SELECT record, content_hash FROM tasks WHERE task_id = 'k'"
        ).fetchone()

    stored.append(row())
    dot = n1.start("k", 1)
    h.pump_until(lambda: c.get_task("k")["status"] == "running")
    stored.append(row())
    n1.finish("k", dot, AttemptStatus.SUCCEEDED)
    h.pump_until(lambda: c.get_task("k")["status"] == "succeeded")
    stored.append(row())
    for text, digest in stored:
        rec = TaskRecord.from_dict(json.loads(text))
        assert text.encode("ascii") == canonical_bytes(rec)
        assert digest == content_hash(rec) == hashlib.sha256(text.encode("ascii")).hexdigest()
    assert stored[-1][0].encode("ascii") == canonical_bytes(c.tasks.records["k"])


def test_the_spec_encoding_is_kept_per_spec_object() -> None:
    meta = TaskMeta(submitted_ms=0)
    a = {"id": "t", "command": ["a"]}
    assert meta.spec_json(None) is None
    first = meta.spec_json(a)
    assert first == canonical_json(a)
    assert meta.spec_json(a) is first  # the same object: not encoded again
    b = {"id": "t", "command": ["b"]}
    assert meta.spec_json(b) == canonical_json(b)  # another object: encoded anew
