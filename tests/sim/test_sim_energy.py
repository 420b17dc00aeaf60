"""The adaptive placement prices energy as the simulator charges it (LEAF)."""

from __future__ import annotations

from typing import Any

import pytest

from simulations.sim.model import Simulation
from simulations.sim.scenario import parse, parse_policy

SMALL: dict[str, Any] = {
    "kind": "sim",
    "name": "small-energy",
    "duration_s": 10,
    "seed": 3,
    "topology": {
        "sites": 2,
        "regions": 1,
        "device": {"count": 20, "compute_share": 0.5, "cpus": 1, "mips": 2000},
        "edge": {"count": 1, "cpus": 2, "mips": 8000},
        "regional": {"count": 1, "cpus": 4, "mips": 9000},
        "cloud": {"count": 1, "cpus": 8, "mips": 10000},
    },
    "links": {
        "access": {"nj_per_bit": 150},
        "metro": {"nj_per_bit": 30},
        "wan": {"nj_per_bit": 50},
        "lan": {"nj_per_bit": 5},
    },
    "workload": {"types": [{"name": "a", "level": "eventual"}]},
}


def test_the_view_prices_a_megabyte_as_the_network_charges_it() -> None:
    """A MB from a plain device of the site to each candidate node costs, in the
    simulator's accounting (``Network.deliver_data``), what the node's view says."""
    sim = Simulation(parse(SMALL), parse_policy("adaptive"), seed=1)
    net, topo = sim.net, sim.topo
    prices = set()
    for site in range(topo.sites):
        dev = next(
            d for d in range(topo.devices) if topo.dev_site[d] == site and topo.dev_node[d] < 0
        )
        for view in sim.inputs.views(site):
            g = topo.index[view.node_id]
            before = net.link_j
            net.deliver_data(dev, net.part[site][g], 0.0, 8e6)
            assert net.link_j - before == pytest.approx(view.transfer_j_per_mb, rel=1e-12)
            prices.add(round(view.transfer_j_per_mb, 9))
    # access alone (edge), + metro (regional), + WAN + LAN (cloud), two access links (device)
    assert prices == {1.2, 1.44, 1.88, 2.4}
