"""The optional compiled helpers of flowkit (``flowkit/_speedups.c``), or None.

``pip install`` builds them from source when a C compiler is present; the build skips them
otherwise. With ``FLOWKIT_NO_EXTENSIONS=1`` in the environment flowkit ignores them even
when they are built. Either way flowkit runs its pure-Python versions, which give the same
results (the tests compare both).

Imports nothing from flowkit.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("FLOWKIT_NO_EXTENSIONS"):
        return None
    try:
        from flowkit import _speedups
    except ImportError:
        return None
    return _speedups


#: ``flowkit._speedups`` when it is built and not switched off, else None.
speedups: ModuleType | None = _load()
