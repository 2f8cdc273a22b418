"""Daily partitions: each asset's partitions definition, its day windows, and partition-key validation.

Every asset of the platform is partitioned by day. A partition key is a `YYYY-MM-DD` string; its window is
`[day 00:00, next day 00:00)` in the asset's timezone (UTC unless the asset says otherwise). Sources are queried by
that window, never by "since the last run", so the same key always addresses the same slice of the world.

An asset's days run from its `start` (default `IDEM_PARTITIONS_START`, 2024-01-01) to its `end` (inclusive; default:
yesterday, a day becomes a partition once it is complete, as in every Dagster daily schedule).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from . import settings


class InvalidPartitionKey(ValueError):
    """A partition key that is malformed or outside the asset's partitions."""


def _day(value: str | dt.date, what: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a day in YYYY-MM-DD form") from None


def daily_partitions(
    start: str | dt.date | None = None, end: str | dt.date | None = None, timezone: str | None = None
) -> dg.DailyPartitionsDefinition:
    """Days from `start` to `end` (inclusive; None: up to yesterday) in `timezone` (defaults from settings)."""
    config = settings.current()
    first = _day(start or config.partitions_start, "start")
    zone = timezone or config.partitions_timezone
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {zone!r} is not an IANA timezone name (e.g. UTC, Europe/Paris)") from None
    last = _day(end, "end") if end else None
    if last is not None and last < first:
        raise ValueError(f"end {last} is before start {first}")
    return dg.DailyPartitionsDefinition(
        start_date=first.isoformat(),
        end_date=(last + dt.timedelta(days=1)).isoformat() if last else None,  # Dagster's end_date is exclusive
        timezone=zone,
        end_offset=0,
    )


def describe(partitions_def: dg.PartitionsDefinition | None) -> str:
    """`2024-01-01 .. 2026-11-30 (UTC)`: what the error messages show as the valid range."""
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return "no daily partitions"
    first, last = partitions_def.get_first_partition_key(), partitions_def.get_last_partition_key()
    if first is None:
        return f"none yet (the first day {partitions_def.start.date()} is not complete)"
    return f"{first} .. {last} ({partitions_def.timezone})"


def valid_range(partitions_def: dg.PartitionsDefinition | None = None) -> tuple[str, str]:
    """The first and last partition keys that exist right now.

    O(1): the first and last windows of the definition, not an enumeration of every key since the start.
    """
    partitions_def = partitions_def or daily_partitions()
    first, last = partitions_def.get_first_partition_key(), partitions_def.get_last_partition_key()
    if first is None or last is None:
        raise InvalidPartitionKey(
            f"no partition exists yet: the first day {partitions_def.start.date()} is not complete "
            "(set the asset's start, or IDEM_PARTITIONS_START)"
        )
    return first, last


def parse_partition_key(
    key: str, valid: tuple[str, str] | None = None, *, asset: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> dt.date:
    """The day a partition key names; raises InvalidPartitionKey naming the asset, the key and the valid range.

    `valid` is `valid_range()` when the caller already has it (validating many keys computes it once).
    """
    first, last = valid if valid is not None else valid_range(partitions_def)
    whose = f"asset {asset!r}: " if asset else ""
    try:
        if not isinstance(key, str) or len(key) != 10:
            raise ValueError
        day = dt.date.fromisoformat(key)
    except ValueError:
        raise InvalidPartitionKey(
            f"{whose}partition key {key!r} is not a day in YYYY-MM-DD form; valid partitions are {first} .. {last}"
        ) from None
    if not (dt.date.fromisoformat(first) <= day <= dt.date.fromisoformat(last)):
        raise InvalidPartitionKey(
            f"{whose}partition key {key!r} is outside its partitions; valid partitions are {first} .. {last}"
            " (move them with @idem_asset(start=..., end=...) or IDEM_PARTITIONS_START)"
        )
    return day


def validate_partition_keys(
    keys: Sequence[str], partitions_def: dg.PartitionsDefinition | None = None, *, asset: str | None = None
) -> list[dt.date]:
    """Parse every key; the first invalid one raises."""
    if not keys:
        return []
    valid = valid_range(partitions_def)  # once, not once per key
    return [parse_partition_key(k, valid, asset=asset) for k in keys]


def partition_window(key: str, timezone: str = "UTC") -> tuple[dt.datetime, dt.datetime]:
    """The half-open window `[start, end)` of a day partition, in its timezone."""
    day = _day(key, "partition key")
    start = dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(timezone))
    return start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(timezone))


def parse_range(text: str) -> tuple[str, str]:
    """`A...B` (the CLI's and `dagster asset materialize`'s form) or `[A...B]` (the Dagster UI's)."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1].strip()
    first, sep, last = body.partition("...")
    if not sep or not first.strip() or not last.strip():
        raise InvalidPartitionKey(f"partition range {text!r} is not of the form A...B (e.g. 2026-01-01...2026-01-07)")
    return first.strip(), last.strip()


def days_between(
    first: str, last: str, partitions_def: dg.PartitionsDefinition | None = None, *, asset: str | None = None
) -> list[str]:
    """Every partition key from `first` to `last` inclusive, validated."""
    valid = valid_range(partitions_def)
    start = parse_partition_key(first, valid, asset=asset)
    end = parse_partition_key(last, valid, asset=asset)
    if end < start:
        raise InvalidPartitionKey(f"partition range {first}...{last} ends before it starts")
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def last_n_days(n: int, *, today: dt.date | None = None) -> list[str]:
    """The `n` complete UTC days before today, oldest first (what `make run` materializes)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(n, 0, -1)]
