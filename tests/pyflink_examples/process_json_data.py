"""JSON records: parse in a map, then filter on the parsed document."""

import json
import logging
import sys

from pyflink.datastream import StreamExecutionEnvironment


def process_json_data():
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)

    ds = env.from_collection(
        collection=[
            (1, '{"item": "lamp", "stock": 4, "store": {"region": "north", "id": 11}}'),
            (2, '{"item": "desk", "stock": 0, "store": {"region": "south", "id": 12}}'),
            (3, '{"item": "sofa", "stock": 2, "store": {"region": "north", "id": 13}}'),
        ]
    )

    def restock(data):
        doc = json.loads(data[1])
        doc["stock"] += 10
        return data[0], doc

    def in_the_north(data):
        # the map produced a dict: no need to parse again
        return data[1]["store"]["region"] == "north"

    ds.map(restock).filter(in_the_north).print()

    env.execute()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    process_json_data()
