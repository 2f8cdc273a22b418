"""Writers: publish a generation in a child process, and make it die at a fault point.

`write_child` runs `publish_partitions` in a child process of the suite's forkserver (processes.py), with
`IDEM_FAULT`/`IDEM_FAULT_MODE`/`IDEM_FAULT_ASSET` set in its own environment only. `os._exit(137)` and SIGKILL are
what they are in any process: no cleanup, the PostgreSQL connection drops, the open transaction is rolled back by
the server. `WriterProcesses` starts and joins a scenario's writer processes and tells the scenario each one's
publish window (from just before its `publish_partitions` to its end: the time reported by the child, or, for a
child that died, the time the parent saw it gone) and what each failed with or logged (a deadlock is counted).
`publish` is a clean write in this process; `wait_for` polls until a condition holds.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from idem_platform.storage import ledger, postgres_store
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink
from idem_platform.storage.partition_store import publish_partitions
from idem_platform_tests.reliability.content import frame_for
from idem_platform_tests.reliability.processes import forkserver
from idem_platform_tests.reliability.stores import StoreSpec


@dataclass(frozen=True)
class WriteSpec:
    store: StoreSpec
    gen: str
    rows_by_day: tuple[tuple[str, int], ...]
    run_id: str
    fault: str | None = None  # a fault point of faults.POINTS
    fault_mode: str = "exit"  # exit | kill

    @property
    def days(self) -> list[str]:
        return [d for d, _ in self.rows_by_day]


class _Report(logging.Handler):
    """In a writer child: the deadlocks the write path logs while it retries them, to the parent."""

    def __init__(self, report, run_id: str):
        super().__init__(logging.WARNING)
        self.report, self.run_id = report, run_id

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "deadlock" in text.lower():
            self.report.put(("logged", self.run_id, text[:2000]))


def write_child(spec: WriteSpec, barrier=None, report=None) -> None:
    """Publish `spec` in this (child) process; with `spec.fault` it dies there, as `IDEM_FAULT` says. `report`
    (a queue): ("start", run id, t) just before the write, ("end", run id, t, error or "") after it."""
    for name in ("IDEM_FAULT", "IDEM_FAULT_MODE", "IDEM_FAULT_ASSET"):
        os.environ.pop(name, None)
    if spec.fault:
        os.environ["IDEM_FAULT"] = f"{spec.store.kind}:{spec.fault}"
        os.environ["IDEM_FAULT_MODE"] = spec.fault_mode
        os.environ["IDEM_FAULT_ASSET"] = spec.store.asset
    postgres_store.COPY_CHUNK_ROWS = spec.store.pg_copy_chunk
    sink = spec.store.sink()
    frame = frame_for(spec.gen, dict(spec.rows_by_day))
    if report is not None:
        logging.getLogger("idem_platform").addHandler(_Report(report, spec.run_id))
    if barrier is not None:
        barrier.wait(timeout=120)
    if report is not None:
        report.put(("start", spec.run_id, time.monotonic()))
    error = ""
    try:
        publish_partitions(sink, spec.store.postgres, spec.store.target(), spec.days, frame, spec.run_id)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        if report is not None:
            report.put(("end", spec.run_id, time.monotonic(), error))


class WriterProcesses:
    """The writer processes of one scenario. `scenario` (a scorecard `Scenario`, or None) is told each writer's
    publish window and what each failed with or logged; `errors` keeps the failures by run id."""

    def __init__(self, scenario=None):
        self.scenario = scenario
        self.report = forkserver().SimpleQueue()
        self.started: list[tuple[WriteSpec, Any, float]] = []  # (spec, process, monotonic time before its start)
        self.errors: dict[str, str] = {}

    def start(self, spec: WriteSpec, barrier=None):
        process = forkserver().Process(target=write_child, args=(spec, barrier, self.report), name=f"writer-{spec.run_id}")
        self.started.append((spec, process, time.monotonic()))
        process.start()
        return process

    def join(self, timeout: float = 180) -> list[int | None]:
        """Wait for every writer started; their exit codes (137: os._exit at the fault, -9: SIGKILL, 0: done).
        A writer still running after `timeout` is killed and a TimeoutError raised (its window is recorded)."""
        deadline = time.monotonic() + timeout
        gone, late = {}, []
        for spec, process, _ in self.started:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                late.append(spec.run_id)
                process.kill()
                process.join()
            gone[spec.run_id] = time.monotonic()
        exitcodes = [process.exitcode for _, process, _ in self.started]
        self._collect(gone)
        if late:
            raise TimeoutError(f"writers {late} still running after {timeout} s")
        return exitcodes

    def _collect(self, gone: dict[str, float]) -> None:
        began, ended = {}, {}
        while not self.report.empty():
            kind, run_id, *rest = self.report.get()
            if kind == "start":
                began[run_id] = rest[0]
            elif kind == "end":
                ended[run_id] = rest[0]
                if rest[1]:
                    self.errors[run_id] = rest[1]
                    if self.scenario is not None:
                        self.scenario.writer_error(rest[1])
            elif kind == "logged" and self.scenario is not None:
                self.scenario.writer_error(f"logged: {rest[0]}")
        for spec, _, started in self.started:
            if self.scenario is not None and spec.run_id in gone:
                self.scenario.window(began.get(spec.run_id, started), ended.get(spec.run_id, gone[spec.run_id]))
        self.started = [entry for entry in self.started if entry[0].run_id not in gone]


def run_writer(spec: WriteSpec, timeout: float = 120, scenario=None) -> int:
    """Run one writer process to its end; its exit code (137: os._exit at the fault, -9: SIGKILL, 0: done).
    `scenario`: told the writer's publish window and what it failed with (see `WriterProcesses`)."""
    writers = WriterProcesses(scenario)
    writers.start(spec)
    [exitcode] = writers.join(timeout)
    return exitcode


def publish(spec: StoreSpec, gen: str, rows_by_day: dict[str, int], run_id: str) -> list[ledger.LedgerEntry]:
    """A clean write of a generation, in this process."""
    sink = spec.sink()
    try:
        return publish_partitions(sink, spec.postgres, spec.target(), sorted(rows_by_day), frame_for(gen, rows_by_day), run_id)
    finally:
        if isinstance(sink, ElasticsearchIndexSink):
            sink.client.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
