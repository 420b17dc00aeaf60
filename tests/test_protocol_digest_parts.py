"""Digest parts: a large anti-entropy digest travels in messages that each speak for a
range of task ids, so a receiver never takes ids of another part as lacking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import RemoteProtocolError
from shared.protocol import (
    MAX_MESSAGE_BYTES,
    Digest,
    Envelope,
    decode_from,
    digest_parts,
    encode,
    topic,
)

task_ids = st.from_regex(r"[a-z0-9][a-z0-9:._-]{0,20}", fullmatch=True)
digests = st.dictionaries(task_ids, st.text("0123456789abcdef,:|", max_size=40), max_size=60)


def _envelope(body: Digest) -> Envelope:
    return Envelope(type="digest", id="m1", sender="edge-1", hlc="1.0.edge-1", body=body)


@settings(max_examples=150, deadline=None)
@given(digests, st.integers(20, 400), task_ids)
def test_parts_cover_every_id_exactly_once_and_keep_every_entry(
    entries: dict[str, str], budget: int, probe: str
) -> None:
    parts = digest_parts(entries, budget=budget)
    merged: dict[str, str] = {}
    for part in parts:
        assert all(part.covers(t) for t in part.entries)
        merged.update(part.entries)
    assert merged == entries
    for task_id in [*entries, probe]:
        assert sum(part.covers(task_id) for part in parts) == 1
    assert parts[0].after is None and parts[-1].upto is None
    for left, right in itertools.pairwise(parts):
        assert left.upto == right.after


@settings(max_examples=100, deadline=None)
@given(digests, st.integers(20, 400), task_ids, task_ids)
def test_parts_of_a_bounded_range_stay_inside_it(
    entries: dict[str, str], budget: int, a: str, b: str
) -> None:
    after, upto = (a, b) if a < b else (b, a)
    if after == upto:
        return
    inside = {t: v for t, v in entries.items() if after < t <= upto}
    parts = digest_parts(inside, after=after, upto=upto, budget=budget)
    assert parts[0].after == after and parts[-1].upto == upto
    for task_id in [*entries, a, b]:
        expected = 1 if after < task_id <= upto else 0
        assert sum(part.covers(task_id) for part in parts) == expected


def test_entries_outside_the_range_are_a_caller_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        digest_parts({"a": "x", "z": "y"}, after="b")


def test_an_empty_digest_is_one_part_that_covers_everything() -> None:
    (part,) = digest_parts({})
    assert part == Digest(entries={})
    assert part.covers("anything")


def test_a_big_digest_splits_under_the_message_limit_and_each_part_round_trips() -> None:
    entries = {f"task-{i:06d}": "edge-1:3,cloud:2||s|0123456789ab" for i in range(12_000)}
    parts = digest_parts(entries)
    assert len(parts) > 1
    for part in parts:
        payload = encode(_envelope(part))
        assert len(payload) <= MAX_MESSAGE_BYTES
        assert decode_from(topic("edge-1", "up"), payload).body == part


def test_a_part_whose_entries_leave_its_range_is_rejected() -> None:
    # Hand-edited: ``encode`` refuses to write such a part.
    payload = encode(_envelope(Digest(entries={"m": "x"}))).replace(
        b'"entries":{"m":"x"}', b'"after":"n","entries":{"m":"x"}'
    )
    with pytest.raises(RemoteProtocolError) as exc:
        decode_from(topic("edge-1", "up"), payload)
    assert exc.value.reason == "invalid"
