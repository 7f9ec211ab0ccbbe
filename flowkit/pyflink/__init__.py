"""PyFlink's module paths on flowkit: a PyFlink DataStream job runs on flowkit once
``pyflink`` is replaced by ``flowkit.pyflink`` in its imports.

Every name here is flowkit's own, re-exported where PyFlink keeps it
(``flowkit.pyflink.datastream``, ``flowkit.pyflink.common``,
``flowkit.pyflink.common.typeinfo``, ``flowkit.pyflink.datastream.window``...). What
flowkit does differently from PyFlink is said where each name is defined.

Logging: PyFlink's runtime logs into its own log files, so a PyFlink job that sends
Python's logging to standard output at INFO (several of Flink's examples do) prints only
its results. To keep it that way, importing this package sets the ``flowkit`` logger to
WARNING when nothing has set its level yet; set it (``logging.getLogger("flowkit")
.setLevel(logging.INFO)``) to see flowkit's job lifecycle lines. ``flowkit run`` sets it
itself.

Example:
    >>> from flowkit.pyflink.common import Types
    >>> from flowkit.pyflink.datastream import StreamExecutionEnvironment
    >>> env = StreamExecutionEnvironment.get_execution_environment()
    >>> env.set_parallelism(1)  # doctest: +ELLIPSIS
    <flowkit.api.environment.StreamExecutionEnvironment object at ...>
    >>> _ = env.from_collection([("hi", 1)], type_info=Types.TUPLE(
    ...     [Types.STRING(), Types.INT()])).print()
    >>> _ = env.execute()
    (hi,1)
"""

from __future__ import annotations

import logging

if logging.getLogger("flowkit").level == logging.NOTSET:
    logging.getLogger("flowkit").setLevel(logging.WARNING)
__all__ = []
