"""The 311 pipeline under a real `dagster-daemon` on a dagster-postgres instance: the late-data sensor and
declarative automation re-materialize exactly the days whose source rows changed, and nothing else."""

import os
import subprocess
import time

import pandas as pd
import psycopg
import pytest

from idem_platform import partitions
from idem_platform.pipelines.service_requests import source as source_311
from idem_platform.services import DAGSTER_YAML, dagster_cli
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.partition_store import AssetTarget
from idem_platform.pipelines.service_requests.assets import service_requests_search
from idem_platform_tests.cli_runs import BIN, stop_process_group

ASSETS = ("service_requests", "service_requests_search", "service_requests_daily_summary")
DAYS = partitions.last_n_days(14)
PER_DAY = 25


def ledger_rows(dsn: str, schema_tag: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('idem.ledger') IS NULL").fetchone()[0]:
            return []
        return conn.execute(
            "SELECT asset, partition, run_id, fingerprint, id FROM idem.ledger WHERE asset = ANY(%s) ORDER BY id",
            (list(ASSETS),),
        ).fetchall()


def wait_for(predicate, timeout: float, what: str, daemon: subprocess.Popen, log_path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if daemon.poll() is not None:
            break
        time.sleep(2)
    tail = open(log_path).read()[-6000:]
    raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{tail}")


def published_days(rows, asset):
    return {partition for a, partition, *_ in rows if a == asset}


@pytest.fixture
def daemon_env(make_database, tmp_path, es):
    """A private dagster-postgres instance (its own database: the daemon runs every sensor of the location)."""
    dsn = make_database("idem_daemon")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {
        **os.environ, "IDEM_PG_DSN": dsn, "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore",
        "IDEM_LAKE_DIR": str(tmp_path / "lake"), "IDEM_STATE_DIR": str(tmp_path / "state"),
        "IDEM_INBOX_DIR": str(tmp_path / "inbox"), "IDEM_LATE_DATA_INTERVAL_SECONDS": "5",
        "IDEM_INBOX_SENSOR_INTERVAL": "30",
    }
    if not os.environ.get("IDEM_ES_URL"):
        env["IDEM_ES_URL"] = es.url
    subprocess.run([dagster_cli(), "instance", "migrate"], env=env, check=True, capture_output=True)
    return env


@pytest.mark.slow
def test_daemon_rematerializes_exactly_the_days_that_changed(daemon_env, tmp_path, es):
    dsn = daemon_env["IDEM_PG_DSN"]
    with psycopg.connect(dsn) as conn:
        source_311.simulate(conn, DAYS, seed=11, per_day=PER_DAY)
    log_path = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-m", "idem_platform.definitions"],
        env=daemon_env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        # 1. the sensor requests every day, automation follows downstream
        wait_for(lambda: all(published_days(ledger_rows(dsn, ""), a) >= set(DAYS) for a in ASSETS),
                 600, "all 14 days of the three assets", daemon, log_path)
        time.sleep(20)  # a few more ticks: nothing more may run
        settled = ledger_rows(dsn, "")
        assert {a: len([r for r in settled if r[0] == a]) for a in ASSETS} == {a: len(DAYS) for a in ASSETS}, \
            "each day of each asset was published exactly once"

        # 2. late data for 3 past days
        changed_days = [DAYS[2], DAYS[6], DAYS[10]]
        with psycopg.connect(dsn) as conn:
            source_311.update_requests(conn, changed_days, seed=11, share=0.3)
        wait_for(lambda: all(published_days(ledger_rows(dsn, "")[len(settled):], a) >= set(changed_days) for a in ASSETS),
                 400, "the 3 changed days downstream", daemon, log_path)
        time.sleep(25)
        after = ledger_rows(dsn, "")[len(settled):]
        assert sorted((a, p) for a, p, *_ in after) == sorted((a, d) for a in ASSETS for d in changed_days), \
            "exactly the changed days (and their downstream partitions) ran again, once"
    finally:
        stop_process_group(daemon)

    # 3. warehouse and index match the source row for row
    schema = "warehouse"
    with psycopg.connect(dsn) as conn:
        source_rows = conn.execute(
            "SELECT request_id, status, closed_at, updated_at FROM source.service_requests ORDER BY 1").fetchall()
        warehouse_rows = conn.execute(
            f"SELECT request_id, status, closed_at, updated_at FROM {schema}.service_requests ORDER BY 1").fetchall()
        summary = conn.execute(f"SELECT sum(requests) FROM {schema}.service_requests_daily_summary").fetchone()[0]
    assert warehouse_rows == source_rows and summary == len(source_rows) == PER_DAY * len(DAYS)
    target = AssetTarget.from_metadata("service_requests_search", service_requests_search.specs_by_key[
        service_requests_search.key].metadata)
    indexed = ElasticsearchIndexSink(es).read(target, DAYS).sort_values("request_id").reset_index(drop=True)
    assert indexed["request_id"].tolist() == [r[0] for r in source_rows]
    assert indexed["status"].tolist() == [r[1] for r in source_rows]
    # ...and the index holds exactly what the ledger says each day published
    final = ledger_rows(dsn, "")
    for day in DAYS:
        day_frame = indexed[indexed["partition_date"] == pd.Timestamp(day)]
        latest = [r for r in final if r[0] == "service_requests_search" and r[1] == day][-1]
        assert fingerprint(day_frame.reset_index(drop=True), target.decl) == latest[3]
