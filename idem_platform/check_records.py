"""Per-day check evaluations on the asset: what the UI's check Partitions view shows.

Dagster shows a partition of a check as passed or failed only while the evaluation *targets the partition's latest
materialization* (`AssetCheckEvaluation.target_materialization_data`); an evaluation without one, or pointing at
an older materialization, shows as missing. Dagster links the evaluation itself only in a one-partition run, so
every evaluation the platform logs for a day (a range run's checks, a re-check, `idem verify`) carries the target
found here: the day's latest materialization, one query for all the days.

`idem verify` and `verify_job` record their verdicts the same way, as evaluations of `fingerprint_matches_ledger`
(the check that watches drift): a drifted day turns that day's check red on the asset page, with the verdict, the
fingerprints and example keys in its metadata. They are logged inside a run (`verify_job`'s, or for the command
line a one-op run `idem_verify` on the instance): Dagster stores at most one run-less evaluation per check and
day (its unique index on asset, check, run id and partition), so run-less reports would fail from the second on.
`PartitionVerdict`s (verification.py) are read by duck typing: this module does not import verification.

**A range run's evaluations are stored in one transaction** (`log_evaluations`). Dagster stores an evaluation
logged with `log_event` on its own (it batches only planned and materialization events): about 4-5 ms each,
1.5-2 s of a 365-day run's checks. Where the instance's event log is the platform's
(`instance_storage.PooledPostgresEventLogStorage`) and Dagster's event batching is on, the evaluations are
logged as one batch, which that storage writes in one transaction. Each is still a Dagster event of the step,
logged in order, with the message Dagster gives it; elsewhere (another event log, batching off) they are logged
one by one with `log_event`, as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, DagsterEventType, generate_event_batch_id

from . import settings

DRIFT_CHECK = "fingerprint_matches_ledger"
EXAMPLES = 5
# Verdicts under which the sink still holds what the ledger says was published: the drift check passes.
NOT_DRIFTED = ("identical", "differs")


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, days: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each day (days never materialized in this instance are absent)."""
    if not days:
        return {}
    storage_ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(days)
    )
    if not storage_ids:
        return {}
    found = _run_and_time_by_id(instance.event_log_storage, asset_key, list(storage_ids.values()))
    return {
        day: AssetCheckEvaluationTargetMaterializationData(storage_id=sid, run_id=found[sid][0], timestamp=found[sid][1])
        for day, sid in storage_ids.items() if sid in found
    }


def _run_and_time_by_id(storage, asset_key: dg.AssetKey, ids: list[int]) -> dict[int, tuple[str, float]]:
    """(run id, event timestamp) of each event id. On a SQL event log (dagster-postgres, SQLite) one SELECT of
    the three columns, the timestamp taken from the stored event's JSON as Dagster wrote it (the same float);
    Dagster's `fetch_materializations` rebuilds every whole event record instead (its metadata included): 0.2 s
    of a 365-day run's checks. Another storage: Dagster's way. (Imported here: the SQL storage modules bring
    SQLAlchemy and Alembic, 0.3 s, into every process that loads a code location.)"""
    from dagster._core.storage.event_log import SqlEventLogStorage, SqlEventLogStorageTable
    from dagster._core.storage.sqlalchemy_compat import db_select

    if isinstance(storage, SqlEventLogStorage):
        table = SqlEventLogStorageTable
        found: dict[int, tuple[str, float]] = {}
        with storage.index_connection() as conn:
            for start in range(0, len(ids), 1000):
                for sid, run_id, event in conn.execute(
                    db_select([table.c.id, table.c.run_id, table.c.event]).where(table.c.id.in_(ids[start:start + 1000]))
                ):
                    found[sid] = (run_id, float(json.loads(event)["timestamp"]))
        return found
    records = storage.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=ids), limit=len(ids)).records
    return {r.storage_id: (r.event_log_entry.run_id, r.timestamp) for r in records}


def day_evaluation(
    asset_key: dg.AssetKey, check: str, day: str, passed: bool, metadata: Mapping[str, object],
    target: AssetCheckEvaluationTargetMaterializationData | None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=asset_key, check_name=check, passed=passed, partition=day, metadata=dict(metadata),
        severity=severity, target_materialization_data=target,
    )


def log_evaluations(context: dg.OpExecutionContext, evaluations: Sequence[dg.AssetCheckEvaluation]) -> None:
    """Log the evaluations in the step, as `context.log_event` does each, but as one batch of Dagster events
    where the instance's event log stores such a batch in one transaction (see the module docstring).

    Dagster has no public way to log a batch: this does what `log_event` does (Dagster 1.13: build the event
    with `DagsterEvent.from_step`, append it to the context's `_events`), with batch metadata. Where those
    private attributes are missing (another Dagster version) it falls back to `log_event`, one by one;
    `test_instance_storage.py` fails if the batch stops reaching the storage."""
    step = getattr(context, "_step_execution_context", None)
    logged = getattr(context, "_events", None)  # what `log_event` appends to: the step's events
    batched = (
        len(evaluations) > 1 and step is not None and isinstance(logged, list)
        and getattr(context.instance.event_log_storage, "stores_check_evaluation_batches", False)
        and settings.dagster_event_batch_size() > 0
    )
    if not batched:
        for evaluation in evaluations:
            context.log_event(evaluation)
        return
    batch = generate_event_batch_id()
    for n, evaluation in enumerate(evaluations):
        logged.append(DagsterEvent.from_step(
            DagsterEventType.ASSET_CHECK_EVALUATION, step, event_specific_data=evaluation,
            message=(f"Asset check '{evaluation.check_name}' on '{evaluation.asset_key.to_user_string()}' "
                     + ("passed." if evaluation.passed else "did not pass.")
                     + ("" if evaluation.description is None else f" Description: '{evaluation.description}'")),
            batch_metadata=DagsterEventBatchMetadata(batch, n == len(evaluations) - 1),
        ))


def verdict_metadata(verdict) -> dict[str, object]:
    published = verdict.published.fingerprint if verdict.published else ""
    return {
        "verdict": verdict.status,
        "ledger": published,
        "sink": verdict.in_sink.fingerprint,
        "recomputed": verdict.recomputed.fingerprint,
        "rows": verdict.in_sink.rows,
        "rows_added": len(verdict.added), "rows_removed": len(verdict.removed), "rows_changed": len(verdict.changed),
        "example_keys": dg.MetadataValue.json({"added": verdict.added[:EXAMPLES], "removed": verdict.removed[:EXAMPLES],
                                                "changed": verdict.changed[:EXAMPLES]}),
        "source": "idem verify",
    }


def verdict_evaluations(instance: dg.DagsterInstance, verdicts: Sequence) -> list[dg.AssetCheckEvaluation]:
    """Each verdict as a per-day evaluation of the drift check, linked to the day's latest materialization."""
    out = []
    by_asset: dict[str, list] = {}
    for verdict in verdicts:
        by_asset.setdefault(verdict.asset, []).append(verdict)
    for asset, some in by_asset.items():
        key = dg.AssetKey.from_user_string(asset)
        targets = latest_materializations(instance, key, [v.partition for v in some])
        for verdict in some:
            severity = dg.AssetCheckSeverity.WARN if verdict.status == "algorithm changed" else dg.AssetCheckSeverity.ERROR
            out.append(day_evaluation(key, DRIFT_CHECK, verdict.partition, verdict.status in NOT_DRIFTED,
                                      verdict_metadata(verdict), targets.get(verdict.partition), severity))
    return out


def unverified_evaluations(instance: dg.DagsterInstance, asset: str, days: Sequence[str], cause: str):
    """`could not verify` for each day, with the cause (e.g. an upstream day never published)."""
    key = dg.AssetKey.from_user_string(asset)
    targets = latest_materializations(instance, key, days)
    return [day_evaluation(key, DRIFT_CHECK, day, False,
                           {"verdict": "could not verify", "cause": cause[:2000], "source": "idem verify"},
                           targets.get(day), dg.AssetCheckSeverity.WARN) for day in days]


def record_in_run(instance: dg.DagsterInstance, evaluations: Sequence[dg.AssetCheckEvaluation]) -> int:
    """Log `evaluations` in a one-op run `idem_verify` on the instance (what `idem verify` does); returns how many."""
    if not evaluations:
        return 0

    @dg.op(name="record_verdicts", description="Records idem verify's verdicts as check evaluations on the assets.")
    def record(context) -> None:  # (no annotation: this module has postponed annotations)
        log_evaluations(context, evaluations)

    @dg.job(name="idem_verify", description="`idem verify` on the command line: its verdicts, per day, on the assets.")
    def idem_verify():
        record()

    idem_verify.execute_in_process(instance=instance, raise_on_error=True)
    return len(evaluations)


def record_verdicts(instance: dg.DagsterInstance, verdicts: Sequence) -> int:
    """The command line's path: the verdicts as evaluations, in an `idem_verify` run on the instance."""
    return record_in_run(instance, verdict_evaluations(instance, verdicts))
