"""PyFlink's module paths on flowkit: a PyFlink DataStream job runs on flowkit once
``pyflink`` is replaced by ``flowkit.pyflink`` in its imports.

Every name here is flowkit's own, re-exported where PyFlink keeps it
(``flowkit.pyflink.datastream``, ``flowkit.pyflink.common``,
``flowkit.pyflink.common.typeinfo``, ``flowkit.pyflink.datastream.window``...). What
flowkit does differently from PyFlink is said where each name is defined.

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

__all__ = []
