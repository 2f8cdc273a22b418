"""Audit: the declared rules a partition must pass before it may be published.

Rules run on the exact frame that is staged, in every sink: rows only for the days being written, no nulls in
NOT NULL columns (key and partition_date among them), a unique key within each day, row counts within the
declared bounds, and every value one the sink can store and read back exactly (`ValueLimit`: the platform's
own, `PLATFORM_LIMITS`, plus the sink's `value_limits`). A failure raises `AuditError` naming asset, partition
and rule (and, for a value, the column and an example); the stage is discarded and the published partition is
untouched. Each sink then verifies its staged copy (row counts as the sink sees them) before publishing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .schema import PARTITION_COLUMN, TableDeclaration


@dataclass(frozen=True)
class AuditRules:
    """Per-partition row-count bounds (None: unbounded). Key and null rules come from the declaration."""

    min_rows: int | None = None
    max_rows: int | None = None

    def as_metadata(self) -> dict:
        return {"min_rows": self.min_rows, "max_rows": self.max_rows}

    @classmethod
    def from_metadata(cls, value: dict | None) -> AuditRules:
        return cls(**(value or {}))


class AuditError(Exception):
    """A partition failed an audit rule; nothing was published."""

    def __init__(self, asset: str, partitions: Sequence[str], rule: str, detail: str, column: str | None = None):
        self.asset, self.partitions, self.rule, self.detail = asset, list(partitions), rule, detail
        self.column = column  # the column holding the refused values (value limits), else None
        shown = ", ".join(self.partitions[:5]) + (" ..." if len(self.partitions) > 5 else "")
        super().__init__(
            f"audit failed for asset {asset!r}, partition {shown}: rule {rule!r}: {detail}. "
            "Nothing was published; the previously published partition is unchanged."
        )


def _examples(values: pd.Series | pd.DataFrame, n: int = 5) -> str:
    rows = values.head(n)
    if isinstance(rows, pd.DataFrame):
        return "; ".join(", ".join(f"{k}={v!r}" for k, v in r.items()) for r in rows.to_dict("records"))
    return ", ".join(repr(v) for v in rows.tolist())


@dataclass(frozen=True)
class ValueLimit:
    """Values a sink cannot store or read back exactly, refused before any write.

    `bad(frame, decl)` returns the first column holding such values and a mask of its rows (None: none); `why`
    says what the sink cannot do and what to do instead. The check runs on every write: keep it vectorized.
    """

    rule: str
    bad: Callable[[pd.DataFrame, TableDeclaration], tuple[str, np.ndarray] | None]
    why: str


def _first_column(frame: pd.DataFrame, decl: TableDeclaration, types: tuple[str, ...], test) -> tuple[str, np.ndarray] | None:
    for col in decl.columns:
        if col.type in types:
            mask = test(frame[col.name])
            if mask is not None and mask.any():
                return col.name, mask
    return None


def _microseconds(series: pd.Series) -> np.ndarray:
    """A date or timestamp column as UTC microseconds since the epoch (NaT as int64's minimum: test nulls apart)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy().astype("datetime64[us]").view("int64")


def outside_instants(first: str, last: str, types: tuple[str, ...] = ("date", "timestamp")):
    """Date and timestamp values outside [first, last] (ISO text, UTC)."""
    low = np.datetime64(first, "us").astype("int64")
    high = np.datetime64(last, "us").astype("int64")

    def bad(frame, decl):
        def test(series):
            values, null = _microseconds(series), series.isna().to_numpy()
            return ~null & ((values < low) | (values > high))
        return _first_column(frame, decl, types, test)

    return bad


def strings_containing(text: str):
    def bad(frame, decl):
        return _first_column(frame, decl, ("string",), lambda s: s.str.contains(text, regex=False).fillna(False).to_numpy(dtype=bool))
    return bad


def string_bytes_over(limit: int, *, key_only: bool = False):
    """String values of more than `limit` UTF-8 bytes (`key_only`: the key's string values, summed per row, each
    other key column counting 8 bytes; the longest string column is named)."""

    def utf8_bytes(series: pd.Series) -> np.ndarray:
        chars = series.str.len().fillna(0).to_numpy(dtype=np.int64)
        if not len(chars) or chars.max() * 4 <= limit // 2:  # cheap: no value can matter
            return chars
        return series.map(lambda v: len(v.encode()) if isinstance(v, str) else 0).to_numpy(dtype=np.int64)

    def bad(frame, decl):
        if not key_only:
            return _first_column(frame, decl, ("string",), lambda s: utf8_bytes(s) > limit)
        key = [decl.column(k) for k in decl.partition_key]
        sizes = {c.name: utf8_bytes(frame[c.name]) for c in key if c.type == "string"}
        if not sizes:
            return None
        total = sum(sizes.values()) + 8 * (len(key) - len(sizes))
        over = total > limit
        if not over.any():
            return None
        return max(sizes, key=lambda name: int(sizes[name][over].max())), over

    return bad


def non_finite_floats(frame, decl):
    return _first_column(frame, decl, ("float",), lambda s: np.isinf(s.to_numpy(dtype="float64", na_value=0.0)))


# Every sink: dates and timestamps that ISO 8601 text (the fingerprint's canonical form, JSON) and Python's
# datetime (PostgreSQL drivers) can carry. PostgreSQL itself accepts later ones and then cannot read them back.
PLATFORM_LIMITS = (
    ValueLimit(
        "dates and timestamps within 0001-01-01..9999-12-31",
        outside_instants("0001-01-01T00:00:00", "9999-12-31T23:59:59.999999"),
        "a date or timestamp must lie in years 1 to 9999 (what ISO 8601 text and Python datetimes hold)",
    ),
)


def audit_frame(
    asset: str, frame: pd.DataFrame, days: Sequence[str], decl: TableDeclaration, rules: AuditRules,
    limits: Sequence[ValueLimit] = (),
) -> None:
    """Raise AuditError on the first rule the frame (already in declared dtypes) breaks.

    A cheap pass decides whether every rule holds; only when it finds a failure does the detailed audit run,
    which names the rule, the days and examples. The cheap pass may flag a frame the detailed audit passes
    (the detailed audit then has the last word), never the reverse. Then every value must be one the sink can
    store and read back: `PLATFORM_LIMITS` and the sink's `limits`.
    """
    if not _passes(frame, days, decl, rules):
        _audit_detailed(asset, frame, days, decl, rules)
    audit_values(asset, frame, days, decl, limits)


def _example(values: pd.Series) -> str:
    """The first value as the user would write it (a datetime as ISO text, even past pandas' strftime range)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return np.datetime_as_string(_microseconds(values.iloc[:1]).view("datetime64[us]")[0], unit="us") + "Z"
    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "M":
        return str(values.to_numpy()[0])
    text = repr(values.iloc[0])
    return text if len(text) <= 80 else text[:60] + f"... ({len(str(values.iloc[0]))} characters)"


def audit_values(
    asset: str, frame: pd.DataFrame, days: Sequence[str], decl: TableDeclaration, limits: Sequence[ValueLimit] = ()
) -> None:
    """Raise AuditError naming asset, days, column and an example value the sink could not store or read back."""
    for limit in (*PLATFORM_LIMITS, *limits):
        found = limit.bad(frame, decl)
        if found is None:
            continue
        column, mask = found
        mask = np.asarray(mask, dtype=bool)
        values = frame[column][mask]
        day_keys = frame[PARTITION_COLUMN][mask].dt.strftime("%Y-%m-%d").dropna()
        bad_days = sorted(day_keys.unique().tolist()) or list(days)
        example = _example(values)
        raise AuditError(
            asset, bad_days, limit.rule,
            f"column {column!r}: {int(mask.sum())} values cannot be stored and read back exactly, e.g. {example} "
            f"(row {int(np.flatnonzero(mask)[0])}, day {bad_days[0]}): {limit.why}",
            column=column,
        )


def _passes(frame: pd.DataFrame, days: Sequence[str], decl: TableDeclaration, rules: AuditRules) -> bool:
    """Whether the frame passes every rule, without formatting a day per row or factorizing sortable keys.

    False means "may fail": `_audit_detailed` decides and builds the error.
    """
    day_values = frame[PARTITION_COLUMN]
    allowed = _day_stamps(days, day_values.dtype)
    if allowed is None:
        return False
    # 1. rows only for the days written: every non-null partition_date is one of the days' midnights. After
    # this, counting by value equals counting by formatted day (every value is exactly a listed midnight).
    if (~day_values.isin(allowed) & day_values.notna()).any():
        return False
    # 2. no nulls in NOT NULL columns
    if any(frame[c.name].isna().any() for c in decl.columns if not c.nullable):
        return False
    # 3. a unique key within each day
    if len(frame) > 1 and _has_duplicate_keys(frame, list(decl.partition_key)):
        return False
    # 4. row counts within bounds
    if rules.min_rows is not None or rules.max_rows is not None:
        counts = day_values.value_counts()
        for stamp in allowed:
            n = int(counts.get(stamp, 0))
            if (rules.min_rows is not None and n < rules.min_rows) or (rules.max_rows is not None and n > rules.max_rows):
                return False
    return True


def _day_stamps(days: Sequence[str], dtype) -> pd.DatetimeIndex | None:
    """The days as midnights in the partition column's own unit; None when the cheap pass does not apply
    (a column that is not naive datetime64, or a day that is not exactly the YYYY-MM-DD text of a date)."""
    if not (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        return None
    days = list(days)
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(days, format="%Y-%m-%d")).as_unit(np.datetime_data(dtype)[0])
    except (TypeError, ValueError, OverflowError):
        return None
    if stamps.hasnans or list(stamps.strftime("%Y-%m-%d")) != days:
        return None  # the detailed audit compares the text; only an exact round trip may use the values
    return stamps


def _has_duplicate_keys(frame: pd.DataFrame, key: list[str]) -> bool:
    """Whether two rows share the key. Integer, boolean and datetime keys: sort, compare neighbours (equal
    values always give equal int64s; a null mapped to 0 may only add a false alarm); other keys: pandas."""
    arrays = [_sortable(frame[k]) for k in key]
    if any(a is None for a in arrays):
        return bool(frame.duplicated(subset=key).any())
    order = np.lexsort(arrays[::-1])
    same = np.ones(len(frame) - 1, dtype=bool)
    for values in arrays:
        ordered = values[order]
        same &= ordered[1:] == ordered[:-1]
    return bool(same.any())


def _sortable(series: pd.Series) -> np.ndarray | None:
    """The column as int64s, equal whenever the values are equal (a null becomes 0, or NaT's integer, so it
    can only add a false alarm), or None when pandas has to compare the values."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().view("int64")
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return series.to_numpy().view("int64")
    if isinstance(dtype, np.dtype) and dtype.kind in "ib" and dtype.itemsize <= 8:
        return series.to_numpy().astype("int64", copy=False)
    if isinstance(dtype, (pd.BooleanDtype, pd.Int8Dtype, pd.Int16Dtype, pd.Int32Dtype, pd.Int64Dtype)):
        return series.to_numpy(dtype="int64", na_value=0)
    return None


def _audit_detailed(
    asset: str, frame: pd.DataFrame, days: Sequence[str], decl: TableDeclaration, rules: AuditRules
) -> None:
    """The audit that names what failed: the first broken rule raises AuditError (rule, days, examples)."""
    day_keys = frame[PARTITION_COLUMN].dt.strftime("%Y-%m-%d")
    outside = ~day_keys.isin(list(days)) & frame[PARTITION_COLUMN].notna()
    if outside.any():
        raise AuditError(
            asset, days, "partition_date within the partitions written",
            f"{int(outside.sum())} rows belong to other days, e.g. {_examples(day_keys[outside].drop_duplicates())};"
            " a write may only touch its own days",
        )
    for col in decl.columns:
        if not col.nullable:
            nulls = frame[col.name].isna()
            if nulls.any():
                bad_days = sorted(day_keys[nulls].dropna().unique().tolist()) or list(days)
                raise AuditError(asset, bad_days, f"{col.name} not null", f"{int(nulls.sum())} rows have no {col.name}")
    key = list(decl.partition_key)
    duplicated = frame.duplicated(subset=key, keep=False)
    if duplicated.any():
        dupes = frame.loc[duplicated, key].drop_duplicates()
        raise AuditError(
            asset, sorted(day_keys[duplicated].unique().tolist()), f"unique key ({', '.join(decl.key)})",
            f"{int(duplicated.sum())} rows share {len(dupes)} keys, e.g. {_examples(frame.loc[duplicated, decl.key].drop_duplicates())}",
        )
    counts = day_keys.value_counts()
    for day in days:
        n = int(counts.get(day, 0))
        if rules.min_rows is not None and n < rules.min_rows:
            raise AuditError(asset, [day], "row count bounds", f"{n} rows, fewer than the declared minimum {rules.min_rows}")
        if rules.max_rows is not None and n > rules.max_rows:
            raise AuditError(asset, [day], "row count bounds", f"{n} rows, more than the declared maximum {rules.max_rows}")
