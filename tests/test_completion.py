"""Shell completion of the three commands (shared/completion.py): the script each prints with
``completion bash|zsh`` is run by a real bash, fed the words typed so far, and must offer
what the parser accepts there."""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import shutil
import subprocess
from collections.abc import Callable

import pytest

from cloud import cli as controller_cli
from cloud import operator_cli
from edge_agent import cli as agent_cli
from shared.completion import completion_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

MAINS: dict[str, Callable[[list[str]], int]] = {
    "continuum": operator_cli.main,
    "cloud-controller": controller_cli.main,
    "edge-agent": agent_cli.main,
}


def _printed(prog: str, shell: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert MAINS[prog](["completion", shell]) == 0
    return out.getvalue()


def _complete(prog: str, typed: str) -> list[str]:
    """What bash offers for the last word of ``typed`` (``""`` after a trailing space)."""
    words = [prog, *shlex.split(typed)] + ([""] if typed.endswith(" ") or not typed else [])
    func = "_" + prog.replace("-", "_")
    probe = (
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"{func}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    script = _printed(prog, "bash") + probe
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return [line for line in run.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("prog", "typed", "offered"),
    [
        ("continuum", "", {"drain", "nodes", "logs", "workflow", "completion", "submit"}),
        ("continuum", "nodes ", {"remove"}),
        ("continuum", "--json nodes re", {"remove"}),
        ("continuum", "--url http://c:8080 nodes ", {"remove"}),  # a value is skipped
        ("continuum", "list --status ", {"pending", "running", "failed", "succeeded"}),
        ("continuum", "drain edge-1 --d", {"--deadline"}),
        ("continuum", "nodes remove edge-1 --f", {"--force"}),
        ("continuum", "workflow ", {"get", "list"}),
        ("cloud-controller", "tls ", {"init", "issue", "list"}),
        ("cloud-controller", "tls issue --s", {"--server"}),
        ("cloud-controller", "completion ", {"bash", "zsh"}),
        ("edge-agent", "", {"join", "init", "run", "status", "completion"}),
        ("edge-agent", "init --no", {"--node-id"}),
    ],
)
def test_bash_offers_what_the_parser_accepts(prog: str, typed: str, offered: set[str]) -> None:
    got = set(_complete(prog, typed))
    assert offered <= got, got
    prefix = "" if typed[-1:] in ("", " ") else shlex.split(typed)[-1]
    assert all(word.startswith(prefix) for word in got), got


def test_a_free_value_is_left_to_file_completion() -> None:
    # `submit FILE`, `--config FILE`: no words of ours; `complete -o default` lists files.
    assert _complete("continuum", "submit ") == []
    assert _complete("edge-agent", "run --config ") == []
    assert "complete -o default -F _continuum continuum" in _printed("continuum", "bash")


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_scripts_parse_in_their_shells(prog: str) -> None:
    subprocess.run(["bash", "-n"], input=_printed(prog, "bash"), text=True, check=True)
    zsh_script = _printed(prog, "zsh")
    assert zsh_script.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    if shutil.which("zsh"):
        load = "autoload -U +X compinit && compinit -u\n" + zsh_script
        subprocess.run(["zsh", "-c", load], text=True, check=True)


def test_an_unknown_shell_is_refused() -> None:
    with pytest.raises(ValueError, match="fish"):
        completion_script(argparse.ArgumentParser(prog="x"), "fish")
