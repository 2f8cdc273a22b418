"""The instance's event log keeps its PostgreSQL connection: events are written without a connection each."""

import time

import dagster as dg
import psycopg
import pytest
from dagster_postgres.event_log import PostgresEventLogStorage

from idem_platform.instance_storage import PooledPostgresEventLogStorage
from idem_platform.services import DAGSTER_YAML


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
