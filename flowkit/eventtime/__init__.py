"""Event time: watermark generation and propagation, timers, clocks.

May import only ``flowkit.elements``, ``flowkit.errors``, ``flowkit.serialization``
and ``flowkit._util``.
"""
