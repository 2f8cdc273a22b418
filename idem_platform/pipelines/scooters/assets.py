"""The scooter-trips inbox pipeline: CSV exports -> quarantine + cleaned trips (PostgreSQL) -> daily summary.

    inbox/scooter_trips/<day>[__<part>].csv
        -> scooter_trips_rejected   rows that broke a rule: raw row, file, line, every rule broken
        -> scooter_trips            cleaned, typed trips
        -> scooter_daily_summary    trips, median duration, distance (and rejected rows) per day

How validation fits Stage, Audit, Publish, Record (DESIGN.md section 1): the inbox rules run *before* the
store's write path, on the exact rows about to be staged (`read_inbox_day`). Row-level failures are not
errors: they are the content of `scooter_trips_rejected`, whose partition is written through the same
stage/audit/publish/record path as the trips (key: file name + line number, so a rerun replaces the day's
quarantine rows and never adds to them). File-level failures raise `InboxFileError` before anything is staged:
the run fails with a message naming file, day and rule, and both published partitions stay as they were. The
store's own audit (declared columns, non-null and unique key, partition_date within the days written) then runs
on what is staged, as for every asset.

`scooter_trips` depends on `scooter_trips_rejected` (ordering only: both read the inbox through the same pure
function): a day's good rows are published only after its bad rows are recorded, so no published day ever has
rejected rows that are nowhere to be found. A file-level failure fails the quarantine step first, and the trips
step does not run. The two tables are two publishes (two transactions); within a run, the trips step checks that
it read the same files (manifest digest) as the quarantine step, so a successful run always leaves both tables
built from one version of the day's files.
"""

# No `from __future__ import annotations`: Dagster resolves the resource annotations of the wrapped asset
# functions at definition time, from the declare module's namespace.

import dagster as dg
import pandas as pd

from idem_platform import idem_asset

from .inbox import TRIP_DAYS, InboxFileError, ScooterInboxResource
from .reading import REJECTED_COLUMNS, TRIP_COLUMNS, InboxDay, read_inbox_days
from .validation import DECLARED_RULES

GROUP = "scooters"

SUMMARY_COLUMNS = {
    "trip_day": "date",
    "trips": "int",
    "rejected_rows": "int",
    "median_duration_seconds": "float",
    "total_distance_km": "float",
    "median_distance_km": "float",
}


def _read(context: dg.AssetExecutionContext, inbox: ScooterInboxResource) -> dict[str, InboxDay]:
    days = read_inbox_days(inbox.inbox_root(), context.partition_keys, max_rejected_share=inbox.max_rejected_share)
    for day, read in days.items():
        context.log.info(
            f"inbox day {day}: {len(read.valid)} valid rows, {len(read.rejected)} rejected, from "
            + ", ".join(f"{name} (sha256 {sha[:12]})" for name, sha in read.files.items())
        )
        ignored = {name: cols for name, cols in read.ignored_columns.items() if cols}
        if ignored:
            context.log.info(f"inbox day {day}: columns dropped: {ignored}")
    return days


def _provenance(read: InboxDay) -> dict:
    return {
        "inbox_files": dg.MetadataValue.json(read.files),
        "inbox_manifest": read.manifest,
        "rows_read": sum(read.rows_read.values()),
        "valid_rows": len(read.valid),
        "rejected_rows": len(read.rejected),
        "ignored_columns": dg.MetadataValue.json(read.ignored_columns),
    }


def _annotate(context: dg.AssetExecutionContext, days: dict[str, InboxDay]) -> None:
    """Where the rows came from, per partition (the store adds row_count and fingerprint)."""
    if len(days) == 1:
        context.add_output_metadata(_provenance(next(iter(days.values()))))
        return
    for day, read in days.items():
        context.add_asset_metadata(_provenance(read), partition_key=day)


def _same_files_as_quarantine(context: dg.AssetExecutionContext, days: dict[str, InboxDay]) -> None:
    """Within one run, the trips must come from the very files the quarantine step read.

    Each step reads the inbox itself; a file replaced between the two steps would otherwise publish trips of one
    version beside the quarantine of another (until the sensor's run for the new version). The quarantine step
    records the day's manifest in its materialization; a different manifest here fails the step, and the run
    that the sensor requests for the new content publishes both tables from it.
    """
    for day, read in days.items():
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=scooter_trips_rejected.key, asset_partitions=[day]), limit=1
        ).records
        if not records or records[0].run_id != context.run_id:
            continue
        recorded = records[0].asset_materialization.metadata.get("inbox_manifest")
        if recorded is not None and recorded.value != read.manifest:
            changed = ", ".join(read.files)
            raise InboxFileError(
                changed, day, "files unchanged while being read",
                "the inbox files of the day changed between the quarantine step and the trips step of this run "
                "(the quarantine was published from the previous content; the sensor's run for the new content "
                "replaces both)",
            )


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


@idem_asset(
    partitions_def=TRIP_DAYS,
    columns=REJECTED_COLUMNS,
    key=["source_file", "source_line"],
    io_manager_key="warehouse_io",
    group_name=GROUP,
    kinds={"python", "pandas", "postgres"},
    metadata={"declared_rules": dg.MetadataValue.json(list(DECLARED_RULES))},
    description=(
        "Quarantine: every inbox row that broke a declared rule, with the raw row, the file, the line number and "
        "every rule broken (failed_rules, a JSON list). Replaced per day with the trips, never appended."
    ),
)
def scooter_trips_rejected(context: dg.AssetExecutionContext, scooter_inbox: ScooterInboxResource) -> pd.DataFrame:
    days = _read(context, scooter_inbox)
    _annotate(context, days)
    return _concat([read.rejected for read in days.values()])


@idem_asset(
    partitions_def=TRIP_DAYS,
    columns=TRIP_COLUMNS,
    key=["trip_id"],
    io_manager_key="warehouse_io",
    deps=[scooter_trips_rejected],
    group_name=GROUP,
    kinds={"python", "pandas", "postgres"},
    metadata={"declared_rules": dg.MetadataValue.json(list(DECLARED_RULES))},
    description=(
        "Scooter trips from the inbox, cleaned (headers, junk columns, date and duration strings) and typed; only "
        "rows that pass every declared rule (the others are in scooter_trips_rejected)."
    ),
)
def scooter_trips(context: dg.AssetExecutionContext, scooter_inbox: ScooterInboxResource) -> pd.DataFrame:
    days = _read(context, scooter_inbox)
    _same_files_as_quarantine(context, days)
    _annotate(context, days)
    return _concat([read.valid for read in days.values()])


def summarize_trips(trips: pd.DataFrame, rejected: pd.DataFrame, days: list[str]) -> pd.DataFrame:
    """One row per day: trips, rejected rows, median duration, total and median distance (zero-trip days too)."""
    trip_days = trips["partition_date"].dt.strftime("%Y-%m-%d")
    rejected_days = rejected["partition_date"].dt.strftime("%Y-%m-%d")
    rows = []
    for day in days:
        mine = trips[trip_days == day]
        rows.append(
            {
                "trip_day": day,
                "trips": len(mine),
                "rejected_rows": int((rejected_days == day).sum()),
                "median_duration_seconds": float(mine["duration_seconds"].astype("float64").median()) if len(mine) else None,
                "total_distance_km": round(float(mine["distance_km"].sum()), 3),
                "median_distance_km": float(mine["distance_km"].median()) if len(mine) else None,
                "partition_date": day,
            }
        )
    return pd.DataFrame.from_records(rows, columns=[*SUMMARY_COLUMNS, "partition_date"])


@idem_asset(
    partitions_def=TRIP_DAYS,
    columns=SUMMARY_COLUMNS,
    key=["trip_day"],
    io_manager_key="warehouse_io",
    group_name=GROUP,
    kinds={"python", "pandas", "postgres"},
    description="Per day: trips, rejected rows, median trip duration, total and median distance (km).",
)
def scooter_daily_summary(
    context: dg.AssetExecutionContext, scooter_trips: pd.DataFrame, scooter_trips_rejected: pd.DataFrame
) -> pd.DataFrame:
    return summarize_trips(scooter_trips, scooter_trips_rejected, list(context.partition_keys))
