"""``LinkMonitor`` keeps its window's sorted RTTs and lost-probe count as samples
come and go: they must always equal a recount of the window, whatever the feeds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.health import LinkMonitor, LinkPolicy

_feeds = st.lists(
    st.tuples(
        st.sampled_from(["rtt", "lost", "heard", "disconnected", "poll", "stats"]),
        st.floats(0.0, 400.0),  # seconds since the last feed
        st.floats(0.0, 300.0),  # an RTT in ms
        st.integers(0, 3),  # probes lost
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(_feeds, st.sampled_from([3, 1000]))
def test_kept_figures_equal_a_recount(feeds: list[tuple[str, float, float, int]], cap: int) -> None:
    mon = LinkMonitor("n", now=0.0, policy=LinkPolicy(window_s=300.0, max_samples=cap))
    now = 0.0
    for kind, step, rtt, count in feeds:
        now += step
        if kind == "rtt":
            mon.rtt(rtt, now)
        elif kind == "lost":
            mon.lost(now, count)
        elif kind == "stats":
            stats = mon.stats(now)
            assert stats.rtt_samples == len(mon._rtts)
        else:
            getattr(mon, kind)(now)
        assert mon._sorted == sorted(r for _, r in mon._rtts)
        assert mon._lost == sum(1 for _, ok in mon._probes if not ok)
