"""The 311 pipeline against a real PostgreSQL: bounded extraction, day edges, late updates, the late-data sensor."""

import datetime as dt
import uuid

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from idem_platform import partitions
from idem_platform.pipelines.service_requests import late_data
from idem_platform.pipelines.service_requests import source as source_311
from idem_platform.pipelines.service_requests.assets import (
    service_requests,
    service_requests_daily_summary,
    split_location,
)
from idem_platform.resources import PostgresResource
from idem_platform.storage.postgres_store import PostgresPartitionIOManager

DAYS = partitions.last_n_days(3)  # recent days: inside the late-data sensor's look-back window


@pytest.fixture
def source(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        source_311.simulate(conn, DAYS, seed=7, per_day=50)
    return PostgresResource(dsn=pg_dsn)


@pytest.fixture
def resources(store_resources, source):
    return {**store_resources, "source_db": source}


def materialize(assets, resources, day):
    return dg.materialize(assets, partition_key=day, resources=resources, instance=dg.DagsterInstance.ephemeral())


def warehouse(dsn, query, *params):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def test_simulator_is_deterministic_and_idempotent(pg_dsn, source):
    before = warehouse(pg_dsn, "SELECT md5(string_agg(t::text, ',' ORDER BY request_id)) FROM source.service_requests t")
    with psycopg.connect(pg_dsn) as conn:
        source_311.simulate(conn, DAYS, seed=7, per_day=50)
    assert warehouse(pg_dsn, "SELECT md5(string_agg(t::text, ',' ORDER BY request_id)) FROM source.service_requests t") == before
    assert source_311.requests_for_day("2026-03-01", 7, 50) == source_311.requests_for_day("2026-03-01", 7, 50)
    assert source_311.requests_for_day("2026-03-01", 7, 50) != source_311.requests_for_day("2026-03-01", 8, 50)


def test_day_edges_land_on_the_right_days_in_utc(pg_dsn, resources):
    for day in DAYS:
        materialize([service_requests], resources, day)
    rows = warehouse(pg_dsn, "SELECT partition_date::text, created_at FROM warehouse.service_requests ORDER BY created_at")
    assert len(rows) == 150
    for day, created in rows:
        assert created.astimezone(dt.timezone.utc).date().isoformat() == day
    midnight = dt.datetime.combine(dt.date.fromisoformat(DAYS[1]), dt.time(), tzinfo=dt.timezone.utc)
    by_time = {created: day for day, created in rows}
    assert by_time[midnight] == DAYS[1]  # 00:00:00 starts its day
    assert by_time[midnight - dt.timedelta(milliseconds=1)] == DAYS[0]  # 23:59:59.999 ends the day before


def test_extraction_needs_nothing_but_the_windowed_function(pg_dsn, resources, make_database):
    """A role that may only EXECUTE the window function (no SELECT on the table) extracts fine."""
    role = f"idem_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA source TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE ALL ON source.service_requests FROM PUBLIC"))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION source.requests_created_between(timestamptz, timestamptz) TO {}").format(sql.Identifier(role)))
    restricted = psycopg.conninfo.make_conninfo(pg_dsn, user=role)
    try:
        with psycopg.connect(restricted) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM source.service_requests")
        result = materialize([service_requests], {**resources, "source_db": PostgresResource(dsn=restricted)}, DAYS[1])
        assert result.success
        assert warehouse(pg_dsn, "SELECT count(*) FROM warehouse.service_requests") == [(50,)]
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_rerun_reflects_late_updates_without_duplicates(pg_dsn, resources):
    day = DAYS[0]
    first = materialize([service_requests, service_requests_daily_summary], resources, day)
    again = materialize([service_requests, service_requests_daily_summary], resources, day)
    versions = lambda r: {m.asset_key.path[-1]: m.tags["dagster/data_version"] for m in r.asset_materializations_for_node("service_requests") + r.asset_materializations_for_node("service_requests_daily_summary")}  # noqa: E731
    assert versions(first) == versions(again)
    with psycopg.connect(pg_dsn) as conn:
        closed = source_311.update_requests(conn, [day], seed=7)
    assert closed >= 1
    materialize([service_requests, service_requests_daily_summary], resources, day)
    assert warehouse(pg_dsn, "SELECT count(*), count(DISTINCT request_id) FROM warehouse.service_requests") == [(50, 50)]
    assert warehouse(pg_dsn, "SELECT count(*) FROM warehouse.service_requests WHERE status = 'Closed'") == [(closed,)]
    assert warehouse(pg_dsn, "SELECT sum(requests) FROM warehouse.service_requests_daily_summary WHERE status = 'Closed'") == [(closed,)]
    source_now = warehouse(pg_dsn, "SELECT request_id, status, closed_at FROM source.service_requests WHERE created_at < %s ORDER BY 1", DAYS[1])
    assert warehouse(pg_dsn, "SELECT request_id, status, closed_at FROM warehouse.service_requests ORDER BY 1") == source_now


def test_coordinates_are_split_and_validated():
    import pandas as pd

    out = split_location(pd.Series(["41.88,-87.63", "(41.9, -87.7)", "", "(0, 0)", "unknown", "95.0,10.0", None]))
    assert out["location_valid"].tolist() == [True, True, False, False, False, False, False]
    assert out["lat"].iloc[1] == 41.9 and out["lng"].iloc[0] == -87.63
    assert out["lat"].iloc[2:].isna().all()


def test_late_data_sensor_requests_exactly_the_changed_days_once(pg_dsn, resources, source):
    # nothing published yet: every simulated day is requested
    assert sorted(late_data.days_to_refresh(source, resources["warehouse_io"])) == DAYS
    for day in DAYS:
        materialize([service_requests], resources, day)
    assert late_data.days_to_refresh(source, resources["warehouse_io"]) == {}
    with psycopg.connect(pg_dsn) as conn:
        source_311.update_requests(conn, [DAYS[1]], seed=7)
    assert list(late_data.days_to_refresh(source, resources["warehouse_io"])) == [DAYS[1]]
    with dg.instance_for_test() as instance:
        defs = dg.Definitions(assets=[service_requests], sensors=[late_data.late_data_sensor], resources=resources)
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=resources) as context:
            result = late_data.late_data_sensor.evaluate_tick(context)
    [request] = result.run_requests
    updated = warehouse(pg_dsn, "SELECT max(updated_at) FROM source.service_requests WHERE created_at >= %s AND created_at < %s",
                        *partitions.partition_window(DAYS[1]))[0][0]
    assert (request.partition_key, request.run_key) == (DAYS[1], f"service_requests:{DAYS[1]}:{updated.isoformat()}")


def sensor_requests(resources) -> dict[str, str]:
    """{day: run_key} of one tick of the late-data sensor with these resources."""
    with dg.instance_for_test() as instance:
        defs = dg.Definitions(assets=[service_requests], sensors=[late_data.late_data_sensor], resources=resources)
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=resources) as context:
            result = late_data.late_data_sensor.evaluate_tick(context)
    return {request.partition_key: request.run_key for request in result.run_requests or []}


def test_late_data_sensor_reads_its_own_deployments_publishes_on_a_shared_ledger(pg_dsn, resources, postgres):
    """Two deployments share one ledger and write service_requests into their own warehouse schemas. This one
    published two days; the source changed one of them; then the other deployment published that day and a third
    day (later: newer ledger rows, published after the change). This deployment's sensor must still request the
    changed day (its own publish is older than the change) and the day it never published."""
    other = {**resources, "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema="warehouse_other")}
    for day in DAYS[:2]:
        materialize([service_requests], resources, day)
    assert sorted(sensor_requests(resources)) == [DAYS[2]]
    with psycopg.connect(pg_dsn) as conn:
        source_311.update_requests(conn, [DAYS[1]], seed=7)
    for day in DAYS[1:]:
        materialize([service_requests], other, day)
    assert sorted(sensor_requests(resources)) == DAYS[1:]
    assert sorted(late_data.days_to_refresh(resources["source_db"], resources["warehouse_io"])) == DAYS[1:]
    assert sorted(sensor_requests(other)) == [DAYS[0]]  # and the other deployment's sensor reads its own


def test_rematerializing_a_day_leaves_warehouse_index_and_summary_identical(resources, postgres, es):
    from idem_platform.pipelines.service_requests.assets import service_requests_search
    from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager

    with_search = {**resources, "search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=es, replicas=0)}
    assets = [service_requests, service_requests_search, service_requests_daily_summary]
    for _ in range(3):
        materialize(assets, with_search, DAYS[0])
    with psycopg.connect(postgres.dsn) as conn:
        rows = conn.execute("SELECT asset, fingerprint, changed FROM idem.ledger ORDER BY id").fetchall()
    by_asset = {}
    for asset, fp, changed in rows:
        by_asset.setdefault(asset, []).append((fp, changed))
    assert set(by_asset) == {"service_requests", "service_requests_search", "service_requests_daily_summary"}
    for asset, history in by_asset.items():
        assert [c for _, c in history] == [True, False, False], asset
        assert len({fp for fp, _ in history}) == 1, asset
    # the index holds the same content as the warehouse: equal fingerprints
    assert by_asset["service_requests_search"][0][0] == by_asset["service_requests"][0][0]


def test_daily_schedule_requests_yesterdays_partition():
    from idem_platform.definitions import defs

    schedule = defs.resolve_schedule_def("service_requests_job_schedule")
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 3, 5, 2, 0, tzinfo=dt.timezone.utc))
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-03-04"


def test_verify_is_identical_after_a_normal_run_and_differs_after_late_data(resources, postgres, es, pg_dsn):
    from idem_platform.pipelines.service_requests.assets import service_requests_search
    from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager
    from idem_platform.verification import verify_partitions

    assets = [service_requests, service_requests_search, service_requests_daily_summary]
    defs = dg.Definitions(assets=assets, resources={
        **resources, "search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=es, replicas=0)})
    materialize(assets, defs.resources, DAYS[2])
    for asset in ("service_requests", "service_requests_search", "service_requests_daily_summary"):
        assert [v.status for v in verify_partitions(defs, asset, [DAYS[2]])] == ["identical"], asset
    with psycopg.connect(pg_dsn) as conn:
        closed = source_311.update_requests(conn, [DAYS[2]], seed=7)
    [verdict] = verify_partitions(defs, "service_requests", [DAYS[2]])
    assert verdict.status == "differs" and len(verdict.changed) == closed and not verdict.added and not verdict.removed
