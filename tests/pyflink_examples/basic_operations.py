"""Basic operations: map, filter and a keyed reduce, each run as its own job."""

import json
import logging
import sys

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment


def run_and_print(ds, env):
    ds.print()
    env.execute()


def basic_operations():
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)

    # named rows: the functions below read their fields by name
    ds = env.from_collection(
        collection=[
            (7, '{"user": "ann", "visits": 3, "home": {"country": "France", "city": "Lyon"}}'),
            (8, '{"user": "bob", "visits": 10, "home": {"country": "Japan", "city": "Osaka"}}'),
            (9, '{"user": "cid", "visits": 1, "home": {"country": "France", "city": "Nice"}}'),
        ],
        type_info=Types.ROW_NAMED(["uid", "profile"], [Types.INT(), Types.STRING()]),
    )

    def count_visit(row):
        profile = json.loads(row.profile)
        profile["visits"] += 1
        return row.uid, json.dumps(profile)

    # map
    run_and_print(ds.map(count_visit), env)

    # filter, then map
    run_and_print(ds.filter(lambda row: row.uid > 7).map(count_visit), env)

    # key by country, running sum of the visits
    run_and_print(
        ds.map(
            lambda row: (
                json.loads(row.profile)["home"]["country"],
                json.loads(row.profile)["visits"],
            )
        )
        .key_by(lambda pair: pair[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1])),
        env,
    )


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    basic_operations()
