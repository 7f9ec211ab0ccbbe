"""NATS JetStream: ``JetStreamSource`` (a durable pull consumer, acknowledged when
checkpoints complete) and ``JetStreamSink`` (publishes with ``Nats-Msg-Id`` headers, so
JetStream's duplicate window drops what a restored job writes again).

Needs the ``nats`` extra (``pip install "flowkit[nats]"``, the nats-py client).

Example:
    >>> import flowkit as fk
    >>> from flowkit.connectors.nats import JetStreamSink, JetStreamSource
    >>> source = JetStreamSource(
    ...     "nats://127.0.0.1:4222", "orders", "orders.>", durable="order-job", ack_wait=30.0
    ... )
    >>> sink = JetStreamSink("nats://127.0.0.1:4222", "totals", msg_id_prefix="order-job")
    >>> env = fk.StreamExecutionEnvironment()
    >>> _ = env.enable_checkpointing(1000)
    >>> _ = env.from_source(source, None, "orders").map(str.upper).sink_to(sink)

Guarantees: the source is at-least-once (a message is acknowledged only when a checkpoint
that covers it completes; what was read after the checkpoint a job restores from is
delivered again by JetStream). The sink is at-least-once (every publish is acknowledged
by the server before the sink's checkpoint is taken); with its message ids, a record
written again after a restore is dropped by the server when it comes within the stream's
duplicate window (see :class:`JetStreamSink` for when a record gets the same id again).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from flowkit.connectors.base import (
    DeserializationSchema,
    SerializationSchema,
    SimpleStringSchema,
    emit_bad_record,
    require,
)
from flowkit.elements import OutputTag
from flowkit.errors import InvalidConfigurationError
from flowkit.sinks import Sink, SinkWriter
from flowkit.sources import (
    DeserializationError,
    InputStatus,
    ReaderOutput,
    SplitReader,
    SplitSource,
)

__all__ = ["JetStreamSink", "JetStreamSource", "StartPosition"]

_log = logging.getLogger("flowkit.connectors.nats")

#: Seconds a connection, an API request or a flush may take before it fails.
_REQUEST_TIMEOUT = 10.0
#: Seconds between two consumer-info requests for the lag (subtask 0, when idle).
_LAG_INTERVAL = 1.0


def _servers(servers: str | Sequence[str]) -> list[str]:
    if isinstance(servers, str):
        found = [s.strip() for s in servers.split(",") if s.strip()]
    else:
        found = [str(s) for s in servers]
    if not found:
        raise InvalidConfigurationError("JetStream connector: no NATS server URL given")
    return found


async def _connect(servers: list[str], options: dict[str, Any]) -> Any:
    nats = require("nats", "nats")
    settings: dict[str, Any] = {
        "connect_timeout": 5,
        "max_reconnect_attempts": 5,
        "allow_reconnect": True,
    }
    settings.update(options)
    return await nats.connect(servers=servers, **settings)


# ====================================================================== source
class StartPosition:
    """Where a *new* durable consumer starts (JetStream's deliver policy); an existing
    durable consumer goes on where it is.

    Example:
        >>> StartPosition.by_start_sequence(100)
        StartPosition('by_start_sequence', 100)
    """

    __slots__ = ("policy", "value")

    def __init__(self, policy: str, value: int | None = None) -> None:
        if policy not in ("all", "last", "new", "by_start_sequence", "by_start_time"):
            raise InvalidConfigurationError(
                f"JetStreamSource deliver_policy must be 'all', 'last', 'new', "
                f"StartPosition.by_start_sequence(n) or StartPosition.by_start_time(ms), "
                f"got {policy!r}"
            )
        if policy.startswith("by_") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise InvalidConfigurationError(
                f"StartPosition.{policy} needs a non-negative int, got {value!r}"
            )
        self.policy = policy
        self.value = value

    @classmethod
    def all(cls) -> StartPosition:
        """From the first message in the stream."""
        return cls("all")

    @classmethod
    def last(cls) -> StartPosition:
        """From the last message in the stream."""
        return cls("last")

    @classmethod
    def new(cls) -> StartPosition:
        """Only messages published after the consumer was created."""
        return cls("new")

    @classmethod
    def by_start_sequence(cls, sequence: int) -> StartPosition:
        """From stream sequence ``sequence`` on."""
        return cls("by_start_sequence", sequence)

    @classmethod
    def by_start_time(cls, epoch_ms: int) -> StartPosition:
        """From the first message stored at or after ``epoch_ms`` (epoch milliseconds)."""
        return cls("by_start_time", epoch_ms)

    def __repr__(self) -> str:
        if self.value is None:
            return f"StartPosition({self.policy!r})"
        return f"StartPosition({self.policy!r}, {self.value})"


class JetStreamSource(SplitSource):
    """Reads a JetStream stream through a durable pull consumer (nats-py).

    Every subtask fetches from the same durable consumer: JetStream hands each message to
    one of them. A split is one subtask's share, ``"<stream>/<durable>/<subtask>"``: its
    state is the acknowledgement subjects of the messages it emitted that are not
    acknowledged yet. Messages are not partitioned in JetStream, so a split cannot be a
    range of them; what has to survive a failure is exactly the set of messages read and
    not acknowledged, and that belongs to whoever read them. ``split_owner`` gives split
    ``i`` to subtask ``i % parallelism``, so each subtask owns its own split, and after a
    restore at another parallelism the old splits are spread over the new subtasks,
    which acknowledge the messages the checkpoint covers.

    Messages are acknowledged when a checkpoint that covers them completes; the state at
    each barrier holds every message emitted and not acknowledged yet (not only those
    since the last barrier: a completion notification may be lost). A restored reader
    acknowledges what its checkpoint covers before it reads anything. Messages read after
    that checkpoint are delivered again by JetStream after ``ack_wait``; those a reader
    read and no checkpoint covers are negatively acknowledged when it closes (after a
    failure or cancel), so they come again at once. Guarantee: **at-least-once** (a message
    can also come twice when a checkpoint takes longer than ``ack_wait`` to complete).
    Without checkpointing nothing is acknowledged.

    ``ack_wait`` must be longer than the time from reading a message to the completion of
    the checkpoint after it (checkpoint interval plus checkpoint duration), else JetStream
    delivers the message again meanwhile. Records carry the message's timestamp (epoch
    milliseconds) as event time.

    Args:
        servers: NATS URL(s), ``"nats://host:4222"`` or a list.
        stream: the stream.
        subject: filter subject of a new consumer (None: the whole stream), or a list of
            them (several need nats-server 2.10 or later; with an older server the
            reader fails to open rather than read the whole stream).
        durable: the durable consumer's name (created when missing, else reused as is).
        deserializer: a ``DeserializationSchema`` (``SimpleStringSchema()``,
            ``JsonSchema()``, ``RawBytesSchema()``).
        batch_size: messages per fetch request.
        ack_wait: seconds JetStream waits for an acknowledgement (new consumer).
        deliver_policy: where a new consumer starts: ``"all"``, ``"last"``, ``"new"`` or a
            :class:`StartPosition`.
        bounded: stop at the stream's last sequence as it was when the reader opened.
        dead_letter_tag: send messages that cannot be deserialized there as
            :class:`~flowkit.sources.DeadLetter` (else the job fails).
        max_ack_pending: most unacknowledged messages of a new consumer (all subtasks
            together; at least the messages read in one checkpoint interval).
        fetch_timeout: seconds a fetch request waits for messages.
        connect_options: more keyword arguments for ``nats.connect``.
    """

    bounded = False
    name = "JetStream Source"

    def __init__(
        self,
        servers: str | Sequence[str],
        stream: str,
        subject: str | Sequence[str] | None = None,
        *,
        durable: str,
        deserializer: DeserializationSchema | None = None,
        batch_size: int = 256,
        ack_wait: float = 30.0,
        deliver_policy: str | StartPosition = "all",
        bounded: bool = False,
        dead_letter_tag: OutputTag | None = None,
        max_ack_pending: int = 20_000,
        fetch_timeout: float = 0.5,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if not stream or not isinstance(stream, str):
            raise InvalidConfigurationError(f"JetStreamSource needs a stream name, got {stream!r}")
        if not durable or not isinstance(durable, str) or "." in durable:
            raise InvalidConfigurationError(
                f"JetStreamSource needs a durable consumer name without dots, got {durable!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidConfigurationError(
                f"JetStreamSource batch_size must be an int >= 1, got {batch_size!r}"
            )
        if not ack_wait > 0:
            raise InvalidConfigurationError(
                f"JetStreamSource ack_wait must be > 0 seconds, got {ack_wait!r}"
            )
        if not fetch_timeout > 0:
            raise InvalidConfigurationError(
                f"JetStreamSource fetch_timeout must be > 0 seconds, got {fetch_timeout!r}"
            )
        self.servers = _servers(servers)
        self.stream = stream
        subjects = [subject] if isinstance(subject, str) else list(subject or ())
        if not all(isinstance(s, str) and s for s in subjects):
            raise InvalidConfigurationError(
                f"JetStreamSource subject must be a subject or a list of them, got {subject!r}"
            )
        #: The filter subjects of a new consumer (empty: the whole stream).
        self.subjects = subjects
        self.durable = durable
        self.deserializer = deserializer if deserializer is not None else SimpleStringSchema()
        self.batch_size = batch_size
        self.ack_wait = float(ack_wait)
        self.deliver_policy = (
            deliver_policy
            if isinstance(deliver_policy, StartPosition)
            else StartPosition(deliver_policy)
        )
        self.bounded = bool(bounded)
        self.dead_letter_tag = dead_letter_tag
        self.max_ack_pending = max_ack_pending
        self.fetch_timeout = float(fetch_timeout)
        self.connect_options = dict(connect_options or {})

    def split_id(self, subtask_index: int) -> str:
        return f"{self.stream}/{self.durable}/{subtask_index}"

    def split_owner(self, split_id: str, parallelism: int) -> int:
        _, _, index = split_id.rpartition("/")
        return (
            int(index) % parallelism
            if index.isdigit()
            else super().split_owner(split_id, parallelism)
        )

    def set_dead_letter_tag(self, tag: OutputTag) -> JetStreamSource:
        """Send messages that cannot be deserialized to ``tag`` instead of failing."""
        self.dead_letter_tag = tag
        return self

    def consumer_config(self) -> Any:
        """The ``ConsumerConfig`` of a new durable consumer."""
        api = require("nats.js.api", "nats")
        start = self.deliver_policy
        config = api.ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            deliver_policy=api.DeliverPolicy(start.policy),
            max_ack_pending=self.max_ack_pending,
        )
        if len(self.subjects) == 1:
            config.filter_subject = self.subjects[0]
        elif self.subjects:
            config.filter_subjects = list(self.subjects)
        if start.policy == "by_start_sequence":
            config.opt_start_seq = start.value
        elif start.policy == "by_start_time":
            assert start.value is not None
            config.opt_start_time = datetime.datetime.fromtimestamp(
                start.value / 1000, tz=datetime.UTC
            )
        return config

    def create_reader(self, subtask_index: int, parallelism: int) -> JetStreamReader:
        return JetStreamReader(self, subtask_index, parallelism)


async def _publish_all(nc: Any, subjects: list[str], payload: bytes) -> None:
    """Publish ``payload`` (an acknowledgement: ``+ACK``, ``-NAK``) to every subject and
    wait until the server has them."""
    for subject in subjects:
        await nc.publish(subject, payload)
    await nc.flush(timeout=_REQUEST_TIMEOUT)


def _parse_reply(reply: str) -> tuple[int, int, int]:
    """Stream sequence, timestamp (ms) and pending count from an ack subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>``, or the
    form with domain and account hash before the stream)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]) // 1_000_000, int(tokens[8])
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[9]) // 1_000_000, int(tokens[10])
    raise ValueError(f"not a JetStream acknowledgement subject: {reply!r}")


#: Open readers per (servers, stream, durable) in this process: a bounded read waits for
#: messages held elsewhere (e.g. by a process that died) to come back, not for its own.
_readers: dict[tuple[tuple[str, ...], str, str], set[JetStreamReader]] = {}


class JetStreamReader(SplitReader):
    """The reader of one :class:`JetStreamSource` subtask (see there)."""

    def __init__(self, source: JetStreamSource, subtask_index: int, parallelism: int) -> None:
        self.source = source
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.split = source.split_id(subtask_index)
        self._key = (tuple(source.servers), source.stream, source.durable)
        #: Ack subjects of restored splits, acknowledged in ``open()``.
        self._restored: dict[str, list[str]] = {}
        #: Fetched, not emitted: (reply, subject, data, stream sequence, timestamp ms).
        self._buffer: deque[tuple[str, str, bytes, int, int]] = deque()
        #: Ack subjects of the messages emitted and not acknowledged, in reading order;
        #: ``_base`` is the number of messages acknowledged (removed) before them.
        self._pending: deque[str] = deque()
        self._base = 0
        #: Messages emitted so far (positions in the reading order).
        self._emitted = 0
        #: Checkpoint id -> messages emitted at its barrier (not completed nor aborted).
        self._barriers: dict[int, int] = {}
        #: Acknowledge the messages before this position.
        self._ack_target = 0
        self._nc: Any = None
        self._sub: Any = None
        self._last_seq: int | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._available: asyncio.Future[None] | None = None
        self._space: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._stopping = False
        self._lag: int | None = None
        #: When the pull request in flight expires (loop time), None when none is.
        self._fetch_expires: float | None = None
        self._bad: tuple[DeserializationError, BaseException] | None = None
        #: (position of the first message, monotonic time) of each batch emitted and not
        #: acknowledged: how long messages waited for their checkpoint.
        self._emit_times: deque[tuple[int, float]] = deque()
        self._warned_ack_wait = False
        #: Whether a checkpoint barrier ever reached this reader / it reported the end.
        self._snapshotted = False
        self._finished = False

    # ------------------------------------------------------------------ state
    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        self._barriers[checkpoint_id] = self._emitted
        self._snapshotted = True
        return {self.split: {"acks": list(self._pending)}}

    def restore_splits(self, splits: dict[str, Any]) -> None:
        self._restored = {
            split: list((state or {}).get("acks", ())) for split, state in splits.items()
        }

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        position = self._barriers.pop(checkpoint_id, None)
        for older in [c for c in self._barriers if c < checkpoint_id]:
            position = max(position or 0, self._barriers.pop(older))
        if position is None or position <= self._ack_target:
            return
        self._ack_target = position
        self._check_ack_wait(position)
        if self._acker is None or self._acker.done():
            self._acker = asyncio.get_running_loop().create_task(
                self._ack_loop(), name=f"flowkit ack {self.split}"
            )

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        self._barriers.pop(checkpoint_id, None)

    def _check_ack_wait(self, position: int) -> None:
        """Warn (once) when messages waited longer than ``ack_wait`` for the checkpoint
        that covers them: JetStream has delivered them again meanwhile."""
        times = self._emit_times
        oldest: float | None = None
        while times and times[0][0] < position:
            read_at = times.popleft()[1]
            if oldest is None:
                oldest = read_at
        if oldest is None or self._warned_ack_wait:
            return
        waited = time.monotonic() - oldest
        if waited > self.source.ack_wait:
            self._warned_ack_wait = True
            _log.warning(
                "JetStream source %s: a message waited %.1f s for the checkpoint covering "
                "it to complete, longer than ack_wait (%s s): JetStream delivered it again "
                "meanwhile (duplicates). Make ack_wait longer than the checkpoint interval "
                "plus the time a checkpoint takes",
                self.split,
                waited,
                self.source.ack_wait,
            )

    async def _ack_loop(self) -> None:
        while self._ack_target > self._base and self._nc is not None:
            count = self._ack_target - self._base
            replies = list(itertools.islice(self._pending, count))
            try:
                await _publish_all(self._nc, replies, b"+ACK")
            except Exception as exc:
                _log.warning(
                    "JetStream source %s: acknowledging %d messages failed (JetStream "
                    "delivers them again after ack_wait): %s",
                    self.split,
                    count,
                    exc,
                )
                return
            for _ in range(count):
                self._pending.popleft()
            self._base += count

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        source = self.source
        errors = require("nats.js.errors", "nats")
        self._space = asyncio.Event()
        self._nc = await _connect(source.servers, source.connect_options)
        js = self._nc.jetstream(timeout=_REQUEST_TIMEOUT)
        try:
            info = await js.consumer_info(source.stream, source.durable)
        except errors.NotFoundError:
            info = None
        created = info is None
        if info is None:
            try:
                info = await js.add_consumer(source.stream, config=source.consumer_config())
                _log.info(
                    "JetStream source: created durable consumer %r on stream %r (%s)",
                    source.durable,
                    source.stream,
                    source.deliver_policy,
                )
            except errors.NotFoundError as exc:
                raise InvalidConfigurationError(
                    f"JetStream source: there is no stream {source.stream!r} on "
                    f"{', '.join(source.servers)} ({exc.description or exc})"
                ) from exc
            except errors.BadRequestError:
                # Another subtask created it first (with the same configuration).
                info = await js.consumer_info(source.stream, source.durable)
        if len(source.subjects) > 1 and sorted(info.config.filter_subjects or ()) != sorted(
            source.subjects
        ):
            if created:  # the server ignored the filters: remove the consumer it made
                with contextlib.suppress(Exception):
                    await js.delete_consumer(source.stream, source.durable)
            raise InvalidConfigurationError(
                f"JetStream source: durable consumer {source.durable!r} on stream "
                f"{source.stream!r} does not filter {source.subjects} (it has "
                f"{info.config.filter_subjects or info.config.filter_subject!r}); several "
                f"filter subjects need nats-server 2.10 or later: use one subject with "
                f"wildcards, or one source per subject"
            )
        configured = getattr(info.config, "ack_wait", None)
        if configured is not None and abs(configured - source.ack_wait) > 1e-3:
            _log.warning(
                "JetStream source: durable consumer %r keeps its ack_wait of %s s "
                "(not the %s s given)",
                source.durable,
                configured,
                source.ack_wait,
            )
        if source.bounded:
            stream = await js.stream_info(source.stream)
            self._last_seq = int(stream.state.last_seq)
        restored = [reply for acks in self._restored.values() for reply in acks]
        if restored:
            await _publish_all(self._nc, restored, b"+ACK")
            _log.info(
                "JetStream source %s: acknowledged the %d messages its checkpoint covers",
                self.split,
                len(restored),
            )
        self._restored = {}
        self._sub = await js.pull_subscribe_bind(durable=source.durable, stream=source.stream)
        _readers.setdefault(self._key, set()).add(self)
        self._fetcher = asyncio.get_running_loop().create_task(
            self._fetch_loop(js), name=f"flowkit fetch {self.split}"
        )

    async def _fetch_loop(self, js: Any) -> None:
        nats_errors = require("nats.errors", "nats")
        source = self.source
        limit = 2 * source.batch_size
        last_seq = self._last_seq
        lag_at = 0.0
        loop = asyncio.get_running_loop()
        space = self._space
        assert space is not None
        try:
            while not self._stopping:
                while len(self._buffer) >= limit and not self._stopping:
                    space.clear()
                    await space.wait()
                if self._stopping:
                    break
                self._fetch_expires = loop.time() + source.fetch_timeout
                try:
                    messages = await self._sub.fetch(
                        source.batch_size, timeout=source.fetch_timeout
                    )
                except (TimeoutError, nats_errors.TimeoutError):
                    messages = []
                self._fetch_expires = None
                if not messages:
                    now = loop.time()
                    if last_seq is not None or (self.subtask_index == 0 and now >= lag_at):
                        lag_at = now + _LAG_INTERVAL
                        try:
                            info = await js.consumer_info(source.stream, source.durable)
                        except (TimeoutError, nats_errors.TimeoutError) as exc:
                            # Only the lag (or the end of a bounded read) waits for it.
                            _log.debug("JetStream source %s: consumer info: %r", self.split, exc)
                            continue
                        self._lag = int(info.num_pending)
                        if last_seq is not None and self._read_to(last_seq, info):
                            break
                    continue
                buffer = self._buffer
                beyond: list[str] = []
                for msg in messages:
                    reply = msg.reply
                    seq, ts, pending = _parse_reply(reply)
                    if last_seq is not None and seq > last_seq:
                        beyond.append(reply)
                        continue
                    buffer.append((reply, msg.subject, msg.data, seq, ts))
                    self._lag = pending
                self._signal()
                if beyond:
                    # Past the end of a bounded read: for a later consumer of the stream.
                    await _publish_all(self._nc, beyond, b"-NAK")
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
        finally:
            self._ended = True
            self._signal()

    def _read_to(self, last_seq: int, info: Any) -> bool:
        """A bounded read is done: every message up to ``last_seq`` was delivered, and
        every one not acknowledged is held by a reader of this source in this process
        (none waits to be delivered again, e.g. after a failure)."""
        if info.num_pending != 0 and info.delivered.stream_seq < last_seq:
            return False
        held = sum(len(r._pending) + len(r._buffer) for r in _readers.get(self._key, ()))
        return int(info.num_ack_pending) <= held

    def _signal(self) -> None:
        available = self._available
        if available is not None and not available.done():
            available.set_result(None)

    async def close(self) -> None:
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None and not fetcher.done():
            # Let the fetch in flight end (cancelled, the messages it took would be lost
            # until ack_wait); cancel it only when it does not end in time.
            self._stopping = True
            if self._space is not None:
                self._space.set()
            await asyncio.wait({fetcher}, timeout=self.source.fetch_timeout + 1.0)
            if not fetcher.done():
                fetcher.cancel()
                await asyncio.wait({fetcher})
        acker, self._acker = self._acker, None
        if acker is not None and not acker.done():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_REQUEST_TIMEOUT):
                    await acker
        nc, self._nc = self._nc, None
        if nc is None:
            return
        readers = _readers.get(self._key)
        if readers is not None:
            readers.discard(self)
            if not readers:
                del _readers[self._key]
        try:
            if not nc.is_closed:
                await self._give_back(nc)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_REQUEST_TIMEOUT):
                    await nc.close()

    async def _give_back(self, nc: Any) -> None:
        """Negatively acknowledge the messages no checkpoint that may still complete
        covers (read after the last barrier, or fetched and never emitted), so that
        JetStream delivers them again at once rather than after ack_wait."""
        leftovers = [item[0] for item in self._buffer]
        self._buffer.clear()
        sub = self._sub
        if sub is not None:
            # The server may still answer the pull request that was in flight: wait until
            # it expires, then take what it delivered.
            expires = self._fetch_expires
            if expires is not None:
                wait = expires - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(min(wait, self.source.fetch_timeout) + 0.02)
            with contextlib.suppress(Exception):
                await nc.flush(timeout=_REQUEST_TIMEOUT)
            queue = getattr(getattr(sub, "_sub", None), "_pending_queue", None)
            while queue is not None and not queue.empty():
                reply = queue.get_nowait().reply
                if reply and reply.startswith("$JS.ACK."):
                    leftovers.append(reply)
        if self._finished and not self._snapshotted and self._pending:
            # A bounded read that ended in a job without checkpoints: nothing else will
            # ever acknowledge what it read.
            try:
                await _publish_all(nc, list(self._pending), b"+ACK")
                self._pending.clear()
            except Exception as exc:
                _log.warning(
                    "JetStream source %s: acknowledging the %d messages read failed "
                    "(JetStream delivers them again after ack_wait): %s",
                    self.split,
                    len(self._pending),
                    exc,
                )
        covered = max(self._barriers.values(), default=self._ack_target)
        skip = max(0, covered - self._base)
        uncovered = list(itertools.islice(self._pending, skip, None)) + leftovers
        if not uncovered:
            return
        try:
            await _publish_all(nc, uncovered, b"-NAK")
        except Exception as exc:
            _log.warning(
                "JetStream source %s: could not give back %d unprocessed messages "
                "(JetStream delivers them again after ack_wait): %s",
                self.split,
                len(uncovered),
                exc,
            )

    # ------------------------------------------------------------------ reading
    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        bad = self._bad
        if bad is not None:
            self._bad = None
            raise bad[0] from bad[1]
        buffer = self._buffer
        if not buffer:
            if self._ended:
                error = self._error
                if error is not None:
                    self._error = None
                    raise error
                if self.source.bounded:
                    self._finished = True
                    return InputStatus.END_OF_INPUT
            return InputStatus.NOTHING_AVAILABLE
        count = min(len(buffer), max(1, max_records))
        items = [buffer.popleft() for _ in range(count)]
        if self._space is not None:
            self._space.set()
        deserialize = self.source.deserializer.deserialize
        try:
            values = [deserialize(item[2]) for item in items]
            timestamps = [item[4] for item in items]
        except Exception:
            values, timestamps = self._deserialize_one_by_one(output, items)
        self._pending.extend(item[0] for item in items)
        self._emit_times.append((self._emitted, time.monotonic()))
        self._emitted += len(items)
        if values:
            output.collect_batch(values, timestamps)
        return InputStatus.MORE_AVAILABLE

    def _deserialize_one_by_one(
        self, output: ReaderOutput, items: list[tuple[str, str, bytes, int, int]]
    ) -> tuple[list[Any], list[Any]]:
        """The values of a batch holding a bad message: those before it (and after it,
        with a dead-letter tag, the bad ones going there)."""
        deserialize = self.source.deserializer.deserialize
        tag = self.source.dead_letter_tag
        values: list[Any] = []
        timestamps: list[Any] = []
        for index, (_reply, subject, data, seq, ts) in enumerate(items):
            try:
                value = deserialize(data)
            except Exception as exc:
                error = DeserializationError(
                    "nats",
                    self.source.stream,
                    subject,
                    seq,
                    bytes(data),
                    f"{type(exc).__name__}: {exc}",
                    topic_kind="stream",
                    partition_kind="subject",
                    offset_kind="stream sequence",
                )
                if tag is None:
                    # Raised by the next poll, after the messages before it; it and the
                    # rest go back to the buffer (given back to JetStream on close).
                    for item in reversed(items[index:]):
                        self._buffer.appendleft(item)
                    del items[index:]
                    self._bad = (error, exc)
                    return values, timestamps
                if values:
                    output.collect_batch(values, timestamps)
                    values, timestamps = [], []
                emit_bad_record(output, tag, error, exc, ts)
                continue
            values.append(value)
            timestamps.append(ts)
        return values, timestamps

    def is_available(self) -> Awaitable[Any] | None:
        if self._buffer or self._ended or self._bad is not None:
            return None
        available = self._available
        if available is None or available.done():
            available = self._available = asyncio.get_running_loop().create_future()
        return available

    def metrics(self) -> dict[str, Any]:
        """``{"lag": {"<stream>/<durable>": messages not delivered yet}}`` — the durable
        consumer's ``num_pending``, shared by all subtasks, so only subtask 0 reports it."""
        if self.subtask_index != 0 or self._lag is None:
            return {}
        return {"lag": {f"{self.source.stream}/{self.source.durable}": self._lag}}


# ====================================================================== sink
class JetStreamSink(Sink):
    """Publishes records to JetStream and waits for the server's acknowledgements.

    Each message gets a ``Nats-Msg-Id`` header, and JetStream drops a message whose id it
    has seen within the stream's ``duplicate_window`` (2 minutes by default). The id is
    ``"<msg_id_prefix>-<subtask>-<n>-<digest>"``: ``n`` counts the records the subtask
    wrote since the job began (the count is in the checkpoint, so after a restore it
    starts again where the restored checkpoint was taken) and ``digest`` is a hash of the
    message's bytes. A record written again after a restore gets the same id as the first
    time — and is dropped — when the records reaching the sink subtask after the
    checkpoint come in the same order as before (the job's output between two checkpoints
    is deterministic: e.g. a replayable source read in order, one input channel per sink
    subtask). When they come in another order (a JetStream source gives back unprocessed
    messages in another order; parallel inputs interleave differently), the ids differ
    and those records are published twice; the digest makes sure a different record never
    takes the id of one published before, so nothing is dropped wrongly. For ids that
    survive any order, give ``msg_id=lambda record: ...`` (a unique id per record, e.g.
    from the input message's stream sequence).

    Guarantee: at-least-once (all publishes of the records before a barrier are
    acknowledged before the sink's checkpoint is taken); effectively once within the
    duplicate window when the ids repeat as described.

    Args:
        servers: NATS URL(s).
        subject: the subject to publish to, or
        subject_selector: a function ``record -> subject``.
        serializer: a ``SerializationSchema`` (default ``SimpleStringSchema()``).
        msg_id_prefix: start of the generated ids; give each job writing to a stream its
            own (default ``"flowkit-<subject>"``).
        msg_id: a function ``record -> id`` instead of the generated ids (None: generated;
            False: no ``Nats-Msg-Id`` header).
        stream: the stream the subject must belong to (``Nats-Expected-Stream``).
        publish_timeout: seconds to wait for the acknowledgements of a batch.
        connect_options: more keyword arguments for ``nats.connect``.
    """

    name = "JetStream Sink"

    def __init__(
        self,
        servers: str | Sequence[str],
        subject: str | None = None,
        serializer: SerializationSchema | None = None,
        *,
        subject_selector: Callable[[Any], str] | None = None,
        msg_id_prefix: str | None = None,
        msg_id: Callable[[Any], str] | bool | None = None,
        stream: str | None = None,
        publish_timeout: float = 30.0,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if (subject is None) == (subject_selector is None):
            raise InvalidConfigurationError(
                "JetStreamSink needs either subject= or subject_selector= (one of them)"
            )
        if msg_id is True or (msg_id is not None and msg_id is not False and not callable(msg_id)):
            raise InvalidConfigurationError(
                f"JetStreamSink msg_id must be a function record -> id, None or False, "
                f"got {msg_id!r}"
            )
        self.servers = _servers(servers)
        self.subject = subject
        self.subject_selector = subject_selector
        self.serializer = serializer if serializer is not None else SimpleStringSchema()
        self.msg_id_prefix = msg_id_prefix or f"flowkit-{subject or 'selected'}"
        self.msg_id = msg_id
        self.stream = stream
        self.publish_timeout = float(publish_timeout)
        self.connect_options = dict(connect_options or {})

    def create_writer(self, subtask_index: int, parallelism: int) -> JetStreamWriter:
        return JetStreamWriter(self, subtask_index, parallelism)


class JetStreamWriter(SinkWriter):
    """The writer of one :class:`JetStreamSink` subtask."""

    is_async = True

    def __init__(self, sink: JetStreamSink, subtask_index: int, parallelism: int) -> None:
        self.sink = sink
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        #: Records written by this subtask since the job began (the ``n`` of the ids).
        self.count = 0
        #: Publishes the server reported as duplicates (dropped).
        self.duplicates = 0
        self._nc: Any = None
        self._js: Any = None

    # ------------------------------------------------------------------ state
    def initialize_state(self, states: list[Any]) -> None:
        counts = [
            state["count"]
            for state in states
            if isinstance(state, dict) and state.get("subtask") == self.subtask_index
        ]
        if counts:
            self.count = max(counts)
        elif states:
            # Another parallelism: start after every count restored (ids stay distinct).
            self.count = max((s.get("count", 0) for s in states if isinstance(s, dict)), default=0)

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return {"subtask": self.subtask_index, "count": self.count}

    # ------------------------------------------------------------------ writing
    async def _connect(self) -> None:
        self._nc = await _connect(self.sink.servers, self.sink.connect_options)
        self._js = self._nc.jetstream(timeout=self.sink.publish_timeout)

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        if self._js is None:
            await self._connect()
        sink = self.sink
        serialize = sink.serializer.serialize
        payloads = [serialize(value) for value in values]
        selector = sink.subject_selector
        subjects = [selector(v) for v in values] if selector is not None else None
        ids = self._ids(values, payloads)
        js = self._js
        stream = sink.stream
        futures = []
        for index, payload in enumerate(payloads):
            subject = sink.subject if subjects is None else subjects[index]
            headers = None if ids is None else {"Nats-Msg-Id": ids[index]}
            futures.append(await js.publish_async(subject, payload, headers=headers, stream=stream))
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that comes as the acknowledgements do, and the subtask would
            # go on after its job was cancelled.
            async with asyncio.timeout(sink.publish_timeout):
                acks = await asyncio.gather(*futures)
        except TimeoutError:
            raise TimeoutError(
                f"JetStream sink (subtask {self.subtask_index}): {len(futures)} publishes to "
                f"{sink.subject or 'the selected subjects'} not acknowledged within "
                f"{sink.publish_timeout} s"
            ) from None
        except Exception as exc:
            raise RuntimeError(
                f"JetStream sink (subtask {self.subtask_index}): publishing to "
                f"{sink.subject or 'the selected subjects'} failed: {exc!r}"
            ) from exc
        self.duplicates += sum(1 for ack in acks if ack.duplicate)
        self.batch_progress = len(values)

    def _ids(self, values: list[Any], payloads: list[bytes]) -> list[str] | None:
        msg_id = self.sink.msg_id
        if msg_id is False:
            return None
        if callable(msg_id):
            return [str(msg_id(value)) for value in values]
        start = self.count
        self.count = start + len(payloads)
        prefix = f"{self.sink.msg_id_prefix}-{self.subtask_index}-"
        blake = hashlib.blake2b
        return [
            f"{prefix}{start + i}-{blake(payload, digest_size=8).hexdigest()}"
            for i, payload in enumerate(payloads)
        ]

    async def close_async(self) -> None:
        """Close the connection (the subtask awaits this at its end, also after a failure
        or cancel)."""
        nc, self._nc = self._nc, None
        self._js = None
        if nc is not None:
            await nc.close()
