"""Talking to a running job's REST endpoint (``flowkit savepoint``, ``stop``, ``list``).

Only the standard library is used, so these commands work without the ``web`` extra;
the job itself must run with the web UI (``flowkit run --web`` or
``env.enable_web_ui(port)``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["DEFAULT_URL", "RestError", "request"]

#: Where ``flowkit run --web`` serves by default.
DEFAULT_URL = "http://127.0.0.1:8081"


class RestError(Exception):
    """The REST call failed: the message says what went wrong and where."""


def request(url: str, path: str, body: dict[str, Any] | None = None, timeout: float = 600.0) -> Any:
    """``GET`` (no body) or ``POST`` (JSON body) ``path`` on ``url``; the decoded JSON.

    Raises:
        RestError: no server there, an HTTP error (with the server's ``error`` text), or a
            reply that is not JSON.
    """
    target = url.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        target,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            message = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            message = text.strip() or exc.reason
        raise RestError(f"{target} answered {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RestError(
            f"no flowkit web UI at {url} ({reason}); start the job with `flowkit run --web` "
            f"and pass the address it prints with --url"
        ) from None
    try:
        return json.loads(payload)
    except ValueError:
        raise RestError(f"{target} did not answer with JSON") from None


def job_path(job: str) -> str:
    """``/api/jobs/<job>`` with the id quoted (``current``: the newest job)."""
    return "/api/jobs/" + urllib.parse.quote(job, safe="")
