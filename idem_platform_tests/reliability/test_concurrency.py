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

Each run (CLI process) or writer process is a publish window of the scenario: some reader samples must fall inside
one; a run that failed or logged a deadlock counts one; the end state of every store must be what the ledger's
latest row names (no stale publish). Writers of *different* days at once: test_neighbours.py.

Quick matrix: CLI N in {3, 10} same day; writer processes N=10 same day and N=3 overlapping ranges, per store.
Full matrix: CLI N in {3, 10} x {same day, overlapping ranges}; writers N in {3, 10} x {same day, ranges}.
"""

from __future__ import annotations

import time
import uuid

import pytest

from idem_platform_tests.cli_runs import materialize_command
from idem_platform_tests.reliability.dagster_runs import CliRun, names_asset, run_together
from idem_platform_tests.reliability.content import digests_for, state
from idem_platform_tests.reliability.processes import forkserver
from idem_platform_tests.reliability.readers import Expectation, Reader
from idem_platform_tests.reliability.scorecard import full_matrix
from idem_platform_tests.reliability.stores import (
    STORES,
    StoreSpec,
    latest_ledger,
    ledger_chain_breaks,
    stale_publishes,
    visible,
)
from idem_platform_tests.reliability.writers import WriteSpec, WriterProcesses

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
    commands = []
    for span in plan:
        args = {"partition": span[0]} if shape == "day" else {"partition_range": f"{span[0]}...{span[-1]}"}
        commands.append(cli_command(select, **args))
    with Reader(specs, expectation, process=True) as reader:
        cli_runs = run_together(commands, env)
        summary = reader.stop()
    seconds = time.perf_counter() - started

    failed = [(r.returncode, r.output[-2500:]) for r in cli_runs if r.returncode != 0]
    run_ids = {e.run_id for e in specs[0].ledger()}  # the lake rows name this test's runs (its own lake root)
    problems = []
    for spec in specs:  # one scenario per store; every store is checked even when one fails
        try:
            with scorecard.scenario(f"concurrency/cli/{runs}x{shape}/{spec.kind}", "concurrency", spec.kind) as sc:
                record_cli_runs(sc, cli_runs, spec, [s.asset for s in specs])
                sc.add_reader(summary, store=spec.kind)
                assert not failed, failed[0]
                sc.record_stale(stale_publishes(spec, days))
                _assert_cli_end_state(spec, plan, days, run_ids)
        except AssertionError as exc:
            problems.append(exc)
    if problems:
        raise problems[0]
    assert summary["samples"] > 0
    print(f"{runs} CLI runs ({shape}): {seconds:.1f} s, {summary['samples']} reader samples, states {summary['states']}")


def record_cli_runs(sc, cli_runs: list[CliRun], spec: StoreSpec, assets: list[str]) -> None:
    """Each CLI run is a publish window of every store it writes; a deadlock line counts for the store whose
    asset it names (for every store when it names none)."""
    for run in cli_runs:
        sc.window(run.start, run.end)
        for line in run.deadlock_lines():
            if names_asset(line, spec.asset) or not any(names_asset(line, a) for a in assets):
                sc.writer_error(line)


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
            procs = WriterProcesses(sc)
            for gen, rows in plan.items():
                procs.start(WriteSpec(spec, gen, tuple(sorted(rows.items())), run_ids[gen]), barrier)
            exitcodes = procs.join(180)
            sc.add_reader(reader.stop())
        assert exitcodes == [0] * writers, procs.errors
        sc.record_stale(stale_publishes(spec, days))

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
