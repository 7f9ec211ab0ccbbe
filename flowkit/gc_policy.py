"""How the cyclic garbage collector is run while a job runs. Imports nothing from flowkit.

A job keeps batches of young records alive for a moment and, in keyed state, holds large
dicts for its whole life. With Python's default collector settings both cost: the young
batches are scanned again and again, and every full collection walks every entry of
every state dict (about 130 ms for 500,000 keys on a 2-core machine), stalling the event
loop. :func:`tuned_gc` changes two things for the duration of a ``with`` block:

- the thresholds become :data:`JOB_GC_THRESHOLDS` (fewer, larger young collections;
  full collections rare);
- with ``freeze_survivors``, the objects that survive a collection of the middle
  generation are moved to the permanent generation (:func:`gc.freeze`), so a full
  collection only walks what became old since: long-lived state is out of its sight.

The price of ``freeze_survivors``: a reference cycle whose objects survived two young
collections before it became garbage is only freed after the block, when everything is
thawed (objects without cycles are freed by reference counting as always).

Independently of this block, flowkit's compiled helpers untrack the tuples of atoms
(str, int, float, None, bytes) they make or hand on: records read from channels, results,
window accumulators, the values of value, reducing and aggregating state. A dict of such
values then stays untracked, so keyed state and windows holding them are never walked,
frozen or not.

``env.execute()`` runs every job inside ``tuned_gc()`` (``freeze_gc=True``, the default);
``execute_async()`` leaves the collector to the host program, which may use the same
block around its own loop.

Example:
    >>> import flowkit as fk
    >>> with fk.tuned_gc():
    ...     pass  # asyncio.run(service_with_jobs())
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

__all__ = ["JOB_GC_THRESHOLDS", "settle", "tuned_gc"]

#: Collector thresholds while a job runs: a young collection every 20,000 net allocations
#: (Python's default: 700), the middle generation every 20 of those, and a full
#: collection at most every 100 middle ones.
JOB_GC_THRESHOLDS = (20_000, 20, 100)


#: Whether a :func:`tuned_gc` block freezes survivors right now.
_freezing = [False]


def _freeze_after_middle_collections(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] >= 1:
        gc.freeze()


def settle() -> None:
    """Freeze what exists now, inside a :func:`tuned_gc` block that freezes survivors.

    For code that has just made a large object that will live long (a copy of a key
    group's state after a snapshot): frozen at once, it is not walked by the young
    collections that would otherwise pass over all its entries before freezing it.
    Does nothing outside such a block.
    """
    if _freezing[0]:
        gc.freeze()


@contextlib.contextmanager
def tuned_gc(freeze_survivors: bool = True) -> Iterator[None]:
    """Run the block with the collector tuned for jobs; restore it afterwards.

    The objects alive on entry are frozen too. When the program froze objects itself
    before (``gc.get_freeze_count()`` is not 0), nothing is frozen or thawed, since
    thawing would thaw the program's objects as well: only the thresholds change. A
    disabled collector is left alone.

    Args:
        freeze_survivors: Freeze what survives each collection of the middle
            generation (see the module docstring for what that costs).
    """
    if not gc.isenabled():
        yield
        return
    thresholds = gc.get_threshold()
    freeze = not gc.get_freeze_count()
    if freeze:
        gc.freeze()
        if freeze_survivors:
            gc.callbacks.append(_freeze_after_middle_collections)
            _freezing[0] = True
    gc.set_threshold(*JOB_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            _freezing[0] = False
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(_freeze_after_middle_collections)
            gc.unfreeze()
