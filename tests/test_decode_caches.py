"""The decode caches (``shared.clocks`` stamps, ``shared.ids`` node ids) key on exact
``str`` texts only: a string subclass lying about its hash and equality cannot pull a
remembered answer for another text, and a failure is never remembered."""

from __future__ import annotations

import pytest

from shared.clocks import Timestamp
from shared.ids import is_node_id

VALID_STAMP = "18bcfe56800.0.n1"


def _liar(like: str) -> type[str]:
    class Liar(str):
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash(like)

    return Liar


def test_a_lying_string_gets_no_remembered_stamp() -> None:
    assert Timestamp.decode(VALID_STAMP) == Timestamp(0x18BCFE56800, 0, "n1")  # remembered
    with pytest.raises(ValueError):
        Timestamp.decode(_liar(VALID_STAMP)("zz"))
    assert Timestamp.decode(_liar(VALID_STAMP)(VALID_STAMP)) == Timestamp.decode(VALID_STAMP)


def test_a_failed_stamp_is_not_remembered() -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            Timestamp.decode("018bc.0.n1")  # leading zero: not canonical


def test_a_lying_string_gets_no_remembered_node_id() -> None:
    assert is_node_id("n1")
    assert not is_node_id(_liar("n1")("no/slash"))
    assert not is_node_id("no/slash")
    assert is_node_id(_liar("n1")("n1"))
