"""Fencing: a writer whose PostgreSQL session (and so its partition lock) died never publishes over the next owner.

For each (store, fault point):

1. publish the `old` generation;
2. writer A (a child process) writes generation `a` and pauses at the fault point (`IDEM_FAULT_MODE=pause`);
3. A's PostgreSQL session, the one holding the day's advisory lock, is terminated (`pg_terminate_backend`), as a
   failover, an idle timeout or an operator would;
4. writer B writes generation `b` to completion (it takes the lock A lost), while a reader polls the day;
5. A resumes: it must fail naming the lost lock and must not publish: the sink ends with B's content, the ledger (as
   readers resolve it, intents included) names B's write, nothing staged is left behind.

A paused at `after_publish` / `after_ledger` had published (legitimately, under its lock) before its session died;
B then replaces it, and A still fails: its confirmation is lost. The reader accepts old, A's or B's complete day.

Quick matrix: every point of every store on one day. Full matrix (`IDEM_RELIABILITY_FULL=1`): also a 3-day range.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from idem_platform.storage.faults import POINTS
from idem_platform.storage.partition_store import publish_partitions
from idem_platform_tests.reliability.content import digests_for, frame_for, state
from idem_platform_tests.reliability.processes import forkserver
from idem_platform_tests.reliability.readers import Expectation, Reader
from idem_platform_tests.reliability.scorecard import full_matrix
from idem_platform_tests.reliability.stores import STORES, StoreSpec, resolved_ledger, stale_publishes, visible
from idem_platform_tests.reliability.writers import publish, wait_for

DAYS = ["2026-02-01", "2026-02-02", "2026-02-03"]
ROWS = {"old": 60, "a": 40, "b": 30}
FENCED_POINTS = [p for p in POINTS if p != "after_commit"]  # after its commit A is done: nothing left to fence


def fencing_matrix() -> list[tuple[str, str, str]]:
    spans = ("day", "range") if full_matrix() else ("day",)
    return list(itertools.product(STORES, FENCED_POINTS, spans))


def _writer_a(spec: StoreSpec, days: list[str], point: str, pause: str, outcome: str) -> None:
    """Writer A, in a child process: pause at `point`, then go on and record how the write ended."""
    os.environ.update({"IDEM_FAULT": f"{spec.kind}:{point}", "IDEM_FAULT_MODE": "pause", "IDEM_FAULT_PAUSE": pause,
                       "IDEM_FAULT_ASSET": spec.asset})
    try:
        publish_partitions(spec.sink(), spec.postgres, spec.target(), days, frame_for("a", dict.fromkeys(days, ROWS["a"])),
                           f"a-{uuid.uuid4()}")
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        Path(outcome).write_text(f"{type(exc).__name__}: {exc}")
        return
    Path(outcome).write_text("published")


def terminate_lock_holders(spec: StoreSpec, days: list[str]) -> list[int]:
    """Terminate the sessions holding the advisory locks of (asset, day): what a failover does to a writer."""
    keys = [f"idem:partition:{spec.asset}:{day}" for day in days]
    with psycopg.connect(spec.dsn, autocommit=True) as conn:
        pids = [pid for (pid,) in conn.execute(
            """SELECT DISTINCT l.pid FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.granted
                 AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(
                     SELECT hashtextextended(k, 0) FROM unnest(%s::text[]) AS k)""",
            (keys,),
        ).fetchall()]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    return pids


@pytest.mark.parametrize("store,point,span", fencing_matrix(), ids=["-".join(c) for c in fencing_matrix()])
def test_a_writer_that_lost_its_lock_never_publishes(store, point, span, make_store, scorecard, tmp_path):
    spec = make_store(store)
    days = DAYS[:1] if span == "day" else DAYS
    old, b = digests_for("old", dict.fromkeys(days, ROWS["old"])), digests_for("b", dict.fromkeys(days, ROWS["b"]))
    accepted = {d: [state(gen, ROWS[gen]) for gen in ("old", "a", "b")] for d in days}
    pause, outcome = str(tmp_path / "resume"), str(tmp_path / "outcome")

    with scorecard.scenario(f"fencing/{store}/{point}/{span}", "concurrency", store, faults=1, fault_mode="session") as sc:
        publish(spec, "old", dict.fromkeys(days, ROWS["old"]), f"old-{uuid.uuid4()}")
        with Reader([spec], Expectation(accepted)) as reader:
            a_started = time.monotonic()  # A's window: from its start to its end (it may publish before it pauses)
            a = forkserver().Process(target=_writer_a, args=(spec, days, point, pause, outcome))
            a.start()
            assert wait_for(lambda: Path(f"{pause}.reached").exists() or not a.is_alive(), timeout=60)
            assert a.is_alive(), f"writer A ended before {point}: {Path(outcome).read_text() if Path(outcome).exists() else ''}"
            assert terminate_lock_holders(spec, days), "A's session held no partition lock"

            with sc.publishing():
                b_entries = publish(spec, "b", dict.fromkeys(days, ROWS["b"]), f"b-{uuid.uuid4()}")
            Path(pause).touch()
            a.join(60)
            sc.window(a_started, time.monotonic())
            assert a.exitcode == 0 and Path(outcome).exists(), f"writer A did not finish (exit {a.exitcode})"
        sc.add_reader(reader.stop())

        ended = Path(outcome).read_text()
        sc.writer_error(ended)
        sc.record_stale(stale_publishes(spec, days))
        assert ended.startswith("PartitionLockLost") and "lost the partition lock" in ended, ended
        # B's content and B's ledger row, everywhere; nothing of A's left staged.
        assert visible(spec, days) == b
        resolved = resolved_ledger(spec, days)
        assert {d: (e.run_id, e.fingerprint) for d, e in resolved.items()} == {
            d: (b_entries[0].run_id, b[d].fingerprint) for d in days
        }
        assert wait_for(lambda: spec.leftovers(days) == []), spec.leftovers(days)
        assert old != b
