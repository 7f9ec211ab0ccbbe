"""Event-time session windows with a gap of 3 ms: records per key and session."""

import argparse
import sys
from collections.abc import Iterable

from pyflink.common import Encoder, Time, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import ProcessWindowFunction, StreamExecutionEnvironment
from pyflink.datastream.connectors import FileSink, OutputFileConfig, RollingPolicy
from pyflink.datastream.window import EventTimeSessionWindows, TimeWindow


class SecondField(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return int(value[1])


class CountPerSession(ProcessWindowFunction[tuple, tuple, str, TimeWindow]):
    def process(
        self,
        key: str,
        context: ProcessWindowFunction.Context[TimeWindow],
        elements: Iterable[tuple],
    ) -> Iterable[tuple]:
        return [(key, context.window().start, context.window().end, len(list(elements)))]

    def clear(self, context: ProcessWindowFunction.Context) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", dest="output", required=False, help="output directory")
    known_args, _ = parser.parse_known_args(sys.argv[1:])

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)

    stream = env.from_collection(
        [("s", 1), ("s", 3), ("s", 6), ("s", 10), ("s", 12), ("s", 20)],
        type_info=Types.TUPLE([Types.STRING(), Types.INT()]),
    )

    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(SecondField())

    sessions = (
        stream.assign_timestamps_and_watermarks(strategy)
        .key_by(lambda x: x[0], key_type=Types.STRING())
        .window(EventTimeSessionWindows.with_gap(Time.milliseconds(3)))
        .process(
            CountPerSession(), Types.TUPLE([Types.STRING(), Types.INT(), Types.INT(), Types.INT()])
        )
    )

    if known_args.output is not None:
        sessions.sink_to(
            sink=FileSink.for_row_format(
                base_path=known_args.output, encoder=Encoder.simple_string_encoder()
            )
            .with_output_file_config(
                OutputFileConfig.builder()
                .with_part_prefix("sessions")
                .with_part_suffix(".txt")
                .build()
            )
            .with_rolling_policy(RollingPolicy.default_rolling_policy())
            .build()
        )
    else:
        print("Printing result to stdout. Use --output to specify output path.")
        sessions.print()

    env.execute()
