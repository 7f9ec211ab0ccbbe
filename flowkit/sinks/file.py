"""The exactly-once row-format file sink, built on the two-phase commit protocol of
:mod:`flowkit.sinks.two_phase_commit` (see :class:`FileSink` for the names of its part
files).

Example:
    >>> import flowkit as fk
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = tmp.name
    >>> sink = FileSink.for_row_format(out, encoder="text").build()
    >>> sink.commit_on_finish = True  # this job runs without checkpoints
    >>> env = fk.StreamExecutionEnvironment(parallelism=1)
    >>> _ = env.from_collection(["a", "b"]).sink_to(sink)
    >>> _ = env.execute()
    >>> sorted(os.listdir(out))
    ['part-0-0']
    >>> with open(os.path.join(out, "part-0-0")) as f:
    ...     f.read()
    'a\\nb\\n'
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO, Any

import orjson

from flowkit.sinks.two_phase_commit import TwoPhaseCommitSink, TwoPhaseCommitSinkWriter

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: abandoned files are kept
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Encoder",
    "FileSink",
    "FileSinkContext",
    "FileSinkWriter",
    "FileTransaction",
    "OutputFileConfig",
    "OutputFileConfigBuilder",
    "PartFile",
    "RollingPolicy",
    "RowFormatBuilder",
]


@dataclass(frozen=True)
class OutputFileConfig:
    """Names of finished part files: ``<prefix>-<subtask>-<n><suffix>``.

    Raises:
        ValueError: ``prefix`` is empty or starts with a dot, or either part contains a
            path separator.
    """

    prefix: str = "part"
    suffix: str = ""

    @staticmethod
    def builder() -> OutputFileConfigBuilder:
        """PyFlink's ``OutputFileConfig.builder().with_part_prefix(...).build()``."""
        return OutputFileConfigBuilder()

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith("."):
            raise ValueError(
                f"OutputFileConfig prefix must be non-empty and must not start with a dot "
                f"(hidden names are for unfinished files), got {self.prefix!r}"
            )
        for part in (self.prefix, self.suffix):
            if "/" in part or "\\" in part or "\0" in part:
                raise ValueError(f"OutputFileConfig parts must be plain names, got {part!r}")


class OutputFileConfigBuilder:
    """Builds an :class:`OutputFileConfig` (``with_part_prefix``, ``with_part_suffix``)."""

    def __init__(self) -> None:
        self._prefix = "part"
        self._suffix = ""

    def with_part_prefix(self, prefix: str) -> OutputFileConfigBuilder:
        self._prefix = prefix
        return self

    def with_part_suffix(self, suffix: str) -> OutputFileConfigBuilder:
        self._suffix = suffix
        return self

    def build(self) -> OutputFileConfig:
        return OutputFileConfig(self._prefix, self._suffix)


@dataclass(frozen=True)
class RollingPolicy:
    """When the file sink starts a new part file within one checkpoint interval.

    Every checkpoint closes the current part file anyway (its data is committed with the
    checkpoint). Additionally, a part file that has reached ``max_part_size`` bytes is
    rolled: closed (it becomes pending and is committed by the next completed
    checkpoint) and the next record starts a new part file. ``None``: no size limit.

    Raises:
        ValueError: ``max_part_size`` is not a positive int.
    """

    max_part_size: int | None = 128 * 1024 * 1024

    def __post_init__(self) -> None:
        size = self.max_part_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"max_part_size must be an int >= 1 or None, got {size!r}")

    @staticmethod
    def default_rolling_policy(
        part_size: int = 128 * 1024 * 1024,
        rollover_interval: int = 60 * 1000,
        inactivity_interval: int = 60 * 1000,
    ) -> RollingPolicy:
        """PyFlink's spelling: roll part files at ``part_size`` bytes.

        ``rollover_interval`` and ``inactivity_interval`` are accepted: flowkit closes the
        part file at every checkpoint (and at the end of input), so no part file stays
        open longer than a checkpoint interval anyway.
        """
        for name, value in (
            ("rollover_interval", rollover_interval),
            ("inactivity_interval", inactivity_interval),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be milliseconds >= 1, got {value!r}")
        return RollingPolicy(max_part_size=part_size)

    @staticmethod
    def on_checkpoint_rolling_policy() -> RollingPolicy:
        """Roll part files only at checkpoints (no size limit)."""
        return RollingPolicy(max_part_size=None)


@dataclass(frozen=True)
class PartFile:
    """One part file of a :class:`FileTransaction` (names relative to the sink directory).

    Attributes:
        index: the part index ``n`` (per subtask, never reused by a running writer).
        in_progress_name: the hidden name the file has until it is committed.
        final_name: the visible name it is renamed to by the commit.
    """

    index: int
    in_progress_name: str
    final_name: str


@dataclass
class FileTransaction:
    """The part files a file-sink subtask wrote between two checkpoints.

    Attributes:
        subtask: index of the writing subtask.
        session: random id of the writer that began the transaction; every hidden file
            that writer creates ends with ``.inprogress.<session>``.
        files: the part files, oldest first; only the last one may still be open.
    """

    subtask: int
    session: str
    files: list[PartFile] = field(default_factory=list)


@dataclass(frozen=True)
class FileSinkContext:
    """The file-sink writer's extra checkpointed state: the next part index to use."""

    subtask: int
    next_part: int


EncoderFunction = Callable[[Any], str | bytes]


class Encoder:
    """How the file sink writes a record as a line (PyFlink's ``Encoder``).

    ``Encoder.simple_string_encoder()`` writes each record's string form: Python's
    ``str``, or, on a stream that carries type information, the form Java prints (as
    ``print()`` does; ``(hi,0,5,4)`` for a ``Types.TUPLE`` record).

    Example:
        >>> Encoder.simple_string_encoder()(("a", 1))
        b"('a', 1)"
    """

    __slots__ = ("charset", "format")

    def __init__(self, format: Callable[[Any], str] = str, charset: str = "UTF-8") -> None:
        "".encode(charset)  # an unknown charset fails here, not in the job
        self.format = format
        self.charset = charset

    @staticmethod
    def simple_string_encoder(charset_name: str = "UTF-8") -> Encoder:
        """Each record's string form, in ``charset_name``."""
        return Encoder(str, charset_name)

    def for_type_info(self, type_info: Any) -> Encoder:
        """This encoder writing records as Java prints ``type_info`` (itself when the
        type prints with Python's ``str`` or it formats records its own way)."""
        if self.format is not str or getattr(type_info, "prints_with_python_str", True):
            return self
        return Encoder(type_info.to_java_string, self.charset)

    def __call__(self, value: Any) -> bytes:
        return self.format(value).encode(self.charset)

    def __repr__(self) -> str:
        return f"Encoder.simple_string_encoder({self.charset!r})"


_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _encode_jsonl(value: Any) -> bytes:
    return orjson.dumps(value, option=_JSON_OPTIONS)


def _encode_text(value: Any) -> bytes:
    return f"{value}\n".encode()


def _wrap_encoder(fn: EncoderFunction) -> Callable[[Any], bytes]:
    def encode(value: Any) -> bytes:
        line = fn(value)
        if isinstance(line, str):
            line = line.encode()
        elif not isinstance(line, bytes | bytearray | memoryview):
            raise TypeError(
                f"file sink encoder {getattr(fn, '__name__', fn)!r} must return str or bytes, "
                f"got {type(line).__name__}"
            )
        else:
            line = bytes(line)
        return line if line.endswith(b"\n") else line + b"\n"

    return encode


def _resolve_encoder(encoder: str | EncoderFunction) -> Callable[[Any], bytes]:
    if encoder == "jsonl":
        return _encode_jsonl
    if encoder == "text":
        return _encode_text
    if callable(encoder) and not isinstance(encoder, str):
        return _wrap_encoder(encoder)
    raise ValueError(
        f'FileSink encoder must be "jsonl", "text" or a callable returning str or bytes, '
        f"got {encoder!r}"
    )


class RowFormatBuilder:
    """Configures a row-format :class:`FileSink`; each ``with_*`` returns a new builder."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        encoder: str | EncoderFunction = "jsonl",
        rolling_policy: RollingPolicy | None = None,
        output_file_config: OutputFileConfig | None = None,
    ) -> None:
        _resolve_encoder(encoder)  # validate early
        self._directory = os.fspath(directory)
        self._encoder = encoder
        self._rolling_policy = rolling_policy or RollingPolicy()
        self._output_file_config = output_file_config or OutputFileConfig()

    def with_rolling_policy(self, policy: RollingPolicy) -> RowFormatBuilder:
        """Use ``policy`` to roll part files by size (default: 128 MiB)."""
        if not isinstance(policy, RollingPolicy):
            raise TypeError(f"with_rolling_policy expects a RollingPolicy, got {policy!r}")
        return RowFormatBuilder(self._directory, self._encoder, policy, self._output_file_config)

    def with_output_file_config(
        self,
        config: OutputFileConfig | None = None,
        *,
        prefix: str | None = None,
        suffix: str | None = None,
    ) -> RowFormatBuilder:
        """Name finished part files ``<prefix>-<subtask>-<n><suffix>``.

        Pass an :class:`OutputFileConfig`, or ``prefix`` / ``suffix`` (which override the
        matching field of ``config`` when both are given).
        """
        base = config or self._output_file_config
        if prefix is not None:
            base = replace(base, prefix=prefix)
        if suffix is not None:
            base = replace(base, suffix=suffix)
        return RowFormatBuilder(self._directory, self._encoder, self._rolling_policy, base)

    def build(self) -> FileSink:
        """The configured sink."""
        return FileSink(
            self._directory, self._encoder, self._rolling_policy, self._output_file_config
        )


class FileSink(TwoPhaseCommitSink[FileTransaction]):
    """Exactly-once row-format file sink: one line per record, committed on checkpoints.

    Build it with ``FileSink.for_row_format(directory, encoder)``; ``encoder`` is
    ``"jsonl"`` (orjson, one JSON document per line), ``"text"`` (``str(value)``) or a
    callable returning the line as ``str`` (UTF-8) or ``bytes``; a newline is appended
    unless the line already ends with one.

    Each subtask ``i`` writes part files ``n = 0, 1, 2, ...``:

    * in progress and pending (written, waiting for a checkpoint to complete):
      ``.<prefix>-<i>-<n><suffix>.inprogress.<session>`` — hidden, so readers never see
      them (``<session>`` is a random id of the writer instance);
    * finished (committed): ``<prefix>-<i>-<n><suffix>``, by default ``part-<i>-<n>``.

    A part file is created on the first record after a checkpoint (or after a roll), so
    no empty files are written. At a checkpoint barrier the open part file is flushed,
    fsynced and closed; it becomes pending (keeping its hidden name) and is renamed to its
    finished name when the checkpoint completes. Only finished files are ever visible.

    Restore: pending files of the restored checkpoint are committed (a file already
    renamed counts as committed). Unlike Flink, nothing needs truncating: the barrier
    closed the part file in progress, so every file the crashed writer created after the
    checkpoint (in progress, rolled, or pending for a checkpoint that never completed)
    holds only records the sources replay. Those files are deleted (``recover_and_abort``
    finds them by the crashed writer's session id): no record is lost or duplicated. Part
    indices continue after a restore (the next index is checkpointed, and the names of
    the subtask's files on disk are scanned first), so a finished file is never
    overwritten; committing onto an existing finished file is an error.

    Files of abandoned attempts do not pile up: when a writer starts (fresh or restored),
    it deletes the hidden files that writers of its subtask (by index) left behind and
    that can no longer be committed: those of writers that died (``SIGKILL``, before any
    checkpoint) or were closed. A live writer's files are recognised by the lock file it
    holds (``.<prefix>-<i>.<session>.lock``), and kept.

    Without checkpointing set ``commit_on_finish = True`` (the runtime does this when
    checkpointing is disabled): then everything is committed at the end of input.

    Example:
        >>> sink = (FileSink.for_row_format("out", encoder="jsonl")
        ...     .with_rolling_policy(RollingPolicy(max_part_size=1 << 20))
        ...     .with_output_file_config(prefix="events", suffix=".jsonl")
        ...     .build())
        >>> sink.output_file_config
        OutputFileConfig(prefix='events', suffix='.jsonl')
    """

    name = "File Sink"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        encoder: str | EncoderFunction = "jsonl",
        rolling_policy: RollingPolicy | None = None,
        output_file_config: OutputFileConfig | None = None,
    ) -> None:
        self.directory = os.fspath(directory)
        self.encoder = encoder
        self._encode = _resolve_encoder(encoder)
        self.rolling_policy = rolling_policy or RollingPolicy()
        self.output_file_config = output_file_config or OutputFileConfig()

    @staticmethod
    def for_row_format(
        directory: str | os.PathLike[str] | None = None,
        encoder: str | EncoderFunction = "jsonl",
        *,
        base_path: str | os.PathLike[str] | None = None,
    ) -> RowFormatBuilder:
        """Start building a row-format file sink writing into ``directory`` (PyFlink's
        keyword: ``base_path``). ``encoder`` may be PyFlink's
        ``Encoder.simple_string_encoder()``.

        Raises:
            ValueError: ``encoder`` is not ``"jsonl"``, ``"text"`` or a callable, or no
                directory was given.
        """
        if (directory is None) == (base_path is None):
            raise ValueError(
                "FileSink.for_row_format needs the directory to write into, once "
                "(positionally or as base_path=...)"
            )
        path = directory if directory is not None else base_path
        assert path is not None
        return RowFormatBuilder(path, encoder)

    def with_type_info(self, type_info: Any) -> FileSink:
        """The sink for a stream of ``type_info``: with the ``"text"`` encoder or
        ``Encoder.simple_string_encoder()`` records are written as Java prints them
        (as ``print()`` does); other encoders write records as they are."""
        encoder = self.encoder
        if encoder == "text":
            encoder = Encoder()
        if not isinstance(encoder, Encoder):
            return self
        typed = encoder.for_type_info(type_info)
        if typed is self.encoder:
            return self
        return FileSink(self.directory, typed, self.rolling_policy, self.output_file_config)

    def create_transaction_writer(self, subtask_index: int, parallelism: int) -> FileSinkWriter:
        return FileSinkWriter(
            self.directory,
            subtask_index,
            self._encode,
            self.rolling_policy,
            self.output_file_config,
            parallelism,
        )


class FileSinkWriter(TwoPhaseCommitSinkWriter[FileTransaction]):
    """The writer of one :class:`FileSink` subtask (see there for the file lifecycle).

    Writes go synchronously through a buffered file (each batch is encoded into one
    block, so the event loop is held only for a memory copy most of the time); the
    fsync happens when a part file is closed (at a barrier or when rolling).
    """

    #: Size of the write buffer of an open part file.
    buffer_size = 256 * 1024

    def __init__(
        self,
        directory: str,
        subtask_index: int,
        encode: Callable[[Any], bytes],
        rolling_policy: RollingPolicy,
        output_file_config: OutputFileConfig,
        parallelism: int = 1,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self._encode = encode
        self._max_part_size = rolling_policy.max_part_size
        self._config = output_file_config
        self._next_part = 0
        self._file: IO[bytes] | None = None
        self._file_transaction: FileTransaction | None = None
        self._size = 0
        #: Random id of this writer; the last part of the names of its hidden files.
        self.session = uuid.uuid4().hex
        self._name_pattern = re.compile(
            r"\.?" + re.escape(f"{output_file_config.prefix}-{subtask_index}-") + r"(\d+)(?!\d)"
        )
        #: Hidden files of this sink: ``.<prefix>-<subtask>-<n><suffix>.inprogress.<session>``.
        self._hidden_pattern = re.compile(
            re.escape(f".{output_file_config.prefix}-")
            + r"(\d+)-\d+"
            + re.escape(f"{output_file_config.suffix}.inprogress.")
            + r"([0-9a-f]+)"
        )
        self._lock_pattern = re.compile(
            re.escape(f".{output_file_config.prefix}-") + r"(\d+)\.([0-9a-f]+)\.lock"
        )
        self._lock: IO[bytes] | None = None

    # ------------------------------------------------------------ context
    def snapshot_user_context(self) -> FileSinkContext:
        return FileSinkContext(self.subtask_index, self._next_part)

    def initialize_user_context(self, contexts: list[Any]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        next_part = 0
        for context in contexts:
            if isinstance(context, FileSinkContext) and context.subtask == self.subtask_index:
                next_part = max(next_part, context.next_part)
        # Every part file of this subtask index still on disk, hidden or finished, possibly
        # written by an earlier run or by an old subtask with the same index.
        match = self._name_pattern.match
        for name in os.listdir(self.directory):
            found = match(name)
            if found is not None:
                next_part = max(next_part, int(found.group(1)) + 1)
        self._next_part = next_part

    def initialize_state(self, states: list[Any]) -> None:
        """Restore (see the base class), then delete what abandoned attempts left behind.

        Once the restored pending transactions are committed and the restored open one
        is aborted, a hidden part file of this sink's subtask ``j`` (with
        ``j % parallelism == subtask_index``: the old subtasks whose state this one
        restores) whose writer is gone belongs to no transaction that can still commit:
        it was written by a writer that was killed before its first checkpoint, or after
        the checkpoint restored. The sources replay those records, so the files are
        deleted. A writer that may still commit holds a lock file
        (``.<prefix>-<subtask>.<session>.lock``, locked with ``flock`` while the writer
        lives; the lock dies with its process), and its files are kept.
        """
        super().initialize_state(states)
        parallelism = max(1, self.parallelism)
        live: dict[tuple[int, str], bool] = {}
        for name in sorted(os.listdir(self.directory), key=lambda n: n.endswith(".lock")):
            found = self._hidden_pattern.fullmatch(name) or self._lock_pattern.fullmatch(name)
            if found is None or int(found.group(1)) % parallelism != self.subtask_index:
                continue
            writer = (int(found.group(1)), found.group(2))
            if writer not in live:
                live[writer] = writer[1] == self.session or self._session_alive(*writer)
            if not live[writer]:
                _unlink(os.path.join(self.directory, name))

    # ------------------------------------------------------------ writer lock
    def _lock_path(self, subtask: int, session: str) -> str:
        return os.path.join(self.directory, f".{self._config.prefix}-{subtask}.{session}.lock")

    def _take_lock(self) -> None:
        """Hold a lock file while this writer may have hidden files: a later writer then
        knows they are not abandoned. The lock dies with the process that holds it."""
        if self._lock is not None or fcntl is None:
            return
        path = self._lock_path(self.subtask_index, self.session)
        lock = open(path, "ab")  # noqa: SIM115 - held until close
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            lock.close()
            raise
        self._lock = lock

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            _unlink(lock.name)
            lock.close()

    def _session_alive(self, subtask: int, session: str) -> bool:
        """True if the writer of ``subtask`` with ``session`` still holds its lock (it may
        still commit its files)."""
        if fcntl is None:
            return True  # cannot tell: keep its files
        try:
            lock = open(self._lock_path(subtask, session), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return False  # it never wrote, or it closed (or died) and its lock went too
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            return False

    def close(self) -> None:
        """Abort the current transaction and give up the writer's lock."""
        try:
            super().close()
        finally:
            self._release_lock()

    # ------------------------------------------------------------ transactions
    def begin_transaction(self) -> FileTransaction:
        return FileTransaction(self.subtask_index, self.session)

    def write(self, transaction: FileTransaction, value: Any, timestamp: int | None) -> None:
        self.write_batch_to(transaction, [value], None)

    def write_batch_to(
        self, transaction: FileTransaction, values: list[Any], timestamps: list[Any] | None
    ) -> None:
        encode = self._encode
        limit = self._max_part_size
        if limit is None:
            data = b"".join([encode(value) for value in values])
            if data:
                self._write(transaction, data)
            return
        chunk: list[bytes] = []
        room = limit - self._size if self._file is not None else limit
        for value in values:
            if room <= 0:  # the part file reached the size limit: roll it
                if chunk:
                    self._write(transaction, b"".join(chunk))
                    chunk = []
                self._close_file(fsync=True)
                room = limit
            line = encode(value)
            chunk.append(line)
            room -= len(line)
        if chunk:
            self._write(transaction, b"".join(chunk))

    def pre_commit(self, transaction: FileTransaction) -> None:
        if self._file_transaction is transaction:
            self._close_file(fsync=True)

    def commit(self, transaction: FileTransaction) -> None:
        """Rename every part file of ``transaction`` to its finished name (idempotent).

        Raises:
            FileExistsError: the finished name is taken by a different file.
            FileNotFoundError: neither the hidden nor the finished file exists.
        """
        if not transaction.files:
            return
        directory = self.directory
        for part in transaction.files:
            source = os.path.join(directory, part.in_progress_name)
            target = os.path.join(directory, part.final_name)
            source_exists = os.path.exists(source)
            if os.path.exists(target):
                if not source_exists:
                    continue  # committed before
                raise FileExistsError(
                    f"file sink cannot commit {part.in_progress_name!r}: {target!r} already "
                    f"exists and holds other data"
                )
            if not source_exists:
                raise FileNotFoundError(
                    f"file sink cannot commit part file {part.final_name!r}: neither "
                    f"{source!r} nor {target!r} exists"
                )
            os.rename(source, target)
        _fsync_directory(directory)

    def abort(self, transaction: FileTransaction) -> None:
        if self._file_transaction is transaction:
            self._close_file(fsync=False)
        for part in transaction.files:
            try:
                os.unlink(os.path.join(self.directory, part.in_progress_name))
            except FileNotFoundError:
                pass

    def recover_and_abort(self, transaction: FileTransaction) -> None:
        """Delete every hidden file the restored writer created after its checkpoint.

        The transaction open at the barrier was empty then (the barrier closed the part
        file before it), so the files the crashed writer created afterwards are not
        listed in it. They carry its session id; once the pending transactions of the
        same state have been committed (the base class commits them first), every hidden
        file with that session id holds only records written after the checkpoint, which
        the sources replay.
        """
        self.abort(transaction)
        ending = f".inprogress.{transaction.session}"
        for name in os.listdir(self.directory):
            if name.startswith(".") and name.endswith(ending):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass

    # ------------------------------------------------------------ files
    def _write(self, transaction: FileTransaction, data: bytes) -> None:
        if self._file is None or self._file_transaction is not transaction:
            self._open_file(transaction)
        assert self._file is not None
        self._file.write(data)
        self._size += len(data)

    def _open_file(self, transaction: FileTransaction) -> None:
        self._close_file(fsync=True)
        index = self._next_part
        self._next_part += 1
        config = self._config
        final_name = f"{config.prefix}-{self.subtask_index}-{index}{config.suffix}"
        hidden_name = f".{final_name}.inprogress.{self.session}"
        path = os.path.join(self.directory, hidden_name)
        self._take_lock()
        self._file = open(path, "xb", buffering=self.buffer_size)  # noqa: SIM115 - kept open
        self._file_transaction = transaction
        self._size = 0
        transaction.files.append(PartFile(index, hidden_name, final_name))

    def _close_file(self, *, fsync: bool) -> None:
        file = self._file
        if file is None:
            return
        self._file = None
        self._file_transaction = None
        self._size = 0
        try:
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        finally:
            file.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_directory(directory: str) -> None:
    """Make renames in ``directory`` durable (where the platform allows it)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    fd = os.open(directory, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
