"""Shell completion for the three commands (``continuum``, ``cloud-controller``,
``edge-agent``), generated from their argparse parsers so it cannot drift from them.

``PROG completion bash`` prints a bash script; ``PROG completion zsh`` the same script behind
zsh's ``bashcompinit``. The script holds one table, ``_PROG_words PATH KIND``, written from the
parser tree: for each command path (``""``, ``"tls"``, ``"tls issue"``) its subcommands
(``sub``), its options (``opts``), the options that take a value (``args``), and the choices
of an option (``choices --status``) or of the positional argument (``pos``). The completion
function walks the words typed so far through that table. A value with no choices (a file, a
node id) falls back to the shell's file completion (``complete -o default``).

No dependency (shtab would do it too): the parsers are plain argparse, and a table of words
is all the completion needs.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["SHELLS", "add_completion_command", "completion_script"]

SHELLS = ("bash", "zsh")


def add_completion_command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    parents: list[argparse.ArgumentParser],
    prog: str,
) -> argparse.ArgumentParser:
    """The ``completion bash|zsh`` subcommand of ``prog``; the caller prints
    ``completion_script(parser, args.shell)`` when it is chosen."""
    p = sub.add_parser(
        "completion",
        parents=parents,
        help="print a shell completion script (bash or zsh)",
        description=f'bash: eval "$({prog} completion bash)" in ~/.bashrc, or save it as '
        f'/etc/bash_completion.d/{prog}; zsh: eval "$({prog} completion zsh)" in ~/.zshrc '
        "(after compinit).",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    return p


def _tables(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, str, list[str]]]:
    """``(path, kind, words)`` rows for ``parser`` and every subcommand below it."""
    rows: list[tuple[str, str, list[str]]] = []
    opts: list[str] = []
    takes: list[str] = []
    subs: dict[str, argparse.ArgumentParser] = {}
    positional: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs.update(action.choices)
        elif action.option_strings:
            opts.extend(action.option_strings)
            if action.nargs != 0:
                takes.extend(action.option_strings)
                rows.extend(
                    (path, f"choices {option}", [str(c) for c in action.choices])
                    for option in action.option_strings
                    if action.choices
                )
        elif action.choices and not positional:
            positional = [str(c) for c in action.choices]
    rows += [(path, "sub", sorted(subs)), (path, "opts", opts), (path, "args", takes)]
    rows += [(path, "pos", positional)] if positional else []
    for name, child in sorted(subs.items()):
        rows += _tables(child, f"{path} {name}".strip())
    return [row for row in rows if row[2]]


def _bash(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    func = "_" + re.sub(r"\W", "_", prog)
    cases = "\n".join(
        f'        "{path}|{kind}") echo "{" ".join(words)}" ;;'
        for path, kind, words in _tables(parser)
    )
    return f"""# {prog} completion (generated from its parser by `{prog} completion bash`)
{func}_words() {{
    case "$1|$2" in
{cases}
    esac
}}

{func}() {{
    local cur prev word path skip i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    path=""
    skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        case " $({func}_words "$path" args) " in *" $word "*) skip=1; continue ;; esac
        case " $({func}_words "$path" sub) " in *" $word "*) path="${{path:+$path }}$word" ;; esac
    done
    COMPREPLY=()
    if [ "$skip" = 1 ]; then
        COMPREPLY=($(compgen -W "$({func}_words "$path" "choices $prev")" -- "$cur"))
        return 0
    fi
    case "$cur" in
        -*) COMPREPLY=($(compgen -W "$({func}_words "$path" opts)" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$({func}_words "$path" sub) $({func}_words "$path" pos)" \\
            -- "$cur")) ;;
    esac
    return 0
}}

complete -o default -F {func} {prog}
"""


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser``'s program for ``shell`` (one of ``SHELLS``)."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}; one of {', '.join(SHELLS)}")
    script = _bash(parser)
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script
