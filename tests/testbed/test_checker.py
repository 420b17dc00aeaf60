"""The checker on hand-written histories: a clean run passes, and each kind of
violation is flagged by the checker that owns it (and only fails the verdict
through composition)."""

from __future__ import annotations

from typing import Any

import pytest

from simulations.testbed.checker import (
    Observation,
    check_all,
    check_causal,
    check_convergence,
    check_eventual,
    check_liveness,
    check_nothing_lost,
    check_order,
    check_strong,
    compose,
    executions,
    submissions,
)


def submit(req: int, *tasks: dict[str, Any], outcome: str = "ok") -> list[dict[str, Any]]:
    value = {"request": req, "tasks": list(tasks)}
    ops = [{"process": "client", "type": "invoke", "f": "submit", "value": value, "wall": 0.0}]
    if outcome != "none":
        ops.append({"process": "client", "type": outcome, "f": "submit", "value": value})
    return ops


def task(tid: str, level: str = "causal", **kw: Any) -> dict[str, Any]:
    return {"task_id": tid, "level": level, **kw}


def run(
    tid: str,
    attempt: str,
    start: float,
    end: float | None,
    *,
    exit_code: int = 0,
    pid: int | None = None,
    ticks: tuple[float, ...] = (),
) -> list[dict[str, Any]]:
    node = attempt.split(":")[0]
    base = {"task": tid, "attempt": attempt, "node": node, "epoch": 1, "pid": pid or hash(attempt)}
    lines = [{**base, "event": "start", "t": start}]
    lines += [{**base, "event": "tick", "t": t} for t in ticks]
    if end is not None:
        lines.append({**base, "event": "end", "t": end, "exit": exit_code})
    return lines


def settled(after: dict[str, float], still_open: list[str], bound: float = 30.0) -> dict[str, Any]:
    value = {
        "quiescent": not still_open,
        "liveness_bound_s": bound,
        "open_at_first_look": len(after) + len(still_open),
        "terminal_after_heal_s": after,
        "still_open": still_open,
    }
    return {"process": "testbed", "type": "info", "f": "settled", "value": value}


def clean_observation() -> Observation:
    history = (
        submit(1, task("s1", "strong"))
        + submit(2, task("c1", "causal"))
        + submit(3, task("e1", "eventual"))
        + submit(
            4,
            task("w1", "causal", workflow="wf"),
            task("w2", "causal", workflow="wf", depends_on=["w1"]),
        )
        + [settled({"w2": 2.5}, [])]
    )
    ledger = (
        run("s1", "a:1", 1.0, 2.0)
        + run("c1", "a:2", 1.0, 2.0)
        + run("e1", "b:1", 1.0, 2.0)
        + run("w1", "a:3", 3.0, 4.0)
        + run("w2", "b:2", 4.5, 5.0)
    )
    controller = {
        t: {"status": "succeeded", "hash": f"h-{t}"} for t in ("s1", "c1", "e1", "w1", "w2")
    }
    agents = {"a": {"s1": "h-s1", "c1": "h-c1", "w1": "h-w1"}, "b": {"e1": "h-e1", "w2": "h-w2"}}
    return Observation(history=history, ledger=ledger, controller=controller, agents=agents)


def test_clean_run_is_valid_everywhere() -> None:
    verdict = check_all(clean_observation())
    assert verdict["valid"] is True, verdict
    assert all(r["valid"] is True for r in verdict["results"].values())


def test_reconstruction() -> None:
    obs = clean_observation()
    subs = submissions(obs.history)
    assert subs["w2"].depends_on == ("w1",) and subs["w2"].outcome == "ok"
    runs = executions(obs.ledger)
    assert runs["s1"][0].succeeded and runs["s1"][0].stop == 2.0


def test_adaptive_task_is_judged_at_its_floor() -> None:
    subs = submissions(submit(1, task("x", "adaptive", min="eventual", max="strong")))
    assert subs["x"].floor == "eventual" and subs["x"].level == "adaptive"


# -- 1. nothing lost ----------------------------------------------------------------


def test_lost_acknowledged_task_is_flagged() -> None:
    obs = clean_observation()
    controller = dict(obs.controller or {})
    controller["c1"] = {"status": "running", "hash": "h-c1"}
    del controller["e1"]
    v = check_nothing_lost(Observation(obs.history, obs.ledger, controller, obs.agents))
    assert v["valid"] is False
    assert v["counts"]["lost"] == 2
    assert {e["task"] for e in v["examples"]} == {"c1", "e1"}


def test_info_submission_is_never_lost_but_may_be_recovered() -> None:
    history = submit(1, task("i1"), outcome="info") + submit(2, task("i2"), outcome="none")
    obs = Observation(
        history=history,
        ledger=run("i1", "a:1", 1, 2),
        controller={"i1": {"status": "succeeded", "hash": "x"}},
    )
    v = check_nothing_lost(obs)
    assert v["valid"] is True
    assert v["counts"]["recovered"] == 1 and v["counts"]["indeterminate"] == 1


def test_success_without_ledger_execution_is_a_phantom() -> None:
    obs = clean_observation()
    ledger = [x for x in obs.ledger if x["task"] != "c1"]
    v = check_nothing_lost(Observation(obs.history, ledger, obs.controller, obs.agents))
    assert v["valid"] is False and v["counts"]["phantom"] == 1


def test_failed_submission_that_exists_is_unexpected() -> None:
    obs = Observation(
        history=submit(1, task("f1"), outcome="fail"), controller={"f1": {"status": "failed"}}
    )
    v = check_nothing_lost(obs)
    assert v["valid"] is False and v["counts"]["unexpected"] == 1


def test_cancelled_without_being_asked_is_dropped_work() -> None:
    history = (
        submit(1, task("x1"))
        + submit(2, task("x2"))
        + [{"process": "client", "type": "invoke", "f": "cancel", "value": {"task_id": "x2"}}]
        + submit(3, task("w1", workflow="wf"), task("w2", workflow="wf", depends_on=["w1"]))
    )
    controller = {t: {"status": "cancelled", "hash": t} for t in ("x1", "x2", "w1", "w2")}
    v = check_nothing_lost(Observation(history=history, controller=controller))
    assert v["valid"] is False
    # x1 and the workflow's root w1 were dropped; x2 was asked for; w2 follows w1.
    assert v["counts"]["cancelled_unasked"] == 2 and v["counts"]["cancelled_cascade"] == 1
    assert {e["task"] for e in v["examples"]} == {"x1", "w1"}
    asked = [op for op in history if op["f"] != "submit" or op["value"]["request"] == 2]
    ok = check_nothing_lost(Observation(history=asked, controller={"x2": controller["x2"]}))
    assert ok["valid"] is True


def test_missing_controller_records_give_unknown_not_valid() -> None:
    obs = Observation(history=submit(1, task("x")), controller=None)
    assert check_nothing_lost(obs)["valid"] == "unknown"
    assert check_convergence(obs)["valid"] == "unknown"


# -- 2. strong ----------------------------------------------------------------------


def test_overlapping_strong_executions_are_flagged() -> None:
    obs = clean_observation()
    ledger = [*obs.ledger, *run("s1", "b:9", 1.5, 3.0)]
    v = check_strong(Observation(obs.history, ledger, obs.controller, obs.agents))
    assert v["valid"] is False and v["counts"]["overlaps"] == 1
    assert v["examples"][0]["task"] == "s1"


def test_killed_strong_execution_overlaps_up_to_its_last_tick() -> None:
    history = submit(1, task("s", "strong"))
    # First run was SIGKILLed: no end line, but it ticked at 1.8.
    overlapping = run("s", "a:1", 1.0, None, ticks=(1.4, 1.8)) + run("s", "b:1", 1.5, 2.5)
    assert check_strong(Observation(history, overlapping))["valid"] is False
    sequential = run("s", "a:1", 1.0, None, ticks=(1.4,)) + run("s", "b:1", 1.5, 2.5)
    v = check_strong(Observation(history, sequential))
    assert v["valid"] is True and v["counts"]["unterminated"] == 1


def test_sequential_strong_reruns_are_allowed() -> None:
    history = submit(1, task("s", "strong"))
    ledger = run("s", "a:1", 1.0, 2.0, exit_code=1) + run("s", "b:1", 2.5, 3.0)
    assert check_strong(Observation(history, ledger))["valid"] is True


# -- 3. convergence -------------------------------------------------------------------


def test_diverged_agent_record_is_flagged() -> None:
    obs = clean_observation()
    agents = {**obs.agents, "b": {"e1": "other", "w2": "h-w2"}}
    v = check_convergence(Observation(obs.history, obs.ledger, obs.controller, agents))
    assert v["valid"] is False and v["counts"]["diverged"] == 1
    assert v["examples"][0]["node"] == "b" and v["examples"][0]["task"] == "e1"


def test_agent_record_unknown_to_controller_is_flagged() -> None:
    obs = clean_observation()
    agents = {**obs.agents, "a": {**obs.agents["a"], "ghost": "h"}}  # type: ignore[dict-item]
    v = check_convergence(Observation(obs.history, obs.ledger, obs.controller, agents))
    assert v["valid"] is False and v["counts"]["unknown_to_cloud"] == 1


def test_uncollected_agent_gives_unknown() -> None:
    obs = clean_observation()
    agents = {**obs.agents, "c": None}
    v = check_convergence(Observation(obs.history, obs.ledger, obs.controller, agents))
    assert v["valid"] == "unknown" and v["counts"]["nodes_unknown"] == 1


# -- 4. order -----------------------------------------------------------------------


def test_dependent_started_before_dependency_succeeded_is_flagged() -> None:
    obs = clean_observation()
    ledger = [x for x in obs.ledger if x["task"] != "w2"]
    ledger += run("w2", "b:2", 3.5, 5.0)  # w1 ends at 4.0
    v = check_order(Observation(obs.history, ledger, obs.controller, obs.agents))
    assert v["valid"] is False and v["examples"][0]["unmet"] == ["w1"]


def test_dependent_after_failed_dependency_is_flagged() -> None:
    history = submit(1, task("p"), task("q", depends_on=["p"]))
    ledger = run("p", "a:1", 1.0, 2.0, exit_code=3) + run("q", "a:2", 3.0, 4.0)
    assert check_order(Observation(history, ledger))["valid"] is False


# -- 5. causal ----------------------------------------------------------------------


def test_concurrent_causal_runs_without_loss_are_flagged() -> None:
    obs = clean_observation()
    ledger = [*obs.ledger, *run("c1", "b:5", 1.5, 2.5)]
    v = check_causal(Observation(obs.history, ledger, obs.controller, obs.agents))
    assert v["valid"] is False and v["counts"]["unjustified"] == 1


def test_causal_rerun_after_success_without_loss_is_flagged() -> None:
    history = submit(1, task("c"))
    ledger = run("c", "a:1", 1.0, 2.0) + run("c", "b:1", 5.0, 6.0)
    assert check_causal(Observation(history, ledger))["valid"] is False


def test_causal_double_run_after_confirmed_loss_is_reported_not_failed() -> None:
    history = submit(1, task("c"))
    ledger = run("c", "a:1", 1.0, 20.0) + run("c", "b:1", 10.0, 11.0)
    losses = [{"task_id": "c", "wall": 9.0, "node": "a"}]
    v = check_causal(Observation(history, ledger, losses=losses))
    assert v["valid"] is True
    assert v["counts"]["double_runs"] == 1 and v["counts"]["after_confirmed_loss"] == 1
    assert v["examples"][0]["justified"] is True
    # A loss confirmed only after the second run started does not justify it.
    late = [{"task_id": "c", "wall": 10.5}]
    assert check_causal(Observation(history, ledger, losses=late))["valid"] is False


def test_causal_retry_after_failure_is_not_a_double_run() -> None:
    history = submit(1, task("c"))
    ledger = run("c", "a:1", 1.0, 2.0, exit_code=1) + run("c", "a:2", 3.0, 4.0)
    v = check_causal(Observation(history, ledger))
    assert v["valid"] is True and v["counts"]["double_runs"] == 0


# -- 6. eventual --------------------------------------------------------------------


def test_eventual_duplicates_are_counted_and_allowed() -> None:
    history = submit(1, task("e", "eventual"))
    ledger = run("e", "a:1", 1.0, 2.0) + run("e", "b:1", 1.5, 2.5)
    v = check_eventual(Observation(history, ledger))
    assert v["valid"] is True
    assert v["counts"]["executed_more_than_once"] == 1
    assert v["counts"]["succeeded_more_than_once"] == 1


# -- composition ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([True, True], True),
        ([True, "unknown"], "unknown"),
        (["unknown", False, True], False),
        ([], True),
    ],
)
def test_compose_false_beats_unknown_beats_true(verdicts: list[Any], expected: Any) -> None:
    assert compose(verdicts) == expected


def test_a_violation_fails_the_whole_verdict() -> None:
    obs = clean_observation()
    ledger = [*obs.ledger, *run("s1", "b:9", 1.5, 3.0)]
    verdict = check_all(Observation(obs.history, ledger, obs.controller, obs.agents))
    assert verdict["valid"] is False
    assert verdict["results"]["strong_no_overlap"]["valid"] is False
    assert verdict["results"]["nothing_lost"]["valid"] is True


def test_crashing_checker_becomes_unknown_with_the_error() -> None:
    def boom(_: Observation) -> dict[str, Any]:
        raise KeyError("missing")

    verdict = check_all(clean_observation(), {"ok": check_eventual, "boom": boom})
    assert verdict["valid"] == "unknown"
    assert "KeyError" in verdict["results"]["boom"]["error"]


def test_malformed_ledger_line_makes_checkers_unknown_not_valid() -> None:
    obs = clean_observation()
    ledger = [*obs.ledger, {"event": "start"}]  # no task id
    verdict = check_all(Observation(obs.history, ledger, obs.controller, obs.agents))
    assert verdict["valid"] == "unknown"


def test_liveness_flags_late_and_never_terminal_acknowledged_tasks() -> None:
    history = (
        submit(1, task("a"))
        + submit(2, task("b"))
        + submit(3, task("c"))
        + submit(4, task("refused"), outcome="fail")
    )
    ok = check_liveness(Observation(history=[*history, settled({"a": 29.0}, [])]))
    assert ok["valid"] is True and ok["counts"]["slowest_s"] == 29.0
    late = check_liveness(Observation(history=[*history, settled({"a": 31.0}, ["c"])]))
    assert late["valid"] is False
    assert late["counts"]["late"] == 1 and late["counts"]["never"] == 1
    assert {e["task"] for e in late["examples"]} == {"a", "c"}
    # a task that was never acknowledged owes nothing
    refused = check_liveness(Observation(history=[*history, settled({}, ["refused"])]))
    assert refused["valid"] is True
    assert check_liveness(Observation(history=history))["valid"] == "unknown"
