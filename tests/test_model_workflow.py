"""Workflows: a topological order respects every edge of a random DAG, cycle
detection names a real cycle, and validation names field and problem; retry
backoff stays within its bounds; submissions parse from TOML and JSON."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.errors import ValidationError
from shared.model import (
    MAX_WORKFLOW_TASKS,
    RetryPolicy,
    TaskSpec,
    WorkflowSpec,
    backoff_delay,
    base_delay,
    find_cycles,
    load_submission,
    parse_workflow,
)


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    """Tasks in a hidden order, each depending only on earlier ones, then shuffled."""
    n = draw(st.integers(1, 25))
    ids = [f"t{i}" for i in range(n)]
    tasks = []
    for i, task_id in enumerate(ids):
        deps = draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=4)) if i else []
        tasks.append((task_id, deps))
    return draw(st.permutations(tasks))


def _workflow(tasks: list[tuple[str, list[str]]]) -> dict[str, Any]:
    return {
        "id": "wf",
        "tasks": [{"id": t, "command": ["run", t], "depends_on": deps} for t, deps in tasks],
    }


def _problems(data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        parse_workflow(data)
    return {p.path: p.message for p in info.value.problems}


@settings(max_examples=100, deadline=None)
@given(dags())
def test_topological_order_respects_every_edge(tasks: list[tuple[str, list[str]]]) -> None:
    workflow = parse_workflow(_workflow(tasks))
    order = workflow.topological_order()
    assert sorted(order) == sorted(t for t, _ in tasks)
    position = {task_id: i for i, task_id in enumerate(order)}
    for task_id, deps in tasks:
        for dep in deps:
            assert position[dep] < position[task_id]
    assert all(task.workflow == "wf" for task in workflow.tasks)
    assert set(workflow.roots()) == {t for t, deps in tasks if not deps}
    assert parse_workflow(workflow.to_dict()) == workflow


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_a_back_edge_is_reported_as_a_real_cycle(
    tasks: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    edges = [(t, d) for t, deps in tasks for d in deps]
    if not edges:
        return
    # Reverse one edge's direction by adding it: dep now also depends on task.
    task_id, dep = data.draw(st.sampled_from(edges))
    graph = {t: list(deps) for t, deps in tasks}
    graph[dep].append(task_id)
    cycles = find_cycles(graph)
    assert cycles
    for cycle in cycles:
        assert cycle[0] == cycle[-1] and len(cycle) >= 2
        for a, b in itertools.pairwise(cycle):
            assert b in graph[a], (cycle, a, b)
    problems = _problems(_workflow(list(graph.items())))
    cycle_messages = [m for m in problems.values() if m.startswith("dependency cycle: ")]
    assert cycle_messages and any(task_id in m and dep in m for m in cycle_messages)


def test_cycle_message_names_the_path_and_the_task() -> None:
    problems = _problems(
        _workflow([("a", ["b"]), ("b", ["c"]), ("c", ["a"]), ("d", ["d"]), ("e", [])])
    )
    assert problems["tasks[0].depends_on"] == "dependency cycle: a → b → c → a"
    assert "itself" in problems["tasks[3].depends_on"]


def test_find_cycles_on_self_loop_and_long_chain() -> None:
    assert find_cycles({"a": ["a"]}) == [["a", "a"]]
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(5000)}
    chain["n5000"] = ["n0"]  # deep: no recursion limit
    (cycle,) = find_cycles(chain)
    assert len(cycle) == 5002 and cycle[0] == cycle[-1] == "n0"


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"id": "wf", "tasks": []}, "tasks", "at least one task"),
        ({"id": "wf"}, "tasks", "is required"),
        ({"id": "w f", "tasks": [{"id": "a", "command": ["x"]}]}, "id", "letters"),
        (
            {"id": "wf", "tasks": [{"id": "a", "command": ["x"]}, {"id": "a", "command": ["y"]}]},
            "tasks[1].id",
            "duplicate task id 'a'",
        ),
        (
            {"id": "wf", "tasks": [{"id": "a", "command": ["x"], "depends_on": [3, "zz"]}]},
            "tasks[0].depends_on[1]",
            "unknown task 'zz'",
        ),
        (
            {"id": "wf", "tasks": [{"id": "a", "command": ["x"], "workflow": "other"}]},
            "tasks[0].workflow",
            "this workflow's id",
        ),
        ({"id": "wf", "tasks": [{"id": "a"}]}, "tasks[0]", "exactly one of"),
        ({"id": "wf", "tasks": ["a"]}, "tasks[0]", "must be a table"),
        ({"id": "wf", "tasks": [{"id": "a", "command": ["x"]}], "owner": 1}, "owner", "unknown"),
        (
            {"id": "wf", "tasks": [{"id": "a", "command": ["x"]}] * (MAX_WORKFLOW_TASKS + 1)},
            "tasks",
            f"at most {MAX_WORKFLOW_TASKS}",
        ),
    ],
)
def test_workflow_problems_name_field_and_problem(data: Any, path: str, fragment: str) -> None:
    problems = _problems(data)
    assert path in problems, problems
    assert fragment in problems[path], problems[path]


def test_one_error_lists_problems_of_every_task_and_the_graph() -> None:
    problems = _problems(
        {
            "id": "wf",
            "tasks": [
                {"id": "a", "command": "ls -l", "depends_on": ["b"]},
                {"id": "b", "command": ["x"], "priority": 101, "depends_on": ["a"]},
            ],
        }
    )
    assert "argv list" in problems["tasks[0].command"]
    assert "≤ 100" in problems["tasks[1].priority"]
    assert problems["tasks[0].depends_on"] == "dependency cycle: a → b → a"


def test_load_submission_reads_toml_and_json() -> None:
    toml = """
id = "etl"
name = "nightly"

[[tasks]]
id = "extract"
command = ["python3", "extract.py"]

[[tasks]]
id = "load"
command = ["python3", "load.py"]
depends_on = ["extract"]
consistency = { level = "adaptive", min = "causal", max = "strong" }
"""
    workflow = load_submission(toml, "toml")
    assert isinstance(workflow, WorkflowSpec)
    assert workflow.topological_order() == ["extract", "load"]
    assert workflow.dependents("extract") == ("load",)
    task = load_submission(b'{"id": "one", "callable": "demo.add", "args": {"x": 1}}', "json")
    assert isinstance(task, TaskSpec) and task.callable == "demo.add"
    for text, fmt in (("id = ", "toml"), ("{", "json"), (b"\xff", "json")):
        with pytest.raises(ValidationError):
            load_submission(text, fmt)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 100),
    st.floats(0, 100),
    st.floats(1, 10),
    st.floats(0, 1000),
    st.floats(0, 1),
    st.integers(0, 10_000),
    st.integers(0, 2**32),
)
# A subnormal backoff: max / backoff is inf and multiplier ** exponent overflows.
@example(1, 2.225073858507e-311, 10.0, 1.0, 0.0, 309, 0)
def test_backoff_is_exponential_capped_and_jittered_within_bounds(
    attempts: int,
    backoff: float,
    multiplier: float,
    extra: float,
    jitter: float,
    failures: int,
    seed: int,
) -> None:
    policy = RetryPolicy(
        max_attempts=attempts,
        backoff_s=backoff,
        multiplier=multiplier,
        backoff_max_s=backoff + extra,
        jitter=jitter,
    )
    base = base_delay(policy, failures)
    assert 0 <= base <= policy.backoff_max_s
    if failures >= 1:
        assert base >= min(backoff, policy.backoff_max_s) - 1e-9
        assert base_delay(policy, failures + 1) >= base - 1e-9  # never shrinks
    delay = backoff_delay(policy, failures, random.Random(seed))
    assert base <= delay <= base * (1 + jitter) + 1e-9


def test_every_toml_example_in_the_task_spec_doc_is_valid() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "task-spec.md").read_text()
    examples = re.findall(r"```toml\n(.*?)```", doc, flags=re.DOTALL)
    assert len(examples) >= 3
    for text in examples:
        load_submission(text, "toml")
