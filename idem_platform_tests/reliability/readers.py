"""Readers: poll stores while a scenario runs and classify every sample.

`Reader` polls a set of stores in a thread or a separate process until stopped, judges every sample against the
complete states a day may be in (`Expectation`, `Judge`: complete, absent, partial, duplicate, lost), and summarises
for the scorecard. Every sample is timestamped (`time.monotonic()` before its first request and after its last
answer; one read of several days, as the SQL probe's, gives them all its interval): `sample_times` in the
summary, so the scorecard can tell which samples fell inside a publish window.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from idem_platform_tests.reliability.probes import Observed, Probe
from idem_platform_tests.reliability.processes import forkserver
from idem_platform_tests.reliability.stores import StoreSpec


@dataclass
class Expectation:
    """The complete states each day may be in while a scenario runs (`{}`: published empty)."""

    accepted: dict[str, list[dict[str, int]]]
    present_from_start: bool = True  # the days were published before the reader started

    @property
    def days(self) -> list[str]:
        return sorted(self.accepted)


@dataclass
class Judge:
    expectation: Expectation
    samples: int = 0
    partial: int = 0
    duplicates: int = 0
    lost: int = 0
    states: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    seen: dict = field(default_factory=dict)
    by_store: dict = field(default_factory=dict)  # store -> Counter of samples, partial, duplicates, lost
    sample_times: list = field(default_factory=list)  # (store, start, end, samples): when samples were read

    def judge(self, store: str, path: str, day: str, obs: Observed | None) -> str:
        accepted = self.expectation.accepted[day]
        key = (store, path, day)
        seen = self.seen.get(key, self.expectation.present_from_start)
        if obs is not None and obs.total == 0 and {} not in accepted:
            obs = None  # no rows and not a day published empty: not there (a table or a read alias)
        if obs is None:
            verdict = "lost" if seen else "absent"
        elif obs.distinct != obs.total:
            verdict = "duplicate"
        elif obs.gens in accepted:
            verdict = "complete"
        else:
            verdict = "partial"
        if obs is not None:
            self.seen[key] = True
        self.samples += 1
        self.states[verdict] += 1
        mine = self.by_store.setdefault(store, Counter())
        mine["samples"] += 1
        if verdict in ("lost", "duplicate", "partial"):
            self.partial += verdict != "lost"
            self.duplicates += verdict == "duplicate"
            self.lost += verdict == "lost"
            mine["partial"] += verdict != "lost"
            mine["duplicates"] += verdict == "duplicate"
            mine["lost"] += verdict == "lost"
            if len(self.examples) < 5:
                self.examples.append(f"{verdict}: {store}{'/' + path if path else ''} {day} saw {obs} "
                                     f"(complete states: {accepted})")
        return verdict

    def error(self, store: str, exc: Exception) -> None:
        self.samples += 1
        self.partial += 1
        self.states["error"] += 1
        mine = self.by_store.setdefault(store, Counter())
        mine["samples"] += 1
        mine["partial"] += 1
        if len(self.examples) < 5:
            self.examples.append(f"reader error: {store} {exc!r}"[:300])

    def summary(self) -> dict:
        return {"samples": self.samples, "partial": self.partial, "duplicates": self.duplicates, "lost": self.lost,
                "states": dict(self.states), "examples": self.examples,
                "by_store": {k: dict(v) for k, v in self.by_store.items()}, "sample_times": self.sample_times}


def poll_once(probes: list[Probe], judge: Judge) -> int:
    """Sample every day in every store once; returns the number of reader errors."""
    days, errors = judge.expectation.days, 0
    for probe in probes:
        start = time.monotonic()
        try:
            observed = probe.sample(days)
        except Exception as exc:  # a reader error is a sample too: a user would have got it
            errors += 1
            judge.error(probe.spec.kind, exc)
            judge.sample_times.append((probe.spec.kind, start, time.monotonic(), 1))
            continue
        end = time.monotonic()
        for sample in observed:
            judge.sample_times.append((probe.spec.kind, *probe.timing.get(sample, (start, end)), 1))
        for (path, day), obs in observed.items():
            judge.judge(probe.spec.kind, path, day, obs)
    return errors


def _reader_loop(specs: list[StoreSpec], expectation: Expectation, stop, interval: float, ready=None) -> dict:
    judge = Judge(expectation)
    errors = 0
    probes = []
    try:
        probes = [spec.probe() for spec in specs]
        while True:
            last = stop.is_set()  # one more poll after stop: the end state is sampled too
            errors += poll_once(probes, judge)
            if ready is not None:
                ready.set()
            if last:
                break
            time.sleep(interval)
    finally:
        if ready is not None:
            ready.set()
        for probe in probes:
            probe.close()
    summary = judge.summary()
    summary["errors"] = errors
    return summary


def _reader_process(specs, expectation, stop, results, interval, ready):
    try:
        results.put(_reader_loop(specs, expectation, stop, interval, ready))
    except BaseException:
        results.put({"samples": 0, "partial": 1, "duplicates": 0, "lost": 0, "states": {}, "errors": 1,
                     "examples": [traceback.format_exc()[-500:]], "sample_times": []})


class Reader:
    """Polls `specs` until `stop()`; in a separate process (`process=True`) or a thread of this one. Entering it
    returns once the first poll is done: the readers sample from before the scenario's writers start."""

    def __init__(self, specs: list[StoreSpec], expectation: Expectation, *, process: bool = False,
                 interval: float = 0.005):
        self.process = process
        if process:
            ctx = forkserver()
            self._stop, self._results, self._ready = ctx.Event(), ctx.Queue(), ctx.Event()
            self._worker = ctx.Process(target=_reader_process,
                                       args=(specs, expectation, self._stop, self._results, interval, self._ready))
        else:
            self._stop, self._result, self._ready = threading.Event(), {}, threading.Event()
            self._worker = threading.Thread(
                target=lambda: self._result.update(_reader_loop(specs, expectation, self._stop, interval, self._ready)),
                daemon=True,
            )

    def __enter__(self) -> Reader:
        self._worker.start()
        self._ready.wait(60)
        return self

    def __exit__(self, *exc) -> None:
        if not self._stop.is_set():
            self.stop()

    def stop(self) -> dict:
        self._stop.set()
        if self.process:
            summary = self._results.get(timeout=120)
            self._worker.join(timeout=30)
        else:
            self._worker.join(timeout=120)
            summary = self._result
        self.summary = summary
        return summary
