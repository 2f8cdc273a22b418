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

Every day gets its own evaluation, linked to the day's latest materialization, so the check's Partitions view in
the UI shows each day after range runs and backfills too (`check_records`). A run of the checks without
partitions (the Checks tab's "Execute all") checks the asset's last IDEM_RECHECK_DAYS published days; the check
functions then return a plain `Output` (no return annotation), since Dagster cannot resolve an
`AssetCheckResult` of a partitioned asset in such a run. `recheck_job` runs them for days picked in the UI.

They read the sink through the asset's own IO manager, so they work for every sink. They are not blocking:
the audit before publish is what keeps bad data out; these checks watch what happens after.

**A day this very run published is not read back.** Its write already proved what the checks would: the audit
passed (key unique per day, row-count bounds) on the frame whose fingerprint the ledger records, and the staged
rows were counted (the COPY's count, or a count of the staged table) in the publishing transaction before the
COMMIT (`verify_staged`). Reading a 1M-row day back
to hash it again doubled the cost of the write and proved nothing new; in a range run it was the largest part of
the platform's own time. Such a day's evaluation says so (`source: this run's publish`). Every other day (a
re-check from `recheck_job`, the drift schedule, "Execute all", a run that published nothing) is read from the
sink and hashed.
"""


from collections.abc import Iterable, Mapping

import dagster as dg

from . import settings
from ._warnings import quiet_dagster_warnings
from .check_records import day_evaluation, latest_materializations, log_evaluations

from .storage import ledger
from .storage.fingerprint import ALGORITHM, PartitionDigest, partition_digests
from .storage.partition_store import KEY_METADATA, SAME_ROWS_METADATA, AssetTarget
from .storage.schema import PARTITION_COLUMN
from .verification import published_records, sink_frame


def _target(assets_def: dg.AssetsDefinition) -> AssetTarget:
    return AssetTarget.from_metadata(assets_def.key.to_user_string(), assets_def.specs_by_key[assets_def.key].metadata)


def _report(context: dg.AssetCheckExecutionContext, key: dg.AssetKey, name: str, per_day: dict,
            severity: dict | None = None) -> dg.AssetCheckResult:
    """One evaluation per day. A one-day run's result is linked by Dagster to the day's materialization; in a range
    run (or a run without partitions) each day's evaluation is logged here, linked to the day's latest
    materialization (`check_records`), else the check's Partitions view shows the days as missing.
    `severity` names the days whose failure is a warning (default: error)."""
    severity = severity or {}
    op_context = context.op_execution_context
    if len(per_day) > 1 or not op_context.has_partition_key:
        targets = latest_materializations(context.instance, key, list(per_day))
        log_evaluations(op_context, [
            day_evaluation(key, name, day, passed, metadata, targets.get(day), severity.get(day, dg.AssetCheckSeverity.ERROR))
            for day, (passed, metadata) in per_day.items()
        ])
    failed = {day: metadata for day, (passed, metadata) in per_day.items() if not passed}
    if not (op_context.has_partition_key or op_context.has_partition_key_range):
        # A run without partitions: Dagster cannot turn an AssetCheckResult into an evaluation there (it looks
        # for the asset's unpartitioned materialization and fails the step); the per-day evaluations above are
        # the result, the step's output is the check's plain output.
        return dg.Output(None, output_name=op_context.op_def.output_defs[0].name,
                         metadata={"failed_partitions": failed, "checked": len(per_day)})
    if len(per_day) == 1 and op_context.has_partition_key:
        only = next(iter(per_day.values()))[1]
    else:
        only = {"failed_partitions": failed, "checked": len(per_day)}
    worst = (dg.AssetCheckSeverity.WARN if failed and all(severity.get(d) == dg.AssetCheckSeverity.WARN for d in failed)
             else dg.AssetCheckSeverity.ERROR)
    return dg.AssetCheckResult(passed=not failed, metadata=only, severity=worst)


def _run_days(context: dg.AssetCheckExecutionContext, io_manager, target: AssetTarget) -> list[str]:
    """The run's days; a run without partitions (the UI's "Execute all" on the Checks tab) checks the asset's
    last IDEM_RECHECK_DAYS days published in its sink and store, instead of failing."""
    op_context = context.op_execution_context
    if op_context.has_partition_key or op_context.has_partition_key_range:
        return list(context.partition_keys)
    sink = io_manager.sink()
    with io_manager.postgres.connect() as conn:
        if not ledger.ledger_exists(conn):
            return []
        return ledger.last_partitions(conn, target.asset, sink.name, sink.store(target), settings.current().recheck_days)


PROVEN_BY_WRITE = "this run's publish (audited, rows counted before COMMIT)"


def _published_by_this_run(context: dg.AssetCheckExecutionContext, published: dict, days: list[str]) -> set[str]:
    """The days whose latest publish is this run's (proven by its write: see the module docstring)."""
    return {d for d in days if d in published and published[d].run_id == context.run.run_id}


def _held_now(context: dg.AssetCheckExecutionContext, io_manager, target: AssetTarget, days: list[str]):
    """(digest of each day as the sink holds it now, ledger rows of the days, the days this run published).

    The days this run published take their digest from the ledger row the write recorded; the others are read
    from the sink, in one read."""
    published = published_records(io_manager, target, days)
    proven = _published_by_this_run(context, published, days)
    to_read = [d for d in days if d not in proven]
    held = partition_digests(sink_frame(io_manager, target, to_read), target.decl, to_read) if to_read else {}
    held.update({d: PartitionDigest(published[d].row_count, published[d].fingerprint) for d in proven})
    return held, published, proven


# The platform's default IO manager keys whose sinks enforce the key (used when no resources are given).
KEY_ENFORCING_IO_KEYS = frozenset({"warehouse_io", "search_io"})


def sink_enforces_key(io_key: str, resources: Mapping[str, object] | None) -> bool:
    """Whether the IO manager bound to `io_key` stores one row per key by construction."""
    io_manager = (resources or {}).get(io_key)
    if io_manager is None:
        return io_key in KEY_ENFORCING_IO_KEYS
    return bool(getattr(io_manager, "enforces_key", False))


def partition_checks(
    assets_def: dg.AssetsDefinition, resources: Mapping[str, object] | None = None,
    upstream_def: dg.AssetsDefinition | None = None,
) -> list[dg.AssetChecksDefinition]:
    """The checks of one asset; `upstream_def` is its `same_rows_as` upstream (its counts are read from the
    ledger in the upstream's own sink and store, as its IO manager publishes it)."""
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
    def unique_key(context: dg.AssetCheckExecutionContext):
        io_manager = getattr(context.resources, io_key)
        days = _run_days(context, io_manager, target)
        if not days:
            return _nothing_to_check(context)
        proven = _published_by_this_run(context, published_records(io_manager, target, days), days)
        per_day = {d: (True, {"duplicate_rows": 0, "source": PROVEN_BY_WRITE}) for d in proven}
        to_read = [d for d in days if d not in proven]
        for day, frame in (day_frames(io_manager, to_read) if to_read else {}).items():
            duplicated = frame.duplicated(subset=key_cols, keep=False)
            examples = frame.loc[duplicated, list(target.decl.key)].drop_duplicates().head(5).astype(str)
            per_day[day] = (not duplicated.any(),
                            {"duplicate_rows": int(duplicated.sum()), "examples": examples.to_dict("records")})
        return _report(context, key, "unique_key", {d: per_day[d] for d in days})

    @dg.asset_check(
        asset=key, name="fingerprint_matches_ledger", partitions_def=assets_def.partitions_def, required_resource_keys={io_key},
        description="The sink still holds what was published: its content fingerprint equals the ledger's.",
    )
    def fingerprint_matches_ledger(context: dg.AssetCheckExecutionContext):
        io_manager = getattr(context.resources, io_key)
        days = _run_days(context, io_manager, target)
        if not days:
            return _nothing_to_check(context)
        now, published, proven = _held_now(context, io_manager, target, days)
        per_day, severity = {}, {}
        for day in days:
            ledger_fp = published[day].fingerprint if day in published else None
            algorithm = published[day].fingerprint_algo if day in published else ALGORITHM
            # A day never published whose sink holds nothing has not drifted; one that holds rows has.
            matches = ledger_fp == now[day].fingerprint or (ledger_fp is None and now[day].rows == 0)
            verdict = ("never published" if ledger_fp is None and matches else "identical" if matches else "drifted")
            metadata = {"verdict": verdict, "ledger": ledger_fp or "", "sink": now[day].fingerprint,
                        "rows": now[day].rows, **({"source": PROVEN_BY_WRITE} if day in proven else {})}
            if not matches and ledger_fp is not None and algorithm != ALGORITHM:
                severity[day] = dg.AssetCheckSeverity.WARN
                metadata.update(verdict="algorithm changed", status="algorithm changed",
                                fingerprint_algorithm={"published": algorithm, "now": ALGORITHM},
                                action="rerun the day to re-record its fingerprint under this algorithm")
            per_day[day] = (matches, metadata)
        return _report(context, key, "fingerprint_matches_ledger", per_day, severity)

    checks = [fingerprint_matches_ledger] if sink_enforces_key(io_key, resources) else [unique_key, fingerprint_matches_ledger]
    upstream = assets_def.specs_by_key[key].metadata.get(SAME_ROWS_METADATA)
    if upstream:
        upstream_io_key = upstream_def.get_io_manager_key_for_asset_key(upstream_def.key) if upstream_def else None
        upstream_target = _target(upstream_def) if upstream_def else None

        @dg.asset_check(
            asset=key, name="row_count_matches_upstream", partitions_def=assets_def.partitions_def,
            required_resource_keys={io_key, *([upstream_io_key] if upstream_io_key else [])},
            description=f"Each day has as many rows as the published day of {upstream}.",
        )
        def row_count_matches_upstream(context: dg.AssetCheckExecutionContext):
            io_manager = getattr(context.resources, io_key)
            days = _run_days(context, io_manager, target)
            if not days:
                return _nothing_to_check(context)
            now, _, _ = _held_now(context, io_manager, target, days)
            if upstream_target is not None:  # the upstream's day as its own sink and store published it
                published = published_records(getattr(context.resources, upstream_io_key), upstream_target, days)
            else:  # an upstream outside these assets: its last publish of the day, in whichever sink and store
                with io_manager.postgres.connect() as conn:
                    published = ledger.latest_entries(conn, upstream, days)
            upstream_rows = {day: e.row_count for day, e in published.items()}
            per_day = {
                day: (now[day].rows == upstream_rows.get(day, 0), {"rows": now[day].rows, upstream: upstream_rows.get(day, 0)})
                for day in days
            }
            return _report(context, key, "row_count_matches_upstream", per_day)

        checks.append(row_count_matches_upstream)
    return checks


def _nothing_to_check(context: dg.AssetCheckExecutionContext):
    """No day to check (a run without partitions before anything was published)."""
    op_context = context.op_execution_context
    if not (op_context.has_partition_key or op_context.has_partition_key_range):
        return dg.Output(None, output_name=op_context.op_def.output_defs[0].name, metadata={"checked": 0})
    return dg.AssetCheckResult(passed=True, metadata={"checked": 0, "note": "no published day to check"})


def checks_for(
    assets: Iterable[dg.AssetsDefinition], resources: Mapping[str, object] | None = None
) -> list[dg.AssetChecksDefinition]:
    """Checks for every asset declared with `@idem_asset` (those with a declared key). `resources` (the code
    location's) say which sink each asset's IO manager key is bound to; without them the platform's default
    keys are assumed (`warehouse_io`, `search_io` enforce the key, any other key gets `unique_key`)."""
    declared = [a for a in assets if isinstance(a, dg.AssetsDefinition) and KEY_METADATA in a.specs_by_key[a.key].metadata]
    by_name = {a.key.to_user_string(): a for a in declared}
    with quiet_dagster_warnings():
        return [
            check
            for assets_def in declared
            for check in partition_checks(
                assets_def, resources, by_name.get(assets_def.specs_by_key[assets_def.key].metadata.get(SAME_ROWS_METADATA))
            )
        ]
