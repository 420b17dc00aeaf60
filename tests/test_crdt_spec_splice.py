"""``canonical_bytes(rec, spec_json)``: the spec's kept encoding spliced into the record's
canonical JSON gives the very bytes (hence the content hash) of a full encoding."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from test_crdt_wire import JSON, records

from shared.crdt import TaskRecord, _serialize, canonical_bytes, canonical_json, content_hash


@settings(max_examples=400, deadline=None)
@given(records())
def test_a_spliced_spec_gives_the_canonical_bytes(rec: TaskRecord) -> None:
    full = canonical_bytes(rec)
    spliced = canonical_bytes(rec, None if rec.spec is None else canonical_json(rec.spec))
    assert spliced == full
    assert hashlib.sha256(spliced).hexdigest() == content_hash(rec)


@settings(max_examples=200, deadline=None)
@given(records(), JSON)
def test_any_spec_value_splices_to_the_canonical_bytes(rec: TaskRecord, extra: object) -> None:
    """Specs with arbitrary JSON inside (unicode escapes, nesting) splice the same."""
    rec = rec._replace(spec={"id": rec.task_id, "command": ["true"], "zz": extra, "": [extra]})
    assert canonical_bytes(rec, canonical_json(rec.spec)) == canonical_bytes(rec)


def test_a_record_without_a_spec_ignores_a_given_encoding() -> None:
    rec = TaskRecord("t1")
    assert canonical_bytes(rec, '{"id":"t1"}') == canonical_bytes(rec) == b'{"id":"t1"}'


def test_a_key_sorting_after_the_spec_gets_the_full_encoding(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Were the dict form to gain a key after ``"spec"``, the splice would misplace the
    spec: ``canonical_bytes`` then encodes the whole record instead."""
    to_dict = _serialize.record_to_dict
    monkeypatch.setattr(_serialize, "record_to_dict", lambda rec: {**to_dict(rec), "zz": 1})
    rec = TaskRecord("t1", {"id": "t1", "command": ["true"]})
    expected = canonical_json({"id": "t1", "spec": rec.spec, "zz": 1}).encode("ascii")
    assert canonical_bytes(rec, canonical_json(rec.spec)) == expected
