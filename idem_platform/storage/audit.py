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
    """Raise AuditError on the first rule the frame (already in declared dtypes) breaks."""
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
