"""Provable idempotency: idem verify's verdicts, the generated checks, and DataVersion-based staleness."""

import pandas as pd
import psycopg
import pytest
import dagster as dg
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from idem_platform.pipelines.people import people, raw_people
from idem_platform.checks import checks_for
from idem_platform.verification import exit_code, verify_partitions
from idem_platform_tests.cli_runs import BIN, materialize_command, run

DAY = "2026-01-05"
ASSETS = [raw_people, people]


@pytest.fixture
def defs(store_resources):
    return dg.Definitions(assets=ASSETS, asset_checks=checks_for(ASSETS), resources=store_resources)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def materialize(defs, instance, *, config=None, selection=None, partition=DAY):
    return dg.materialize(
        [*ASSETS, *checks_for(ASSETS)], selection=selection, partition_key=partition, resources=defs.resources,
        instance=instance, run_config={"ops": {"raw_people": {"config": config}}} if config else None,
    )


def check_results(result):
    return {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def run_checks_result(defs, instance):
    """Only the checks, for the day (a checks-only run carries the partition as a tag, as the UI's does)."""
    return dg.materialize(
        [*ASSETS, *checks_for(ASSETS)], selection=dg.AssetSelection.checks_for_assets(*ASSETS),
        tags={"dagster/partition": DAY}, resources=defs.resources, instance=instance,
    )


def run_checks(defs, instance):
    return check_results(run_checks_result(defs, instance))


ALL_PASS = {
    ("raw_people", "unique_key"): True, ("raw_people", "fingerprint_matches_ledger"): True,
    ("people", "fingerprint_matches_ledger"): True,  # no unique_key: the table's primary key enforces it
    ("people", "row_count_matches_upstream"): True,
}


def test_identical_after_a_normal_run_and_checks_pass(defs, instance):
    result = materialize(defs, instance)
    assert check_results(result) == ALL_PASS
    for asset in ("raw_people", "people"):
        [verdict] = verify_partitions(defs, asset, [DAY])
        assert verdict.status == "identical"
        assert verdict.recomputed == verdict.published == verdict.in_sink
    # verifying published nothing: one ledger row per asset
    with psycopg.connect(defs.resources["postgres"].dsn) as conn:
        assert conn.execute("SELECT count(*) FROM idem.ledger").fetchone()[0] == 2


def test_differs_with_the_right_counts_when_the_generator_config_changes(defs, instance):
    materialize(defs, instance)
    [verdict] = verify_partitions(defs, "raw_people", [DAY], {"ops": {"raw_people": {"config": {"rows_per_day": 900}}}})
    assert verdict.status == "differs" and exit_code([verdict]) == 1
    assert (len(verdict.added), len(verdict.removed), len(verdict.changed)) == (0, 100, 0)
    assert verdict.recomputed.rows == 900 and verdict.in_sink.rows == 1000
    [more] = verify_partitions(defs, "raw_people", [DAY], {"ops": {"raw_people": {"config": {"rows_per_day": 1010}}}})
    assert (more.status, len(more.added), len(more.removed)) == ("differs", 10, 0)
    assert run_checks(defs, instance) == ALL_PASS  # nothing was published by verifying


def test_drifted_after_a_row_is_edited_directly_in_postgres(defs, instance, pg_dsn):
    materialize(defs, instance)
    with psycopg.connect(pg_dsn) as conn:
        [(person,)] = conn.execute("SELECT person_id FROM warehouse.people ORDER BY person_id LIMIT 1").fetchall()
        conn.execute("UPDATE warehouse.people SET email = 'someone@else.example' WHERE person_id = %s", (person,))
    [verdict] = verify_partitions(defs, "people", [DAY])
    assert verdict.status == "drifted" and exit_code([verdict]) == 2
    assert verdict.changed == [person] and not verdict.added and not verdict.removed
    assert run_checks(defs, instance) == {**ALL_PASS, ("people", "fingerprint_matches_ledger"): False}


def test_drifted_lake_file_with_duplicates_fails_key_fingerprint_and_row_count_checks(defs, instance, lake):
    materialize(defs, instance)
    path = lake.asset_dir("raw_people") / f"{DAY}.parquet"
    frame = pd.read_parquet(path)
    pd.concat([frame, frame.head(3)], ignore_index=True).to_parquet(path, index=False)
    [verdict] = verify_partitions(defs, "raw_people", [DAY])
    assert verdict.status == "drifted" and verdict.in_sink.rows == 1003
    results = run_checks(defs, instance)
    assert results[("raw_people", "unique_key")] is False
    assert results[("raw_people", "fingerprint_matches_ledger")] is False
    assert results[("people", "row_count_matches_upstream")] is True  # the ledger's raw count is still 1,000


def test_row_count_check_fails_when_downstream_lost_rows(defs, instance, pg_dsn):
    materialize(defs, instance)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DELETE FROM warehouse.people WHERE ctid IN (SELECT ctid FROM warehouse.people LIMIT 5)")
    results = run_checks(defs, instance)
    assert results[("people", "row_count_matches_upstream")] is False
    assert results[("people", "fingerprint_matches_ledger")] is False
    [verdict] = verify_partitions(defs, "people", [DAY])
    assert verdict.status == "drifted" and len(verdict.added) == 5  # a rerun would add the 5 back


def test_unchanged_upstream_rerun_leaves_downstream_fresh_and_a_changed_one_makes_it_stale(defs, instance):
    materialize(defs, instance)
    def people_status():
        return get_stale_status_resolver(instance, ASSETS).get_status(dg.AssetKey("people"), DAY)

    assert people_status() == StaleStatus.FRESH
    materialize(defs, instance, selection=[raw_people])  # same content, same fingerprint, same DataVersion
    assert people_status() == StaleStatus.FRESH
    materialize(defs, instance, selection=[raw_people], config={"rows_per_day": 999})
    assert people_status() == StaleStatus.STALE


@pytest.mark.slow
def test_idem_verify_cli_exit_codes(cli_env):
    assert run(materialize_command("raw_people,people", partition=DAY), cli_env).returncode == 0
    verify = [str(BIN / "idem"), "verify"]
    ok = run([*verify, "people", "--partition", DAY], cli_env)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"people {DAY}: identical"), ok.stderr[-2000:]
    differs = run([*verify, "raw_people", "--partition", DAY, "--config-json",
                   '{"ops": {"raw_people": {"config": {"rows_per_day": 990}}}}'], cli_env)
    assert differs.returncode == 1 and "remove 10" in differs.stdout
    with psycopg.connect(cli_env["IDEM_PG_DSN"]) as conn:
        conn.execute(f'UPDATE "{cli_env["IDEM_PG_SCHEMA"]}".people SET age = age + 1 WHERE ctid IN '
                     f'(SELECT ctid FROM "{cli_env["IDEM_PG_SCHEMA"]}".people LIMIT 1)')
    drifted = run([*verify, "people", "--partition", DAY, "--json"], cli_env)
    assert drifted.returncode == 2 and '"status": "drifted"' in drifted.stdout
    bad = run([*verify, "people", "--partition", "2026-02-30"], cli_env)
    assert bad.returncode == 3 and "'2026-02-30'" in bad.stderr


@pytest.fixture
def search_defs(store_resources, postgres, es):
    from idem_platform.pipelines.people import people_search
    from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager

    assets = [raw_people, people, people_search]
    resources = {**store_resources, "search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=es, replicas=0)}
    return dg.Definitions(assets=assets, asset_checks=checks_for(assets), resources=resources)


def test_search_index_identical_then_drifted_after_a_document_is_deleted(search_defs, instance, es):
    assets = list(search_defs.assets)
    result = dg.materialize([*assets, *checks_for(assets)], partition_key=DAY, resources=search_defs.resources, instance=instance)
    assert all(check_results(result).values())
    [verdict] = verify_partitions(search_defs, "people_search", [DAY])
    assert verdict.status == "identical" and verdict.in_sink.rows == 1000
    client = es.client()
    hit = client.search(index=f"people_search-{DAY.replace('-', '.')}", size=1, sort=[{"person_id": "asc"}])["hits"]["hits"][0]
    client.delete(index=hit["_index"], id=hit["_id"], refresh=True)
    [verdict] = verify_partitions(search_defs, "people_search", [DAY])
    assert verdict.status == "drifted" and exit_code([verdict]) == 2
    assert verdict.in_sink.rows == 999 and verdict.added == [hit["_source"]["person_id"]]
    checks_only = dg.materialize(
        [*assets, *checks_for(assets)], selection=dg.AssetSelection.checks_for_assets(*assets),
        tags={"dagster/partition": DAY}, resources=search_defs.resources, instance=instance,
    )
    results = check_results(checks_only)
    assert results[("people_search", "fingerprint_matches_ledger")] is False
    assert results[("people_search", "row_count_matches_upstream")] is False
    assert results[("people", "fingerprint_matches_ledger")] is True


@pytest.mark.slow
def test_verify_job_runs_from_dagster_and_fails_on_drift(cli_env, tmp_path):
    assert run(materialize_command("raw_people,people", partition=DAY), cli_env).returncode == 0
    config = tmp_path / "verify.yaml"
    config.write_text(f"ops:\n  verify_partitions_op:\n    config:\n      asset: people\n      partitions: ['{DAY}']\n")
    job = [str(BIN / "dagster"), "job", "execute", "-m", "idem_platform.definitions", "-j", "verify_job", "--config"]
    ok = run([*job, str(config)], cli_env)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    with psycopg.connect(cli_env["IDEM_PG_DSN"]) as conn:
        conn.execute(f'DELETE FROM "{cli_env["IDEM_PG_SCHEMA"]}".people WHERE ctid IN '
                     f'(SELECT ctid FROM "{cli_env["IDEM_PG_SCHEMA"]}".people LIMIT 1)')
    drifted = run([*job, str(config)], cli_env)
    assert drifted.returncode != 0
    assert "1 of 1 partitions drifted from what was published: 2026-01-05 drifted" in drifted.stdout + drifted.stderr


@pytest.mark.parametrize("point", ["after_publish", "after_ledger"])
@pytest.mark.parametrize("asset,sink,downstream", [("raw_people", "lake", "people"),
                                                  ("people_search", "elasticsearch", None)])
def test_a_crash_between_publish_and_confirmation_is_invisible(cli_env, asset, sink, downstream, point):
    """The first publish of a day dies after the lake file / the alias moved, before its ledger intent was
    confirmed: verify says identical with no manual step, and downstream loads the day."""
    upstream = "raw_people,people," if asset == "people_search" else ""
    if upstream:
        assert run(materialize_command(upstream.rstrip(","), partition=DAY), cli_env).returncode == 0
    crashed = run(materialize_command(asset, partition=DAY),
                  {**cli_env, "IDEM_FAULT": f"{sink}:{point}", "IDEM_FAULT_ASSET": asset})
    assert crashed.returncode != 0, crashed.stdout[-2000:]
    with psycopg.connect(cli_env["IDEM_PG_DSN"]) as conn:  # the intent is there, unconfirmed
        confirmed = conn.execute("SELECT confirmed FROM idem.ledger WHERE asset = %s AND partition = %s AND store LIKE %s",
                                 (asset, DAY, f"%{cli_env['IDEM_LAKE_DIR'] if sink == 'lake' else ''}%")).fetchall()
    assert confirmed[-1] == (False,)
    verify = run([str(BIN / "idem"), "verify", asset, "--partition", DAY], cli_env)
    assert (verify.returncode, verify.stdout.strip()) == (0, f"{asset} {DAY}: identical"), verify.stdout + verify.stderr[-2000:]
    if downstream:
        loaded = run(materialize_command(downstream, partition=DAY), cli_env)
        assert loaded.returncode == 0, loaded.stdout[-3000:] + loaded.stderr[-3000:]


def test_a_fingerprint_made_by_another_algorithm_is_reported_as_such_not_as_drift(defs, instance, pg_dsn):
    materialize(defs, instance)
    with psycopg.connect(pg_dsn) as conn:  # a row from before ledger v4 (algorithm 1), its content unchanged
        conn.execute("UPDATE idem.ledger SET fingerprint_algo = NULL WHERE asset = 'people'")
    [same] = verify_partitions(defs, "people", [DAY])
    assert same.status == "identical" and same.published_algorithm == "1"  # both algorithms agree on this content
    with psycopg.connect(pg_dsn) as conn:  # algorithm 1 hashed this content otherwise (e.g. a -0.0 in it)
        conn.execute("UPDATE idem.ledger SET fingerprint = '0123456789abcdef' WHERE asset = 'people'")
    [verdict] = verify_partitions(defs, "people", [DAY])
    assert verdict.status == "algorithm changed" and exit_code([verdict]) == 4
    assert "fingerprint algorithm changed: rerun to re-record" in verdict.describe()
    assert verdict.as_dict()["fingerprint_algorithm"] == {"published": "1", "now": "2"}
    check = next(e for e in run_checks_result(defs, instance).get_asset_check_evaluations()
                 if (e.asset_key.to_user_string(), e.check_name) == ("people", "fingerprint_matches_ledger"))
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # the check says the same
    assert check.metadata["status"].value == "algorithm changed"
    with psycopg.connect(pg_dsn) as conn:  # the same under this algorithm: drift, whatever else is reported
        conn.execute("UPDATE idem.ledger SET fingerprint_algo = '2' WHERE asset = 'people'")
    [drifted] = verify_partitions(defs, "people", [DAY])
    assert drifted.status == "drifted" and exit_code([verdict, drifted]) == 2
    materialize(defs, instance)  # a rerun re-records the partition under this algorithm
    [rerun] = verify_partitions(defs, "people", [DAY])
    assert rerun.status == "identical" and rerun.published_algorithm == "2"
