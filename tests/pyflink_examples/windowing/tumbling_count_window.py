"""Count windows of 2 records per key, summed by a WindowFunction."""

import argparse
import sys
from collections.abc import Iterable

from pyflink.common import Encoder, Types
from pyflink.datastream import StreamExecutionEnvironment, WindowFunction
from pyflink.datastream.connectors import FileSink, OutputFileConfig, RollingPolicy
from pyflink.datastream.window import CountWindow


class SumFirstField(WindowFunction[tuple, tuple, str, CountWindow]):
    def apply(self, key: str, window: CountWindow, inputs: Iterable[tuple]):
        total = 0
        for record in inputs:
            total += record[0]
        return [(key, total)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", dest="output", required=False, help="output directory")
    known_args, _ = parser.parse_known_args(sys.argv[1:])

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)

    stream = env.from_collection(
        [(10, "x"), (1, "y"), (20, "x"), (2, "y"), (30, "x"), (3, "y"), (40, "x")],
        type_info=Types.TUPLE([Types.INT(), Types.STRING()]),
    )

    sums = (
        stream.key_by(lambda r: r[1], key_type=Types.STRING())
        .count_window(2)
        .apply(SumFirstField(), Types.TUPLE([Types.STRING(), Types.INT()]))
    )

    if known_args.output is not None:
        sums.sink_to(
            sink=FileSink.for_row_format(
                base_path=known_args.output, encoder=Encoder.simple_string_encoder()
            )
            .with_output_file_config(
                OutputFileConfig.builder().with_part_prefix("sums").with_part_suffix(".txt").build()
            )
            .with_rolling_policy(RollingPolicy.default_rolling_policy())
            .build()
        )
    else:
        print("Printing result to stdout. Use --output to specify output path.")
        sums.print()

    env.execute()
