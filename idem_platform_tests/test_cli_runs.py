"""`dagster asset materialize` subprocesses on a dagster-postgres instance: concurrency, ranges, bad keys."""

import psycopg
import pytest

from idem_platform_tests.cli_runs import materialize_command, run, start

DAY = "2026-01-05"


def people_counts(env):
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        return conn.execute(
            f'SELECT partition_date::text, count(*), count(DISTINCT person_id) FROM "{env["IDEM_PG_SCHEMA"]}".people GROUP BY 1 ORDER BY 1'
        ).fetchall()


def run_ids_in_instance(env):
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        return {r[0] for r in conn.execute("SELECT run_id FROM runs").fetchall()}


def ledger(env, asset="people"):
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        return conn.execute(
            "SELECT partition, fingerprint, run_id FROM idem.ledger WHERE asset = %s AND location LIKE %s ORDER BY id",
            (asset, f'{env["IDEM_PG_SCHEMA"]}.%'),
        ).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("writers", [3, 10])
def test_concurrent_cli_runs_of_one_partition_end_with_one_copy(cli_env, writers):
    procs = [start(materialize_command("raw_people,people", partition=DAY), cli_env) for _ in range(writers)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, outputs[0][-3000:]
    assert people_counts(cli_env) == [(DAY, 1000, 1000)]
    entries = ledger(cli_env)
    assert len(entries) == writers and len({fp for _, fp, _ in entries}) == 1
    # every run is a row of the dagster-postgres instance's runs table
    assert {run_id for _, _, run_id in entries} <= run_ids_in_instance(cli_env)


@pytest.mark.slow
def test_partition_range_run_publishes_all_30_days_in_one_run(cli_env):
    done = run(materialize_command("raw_people,people", partition_range="2026-02-01...2026-03-02"), cli_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = people_counts(cli_env)
    assert len(counts) == 30 and all(n == distinct == 1000 for _, n, distinct in counts)
    entries = ledger(cli_env)
    assert len(entries) == 30 and len({run_id for _, _, run_id in entries}) == 1
    assert entries[0][2] in run_ids_in_instance(cli_env)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["2026-13-45", "1999-01-01"])
def test_bad_partition_key_fails_naming_it(cli_env, key):
    done = run(materialize_command("raw_people,people", partition=key), cli_env)
    assert done.returncode != 0
    assert key in done.stdout + done.stderr
    with psycopg.connect(cli_env["IDEM_PG_DSN"]) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (f'{cli_env["IDEM_PG_SCHEMA"]}.people',)).fetchone()[0] is None
