"""The two event loops behind one interface: same order, same results."""

from __future__ import annotations

import pytest

from simulations.sim.loop import HeapLoop, SimPyLoop, make_loop


@pytest.mark.parametrize("factory", [HeapLoop, SimPyLoop])
def test_events_run_in_time_then_scheduling_order(factory: type) -> None:
    loop = factory()
    seen: list[tuple[float, str]] = []

    def note(tag: str) -> None:
        seen.append((loop.now, tag))
        if tag == "a":
            loop.after(0.5, note, "c")  # scheduled from inside a callback
            loop.at(1.0, note, "b2")  # same time as "b": after it (FIFO on ties)

    loop.at(2.0, note, "d")
    loop.at(1.0, note, "b")
    loop.at(0.5, note, "a")
    loop.at(9.0, note, "late")
    loop.run(5.0)
    assert seen == [(0.5, "a"), (1.0, "b"), (1.0, "c"), (1.0, "b2"), (2.0, "d")]
    assert loop.events == 5
    assert loop.now == pytest.approx(5.0)


def test_an_event_at_the_horizon_runs() -> None:
    for name in ("heap", "simpy"):
        loop = make_loop(name)
        hits: list[float] = []
        loop.at(3.0, hits.append, 3.0)
        loop.run(3.0)
        assert hits == [3.0], name


def test_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event loop"):
        make_loop("nope")


@pytest.mark.parametrize("factory", [HeapLoop, SimPyLoop])
def test_an_event_runs_at_exactly_its_time(factory: type) -> None:
    """``at(when)`` fires at ``when`` itself on both loops. From ``now`` = 0.1 no
    delay ``d`` gives ``0.1 + d == 0.42232750095416866`` in floats (a rounding tie), so
    a SimPy timeout of ``when - now`` ran one ulp late and could reorder events."""
    loop = factory()
    when = 0.42232750095416866
    seen: list[float] = []

    def later(_: object) -> None:
        seen.append(loop.now)

    def first(_: object) -> None:
        loop.at(when, later)

    loop.at(0.1, first)
    loop.run(1.0)
    assert seen == [when]
