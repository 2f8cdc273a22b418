"""The Dagster run path: the suite's content as an `@idem_asset`, materialized in-process by the real IO manager;
and CLI runs started together (`run_together`), each with the interval it ran in (its publish window)."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from idem_platform.storage.schema import PARTITION_COLUMN
from idem_platform_tests.reliability.content import DECL, frame_for
from idem_platform_tests.reliability.stores import StoreSpec


def dagster_asset(spec: StoreSpec, io_manager_key: str, gen: str, rows_by_day: dict[str, int]):
    """The suite's content as an `@idem_asset` named `spec.asset`: materializing it runs the real IO manager path."""
    from idem_platform.declare import idem_asset

    columns = {c.name: c.type for c in DECL.columns if c.name != PARTITION_COLUMN}

    def compute(context):  # unannotated: this module has postponed annotations, Dagster would see a string
        return frame_for(gen, {d: rows_by_day[d] for d in context.partition_keys})

    return idem_asset(columns=columns, key=["id"], io_manager_key=io_manager_key, name=spec.asset)(compute)


def materialize(asset, resources: dict, days: list[str]):
    """One in-process Dagster run of `days` (a range run when several); never raises on a failed run."""
    import dagster as dg

    tags = None
    if len(days) > 1:
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    return dg.materialize(
        [asset], partition_key=None if tags else days[0], tags=tags, resources=resources,
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )


def failure_message(result) -> str:
    return "\n".join(e.step_failure_data.error.to_string() for e in result.get_step_failure_events())


@dataclass
class CliRun:
    command: list[str]
    returncode: int | None = None
    output: str = ""
    start: float = 0.0  # time.monotonic() just before the process started
    end: float = 0.0  # ... just after it ended (each run is waited for in a thread of its own)

    def deadlock_lines(self) -> list[str]:
        """The lines of its output that name a deadlock (a failure, or a deadlock the write path retried)."""
        return [line.strip()[:300] for line in self.output.splitlines() if "deadlock" in line.lower()]


def run_together(commands: list[list[str]], env: dict[str, str] | list[dict[str, str]], timeout: float = 600) -> list[CliRun]:
    """Start every command at once (`env`: one for all, or one per command) and wait for all; each run's output,
    exit code and [start, end]."""
    from idem_platform_tests.cli_runs import start

    runs = [CliRun(command) for command in commands]

    def wait(run: CliRun, proc) -> None:
        try:
            run.output = proc.communicate(timeout=timeout)[0]
        except Exception:  # a run that hangs: killed, reported as failed
            proc.kill()
            run.output = proc.communicate()[0] + f"\n(killed after {timeout} s)"
        run.returncode = proc.returncode
        run.end = time.monotonic()

    envs = env if isinstance(env, list) else [env] * len(commands)
    threads = []
    for run, run_env in zip(runs, envs):
        run.start = time.monotonic()
        thread = threading.Thread(target=wait, args=(run, start(run.command, run_env)), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return runs


def names_asset(line: str, asset: str) -> bool:
    """Whether a log line names `asset` as a whole word (`people` is not named by `raw_people`)."""
    return re.search(rf"(?<![\w.]){re.escape(asset)}(?![\w])", line) is not None
