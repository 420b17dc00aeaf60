"""``continuum submit --fallback-agent``'s connect timeout (``cloud.api_client.connect_wait``):
one submission per process, so no round trip measured (RFC 6298's initial second), bounded by
the task's deadline when it may fail over; only the RTT-based timeout opens the breaker."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.api_client import connect_wait
from shared.autonomy import CONNECT_TIMEOUT_S, Failover

BASE: dict[str, Any] = {"id": "t1", "command": ["true"]}


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({}, CONNECT_TIMEOUT_S),  # no deadline: the initial second
        ({"deadline_s": 0.3}, 0.3),  # never past the deadline: the agent is its chance
        ({"deadline_s": 30}, CONNECT_TIMEOUT_S),  # a deadline beyond the second changes nothing
        ({"deadline_s": 0.3, "consistency": {"level": "strong"}}, CONNECT_TIMEOUT_S),
        ({"deadline_s": 0.3, "consistency": {"level": "eventual"}}, 0.3),
        ({"deadline_s": True}, CONNECT_TIMEOUT_S),  # not a number: the controller says why
    ],
)
def test_connect_timeout(extra: dict[str, Any], expect: float) -> None:
    wait = connect_wait(Failover(), {**BASE, **extra}, fallback=True)
    assert wait.timeout_s == pytest.approx(expect)
    assert wait.opens == (expect == CONNECT_TIMEOUT_S)  # a deadline give-up does not open it


def test_without_a_fallback_the_deadline_changes_nothing() -> None:
    wait = connect_wait(Failover(), {**BASE, "deadline_s": 0.3}, fallback=False)
    assert wait == (CONNECT_TIMEOUT_S, True)
