"""Fixtures and helpers for the scooter-trips tests: a real PostgreSQL warehouse, an inbox, materialize helpers.

Test modules import the fixtures they use (`from idem_platform_tests.pipelines.scooters.fixtures import scooter_db, ...`).
The bad-input suite shares one database per module (`scooter_db`) and gives every test a day of its own, so a
test's "previously published partition" is its own day and no test sees another's rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from idem_platform.pipelines.scooters.assets import scooter_daily_summary, scooter_trips, scooter_trips_rejected
from idem_platform import settings
from idem_platform.resources import PostgresResource
from idem_platform.pipelines.scooters.inbox import ScooterInboxResource, inbox_dir, trips_dir
from idem_platform.pipelines.scooters.simulator import HEADER, render_csv, simulate_rows, write_inbox_file
from idem_platform.pipelines.scooters.sensor import scooter_inbox_job, scooter_inbox_sensor
from idem_platform.storage import ledger
from idem_platform.storage.postgres_store import PostgresPartitionIOManager

SCOOTER_ASSETS = [scooter_trips_rejected, scooter_trips, scooter_daily_summary]
SCHEMA = "warehouse"
GOOD_ROWS = 30

_days = itertools.count()


def next_day() -> str:
    """A day no other test of the session uses (2026-02-01 onwards)."""
    return (dt.date(2026, 2, 1) + dt.timedelta(days=next(_days))).isoformat()


def good_rows(day: str, n: int = GOOD_ROWS, part: str | None = None) -> list[dict[str, str]]:
    return simulate_rows(day, n, part=part, bad_share=0.0)


def csv_bytes(rows: Sequence[dict[str, str]], header: Sequence[str] = HEADER) -> bytes:
    return render_csv(rows, header)


@dataclass
class ScooterWarehouse:
    """One PostgreSQL database (schema `warehouse`) and one inbox, with the scooter assets wired to them."""

    dsn: str
    inbox: Path
    max_rejected_share: float = 0.10

    @property
    def resources(self) -> dict:
        postgres = PostgresResource(dsn=self.dsn)
        return {
            "postgres": postgres,
            "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema=SCHEMA),
            "scooter_inbox": ScooterInboxResource(root=str(self.inbox), max_rejected_share=self.max_rejected_share, settle_seconds=0),
        }

    # -- the inbox ---------------------------------------------------------------------------------------------
    def write(self, name: str, data: bytes | str) -> Path:
        return write_inbox_file(self.inbox, name, data.encode() if isinstance(data, str) else data)

    def remove(self, name: str) -> None:
        (trips_dir(self.inbox) / name).unlink()

    # -- runs --------------------------------------------------------------------------------------------------
    def materialize(self, day: str, assets=None, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets or SCOOTER_ASSETS, partition_key=day, resources=self.resources,
            instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False,
        )

    def publish_good_day(self, day: str, n: int = GOOD_ROWS) -> list[dict[str, str]]:
        rows = good_rows(day, n)
        self.write(f"{day}.csv", csv_bytes(rows))
        result = self.materialize(day)
        assert result.success, failure_message(result)
        return rows

    # -- what is published -------------------------------------------------------------------------------------
    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, params).fetchall()

    def trips(self, day: str) -> list[tuple]:
        return self.query(
            f"SELECT * FROM {SCHEMA}.scooter_trips WHERE partition_date = %s ORDER BY source_file, source_line", (day,)
        )

    def trip_ids(self, day: str) -> list[str]:
        return [r[0] for r in self.query(
            f"SELECT trip_id FROM {SCHEMA}.scooter_trips WHERE partition_date = %s ORDER BY source_file, source_line", (day,)
        )]

    def rejected(self, day: str) -> list[dict]:
        rows = self.query(
            f"SELECT source_file, source_line, trip_id, failed_rules, rule_count, raw_row, raw_row_truncated, file_sha256"
            f" FROM {SCHEMA}.scooter_trips_rejected WHERE partition_date = %s ORDER BY source_file, source_line",
            (day,),
        )
        return [
            {"file": f, "line": line, "trip_id": tid, "rules": json.loads(rules), "rule_count": n, "raw_row": raw,
             "truncated": trunc, "sha256": sha}
            for f, line, tid, rules, n, raw, trunc, sha in rows
        ]

    def summary(self, day: str) -> list[tuple]:
        return self.query(f"SELECT * FROM {SCHEMA}.scooter_daily_summary WHERE partition_date = %s", (day,))

    def ledger(self, asset: str, day: str) -> list[ledger.LedgerEntry]:
        with psycopg.connect(self.dsn) as conn:
            return [e for e in ledger.history(conn, asset=asset, days=[day]) if e.location.startswith(f"{SCHEMA}.")]

    def snapshot(self, day: str) -> dict:
        """Everything published for `day`: rows of the three tables and their ledger rows."""
        return {
            "trips": self.trips(day),
            "rejected": self.rejected(day),
            "summary": self.summary(day),
            "ledger": {a: self.ledger(a, day) for a in ("scooter_trips", "scooter_trips_rejected", "scooter_daily_summary")},
        }


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The error text of the run's failed steps (empty for a successful run)."""
    return "\n".join(
        ev.step_failure_data.error.to_string()
        for ev in result.all_events
        if ev.event_type_value == "STEP_FAILURE"
    )


def materialized_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for ev in result.get_asset_materialization_events():
        if ev.materialization.asset_key.path[-1] == asset:
            return {k: v.value for k, v in ev.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


@pytest.fixture(scope="module")
def scooter_db(make_database) -> str:
    """One database for a whole test module (tests use days of their own)."""
    return make_database("idem_scooters")


@pytest.fixture
def warehouse(scooter_db, tmp_path) -> ScooterWarehouse:
    """The module's database with an inbox of this test's own."""
    return ScooterWarehouse(dsn=scooter_db, inbox=tmp_path / "inbox")


@pytest.fixture
def own_warehouse(pg_dsn, tmp_path) -> ScooterWarehouse:
    """A database and an inbox of this test's own."""
    return ScooterWarehouse(dsn=pg_dsn, inbox=tmp_path / "inbox")


def scooter_definitions(resources: dict | None = None) -> dg.Definitions:
    """The scooter pipeline as definitions.py will wire it (assets, job, sensor), with these resources.

    Without arguments (how `dagster-daemon` loads `daemon_definitions` below), the resources come from the
    environment: IDEM_PG_DSN, IDEM_PG_SCHEMA, IDEM_INBOX_DIR.
    """
    if resources is None:
        postgres = PostgresResource(dsn=dg.EnvVar("IDEM_PG_DSN"))
        resources = {
            "postgres": postgres,
            "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema=settings.current().pg_schema),
            "scooter_inbox": ScooterInboxResource(root=inbox_dir(), settle_seconds=0),
        }
    return dg.Definitions(
        assets=SCOOTER_ASSETS, jobs=[scooter_inbox_job], sensors=[scooter_inbox_sensor], resources=resources
    )


# The code location a `dagster-daemon` subprocess loads in test_scooter_sensor.py (nothing connects at import).
daemon_definitions = scooter_definitions()
