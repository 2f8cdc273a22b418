"""The inbox sensor on a real dagster-postgres instance: run keys, corrections, parts, removals, real runs.

`build_sensor_context` evaluates the sensor against the migrated instance of `instance_env`; runs requested by it
are executed in-process on that instance with the run-key and sensor tags the daemon would set, and deduplicated
the way the daemon does (`launch`). One test runs the real `dagster-daemon` in a subprocess: the file dropped
twice runs once, the corrected file runs once more, and its rows replace the old ones.
"""

import signal
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from idem_platform.pipelines.scooters.sensor import CHANGE_TAG, FILES_TAG, InboxCursor, plan_inbox, scooter_inbox_sensor
from idem_platform_tests.cli_runs import BIN, stop_process_group
from idem_platform_tests.pipelines.scooters.fixtures import (  # noqa: F401 (fixtures)
    ScooterWarehouse,
    csv_bytes,
    failure_message,
    good_rows,
    next_day,
    own_warehouse,
    scooter_db,
    scooter_definitions,
    warehouse,
)

RUN_KEY_TAG = "dagster/run_key"
SENSOR_TAG = "dagster/sensor_name"
SENSOR = scooter_inbox_sensor.name


@pytest.fixture
def pg_instance(instance_env, monkeypatch):
    """The tests' dagster-postgres instance (runs, event log, sensor ticks in PostgreSQL), in this process."""
    monkeypatch.setenv("IDEM_PG_DSN", instance_env["IDEM_PG_DSN"])
    instance = dg.DagsterInstance.from_config(instance_env["DAGSTER_HOME"])
    yield instance
    instance.dispose()


def tick(instance, warehouse: ScooterWarehouse, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"scooter_inbox": warehouse.resources["scooter_inbox"]}
    )
    return scooter_inbox_sensor(context)


def launch(instance, defs: dg.Definitions, result: dg.SensorResult) -> list[dg.ExecuteInProcessResult]:
    """What the daemon does with a tick's run requests: skip keys this sensor already ran, run the others."""
    done = []
    for request in result.run_requests:
        existing = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key, SENSOR_TAG: SENSOR}))
        if existing:
            continue
        done.append(
            defs.resolve_job_def("scooter_inbox_job").execute_in_process(
                partition_key=request.partition_key, instance=instance, raise_on_error=False,
                tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_TAG: SENSOR},
            )
        )
    return done


def requests(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [(r.partition_key, r.run_key) for r in result.run_requests]


def test_same_file_twice_runs_once_and_a_correction_runs_once(pg_instance, warehouse):
    day = next_day()
    rows = good_rows(day)
    warehouse.write(f"{day}.csv", csv_bytes(rows))
    first = tick(pg_instance, warehouse)
    ((partition, key),) = requests(first)
    assert partition == day and key.startswith(f"scooter_trips/{day}@")
    assert first.run_requests[0].tags[FILES_TAG].startswith(f"{day}.csv@")
    assert first.run_requests[0].tags[CHANGE_TAG] == "new day"

    # nothing new; then the same bytes dropped again (a new mtime, the same sha256)
    assert tick(pg_instance, warehouse, first.cursor).run_requests == []
    time.sleep(0.01)
    warehouse.write(f"{day}.csv", csv_bytes(rows))
    again = tick(pg_instance, warehouse, first.cursor)
    assert again.run_requests == [] and "no new or changed inbox files" in again.skip_reason.skip_message

    # a corrected file: one request with a new key, once
    rows[0]["Start_Lat"] = "35.1"
    warehouse.write(f"{day}.csv", csv_bytes(rows))
    corrected = tick(pg_instance, warehouse, again.cursor)
    ((_, corrected_key),) = requests(corrected)
    assert corrected_key != key and corrected.run_requests[0].tags[CHANGE_TAG] == "files changed"
    assert tick(pg_instance, warehouse, corrected.cursor).run_requests == []

    # the correction undone: the old content is new again, under a key Dagster has not seen
    rows[0]["Start_Lat"] = good_rows(day)[0]["Start_Lat"]
    warehouse.write(f"{day}.csv", csv_bytes(rows))
    reverted = tick(pg_instance, warehouse, corrected.cursor)
    assert requests(reverted) == [(day, f"{key}.1")]

    # a lost cursor asks for the current content's base key again, which the run-key dedup then blocks
    assert requests(tick(pg_instance, warehouse, None)) == [(day, key)]


def test_parts_dropped_together_make_one_run_and_removals_are_reported(pg_instance, warehouse):
    day = next_day()
    warehouse.write(f"{day}__a.csv", csv_bytes(good_rows(day, 10, part="a")))
    warehouse.write(f"{day}__b.csv", csv_bytes(good_rows(day, 10, part="b")))
    both = tick(pg_instance, warehouse)
    assert [r[0] for r in requests(both)] == [day]
    assert both.run_requests[0].tags[FILES_TAG].count("@") == 2

    warehouse.remove(f"{day}__b.csv")
    one_left = tick(pg_instance, warehouse, both.cursor)
    assert [r[0] for r in requests(one_left)] == [day]
    assert one_left.run_requests[0].tags[CHANGE_TAG] == "file removed"
    (observation,) = one_left.asset_events
    assert observation.asset_key == dg.AssetKey("scooter_trips") and observation.partition == day
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["inbox_event"] == "file_removed" and meta["file"] == f"{day}__b.csv"
    assert "runs again from its other files" in meta["detail"]
    pg_instance.report_runless_asset_event(observation)  # what the daemon does with a tick's asset events
    (stored,) = pg_instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("scooter_trips"), asset_partitions=[day]), limit=5
    ).records
    assert stored.asset_observation.metadata["inbox_event"].value == "file_removed"

    warehouse.remove(f"{day}__a.csv")
    none_left = tick(pg_instance, warehouse, one_left.cursor)
    assert none_left.run_requests == []
    (observation,) = none_left.asset_events
    assert "no inbox file left; nothing runs and the published partitions" in observation.metadata["detail"].value
    assert tick(pg_instance, warehouse, none_left.cursor).asset_events == []  # reported once

    # the same file back: the day's published content is already that file's, nothing to run
    warehouse.write(f"{day}__a.csv", csv_bytes(good_rows(day, 10, part="a")))
    assert tick(pg_instance, warehouse, none_left.cursor).run_requests == []


def test_unsettled_files_and_uploads_wait(warehouse):
    day = next_day()
    warehouse.write(f"{day}.csv", csv_bytes(good_rows(day, 5)))
    (warehouse.inbox / "scooter_trips" / f".{day}__b.csv.tmp").write_bytes(b"half")
    plan = plan_inbox(warehouse.inbox, InboxCursor(), settle_seconds=3600)
    assert plan.requests == [] and plan.settling == [f"{day}.csv"]
    plan = plan_inbox(warehouse.inbox, plan.cursor, settle_seconds=0)
    assert [r.day for r in plan.requests] == [day] and plan.watched == 1


def test_sensor_runs_publish_and_rerun_nothing(pg_instance, own_warehouse):
    """Real runs on the instance: a drop publishes, the same file again runs nothing, a fix replaces the rows."""
    wh = own_warehouse
    defs = scooter_definitions(wh.resources)
    day = next_day()
    rows = good_rows(day)
    wh.write(f"{day}.csv", csv_bytes(rows + [dict(good_rows(day, 31)[30], END_LAT="-95")]))

    first = tick(pg_instance, wh)
    (run,) = launch(pg_instance, defs, first)
    assert run.success, failure_message(run)
    assert len(wh.trips(day)) == 30 and [r["line"] for r in wh.rejected(day)] == [32]
    stored_run = pg_instance.get_run_by_id(run.run_id)
    assert stored_run.tags[RUN_KEY_TAG] == first.run_requests[0].run_key and stored_run.tags["dagster/partition"] == day

    # dropped again, and a sensor whose cursor was lost: the same key, already run: no run
    wh.write(f"{day}.csv", csv_bytes(rows + [dict(good_rows(day, 31)[30], END_LAT="-95")]))
    assert launch(pg_instance, defs, tick(pg_instance, wh, first.cursor)) == []
    assert launch(pg_instance, defs, tick(pg_instance, wh, None)) == []

    # fixed: the day runs once more; its rows are replaced, the quarantine emptied
    wh.write(f"{day}.csv", csv_bytes(good_rows(day, 31)))
    fixed = tick(pg_instance, wh, first.cursor)
    (rerun,) = launch(pg_instance, defs, fixed)
    assert rerun.success, failure_message(rerun)
    assert len(wh.trips(day)) == 31 and wh.rejected(day) == []
    assert launch(pg_instance, defs, tick(pg_instance, wh, fixed.cursor)) == []
    assert [e.row_count for e in wh.ledger("scooter_trips", day)] == [30, 31]
    runs = pg_instance.get_runs(filters=dg.RunsFilter(tags={SENSOR_TAG: SENSOR, "dagster/partition": day}))
    assert len(runs) == 2


@pytest.mark.slow
def test_daemon_runs_a_dropped_file_once_and_its_correction_once(instance_env, tmp_path):
    """The real thing: `dagster-daemon run` ticks the sensor, dedups run keys and launches queued runs."""
    inbox = tmp_path / "inbox"
    schema = f"wh_{uuid.uuid4().hex[:8]}"
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: idem_platform_tests.pipelines.scooters.fixtures\n"
        f"      attribute: daemon_definitions\n      working_directory: {Path(__file__).parents[1]}\n"
        "      location_name: scooters\n"
    )
    env = {**instance_env, "IDEM_PG_SCHEMA": schema, "IDEM_INBOX_DIR": str(inbox), "IDEM_INBOX_SENSOR_INTERVAL": "1"}
    wh = ScooterWarehouse(dsn=env["IDEM_PG_DSN"], inbox=inbox)
    day = next_day()
    rows = good_rows(day)

    def runs():
        with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
            return conn.execute(
                "SELECT r.run_id, r.status, t.value FROM runs r JOIN run_tags t ON t.run_id = r.run_id"
                " AND t.key = 'dagster/run_key' WHERE t.value LIKE %s ORDER BY r.id", (f"scooter_trips/{day}@%",),
            ).fetchall()

    def trips():
        with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
            return conn.execute(f'SELECT count(*), min(start_lat) FROM "{schema}".scooter_trips WHERE partition_date = %s', (day,)).fetchone()

    def wait_for(what, predicate, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if predicate(value):
                return value
            assert daemon.poll() is None, daemon.stdout.read()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"timed out; last value {value!r}; daemon log:\n{read_log()}")

    log = tmp_path / "daemon.log"

    def read_log():
        return log.read_text()[-4000:] if log.exists() else ""

    wh.write(f"{day}.csv", csv_bytes(rows))
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(runs, lambda r: len(r) == 1 and r[0][1] == "SUCCESS")
        assert trips()[0] == 30
        # the same file dropped again: a whole tick evaluates it, nothing runs
        dropped_again = time.time()
        wh.write(f"{day}.csv", csv_bytes(rows))
        wait_for(lambda: _ticks_after(env, dropped_again), lambda done: done >= 1)
        assert len(runs()) == 1
        # corrected: exactly one more run, which replaces the day's rows
        wh.write(f"{day}.csv", csv_bytes([dict(r, Start_Lat="35.0") for r in rows]))
        done = wait_for(runs, lambda r: len(r) == 2 and r[1][1] == "SUCCESS")
        assert done[0][2] != done[1][2]
        assert trips() == (30, 35.0)
    finally:
        stop_process_group(daemon, signal.SIGTERM)


def _ticks_after(env, since: float) -> int:
    """Ticks of the inbox sensor that started after `since` and are finished (skipped or with runs)."""
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        return conn.execute(
            "SELECT count(*) FROM job_ticks WHERE type = 'SENSOR' AND tick_body::jsonb ->> 'job_name' = %s"
            " AND status IN ('SKIPPED', 'SUCCESS') AND (tick_body::jsonb ->> 'timestamp')::float > %s",
            (SENSOR, since),
        ).fetchone()[0]
