"""Operators: the runtime side of user functions.

Operator methods are synchronous and are never called concurrently (one subtask, one
coroutine). Records move through a chain in batches: ``process_batch(values,
timestamps)`` where ``timestamps`` is None when no record of the batch has one.
May import ``elements``, ``errors``, ``serialization``, ``functions``, ``eventtime``
and ``state``.
"""
