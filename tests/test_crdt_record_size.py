"""A full task record fits one protocol message at every bound: the controller sends it to
the node a task is placed on and in anti-entropy, and one over ``MAX_MESSAGE_BYTES`` could
never be sent (a task re-placed after many failures with long output reached its new node
without its history, and every digest asked for it again). The tails an attempt carries
shrink with the retry budget and the spec's size (``shared.crdt.log_limit``)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.clocks import Timestamp
from shared.crdt import (
    MAX_LOG_TAIL,
    AttemptLog,
    AttemptStatus,
    TaskRecord,
    canonical_json,
    log_limit,
    merge,
    new_record,
    place,
    set_status,
    start_attempt,
)
from shared.errors import ValidationError
from shared.model import MAX_SPEC_BYTES, parse_task_spec
from shared.model._task import MAX_ATTEMPTS
from shared.protocol import MAX_MESSAGE_BYTES, Deltas, Envelope, decode, encode

LONG = "\x01" * MAX_LOG_TAIL  # each character costs 6 on the wire: the worst tail
NODE = "n" * 64  # the longest node ids


def spec_of(max_attempts: int, big: bool) -> dict[str, Any]:
    """A valid spec: small, or grown with arguments to exactly ``MAX_SPEC_BYTES``."""
    raw: dict[str, Any] = {"id": "t" * 128, "command": ["echo"], "retry": {"max_attempts": 10}}
    while big:  # max_attempts has as many digits as 100 but lets the spec grow
        room = MAX_SPEC_BYTES - len(canonical_json(parse_task_spec(raw).to_dict()))
        if room < 5:
            break
        raw["command"].append("x" * min(4000, room - 4))  # quotes, a comma, a digit
    raw["retry"]["max_attempts"] = max_attempts
    spec = parse_task_spec(raw).to_dict()
    assert not big or MAX_SPEC_BYTES - 5 <= len(canonical_json(spec)) <= MAX_SPEC_BYTES
    return spec


def full_record(spec: dict[str, Any], attempts: int) -> TaskRecord:
    """Every attempt on its own node (a context entry each), every one failed with two
    worst tails and the longest reason, the last one succeeded with a 64 KiB result."""
    task_id = spec["id"]
    hlc = Timestamp(2**47, 2**16 - 1, "cloud")
    rec = new_record(task_id, spec, writer="cloud", hlc=hlc)
    for i in range(attempts):
        node = f"{i:03d}" + NODE[3:]
        rec = merge(
            rec,
            place(
                rec, epoch=i + 1, node=node, level="causal", lease_s=30.0, writer="cloud", hlc=hlc
            ),
        )
        dot, started = start_attempt(rec, node=node, epoch=i + 1, writer=node, hlc=hlc)
        rec = merge(rec, started)
        last = i == attempts - 1
        rec = merge(
            rec,
            set_status(
                rec,
                dot,
                AttemptStatus.SUCCEEDED if last else AttemptStatus.FAILED,
                writer=node,
                hlc=Timestamp(2**47, 2**16 - 1, node),
                exit_code=0 if last else 2**31,
                result="y" * (64 * 1024 - 2) if last else None,
                reason=None if last else "r" * 1000,
                log=AttemptLog(LONG, LONG, 2**40, 2**40),
            ),
        )
    return rec


@pytest.mark.parametrize("big", [False, True], ids=["small spec", "spec at its bound"])
@pytest.mark.parametrize("attempts", [1, 3, 10, 40, MAX_ATTEMPTS])
def test_a_full_record_at_every_bound_fits_one_message(attempts: int, big: bool) -> None:
    if big and attempts > 40:  # the largest spec allows 40 (the next test)
        return
    rec = full_record(spec_of(attempts, big), attempts)
    env = Envelope(
        type="deltas",
        id="f" * 16,
        sender="cloud",
        hlc=Timestamp(2**47, 1, "cloud").encode(),
        body=Deltas(records=(rec,)),
    )
    payload = encode(env)  # raises over the bound
    assert len(payload) <= MAX_MESSAGE_BYTES
    (back,) = decode(payload).body.records
    assert back == rec


def test_a_spec_whose_record_could_not_fit_is_refused_with_the_way_out() -> None:
    """100 attempts of a spec at its bound: each attempt's own fields (a reason may be
    1,000 characters) leave its record over the bound even with no output at all."""
    with pytest.raises(ValidationError, match="at most 40 for this spec"):
        spec_of(MAX_ATTEMPTS, True)
    assert spec_of(40, True)["retry"]["max_attempts"] == 40


def test_tails_shrink_with_the_retry_budget_and_the_spec() -> None:
    small = spec_of(3, False)
    assert log_limit(small, 200) == MAX_LOG_TAIL  # the common task keeps its 16 KiB
    assert log_limit(spec_of(10, False), 200) < MAX_LOG_TAIL
    assert 0 < log_limit(spec_of(MAX_ATTEMPTS, False), 200) < log_limit(spec_of(10, False), 200)
    assert log_limit(small) < log_limit(small, 200)  # the largest spec leaves less
    # what a writer sends is cut, the byte counts kept
    rec = full_record(spec_of(10, False), 1)
    (attempt,) = rec.attempts.values()
    assert attempt.log is not None
    limit = log_limit(rec.spec, len(canonical_json(rec.spec)))
    assert limit - 6 < len(attempt.log.stdout) * 6 <= limit < MAX_LOG_TAIL
    assert attempt.log.stdout_bytes == 2**40


def test_the_bounds_are_the_protocols_and_the_models() -> None:
    """``shared.crdt`` sits below both (it cannot import them): its copies must agree."""
    from shared.crdt import _task_record

    assert _task_record._RECORD_BYTES == MAX_MESSAGE_BYTES
    assert _task_record._SPEC_ROOM == MAX_SPEC_BYTES
