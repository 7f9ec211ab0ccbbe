"""Plans, no running: transformations -> stream graph -> job graph (chaining).

Plain data and pure functions, no asyncio. May import ``operators``, ``partitioners``
and everything they may import.
"""
