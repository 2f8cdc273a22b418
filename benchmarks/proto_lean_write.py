"""PROTOTYPE, benchmarks only (not the platform): the shared write path without whole-partition temporaries.

Measured by `bench_memory.py --prototype` (and used by the stage-and-swap prototype) to size the memory
change recommended in docs/benchmarks.md. Nothing in idem_platform imports it. Per 1M-row, 10-column
partition (123 MB by `memory_usage(deep=True)`), the platform's write path allocates, on top of the frame:

    TableDeclaration.coerce      +92 MB, held for the whole write: every non-string column is cast into a
                                 new array even when it already has the declared dtype
    fingerprint.row_hashes       +200 MB peak: each string column becomes 1M Python str objects
                                 (`to_numpy(dtype=object)`) before hash_array
    audit_frame                  +84 MB peak: `partition_date` formatted as 1M strings; duplicated() over
                                 (partition_date, key) factorizes both columns

The three replacements below give the same results (same canonical frame, same digests, same audit verdicts
and, on failure, the platform's own error messages) with a few MB to ~30 MB of temporaries each.
`publish_partitions_proto` is `partition_store.publish_partitions` using them (optionally overlapping the
digests and the audit with the staging).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from idem_platform.partitions import validate_partition_keys
from idem_platform.storage import ledger
from idem_platform.storage.audit import AuditRules, audit_frame
from idem_platform.storage.fingerprint import PartitionDigest, _format, row_hashes
from idem_platform.storage.partition_store import DIGESTS_ATTR, _log, _span
from idem_platform.storage.schema import LOGICAL_TYPES, PARTITION_COLUMN, TableDeclaration

HASH_CHUNK_ROWS = 131_072


def coerce_lean(decl: TableDeclaration, frame: pd.DataFrame, what: str = "frame") -> pd.DataFrame:
    """`decl.coerce`, but a frame already in the canonical form is returned as it is (no copy).

    Canonical: exactly the declared columns in order, a default RangeIndex, every column of its declared
    pandas dtype, and dates at midnight (what `coerce` would floor them to)."""
    canonical = (
        list(frame.columns) == decl.names
        and isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1
        and all(frame[c.name].dtype == pd.api.types.pandas_dtype(LOGICAL_TYPES[c.type].pandas_dtype) for c in decl.columns)
    )
    if canonical:
        for col in decl.columns:
            if col.type == "date":
                seconds = frame[col.name].to_numpy().view("int64")
                valid = ~np.isnat(frame[col.name].to_numpy())
                if (seconds[valid] % 86_400).any():
                    canonical = False
                    break
    return frame if canonical else decl.coerce(frame, what=what)


def row_hashes_chunked(frame: pd.DataFrame, decl: TableDeclaration, chunk_rows: int = HASH_CHUNK_ROWS) -> np.ndarray:
    """`fingerprint.row_hashes` computed slice by slice: identical values (a row's hash depends on that row
    only), at most `chunk_rows` Python strings alive at a time; also ~10-20% faster (cache-sized slices)."""
    out = np.empty(len(frame), dtype=np.uint64)
    for start in range(0, len(frame), chunk_rows):
        out[start : start + chunk_rows] = row_hashes(frame.iloc[start : start + chunk_rows], decl)
    return out


def partition_digests_lean(frame: pd.DataFrame, decl: TableDeclaration, days: list[str]) -> dict[str, PartitionDigest]:
    """`fingerprint.partition_digests` over `row_hashes_chunked`."""
    hashes = row_hashes_chunked(frame, decl)
    digests = {day: PartitionDigest(0, _format(np.uint64(0))) for day in days}
    if len(frame):
        grouped = pd.Series(hashes).groupby(frame[PARTITION_COLUMN].to_numpy(), sort=False)
        with np.errstate(over="ignore"):
            for day, group in grouped:
                total = group.to_numpy().sum(dtype=np.uint64)
                digests[pd.Timestamp(day).strftime("%Y-%m-%d")] = PartitionDigest(len(group), _format(total))
    return digests


def audit_frame_lean(asset: str, frame: pd.DataFrame, days: Sequence[str], decl: TableDeclaration, rules: AuditRules) -> None:
    """`audit.audit_frame` on datetime values instead of formatted day strings, duplicates found by sorting.
    Any failure is re-audited by `audit_frame` itself, so the error (rule, days, examples) is the platform's."""
    day_values = frame[PARTITION_COLUMN]
    allowed = pd.DatetimeIndex(pd.to_datetime(list(days))).as_unit(day_values.dt.unit) if len(days) else pd.DatetimeIndex([])
    failed = bool((~day_values.isin(allowed) & day_values.notna()).any())
    failed = failed or any(frame[c.name].isna().any() for c in decl.columns if not c.nullable)
    if not failed and len(frame) > 1:
        keys = [frame[k].to_numpy(dtype="int64", na_value=0) if str(frame[k].dtype) in ("Int64", "boolean")
                else frame[k].to_numpy().view("int64") if frame[k].dtype.kind == "M"
                else None for k in decl.partition_key]
        if all(k is not None for k in keys):  # integer and date keys: sort, then compare neighbours
            order = np.lexsort(keys[::-1])
            same = np.ones(len(frame) - 1, dtype=bool)
            for k in keys:
                ordered = k[order]
                same &= ordered[1:] == ordered[:-1]
            failed = bool(same.any())
        else:  # text keys: pandas' own duplicated (factorizes the key columns)
            failed = bool(frame.duplicated(subset=list(decl.partition_key)).any())
    if not failed and (rules.min_rows is not None or rules.max_rows is not None):
        counts = day_values.value_counts()
        for day, stamp in zip(days, allowed):
            n = int(counts.get(stamp, 0))
            if (rules.min_rows is not None and n < rules.min_rows) or (rules.max_rows is not None and n > rules.max_rows):
                failed = True
    if failed:
        audit_frame(asset, frame, days, decl, rules)  # raises AuditError with the platform's message


def publish_partitions_proto(sink, postgres, target, days: Sequence[str], frame: pd.DataFrame, run_id: str,
                             overlap: bool = False, log=_log):
    """`partition_store.publish_partitions` with the lean coerce, digests and audit above.

    overlap=False keeps the platform's order (digests and audit, then lock and stage); overlap=True runs the
    digests and the audit in a thread while the rows are staged and waits for them before the verify step: a
    failed audit still discards the stage, nothing is published before it passed."""
    days = sorted(days)
    validate_partition_keys(days)
    attached = frame.attrs.pop(DIGESTS_ATTR, None)
    if attached is not None and set(attached) == set(days):
        canonical = frame  # idem_asset coerced it and computed the digests
    else:
        attached, canonical = None, coerce_lean(target.decl, frame)

    def digest_and_audit() -> dict[str, PartitionDigest]:
        digests = attached or partition_digests_lean(canonical, target.decl, days)
        audit_frame_lean(target.asset, canonical, days, target.decl, target.rules)
        return digests

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="idem-audit") as pool:
        audited = pool.submit(digest_and_audit) if overlap else None
        digests = None if overlap else digest_and_audit()
        with postgres.connect() as conn:
            ledger.ensure_ledger(conn)
            sink.prepare(conn, target)
            conn.commit()
            ledger.lock_partitions(conn, target.asset, days)
            store = sink.store(target)
            previous = ledger.latest_fingerprints(conn, target.asset, sink.name, days, store)
            staged = sink.stage(conn, target, days, canonical, run_id)
            try:
                if overlap:
                    digests = audited.result()  # an AuditError discards the stage
                sink.verify_staged(conn, target, staged, digests)
                sink.publish(conn, target, staged)
            except BaseException:
                sink.discard(target, staged)
                raise
            entries = [
                ledger.LedgerEntry(
                    asset=target.asset, partition=day, sink=sink.name, location=sink.location(target, day),
                    run_id=run_id, row_count=digests[day].rows, fingerprint=digests[day].fingerprint,
                    previous_fingerprint=previous.get(day), store=store,
                )
                for day in days
            ]
            ledger.record(conn, entries)
    log.info(f"{target.asset}: published {_span(days)} to {sink.name} (prototype write path)")
    return entries
