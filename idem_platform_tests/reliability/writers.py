"""Writers: publish a generation in a child process, and make it die at a fault point.

`write_child` runs `publish_partitions` in a child process of the suite's forkserver (processes.py), with
`IDEM_FAULT`/`IDEM_FAULT_MODE`/`IDEM_FAULT_ASSET` set in its own environment only. `os._exit(137)` and SIGKILL are
what they are in any process: no cleanup, the PostgreSQL connection drops, the open transaction is rolled back by
the server. `publish` is a clean write in this process; `wait_for` polls until a condition holds.
"""

from __future__ import annotations

import functools
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


def write_child(spec: WriteSpec, barrier=None) -> None:
    """Publish `spec` in this (child) process; with `spec.fault` it dies there, as `IDEM_FAULT` says."""
    for name in ("IDEM_FAULT", "IDEM_FAULT_MODE", "IDEM_FAULT_ASSET"):
        os.environ.pop(name, None)
    if spec.fault:
        os.environ["IDEM_FAULT"] = f"{spec.store.kind}:{spec.fault}"
        os.environ["IDEM_FAULT_MODE"] = spec.fault_mode
        os.environ["IDEM_FAULT_ASSET"] = spec.store.asset
    original = postgres_store.csv_chunks
    postgres_store.csv_chunks = functools.partial(original, chunk_rows=spec.store.pg_copy_chunk)
    sink = spec.store.sink()
    frame = frame_for(spec.gen, dict(spec.rows_by_day))
    if barrier is not None:
        barrier.wait(timeout=120)
    publish_partitions(sink, spec.store.postgres, spec.store.target(), spec.days, frame, spec.run_id)


def start_writer(spec: WriteSpec, barrier=None):
    process = forkserver().Process(target=write_child, args=(spec, barrier), name=f"writer-{spec.run_id}")
    process.start()
    return process


def run_writer(spec: WriteSpec, timeout: float = 120) -> int:
    """Run one writer process to its end; its exit code (137: os._exit at the fault, -9: SIGKILL, 0: done)."""
    process = start_writer(spec)
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        raise TimeoutError(f"writer {spec.run_id} still running after {timeout} s")
    return process.exitcode


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
