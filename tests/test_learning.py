"""shared.learning: online estimates of node speed, task work, links and error."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.learning import (
    DEFAULT_WORK_S,
    MAX_KINDS,
    PRIOR_ERROR,
    TIER_SPEED,
    LearnerState,
    observe_finish,
    observe_rtt,
    observe_run,
    observe_transfer,
    task_kind,
)
from shared.vocab import Tier


def test_priors_come_from_the_hint_then_the_default_and_the_tier() -> None:
    state = LearnerState()
    assert state.speed_of("new", Tier.DEVICE).value == pytest.approx(TIER_SPEED[Tier.DEVICE])
    assert state.work_of("k", 4.0).value == pytest.approx(4.0)
    assert state.work_of("k").value == pytest.approx(DEFAULT_WORK_S)
    # without a hint, a deadline bounds what the submitter can expect the work to be
    assert state.work_of("k", bound_s=0.3).value == pytest.approx(0.3)
    assert state.work_of("k", hint_s=4.0, bound_s=0.3).value == pytest.approx(4.0)
    assert state.error_of("new") == PRIOR_ERROR


def test_converges_on_a_node_whose_speed_changes() -> None:
    state = LearnerState()
    # a kind of known work (hinted 2 s) runs on a node that is first 1.0, then 0.5 fast
    for speed, runs in ((1.0, 30), (0.5, 30)):
        for _ in range(runs):
            observe_run(
                state, node_id="n", tier=Tier.EDGE, kind="k", seconds=2.0 / speed, hint_s=2.0
            )
        assert state.speed_of("n", Tier.EDGE).value / state.work_of("k").value == pytest.approx(
            speed / 2.0, rel=0.05
        )
    # and within a few runs of the change, not dozens
    fresh = LearnerState()
    for _ in range(30):
        observe_run(fresh, node_id="n", tier=Tier.EDGE, kind="k", seconds=2.0, hint_s=2.0)
    for _ in range(8):
        observe_run(fresh, node_id="n", tier=Tier.EDGE, kind="k", seconds=4.0, hint_s=2.0)
    predicted = fresh.work_of("k").value / fresh.speed_of("n", Tier.EDGE).value
    assert predicted == pytest.approx(4.0, rel=0.15)


def test_a_known_kind_teaches_a_new_node_its_speed() -> None:
    state = LearnerState()
    for _ in range(40):
        observe_run(state, node_id="ref", tier=Tier.EDGE, kind="k", seconds=1.0, hint_s=1.0)
    for _ in range(10):
        observe_run(state, node_id="dev", tier=Tier.DEVICE, kind="k", seconds=2.0, hint_s=1.0)
    ratio = state.speed_of("ref", Tier.EDGE).value / state.speed_of("dev", Tier.DEVICE).value
    assert ratio == pytest.approx(2.0, rel=0.1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.001, 1e5), min_size=1, max_size=30))
def test_estimates_stay_finite_and_positive(durations: list[float]) -> None:
    state = LearnerState()
    for d in durations:
        observe_run(state, node_id="n", tier=Tier.CLOUD, kind="k", seconds=d)
        observe_finish(state, "n", predicted_s=1.0, actual_s=d)
    for value in (state.speed_of("n", Tier.CLOUD).value, state.work_of("k").value):
        assert math.isfinite(value) and value > 0
    assert state.error_of("n") >= 0


def test_bad_samples_are_ignored() -> None:
    state = LearnerState()
    observe_run(state, node_id="n", tier=Tier.EDGE, kind="k", seconds=0.0)
    observe_run(state, node_id="n", tier=Tier.EDGE, kind="k", seconds=math.nan)
    observe_rtt(state, "n", -1.0)
    observe_transfer(state, "n", 0.0, 1.0)
    assert state == LearnerState()


def test_error_rtt_and_bandwidth_are_ewmas_from_the_first_sample() -> None:
    state = LearnerState()
    observe_finish(state, "n", predicted_s=1.0, actual_s=1.0)
    assert state.error_of("n") == pytest.approx(0.9 * PRIOR_ERROR)
    observe_rtt(state, "n", 50.0)
    observe_rtt(state, "n", 150.0)
    assert state.rtt_ms["n"] == pytest.approx(60.0)
    observe_transfer(state, "n", 10.0, 1.0)
    assert state.bandwidth_mbps["n"] == pytest.approx(80.0)


def test_state_round_trips_as_plain_data() -> None:
    state = LearnerState()
    observe_run(state, node_id="n", tier=Tier.EDGE, kind="k", seconds=3.0)
    observe_finish(state, "n", 1.0, 2.0)
    observe_rtt(state, "n", 10.0)
    assert LearnerState.from_dict(state.to_dict()) == state
    with pytest.raises(ValueError, match="malformed"):
        LearnerState.from_dict({"speed": {"n": [1]}})


def test_task_kind_is_the_name_then_the_callable_then_the_command() -> None:
    assert task_kind({"name": "resize", "command": ["x"]}) == "resize"
    assert task_kind({"name": "", "callable": "demo.add"}) == "demo.add"
    assert task_kind({"command": ["python", "-c", "pass"]}) == "python -c pass"


def test_a_new_node_starts_from_what_its_tier_has_shown() -> None:
    state = LearnerState()
    for i in range(20):
        observe_run(state, node_id=f"d{i}", tier=Tier.DEVICE, kind="k", seconds=10.0, hint_s=1.0)
        observe_finish(state, f"d{i}", predicted_s=1.0, actual_s=2.0, tier=Tier.DEVICE)
    fresh = state.speed_of("d-new", Tier.DEVICE).value
    assert fresh < TIER_SPEED[Tier.DEVICE]  # the devices proved slower than the prior
    assert state.speed_of("e-new", Tier.EDGE).value == pytest.approx(TIER_SPEED[Tier.EDGE])
    assert state.error_of("d-new", Tier.DEVICE) > PRIOR_ERROR
    assert state.error_of("d-new") == PRIOR_ERROR
    assert LearnerState.from_dict(state.to_dict()) == state


def test_work_estimates_keep_the_most_recently_run_kinds() -> None:
    """Uniquely named tasks (``job-<n>``) must not grow the state (which the controller
    persists) without bound: at most ``MAX_KINDS`` kinds, the most recently run, and a
    kind run again keeps its estimate however many others came since."""
    state = LearnerState()
    observe_run(state, node_id="n", tier=Tier.EDGE, kind="steady", seconds=4.0)
    for i in range(3 * MAX_KINDS):
        observe_run(state, node_id="n", tier=Tier.EDGE, kind=f"job-{i}", seconds=1.0)
        if i % 100 == 0:  # the steady kind keeps running among them
            observe_run(state, node_id="n", tier=Tier.EDGE, kind="steady", seconds=4.0)
        assert len(state.work) <= MAX_KINDS
    assert state.work["steady"].samples == 1 + 3 * MAX_KINDS // 100 + 1
    assert f"job-{3 * MAX_KINDS - 1}" in state.work and "job-0" not in state.work
    # A stored state from before the bound is cut to it on load, the newest kept.
    doc = state.to_dict()
    doc["work"] = {f"old-{i}": [0.0, 0.1, 1] for i in range(2 * MAX_KINDS)}
    loaded = LearnerState.from_dict(doc)
    assert len(loaded.work) == MAX_KINDS and f"old-{2 * MAX_KINDS - 1}" in loaded.work
