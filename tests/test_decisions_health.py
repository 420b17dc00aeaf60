"""System health from the nodes' links (shared.decisions.assess_health)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from shared.decisions import LinkSample, assess_health
from shared.health import SystemHealth, system_health
from shared.vocab import LinkState as L


def test_no_nodes_is_an_emergency() -> None:
    r = assess_health([])
    assert r.health is SystemHealth.EMERGENCY
    assert r.detail() == {"available": 0, "total": 0, "departed": 0, "p99_rtt_ms": None}


def test_counts_available_states_and_grades_p99() -> None:
    r = assess_health(
        [LinkSample(state=L.HEALTHY, rtt_p99_ms=20.0)] * 9
        + [LinkSample(state=L.PARTITIONED, rtt_p99_ms=None)]
    )
    assert (r.available, r.total, r.health) == (9, 10, SystemHealth.HEALTHY)
    assert "9/10 nodes available" in r.reason


def test_unmeasured_nodes_do_not_make_the_p99_fast() -> None:
    r = assess_health(
        [LinkSample(state=L.HEALTHY, rtt_p99_ms=None), LinkSample(state=L.HEALTHY, rtt_p99_ms=300)]
    )
    assert r.p99_rtt_ms == 300 and r.health is SystemHealth.CRITICAL


@given(
    st.lists(
        st.builds(
            LinkSample,
            state=st.sampled_from(list(L)),
            rtt_p99_ms=st.one_of(st.none(), st.floats(0, 2000)),
            departed=st.booleans(),
        ),
        max_size=20,
    )
)
def test_departed_nodes_count_for_nothing(links: list[LinkSample]) -> None:
    present = [s for s in links if not s.departed]
    expected = replace(assess_health(present), departed=len(links) - len(present))
    assert assess_health(links) == expected


samples = st.lists(
    st.builds(
        LinkSample,
        state=st.sampled_from(list(L)),
        rtt_p99_ms=st.one_of(st.none(), st.floats(0, 2000)),
    ),
    max_size=20,
)


@given(samples)
def test_agrees_with_the_health_table(links: list[LinkSample]) -> None:
    r = assess_health(links)
    assert r.health is system_health(r.available, r.total, r.p99_rtt_ms)
    assert r.available == sum(s.state in (L.HEALTHY, L.DEGRADED, L.CRITICAL) for s in links)
