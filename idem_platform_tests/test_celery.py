"""Scale-out on Celery: a range run whose steps execute on two worker processes ends in the same state as the
same range run in-process.

The Celery side is exactly what docs/operating.md tells an operator to run: the instance file
deploy/celery/dagster.yaml, two `deploy/celery/worker.sh NAME` workers, and
`dagster asset materialize -f deploy/celery/definitions.py --partition-range A...B`. The broker is the machine's
RabbitMQ (127.0.0.1:5672, rpc:// results) or Redis (127.0.0.1:6379); each test uses a queue of its own, so
concurrent test sessions never execute each other's steps.

"Same end state" is compared per (asset, day): the ledger's row count and fingerprint, the rows of the
warehouse table and of the lake files.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from dagster import EventLogEntry
from dagster._serdes import deserialize_value
from psycopg import sql

from idem_platform_tests.cli_runs import BIN, run
from idem_platform_tests.ui_helpers import REPO, celery_workers, delete_celery_queue

FIRST, LAST = "2026-02-02", "2026-02-04"
DAYS = ["2026-02-02", "2026-02-03", "2026-02-04"]
ASSETS = ("raw_people", "people")
CELERY_DEFINITIONS = REPO / "deploy" / "celery" / "definitions.py"
BROKERS = {
    "rabbitmq": ("127.0.0.1", 5672, "pyamqp://guest:guest@127.0.0.1:5672//", "rpc://"),
    "redis": ("127.0.0.1", 6379, "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"),
}


def materialize_range(definitions: list[str], env: dict[str, str], *extra: str):
    cmd = [str(BIN / "dagster"), "asset", "materialize", *definitions, "--select", ",".join(ASSETS),
           "--partition-range", f"{FIRST}...{LAST}", *extra]
    return run(cmd, env, timeout=600)


def end_state(env: dict[str, str]) -> dict:
    """Ledger rows, warehouse rows and lake rows of this environment's schema and lake, for the range."""
    schema, lake = env["IDEM_PG_SCHEMA"], Path(env["IDEM_LAKE_DIR"])
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        ledger = conn.execute(
            "SELECT asset, partition, row_count, fingerprint, changed, run_id FROM idem.ledger"
            " WHERE (location LIKE %s OR location LIKE %s) AND partition = ANY(%s) ORDER BY asset, partition, id",
            (f"{schema}.%", f"{lake}%", DAYS),
        ).fetchall()
        people = conn.execute(
            sql.SQL("SELECT * FROM {}.people ORDER BY partition_date, person_id").format(sql.Identifier(schema))
        ).fetchall()
    raw = {day: pd.read_parquet(lake / "raw_people" / f"{day}.parquet") for day in DAYS}
    return {
        # (`changed` is left out: the ledger is per database, and the reference run shares this one)
        "ledger": {(a, p): (rows, fp) for a, p, rows, fp, _changed, _ in ledger},
        "publishes": len(ledger),
        "run_ids": {run_id for *_, run_id in ledger},
        "people": people,
        "raw_people": raw,
    }


@pytest.fixture(scope="module")
def in_process_state(instance_env, tmp_path_factory) -> dict:
    """The reference: the same range as one run of the platform's own code location, every step in the CLI's
    process (`dagster asset materialize` runs in-process: "Executing steps in process")."""
    tmp = tmp_path_factory.mktemp("in_process")
    env = {**instance_env, "IDEM_PG_SCHEMA": f"wh_{uuid.uuid4().hex[:8]}", "IDEM_LAKE_DIR": str(tmp / "lake"),
           "IDEM_STATE_DIR": str(tmp / "state")}
    started = time.monotonic()
    done = materialize_range(["-m", "idem_platform.definitions"], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Executing steps in process" in done.stdout + done.stderr
    print(f"in-process range run: {time.monotonic() - started:.1f}s")
    return end_state(env)


def celery_step_workers(env: dict[str, str], run_id: str) -> tuple[dict[str, str], set[str]]:
    """{step key: the Celery worker that executed it} and the steps that succeeded, from the run's event log."""
    executed, succeeded = {}, set()
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        rows = conn.execute(
            "SELECT event FROM event_logs WHERE run_id = %s AND dagster_event_type IN ('ENGINE_EVENT', 'STEP_SUCCESS')",
            (run_id,),
        ).fetchall()
    for (raw,) in rows:
        entry = deserialize_value(raw, EventLogEntry)
        event = entry.dagster_event
        if event.event_type_value == "STEP_SUCCESS":
            succeeded.add(entry.step_key)
        elif "Celery worker" in (event.event_specific_data.metadata or {}):
            executed[entry.step_key] = event.event_specific_data.metadata["Celery worker"].value
    return executed, succeeded


def broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_range_run_on_two_celery_workers_matches_in_process_run(broker, cli_env, in_process_state, tmp_path):
    host, port, broker_url, backend_url = BROKERS[broker]
    if not broker_answers(host, port):
        pytest.fail(f"{broker} is not answering on {host}:{port}; the machine starts it before every session and CI")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "deploy" / "celery" / "dagster.yaml", home / "dagster.yaml")  # the documented file
    queue = f"idem-test-{uuid.uuid4().hex[:10]}"
    env = {**cli_env, "DAGSTER_HOME": str(home), "IDEM_CELERY_BROKER": broker_url,
           "IDEM_CELERY_BACKEND": backend_url, "IDEM_CELERY_QUEUE": queue}
    names = [f"{queue}-a", f"{queue}-b"]

    started = time.monotonic()
    try:
        with celery_workers(env, names, tmp_path):
            workers_ready = time.monotonic() - started
            done = materialize_range(["-f", str(CELERY_DEFINITIONS)], env)
            assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
            run_seconds = time.monotonic() - started - workers_ready
        stop_seconds = time.monotonic() - started - workers_ready - run_seconds
    finally:
        delete_celery_queue(broker_url, queue)
    print(f"{broker}: workers ready {workers_ready:.1f}s, range run {run_seconds:.1f}s, workers stopped {stop_seconds:.1f}s")

    state = end_state(env)
    # one run published every (asset, day) of the range exactly once
    assert state["publishes"] == len(ASSETS) * len(DAYS) and len(state["run_ids"]) == 1
    (run_id,) = state["run_ids"]
    assert "Submitting celery task" in done.stdout + done.stderr and queue in done.stdout + done.stderr

    # every step ran on one of the two workers, and both took part
    executed, succeeded = celery_step_workers(env, run_id)
    assert {"raw_people", "people"} <= succeeded
    assert set(executed) == succeeded, f"steps not executed by a Celery worker: {succeeded - set(executed)}"
    hosts = {worker.split("@")[0] for worker in executed.values()}
    assert hosts == set(names), f"steps per worker: {executed}"

    # the same end state as the in-process run
    reference = in_process_state
    assert set(state["ledger"]) == {(a, d) for a in ASSETS for d in DAYS}
    assert state["ledger"] == reference["ledger"]
    assert all(rows == 1000 for rows, _ in state["ledger"].values())
    assert state["people"] == reference["people"] and len(state["people"]) == 3000
    for day in DAYS:
        pd.testing.assert_frame_equal(state["raw_people"][day], reference["raw_people"][day])
