"""Per-day check status as the UI's check Partitions view computes it (issue 19).

The view shows a day passed or failed only while its latest check evaluation targets the day's latest
materialization (`AssetCheckPartitionInfo.is_current`); these tests read exactly that from the instance:

- after a 3-day range run, each day's checks are passed and current;
- an out-of-band edit, then a re-check of the day with `recheck_job` (no re-materialization), turns that day's
  `fingerprint_matches_ledger` failed with verdict `drifted`; `idem verify`'s verdicts land the same way;
- a repairing run makes it passed again;
- a checks run without partitions (the Checks tab's "Execute all") succeeds and re-checks the published days.
"""

import dagster as dg
import pandas as pd
import psycopg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from idem_platform import idem_definitions
from idem_platform.check_records import record_verdicts
from idem_platform.pipelines.people import people, raw_people
from idem_platform.verification import verify_partitions

DAYS = ["2026-01-05", "2026-01-06", "2026-01-07"]
DRIFT = dg.AssetCheckKey(people.key, "fingerprint_matches_ledger")
ROWS = dg.AssetCheckKey(people.key, "row_count_matches_upstream")


@pytest.fixture
def defs(store_resources):
    return idem_definitions(assets=[raw_people, people], resources=store_resources)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def status(instance, check_key) -> dict[str, tuple[str, bool]]:
    """day -> (latest execution status, targets the day's latest materialization)."""
    infos = instance.event_log_storage.get_asset_check_partition_info([check_key])
    return {i.partition_key: (i.latest_execution_status.value, i.is_current) for i in infos if i.partition_key}


def materialize_range(defs, instance, days=DAYS):
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    return dg.materialize([*defs.assets, *defs.asset_checks], instance=instance, tags=tags, resources=defs.resources,
                          run_config={"ops": {"raw_people": {"config": {"rows_per_day": 50}}}})


def recheck(defs, instance, day: str):
    return defs.resolve_job_def("recheck_job").execute_in_process(instance=instance, partition_key=day)


PASSED = (AssetCheckExecutionRecordStatus.SUCCEEDED.value, True)
FAILED = (AssetCheckExecutionRecordStatus.FAILED.value, True)


def drift_metadata(instance, day: str) -> dict:
    records = instance.event_log_storage.get_asset_check_execution_history(DRIFT, limit=50)
    latest = next(r for r in records if r.partition == day)
    return {k: v.value for k, v in latest.event.dagster_event.event_specific_data.metadata.items()}


def test_range_run_recheck_verify_and_repair_as_the_partitions_view_sees_them(defs, instance, pg_dsn):
    assert materialize_range(defs, instance).success
    assert status(instance, DRIFT) == {d: PASSED for d in DAYS}
    assert status(instance, ROWS) == {d: PASSED for d in DAYS}
    # the materializing run's checks take what its own publish proved; a re-check reads the sink
    assert drift_metadata(instance, DAYS[0])["source"].startswith("this run's publish")

    with psycopg.connect(pg_dsn) as conn:  # behind the pipeline's back
        conn.execute("UPDATE warehouse.people SET email = 'x@y.example' WHERE partition_date = %s "
                     "AND person_id = (SELECT min(person_id) FROM warehouse.people WHERE partition_date = %s)",
                     (DAYS[1], DAYS[1]))
    result = recheck(defs, instance, DAYS[1])
    assert result.success  # a check that fails is a finding, not a failed run
    assert status(instance, DRIFT) == {DAYS[0]: PASSED, DAYS[1]: FAILED, DAYS[2]: PASSED}
    assert drift_metadata(instance, DAYS[1])["verdict"] == "drifted"

    recheck(defs, instance, DAYS[0])  # and an untouched day stays passed
    assert status(instance, DRIFT)[DAYS[0]] == PASSED
    assert "source" not in drift_metadata(instance, DAYS[0])

    # idem verify's verdicts are recorded the same way (here on a day that did not drift: passed, "identical")
    verdicts = verify_partitions(defs, "people", [DAYS[2]])
    assert [v.status for v in verdicts] == ["identical"]
    record_verdicts(instance, verdicts)
    assert status(instance, DRIFT)[DAYS[2]] == PASSED and drift_metadata(instance, DAYS[2])["verdict"] == "identical"
    [drifted] = verify_partitions(defs, "people", [DAYS[1]])
    record_verdicts(instance, [drifted])
    assert status(instance, DRIFT)[DAYS[1]] == FAILED and drift_metadata(instance, DAYS[1])["verdict"] == "drifted"
    assert drift_metadata(instance, DAYS[1])["rows_changed"] == 1

    assert materialize_range(defs, instance, [DAYS[1]]).success  # the repairing run
    assert status(instance, DRIFT) == {d: PASSED for d in DAYS}


def test_checks_run_without_partitions_checks_the_published_days(defs, instance):
    """The Checks tab's "Execute all" launches the checks without a partition: they must not fail the run."""
    assert materialize_range(defs, instance, DAYS[:2]).success
    checks = dg.AssetSelection.checks_for_assets(raw_people, people)
    result = dg.materialize(list(defs.assets) + list(defs.asset_checks), selection=checks,
                            resources=defs.resources, instance=instance)
    assert result.success
    evaluations = [e for e in result.get_asset_check_evaluations() if e.partition]
    assert {(e.asset_key.to_user_string(), e.partition) for e in evaluations if e.check_name == DRIFT.name} == {
        ("raw_people", d) for d in DAYS[:2]} | {("people", d) for d in DAYS[:2]}
    assert all(e.passed for e in evaluations)
    assert status(instance, DRIFT) == {d: PASSED for d in DAYS[:2]}


def test_recheck_job_is_partitioned_and_the_drift_schedule_requests_the_recent_days(defs):
    """The UI offers a partition picker only for a partitioned job, and refuses a schedule's partitioned run
    requests for one that is not."""
    from idem_platform import settings

    job = defs.resolve_job_def("recheck_job")
    assert job.partitions_def == people.partitions_def
    schedule = defs.resolve_schedule_def("drift_check_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(scheduled_execution_time=pd.Timestamp("2026-01-10T05:00Z").to_pydatetime(),
                                   repository_def=defs.get_repository_def()) as ctx:
        requests = schedule.evaluate_tick(ctx).run_requests
    days = settings.current().recheck_days
    assert [r.partition_key for r in requests] == [d.strftime("%Y-%m-%d") for d in pd.date_range(end="2026-01-09", periods=days)]
