"""Run one allow-listed Python callable as a task process (``python -m edge_agent._callable``).

The callable runs in its own process (under the same supervisor as argv tasks) so that timeouts,
fencing and crashes treat both kinds alike. It is called as ``fn(args, inputs)`` with the task's
``args`` object and its dependency outputs; its JSON-able return value becomes the result.
Only names the agent's config allow-lists ever reach this module: the agent maps the task's
callable *name* to ``module:function`` itself, the task never supplies a module path.
"""

from __future__ import annotations

import importlib
import json
import os
import sys


def main(target: str) -> int:
    module_name, _, func_name = target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    with open(os.environ["CONTINUUM_ARGS"], encoding="utf-8") as fh:
        args = json.load(fh)
    with open(os.environ["CONTINUUM_INPUTS"], encoding="utf-8") as fh:
        inputs = json.load(fh)
    result = func(args, inputs)
    with open(os.environ["CONTINUUM_OUTPUT"], "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
