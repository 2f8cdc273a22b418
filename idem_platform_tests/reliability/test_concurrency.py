"""Concurrency: N writers of the same day, and of overlapping ranges, with a reader process polling throughout.

Two layers:

- **CLI runs** (`dagster asset materialize` subprocesses on the dagster-postgres instance, the platform's people
  pipeline: raw_people -> lake, people -> PostgreSQL, people_search -> search index): N runs of the same day, and
  N runs of overlapping 3-day ranges (`--partition-range`, which bypasses the run queue: the advisory lock is the
  only fence). Every run writes the same content, so a reader must see each day absent (not yet published) or
  complete (all rows, unique keys), never a partial or doubled day, and never lose a day once seen.
- **Writer processes** calling the driver directly: N writers that each publish a *different* generation (different
  keys and row counts) of the same day, or of overlapping ranges. Every reader sample must be exactly one writer's
  complete day; the end state is the content of the writer the ledger names last; the ledger of each day is one
  unbroken chain (each row's previous fingerprint is the row before's), which is what serialization means.

Quick matrix: CLI N in {3, 10} same day; writer processes N=10 same day and N=3 overlapping ranges, per store.
Full matrix: CLI N in {3, 10} x {same day, overlapping ranges}; writers N in {3, 10} x {same day, ranges}.
"""

from __future__ import annotations

import time
import uuid

import pytest

from idem_platform_tests.cli_runs import materialize_command, start
from idem_platform_tests.reliability.content import digests_for, state
from idem_platform_tests.reliability.processes import forkserver
from idem_platform_tests.reliability.readers import Expectation, Reader
from idem_platform_tests.reliability.scorecard import full_matrix
from idem_platform_tests.reliability.stores import (
    STORES,
    StoreSpec,
    latest_ledger,
    ledger_chain_breaks,
    visible,
)
from idem_platform_tests.reliability.writers import WriteSpec, start_writer

WINDOW = ["2026-02-02", "2026-02-03", "2026-02-04", "2026-02-05", "2026-02-06"]
CLI_ROWS = 200  # IDEM_PEOPLE_PER_DAY of the CLI runs
PEOPLE_ASSETS = ("raw_people", "people", "people_search")  # lake -> PostgreSQL -> search index


def cli_command(select: str, **partitions) -> list[str]:
    """`dagster asset materialize -m idem_platform.definitions`: the platform's own code location, its checks too."""
    return materialize_command(select, **partitions)


def covered(shape: str, i: int, window: list[str] = WINDOW) -> list[str]:
    """Days writer/run `i` covers: the first day, or a 3-day range starting at one of the first three days."""
    return [window[0]] if shape == "day" else window[i % 3 : i % 3 + 3]


def cli_window(runs: int, shape: str) -> list[str]:
    """Five days of February of this CLI scenario's own: the CLI scenarios share one instance database, whose
    ledger keys previous fingerprints by (asset, sink, day), so two scenarios must never write the same day."""
    first = 2 + 7 * cli_matrix().index((runs, shape))
    return [f"2026-02-{d:02d}" for d in range(first, first + 5)]


def cli_matrix():
    return [(3, "day"), (10, "day"), (3, "ranges"), (10, "ranges")] if full_matrix() else [(3, "day"), (10, "day")]


def writer_matrix():
    return [(3, "day"), (10, "day"), (3, "ranges"), (10, "ranges")] if full_matrix() else [(10, "day"), (3, "ranges")]


def _cli_specs(env: dict[str, str]) -> list[StoreSpec]:
    dsn, es_url = env["IDEM_PG_DSN"], env.get("IDEM_ES_URL")
    common = {"dsn": dsn, "key": "person_id", "gen_column": None}
    return [
        StoreSpec("lake", asset="raw_people", lake_root=env["IDEM_LAKE_DIR"], declaration="raw_people", **common),
        StoreSpec("postgres", asset="people", schema=env["IDEM_PG_SCHEMA"], declaration="people", **common),
        StoreSpec("elasticsearch", asset="people_search", es_url=es_url, declaration="people_search", **common),
    ]


@pytest.mark.parametrize("runs,shape", cli_matrix(), ids=[f"{n}x{shape}" for n, shape in cli_matrix()])
def test_concurrent_cli_runs_publish_each_day_once(rel_cli_env, runs, shape, scorecard):
    env = {**rel_cli_env, "IDEM_PEOPLE_PER_DAY": str(CLI_ROWS)}
    specs = _cli_specs(env)
    plan = [covered(shape, i, cli_window(runs, shape)) for i in range(runs)]
    days = sorted({d for span in plan for d in span})
    select = ",".join(PEOPLE_ASSETS)
    expectation = Expectation({d: [{"*": CLI_ROWS}] for d in days}, present_from_start=False)

    started = time.perf_counter()
    with Reader(specs, expectation, process=True) as reader:
        procs = []
        for span in plan:
            args = {"partition": span[0]} if shape == "day" else {"partition_range": f"{span[0]}...{span[-1]}"}
            procs.append(start(cli_command(select, **args), env))
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        summary = reader.stop()
    seconds = time.perf_counter() - started

    failed = [(p.returncode, out[-2500:]) for p, out in zip(procs, outputs) if p.returncode != 0]
    run_ids = {e.run_id for e in specs[0].ledger()}  # the lake rows name this test's runs (its own lake root)
    problems = []
    for spec in specs:  # one scenario per store; every store is checked even when one fails
        try:
            with scorecard.scenario(f"concurrency/cli/{runs}x{shape}/{spec.kind}", "concurrency", spec.kind) as sc:
                sc.add_reader(summary, store=spec.kind)
                assert not failed, failed[0]
                _assert_cli_end_state(spec, plan, days, run_ids)
        except AssertionError as exc:
            problems.append(exc)
    if problems:
        raise problems[0]
    assert summary["samples"] > 0
    print(f"{runs} CLI runs ({shape}): {seconds:.1f} s, {summary['samples']} reader samples, states {summary['states']}")


def _assert_cli_end_state(spec: StoreSpec, plan: list[list[str]], days: list[str], run_ids: set[str]) -> None:
    entries = [e for e in spec.ledger() if e.run_id in run_ids]
    for day in days:
        writers = sum(day in span for span in plan)
        mine = [e for e in entries if e.partition == day]
        assert len(mine) == writers and len({e.run_id for e in mine}) == writers, (day, mine)
        assert len({e.fingerprint for e in mine}) == 1, (day, mine)
        assert [e.changed for e in mine] == [True] + [False] * (writers - 1), (day, mine)
        assert {e.row_count for e in mine} == {CLI_ROWS}
    assert ledger_chain_breaks(entries) == []
    published = visible(spec, days)
    assert {d: (p.rows, p.fingerprint) for d, p in published.items()} == {
        d: (e.row_count, e.fingerprint) for d, e in latest_ledger(spec, days).items()
    }
    assert spec.leftovers(days) == []


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("writers,shape", writer_matrix(), ids=[f"{n}x{shape}" for n, shape in writer_matrix()])
def test_concurrent_writer_processes_serialize_per_day(store, writers, shape, make_store, scorecard):
    spec = make_store(store)
    plan = {f"w{i:02d}": {d: 40 + 7 * i for d in covered(shape, i)} for i in range(writers)}  # distinct row counts
    days = sorted({d for rows in plan.values() for d in rows})
    accepted = {d: [state(gen, rows[d]) for gen, rows in plan.items() if d in rows] for d in days}

    with scorecard.scenario(f"concurrency/writers/{writers}x{shape}/{store}", "concurrency", store) as sc:
        run_ids = {gen: f"{gen}-{uuid.uuid4()}" for gen in plan}
        with Reader([spec], Expectation(accepted, present_from_start=False), process=True) as reader:
            barrier = forkserver().Barrier(writers)
            procs = [
                start_writer(WriteSpec(spec, gen, tuple(sorted(rows.items())), run_ids[gen]), barrier)
                for gen, rows in plan.items()
            ]
            for p in procs:
                p.join(180)
            sc.add_reader(reader.stop())
        assert [p.exitcode for p in procs] == [0] * writers

        entries = spec.ledger()
        assert ledger_chain_breaks(entries) == []
        last = latest_ledger(spec, days)
        gen_of = {run_id: gen for gen, run_id in run_ids.items()}
        published = visible(spec, days)
        for day in days:
            mine = [e for e in entries if e.partition == day]
            assert sorted(gen_of[e.run_id] for e in mine) == sorted(g for g, rows in plan.items() if day in rows)
            winner = gen_of[last[day].run_id]
            assert published[day] == digests_for(winner, plan[winner])[day] == (
                type(published[day])(last[day].row_count, last[day].fingerprint))
        assert spec.leftovers(days) == []
