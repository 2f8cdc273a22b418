"""The reliability scorecard: every scenario of the suite reports into it; it is written as JSON and printed.

    scenarios run, faults injected, reader samples taken (and how many inside a publish window), partial states
    seen (must be 0), duplicates found (must be 0), lost partitions (must be 0), deadlocks (must be 0), stale
    publishes (must be 0)

A scenario is one thing the suite does to the platform and then checks: a crash at one fault point, N
concurrent writers, a service fault, a reader at an isolation level, a security probe. Each records what it
injected and what its readers saw:

- reader samples: one per (reader poll, store, day); the reader uses the path a user would use (SQL count on the
  table, a search on the day alias, reading the lake file), and timestamps every sample;
- a publish window is an interval in which the sink's content of a day could change: from the start to the end of
  each writer of the scenario (a writer process, a crashed one included, an in-process publish, a Dagster or CLI
  run), measured around it by the test (`Scenario.publishing`, `Scenario.window`; `time.monotonic`, one clock
  for every process of the machine); a *window sample* is a sample whose whole poll (first request to last
  answer) lies inside one. A scenario that injected a fault, or that recorded a publish window, and whose
  readers took no sample inside one FAILS: its readers proved nothing about the moment that matters;
- a partial state is a sample whose day content is neither a complete old nor a complete new content of that
  day (judged by per-generation row counts, not only the total), or whose keys are not unique;
- a duplicate is a sample or end state with a key more than once (also counted as a partial state);
- a lost partition is a day that was readable before and is not readable after;
- a deadlock is a writer that failed with `DeadlockDetected` or any error naming a deadlock, or a deadlock the
  write path logged and retried (writers of different days must not wait on each other at all, DESIGN.md);
- a stale publish is a day whose end state in a sink is not what the ledger's latest row of that day names
  (`stores.stale_publishes`: rows and fingerprint read back vs the ledger): content of a writer the ledger does
  not name as the latest, or of a write that failed after it had published. Reader samples are not judged
  against the ledger yet: only the end state of each scenario.

The suite's conftest prints the card at the end of the pytest session (`pytest_terminal_summary`) and writes it to
`IDEM_RELIABILITY_SCORECARD` (default `test-output/reliability-scorecard.json`); `python -m
idem_platform_tests.reliability.scorecard [FILE] [--min-fault-scenarios N] [--min-scenarios N]` prints a written
card again and exits 1 when it shows any partial state, duplicate, lost partition, deadlock, stale publish, failed
scenario or windowed scenario without a window sample, or fewer (fault) scenarios than asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCORECARD_ENV = "IDEM_RELIABILITY_SCORECARD"
FULL_ENV = "IDEM_RELIABILITY_FULL"
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "test-output" / "reliability-scorecard.json"
KINDS = ("crash", "concurrency", "service", "security")


def full_matrix() -> bool:
    return os.environ.get(FULL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def scorecard_path() -> Path:
    return Path(os.environ.get(SCORECARD_ENV) or DEFAULT_PATH)


def is_deadlock(text: str) -> bool:
    """Whether an error or a log line names a deadlock (psycopg's DeadlockDetected, PostgreSQL's "deadlock
    detected", the platform's "DeadlockDetected in 3 attempts" and its retry warnings)."""
    return "deadlock" in text.lower()


@dataclass
class Scenario:
    id: str
    kind: str  # crash | concurrency | service | security
    store: str  # postgres | lake | elasticsearch | all | -
    faults: int = 0  # faults injected (a process killed at a fault point, a service taken away)
    fault_mode: str = ""  # exit | kill | service | ""
    reader_samples: int = 0
    window_samples: int = 0  # reader samples taken inside a publish window (see the module's docstring)
    windows: int = 0  # publish windows recorded (writers of the scenario)
    window_seconds: float = 0.0  # their total length (the union)
    partial_states: int = 0
    duplicates: int = 0
    lost_partitions: int = 0
    deadlocks: int = 0
    stale_publishes: int = 0
    outcome: str = "running"  # passed | failed | running
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # the first partial states / failures, for the report
    note: str = ""  # e.g. the error a faulted run failed with

    def __post_init__(self) -> None:
        self._windows: list[tuple[float, float]] = []  # (start, end), time.monotonic()
        self._sample_times: list[tuple[float, float, int]] = []  # (start, end, samples) read then by the readers

    def _example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text[:300])

    def add_reader(self, summary: dict, store: str | None = None) -> None:
        """Fold a reader's summary (see readers.Reader) into the scenario; `store`: only that store's samples."""
        times = summary.get("sample_times", [])
        if store is not None:
            mine = summary.get("by_store", {}).get(store, {})
            examples = [e for e in summary["examples"] if f" {store}" in e]
            times = [t for t in times if t[0] == store]
            summary = {"samples": mine.get("samples", 0), "partial": mine.get("partial", 0),
                       "duplicates": mine.get("duplicates", 0), "lost": mine.get("lost", 0), "examples": examples}
        self.reader_samples += summary["samples"]
        self.partial_states += summary["partial"]
        self.duplicates += summary["duplicates"]
        self.lost_partitions += summary["lost"]
        self.examples.extend(summary["examples"][: max(0, 5 - len(self.examples))])
        self._sample_times.extend((start, end, n) for _store, start, end, n in times)
        self._count_window_samples()

    # --- publish windows ---------------------------------------------------------------------------------------

    def window(self, start: float, end: float) -> None:
        """A publish window measured by the caller (`time.monotonic()` before the writer started, after it ended)."""
        assert end >= start, (start, end)
        self._windows.append((start, end))
        self.windows = len(self._windows)
        self.window_seconds = round(sum(b - a for a, b in _union(self._windows)), 3)
        self._count_window_samples()

    @contextmanager
    def publishing(self):
        """A publish window around a writer in this process (a publish, a Dagster run, a writer process started
        and joined): its errors and the deadlocks it logged (and retried) are counted as `writer_error`s."""
        handler = _DeadlockLog(self)
        logger = logging.getLogger("idem_platform")
        logger.addHandler(handler)
        start = time.monotonic()
        try:
            yield self
        except BaseException as exc:
            self.writer_error(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.window(start, time.monotonic())
            logger.removeHandler(handler)

    def _count_window_samples(self) -> None:
        spans = _union(self._windows)
        self.window_samples = sum(n for start, end, n in self._sample_times
                                  if any(a <= start and end <= b for a, b in spans))

    # --- writers' errors and end states ------------------------------------------------------------------------

    def writer_error(self, text: str) -> None:
        """What a writer failed with (or logged): a deadlock is counted, whatever else the test expected."""
        if is_deadlock(text):
            self.deadlocks += 1
            self._example(f"deadlock: {text}")

    def record_stale(self, found: list[str]) -> None:
        """The days whose end state is not what the ledger's latest row names (`stores.stale_publishes`)."""
        self.stale_publishes += len(found)
        for text in found:
            self._example(f"stale publish: {text}")

    def needs_window_samples(self) -> bool:
        return bool(self.faults or self.windows)

    def verdict_problems(self) -> list[str]:
        problems = []
        if (self.partial_states, self.duplicates, self.lost_partitions) != (0, 0, 0):
            problems.append(f"partial states {self.partial_states}, duplicates {self.duplicates}, "
                            f"lost partitions {self.lost_partitions}")
        if self.deadlocks or self.stale_publishes:
            problems.append(f"deadlocks {self.deadlocks}, stale publishes {self.stale_publishes}")
        if self.needs_window_samples() and not self.window_samples:
            problems.append(f"no reader sample inside a publish window ({self.windows} windows, "
                            f"{self.window_seconds} s; {self.reader_samples} samples in all)")
        return problems


class _DeadlockLog(logging.Handler):
    """Counts the deadlocks the write path logs while it retries them (`partition_store._retried`)."""

    def __init__(self, scenario: Scenario):
        super().__init__(logging.WARNING)
        self.scenario = scenario

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if is_deadlock(text):
            self.scenario.writer_error(f"logged: {text}")


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


class Scorecard:
    def __init__(self) -> None:
        self.scenarios: list[Scenario] = []
        self.first = self.last = 0.0  # wall clock of the suite's tests (see `mark`)

    def mark(self) -> None:
        """Called around every test of the suite: the card's time is from the first test to the last."""
        now = time.time()
        self.first = self.first or now
        self.last = now

    @contextmanager
    def scenario(self, id: str, kind: str, store: str, *, faults: int = 0, fault_mode: str = ""):
        assert kind in KINDS, kind
        scenario = Scenario(id=id, kind=kind, store=store, faults=faults, fault_mode=fault_mode)
        self.scenarios.append(scenario)
        start = time.perf_counter()
        try:
            yield scenario
            # Whatever else it asserted, a scenario fails when its readers saw a partial state, a writer
            # deadlocked, an end state is not what the ledger names, or no reader sample fell inside a publish
            # window of a scenario that has one (or injected a fault).
            problems = scenario.verdict_problems()
            assert not problems, f"{id}: {'; '.join(problems)}; first: {scenario.examples}"
        except BaseException as exc:
            scenario.outcome = "failed"
            scenario.examples.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            raise
        else:
            scenario.outcome = "passed"
        finally:
            scenario.seconds = round(time.perf_counter() - start, 2)

    def as_dict(self) -> dict:
        return {
            "matrix": "full" if full_matrix() else "quick",
            "seconds": round(self.last - self.first, 1),
            "totals": totals([asdict(s) for s in self.scenarios]),
            "scenarios": [asdict(s) for s in self.scenarios],
        }

    def write(self, path: Path | None = None) -> Path:
        path = path or scorecard_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1) + "\n")
        return path


SCORECARD = Scorecard()  # the session's card (one pytest session per process)


def windowless(s: dict) -> bool:
    """A scenario that injected a fault or recorded a publish window, whose readers took no sample inside one."""
    return bool(s["faults"] or s.get("windows", 0)) and not s.get("window_samples", 0)


def totals(scenarios: list[dict]) -> dict:
    faulted = [s for s in scenarios if s["faults"]]
    return {
        "scenarios": len(scenarios),
        "by_kind": dict(Counter(s["kind"] for s in scenarios)),
        "fault_scenarios": len(faulted),
        "fault_scenarios_by_store": dict(Counter(s["store"] for s in faulted)),
        "faults_injected": sum(s["faults"] for s in scenarios),
        "faults_by_mode": dict(Counter(s["fault_mode"] for s in faulted)),
        "reader_samples": sum(s["reader_samples"] for s in scenarios),
        "window_samples": sum(s.get("window_samples", 0) for s in scenarios),
        "windowed_scenarios": sum(bool(s["faults"] or s.get("windows", 0)) for s in scenarios),
        "windowless": sum(windowless(s) for s in scenarios),
        "partial_states": sum(s["partial_states"] for s in scenarios),
        "duplicates": sum(s["duplicates"] for s in scenarios),
        "lost_partitions": sum(s["lost_partitions"] for s in scenarios),
        "deadlocks": sum(s.get("deadlocks", 0) for s in scenarios),
        "stale_publishes": sum(s.get("stale_publishes", 0) for s in scenarios),
        "failed": sum(s["outcome"] != "passed" for s in scenarios),
    }


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"


def failing(t: dict) -> bool:
    return bool(t["partial_states"] or t["duplicates"] or t["lost_partitions"] or t.get("deadlocks")
                or t.get("stale_publishes") or t.get("windowless") or t["failed"])


def format_scorecard(card: dict) -> str:
    t = card["totals"]
    verdict = "FAIL" if failing(t) else "PASS"
    lines = [
        f"idem reliability scorecard ({card['matrix']} matrix, {card['seconds']} s)",
        f"  scenarios run            {t['scenarios']:>6}   ({_counts(t['by_kind'])})",
        f"  fault scenarios          {t['fault_scenarios']:>6}   (by store: {_counts(t['fault_scenarios_by_store'])})",
        f"  faults injected          {t['faults_injected']:>6}   (by mode: {_counts(t['faults_by_mode'])})",
        f"  reader samples taken     {t['reader_samples']:>6}",
        f"  window samples           {t.get('window_samples', 0):>6}   "
        f"(inside a publish window; {t.get('windowed_scenarios', 0)} scenarios have a fault or a window, "
        f"{t.get('windowless', 0)} of them no window sample: must be 0)",
        f"  partial states seen      {t['partial_states']:>6}   (must be 0)",
        f"  duplicates found         {t['duplicates']:>6}   (must be 0)",
        f"  lost partitions          {t['lost_partitions']:>6}   (must be 0)",
        f"  deadlocks                {t.get('deadlocks', 0):>6}   (must be 0)",
        f"  stale publishes          {t.get('stale_publishes', 0):>6}   (must be 0)",
        f"  scenarios failed         {t['failed']:>6}",
        f"  verdict                  {verdict}",
    ]
    bad = [s for s in card["scenarios"] if s["outcome"] != "passed" or s["partial_states"] or s["duplicates"]
           or s["lost_partitions"] or s.get("deadlocks") or s.get("stale_publishes") or windowless(s)]
    for s in bad[:20]:
        why = "; ".join(s["examples"][:2]) or ("no reader sample inside a publish window" if windowless(s) else "")
        lines.append(f"  ! {s['id']}: {s['outcome']}; {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a reliability scorecard written by the suite")
    parser.add_argument("path", nargs="?", type=Path, default=None)
    parser.add_argument("--min-fault-scenarios", type=int, default=0)
    parser.add_argument("--min-scenarios", type=int, default=0)
    args = parser.parse_args(argv)
    path = args.path or scorecard_path()
    if not path.exists():
        print(f"no scorecard at {path}: run `pytest idem_platform_tests/reliability` first", file=sys.stderr)
        return 2
    card = json.loads(path.read_text())
    # Totals again from the scenarios: a card written before a field existed is judged by today's rules.
    card["totals"] = totals(card["scenarios"])
    print(format_scorecard(card))
    t = card["totals"]
    if failing(t):
        return 1
    if t["fault_scenarios"] < args.min_fault_scenarios:
        print(f"only {t['fault_scenarios']} fault scenarios; at least {args.min_fault_scenarios} required", file=sys.stderr)
        return 1
    if t["scenarios"] < args.min_scenarios:
        print(f"only {t['scenarios']} scenarios; at least {args.min_scenarios} required", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
