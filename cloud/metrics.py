"""Prometheus metrics of one controller, in its own registry.

A registry per controller (not the process-global default) keeps tests that
build several controllers in one process independent. Gauges that mirror the
store (tasks by status and level, nodes by link state) are filled just before
each scrape by :meth:`ControllerMetrics.render`'s ``refresh`` callback, so they
can never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "ControllerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ControllerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.nodes = Gauge("continuum_nodes", "Nodes by link state", ["link_state"], registry=r)
        self.tasks = Gauge(
            "continuum_tasks", "Tasks by visible status and level", ["status", "level"], registry=r
        )
        self.tasks_in_memory = Gauge(
            "continuum_tasks_in_memory",
            "Tasks the controller holds in memory (unfinished and recently finished)",
            registry=r,
        )
        self.tasks_admitted = Gauge(
            "continuum_tasks_admitted",
            "Finished tasks brought back from the store since the start (named again)",
            registry=r,
        )
        self.placements = Counter(
            "continuum_placements", "Placement decisions", ["outcome"], registry=r
        )
        self.replacements = Counter(
            "continuum_replacements", "Re-placements under a new epoch", ["trigger"], registry=r
        )
        self.level_changes = Counter(
            "continuum_level_changes",
            "Adaptive consistency level changes",
            ["direction"],
            registry=r,
        )
        self.conflicts = Counter("continuum_conflicts", "Conflicts flagged", registry=r)
        self.rejected = Counter(
            "continuum_rejected_messages",
            "Messages rejected from the network",
            ["reason"],
            registry=r,
        )
        self.refused = Counter(
            "continuum_refused_writes",
            "Parts of node messages refused by shared.authz, by reason",
            ["reason"],
            registry=r,
        )
        self.messages = Counter(
            "continuum_messages_received", "Messages accepted, by type", ["type"], registry=r
        )
        self.leases = Counter("continuum_lease_requests", "Lease requests", ["granted"], registry=r)
        self.node_speed = Gauge(
            "continuum_node_speed",
            "Learned per-core speed of a node, relative to a server core",
            ["node"],
            registry=r,
        )
        self.prediction_error = Gauge(
            "continuum_node_prediction_error",
            "Learned prediction error of a node: EWMA of |log(actual / predicted finish)|",
            ["node"],
            registry=r,
        )
        self.reexecutions = Counter(
            "continuum_non_idempotent_reexecutions",
            "Harm: further attempts that started of a task that is not idempotent",
            registry=r,
        )
        self.merge_seconds = Histogram(
            "continuum_merge_batch_seconds",
            "Time to merge and persist one ingest batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.placement_seconds = Histogram(
            "continuum_placement_seconds",
            "Time of one placement decision",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Per node, filled before each scrape (cloud.queries.Queries.refresh_gauges).
        self.node_link = Gauge(
            "continuum_node_link_state",
            "1 for the node's current link state",
            ["node", "link_state"],
            registry=r,
        )
        self.node_rtt = Gauge(
            "continuum_node_rtt_seconds",
            "Round trip between the controller and the node (its pings and the round trips the"
            " node reports), over the health window",
            ["node", "quantile"],
            registry=r,
        )
        self.node_running = Gauge(
            "continuum_node_running_tasks",
            "Active tasks placed on the node",
            ["node"],
            registry=r,
        )
        self.node_queued = Gauge(
            "continuum_node_queued_tasks",
            "Tasks queued on the node, from its last telemetry",
            ["node"],
            registry=r,
        )
        self.node_outbox = Gauge(
            "continuum_node_outbox_depth",
            "Changes the node journaled and the controller has not acknowledged, from its "
            "last telemetry",
            ["node"],
            registry=r,
        )

    def render(self, refresh: Callable[[ControllerMetrics], None] | None = None) -> bytes:
        if refresh is not None:
            refresh(self)
        return generate_latest(self.registry)
