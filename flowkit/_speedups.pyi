# Types of the compiled helpers in flowkit/_speedups.c (optional; see flowkit._native).

from collections.abc import Iterable
from typing import Any

API_VERSION: int

def str_hash(s: str, /) -> int: ...
def murmur_hash(code: int, /) -> int: ...
def str_key_group(key: str, max_parallelism: int, /) -> int: ...
def int_key_group(key: int, max_parallelism: int, /) -> int | None: ...
def encode_batch(values: object, /) -> bytes | None: ...
def decode_batch(payload: bytes | bytearray | memoryview, /) -> list[object]: ...
def untrack(container: list[Any] | tuple[Any, ...], /) -> None: ...
def untrack_atoms(value: object, /) -> None: ...
def run_keyed(
    values: list[object],
    timestamps: list[object] | None,
    key_selector: object,
    str_groups: dict[object, int],
    group_of: object,
    normalize: object,
    backend: object,
    ctx: object,
    fn: object,
    out: list[object],
    stamps: list[object],
    add: object,
    side: object,
    tag_class: type,
    generator_type: type,
    /,
) -> None: ...
def value_state_methods(
    state_type: type, group_type: type, immutable: frozenset[type], /
) -> tuple[Any, Any]: ...
def reduce_batch(
    values: list[object],
    key_of: object,
    accs: dict[object, object],
    reduce: object,
    state_key: object,
    out: list[object],
    pair_sum: bool,
    /,
) -> None: ...
def state_key(
    by_class: dict[type, dict[object, object]], slow: object, key: object, /
) -> object: ...
def split_by_key_group(
    entries: dict[object, object],
    max_parallelism: int,
    group_of: object,
    by_first: bool = False,
    /,
) -> dict[int, dict[object, object]]: ...
def window_add(
    values: list[object],
    timestamps: list[object],
    key_of: object,
    canonical: object,
    max_parallelism: int,
    key_group_of: object,
    kg_low: int,
    kg_high: int,
    not_owned: object,
    slots: dict[int, object],
    window_for: object,
    add_other: object,
    late: object,
    late_marker: object,
    size: int,
    slide: int,
    offset: int,
    lateness: int,
    watermark: int,
    kind: int,
    fn: object,
    create: object,
    at: list[int],
    /,
) -> int: ...
def window_fire(
    entries: dict[object, object],
    backend: object,
    set_key: object,
    call: object,
    second: object,
    kind: int,
    get_result: object,
    clear: object,
    window: object,
    ctx: object,
    out_v: list[object],
    out_t: list[object],
    max_ts: int,
    side: object,
    tag_class: type,
    exact_key_type: type,
    max_parallelism: int,
    key_group_of: object,
    /,
) -> None: ...

class TimestampHeap:
    def push(self, timestamp: int, /) -> None: ...
    def pop(self) -> int: ...
    def low(self) -> int | None: ...
    def rebuild(self, timestamps: Iterable[int], /) -> None: ...
    def entries(self) -> list[int]: ...
    def __len__(self) -> int: ...
