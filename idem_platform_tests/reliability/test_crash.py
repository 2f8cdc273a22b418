"""Crash tests: every store, every fault point. Publish, crash a rerun there, check what readers see, rerun, compare.

For each (store, fault point, span, mode):

1. publish the `old` generation (a day, or a 3-day range) cleanly;
2. a writer process reruns with the `new` generation (fewer rows; in a range the third day becomes empty) and
   dies at the fault point (`IDEM_FAULT=<store>:<point>`, `IDEM_FAULT_MODE=exit|kill`), while a reader polls every
   day through the user's path (the crashed writer and the rerun are the scenario's publish windows: some reader
   samples must fall inside them);
3. readers see the old content, or the new one once the store had published (the lake file replaced, the alias
   swapped; for the table only the COMMIT publishes); the ledger, as readers resolve it (`published_entries`:
   an unconfirmed intent whose version the sink holds is the truth), names exactly what the sink holds, whatever
   the point; what the crash left behind (temp files, staged indices) is invisible to readers;
4. a rerun converges to what a single clean run leaves: the new rows and fingerprint read back, one ledger row per
   write that committed with an unbroken previous-fingerprint chain, one physical index per day, no temp files,
   no staging relations, no open transactions, no held locks; what each sink publishes is what the ledger's
   latest row names (no stale publish).

Quick matrix (`make test`): each fault point of each store once, spans and modes alternating (24 scenarios).
Full matrix (`IDEM_RELIABILITY_FULL=1`): points x stores x {day, range} x {os._exit, SIGKILL} (96 scenarios).
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
import uuid

import pytest

from idem_platform.storage.faults import EXIT_CODE, POINTS
from idem_platform_tests.reliability.content import digests_for, state
from idem_platform_tests.reliability.readers import Expectation, Reader
from idem_platform_tests.reliability.scorecard import full_matrix
from idem_platform_tests.reliability.stores import STORES, ledger_chain_breaks, resolved_ledger, stale_publishes, visible
from idem_platform_tests.reliability.writers import WriteSpec, publish, run_writer, wait_for

DAYS = ["2026-01-05", "2026-01-06", "2026-01-07"]
OLD_ROWS, NEW_ROWS = 120, 80  # 50-row COPY / bulk chunks: mid_stage dies after the first of several
SPANS = {
    "day": ({DAYS[0]: OLD_ROWS}, {DAYS[0]: NEW_ROWS}),
    "range": ({d: OLD_ROWS for d in DAYS}, {DAYS[0]: NEW_ROWS, DAYS[1]: NEW_ROWS, DAYS[2]: 0}),
}
# The first fault point at which readers see the new content: the table publishes at COMMIT, the others in publish().
PUBLISHED_FROM = {"postgres": "after_commit", "lake": "after_publish", "elasticsearch": "after_publish"}
EXPECTED_EXIT = {"exit": EXIT_CODE, "kill": -signal.SIGKILL}


def crash_matrix() -> list[tuple[str, str, str, str]]:
    if full_matrix():
        return list(itertools.product(STORES, POINTS, SPANS, EXPECTED_EXIT))
    cases = []
    for i, (store, point) in enumerate(itertools.product(STORES, POINTS)):
        cases.append((store, point, ("day", "range")[i % 2], ("exit", "kill")[(i // 2) % 2]))
    return cases


def pg_swaps(span: str, mode: str) -> bool:
    """Which PostgreSQL path the crashed write takes: half the cases stage + swap its 80-row days, the others
    write them in place (DELETE + COPY); the 120-row baseline is always swapped in."""
    return (mode == "kill") != (span == "range")


def new_is_visible(store: str, point: str) -> bool:
    return POINTS.index(point) >= POINTS.index(PUBLISHED_FROM[store])


def expected_crash_leftovers(store: str, point: str, days: int) -> int:
    """What a crash at `point` leaves behind, unseen by readers, for the next write of the day to remove."""
    if store == "postgres":
        return 0  # the server rolls the dead connection's transaction back
    if point in ("after_stage", "after_audit", "after_intent"):
        return days  # a temp file / a staged index per day
    if point == "mid_stage":
        return 1 if store == "lake" else days  # the lake dies in its first file; every staged index exists already
    return 0


@pytest.mark.parametrize("store,point,span,mode", crash_matrix(), ids=["-".join(case) for case in crash_matrix()])
def test_crash_at_fault_point_then_rerun_converges(store, point, span, mode, make_store, scorecard):
    spec = make_store(store)
    path = ""
    if store == "postgres":
        swap = pg_swaps(span, mode)
        spec = dataclasses.replace(spec, pg_swap_min_rows=50 if swap else 100)
        path = "/swap" if swap else "/in-place"
    old_rows, new_rows = SPANS[span]
    days = sorted(old_rows)
    old, new = digests_for("old", old_rows), digests_for("new", new_rows)
    accepted = {d: [state("old", old_rows[d]), state("new", new_rows[d])] for d in days}

    with scorecard.scenario(f"crash/{store}/{point}/{span}/{mode}{path}", "crash", store, faults=1, fault_mode=mode) as sc:
        baseline = publish(spec, "old", old_rows, f"baseline-{uuid.uuid4()}")
        with Reader([spec], Expectation(accepted)) as reader:
            crashed = WriteSpec(spec, "new", tuple(sorted(new_rows.items())), f"crashed-{uuid.uuid4()}", point, mode)
            assert run_writer(crashed, scenario=sc) == EXPECTED_EXIT[mode], f"the writer did not die at {store}:{point}"

            # What readers get right after the crash: the old content, or the new one once it was published.
            assert visible(spec, days) == (new if new_is_visible(store, point) else old)
            # The ledger as every reader resolves it names what the sink holds: no manual step, whatever the point.
            published = new_is_visible(store, point)
            assert {d: e.fingerprint for d, e in resolved_ledger(spec, days).items()} == {
                d: (new if published else old)[d].fingerprint for d in days
            }
            # Left behind for the next write (temp files, staged indices), never visible; a killed PostgreSQL
            # connection's transaction and locks go once the server notices the dead socket.
            expected = expected_crash_leftovers(store, point, len(days))
            assert wait_for(lambda: len(spec.leftovers(days)) == expected), spec.leftovers(days)

            with sc.publishing():  # the rerun's publish window (the crashed writer's: run_writer)
                rerun = publish(spec, "new", new_rows, f"rerun-{uuid.uuid4()}")
        sc.add_reader(reader.stop())
        sc.record_stale(stale_publishes(spec, days))

        # The end state of a single clean run of the new content.
        assert visible(spec, days) == new
        assert spec.leftovers(days) == []
        entries = spec.ledger()
        runs = [baseline[0].run_id] + ([crashed.run_id] if published else []) + [rerun[0].run_id]
        assert [e.run_id for e in entries] == [r for r in runs for _ in days]
        assert ledger_chain_breaks(entries) == []
        for entry in rerun:
            assert (entry.fingerprint, entry.row_count) == (new[entry.partition].fingerprint, new[entry.partition].rows)
            assert entry.changed == (not published)
        assert reader.summary["samples"] > 0
