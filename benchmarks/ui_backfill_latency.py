"""How long a backfill launched from the UI takes, click to done: `idem dev` plus people_job's "Materialize all".

    .venv/bin/python benchmarks/ui_backfill_latency.py [--days 3] [--repeat 3] [--dsn postgresql://...] [--watch 0]
                                                       [--jitter 30] [--seed 1]

Starts `idem dev` (webserver, daemon, their code server) on a free port with a DAGSTER_HOME, state directory and
local search server of its own, on a fresh database of the server `--dsn` names (dropped afterwards). Then, --repeat
times, launches a backfill of the last `--days` days of people_job through the webserver's GraphQL API exactly as
the launch dialog does (the job's partition set, its three assets, the chosen days) and times, from the launch:
the run being created (the backfill daemon's tick), the run starting (the run queue's dequeue), the run ending,
and the backfill being marked completed (another backfill tick). Each launch waits a random 0..--jitter seconds
first, as a person clicks at any moment of the daemon's cycle (launched right after a backfill completed, it would
always wait a whole cycle). `--watch N` keeps `idem dev` running N more
seconds and counts the lines of its log that say a code server heard no heartbeat.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from idem_platform.partitions import last_n_days  # noqa: E402
from idem_platform_tests.ui_helpers import graphql, idem_dev, log_tail, wait_for  # noqa: E402

LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status runs(limit: 10) { runId status startTime endTime creationTime } } } }"""
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
NO_HEARTBEAT = "No heartbeat received"


def launch_backfill(url: str, days: list[str]) -> str:
    params = {
        "selector": {"partitionSetName": "people_job_partition_set",
                     "repositorySelector": {"repositoryLocationName": "idem_platform", "repositoryName": "__repository__"}},
        "assetSelection": [{"path": [a]} for a in ("raw_people", "people", "people_search")],
        "partitionNames": days,
        "fromFailure": False,
        "tags": [],
    }
    result = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise AssertionError(f"launchPartitionBackfill failed: {result}")
    return result["backfillId"]


def timed_backfill(dev, days: list[str]) -> dict[str, float]:
    t0 = time.time()
    backfill_id = launch_backfill(dev.url, days)
    marks: dict[str, float] = {}

    def done() -> bool:
        backfill = graphql(dev.url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        now = time.time() - t0
        runs = backfill.get("runs") or []
        if runs:
            marks.setdefault("run created", min(r["creationTime"] for r in runs) - t0)
            if all(r["startTime"] for r in runs):
                marks.setdefault("run started", max(r["startTime"] for r in runs) - t0)
            if all(r["endTime"] for r in runs):
                marks.setdefault("run ended", max(r["endTime"] for r in runs) - t0)
                marks["runs"] = len(runs)
                bad = [r for r in runs if r["status"] != "SUCCESS"]
                if bad:
                    raise AssertionError(f"backfill {backfill_id}: runs ended {bad}")
        if backfill["status"] in DONE:
            marks["backfill completed"] = now
            if backfill["status"] not in ("COMPLETED", "COMPLETED_SUCCESS"):
                raise AssertionError(f"backfill {backfill_id} ended {backfill['status']}")
            return True
        return False

    wait_for(f"backfill {backfill_id}", done, timeout=600, interval=0.5, alive=dev.exited)
    return marks


@contextlib.contextmanager
def fresh_database(admin_dsn: str):
    name = f"idem_latency_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default=os.environ.get("IDEM_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a server where a database can be created (the database itself is not used)")
    parser.add_argument("--watch", type=float, default=0, help="seconds to keep idem dev running afterwards")
    parser.add_argument("--jitter", type=float, default=30, help="wait a random 0..N s before each launch")
    parser.add_argument("--seed", type=int, default=1, help="of the random waits (the same waits before and after)")
    args = parser.parse_args()
    days = last_n_days(args.days)
    with fresh_database(args.dsn) as dsn, tempfile.TemporaryDirectory(prefix="idem-latency-") as tmp:
        env = {**os.environ, "IDEM_PG_DSN": dsn, "DAGSTER_HOME": f"{tmp}/dagster_home", "IDEM_STATE_DIR": f"{tmp}/state",
               "IDEM_LATE_DATA_INTERVAL_SECONDS": "300", "IDEM_INBOX_SENSOR_INTERVAL": "300"}
        env.pop("IDEM_ES_URL", None)  # idem dev starts the local search server of this state directory
        log = Path(tmp) / "idem-dev.log"
        with idem_dev(env, log) as dev:
            started = time.monotonic()
            dev.wait_ready()
            print(f"idem dev ready in {time.monotonic() - started:.1f} s", flush=True)
            results = []
            waits = random.Random(args.seed)
            for i in range(args.repeat):
                time.sleep(waits.uniform(0, args.jitter))
                marks = timed_backfill(dev, days)
                results.append(marks)
                print(f"backfill {i + 1} of {days[0]}...{days[-1]}: "
                      + ", ".join(f"{k} {v:.1f} s" if k != "runs" else f"{k} {v}" for k, v in marks.items()), flush=True)
            if args.watch:
                time.sleep(args.watch)
            lines = log.read_text(errors="replace").splitlines()
            uptime = time.monotonic() - started
        for key in ("run created", "run started", "run ended", "backfill completed"):
            values = [m[key] for m in results if key in m]
            if values:
                print(f"median {key}: {statistics.median(values):.1f} s (of {len(values)}: "
                      f"{', '.join(f'{v:.1f}' for v in values)})")
        heartbeats = [line for line in lines if NO_HEARTBEAT in line]
        print(f"'{NO_HEARTBEAT}' lines in the log of {uptime:.0f} s of idem dev: {len(heartbeats)}")
        if not results:
            print(log_tail(log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
