"""The `idem` command line: the main command twice gives the same summary; embedded services when none are set."""

import json
import os
import re
import shlex
import subprocess
import sys
import signal
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from idem_platform import partitions
from idem_platform.storage import ledger
from idem_platform_tests.cli_runs import BIN, run


def summary(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("partition "))
    return [line for line in lines[start + 1:] if re.match(r"\d{4}-\d{2}-\d{2} ", line)]


@pytest.mark.slow
def test_idem_run_twice_prints_identical_rows_and_fingerprints(cli_env):
    first = run([str(BIN / "idem"), "run", "--days", "2"], cli_env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run([str(BIN / "idem"), "run", "--days", "2"], cli_env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert summary(first.stdout) == summary(second.stdout)
    assert len(summary(first.stdout)) == 6  # 2 days x (raw_people, people, people_search)
    assert "this run changed 6 of 6 partitions" in first.stdout
    assert "this run changed 0 of 6 partitions" in second.stdout
    people_fp = {line.split()[0]: line.split()[-1] for line in summary(first.stdout) if " people " in line}
    search_fp = {line.split()[0]: line.split()[-1] for line in summary(first.stdout) if " people_search " in line}
    assert people_fp == search_fp  # the same content hashes the same in PostgreSQL and in the index
    assert "make dev" in second.stdout
    with psycopg.connect(cli_env["IDEM_PG_DSN"]) as conn:
        counts = conn.execute(f'SELECT count(*) FROM "{cli_env["IDEM_PG_SCHEMA"]}".people GROUP BY partition_date').fetchall()
    assert counts == [(1000,), (1000,)]
    history = json.loads(run([str(BIN / "idem"), "ledger", "people", "--json"], cli_env).stdout)
    mine = [h for h in history if h["location"].startswith(cli_env["IDEM_PG_SCHEMA"] + ".")]
    assert [h["changed"] for h in mine] == [True, True, False, False]
    # The year-index layout already: `idem search-migrate` finds the search assets and has nothing to move.
    migrated = run([str(BIN / "idem"), "search-migrate", "-m", "idem_platform.definitions"], cli_env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "people_search: moved 0 day(s) into period indices; physical indices 1 -> 1" in migrated.stdout


@pytest.mark.slow
def test_idem_run_summary_shows_what_this_run_wrote_on_a_shared_ledger(cli_env):
    """Another deployment shares the ledger and writes the same assets into stores of its own: its rows of the
    same days are the newest (ids above any this run gets, as if it published them after this run). The summary
    shows this run's rows, never theirs."""
    days = partitions.last_n_days(2)
    elsewhere = [("raw_people", "lake"), ("people", "postgres"), ("people_search", "elasticsearch")]
    with psycopg.connect(cli_env["IDEM_PG_DSN"]) as conn:
        ledger.ensure_ledger(conn)
        for n, ((asset, sink), day) in enumerate((a, d) for a in elsewhere for d in days):
            conn.execute(
                """INSERT INTO idem.ledger (id, asset, partition, sink, store, location, run_id, row_count, fingerprint,
                                            changed)
                   VALUES (%s, %s, %s, %s, %s, 'elsewhere', 'run-elsewhere', 7, 'fp-elsewhere', true)""",
                (10**15 + n, asset, day, sink, f"elsewhere.{asset}"),
            )
    try:
        result = run([str(BIN / "idem"), "run", "--days", "2"], cli_env)
    finally:
        with psycopg.connect(cli_env["IDEM_PG_DSN"]) as conn:
            conn.execute("DELETE FROM idem.ledger WHERE run_id = 'run-elsewhere'")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = summary(result.stdout)
    assert len(rows) == 6, result.stdout  # 2 days x (raw_people, people, people_search), this run's
    assert not [line for line in rows if "fp-elsewhere" in line], result.stdout
    assert "of 6 partitions" in result.stdout


@pytest.mark.slow
def test_idem_up_starts_embedded_postgres_when_no_server_is_configured(tmp_path):
    if os.environ.get("IDEM_ES_URL"):
        pytest.skip("checks the local defaults; IDEM_ES_URL names a cluster")
    env = {k: v for k, v in os.environ.items() if k not in ("IDEM_PG_DSN", "DAGSTER_HOME", "IDEM_ES_URL")}
    env["IDEM_STATE_DIR"] = str(tmp_path / "state")
    done = run([str(BIN / "idem"), "up"], env)
    pgdata = tmp_path / "state" / "postgres"
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "embedded server (IDEM_PG_DSN unset)" in done.stdout
        assert "NOT persisted" in done.stdout
        search = (tmp_path / "state" / "search.url").read_text()
        assert urllib.request.urlopen(search, timeout=5).status == 200
        dsn = (tmp_path / "state" / "postgres.dsn").read_text().strip()
        yaml = (tmp_path / "state" / "dagster_home" / "dagster.yaml").read_text()
        assert "postgres_url" in yaml and "IDEM_PG_DSN" in yaml
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone()[0]  # instance migrated
        # Another shell, elsewhere, with only what `idem up` printed, finds the same services.
        [export] = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("export ")]
        exported = dict(shlex.split(part)[0].split("=", 1) for part in shlex.split(export[len("export "):]))
        assert set(exported) == {"IDEM_STATE_DIR", "IDEM_PG_DSN", "IDEM_ES_URL", "DAGSTER_HOME"}
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        other_shell = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **exported}
        probe = ("from idem_platform import ElasticsearchResource, PostgresResource\n"
                 "print(ElasticsearchResource().client().info()['version']['number'])\n"
                 "with PostgresResource().connect() as c: print(c.execute('SELECT 1').fetchone()[0])")
        found = subprocess.run([sys.executable, "-c", probe], env=other_shell, cwd=elsewhere, capture_output=True, text=True)
        assert found.returncode == 0 and found.stdout.split()[-1] == "1", found.stderr[-2000:]
    finally:
        search_pid = tmp_path / "state" / "search.pid"
        if search_pid.exists():
            os.kill(int(search_pid.read_text()), signal.SIGTERM)
        pid_file = pgdata / "postmaster.pid"
        if pid_file.exists():
            pid = int(Path(pid_file).read_text().split()[0])
            os.kill(pid, signal.SIGINT)  # fast shutdown
            for _ in range(50):
                if not pid_file.exists():
                    break
                time.sleep(0.1)
