"""The asyncio engine: subtasks, channels, record writers, the executor and job client.

The only package that creates tasks. May import ``graph``, ``checkpoint`` and everything
below them.
"""
