"""The suite checks its own instruments: readers must report the partial, duplicated and lost days they are shown.

A scorecard of zeros only means something if the readers would have seen a non-zero. Each test here builds a bad
state by hand in a real store (a half-replaced day, a day published twice, a deleted day) and asserts the judge
flags it. These are not scenarios: they do not report into the scorecard.
"""

from __future__ import annotations

import os
import uuid

import pandas as pd
import psycopg
from psycopg import sql

from idem_platform.storage.schema import PARTITION_COLUMN
from idem_platform_tests.reliability.content import frame_for, state
from idem_platform_tests.reliability.readers import Expectation, Judge, poll_once
from idem_platform_tests.reliability.writers import publish

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
