"""Keyed state: a running total per key kept in a ValueState."""

from pyflink.common.typeinfo import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor


class RunningTotal(KeyedProcessFunction):
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
        current += value[1]
        self.total.update(current)
        yield value[0], current


def state_access_demo():
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)

    ds = env.from_collection(
        collection=[
            ("pear", 2.5),
            ("plum", 1.25),
            ("pear", 0.1),
            ("plum", 0.2),
            ("pear", 4.0),
            ("fig", 3.0),
        ]
    )

    ds.key_by(lambda value: value[0]).process(RunningTotal()).print()

    env.execute()


if __name__ == "__main__":
    state_access_demo()
