"""Word count: the "hello world" of stream processing, run on two parallel subtasks.

The job reads lines of text, splits them into words, pairs each word with a 1, partitions
the pairs by word (``key_by``: every occurrence of a word goes to the same subtask, through
a serializing channel) and keeps a running sum per word. The running sums are collected
and the last one of each word — its final count — is printed, most frequent first.

The plan has three chains (``--explain`` prints it); ``==>`` marks the channels between
them, where records are serialized into byte buffers::

    Collection Source ==(rebalance)==> Split Words -> Pair With One
        ==(hash by word)==> Count -> Collect Sink

Run it (from the repository root)::

    python examples/word_count.py                  # the built-in lines below
    python examples/word_count.py --input FILE     # the lines of a text file
    python examples/word_count.py --explain        # also print the plan first

or as a job file of the command line (``build(env, args)`` describes the job; ``flowkit
run`` runs it, one subtask per operator unless ``--parallelism`` says otherwise, with its
progress on standard error). The job file runs in BATCH mode, as PyFlink's word count
does: the running sum emits each word's final count once the input has ended, the words
in the order Flink's batch execution sorts keys (by their serialized form: shorter words
first)::

    flowkit run examples/word_count.py
    flowkit run examples/word_count.py -- --input FILE

Expected output (of the built-in lines):
    stream 3
    to 3
    a 2
    records 2
    river 2
    and 1
    flow 1
    is 1
    keyed 1
    not 1
    of 1
    or 1
    the 1

Output of ``flowkit run examples/word_count.py``:
    a 2
    is 1
    of 1
    or 1
    to 3
    and 1
    not 1
    the 1
    flow 1
    keyed 1
    river 2
    stream 3
    records 2
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence

from flowkit import CollectSink, DataStream, RuntimeExecutionMode, StreamExecutionEnvironment

LINES = [
    "To stream, or not to stream:",
    "a stream is a river of records,",
    "and records flow to the keyed river.",
]

_WORD = re.compile(r"[a-z']+")


def split_words(line: str) -> list[str]:
    """The lower-case words of ``line`` (punctuation dropped)."""
    return _WORD.findall(line.lower())


def pair_with_one(word: str) -> tuple[str, int]:
    """``word`` -> ``(word, 1)``: the record the running sum adds up."""
    return (word, 1)


def word_counts(lines: DataStream) -> DataStream:
    """The running ``(word, count)`` of every word in ``lines`` (a stream of text lines).

    Every occurrence of a word emits the word's count so far; the last one of a word is
    its final count.
    """
    return (
        lines.flat_map(split_words)
        .name("Split Words")
        .map(pair_with_one)
        .name("Pair With One")
        .key_by(lambda pair: pair[0])  # same word -> same subtask, whatever the parallelism
        .sum(1)  # running sum of position 1 per word
        .name("Count")
    )


def build_job(lines: DataStream) -> CollectSink:
    """Describe the word count over ``lines``; return the sink that will hold the counts.

    Args:
        lines: a stream of text lines.

    Returns:
        A :class:`~flowkit.CollectSink` that receives ``(word, running_count)`` records.
    """
    sink = CollectSink()
    word_counts(lines).sink_to(sink)
    return sink


def build(env: StreamExecutionEnvironment, args: Sequence[str] = ()) -> None:
    """The job file's entry point for ``flowkit run``: print each word's final count.

    The job runs in BATCH mode (``RuntimeExecutionMode.BATCH``, as PyFlink's word count
    does): the input is bounded, so the running sum emits only each word's final count,
    once the input has ended.

    Args:
        env: the environment the command line made (``--parallelism``, ``--set``...).
        args: the arguments after ``--``: ``--input FILE`` counts a text file's words.
    """
    parser = argparse.ArgumentParser(prog="word_count.py")
    parser.add_argument("--input", metavar="PATH", help="text file (default: built-in lines)")
    options = parser.parse_args(list(args))
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    lines = (
        env.read_text_file(options.input)
        if options.input is not None
        else env.from_collection(LINES)
    )
    word_counts(lines).map(lambda pair: f"{pair[0]} {pair[1]}").name("Format").print()


def final_counts(running: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The last running count of each word.

    One subtask owns each word and emits its running counts in order, so the last record
    seen for a word carries its final count.
    """
    counts: dict[str, int] = {}
    for word, count in running:
        counts[word] = count
    return counts


def count_words(
    lines: Sequence[str] | None = None,
    path: str | None = None,
    parallelism: int = 2,
    explain: bool = False,
) -> dict[str, int]:
    """Run the word count job and return the final count of every word.

    Args:
        lines: lines of text to count (default: the built-in ``LINES``).
        path: a text file to read instead of ``lines``.
        parallelism: subtasks per operator (the source itself is non-parallel).
        explain: print the job's plan before running it.

    Returns:
        ``{word: count}``.

    Example:
        >>> sorted(count_words(["b a", "b"]).items())
        [('a', 1), ('b', 2)]
    """
    env = StreamExecutionEnvironment(parallelism=parallelism)
    source = env.read_text_file(path) if path is not None else env.from_collection(lines or LINES)
    sink = build_job(source)
    if explain:
        print(env.explain())
        print()
    env.execute("word count")
    return final_counts(sink.values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count the words of some text with flowkit.")
    parser.add_argument(
        "--input", metavar="PATH", help="text file to count (default: built-in lines)"
    )
    parser.add_argument(
        "--parallelism", type=int, default=2, help="subtasks per operator (default 2)"
    )
    parser.add_argument("--explain", action="store_true", help="print the job's plan first")
    args = parser.parse_args(argv)

    counts = count_words(path=args.input, parallelism=args.parallelism, explain=args.explain)
    for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(word, count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
