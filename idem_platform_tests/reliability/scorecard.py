"""The reliability scorecard: every scenario of the suite reports into it; it is written as JSON and printed.

    scenarios run, faults injected, reader samples taken, partial states seen (must be 0),
    duplicates found (must be 0), lost partitions (must be 0)

A scenario is one thing the suite does to the platform and then checks: a crash at one fault point, N
concurrent writers, a service fault, a security probe. Each records what it injected and what its readers saw:

- reader samples: one per (reader poll, store, day); the reader uses the path a user would use (SQL count on the
  table, a search on the day alias, reading the lake file);
- a partial state is a sample whose day content is neither a complete old nor a complete new content of that
  day (judged by per-generation row counts, not only the total), or whose keys are not unique;
- a duplicate is a sample or end state with a key more than once (also counted as a partial state);
- a lost partition is a day that was readable before and is not readable after.

The suite's conftest prints the card at the end of the pytest session (`pytest_terminal_summary`) and writes it to
`IDEM_RELIABILITY_SCORECARD` (default `test-output/reliability-scorecard.json`); `python -m
idem_platform_tests.reliability.scorecard [FILE] [--min-fault-scenarios N]` prints a written card again and exits 1
when it shows any partial state, duplicate, lost partition or failed scenario, or fewer fault scenarios than asked.
"""

from __future__ import annotations

import argparse
import json
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


@dataclass
class Scenario:
    id: str
    kind: str  # crash | concurrency | service | security
    store: str  # postgres | lake | elasticsearch | all | -
    faults: int = 0  # faults injected (a process killed at a fault point, a service taken away)
    fault_mode: str = ""  # exit | kill | service | ""
    reader_samples: int = 0
    partial_states: int = 0
    duplicates: int = 0
    lost_partitions: int = 0
    outcome: str = "running"  # passed | failed | running
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # the first partial states / failures, for the report
    note: str = ""  # e.g. the error a faulted run failed with

    def add_reader(self, summary: dict, store: str | None = None) -> None:
        """Fold a reader's summary (see readers.Reader) into the scenario; `store`: only that store's samples."""
        if store is not None:
            mine = summary.get("by_store", {}).get(store, {})
            examples = [e for e in summary["examples"] if f" {store}" in e]
            summary = {"samples": mine.get("samples", 0), "partial": mine.get("partial", 0),
                       "duplicates": mine.get("duplicates", 0), "lost": mine.get("lost", 0), "examples": examples}
        self.reader_samples += summary["samples"]
        self.partial_states += summary["partial"]
        self.duplicates += summary["duplicates"]
        self.lost_partitions += summary["lost"]
        self.examples.extend(summary["examples"][: max(0, 5 - len(self.examples))])


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
            # A scenario whose readers saw a partial state fails, whatever else it asserted.
            assert (scenario.partial_states, scenario.duplicates, scenario.lost_partitions) == (0, 0, 0), (
                f"{id}: partial states {scenario.partial_states}, duplicates {scenario.duplicates}, "
                f"lost partitions {scenario.lost_partitions}; first: {scenario.examples}"
            )
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
        "partial_states": sum(s["partial_states"] for s in scenarios),
        "duplicates": sum(s["duplicates"] for s in scenarios),
        "lost_partitions": sum(s["lost_partitions"] for s in scenarios),
        "failed": sum(s["outcome"] != "passed" for s in scenarios),
    }


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"


def format_scorecard(card: dict) -> str:
    t = card["totals"]
    verdict = "PASS" if not (t["partial_states"] or t["duplicates"] or t["lost_partitions"] or t["failed"]) else "FAIL"
    lines = [
        f"idem reliability scorecard ({card['matrix']} matrix, {card['seconds']} s)",
        f"  scenarios run            {t['scenarios']:>6}   ({_counts(t['by_kind'])})",
        f"  fault scenarios          {t['fault_scenarios']:>6}   (by store: {_counts(t['fault_scenarios_by_store'])})",
        f"  faults injected          {t['faults_injected']:>6}   (by mode: {_counts(t['faults_by_mode'])})",
        f"  reader samples taken     {t['reader_samples']:>6}",
        f"  partial states seen      {t['partial_states']:>6}   (must be 0)",
        f"  duplicates found         {t['duplicates']:>6}   (must be 0)",
        f"  lost partitions          {t['lost_partitions']:>6}   (must be 0)",
        f"  scenarios failed         {t['failed']:>6}",
        f"  verdict                  {verdict}",
    ]
    bad = [s for s in card["scenarios"] if s["outcome"] != "passed" or s["partial_states"] or s["duplicates"]
           or s["lost_partitions"]]
    for s in bad[:20]:
        lines.append(f"  ! {s['id']}: {s['outcome']}; {'; '.join(s['examples'][:2])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a reliability scorecard written by the suite")
    parser.add_argument("path", nargs="?", type=Path, default=None)
    parser.add_argument("--min-fault-scenarios", type=int, default=0)
    args = parser.parse_args(argv)
    path = args.path or scorecard_path()
    if not path.exists():
        print(f"no scorecard at {path}: run `pytest idem_platform_tests/reliability` first", file=sys.stderr)
        return 2
    card = json.loads(path.read_text())
    print(format_scorecard(card))
    t = card["totals"]
    if t["partial_states"] or t["duplicates"] or t["lost_partitions"] or t["failed"]:
        return 1
    if t["fault_scenarios"] < args.min_fault_scenarios:
        print(f"only {t['fault_scenarios']} fault scenarios; at least {args.min_fault_scenarios} required", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
