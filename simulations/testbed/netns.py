"""Hard cuts with network namespaces (root only): each agent runs in its own
namespace joined to the host by a veth pair, and a cut is ``ip link set down``
on the host end, so the kernel itself drops the traffic (``ENETUNREACH`` /
retransmits), with no proxy in the data path deciding anything.

``tc netem`` is not available on the CI kernel (anchors A2), so latency and
bandwidth faults still go through the agent's fault proxy, which in this mode
listens on the host end of the veth.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

__all__ = ["NetnsError", "NetnsLink", "netns_available"]


class NetnsError(RuntimeError):
    """A namespace or veth operation failed (not root, no iproute2, name clash)."""


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def netns_available() -> str | None:
    """``None`` when namespaces can be created here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"tbprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
    except (NetnsError, FileNotFoundError) as exc:
        return f"cannot create a network namespace: {exc}"
    _ip("netns", "del", probe)
    return None


@dataclass
class NetnsLink:
    """Namespace ``ns`` with veth ``host_if`` (host side, ``host_ip``) ↔ ``ns_if``
    (inside, ``ns_ip``). Interface names stay under the kernel's 15 characters."""

    index: int
    tag: int  # distinguishes concurrent runs (derived from the runner's pid)

    @property
    def ns(self) -> str:
        return f"ctb{self.tag}-{self.index}"

    @property
    def host_if(self) -> str:
        return f"tb{self.tag}h{self.index}"

    @property
    def ns_if(self) -> str:
        return f"tb{self.tag}n{self.index}"

    @property
    def host_ip(self) -> str:
        return f"10.{200 + self.tag % 50}.{self.index}.1"

    @property
    def ns_ip(self) -> str:
        return f"10.{200 + self.tag % 50}.{self.index}.2"

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def create(self) -> NetnsLink:
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.ns)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            _ip("-n", self.ns, "link", "set", self.ns_if, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
        except NetnsError:
            self.destroy()
            raise
        return self

    def down(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def up(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def destroy(self) -> None:
        """Deleting the namespace deletes the veth pair with it."""
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
