"""The decoder's fast paths accept exactly what the checked paths accept, with the same
values, and reject the rest with the same problems: a speed-up must never widen (or
narrow) what the controller lets in from a node."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol_fuzz import envelopes, json_values, node_ids, task_ids

from shared.errors import RemoteProtocolError
from shared.protocol import BODY_TYPES, Envelope, encode
from shared.protocol._codec import _checked_envelope, _envelope

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(read: Any, doc: dict[str, Any], type_: str) -> Envelope | tuple[str, str]:
    try:
        return read(doc, type_, BODY_TYPES[type_])
    except RemoteProtocolError as exc:
        return exc.reason, str(exc)


stamps = st.sampled_from(
    ["18bcfe56800.0.n1", "18bcfe56800.0", "18bcfe56800", "18bcfe56800.0.n2", "018b.0.n1", "x"]
)


@st.composite
def headers(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid message's document with its header fields (and body) replaced at random
    by near misses and arbitrary JSON."""
    env = draw(envelopes())
    doc: dict[str, Any] = json.loads(encode(env))
    choices: dict[str, st.SearchStrategy[Any]] = {
        "id": task_ids | st.text(max_size=300) | json_values,
        "from": st.just("n1") | node_ids | st.text(max_size=70) | json_values,
        "hlc": stamps | st.text(max_size=20) | json_values,
        "seq": st.integers(-2, 2**64) | st.floats() | st.booleans() | json_values,
        "body": st.just(doc["body"]) | json_values,
    }
    for key in draw(st.sets(st.sampled_from(sorted(choices)))):
        if draw(st.booleans()):
            doc[key] = draw(choices[key])
        else:
            doc.pop(key, None)
    return doc, env.type


@FUZZ
@given(headers())
def test_envelope_fast_path_agrees_with_the_checked_path(case: tuple[dict[str, Any], str]) -> None:
    doc, type_ = case
    assert _outcome(_envelope, doc, type_) == _outcome(_checked_envelope, doc, type_)
