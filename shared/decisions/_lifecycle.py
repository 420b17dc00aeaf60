"""A node leaving the continuum on purpose: what its work does when it is drained or removed.

An operator drains a node (``continuum drain``) to empty it, or removes it
(``continuum nodes remove --force``) while it still holds work. Each placed task
then moves by its own consistency level, on a node that is still in reach (an
unreachable node's work follows the partition rule, ``partition_move``):

- ``eventual`` work that is ``idempotent`` moves at once: a second run is a
  harmless hedge, and the old node stops its attempt when the superseding record
  reaches it; a non-idempotent one moves as ``causal`` does (below): a hedge of
  it would run its side effect twice, so no move re-places it while its attempt
  may be running;
- ``strong`` moves only without a live lease (no lease for this epoch, or one
  past its deadline plus the controller's margin: its holder was fenced by then);
  the old node's attempts of the epoch are presumed lost once a lease was granted
  (a live lease of the epoch holds a task of any level: its level in force may have
  risen to strong since it was placed);
- ``causal`` moves only while no attempt of the epoch has started; a started one
  runs to its end where it is.

What does not move now is asked again later (the lease runs out, the attempt
ends); on a forced removal it is cancelled instead (``Reconciler.evacuate`` in
``cloud/reconcile.py``).
"""

from __future__ import annotations

from shared.decisions._movement import Movability, MoveDecision
from shared.vocab import Level

__all__ = ["drain_move"]


def drain_move(facts: Movability, *, node_id: str, now: float) -> MoveDecision:
    """May this task leave ``node_id`` (draining or being removed) now? (see module doc)"""
    trigger = f"drain: {facts.level.value} task leaves {node_id}"
    lease = facts.lease if facts.lease is not None and facts.lease.epoch == facts.epoch else None
    if lease is not None and lease.live(now):  # any level: it may have risen to strong
        return MoveDecision.wait(f"{facts.level.value}: a live lease holds it here")
    if facts.level is Level.EVENTUAL and facts.idempotent:
        return MoveDecision(
            move=True,
            reason="eventual, idempotent: moves at once (a stale run is a harmless hedge)",
            trigger=trigger,
            exclude=(node_id,),
        )
    if facts.level is Level.STRONG:
        return MoveDecision(
            move=True,
            reason="strong: no lease for this epoch" if lease is None else "strong: lease expired",
            trigger=trigger,
            exclude=(node_id,),
            fence=lease is not None,
        )
    # causal, and eventual work that is not idempotent: never hedged
    kind = "causal" if facts.level is Level.CAUSAL else "eventual, not idempotent"
    if facts.started:
        return MoveDecision.wait(f"{kind}: started here, runs to its end")
    return MoveDecision(
        move=True, reason=f"{kind}: not started yet", trigger=trigger, exclude=(node_id,)
    )
