"""The two-phase commit protocol of TwoPhaseCommitSinkWriter (SEMANTICS.md 6.1).

A fake "external system" keeps staged (pre-committed) and committed transactions; the
fake writer logs every protocol call so the tests can assert their exact order.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from flowkit.sinks.two_phase_commit import (
    TwoPhaseCommitSink,
    TwoPhaseCommitSinkWriter,
    TwoPhaseCommitState,
)


@dataclass
class Txn:
    id: int
    values: list[Any] = field(default_factory=list)


@dataclass
class World:
    """What survives a crash: the external system and the log of calls made to it."""

    next_id: int = 0
    staged: dict[int, list[Any]] = field(default_factory=dict)
    committed: dict[int, list[Any]] = field(default_factory=dict)
    log: list[tuple[str, int]] = field(default_factory=list)
    fail_commit_of: set[int] = field(default_factory=set)

    def visible(self) -> list[Any]:
        return [v for txn_id in sorted(self.committed) for v in self.committed[txn_id]]


class FakeWriter(TwoPhaseCommitSinkWriter[Txn]):
    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    def begin_transaction(self) -> Txn:
        txn = Txn(self.world.next_id)
        self.world.next_id += 1
        self.world.log.append(("begin", txn.id))
        return txn

    def write(self, transaction: Txn, value: Any, timestamp: int | None) -> None:
        transaction.values.append(value)

    def pre_commit(self, transaction: Txn) -> None:
        self.world.log.append(("pre_commit", transaction.id))
        self.world.staged[transaction.id] = list(transaction.values)

    def commit(self, transaction: Txn) -> None:
        self.world.log.append(("commit", transaction.id))
        if transaction.id in self.world.fail_commit_of:
            raise OSError(f"commit of {transaction.id} failed")
        if transaction.id not in self.world.committed:  # idempotent
            self.world.committed[transaction.id] = self.world.staged.pop(transaction.id)

    def abort(self, transaction: Txn) -> None:
        self.world.log.append(("abort", transaction.id))
        self.world.staged.pop(transaction.id, None)

    def recover_and_commit(self, transaction: Txn) -> None:
        self.world.log.append(("recover_and_commit", transaction.id))
        self.commit(transaction)

    def recover_and_abort(self, transaction: Txn) -> None:
        self.world.log.append(("recover_and_abort", transaction.id))
        self.abort(transaction)


class FakeSink(TwoPhaseCommitSink[Txn]):
    def __init__(self, world: World) -> None:
        self.world = world

    def create_transaction_writer(self, subtask_index: int, parallelism: int) -> FakeWriter:
        return FakeWriter(self.world)


def fresh(world: World) -> FakeWriter:
    writer = FakeWriter(world)
    writer.initialize_state([])
    return writer


def calls(world: World, name: str) -> list[int]:
    return [txn_id for call, txn_id in world.log if call == name]


# ---------------------------------------------------------------------------- normal operation
def test_initialize_begins_a_transaction() -> None:
    world = World()
    writer = fresh(world)
    assert world.log == [("begin", 0)]
    assert writer.current_transaction == Txn(0)


def test_snapshot_pre_commits_and_the_notification_commits() -> None:
    world = World()
    writer = fresh(world)
    writer.write_batch([1, 2], None)
    state = writer.snapshot_state(1)

    assert world.log == [("begin", 0), ("pre_commit", 0), ("begin", 1)]
    assert state == TwoPhaseCommitState(current=Txn(1), pending=((1, Txn(0, [1, 2])),))
    assert world.visible() == []

    writer.write_batch([3], [30])  # goes into the new transaction
    assert world.visible() == []
    writer.notify_checkpoint_complete(1)
    assert world.log[-1] == ("commit", 0)
    assert world.visible() == [1, 2]
    assert writer.pending_transactions == []
    assert writer.current_transaction == Txn(1, [3])


def test_state_is_a_copy_taken_at_the_barrier() -> None:
    world = World()
    writer = fresh(world)
    state = writer.snapshot_state(1)
    writer.write_batch(["after"], None)
    assert state.current == Txn(1)
    assert writer.current_transaction == Txn(1, ["after"])
    assert pickle.loads(pickle.dumps(state)) == state


def test_late_notification_commits_all_earlier_checkpoints_in_order() -> None:
    world = World()
    writer = fresh(world)
    for checkpoint_id in (1, 2, 3):
        writer.write_batch([checkpoint_id * 10], None)
        writer.snapshot_state(checkpoint_id)
    assert calls(world, "commit") == []

    writer.notify_checkpoint_complete(3)
    assert calls(world, "commit") == [0, 1, 2]
    assert world.visible() == [10, 20, 30]
    assert writer.pending_transactions == []

    # Out of order: notifications for checkpoints already covered do nothing.
    log_length = len(world.log)
    writer.notify_checkpoint_complete(2)
    writer.notify_checkpoint_complete(1)
    assert len(world.log) == log_length


def test_notification_keeps_later_checkpoints_pending() -> None:
    world = World()
    writer = fresh(world)
    for checkpoint_id in (1, 2, 3):
        writer.write_batch([checkpoint_id], None)
        writer.snapshot_state(checkpoint_id)

    writer.notify_checkpoint_complete(2)
    assert calls(world, "commit") == [0, 1]
    assert [(cid, txn.id) for cid, txn in writer.pending_transactions] == [(3, 2)]
    assert world.visible() == [1, 2]


def test_skipped_notifications_are_covered_by_a_later_one() -> None:
    world = World()
    writer = fresh(world)
    writer.write_batch(["a"], None)
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)
    writer.write_batch(["b"], None)
    writer.snapshot_state(2)  # its notification never arrives
    writer.write_batch(["c"], None)
    writer.snapshot_state(3)
    writer.write_batch(["d"], None)
    writer.snapshot_state(4)

    writer.notify_checkpoint_complete(4)
    assert calls(world, "commit") == [0, 1, 2, 3]
    assert world.visible() == ["a", "b", "c", "d"]


def test_aborted_checkpoint_is_committed_by_the_next_completed_one() -> None:
    world = World()
    writer = fresh(world)
    writer.write_batch(["a"], None)
    writer.snapshot_state(1)
    writer.notify_checkpoint_aborted(1)
    assert calls(world, "commit") == []
    assert calls(world, "abort") == []

    writer.write_batch(["b"], None)
    state = writer.snapshot_state(2)
    assert [cid for cid, _ in state.pending] == [1, 2]
    writer.notify_checkpoint_complete(2)
    assert world.visible() == ["a", "b"]


def test_empty_transactions_are_still_pre_committed_and_committed() -> None:
    world = World()
    writer = fresh(world)
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)
    assert world.log == [("begin", 0), ("pre_commit", 0), ("begin", 1), ("commit", 0)]


def test_checkpoint_ids_must_increase() -> None:
    writer = fresh(World())
    writer.snapshot_state(5)
    with pytest.raises(ValueError, match="checkpoint ids must increase"):
        writer.snapshot_state(5)


def test_failed_commit_is_raised_after_committing_the_others() -> None:
    world = World(fail_commit_of={1})
    writer = fresh(world)
    for checkpoint_id in (1, 2, 3):
        writer.write_batch([checkpoint_id], None)
        writer.snapshot_state(checkpoint_id)
    with pytest.raises(OSError, match="commit of 1 failed"):
        writer.notify_checkpoint_complete(3)
    assert calls(world, "commit") == [0, 1, 2]
    assert world.visible() == [1, 3]
    assert writer.pending_transactions == []


# ---------------------------------------------------------------------------- restore
def test_restore_commits_pending_aborts_current_and_begins_new() -> None:
    world = World()
    writer = fresh(world)
    writer.write_batch([1, 2], None)
    writer.snapshot_state(1)
    writer.write_batch([3, 4], None)
    state = pickle.loads(pickle.dumps(writer.snapshot_state(2)))
    writer.write_batch([5, 6], None)  # after checkpoint 2: lost with the crash, replayed
    writer.notify_checkpoint_complete(1)  # 2's notification never arrives
    # crash: the writer is dropped without close()
    assert world.visible() == [1, 2]

    world.log.clear()
    restored = FakeWriter(world)
    restored.initialize_state([state])
    assert world.log == [
        ("recover_and_commit", 0),  # already committed: commit is idempotent
        ("commit", 0),
        ("recover_and_commit", 1),
        ("commit", 1),
        ("recover_and_abort", 2),
        ("abort", 2),
        ("begin", 3),
    ]
    assert world.visible() == [1, 2, 3, 4]

    restored.write_batch([5, 6], None)  # the sources replay what came after checkpoint 2
    restored.snapshot_state(3)
    restored.notify_checkpoint_complete(3)
    assert world.visible() == [1, 2, 3, 4, 5, 6]


def test_restore_from_several_old_subtasks() -> None:
    world = World()
    old = [fresh(world), fresh(world)]  # transactions 0 and 1
    old[0].write_batch(["a"], None)
    old[1].write_batch(["b"], None)
    states = [w.snapshot_state(1) for w in old]  # pending 0, 1; current 2, 3
    old[0].write_batch(["late"], None)

    world.log.clear()
    restored = FakeWriter(world)
    restored.initialize_state(states)
    assert calls(world, "recover_and_commit") == [0, 1]
    assert calls(world, "recover_and_abort") == [2, 3]
    assert world.log[-1] == ("begin", 4)
    assert world.visible() == ["a", "b"]


def test_initialize_state_rejects_foreign_state_and_second_calls() -> None:
    writer = FakeWriter(World())
    with pytest.raises(TypeError, match="TwoPhaseCommitState"):
        writer.initialize_state([{"current": None}])
    writer.initialize_state([])
    with pytest.raises(RuntimeError, match="once, before the first record"):
        writer.initialize_state([])


def test_writer_without_initialize_state_starts_fresh_on_first_record() -> None:
    world = World()
    writer = FakeWriter(world)
    writer.write_batch(["x"], None)
    assert world.log == [("begin", 0)]
    with pytest.raises(RuntimeError, match="before the first record"):
        writer.initialize_state([])


# ---------------------------------------------------------------------------- end of life
def test_close_aborts_only_the_current_transaction() -> None:
    world = World()
    writer = fresh(world)
    writer.write_batch([1], None)
    state = writer.snapshot_state(1)
    writer.write_batch([2], None)
    writer.close()
    assert calls(world, "abort") == [1]
    assert calls(world, "commit") == []
    assert world.visible() == []
    assert writer.current_transaction is None
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_batch([3], None)

    # The pending transaction survived and a restore commits it.
    FakeWriter(world).initialize_state([state])
    assert world.visible() == [1]


def test_finish_commits_nothing_by_default() -> None:
    world = World()
    writer = fresh(world)
    writer.write_batch([1], None)
    writer.finish()
    assert calls(world, "commit") == []
    # The final checkpoint commits.
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)
    writer.close()
    assert world.visible() == [1]
    assert calls(world, "abort") == [1]  # the empty transaction begun at the barrier


def test_commit_on_finish_commits_at_end_of_input() -> None:
    world = World()
    writer = fresh(world)
    writer.commit_on_finish = True
    writer.write_batch([1, 2], None)
    writer.finish()
    assert world.log == [("begin", 0), ("pre_commit", 0), ("commit", 0)]
    assert world.visible() == [1, 2]
    writer.close()
    assert calls(world, "abort") == []


def test_commit_on_finish_also_commits_pending_transactions_in_order() -> None:
    world = World()
    writer = fresh(world)
    writer.commit_on_finish = True
    writer.write_batch([1], None)
    writer.snapshot_state(1)
    writer.write_batch([2], None)
    writer.finish()
    assert calls(world, "commit") == [0, 1]
    assert world.visible() == [1, 2]
    assert writer.pending_transactions == []


def test_sink_passes_commit_on_finish_to_its_writers() -> None:
    world = World()
    sink = FakeSink(world)
    assert sink.create_writer(0, 1).commit_on_finish is False
    sink.commit_on_finish = True
    writer = sink.create_writer(0, 1)
    assert writer.commit_on_finish is True
    writer.write_batch(["x"], None)
    writer.finish()
    assert world.visible() == ["x"]
