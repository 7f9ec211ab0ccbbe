"""Random input for the window tests: elements out of order and watermarks."""

from __future__ import annotations

import random


def elements_and_watermarks(
    rng: random.Random,
    count: int,
    *,
    keys: int,
    watermark_chance: float,
    max_advance: int,
    behind: int,
    ahead: int,
) -> list[int | tuple[str, int]]:
    """``count`` steps: a watermark (an int, rising by 1 to ``max_advance``) with chance
    ``watermark_chance``, else an element ``(key, timestamp)`` of one of ``keys`` keys, with
    a timestamp from ``behind`` under the watermark (late ones too) to ``ahead`` over it,
    never negative."""
    steps: list[int | tuple[str, int]] = []
    watermark = -1
    for _ in range(count):
        if rng.random() < watermark_chance:
            watermark += rng.randint(1, max_advance)
            steps.append(watermark)
        else:
            ts = rng.randint(watermark - behind, watermark + ahead)
            steps.append((f"k{rng.randrange(keys)}", max(ts, 0)))
    return steps
