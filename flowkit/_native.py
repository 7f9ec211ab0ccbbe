"""The optional compiled helpers of flowkit (``flowkit/_speedups.c``), or None.

``pip install`` builds them from source when a C compiler is present; the build skips them
otherwise. With ``FLOWKIT_NO_EXTENSIONS=1`` in the environment flowkit ignores them even
when they are built. Either way flowkit runs its pure-Python versions, which give the same
results (the tests compare both).

A module built from another version of ``flowkit/_speedups.c`` (an editable install whose
sources changed since ``pip install``) is not used: flowkit logs a warning and runs the
pure-Python code until it is built again.

Imports nothing from flowkit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: The interface of ``flowkit/_speedups.c`` this code calls (``API_VERSION`` there).
API_VERSION = 12

_log = logging.getLogger("flowkit.native")


def _load() -> ModuleType | None:
    if os.environ.get("FLOWKIT_NO_EXTENSIONS"):
        return None
    try:
        from flowkit import _speedups
    except ImportError:
        return None
    built = getattr(_speedups, "API_VERSION", None)
    if built != API_VERSION:
        _log.warning(
            "flowkit._speedups (%s) was built from another version of flowkit/_speedups.c "
            "(interface %s, this flowkit calls %s): running the pure-Python code instead; "
            "run pip install again to rebuild it",
            _speedups.__file__,
            built,
            API_VERSION,
        )
        return None
    return _speedups


#: ``flowkit._speedups`` when it is built and not switched off, else None.
speedups: ModuleType | None = _load()


def _leave_tracked(value: Any) -> None:
    """Without the compiled helpers, the collector untracks such tuples itself."""


#: Untracks a tuple of atoms (str, int, float, None, bytes) from the cyclic collector, so
#: that a dict holding only such values stays untracked too (keyed state, timer buckets);
#: does nothing without the compiled helpers.
untrack_atoms: Callable[[Any], None] = (
    speedups.untrack_atoms if speedups is not None else _leave_tracked
)
