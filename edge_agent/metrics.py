"""The agent's Prometheus metrics, with ``prometheus_client``.

Every series is read from one snapshot of the agent's status (``Agent.status()``, what
``edge-agent status`` shows) taken at scrape time, so the series cannot drift from what the
agent reports and nothing is counted twice. The snapshot is taken on the core thread: the
local API's ``GET /metrics`` renders it there (:func:`render`); the endpoint on
``[metrics] bind`` (:class:`MetricsServer`, prometheus_client's own HTTP server in a daemon
thread) asks the core for it through the inbox, like any local API request.

The core's event counters (``Core.counters``) become labelled families by prefix
(``_LABELLED``): ``rejected_<reason>``, ``lease_answer_<outcome>``, ``outcome_<status>``;
every other counter is ``edge_agent_events_total{kind}``. docs/operations.md lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_agent import __version__
from shared.protocol import GrantOutcome
from shared.vocab import Connectivity

__all__ = ["MetricsServer", "StatusCollector", "families", "render"]

log = logging.getLogger("edge_agent.metrics")

Status = Mapping[str, Any]

#: ``Core.counters`` prefix -> (family, help, label, label values always exported).
_LABELLED: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    (
        "rejected_",
        "edge_agent_rejected_messages",
        "Messages from the broker dropped unprocessed, by reason",
        "reason",
        (),
    ),
    (
        "lease_answer_",
        "edge_agent_lease_answers",
        "Answers to this agent's lease requests, by outcome (refused: final, fenced)",
        "outcome",
        tuple(o.value for o in GrantOutcome),
    ),
    (
        "outcome_",
        "edge_agent_task_outcomes",
        "Attempts that ended here, by status (one that could not start counts as failed)",
        "status",
        ("succeeded", "failed", "cancelled"),
    ),
)


def _one_hot(name: str, doc: str, label: str, values: tuple[str, ...], now: str) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value in values:
        family.add_metric([value], 1.0 if value == now else 0.0)
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _counters(counters: Mapping[str, int]) -> Iterator[Metric]:
    claimed: set[str] = {"lease_requests"}
    for prefix, name, doc, label, always in _LABELLED:
        family = CounterMetricFamily(name, doc, labels=[label])
        mine = {k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)}
        for value in sorted(set(always) | set(mine)):
            family.add_metric([value], mine.get(value, 0))
        claimed.update(prefix + k for k in mine)
        yield family
    events = CounterMetricFamily(
        "edge_agent_events", "Other counted events of the agent, by kind", labels=["kind"]
    )
    for kind, value in sorted(counters.items()):
        if kind not in claimed:
            events.add_metric([kind], value)
    yield events


def families(status: Status) -> list[Metric]:
    """The metric families of one status snapshot (``Agent.status()``)."""
    counters: Mapping[str, int] = status["counters"]
    info = GaugeMetricFamily(
        "edge_agent_info", "The agent: node id, tier, version", labels=["node", "tier", "version"]
    )
    info.add_metric([status["node_id"], status["tier"], __version__], 1.0)
    rtt_ms = status.get("rtt_ms")
    return [
        info,
        _one_hot(
            "edge_agent_connectivity",
            "1 for the uplink's current grade (from the age of the controller's last ack)",
            "state",
            tuple(c.value for c in Connectivity),
            status["connectivity"],
        ),
        _gauge("edge_agent_link_up", "1 while connected to the broker", int(status["link_up"])),
        _gauge(
            "edge_agent_outbox_depth",
            "Changes journaled and not yet acknowledged by the controller",
            status["outbox_depth"],
        ),
        _gauge("edge_agent_running_tasks", "Attempts running", len(status["running"])),
        _gauge("edge_agent_queued_tasks", "Tasks in the local queue", len(status["queue"])),
        _gauge("edge_agent_draining", "1 while the agent is stopping", int(status["draining"])),
        _gauge(
            "edge_agent_admission_stopped",
            "1 while a journal failure stops admission",
            int(status["admission_stopped"] is not None),
        ),
        *(
            []
            if rtt_ms is None
            else [
                _gauge("edge_agent_rtt_seconds", "Round trip p50 to the controller", rtt_ms / 1e3)
            ]
        ),
        _counter("edge_agent_reconnects", "Connections to the broker made", status["reconnects"]),
        _counter(
            "edge_agent_lease_requests",
            "Lease requests sent for strong tasks",
            counters.get("lease_requests", 0),
        ),
        *_counters(counters),
    ]


class StatusCollector(Collector):
    """Families from ``read()``, a fresh status snapshot per scrape (``None``: the agent could
    not answer, and the scrape is empty)."""

    def __init__(self, read: Callable[[], Status | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        status = self._read()
        if status is None:
            log.warning("metrics scrape: the agent's core did not answer in time")
            return
        yield from families(status)


def _registry(read: Callable[[], Status | None]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)  # no collect() at registration
    registry.register(StatusCollector(read))
    return registry


def render(status: Status) -> str:
    """The Prometheus text of one snapshot (the local API's ``GET /metrics``)."""
    return generate_latest(_registry(lambda: status)).decode()


class MetricsServer:
    """``GET /metrics`` on ``address`` in a daemon thread (prometheus_client's server)."""

    def __init__(self, address: tuple[str, int], read: Callable[[], Status | None]) -> None:
        self.address = address
        self._registry = _registry(read)
        self._server: Any = None

    def start(self) -> int:
        """Listen; returns the bound port. ``OSError`` when the address cannot be bound."""
        host, port = self.address
        self._server, _ = start_http_server(port, addr=host, registry=self._registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
