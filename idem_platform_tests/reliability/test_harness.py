"""The suite checks its own instruments: readers must report the partial, duplicated and lost days they are shown.

A scorecard of zeros only means something if the readers would have seen a non-zero. Each test here builds a bad
state by hand in a real store (a half-replaced day, a day published twice, a deleted day, a day the ledger does not
name) and asserts the judge flags it; and the scorecard's other instruments must count what they are shown: reader
samples inside a publish window (and a fault scenario without one fails), deadlocks a writer failed with or logged,
a writer process's failure. These are not scenarios: they do not report into the session's scorecard.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from idem_platform.storage.schema import PARTITION_COLUMN
from idem_platform_tests.reliability.content import frame_for, state
from idem_platform_tests.reliability.readers import Expectation, Judge, Reader, poll_once
from idem_platform_tests.reliability.scorecard import Scenario, Scorecard, format_scorecard
from idem_platform_tests.reliability.scorecard import main as scorecard_main
from idem_platform_tests.reliability.stores import stale_publishes
from idem_platform_tests.reliability.writers import WriterProcesses, WriteSpec, publish, run_writer

DAY = "2026-04-01"
ACCEPTED = Expectation({DAY: [state("old", 30), state("new", 20)]})


def judged(spec) -> Judge:
    judge, probe = Judge(ACCEPTED), spec.probe()
    try:
        poll_once([probe], judge)
    finally:
        probe.close()
    return judge


def test_complete_days_are_complete(make_store):
    for kind in ("postgres", "lake", "elasticsearch"):
        spec = make_store(kind)
        publish(spec, "old", {DAY: 30}, f"old-{uuid.uuid4()}")
        assert judged(spec).states.keys() == {"complete"}
        publish(spec, "new", {DAY: 20}, f"new-{uuid.uuid4()}")
        judge = judged(spec)
        assert judge.states.keys() == {"complete"} and judge.partial == judge.lost == 0


def test_a_half_replaced_table_day_is_partial(make_store):
    spec = make_store("postgres")
    publish(spec, "old", {DAY: 30}, f"old-{uuid.uuid4()}")
    table = sql.Identifier(spec.schema, spec.asset)
    with psycopg.connect(spec.dsn, autocommit=True) as conn:  # a non-atomic overwrite, stopped halfway
        conn.execute(sql.SQL("DELETE FROM {} WHERE n > 10 * 1000003").format(table))
    judge = judged(spec)
    assert judge.partial == 1 and judge.states["partial"] == 1, judge.summary()
    with psycopg.connect(spec.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}").format(table))
    judge = judged(spec)
    assert judge.lost == 1, judge.summary()


def test_lake_files_with_mixed_or_duplicated_rows_or_none(make_store):
    spec = make_store("lake")
    publish(spec, "old", {DAY: 30}, f"old-{uuid.uuid4()}")
    path = os.path.join(spec.lake_root, spec.asset, f"{DAY}.parquet")
    old, new = frame_for("old", {DAY: 30}), frame_for("new", {DAY: 20})
    pd.concat([old.head(15), new.head(10)]).to_parquet(path, index=False)
    assert judged(spec).states["partial"] == 1
    pd.concat([old, old.head(1)]).to_parquet(path, index=False)
    judge = judged(spec)
    assert judge.duplicates == 1 and judge.partial == 1
    os.remove(path)
    assert judged(spec).lost == 1


def test_a_day_published_twice_under_the_read_alias(make_store):
    spec = make_store("elasticsearch")
    publish(spec, "old", {DAY: 30}, f"old-{uuid.uuid4()}")
    sink, target = spec.sink(), spec.target()
    extra = f"{sink.day_alias(target, DAY)}-extra-000000"
    sink.client.indices.create(index=extra, mappings=sink.mappings(target.decl))
    docs = frame_for("new", {DAY: 20})
    for i, row in docs.iterrows():
        sink.client.index(index=extra, id=row["id"], document={"id": row["id"], "gen": "new", PARTITION_COLUMN: DAY})
    sink.client.indices.refresh(index=extra)
    sink.client.indices.update_aliases(actions=[{"add": {"index": extra, "alias": sink.read_alias(target)}}])
    judge = judged(spec)
    # The day alias still shows one complete day; the read alias shows both copies of the day.
    assert judge.states["complete"] == 1 and judge.states["partial"] == 1, judge.summary()
    assert any("read-alias" in e for e in judge.examples)


# --- publish windows, deadlocks, stale publishes: the scorecard's other instruments ------------------------------


def test_window_samples_are_the_samples_read_inside_a_publish_window():
    sc = Scenario("s", "crash", "lake", faults=1)
    sc.add_reader({"samples": 4, "partial": 0, "duplicates": 0, "lost": 0, "examples": [],
                   "sample_times": [("lake", 1.0, 1.5, 1), ("lake", 2.0, 2.5, 2), ("lake", 2.9, 3.2, 1)]})
    assert sc.window_samples == 0
    sc.window(1.9, 3.0)  # holds the second read (2 samples), not the first, not the third (it straddles the end)
    assert (sc.windows, sc.window_samples) == (1, 2)
    sc.window(3.0, 3.5)  # the third is inside the union of two windows that touch
    assert sc.window_samples == 3


def test_a_fault_scenario_without_a_window_sample_fails_and_so_does_the_card(tmp_path):
    card = Scorecard()
    with pytest.raises(AssertionError, match="no reader sample inside a publish window"):
        with card.scenario("crash/x", "crash", "lake", faults=1) as sc:
            sc.add_reader({"samples": 3, "partial": 0, "duplicates": 0, "lost": 0, "examples": [],
                           "sample_times": [("lake", 1.0, 1.1, 3)]})
            sc.window(2.0, 3.0)  # the writer ran after the reader's last sample
    assert card.scenarios[0].outcome == "failed"
    path = card.write(tmp_path / "card.json")
    assert scorecard_main([str(path)]) == 1
    assert "FAIL" in format_scorecard(card.as_dict())
    # Without a fault and without a window (a security probe), no sample is needed.
    quiet = Scorecard()
    with quiet.scenario("security/x", "security", "-"):
        pass
    assert scorecard_main([str(quiet.write(tmp_path / "quiet.json"))]) == 0
    assert scorecard_main([str(quiet.write(tmp_path / "quiet.json")), "--min-scenarios", "2"]) == 1


def test_deadlocks_failed_or_retried_are_counted(tmp_path):
    card = Scorecard()
    with pytest.raises(AssertionError, match="deadlocks 2"):
        with card.scenario("concurrency/x", "concurrency", "postgres") as sc:
            with sc.publishing():  # what partition_store._retried logs before it retries
                logging.getLogger("idem_platform.storage").warning(
                    "x: DeadlockDetected writing 2026-01-01, retrying (1)")
            sc.writer_error("RuntimeError: asset 'x', partition 2026-01-01: DeadlockDetected in 3 attempts")
            sc.writer_error("ConnectionError: the search server went away")  # not a deadlock
            sc.add_reader({"samples": 1, "partial": 0, "duplicates": 0, "lost": 0, "examples": [],
                           "sample_times": [("postgres", *sc._windows[0], 1)]})
    assert card.scenarios[0].deadlocks == 2
    assert scorecard_main([str(card.write(tmp_path / "card.json"))]) == 1


def test_a_writer_process_failure_reaches_the_scenario(make_store):
    spec = make_store("postgres")
    broken = WriteSpec(dataclasses.replace(spec, dsn=spec.dsn.rsplit("/", 1)[0] + "/no_such_database"), "old",
                       ((DAY, 3),), f"broken-{uuid.uuid4()}")
    sc = Scenario("s", "concurrency", "postgres")
    writers = WriterProcesses(sc)
    writers.start(broken)
    assert writers.join(60) != [0]
    assert "no_such_database" in writers.errors[broken.run_id]
    assert sc.windows == 1


def test_a_reader_process_counts_its_samples_inside_a_writer_process_window(make_store):
    """Reader and writer in two processes: their clocks agree, the samples read while the writer ran count."""
    spec = make_store("postgres")
    publish(spec, "old", {DAY: 30}, f"old-{uuid.uuid4()}")
    early = Scenario("s", "crash", "postgres", faults=1)
    with Reader([spec], ACCEPTED, process=True) as reader:
        summary = reader.stop()  # every sample is taken before the writer starts
    run_writer(WriteSpec(spec, "new", ((DAY, 20),), f"new-{uuid.uuid4()}"), scenario=early)
    early.add_reader(summary)
    assert early.reader_samples > 0 and early.window_samples == 0 and early.verdict_problems()

    during = Scenario("s", "crash", "postgres", faults=1)
    with Reader([spec], Expectation({DAY: [state("new", 20), state("old", 30)]}), process=True) as reader:
        run_writer(WriteSpec(spec, "old", ((DAY, 30),), f"old-{uuid.uuid4()}"), scenario=during)
        during.add_reader(reader.stop())
    assert during.window_samples > 0 and during.verdict_problems() == []


def test_a_day_not_what_the_ledger_names_is_a_stale_publish(make_store):
    for kind in ("postgres", "lake"):
        spec = make_store(kind)
        publish(spec, "old", {DAY: 30}, f"old-{uuid.uuid4()}")
        assert stale_publishes(spec, [DAY]) == []
        if kind == "lake":  # a writer the ledger never heard of replaced the file
            path = os.path.join(spec.lake_root, spec.asset, f"{DAY}.parquet")
            frame_for("new", {DAY: 20}).to_parquet(path, index=False)
        else:
            with psycopg.connect(spec.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DELETE FROM {} WHERE n > 10 * 1000003").format(sql.Identifier(spec.schema, spec.asset)))
        [found] = stale_publishes(spec, [DAY])
        assert DAY in found and "the ledger's latest row names 30 rows" in found, found
