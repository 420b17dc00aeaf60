"""Testbed (real processes, fault proxies, invariant checker) and discrete-event
simulator. Imports ``shared``; starts ``edge_agent`` and ``cloud`` only as processes."""
