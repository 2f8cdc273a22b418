"""Audit: the declared rules a partition must pass before it may be published.

Rules run on the exact frame that is staged, in every sink: rows only for the days being written, no nulls in
NOT NULL columns (key and partition_date among them), a unique key within each day, row counts within the
declared bounds. A failure raises `AuditError` naming asset, partition and rule; the stage is discarded and the
published partition is untouched. Each sink then verifies its staged copy (row counts as the sink sees them)
before publishing.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def __init__(self, asset: str, partitions: Sequence[str], rule: str, detail: str):
        self.asset, self.partitions, self.rule, self.detail = asset, list(partitions), rule, detail
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


def audit_frame(
    asset: str, frame: pd.DataFrame, days: Sequence[str], decl: TableDeclaration, rules: AuditRules
) -> None:
    """Raise AuditError on the first rule the frame (already in declared dtypes) breaks.

    A cheap pass decides whether every rule holds; only when it finds a failure does the detailed audit run,
    which names the rule, the days and examples. The cheap pass may flag a frame the detailed audit passes
    (the detailed audit then has the last word), never the reverse.
    """
    if _passes(frame, days, decl, rules):
        return
    _audit_detailed(asset, frame, days, decl, rules)


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
