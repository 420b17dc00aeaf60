"""Workflows: a DAG of tasks joined by ``depends_on``.

``parse_workflow`` validates every task *and* the graph in one pass, so one
``ValidationError`` names bad fields, duplicate ids, unknown dependencies and
every dependency cycle (each as a concrete path ``a → b → c → a``, read "a
depends on b, which depends on c, which depends on a").

The topological order is deterministic: among the tasks whose dependencies are
all done, the one declared first comes first, so a workflow file reads top to
bottom the way it runs when it can.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from shared.errors import Problem, ValidationError
from shared.ids import MAX_TASK_ID_LEN, check_task_id, is_task_id
from shared.model._fields import Fields
from shared.model._task import MAX_NAME_LEN, TaskSpec, read_task_spec

__all__ = ["MAX_WORKFLOW_TASKS", "WorkflowSpec", "find_cycles", "parse_workflow"]

MAX_WORKFLOW_TASKS: Final = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowSpec:
    """A validated workflow: task ids unique, dependencies known, no cycles.

    Every task's ``workflow`` field holds this workflow's id.
    """

    id: str
    name: str = ""
    tasks: tuple[TaskSpec, ...] = ()

    def task(self, task_id: str) -> TaskSpec:
        """The task with this id (``KeyError`` if none)."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def dependents(self, task_id: str) -> tuple[str, ...]:
        """Ids of the tasks that depend directly on ``task_id``, in declaration order."""
        return tuple(task.id for task in self.tasks if task_id in task.depends_on)

    def roots(self) -> tuple[str, ...]:
        """Ids of the tasks with no dependency: they can start at once."""
        return tuple(task.id for task in self.tasks if not task.depends_on)

    def topological_order(self) -> list[str]:
        """Every task after all its dependencies; ties go to declaration order."""
        order = _kahn([task.id for task in self.tasks], [task.depends_on for task in self.tasks])
        if order is None:  # unreachable for a parsed workflow; guards hand-built ones
            raise ValueError(f"workflow {self.id!r} has a dependency cycle")
        return order

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tasks": [t.to_dict() for t in self.tasks]}


def _kahn(ids: Sequence[str], deps: Sequence[Sequence[str]]) -> list[str] | None:
    """Kahn's algorithm with a heap on declaration index; ``None`` if a cycle remains."""
    index = {task_id: i for i, task_id in enumerate(ids)}
    waiting = [len(set(d)) for d in deps]
    dependents: list[list[int]] = [[] for _ in ids]
    for i, task_deps in enumerate(deps):
        for dep in set(task_deps):
            dependents[index[dep]].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(ids[i])
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    return order if len(order) == len(ids) else None


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component that has one.

    ``graph`` maps a node to the nodes it points to (a task to its dependencies);
    each cycle is returned as ``[a, b, …, a]`` with every consecutive pair an edge,
    starting from its component's first node in ``graph`` order. Iterative (no
    recursion limit on deep chains).
    """
    order = {node: i for i, node in enumerate(graph)}
    cycles: list[list[str]] = []
    for component in _strongly_connected(graph):
        members = set(component)
        start = min(component, key=order.__getitem__)
        if len(component) == 1 and start not in graph[start]:
            continue
        cycles.append(_cycle_through(graph, start, members))
    cycles.sort(key=lambda cycle: order[cycle[0]])
    return cycles


def _strongly_connected(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            recursed = False
            while child < len(edges):
                nxt = edges[child]
                child += 1
                if nxt not in index:
                    work.append((node, child))
                    work.append((nxt, 0))
                    recursed = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recursed:
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _cycle_through(graph: Mapping[str, Sequence[str]], start: str, members: set[str]) -> list[str]:
    """Shortest cycle from ``start`` back to itself inside one component (BFS)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in parent:
                    parent[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError("a strongly connected component always has a cycle")


# -- parsing -------------------------------------------------------------------


def parse_workflow(data: object, *, path: str = "") -> WorkflowSpec:
    """Validate a workflow dict ``{id, name, tasks = [...]}``; one error lists every problem."""
    problems: list[Problem] = []
    fields = Fields(data, path, problems=problems)
    workflow_id = fields.string("id", check=check_task_id, max_len=MAX_TASK_ID_LEN)
    name = fields.string("name", "", max_len=MAX_NAME_LEN)
    raw_tasks = fields.sequence("tasks", max_items=MAX_WORKFLOW_TASKS, required=fields.valid)
    fields.finish()
    tasks: list[TaskSpec | None] = []
    for i, raw in enumerate(raw_tasks or []):
        task_fields = Fields(raw, fields.path_of("tasks") + f"[{i}]", problems=problems)
        tasks.append(read_task_spec(task_fields))
        if task_fields.data.get("workflow") not in (None, workflow_id):
            task_fields.error("workflow", f"must be this workflow's id {workflow_id!r} or absent")
    if raw_tasks is not None and not raw_tasks:
        fields.error("tasks", "a workflow needs at least one task")
    _check_graph(fields, raw_tasks or [])
    if problems:
        raise ValidationError(problems, what="workflow")
    return WorkflowSpec(
        id=workflow_id,
        name=name,
        tasks=tuple(_in_workflow(task, workflow_id) for task in tasks if task is not None),
    )


def _in_workflow(task: TaskSpec, workflow_id: str) -> TaskSpec:
    return task if task.workflow == workflow_id else replace(task, workflow=workflow_id)


def _check_graph(fields: Fields, raw_tasks: list[object]) -> None:
    """Duplicate ids, unknown dependencies and cycles, on the raw task dicts so that a
    task with an unrelated bad field still takes part in the graph checks."""
    tasks_path = fields.path_of("tasks")
    first_index: dict[str, int] = {}
    deps_of: dict[str, list[tuple[int, str]]] = {}
    for i, raw in enumerate(raw_tasks):
        if not isinstance(raw, Mapping) or not is_task_id(raw.get("id")):
            continue
        task_id: str = raw["id"]
        if task_id in first_index:
            fields.problems.append(
                Problem(
                    f"{tasks_path}[{i}].id",
                    f"duplicate task id {task_id!r} (also tasks[{first_index[task_id]}])",
                )
            )
            continue
        first_index[task_id] = i
        deps = raw.get("depends_on")
        # Keep raw positions so a problem names the right ``depends_on[j]``.
        deps_of[task_id] = (
            [(j, d) for j, d in enumerate(deps) if is_task_id(d)] if isinstance(deps, list) else []
        )
    graph: dict[str, list[str]] = {}
    for task_id, deps in deps_of.items():
        i = first_index[task_id]
        known: list[str] = []
        for j, dep in deps:
            if dep in first_index:
                if dep != task_id and dep not in known:
                    known.append(dep)
            else:
                fields.problems.append(
                    Problem(
                        f"{tasks_path}[{i}].depends_on[{j}]",
                        f"unknown task {dep!r} (not in this workflow)",
                    )
                )
        graph[task_id] = known
    for cycle in find_cycles(graph):
        fields.problems.append(
            Problem(
                f"{tasks_path}[{first_index[cycle[0]]}].depends_on",
                f"dependency cycle: {' → '.join(cycle)}",
            )
        )
