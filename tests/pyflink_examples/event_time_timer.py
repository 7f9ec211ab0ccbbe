"""Event-time timers: a key's total is reported 3 seconds (event time) after each record."""

from pyflink.common import Duration, WatermarkStrategy
from pyflink.common.typeinfo import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor


class ReportLater(KeyedProcessFunction):
    def __init__(self):
        self.total = None

    def open(self, runtime_context: RuntimeContext):
        self.total = runtime_context.get_state(
            ValueStateDescriptor("total", Types.PICKLED_BYTE_ARRAY())
        )

    def process_element(self, value, ctx: "KeyedProcessFunction.Context"):
        current = self.total.value()
        if current is None:
            current = 0
        self.total.update(current + value[2])
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 3000)

    def on_timer(self, timestamp: int, ctx: "KeyedProcessFunction.OnTimerContext"):
        yield ctx.get_current_key(), timestamp, self.total.value()


class FirstField(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return int(value[0])


def event_time_timer_demo():
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)

    ds = env.from_collection(
        collection=[
            (2000, "red", 5),
            (6500, "blue", 1),
            (1000, "red", 7),
            (4200, "blue", 2),
            (9000, "red", 3),
        ]
    )

    ds = ds.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_seconds(3)
        ).with_timestamp_assigner(FirstField())
    )

    ds.key_by(lambda value: value[1]).process(ReportLater()).print()

    env.execute()


if __name__ == "__main__":
    event_time_timer_demo()
