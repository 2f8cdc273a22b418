"""Content fingerprints: an order-independent, duplicate-sensitive 64-bit hash of a partition's rows.

Each row is hashed in a canonical form: columns sorted by name, every value hashed by its declared type
(strings as UTF-8 text, integers and booleans as integers, floats by their exact bits, dates as seconds and
timestamps as UTC microseconds since the epoch, every null as one marker). The canonical numbers are an exact,
faster equivalent of "UTC ISO text": two timestamps hash equal exactly when their UTC instants are equal.
Row hashes are added modulo 2**64 (never XORed: two equal rows would cancel), so:

- row order does not matter, a duplicated row does;
- the fingerprint of a range is the sum of its days' fingerprints;
- the same content read back from PostgreSQL, Elasticsearch or a lake file gives the same value, because
  every sink's reader returns frames through `TableDeclaration.coerce`.

Per-value hashing is pandas' vectorized `hash_array`; the rest is a handful of numpy operations per column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.util import hash_array

from .schema import PARTITION_COLUMN, TableDeclaration

_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)
_ROW_PRIME = np.uint64(0x100000001B3)
# Rows hashed at a time (128 Ki): the whole-frame temporaries become slice-sized, and slices fit in cache.
HASH_SLICE_ROWS = 131_072


@dataclass(frozen=True)
class PartitionDigest:
    """What one day partition holds: its row count and content fingerprint."""

    rows: int
    fingerprint: str


def _name_hash(name: str) -> np.uint64:
    return hash_array(np.array([name], dtype=object))[0]


def _column_hashes(series: pd.Series, type_name: str) -> np.ndarray:
    null = series.isna().to_numpy()
    if type_name == "string":
        values = series.to_numpy(dtype=object, na_value="")
        hashes = hash_array(values, categorize=False)  # factorizing first is slower on mostly-unique text
    elif type_name in ("int", "bool"):
        hashes = hash_array(series.to_numpy(dtype="int64", na_value=0))
    elif type_name == "float":
        hashes = hash_array(series.to_numpy(dtype="float64", na_value=0.0))
    elif type_name in ("date", "timestamp"):
        if series.dt.tz is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        hashes = hash_array(series.to_numpy().view("int64"))
    else:  # pragma: no cover - TableDeclaration rejects unknown types
        raise ValueError(type_name)
    if null.any():
        hashes = hashes.copy()
        hashes[null] = _NULL_HASH
    return hashes


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_hashes(frame: pd.DataFrame, decl: TableDeclaration) -> np.ndarray:
    """One uint64 per row of a frame already in the declared dtypes (`decl.coerce`).

    Computed in slices of HASH_SLICE_ROWS rows into one preallocated array: a row's hash depends on that row
    only, so the values are those of hashing the whole frame at once, but at most one slice of temporaries
    (a string column becomes one Python str per row before hashing) is alive at a time.
    """
    columns = [(frame[name], decl.column(name).type, _name_hash(name)) for name in sorted(decl.names)]
    out = np.empty(len(frame), dtype=np.uint64)
    for start in range(0, len(frame), HASH_SLICE_ROWS):
        stop = min(start + HASH_SLICE_ROWS, len(frame))
        out[start:stop] = _slice_row_hashes([(series.iloc[start:stop], t, h) for series, t, h in columns], stop - start)
    return out


def _slice_row_hashes(columns: list[tuple[pd.Series, str, np.uint64]], rows: int) -> np.ndarray:
    """Row hashes of one slice: its columns in name order, each with its type and name hash."""
    combined = np.zeros(rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for series, type_name, name_hash in columns:
            combined = combined * _ROW_PRIME + (_column_hashes(series, type_name) ^ name_hash)
        return _splitmix64(combined)


def _format(total: np.uint64) -> str:
    return f"{int(total):016x}"


def fingerprint(frame: pd.DataFrame, decl: TableDeclaration) -> str:
    """The fingerprint of all rows of a frame (16 hex digits; an empty frame is all zeros)."""
    with np.errstate(over="ignore"):
        return _format(row_hashes(frame, decl).sum(dtype=np.uint64))


def partition_digests(frame: pd.DataFrame, decl: TableDeclaration, days: list[str]) -> dict[str, PartitionDigest]:
    """Row count and fingerprint of every day in `days` (days without rows get the empty digest)."""
    hashes = row_hashes(frame, decl)
    digests = {day: PartitionDigest(0, _format(np.uint64(0))) for day in days}
    if len(frame):
        # group on the day's raw datetime value; only the distinct days are formatted as keys
        grouped = pd.Series(hashes).groupby(frame[PARTITION_COLUMN].to_numpy(), sort=False)
        with np.errstate(over="ignore"):
            for day, group in grouped:
                total = group.to_numpy().sum(dtype=np.uint64)
                digests[pd.Timestamp(day).strftime("%Y-%m-%d")] = PartitionDigest(len(group), _format(total))
    return digests


def combine(digests: list[PartitionDigest]) -> PartitionDigest:
    """The digest of several partitions together (the sum of their fingerprints)."""
    total = sum(int(d.fingerprint, 16) for d in digests) % (1 << 64)
    return PartitionDigest(sum(d.rows for d in digests), f"{total:016x}")
