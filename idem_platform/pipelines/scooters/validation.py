"""Validation: the declared row rules, as pandera schemas.

Two declared schemas validate a whole day at once: `RAW_SCHEMA` on the cleaned text (required fields,
parseable types, lengths) and `TRIP_SCHEMA` on the typed rows (coordinate and duration ranges, end after
start, start on the file's day, trip id unique within the day across all its files: the first occurrence in
file-name then line order is kept). The rules a row can break while it is split from its file (UTF-8,
well-formed CSV, field size, field count) are declared here too, so that `DECLARED_RULES` names every row
rule, in the order a rejected row lists them.
"""

from __future__ import annotations

import csv

import pandas as pd
import pandera.pandas as pa

from .cleaning import parse_datetimes, parse_duration_seconds, parse_numbers

# The rules a row breaks while it is split from its file (`reading` checks them).
RULE_UTF8 = "row is valid UTF-8"
RULE_CSV = "row is well-formed CSV"
RULE_FIELD_SIZE = f"every field at most {csv.field_size_limit():,} characters"
RULE_FIELD_COUNT = "row has as many fields as the header"


def _parses(parser):
    return lambda s: parser(s).notna()


def _text_length(column: str, most: int) -> pa.Check:
    return pa.Check.str_length(max_value=most, error=f"{column} has at most {most} characters")


RAW_SCHEMA = pa.DataFrameSchema(
    {
        "trip_id": pa.Column(nullable=False, checks=_text_length("trip_id", 64)),
        "vehicle_id": pa.Column(nullable=True, checks=_text_length("vehicle_id", 64)),
        "user_id": pa.Column(nullable=True, checks=_text_length("user_id", 64)),
        **{
            c: pa.Column(nullable=False, checks=pa.Check(_parses(parse_datetimes), error=f"{c} is a date-time"))
            for c in ("started_at", "ended_at")
        },
        "duration": pa.Column(
            nullable=True, checks=pa.Check(_parses(parse_duration_seconds), error="duration is H:MM:SS or seconds")
        ),
        **{
            c: pa.Column(nullable=False, checks=pa.Check(_parses(parse_numbers), error=f"{c} is a number"))
            for c in ("start_lat", "start_lon", "end_lat", "end_lon")
        },
        "start_location_name": pa.Column(nullable=True, checks=_text_length("start_location_name", 500)),
        "end_location_name": pa.Column(nullable=True, checks=_text_length("end_location_name", 500)),
    },
    name="scooter trip text",
)


def _ends_after_start(df: pd.DataFrame) -> pd.Series:
    return ~(df["ended_at"] <= df["started_at"])


def _starts_on_file_day(df: pd.DataFrame) -> pd.Series:
    day = pd.to_datetime(df["partition_date"], utc=True)
    return df["started_at"].isna() | (df["started_at"].dt.floor("D") == day)


TRIP_SCHEMA = pa.DataFrameSchema(
    {
        "trip_id": pa.Column("string", nullable=True, unique=True, report_duplicates="exclude_first"),
        "started_at": pa.Column("datetime64[us, UTC]", nullable=True),
        "ended_at": pa.Column("datetime64[us, UTC]", nullable=True),
        "duration_seconds": pa.Column(
            "Int64", nullable=True, checks=pa.Check.in_range(1, 86_400, error="duration between 1 second and 24 hours")
        ),
        **{
            c: pa.Column(
                "float64", nullable=True, checks=pa.Check.in_range(-lim, lim, error=f"{c} between -{lim} and {lim}")
            )
            for c, lim in (("start_lat", 90), ("start_lon", 180), ("end_lat", 90), ("end_lon", 180))
        },
    },
    checks=[
        pa.Check(_ends_after_start, error="ended_at after started_at"),
        pa.Check(_starts_on_file_day, error="started_at on the file's day (UTC)"),
    ],
    name="scooter trip",
)

RULE_UNIQUE = "trip_id unique within the day"


def _declared_rules() -> list[str]:
    rules = [RULE_UTF8, RULE_CSV, RULE_FIELD_SIZE, RULE_FIELD_COUNT]
    for schema in (RAW_SCHEMA, TRIP_SCHEMA):
        for name, column in schema.columns.items():
            if not column.nullable:
                rules.append(f"{name} is required")
            rules.extend(check.error for check in column.checks)
            if column.unique:
                rules.append(RULE_UNIQUE)
        rules.extend(check.error for check in schema.checks)
    return rules


DECLARED_RULES: tuple[str, ...] = tuple(_declared_rules())
RULE_ORDER = {rule: i for i, rule in enumerate(DECLARED_RULES)}


def rule_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> dict[int, set[str]]:
    """Row index -> the rules of `schema` the row breaks (pandera, lazily: every failure, not the first)."""
    try:
        schema.validate(frame, lazy=True)
        return {}
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    failures: dict[int, set[str]] = {}
    for column, check, index in cases[["column", "check", "index"]].itertuples(index=False):
        if index is None or pd.isna(index):
            raise RuntimeError(f"schema {schema.name!r} does not fit the frame it validates: {column} {check}")
        if check == "not_nullable":
            rule = f"{column} is required"
        elif check == "field_uniqueness":
            rule = RULE_UNIQUE
        else:
            rule = check
        failures.setdefault(int(index), set()).add(rule)
    return failures
