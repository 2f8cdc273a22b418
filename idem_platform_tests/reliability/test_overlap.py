"""Writers of other assets and other days overlap; they are not serialized behind each other.

Writer A (a child process) stops in the middle of its write of (asset X, day 1) (`IDEM_FAULT_MODE=pause` at
`after_audit`: its partition lock taken, its rows staged, its transaction open). While it stands there, the test
writes, to completion and within a bound: asset Y on the same day, asset X on another day, and asset Y on the day
after, while `pg_locks` shows A's partition lock granted throughout. Then A resumes and finishes. Every day ends
exact and a reader saw only complete days.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from idem_platform_tests.reliability.content import digests_for, state
from idem_platform_tests.reliability.processes import forkserver
from idem_platform_tests.reliability.readers import Expectation, Reader
from idem_platform_tests.reliability.stores import STORES, stale_publishes, visible
from idem_platform_tests.reliability.test_fencing import _writer_a
from idem_platform_tests.reliability.writers import publish, wait_for

DAYS = ["2026-02-10", "2026-02-11"]
BOUND_S = 60  # a write that waited for A would wait for ever: A only resumes after these writes


def held_partition_locks(dsn: str, asset: str, day: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)""",
            (f"idem:partition:{asset}:{day}",),
        ).fetchall()]


@pytest.mark.parametrize("store", STORES)
def test_writers_of_other_assets_and_days_run_while_a_write_is_open(store, make_store, scorecard, tmp_path):
    x = make_store(store)
    y = dataclasses.replace(x, asset=f"{x.asset}_y")
    accepted = {d: [state("old", 20), state("a", 40), state("b", 30)] for d in DAYS}
    pause, outcome = str(tmp_path / "resume"), str(tmp_path / "outcome")

    with scorecard.scenario(f"overlap/{store}", "concurrency", store) as sc:
        for spec in (x, y):
            publish(spec, "old", dict.fromkeys(DAYS, 20), f"old-{uuid.uuid4()}")
        with Reader([x, y], Expectation(accepted)) as reader:
            a_started = time.monotonic()
            a = forkserver().Process(target=_writer_a, args=(x, DAYS[:1], "after_audit", pause, outcome))
            a.start()
            assert wait_for(lambda: Path(f"{pause}.reached").exists() or not a.is_alive(), timeout=60), "A never paused"
            holder = held_partition_locks(x.dsn, x.asset, DAYS[0])
            assert holder, "A does not hold its partition lock"

            started = time.monotonic()
            for spec, day in ((y, DAYS[0]), (x, DAYS[1]), (y, DAYS[1])):
                with sc.publishing():
                    publish(spec, "b", {day: 30}, f"b-{uuid.uuid4()}")
                assert held_partition_locks(x.dsn, x.asset, DAYS[0]) == holder  # A still mid-write: overlapped
            assert time.monotonic() - started < BOUND_S

            Path(pause).touch()
            a.join(60)
            sc.window(a_started, time.monotonic())
            assert Path(outcome).read_text() == "published"
        sc.add_reader(reader.stop())
        sc.record_stale(stale_publishes(x, DAYS) + stale_publishes(y, DAYS))

    assert visible(x, DAYS) == {DAYS[0]: digests_for("a", {DAYS[0]: 40})[DAYS[0]], DAYS[1]: digests_for("b", {DAYS[1]: 30})[DAYS[1]]}
    assert visible(y, DAYS) == digests_for("b", dict.fromkeys(DAYS, 30))
