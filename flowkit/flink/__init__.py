"""Run flowkit jobs on Apache Flink (PyFlink 2.x), locally or on a cluster.

Install the extra (``pip install "flowkit-streaming[flink]"``, with Java 17), then:

Example:
    >>> from flowkit import StreamExecutionEnvironment
    >>> from flowkit.flink import FlinkRunner
    >>> env = StreamExecutionEnvironment(parallelism=2)
    >>> stream = env.from_collection([1, 2, 3]).map(lambda x: x * 10)
    >>> sorted(FlinkRunner().execute_and_collect(stream))  # doctest: +SKIP
    [10, 20, 30]

Importing this package does not import PyFlink; running a job does. See docs/flink.md.
"""

from flowkit.flink.plan import UnsupportedOperatorError, plan
from flowkit.flink.runner import FlinkRunner

__all__ = ["FlinkRunner", "UnsupportedOperatorError", "plan"]
