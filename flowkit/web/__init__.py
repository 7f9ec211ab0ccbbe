"""The web UI: a JSON REST API and a single-page dashboard for running jobs.

Start it with ``env.enable_web_ui(port)`` before ``execute()`` / ``execute_async()``; it
needs the optional extra ``web`` (``pip install 'flowkit-streaming[web]'``). The server
runs in the job's own event loop and reads metrics only when a request asks for them.

Example:
    >>> from flowkit import StreamExecutionEnvironment
    >>> env = StreamExecutionEnvironment().enable_web_ui(port=0)
    >>> env.web_ui_url is None  # bound once a job starts
    True
"""

from __future__ import annotations

import importlib.util
import ipaddress

from flowkit.errors import InvalidConfigurationError

__all__ = ["INSTALL_HINT", "is_loopback", "require_aiohttp"]

#: What to install for the web UI.
INSTALL_HINT = "pip install 'flowkit-streaming[web]'"


def require_aiohttp() -> None:
    """Raise :class:`InvalidConfigurationError` unless aiohttp (the extra ``web``) is installed."""
    if importlib.util.find_spec("aiohttp") is None:
        raise InvalidConfigurationError(
            f"the web UI needs aiohttp, which is not installed; install the extra 'web': "
            f"{INSTALL_HINT}"
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the addresses in 127.0.0.0/8 and ::1 (brackets allowed).

    Example:
        >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0", "a.b")]
        [True, True, True, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
