"""The test content every reliability scenario writes and reads back.

`frame_for(gen, rows_by_day)`: rows of one *generation* (`old`, `new`, `w3`...) whose keys carry the generation, so a
reader can tell exactly which write it sees: a day is complete when its rows are all of one generation and number
exactly that generation's rows of the day (`state(gen, rows)`). Strings carry quotes, commas, semicolons, newlines
and non-ASCII text (`NOTES`), so the COPY, the bulk JSON and Parquet all meet them.
"""

from __future__ import annotations

import functools

import pandas as pd

from idem_platform.storage.fingerprint import PartitionDigest, partition_digests
from idem_platform.storage.schema import PARTITION_COLUMN, TableDeclaration

DECL = TableDeclaration.build(
    {"id": "string", "gen": "string", "n": "int", "x": "float", "note": "string", "at": "timestamp"}, key=["id"]
)
NOTES = ("plain", 'say "hi"; DROP TABLE victim; --', "comma, semicolon; quote '", "naïve café ✓ 日本", "two\nlines", "\\.", "")


@functools.lru_cache(maxsize=256)
def _frame(gen: str, rows_by_day: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    records = []
    for day, rows in rows_by_day:
        for i in range(rows):
            records.append({
                "id": f"{gen}-{day}-{i:05d}", "gen": gen, "n": None if i % 7 == 3 else i * 1_000_003,
                "x": i / 7, "note": NOTES[i % len(NOTES)], "at": pd.Timestamp(f"{day}T00:00:00Z") + pd.Timedelta(seconds=i),
                PARTITION_COLUMN: day,
            })
    frame = pd.DataFrame.from_records(records, columns=[*DECL.names]) if records else DECL.empty_frame()
    return DECL.coerce(frame)


def frame_for(gen: str, rows_by_day: dict[str, int]) -> pd.DataFrame:
    """`rows_by_day[day]` rows of generation `gen` for each day (0 rows: the day is published empty)."""
    return _frame(gen, tuple(sorted(rows_by_day.items()))).copy()


def digests_for(gen: str, rows_by_day: dict[str, int]) -> dict[str, PartitionDigest]:
    return partition_digests(frame_for(gen, rows_by_day), DECL, sorted(rows_by_day))


def state(gen: str, rows: int) -> dict[str, int]:
    """The complete state of a day that holds `rows` rows of `gen` (`{}`: published empty)."""
    return {gen: rows} if rows else {}
