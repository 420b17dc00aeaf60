"""LAN discovery with zeroconf (mDNS/DNS-SD), bound to the interfaces named in the config.

The agent advertises ``_continuum-agent._tcp.local.`` (TXT: node id, tier, protocol version) on
its local API port, and, when its config names no broker, browses ``_mqtt._tcp.local.`` and
prefers a broker whose TXT record says ``continuum=1``. zeroconf is imported lazily: an agent with
discovery off never pays for it.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

__all__ = ["AGENT_SERVICE", "BROKER_SERVICE", "Advertisement", "browse_agents", "browse_broker"]

AGENT_SERVICE = "_continuum-agent._tcp.local."
BROKER_SERVICE = "_mqtt._tcp.local."
log = logging.getLogger("edge_agent.discovery")


def _addresses(interfaces: list[str]) -> list[bytes]:
    out = []
    for iface in interfaces:
        try:
            out.append(socket.inet_aton(iface))
        except OSError:
            continue
    return out or [socket.inet_aton("127.0.0.1")]


class Advertisement:
    """Registers this agent's service until :meth:`close`."""

    def __init__(self, node_id: str, tier: str, port: int, interfaces: list[str]) -> None:
        from zeroconf import ServiceInfo, Zeroconf

        self._zc = Zeroconf(interfaces=interfaces)
        self.info = ServiceInfo(
            AGENT_SERVICE,
            f"{node_id}.{AGENT_SERVICE}",
            addresses=_addresses(interfaces),
            port=port,
            properties={"node": node_id, "tier": tier, "proto": "1"},
            server=f"{node_id}.local.",
        )
        self._zc.register_service(self.info, allow_name_change=True)

    def close(self) -> None:
        try:
            self._zc.unregister_service(self.info)
        finally:
            self._zc.close()


def _browse(service: str, interfaces: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Every instance of ``service`` seen within ``timeout_s`` (resolved to host/port/TXT)."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    zc = Zeroconf(interfaces=interfaces)
    names: list[str] = []
    found = threading.Event()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change is ServiceStateChange.Added:
            names.append(name)
            found.set()

    browser = ServiceBrowser(zc, service, handlers=[on_change])
    try:
        found.wait(timeout_s)
        # give concurrent answers a moment to arrive after the first one
        found.clear()
        found.wait(min(0.5, timeout_s))
        results = []
        for name in list(names):
            info = zc.get_service_info(service, name, timeout=int(timeout_s * 1000))
            if info is None:
                continue
            props = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in info.properties.items()
            }
            addrs = info.parsed_addresses()
            if addrs:
                results.append({"name": name, "host": addrs[0], "port": info.port, "txt": props})
        return results
    finally:
        browser.cancel()
        zc.close()


def browse_broker(interfaces: list[str], timeout_s: float) -> tuple[str, int] | None:
    """A broker to use: one announcing ``continuum=1`` first, else any MQTT broker."""
    found = _browse(BROKER_SERVICE, interfaces, timeout_s)
    found.sort(key=lambda s: (s["txt"].get("continuum") != "1", s["name"]))
    if not found:
        return None
    log.info("broker discovered", extra={"fields": {"service": found[0]["name"]}})
    return str(found[0]["host"]), int(found[0]["port"])


def browse_agents(interfaces: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Agents advertising on the LAN (operators, peers, tests)."""
    return _browse(AGENT_SERVICE, interfaces, timeout_s)
