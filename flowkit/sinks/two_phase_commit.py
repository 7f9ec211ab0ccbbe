"""Exactly-once sinks: the two-phase commit protocol (Flink's ``TwoPhaseCommitSinkFunction``).

A :class:`TwoPhaseCommitSink` writes every record into the writer's *current transaction*.
At a checkpoint barrier the transaction is pre-committed (flushed so that committing it
later cannot fail) and parked under the checkpoint's id; a new transaction begins. When
the checkpoint completes, every parked transaction up to that id is committed. After a
failure the job restarts from the last completed checkpoint: the transactions parked in
it are committed (idempotently: some may have been committed already) and the one that
was open is aborted, because the sources replay its records. Uncommitted data never
becomes visible, and no record is visible twice.

The checkpoint coordinator drives a writer through these hooks, in this order:

* ``initialize_state(states)`` before the first record (an empty list on a fresh start);
* ``write_batch(values, timestamps)`` for the records;
* ``snapshot_state(checkpoint_id)`` at each barrier, ``notify_checkpoint_complete(id)``
  (late, out of order or skipped notifications are fine: one covers all earlier ids) and
  ``notify_checkpoint_aborted(id)``;
* ``finish()`` at the end of input, then ``close()`` (always, on failure and cancel too).

A writer used without a coordinator initializes itself on its first record. Without
checkpointing no checkpoint ever commits anything; set ``commit_on_finish = True`` on
the sink (or on a writer) to commit everything in ``finish()`` instead.

The exactly-once :class:`~flowkit.sinks.file.FileSink` is built on this protocol.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flowkit.sinks.base import Sink, SinkWriter

__all__ = ["TwoPhaseCommitSink", "TwoPhaseCommitSinkWriter", "TwoPhaseCommitState"]

TxnT = TypeVar("TxnT")


@dataclass(frozen=True)
class TwoPhaseCommitState(Generic[TxnT]):
    """What a :class:`TwoPhaseCommitSinkWriter` checkpoints.

    Attributes:
        current: the transaction begun at the barrier (it holds only records after the
            barrier, so restoring aborts it).
        pending: ``(checkpoint_id, transaction)`` pairs pre-committed but not yet known to
            be committed, in the order they were pre-committed.
        context: the writer's own extra state (``snapshot_user_context``), or None.
    """

    current: TxnT
    pending: tuple[tuple[int, TxnT], ...] = ()
    context: Any = None


class TwoPhaseCommitSinkWriter(SinkWriter, Generic[TxnT]):
    """Base of the writers of exactly-once sinks (Flink's ``TwoPhaseCommitSinkFunction``).

    Subclasses implement:

    * ``begin_transaction()`` — start a transaction and return its handle;
    * ``write(transaction, value, timestamp)`` — add one record (or override
      ``write_batch_to`` to take a whole batch);
    * ``pre_commit(transaction)`` — flush everything; afterwards ``commit`` must not fail
      for lack of data. No more records go into the transaction;
    * ``commit(transaction)`` — make the transaction visible. Must be idempotent:
      after a restore it may run again for a transaction that was already committed;
    * ``abort(transaction)`` — discard the transaction;
    * optionally ``recover_and_commit`` / ``recover_and_abort`` (default: ``commit`` /
      ``abort``), called on restore with transactions from a checkpoint, and
      ``snapshot_user_context`` / ``initialize_user_context`` for extra state.

    Transactions are checkpointed, so they must be picklable plain data (keep open files
    or connections in the writer, not in the transaction). The state is a deep copy
    taken at the barrier.

    Attributes:
        commit_on_finish: when True, ``finish()`` pre-commits and commits everything
            still open (for jobs without checkpointing, where no checkpoint ever
            commits). Default False: the final checkpoint commits.
        current_transaction: the open transaction, or None before initialization and
            after ``close()``.
        pending_transactions: ``(checkpoint_id, transaction)`` pairs pre-committed at a
            checkpoint and waiting for its completion, oldest first.
    """

    commit_on_finish: bool = False

    def __init__(self) -> None:
        self.current_transaction: TxnT | None = None
        self.pending_transactions: list[tuple[int, TxnT]] = []
        self._initialized = False
        self._closed = False

    # ------------------------------------------------------------ user hooks
    def begin_transaction(self) -> TxnT:
        """Start a new transaction and return its handle."""
        raise NotImplementedError

    def write(self, transaction: TxnT, value: Any, timestamp: int | None) -> None:
        """Write one record into ``transaction``."""
        raise NotImplementedError

    def write_batch_to(
        self, transaction: TxnT, values: list[Any], timestamps: list[Any] | None
    ) -> None:
        """Write a batch of records into ``transaction`` (default: ``write`` each one)."""
        write = self.write
        if timestamps is None:
            for value in values:
                write(transaction, value, None)
        else:
            for value, timestamp in zip(values, timestamps):
                write(transaction, value, timestamp)

    def pre_commit(self, transaction: TxnT) -> None:
        """Flush ``transaction`` so that committing it cannot fail; it takes no more records."""
        raise NotImplementedError

    def commit(self, transaction: TxnT) -> None:
        """Make ``transaction`` visible. Must be idempotent."""
        raise NotImplementedError

    def abort(self, transaction: TxnT) -> None:
        """Discard ``transaction``."""
        raise NotImplementedError

    def recover_and_commit(self, transaction: TxnT) -> None:
        """Commit a transaction restored from a checkpoint (it may be committed already)."""
        self.commit(transaction)

    def recover_and_abort(self, transaction: TxnT) -> None:
        """Abort the transaction that was open at the restored checkpoint."""
        self.abort(transaction)

    def snapshot_user_context(self) -> Any:
        """Extra state to checkpoint with the transactions (picklable), or None."""
        return None

    def initialize_user_context(self, contexts: list[Any]) -> None:
        """Restore extra state: the contexts of the restored states (empty on a fresh start).

        Called first in ``initialize_state``, before restored transactions are
        committed or aborted and before the first transaction begins.
        """

    # ------------------------------------------------------------ protocol (driven by the runtime)
    def initialize_state(self, states: list[Any]) -> None:
        """Restore from the states of one or more old subtasks, or start fresh (``[]``).

        For each state: commit its pending transactions (``recover_and_commit``, in
        checkpoint order), abort its current one (``recover_and_abort``). Then begin a
        new transaction.

        Raises:
            RuntimeError: the writer was already initialized (by an earlier call or by
                a record written before this call).
            TypeError: an element of ``states`` is not a :class:`TwoPhaseCommitState`.
        """
        if self._initialized:
            raise RuntimeError(
                f"{type(self).__name__}.initialize_state() must be called once, before the "
                f"first record"
            )
        for state in states:
            if not isinstance(state, TwoPhaseCommitState):
                raise TypeError(
                    f"{type(self).__name__} cannot restore from {type(state).__name__}; "
                    f"expected a TwoPhaseCommitState"
                )
        self._initialized = True
        self.initialize_user_context([state.context for state in states])
        for state in states:
            for _checkpoint_id, transaction in state.pending:
                self.recover_and_commit(transaction)
            self.recover_and_abort(state.current)
        self.current_transaction = self.begin_transaction()

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self.write_batch_to(self._current(), values, timestamps)

    def snapshot_state(self, checkpoint_id: int) -> TwoPhaseCommitState[TxnT]:
        """Pre-commit the current transaction under ``checkpoint_id`` and begin a new one.

        Returns:
            A deep copy of ``TwoPhaseCommitState(current, pending, context)``.

        Raises:
            ValueError: ``checkpoint_id`` is not greater than the id of a transaction
                still pending (checkpoint ids must increase).
        """
        transaction = self._current()
        if self.pending_transactions and checkpoint_id <= self.pending_transactions[-1][0]:
            raise ValueError(
                f"checkpoint {checkpoint_id} is not after pending checkpoint "
                f"{self.pending_transactions[-1][0]}; checkpoint ids must increase"
            )
        self.pre_commit(transaction)
        self.pending_transactions.append((checkpoint_id, transaction))
        # None first: if begin_transaction fails, close() must not abort the pre-committed one.
        self.current_transaction = None
        current = self.current_transaction = self.begin_transaction()
        state = TwoPhaseCommitState(
            current=current,
            pending=tuple(self.pending_transactions),
            context=self.snapshot_user_context(),
        )
        return copy.deepcopy(state)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit every pending transaction of a checkpoint ``<= checkpoint_id``, oldest first.

        Transactions of later checkpoints stay pending. All eligible transactions are
        attempted and removed; the first error is raised afterwards (restoring from the
        checkpoint commits them again).
        """
        pending = self.pending_transactions
        due = [transaction for pending_id, transaction in pending if pending_id <= checkpoint_id]
        if not due:
            return
        self.pending_transactions = [entry for entry in pending if entry[0] > checkpoint_id]
        first_error: Exception | None = None
        for transaction in due:
            try:
                self.commit(transaction)
            except Exception as exc:
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Nothing to do: an aborted checkpoint's transaction stays pending.

        It was pre-committed, so the next completed checkpoint (whose state lists it
        too) commits it.
        """

    def finish(self) -> None:
        """End of input: with ``commit_on_finish``, commit everything still open.

        Otherwise nothing is committed here; the final checkpoint commits.
        """
        if not self.commit_on_finish:
            return
        transaction = self._current()
        self.pre_commit(transaction)
        self.current_transaction = None
        pending = [entry[1] for entry in self.pending_transactions]
        self.pending_transactions = []
        for pending_transaction in pending:
            self.commit(pending_transaction)
        self.commit(transaction)

    def close(self) -> None:
        """Abort the current transaction (pending ones stay for a restore to commit)."""
        self._closed = True
        transaction = self.current_transaction
        if transaction is not None:
            self.current_transaction = None
            self.abort(transaction)

    # ------------------------------------------------------------ helpers
    def _current(self) -> TxnT:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if not self._initialized:
            self.initialize_state([])
        if self.current_transaction is None:
            self.current_transaction = self.begin_transaction()
        return self.current_transaction


class TwoPhaseCommitSink(Sink, Generic[TxnT]):
    """Base of exactly-once sinks; subclasses implement ``create_transaction_writer``.

    Attributes:
        commit_on_finish: copied to each writer it creates (see
            :class:`TwoPhaseCommitSinkWriter`). Set it to True for a job that runs
            without checkpointing, or nothing it writes is ever committed.

    Example:
        >>> class ListTransactionWriter(TwoPhaseCommitSinkWriter[list]):
        ...     def __init__(self, committed):
        ...         super().__init__()
        ...         self.committed = committed
        ...     def begin_transaction(self): return []
        ...     def write(self, txn, value, timestamp): txn.append(value)
        ...     def pre_commit(self, txn): pass
        ...     def commit(self, txn): self.committed.extend(txn); txn.clear()
        ...     def abort(self, txn): txn.clear()
        >>> class ListSink(TwoPhaseCommitSink[list]):
        ...     def __init__(self): self.committed = []
        ...     def create_transaction_writer(self, subtask_index, parallelism):
        ...         return ListTransactionWriter(self.committed)
        >>> sink = ListSink()
        >>> writer = sink.create_writer(0, 1)
        >>> writer.write_batch([1, 2], None)
        >>> state = writer.snapshot_state(1)
        >>> writer.write_batch([3], None)
        >>> sink.committed
        []
        >>> writer.notify_checkpoint_complete(1)
        >>> sink.committed
        [1, 2]
    """

    name = "Two Phase Commit Sink"
    commit_on_finish: bool = False

    def create_transaction_writer(
        self, subtask_index: int, parallelism: int
    ) -> TwoPhaseCommitSinkWriter[TxnT]:
        """Build the writer of subtask ``subtask_index``."""
        raise NotImplementedError

    def create_writer(self, subtask_index: int, parallelism: int) -> TwoPhaseCommitSinkWriter[TxnT]:
        writer = self.create_transaction_writer(subtask_index, parallelism)
        if self.commit_on_finish:
            writer.commit_on_finish = True
        return writer
