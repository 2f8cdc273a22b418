"""Scale-out on Celery: two workers writing two different days at once, with a reader process polling throughout.

Set up as docs/operating.md tells an operator (and as test_celery.py does): the instance file
deploy/celery/dagster.yaml, two `deploy/celery/worker.sh NAME` workers, each on a queue of its own (each run sends
its steps to one of them, `IDEM_CELERY_QUEUE`, so both workers write, whatever the load on the machine), the broker
of the machine (RabbitMQ at 127.0.0.1:5672; Redis at 127.0.0.1:6379 too in the full matrix). Both days are first
published in-process with 150 people each; then two `dagster asset materialize -f deploy/celery/definitions.py
--select raw_people,people --partition DAY` runs start together, one per day, with 200 people a day, and their
steps execute on the workers. A reader process samples the lake files (raw_people) and the warehouse table
(people) of both days throughout: each sample must be the old day or the new one, whole. The publish windows are
each run's steps (from its first STEP_START to its last STEP_SUCCESS in the event log), and the two must overlap.

Checks: both runs succeed and both workers executed steps; each day of each asset is exactly what an
in-process computation of 200 people gives (`generate_people`, `clean_people`, fingerprinted), and what the
ledger's latest row names; the runs left one ledger row per (asset, day), in unbroken chains after the
baseline's; nothing left behind.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from idem_platform.pipelines.people import clean_people, generate_people, people, raw_people
from idem_platform.resources import LakeResource, PostgresResource
from idem_platform.storage.fingerprint import partition_digests
from idem_platform.storage.lake_store import LakePartitionIOManager
from idem_platform.storage.postgres_store import PostgresPartitionIOManager
from idem_platform_tests.cli_runs import BIN
from idem_platform_tests.reliability.dagster_runs import failure_message, run_together
from idem_platform_tests.reliability.readers import Expectation, Reader
from idem_platform_tests.reliability.scorecard import full_matrix
from idem_platform_tests.reliability.stores import (
    StoreSpec,
    declaration,
    ledger_chain_breaks,
    stale_publishes,
    visible,
)
from idem_platform_tests.test_celery import BROKERS, CELERY_DEFINITIONS, broker_answers, celery_step_workers
from idem_platform_tests.ui_helpers import REPO, celery_workers, delete_celery_queue

OLD_ROWS, NEW_ROWS = 150, 200
DAYS = {"rabbitmq": ["2026-03-10", "2026-03-11"], "redis": ["2026-03-17", "2026-03-18"]}  # days of their own


def brokers() -> list[str]:
    return sorted(BROKERS) if full_matrix() else ["rabbitmq"]


def expected_digests(day: str) -> dict:
    """What each asset must publish for `day` with NEW_ROWS people, computed in this process."""
    raw_decl, people_decl = declaration("raw_people"), declaration("people")
    raw = raw_decl.coerce(generate_people(day, NEW_ROWS))
    return {"raw_people": partition_digests(raw, raw_decl, [day])[day],
            "people": partition_digests(people_decl.coerce(clean_people(raw)), people_decl, [day])[day]}


def step_span(dsn: str, run_id: str) -> tuple[float, float]:
    """From the run's first STEP_START to its last STEP_SUCCESS (event log timestamps, epoch seconds)."""
    with psycopg.connect(dsn) as conn:
        first, last = conn.execute(
            "SELECT min(extract(epoch FROM timestamp)) FILTER (WHERE dagster_event_type = 'STEP_START'),"
            " max(extract(epoch FROM timestamp)) FILTER (WHERE dagster_event_type = 'STEP_SUCCESS')"
            " FROM event_logs WHERE run_id = %s", (run_id,)).fetchone()
    return float(first), float(last)


@pytest.mark.slow
@pytest.mark.parametrize("broker", brokers())
def test_two_celery_workers_write_two_days_at_once(broker, rel_cli_env, scorecard, tmp_path):
    host, port, broker_url, backend_url = BROKERS[broker]
    if not broker_answers(host, port):
        pytest.fail(f"{broker} is not answering on {host}:{port}; the machine starts it before every session and CI")
    days = DAYS[broker]
    dsn, schema, lake = rel_cli_env["IDEM_PG_DSN"], rel_cli_env["IDEM_PG_SCHEMA"], rel_cli_env["IDEM_LAKE_DIR"]
    common = {"dsn": dsn, "key": "person_id", "gen_column": None}
    specs = [StoreSpec("lake", asset="raw_people", lake_root=lake, declaration="raw_people", **common),
             StoreSpec("postgres", asset="people", schema=schema, declaration="people", **common)]

    # The old content of both days, in-process (the same IO managers the code location builds).
    postgres = PostgresResource(dsn=dsn)
    resources = {"lake_io": LakePartitionIOManager(postgres=postgres, lake=LakeResource(root=lake)),
                 "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema=schema)}
    for day in days:
        baseline = dg.materialize([raw_people, people], partition_key=day, resources=resources,
                                  run_config={"ops": {"raw_people": {"config": {"rows_per_day": OLD_ROWS}}}},
                                  instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        assert baseline.success, failure_message(baseline)[-3000:]
    baseline_runs = {e.run_id for spec in specs for e in spec.ledger()}

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "deploy" / "celery" / "dagster.yaml", home / "dagster.yaml")  # the documented file
    queue = f"idem-rel-{uuid.uuid4().hex[:10]}"
    env = {**rel_cli_env, "DAGSTER_HOME": str(home), "IDEM_PEOPLE_PER_DAY": str(NEW_ROWS),
           "IDEM_CELERY_BROKER": broker_url, "IDEM_CELERY_BACKEND": backend_url, "IDEM_CELERY_QUEUE": queue}
    env.setdefault("IDEM_VENV", sys.prefix)  # worker.sh's virtualenv: this one (a worktree has no .venv of its own)
    names = [f"{queue}-a", f"{queue}-b"]
    # Run i sends its steps to worker i's queue. Each worker pauses its lake write (IDEM_FAULT_MODE=pause, after the
    # audit: lock held, file staged) until both are there: the two days are written at once, whatever the load.
    pauses = [tmp_path / f"resume-{name[-1]}" for name in names]
    envs = [{**env, "IDEM_CELERY_QUEUE": name, "IDEM_FAULT": "lake:after_audit", "IDEM_FAULT_MODE": "pause",
             "IDEM_FAULT_PAUSE": str(pause), "IDEM_FAULT_ASSET": "raw_people"} for name, pause in zip(names, pauses)]

    def release_together() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all(Path(f"{p}.reached").exists() for p in pauses):
            time.sleep(0.05)
        for pause in pauses:
            pause.touch()
    commands = [[str(BIN / "dagster"), "asset", "materialize", "-f", str(CELERY_DEFINITIONS),
                 "--select", "raw_people,people", "--partition", day] for day in days]
    accepted = {day: [{"*": OLD_ROWS}, {"*": NEW_ROWS}] for day in days}

    with scorecard.scenario(f"concurrency/celery/{broker}/2_workers_2_days", "concurrency", "postgres+lake") as sc:
        try:
            with celery_workers(envs, names, tmp_path):
                with Reader(specs, Expectation(accepted), process=True) as reader:
                    releaser = threading.Thread(target=release_together, daemon=True)
                    releaser.start()
                    runs = run_together(commands, envs)
                    releaser.join()
                    assert all(Path(f"{p}.reached").exists() for p in pauses), "a worker never reached its lake write"
                    sc.add_reader(reader.stop())
        finally:
            for name in names:
                delete_celery_queue(broker_url, name)
        for run in runs:
            for line in run.deadlock_lines():
                sc.writer_error(line)
        failed = [run.output[-3000:] for run in runs if run.returncode != 0]
        assert not failed, failed[0]

        entries = [e for spec in specs for e in spec.ledger()]
        celery_runs = {e.run_id for e in entries} - baseline_runs
        assert len(celery_runs) == 2, entries
        executed = {}
        for run_id in celery_runs:
            steps, succeeded = celery_step_workers(env, run_id)
            assert set(steps) == succeeded and {"raw_people", "people"} <= succeeded, (steps, succeeded)
            executed.update({(run_id, step): worker.split("@")[0] for step, worker in steps.items()
                             if step in ("raw_people", "people")})  # the writes (the checks are steps too)
        assert set(executed.values()) == set(names), f"steps per worker: {executed}"
        sc.note = "steps per worker: " + ", ".join(
            f"{day} {step} on {worker[-1]}" for (run_id, step), worker in sorted(executed.items())
            for day in {e.partition for e in entries if e.run_id == run_id})

        for spec in specs:
            sc.record_stale(stale_publishes(spec, days))
            published = visible(spec, days)
            mine = [e for e in spec.ledger() if e.partition in days]
            for day in days:
                assert published[day] == expected_digests(day)[spec.asset], (spec.asset, day, published[day])
                rows = [e for e in mine if e.partition == day]
                assert [e.run_id in celery_runs for e in rows] == [False, True], rows  # baseline, then one run
                assert rows[-1].row_count == NEW_ROWS and rows[-1].changed
            assert ledger_chain_breaks(mine) == []
            assert spec.leftovers(days) == []
        # The publish windows: each run's steps, on the workers (its first STEP_START to its last STEP_SUCCESS in the
        # event log, moved from the wall clock to the readers' monotonic one).
        to_monotonic = time.monotonic() - time.time()
        spans = [step_span(dsn, run_id) for run_id in sorted(celery_runs)]
        for start, end in spans:
            assert runs[0].start - 1 < start + to_monotonic < end + to_monotonic < max(r.end for r in runs) + 1
            sc.window(start + to_monotonic, end + to_monotonic)
        overlap = min(b for _, b in spans) - max(a for a, _ in spans)
        sc.note += f"; the two days' steps overlapped {overlap:.1f} s"
        assert overlap > 0, f"the two runs' steps never ran at the same time: {spans}"
