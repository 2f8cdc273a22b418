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


# -- asset check evaluations: committed without waiting for the disk, stored all the same -------------------

RANGE = ("2026-03-01", "2026-03-12")  # 12 days of `raw_people` (lake): 2 checks -> 24 evaluations per run


def wal_syncs(dsn: str) -> int:
    """WAL flushes to disk the whole server did so far (pg_stat_wal, PostgreSQL >= 14); the backends of exited
    processes have reported theirs."""
    time.sleep(1.0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0]


def range_run(env: dict[str, str], tmp_path, name: str, async_commits: bool) -> int:
    """A `dagster asset materialize` range run of the example `raw_people` in a lake of its own; the server's
    WAL flushes during it."""
    run_env = {**env, "IDEM_LAKE_DIR": str(tmp_path / name), "IDEM_STATE_DIR": str(tmp_path / f"{name}-state"),
               "IDEM_ASYNC_CHECK_COMMITS": str(async_commits).lower()}
    before = wal_syncs(env["IDEM_PG_DSN"])
    done = run(materialize_command("raw_people", partition_range="...".join(RANGE)), run_env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return wal_syncs(env["IDEM_PG_DSN"]) - before


def check_status(env: dict[str, str], monkeypatch) -> dict[tuple[str, str], tuple[str, bool]]:
    """(check, day) -> (latest execution status, targets the day's latest materialization): the UI's view."""
    monkeypatch.setenv("IDEM_PG_DSN", env["IDEM_PG_DSN"])  # the instance file reads its database from there
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        keys = [dg.AssetCheckKey(dg.AssetKey("raw_people"), name) for name in ("unique_key", "fingerprint_matches_ledger")]
        infos = instance.event_log_storage.get_asset_check_partition_info(keys)
        return {(i.check_key.name, i.partition_key): (i.latest_execution_status.value, i.is_current)
                for i in infos if i.partition_key}


def test_a_range_runs_check_evaluations_skip_the_disk_wait_and_all_land_in_the_partitions_view(instance_env, tmp_path, monkeypatch):
    dsn = instance_env["IDEM_PG_DSN"]
    with psycopg.connect(dsn) as conn:
        if conn.info.server_version < 140000 or conn.execute("SHOW fsync").fetchone()[0] != "on":
            pytest.skip("needs pg_stat_wal (PostgreSQL >= 14) and fsync on")
    days = pd.date_range(*RANGE).strftime("%Y-%m-%d")
    expected = {(name, day): ("SUCCEEDED", True) for name in ("unique_key", "fingerprint_matches_ledger") for day in days}

    synchronous = range_run(instance_env, tmp_path, "sync", async_commits=False)
    assert check_status(instance_env, monkeypatch) == expected
    relaxed = range_run(instance_env, tmp_path, "async", async_commits=True)
    assert check_status(instance_env, monkeypatch) == expected  # the second run's evaluations, every one current

    # Dagster stores each of the 24 evaluations on its own: an INSERT and an UPDATE, each waiting for a flush,
    # unless the platform's event log commits them without waiting (the rest of the two runs is the same work)
    assert synchronous - relaxed >= len(expected), (synchronous, relaxed)
