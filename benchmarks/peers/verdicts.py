"""Checks a tool's table against the source rows expected per day: missing, duplicated, extra (stale) rows.

Rows are told apart by `flight_id` (every tool's key); a row is "extra" when its id is not among the day's
source rows now (e.g. one of the 10 removed rows, or a row of a day whose source is now empty).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg


@dataclass
class Verdict:
    expected: int = 0
    rows: int = 0
    missing: int = 0
    duplicates: int = 0  # rows beyond the first of each id
    extra: int = 0
    max_copies: int = 0
    error: str = ""

    @property
    def correct(self) -> bool:
        return not (self.error or self.missing or self.duplicates or self.extra)

    def text(self, extra_label: str = "stale rows") -> str:
        if self.error:
            return self.error
        if self.correct:
            return "correct"
        parts = []
        if self.duplicates:
            if self.missing == 0 and self.extra == 0 and self.rows == self.expected * self.max_copies:
                parts.append(f"{self.max_copies}x duplicated")
            else:
                parts.append(f"{self.duplicates:,} duplicate rows (up to {self.max_copies}x)")
        if self.missing:
            parts.append(f"{self.missing:,} of {self.expected:,} rows missing")
        if self.extra:
            parts.append(f"kept {self.extra:,} {extra_label}")
        return ", ".join(parts)


def table_ids(dsn: str, table: str, first: str, last: str) -> pd.DataFrame:
    query = f"COPY (SELECT flight_day, flight_id FROM {table} WHERE flight_day BETWEEN '{first}' AND '{last}') TO STDOUT"
    buffer = io.BytesIO()
    with psycopg.connect(dsn) as conn, conn.cursor().copy(query) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    return pd.read_csv(buffer, sep="\t", names=["flight_day", "flight_id"], dtype={"flight_day": str, "flight_id": "int64"})


def check(dsn: str, table: str, expected: dict[str, np.ndarray]) -> Verdict:
    """The table's rows of the expected days vs the expected ids per day."""
    days = sorted(expected)
    try:
        actual = table_ids(dsn, table, days[0], days[-1])
    except psycopg.Error as exc:
        return Verdict(error=f"cannot read {table}: {str(exc).splitlines()[0]}")
    verdict = Verdict()
    groups = {day: ids.to_numpy() for day, ids in actual.groupby("flight_day")["flight_id"]}
    for day in days:
        want = np.unique(expected[day])
        have = groups.get(day, np.empty(0, dtype="int64"))
        unique, counts = np.unique(have, return_counts=True)
        verdict.expected += len(want)
        verdict.rows += len(have)
        verdict.missing += len(np.setdiff1d(want, unique, assume_unique=True))
        verdict.extra += len(np.setdiff1d(unique, want, assume_unique=True))
        verdict.duplicates += int((counts - 1).sum())
        if len(counts):
            verdict.max_copies = max(verdict.max_copies, int(counts.max()))
    return verdict
