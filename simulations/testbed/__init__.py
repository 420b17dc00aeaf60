"""The partition testbed: a broker, the controller and N agents as real processes,
each agent behind its own fault proxy, judged afterwards from ground truth."""
