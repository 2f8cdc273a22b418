"""The instance's event log keeps its PostgreSQL connection: events are written without a connection each; asset
check evaluations are committed without waiting for the WAL flush, and land as Dagster stores them."""

import time

import dagster as dg
import pandas as pd
import psycopg
import pytest
from dagster_postgres.event_log import PostgresEventLogStorage

from idem_platform.instance_storage import PooledPostgresEventLogStorage
from idem_platform.services import DAGSTER_YAML
from idem_platform_tests.cli_runs import materialize_command, run


def sessions(dsn: str) -> int:
    """Sessions ever opened on the test's database (PostgreSQL >= 14 counts them at disconnect)."""
    time.sleep(1.0)  # let exited backends flush their statistics
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def write_events(storage, run_id: str, n: int) -> None:
    for i in range(n):
        storage.store_event(dg.EventLogEntry(
            error_info=None, level="INFO", user_message=f"event {i}", run_id=run_id, timestamp=time.time(),
        ))


@pytest.fixture
def instance_dsn(make_database, tmp_path):
    dsn = make_database("idem_inst")
    PostgresEventLogStorage(dsn).dispose()  # create the tables once
    return dsn


def test_the_platform_instance_uses_the_pooled_event_log(instance_dsn, tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    monkeypatch.setenv("IDEM_PG_DSN", instance_dsn)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        write_events(instance.event_log_storage, "run-a", 5)
        assert len(instance.event_log_storage.get_records_for_run("run-a").records) == 5


def test_pooled_event_log_writes_events_over_one_connection(instance_dsn):
    if psycopg.connect(instance_dsn).info.server_version < 140000:
        pytest.skip("pg_stat_database.sessions needs PostgreSQL 14")
    plain, pooled = PostgresEventLogStorage(instance_dsn), PooledPostgresEventLogStorage(instance_dsn)
    try:
        before = sessions(instance_dsn)
        write_events(plain, "run-plain", 50)
        after_plain = sessions(instance_dsn)
        write_events(pooled, "run-pooled", 50)
        after_pooled = sessions(instance_dsn)
    finally:
        plain.dispose()
        pooled.dispose()
    # dagster-postgres' own storage: a connection per event; the pooled one: the one it holds (not yet closed)
    assert after_plain - before >= 50
    assert after_pooled - after_plain <= 2  # the sessions() probes themselves
    assert len(pooled.get_records_for_run("run-pooled").records) == 50


# -- a range run's check evaluations: one transaction per check, every one in the partitions view ------------

RANGE = ("2026-03-01", "2026-03-12")  # 12 days of the example `raw_people` (lake): 2 checks, 24 evaluations
CHECKS = ("unique_key", "fingerprint_matches_ledger")
REFUSE_BATCHES = """
CREATE OR REPLACE FUNCTION idem_test_refuse_evaluation_batches() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT count(*) FROM inserted WHERE dagster_event_type = 'ASSET_CHECK_EVALUATION') > 1 THEN
    RAISE EXCEPTION 'test: a batch of check evaluations refused';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER idem_test_refuse_evaluation_batches AFTER INSERT ON event_logs REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION idem_test_refuse_evaluation_batches();
"""


def range_run(env: dict[str, str], tmp_path, name: str) -> str:
    """A `dagster asset materialize` range run of the example `raw_people`, in a lake of its own; its run id."""
    run_env = {**env, "IDEM_LAKE_DIR": str(tmp_path / name), "IDEM_STATE_DIR": str(tmp_path / f"{name}-state")}
    done = run(materialize_command("raw_people", partition_range="...".join(RANGE)), run_env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        return conn.execute("SELECT run_id FROM runs ORDER BY create_timestamp DESC LIMIT 1").fetchone()[0]


def check_status(env: dict[str, str], monkeypatch) -> dict[tuple[str, str], tuple[str, bool]]:
    """(check, day) -> (latest execution status, targets the day's latest materialization): the UI's view."""
    monkeypatch.setenv("IDEM_PG_DSN", env["IDEM_PG_DSN"])  # the instance file reads its database from there
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        keys = [dg.AssetCheckKey(dg.AssetKey("raw_people"), name) for name in CHECKS]
        infos = instance.event_log_storage.get_asset_check_partition_info(keys)
        days = set(pd.date_range(*RANGE).strftime("%Y-%m-%d"))  # other tests share the instance (other days)
        return {(i.check_key.name, i.partition_key): (i.latest_execution_status.value, i.is_current)
                for i in infos if i.partition_key in days}


def stored_evaluations(dsn: str, run_id: str) -> tuple[int, int, int, int]:
    """(the run's per-day evaluation events, the transactions that wrote them, its executions with an evaluation,
    all its evaluation events: the per-day ones and each check step's own result)."""
    with psycopg.connect(dsn) as conn:
        events, transactions = conn.execute(
            """SELECT count(*), count(DISTINCT e.xmin::text) FROM event_logs e
               JOIN asset_check_executions x ON x.evaluation_event_storage_id = e.id AND x.partition IS NOT NULL
               WHERE e.run_id = %s AND e.dagster_event_type = 'ASSET_CHECK_EVALUATION'""",
            (run_id,)).fetchone()
        executions = conn.execute(
            """SELECT count(*) FROM asset_check_executions
               WHERE run_id = %s AND partition IS NOT NULL AND evaluation_event_storage_id IS NOT NULL""",
            (run_id,)).fetchone()[0]
        every = conn.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                             "'ASSET_CHECK_EVALUATION'", (run_id,)).fetchone()[0]
    return events, transactions, executions, every


def execution_rows_as_dagster_writes_them(dsn: str, run_id: str) -> list[tuple]:
    """The run's per-day execution rows that differ from what Dagster's own update writes: the status from the
    event's `passed`, the event itself (the same serialized text as its event log row), its storage id, its
    timestamp, the day's materialization by this run. Empty when every row is as Dagster writes it."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT x.check_name, x.partition, x.execution_status, x.evaluation_event = e.event,
                      x.evaluation_event_timestamp = e.timestamp, x.materialization_event_storage_id = m.id
               FROM asset_check_executions x
               JOIN event_logs e ON e.id = x.evaluation_event_storage_id
               LEFT JOIN event_logs m ON m.run_id = x.run_id AND m.partition = x.partition
                                     AND m.dagster_event_type = 'ASSET_MATERIALIZATION'
               WHERE x.run_id = %s AND x.partition IS NOT NULL""", (run_id,)).fetchall()
    assert len(rows) == 24
    return [r for r in rows if r[2:] != ("SUCCEEDED", True, True, True)]


def planned(env: dict[str, str], run_id: str, monkeypatch) -> tuple[int, int, str, set[str]]:
    """(the run's planned events, the transactions that wrote them, the run the asset's entry names, the runs
    Dagster finds as each day's latest planned materialization)."""
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        events, transactions = conn.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM event_logs "
            "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED'", (run_id,)).fetchone()
        last_run = conn.execute("SELECT last_run_id FROM asset_keys WHERE asset_key = %s",
                                (dg.AssetKey("raw_people").to_string(),)).fetchone()[0]
    monkeypatch.setenv("IDEM_PG_DSN", env["IDEM_PG_DSN"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = {instance.event_log_storage.get_latest_planned_materialization_info(dg.AssetKey("raw_people"), day).run_id
                for day in pd.date_range(*RANGE).strftime("%Y-%m-%d")}
    return events, transactions, last_run, runs


def targets_not_as_dagster_finds_them(env: dict[str, str], run_id: str, monkeypatch) -> list:
    """Every evaluation stored by the run whose target differs from the materialization Dagster's own check step would
    target for its day (the latest one: storage id, run id and exact timestamp)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    monkeypatch.setenv("IDEM_PG_DSN", env["IDEM_PG_DSN"])
    wrong, checked = [], 0
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        key = dg.AssetKey("raw_people")
        for name in CHECKS:
            for record in instance.event_log_storage.get_asset_check_execution_history(
                    dg.AssetCheckKey(key, name), limit=1000):
                evaluation = record.event.dagster_event.event_specific_data if record.event else None
                if record.run_id != run_id or not isinstance(evaluation, dg.AssetCheckEvaluation) \
                        or evaluation.partition is None:  # the step's own result, which Dagster targets itself
                    continue
                latest = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, asset_partitions=[evaluation.partition]), limit=1).records[0]
                expected = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=latest.storage_id, run_id=latest.event_log_entry.run_id, timestamp=latest.timestamp)
                if evaluation.target_materialization_data != expected:
                    wrong.append((name, evaluation.partition, evaluation.target_materialization_data, expected))
                checked += 1
    assert checked == len(CHECKS) * len(pd.date_range(*RANGE)), checked  # every evaluation of the run compared
    return wrong


@pytest.fixture
def expected_view():
    days = pd.date_range(*RANGE).strftime("%Y-%m-%d")
    return {(name, day): ("SUCCEEDED", True) for name in CHECKS for day in days}


def test_a_range_runs_per_day_events_are_stored_one_transaction_per_batch_and_read_as_dagster_reads_them(
        instance_env, tmp_path, monkeypatch, expected_view):
    run_id = range_run(instance_env, tmp_path, "batched")
    # the 12 planned events in one transaction; the asset's entry and each day's planned run as Dagster reads them
    assert planned(instance_env, run_id, monkeypatch) == (12, 1, run_id, {run_id})
    assert check_status(instance_env, monkeypatch) == expected_view
    # 24 evaluation events, each linked to its execution row, written by 2 transactions (one per check step);
    # Dagster's own path writes each in transactions of its own
    assert stored_evaluations(instance_env["IDEM_PG_DSN"], run_id) == (24, 2, 24, 26)
    assert execution_rows_as_dagster_writes_them(instance_env["IDEM_PG_DSN"], run_id) == []
    assert targets_not_as_dagster_finds_them(instance_env, run_id, monkeypatch) == []


def test_a_refused_batch_of_evaluations_leaves_nothing_half_stored_and_each_is_stored_once(
        instance_env, tmp_path, monkeypatch, expected_view):
    dsn = instance_env["IDEM_PG_DSN"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(REFUSE_BATCHES)
    try:
        run_id = range_run(instance_env, tmp_path, "refused")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TRIGGER idem_test_refuse_evaluation_batches ON event_logs")
    assert check_status(instance_env, monkeypatch) == expected_view
    # the batch rolled back whole (no event of it left behind); Dagster then stored each evaluation on its own, once
    assert stored_evaluations(dsn, run_id) == (24, 24, 24, 26)
    assert execution_rows_as_dagster_writes_them(dsn, run_id) == []  # Dagster's own path: the same rows


def test_batches_stored_at_once_by_two_writers_each_get_their_own_events_ids(instance_dsn):
    """Who else writes the event log at the same time: two storages (two runs' processes) store batches of 200
    events at once, 10 rounds. The ids each batch gets back are its own events', in its order (the check
    evaluations' execution rows are linked through them): every id's stored event is the event at that position."""
    import threading

    storages = [PooledPostgresEventLogStorage(instance_dsn) for _ in range(2)]
    wrong: list = []

    def one(storage, writer: int):
        for round_ in range(10):
            events = [dg.EventLogEntry(error_info=None, level="INFO", user_message=f"w{writer} r{round_} e{i}",
                                       run_id=f"run-{writer}", timestamp=time.time()) for i in range(200)]
            with storage._one_transaction() as conn:
                ids, _ = storage._insert(conn, events)
            with psycopg.connect(instance_dsn) as check:
                stored = dict(check.execute("SELECT id, event FROM event_logs WHERE id = ANY(%s)", (ids,)).fetchall())
            wrong.extend((writer, round_, i) for i, (event, event_id) in enumerate(zip(events, ids))
                         if f'"{event.user_message}"' not in stored.get(event_id, ""))

    threads = [threading.Thread(target=one, args=(storage, n)) for n, storage in enumerate(storages)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for storage in storages:
            storage.dispose()
    assert wrong == []


def planned_check_event(run_id: str, days: list[str] | None) -> dg.EventLogEntry:
    """A run's planned event of a check, over `days` (None: a check without partitions)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
    from dagster._core.events import DagsterEvent, DagsterEventType

    subset = dg.DailyPartitionsDefinition(start_date="2025-01-01").subset_with_partition_keys(days).to_serializable_subset() if days else None
    planned = AssetCheckEvaluationPlanned(asset_key=dg.AssetKey(["shop", "orders"]), check_name="fingerprint_matches_ledger",
                                          partitions_subset=subset)
    event = DagsterEvent(DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value, "__ASSET_JOB",
                         event_specific_data=planned, step_key="orders_fingerprint_matches_ledger")
    return dg.EventLogEntry(error_info=None, level="DEBUG", user_message="", run_id=run_id, timestamp=time.time(),
                            dagster_event=event)


def test_a_planned_checks_execution_rows_are_the_ones_dagsters_own_code_writes(instance_dsn):
    """A range run plans its check once for all its days; the check's execution rows (one per day, what the UI's
    check Partitions view reads until each day's evaluation lands) are written with the event serialized once.
    The same planned events through dagster-postgres' own code and through the platform's storage: the same rows,
    column by column, whatever the days (a range with gaps, one day, a check without partitions)."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    days = ["2025-01-03", *pd.date_range("2025-02-01", "2025-12-31").strftime("%Y-%m-%d"), "2026-01-05"]
    pooled = PooledPostgresEventLogStorage(instance_dsn)
    columns = ("asset_key, check_name, partition, run_id, execution_status, evaluation_event, "
               "evaluation_event_timestamp, evaluation_event_storage_id, materialization_event_storage_id")
    try:
        for n, planned_days in enumerate([days, ["2026-05-05"], None]):
            event = planned_check_event(f"run-{n}", planned_days)
            written = {}
            for name, store in (("dagster", lambda e: SqlEventLogStorage._store_asset_check_evaluation_planned(pooled, e, 1000 + n)),
                                ("platform", lambda e: pooled._store_asset_check_evaluation_planned(e, 1000 + n))):
                store(event)
                with psycopg.connect(instance_dsn, autocommit=True) as conn:
                    written[name] = conn.execute(f"SELECT {columns} FROM asset_check_executions WHERE run_id = %s "
                                                 "ORDER BY id", (event.run_id,)).fetchall()
                    conn.execute("DELETE FROM asset_check_executions WHERE run_id = %s", (event.run_id,))
            assert written["platform"] == written["dagster"]
            assert [row[2] for row in written["platform"]] == (planned_days or [None])
    finally:
        pooled.dispose()


def test_a_batch_finds_each_execution_row_by_dagsters_unique_index_however_long_the_history(instance_dsn):
    """Who else is in the table: every execution of the check any earlier run stored (365 more per range run). A
    batch's UPDATE must find each evaluation's row by one probe of Dagster's unique index on (asset key, check,
    run, partition), all four columns, not by comparing it with the check's whole history (`partition IS NOT
    DISTINCT FROM` cannot use the index: 0.7 s for 365 evaluations against 4,400 rows, more with every run).
    With sequential scans and hash joins priced out, the plan shows which conditions the index can take."""
    import json

    import sqlalchemy as db

    pooled = PooledPostgresEventLogStorage(instance_dsn)
    days = list(pd.date_range("2025-01-01", "2025-12-31").strftime("%Y-%m-%d"))
    try:
        for n in range(8):  # eight earlier range runs of the check
            pooled._store_asset_check_evaluation_planned(planned_check_event(f"run-{n}", days), 1000 + n)
        with psycopg.connect(instance_dsn, autocommit=True) as conn:
            conn.execute("ANALYZE asset_check_executions")
        params = {
            "position": list(range(len(days))), "asset_key": [dg.AssetKey(["shop", "orders"]).to_string()] * len(days),
            "check_name": ["fingerprint_matches_ledger"] * len(days), "run_id": ["run-7"] * len(days),
            "partition": days, "status": ["SUCCEEDED"] * len(days), "event": ["{}"] * len(days),
            "ts": [pd.Timestamp("2025-06-01").to_pydatetime()] * len(days), "event_id": list(range(len(days))),
            "materialization_id": [None] * len(days),
        }
        with pooled._one_transaction() as conn:
            conn.execute(db.text("SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; "
                                 "SET LOCAL enable_mergejoin = off"))
            plan = conn.execute(db.text(f"EXPLAIN (FORMAT JSON) {pooled._UPDATE_CHECK_EXECUTIONS.text}"), params).scalar()
            updated = conn.execute(pooled._UPDATE_CHECK_EXECUTIONS, params).fetchall()
            conn.rollback()
    finally:
        pooled.dispose()

    def scans(node):
        yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    on_executions = [n for n in scans((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
                     if n.get("Relation Name") == "asset_check_executions" and "Scan" in n["Node Type"]]
    assert [n.get("Index Name") for n in on_executions] == ["idx_asset_check_executions_unique"]
    condition = on_executions[0]["Index Cond"]
    assert all(column in condition for column in ("asset_key", "check_name", "run_id", "partition")), condition
    assert sorted(position for (position,) in updated) == list(range(len(days)))  # run-7's rows, one each
