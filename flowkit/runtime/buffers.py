"""Moved: the byte layout of network buffers is :mod:`flowkit.runtime.network.codec`.

This module re-exports its names for code written against the old location.
"""

from flowkit.runtime.network.codec import EVENT as EVENT
from flowkit.runtime.network.codec import HEADER as HEADER
from flowkit.runtime.network.codec import HEADER_SIZE as HEADER_SIZE
from flowkit.runtime.network.codec import MARKER as MARKER
from flowkit.runtime.network.codec import RECORDS as RECORDS
from flowkit.runtime.network.codec import SPAN as SPAN
from flowkit.runtime.network.codec import TIMESTAMPS as TIMESTAMPS
from flowkit.runtime.network.codec import Event as Event
from flowkit.runtime.network.codec import decode_event as decode_event
from flowkit.runtime.network.codec import decode_segments as decode_segments
from flowkit.runtime.network.codec import encode_event as encode_event
from flowkit.runtime.network.codec import encode_marker as encode_marker
