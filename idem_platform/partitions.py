"""Daily partitions: the one partitions definition, its UTC windows, and partition-key validation.

Every asset of the platform is partitioned by UTC day. A partition key is a `YYYY-MM-DD` string; its window is
`[day 00:00 UTC, next day 00:00 UTC)`. Sources are queried by that window, never by "since the last run", so the
same key always addresses the same slice of the world.

The first day is `IDEM_PARTITIONS_START` (default 2024-01-01); the last is yesterday (UTC): a day becomes a
partition once it is complete, as in every Dagster daily schedule.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence

import dagster as dg

DEFAULT_START_DATE = "2024-01-01"
START_DATE = os.environ.get("IDEM_PARTITIONS_START", DEFAULT_START_DATE)

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC", end_offset=0)


class InvalidPartitionKey(ValueError):
    """A partition key that is malformed or outside the partitions definition."""


def valid_range() -> tuple[str, str]:
    """The first and last partition keys that exist right now.

    O(1): the first and last windows of the definition, not an enumeration of every key since the start
    (~1,000 keys, several ms, which every validated key used to pay).
    """
    first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
    if first is None or last is None:
        raise InvalidPartitionKey(
            f"no partition exists yet: the first day {START_DATE} is not complete (set IDEM_PARTITIONS_START)"
        )
    return first, last


def parse_partition_key(key: str, valid: tuple[str, str] | None = None) -> dt.date:
    """The day a partition key names; raises InvalidPartitionKey naming the key and the valid range.

    `valid` is `valid_range()` when the caller already has it (validating many keys computes it once).
    """
    first, last = valid if valid is not None else valid_range()
    try:
        if not isinstance(key, str) or len(key) != 10:
            raise ValueError
        day = dt.date.fromisoformat(key)
    except ValueError:
        raise InvalidPartitionKey(
            f"partition key {key!r} is not a day in YYYY-MM-DD form; valid partitions are {first} .. {last}"
        ) from None
    if not (dt.date.fromisoformat(first) <= day <= dt.date.fromisoformat(last)):
        raise InvalidPartitionKey(
            f"partition key {key!r} is outside the partitions definition; valid partitions are {first} .. {last}"
            " (set IDEM_PARTITIONS_START to move the first day)"
        )
    return day


def validate_partition_keys(keys: Sequence[str]) -> list[dt.date]:
    """Parse every key; the first invalid one raises."""
    if not keys:
        return []
    valid = valid_range()  # once, not once per key
    return [parse_partition_key(k, valid) for k in keys]


def partition_window(key: str) -> tuple[dt.datetime, dt.datetime]:
    """The UTC half-open window `[start, end)` of a day partition."""
    day = parse_partition_key(key)
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return start, start + dt.timedelta(days=1)


def days_between(first: str, last: str) -> list[str]:
    """Every partition key from `first` to `last` inclusive, validated."""
    valid = valid_range()
    start, end = parse_partition_key(first, valid), parse_partition_key(last, valid)
    if end < start:
        raise InvalidPartitionKey(f"partition range {first}...{last} ends before it starts")
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def last_n_days(n: int, *, today: dt.date | None = None) -> list[str]:
    """The `n` complete UTC days before today, oldest first (what `make run` materializes)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(n, 0, -1)]
