"""Asset checks generated for every daily-partitioned asset with a declared key.

For each asset declared with `@idem_asset`, per partition of the run (the checks are partitioned like the asset):

- `unique_key`: no two rows of a day share the declared key, as the sink holds them now; only for sinks that do
  not enforce the key themselves (the lake). A PostgreSQL table's primary key and an index's one document per
  `_id` make duplicates impossible there, so the check could never fail and is not generated;
- `fingerprint_matches_ledger`: the sink's content hashes to the fingerprint the ledger recorded at publish,
  i.e. nobody changed the partition behind the pipeline's back (the same test as `idem verify`'s `drifted`). A
  ledger fingerprint made by another fingerprint algorithm that does not match is `algorithm changed`, as in
  `idem verify`: the day fails with severity WARN (drift cannot be told from the algorithm change) and the
  metadata says a rerun re-records it;
- `row_count_matches_upstream`: where the asset declares `same_rows_as=<upstream>`, its day has as many rows
  as the upstream's published day.

They read the sink through the asset's own IO manager, so they work for every sink. They are not blocking:
the audit before publish is what keeps bad data out; these checks watch what happens after.
"""


from collections.abc import Iterable, Mapping

import dagster as dg

from ._warnings import quiet_dagster_warnings

from .storage import ledger
from .storage.fingerprint import ALGORITHM, partition_digests
from .storage.partition_store import KEY_METADATA, SAME_ROWS_METADATA, AssetTarget
from .storage.schema import PARTITION_COLUMN
from .verification import published_records, sink_frame


def _target(assets_def: dg.AssetsDefinition) -> AssetTarget:
    return AssetTarget.from_metadata(assets_def.key.to_user_string(), assets_def.specs_by_key[assets_def.key].metadata)


def _report(context: dg.AssetCheckExecutionContext, key: dg.AssetKey, name: str, per_day: dict,
            severity: dict | None = None) -> dg.AssetCheckResult:
    """One evaluation per day: a range run logs each day's own result (else the UI shows the days as skipped).
    `severity` names the days whose failure is a warning (default: error)."""
    severity = severity or {}
    if len(per_day) > 1:
        for day, (passed, metadata) in per_day.items():
            context.op_execution_context.log_event(dg.AssetCheckEvaluation(
                asset_key=key, check_name=name, passed=passed, partition=day, metadata=metadata,
                severity=severity.get(day, dg.AssetCheckSeverity.ERROR),
            ))
    failed = {day: metadata for day, (passed, metadata) in per_day.items() if not passed}
    only = next(iter(per_day.values()))[1] if len(per_day) == 1 else {"failed_partitions": failed, "checked": len(per_day)}
    worst = (dg.AssetCheckSeverity.WARN if failed and all(severity.get(d) == dg.AssetCheckSeverity.WARN for d in failed)
             else dg.AssetCheckSeverity.ERROR)
    return dg.AssetCheckResult(passed=not failed, metadata=only, severity=worst)


# The platform's default IO manager keys whose sinks enforce the key (used when no resources are given).
KEY_ENFORCING_IO_KEYS = frozenset({"warehouse_io", "search_io"})


def sink_enforces_key(io_key: str, resources: Mapping[str, object] | None) -> bool:
    """Whether the IO manager bound to `io_key` stores one row per key by construction."""
    io_manager = (resources or {}).get(io_key)
    if io_manager is None:
        return io_key in KEY_ENFORCING_IO_KEYS
    return bool(getattr(io_manager, "enforces_key", False))


def partition_checks(
    assets_def: dg.AssetsDefinition, resources: Mapping[str, object] | None = None
) -> list[dg.AssetChecksDefinition]:
    key = assets_def.key
    io_key = assets_def.get_io_manager_key_for_asset_key(key)
    target = _target(assets_def)
    key_cols = list(target.decl.partition_key)

    def day_frames(io_manager, days):
        frame = sink_frame(io_manager, target, days)
        day_keys = frame[PARTITION_COLUMN].dt.strftime("%Y-%m-%d")
        return {day: frame[day_keys == day] for day in days}

    @dg.asset_check(
        asset=key, name="unique_key", partitions_def=assets_def.partitions_def, required_resource_keys={io_key},
        description=f"No two rows of a day share ({', '.join(target.decl.key)}) in the sink.",
    )
    def unique_key(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        per_day = {}
        for day, frame in day_frames(getattr(context.resources, io_key), list(context.partition_keys)).items():
            duplicated = frame.duplicated(subset=key_cols, keep=False)
            examples = frame.loc[duplicated, list(target.decl.key)].drop_duplicates().head(5).astype(str)
            per_day[day] = (not duplicated.any(),
                            {"duplicate_rows": int(duplicated.sum()), "examples": examples.to_dict("records")})
        return _report(context, key, "unique_key", per_day)

    @dg.asset_check(
        asset=key, name="fingerprint_matches_ledger", partitions_def=assets_def.partitions_def, required_resource_keys={io_key},
        description="The sink still holds what was published: its content fingerprint equals the ledger's.",
    )
    def fingerprint_matches_ledger(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        io_manager = getattr(context.resources, io_key)
        days = list(context.partition_keys)
        now = partition_digests(sink_frame(io_manager, target, days), target.decl, days)
        published = published_records(io_manager, target, days)
        per_day, severity = {}, {}
        for day in days:
            ledger_fp = published[day].fingerprint if day in published else None
            algorithm = published[day].fingerprint_algo if day in published else ALGORITHM
            matches = ledger_fp == now[day].fingerprint
            metadata = {"ledger": ledger_fp or "", "sink": now[day].fingerprint}
            if not matches and algorithm != ALGORITHM:
                severity[day] = dg.AssetCheckSeverity.WARN
                metadata.update(status="algorithm changed", fingerprint_algorithm={"published": algorithm, "now": ALGORITHM},
                                action="rerun the day to re-record its fingerprint under this algorithm")
            per_day[day] = (matches, metadata)
        return _report(context, key, "fingerprint_matches_ledger", per_day, severity)

    checks = [fingerprint_matches_ledger] if sink_enforces_key(io_key, resources) else [unique_key, fingerprint_matches_ledger]
    upstream = assets_def.specs_by_key[key].metadata.get(SAME_ROWS_METADATA)
    if upstream:

        @dg.asset_check(
            asset=key, name="row_count_matches_upstream", partitions_def=assets_def.partitions_def,
            required_resource_keys={io_key},
            description=f"Each day has as many rows as the published day of {upstream}.",
        )
        def row_count_matches_upstream(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            io_manager = getattr(context.resources, io_key)
            days = list(context.partition_keys)
            now = partition_digests(sink_frame(io_manager, target, days), target.decl, days)
            with io_manager.postgres.connect() as conn:
                upstream_rows = {e.partition: e.row_count for e in ledger.history(conn, asset=upstream, days=days)}
            per_day = {
                day: (now[day].rows == upstream_rows.get(day), {"rows": now[day].rows, upstream: upstream_rows.get(day)})
                for day in days
            }
            return _report(context, key, "row_count_matches_upstream", per_day)

        checks.append(row_count_matches_upstream)
    return checks


def checks_for(
    assets: Iterable[dg.AssetsDefinition], resources: Mapping[str, object] | None = None
) -> list[dg.AssetChecksDefinition]:
    """Checks for every asset declared with `@idem_asset` (those with a declared key). `resources` (the code
    location's) say which sink each asset's IO manager key is bound to; without them the platform's default
    keys are assumed (`warehouse_io`, `search_io` enforce the key, any other key gets `unique_key`)."""
    with quiet_dagster_warnings():
        return [
            check
            for assets_def in assets
            if isinstance(assets_def, dg.AssetsDefinition)
            and KEY_METADATA in assets_def.specs_by_key[assets_def.key].metadata
            for check in partition_checks(assets_def, resources)
        ]
