"""Keyed and operator state, key groups. May import only flowkit.errors, flowkit.elements, flowkit.serialization, flowkit._util."""
