"""Mailbox: actions to run inside one subtask, between two of its steps (Flink's mailbox).

Timers, completions of asynchronous work, checkpoint triggers and notifications do not run
where they happen (a timer callback, another coroutine): they are posted to the subtask's
mailbox, which wakes the subtask; the subtask runs every action in its mailbox before it
takes its next unit of input, so actions never interleave with the processing of a batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

from flowkit.runtime.network.channel import Notifier

__all__ = ["Mailbox"]


class Mailbox:
    """The actions posted to one subtask, and the notifier that wakes it.

    Example:
        >>> box = Mailbox(Notifier())
        >>> done = []
        >>> box.post(lambda: done.append(1))
        >>> box.has_mail, box.notifier.waiting
        (True, False)
        >>> box.run_all()
        >>> done, box.has_mail
        ([1], False)
    """

    __slots__ = ("actions", "notifier", "steps")

    def __init__(self, notifier: Notifier) -> None:
        #: The subtask's notifier (shared with its input gate and record writers).
        self.notifier = notifier
        #: Posted actions, oldest first. The subtask's loops pop them directly.
        self.actions: deque[Callable[[], None]] = deque()
        #: Work an operator does in steps before the subtask takes more input (see
        #: :meth:`run_in_steps`), oldest first.
        self.steps: deque[Iterator[None]] = deque()

    def run_in_steps(self, steps: Iterator[None]) -> None:
        """Run the first step of ``steps`` now; the subtask runs the others, with turns
        of the event loop between them, before it takes its next unit of input.

        Example:
            >>> box = Mailbox(Notifier())
            >>> done = []
            >>> def work():
            ...     done.append(1)
            ...     yield
            ...     done.append(2)
            >>> box.run_in_steps(work())
            >>> done, len(box.steps)
            ([1], 1)
        """
        try:
            next(steps)
        except StopIteration:
            return
        self.steps.append(steps)

    def post(self, action: Callable[[], None]) -> None:
        """Run ``action`` inside the subtask between two steps, and wake the subtask."""
        self.actions.append(action)
        self.notifier.wake()

    def run_all(self) -> None:
        """Run every action posted, including those posted while running."""
        actions = self.actions
        while actions:
            actions.popleft()()

    @property
    def has_mail(self) -> bool:
        return bool(self.actions)
