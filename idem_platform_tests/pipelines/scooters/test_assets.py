"""The scooter assets in Dagster: range runs, the summary, the quarantine-before-trips order, the same-files fence."""

import dagster as dg
import pytest

from idem_platform.pipelines.scooters import assets as scooters
from idem_platform.pipelines.scooters.assets import scooter_daily_summary, scooter_trips, scooter_trips_rejected
from idem_platform.pipelines.scooters.validation import DECLARED_RULES
from idem_platform_tests.pipelines.scooters.fixtures import (  # noqa: F401 (fixtures)
    SCOOTER_ASSETS,
    ScooterWarehouse,
    csv_bytes,
    failure_message,
    good_rows,
    next_day,
    own_warehouse,
    scooter_definitions,
)


def run_range(wh, first, last, raise_on_error=False):
    return dg.materialize(
        SCOOTER_ASSETS, resources=wh.resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def partition_metadata(result, asset):
    return {
        ev.materialization.partition: {k: v.value for k, v in ev.materialization.metadata.items()}
        for ev in result.get_asset_materialization_events()
        if ev.materialization.asset_key.path[-1] == asset
    }


def test_definitions_shape(tmp_path):
    defs = scooter_definitions(ScooterWarehouse(dsn="postgresql://nowhere/none", inbox=tmp_path).resources)  # nothing connects
    graph = defs.resolve_asset_graph()
    assert graph.get(scooter_trips.key).parent_keys == {scooter_trips_rejected.key}  # quarantine first
    assert graph.get(scooter_daily_summary.key).parent_keys == {scooter_trips.key, scooter_trips_rejected.key}
    meta = scooter_trips.specs_by_key[scooter_trips.key].metadata
    assert meta["idem/key"] == ["trip_id"] and meta["declared_rules"].value == list(DECLARED_RULES)
    job = defs.resolve_job_def("scooter_inbox_job")
    assert {n.name for n in job.nodes} == {"scooter_trips_rejected", "scooter_trips", "scooter_daily_summary"}


def test_range_run_publishes_every_day_with_its_own_provenance(own_warehouse):
    wh = own_warehouse
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    for day in days:
        rows = good_rows(day, 20)
        rows.append(dict(good_rows(day, 21)[20], Start_Lat="abc"))
        wh.write(f"{day}.csv", csv_bytes(rows))
    result = run_range(wh, days[0], days[-1])
    assert result.success, failure_message(result)
    meta = partition_metadata(result, "scooter_trips")
    assert sorted(meta) == days
    assert {m["valid_rows"] for m in meta.values()} == {20} and len({m["inbox_manifest"] for m in meta.values()}) == 3
    assert [wh.summary(d)[0][1:3] for d in days] == [(20, 1)] * 3  # trips, rejected_rows
    assert [len(wh.rejected(d)) for d in days] == [1, 1, 1]


def test_one_bad_file_fails_the_whole_range_and_publishes_no_day(own_warehouse):
    wh = own_warehouse
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    for day in days:
        wh.write(f"{day}.csv", csv_bytes(good_rows(day, 20)))
    assert run_range(wh, days[0], days[-1]).success
    before = {d: wh.snapshot(d) for d in days}
    for day in days:
        wh.write(f"{day}.csv", csv_bytes(good_rows(day, 25)))
    wh.write(f"{days[1]}.csv", b"")
    result = run_range(wh, days[0], days[-1])
    assert not result.success
    assert f"inbox file '{days[1]}.csv' for day {days[1]}: rule 'file is not empty' failed" in failure_message(result)
    assert {d: wh.snapshot(d) for d in days} == before


def test_files_changed_between_the_quarantine_and_the_trips_step(own_warehouse, monkeypatch):
    wh = own_warehouse
    day = next_day()
    rows = good_rows(day)
    wh.publish_good_day(day)
    before = wh.snapshot(day)
    original = scooters.read_inbox_days
    calls = []

    def replace_before_the_trips_step(root, days, **kwargs):
        calls.append(days)
        if len(calls) == 2:
            wh.write(f"{day}.csv", csv_bytes(rows + [dict(good_rows(day, 31)[30], END_LAT="-95")]))
        return original(root, days, **kwargs)

    monkeypatch.setattr(scooters, "read_inbox_days", replace_before_the_trips_step)
    result = wh.materialize(day)
    assert len(calls) == 2 and not result.success
    message = failure_message(result)
    assert f"for day {day}: rule 'files unchanged while being read' failed" in message
    assert "between the quarantine step and the trips step" in message
    after = wh.snapshot(day)
    assert after["trips"] == before["trips"] and after["ledger"]["scooter_trips"] == before["ledger"]["scooter_trips"]
    assert after["summary"] == before["summary"]

    monkeypatch.setattr(scooters, "read_inbox_days", original)
    assert wh.materialize(day).success  # the sensor's run for the new content: both tables from it
    assert len(wh.trips(day)) == 30 and [r["line"] for r in wh.rejected(day)] == [32]


@pytest.mark.parametrize("asset", [scooter_trips, scooter_trips_rejected])
def test_assets_fail_cleanly_without_a_file(own_warehouse, asset):
    result = dg.materialize([asset], partition_key="2026-03-09", resources=own_warehouse.resources,
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                            selection=[asset.key])
    assert not result.success
    assert "rule 'an inbox file for the day' failed: no file 2026-03-09.csv or 2026-03-09__<part>.csv" in failure_message(result)


def test_generated_checks_and_verify_see_an_idempotent_inbox(own_warehouse):
    """The platform's generated checks pass on the scooter tables, and `idem verify` finds a rerun identical
    until the inbox file changes."""
    from idem_platform.checks import checks_for
    from idem_platform.verification import verify_partitions

    wh = own_warehouse
    day = next_day()
    rows = good_rows(day)
    wh.write(f"{day}.csv", csv_bytes(rows + [dict(good_rows(day, 31)[30], Start_Lat="abc")]))
    checks = checks_for(SCOOTER_ASSETS)
    assert len(checks) == 3  # fingerprint_matches_ledger per table (their primary keys make unique_key moot)
    result = dg.materialize([*SCOOTER_ASSETS, *checks], partition_key=day, resources=wh.resources,
                            instance=dg.DagsterInstance.ephemeral())
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 3 and all(e.passed for e in evaluations)

    defs = dg.Definitions(assets=SCOOTER_ASSETS, resources=wh.resources)
    for asset in ("scooter_trips", "scooter_trips_rejected"):
        (verdict,) = verify_partitions(defs, asset, [day])
        assert verdict.status == "identical", verdict.describe()
    wh.write(f"{day}.csv", csv_bytes(rows[:-1]))
    (verdict,) = verify_partitions(defs, "scooter_trips", [day])
    assert verdict.status == "differs" and verdict.removed == [rows[-1]["Trip_ID"]]
    (verdict,) = verify_partitions(defs, "scooter_trips_rejected", [day])
    assert verdict.status == "differs" and verdict.removed == [f"{day}.csv|32"]
