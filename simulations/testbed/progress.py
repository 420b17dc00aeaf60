"""The live display of a run (rich): phase, clock, faults in force, tasks by state.

On a terminal it is a :class:`rich.live.Live` panel redrawn at most four times a
second; elsewhere (CI logs, ``make demo | tee``) it prints one line per phase
change and per fault instead, so a log stays readable.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .history import LiveState

__all__ = ["Progress"]


def _faults(f: dict[str, object]) -> str:
    parts = []
    if "cut" in f:
        parts.append(f"cut {f['cut']}" + (" (flapping)" if f.get("flapping") else ""))
    if "delay_ms" in f:
        parts.append(f"delay {f['delay_ms']:.0f}±{f.get('jitter_ms', 0):.0f} ms")
    if "bytes_per_s" in f:
        parts.append(f"{f['bytes_per_s']:.0f} B/s")
    if f.get("flapping") and "cut" not in f:
        parts.append("flapping")
    return ", ".join(parts)


def render_state(s: LiveState) -> Group:
    head = Text.assemble(
        ("phase: ", "bold"),
        (s.phase, "cyan"),
        f"   t = {s.elapsed:5.1f} / {s.duration:.0f} s   submitted {s.submitted}/{s.planned}",
    )
    tasks = "  ".join(f"{k}={v}" for k, v in sorted(s.tasks.items())) or "-"
    nodes = Table(box=None, pad_edge=False)
    for col in ("node", "process", "link (controller's view)", "outbox", "faults in force"):
        nodes.add_column(col)
    for name, n in s.nodes.items():
        nodes.add_row(
            name,
            "[green]up[/]" if n.alive else "[red]killed[/]",
            n.link,
            str(n.outbox),
            f"[red]{_faults(s.faults.get(name, {}))}[/]",
        )
    if "controller" in s.faults:
        nodes.add_row("controller", "", "", "", f"[red]{_faults(s.faults['controller'])}[/]")
    return Group(head, Text(f"tasks by state: {tasks}"), nodes, Text("\n".join(s.recent), "dim"))


class Progress:
    """Callable handed to the runner as ``on_event``; a context manager around the run."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.live: Live | None = None
        self._phase = ""
        self._seen = 0

    def __enter__(self) -> Progress:
        if self.enabled and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, exc, tb)

    def __call__(self, state: LiveState) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(render_state(state))
            return
        if state.phase != self._phase and not state.phase.startswith("settling:"):
            self._phase = state.phase
            self.console.print(f"[cyan]» {state.phase}[/]")
        new = min(state.notes - self._seen, len(state.recent))
        for line in state.recent[len(state.recent) - new :] if new > 0 else ():
            self.console.print(f"  {line}")
        self._seen = state.notes
