"""Helpers for the operating tests: `idem dev` (webserver + daemon) in a subprocess, its GraphQL API, the
headless browser, and Celery workers (deploy/celery/worker.sh).

Every server is started on a free port of 127.0.0.1, in a process group of its own, with its output in a log
file under the test's tmp path; `stop_group` ends exactly that group (politely first, then by force).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("IDEM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TEST_OUTPUT = REPO / "test-output"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5,
             alive: Callable[[], str | None] | None = None) -> Any:
    """Poll `probe` until it returns something truthy; `alive` returns a reason to stop early (a dead process)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if alive is not None and (reason := alive()):
            raise AssertionError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_groups(procs: list[subprocess.Popen], sig: int = signal.SIGINT, timeout: float = 60) -> bool:
    """Signal the process groups `procs` lead (all at once); wait for every group to go; kill what is left after
    `timeout`. Returns True when all ended by themselves (no SIGKILL needed)."""
    for proc in procs:  # started with start_new_session=True: the leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            proc.poll()
        if all(proc.returncode is not None and not group_alive(proc.pid) for proc in procs):
            return True
        time.sleep(0.25)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    return False


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60) -> bool:
    return stop_groups([proc], sig, timeout)


def start_in_group(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


# --- the webserver's GraphQL API --------------------------------------------------------------------------------

class GraphQLError(AssertionError):
    pass


def graphql(base_url: str, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise GraphQLError(f"GraphQL errors: {body['errors']}")
    return body["data"]


LOCATION_STATUS = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId status } }
  ... on PythonError { message stack }
  ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on PipelineNotFoundError { message }
  ... on UnauthorizedError { message } } }"""

RUN_STATUS = """query($runId: ID!) { runOrError(runId: $runId) { __typename
  ... on Run { status tags { key value } } } }"""

RUN_ERRORS = """query($runId: ID!) { logsForRun(runId: $runId, limit: 2000) { __typename
  ... on EventConnection { events { __typename ... on MessageEvent { message level } } } } }"""

ASSET_NODES = """{ assetNodes { assetKey { path } description isPartitioned
  owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  metadataEntries { label }
  assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } }"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def server_ready(base_url: str) -> bool:
    """The webserver answers and its code location finished loading (an error in loading fails the wait)."""
    try:
        with urllib.request.urlopen(f"{base_url}/server_info", timeout=5) as response:
            if response.status != 200:
                return False
        entries = graphql(base_url, LOCATION_STATUS, timeout=10)["workspaceOrError"]["locationEntries"]
    except (OSError, GraphQLError, KeyError, ValueError):
        return False
    for entry in entries:
        error = entry.get("locationOrLoadError") or {}
        if error.get("__typename") == "PythonError":
            raise AssertionError(f"code location {entry['name']} failed to load: {error.get('message')}")
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def launch_partition_run(base_url: str, job: str, partition: str, run_config: dict | None = None,
                         location: str = "idem_platform") -> dict:
    params = {
        "selector": {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": job},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "runConfigData": run_config or {},
    }
    result = graphql(base_url, LAUNCH_RUN, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise AssertionError(f"launchRun failed: {result}")
    return result["run"]


def run_status(base_url: str, run_id: str) -> str:
    return graphql(base_url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]


def run_error_messages(base_url: str, run_id: str) -> list[str]:
    events = graphql(base_url, RUN_ERRORS, {"runId": run_id})["logsForRun"].get("events", [])
    return [e["message"] for e in events if e.get("level") in ("ERROR", "CRITICAL")]


# --- idem dev ---------------------------------------------------------------------------------------------------

@dataclass
class DevServer:
    """`idem dev` running in a process group of its own: the webserver, the daemon and their code servers."""

    proc: subprocess.Popen
    port: int
    log: Path
    env: dict[str, str]
    statuses_seen: dict[str, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exited(self) -> str | None:
        if self.proc.poll() is not None:
            return f"`idem dev` exited with {self.proc.returncode}; its log ends with:\n{log_tail(self.log)}"
        return None

    def wait_ready(self, timeout: float = 240) -> None:
        wait_for(f"the webserver on {self.url} and its code location", lambda: server_ready(self.url), timeout,
                 interval=1, alive=self.exited)

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        seen = self.statuses_seen.setdefault(run_id, [])

        def finished() -> str | None:
            try:
                status = run_status(self.url, run_id)
            except (OSError, GraphQLError):
                return None
            if not seen or seen[-1] != status:
                seen.append(status)
            return status if status in FINISHED else None

        return wait_for(f"run {run_id} to finish", finished, timeout, interval=1, alive=self.exited)

    def ctrl_c(self, timeout: float = 90) -> bool:
        """What Ctrl-C in a terminal does: SIGINT to the whole foreground process group."""
        return stop_group(self.proc, signal.SIGINT, timeout)


@contextlib.contextmanager
def idem_dev(env: dict[str, str], log: Path, port: int | None = None) -> Iterator[DevServer]:
    """Run `.venv/bin/idem dev` from the project root on a free port of 127.0.0.1; always stopped afterwards."""
    port = port or free_port()
    proc = start_in_group([str(BIN / "idem"), "dev", "--host", "127.0.0.1", "--port", str(port)], env, log)
    server = DevServer(proc, port, log, env)
    try:
        yield server
    finally:
        if proc.poll() is None or group_alive(proc.pid):
            stop_group(proc, signal.SIGINT, timeout=60)


# --- the browser ------------------------------------------------------------------------------------------------

def chromium_or_skip() -> str:
    """The Chromium binary; in CI a missing browser is a failure (`.ci/run` installs it), elsewhere a skip."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def browser_page(chromium: str):
    """A page of a headless Chromium (1600 x 1000, 60 s default timeout); the browser is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def dismiss_dialogs(page, wait_ms: int = 10_000) -> None:
    """The first visit shows "Join the Dagster community": skip it. Later pages of the same browser context do
    not show it again; call those with a short `wait_ms`."""
    skip = page.get_by_role("button", name="Skip")
    with contextlib.suppress(Exception):
        skip.click(timeout=wait_ms)


def keep_screenshot(path: Path) -> Path:
    """Copy a screenshot to test-output/ (gitignored) so a human can look at it after the run."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    target = TEST_OUTPUT / path.name
    shutil.copyfile(path, target)
    return target


def number_pattern(n: int) -> str:
    """Regex for n written with or without thousands separators (the UI writes both: 1,059 and 1058)."""
    return f"{n:,}".replace(",", ",?")


# --- Celery workers ---------------------------------------------------------------------------------------------

@dataclass
class CeleryWorker:
    name: str
    proc: subprocess.Popen
    log: Path

    def ready(self) -> bool:
        return f"{self.name}@" in (text := log_tail(self.log, 200_000)) and " ready." in text

    def exited(self) -> str | None:
        if self.proc.poll() is not None:
            return f"celery worker {self.name} exited with {self.proc.returncode}:\n{log_tail(self.log)}"
        return None



@contextlib.contextmanager
def celery_workers(env: dict[str, str] | list[dict[str, str]], names: list[str], log_dir: Path,
                   timeout: float = 120) -> Iterator[list[CeleryWorker]]:
    """Start `deploy/celery/worker.sh NAME` for each name (`env`: one for all, or one per worker), wait until every
    one is ready; stop them all after."""
    envs = env if isinstance(env, list) else [env] * len(names)
    workers = [
        CeleryWorker(name, start_in_group([str(REPO / "deploy" / "celery" / "worker.sh"), name], worker_env,
                                          log_dir / f"worker-{name}.log"), log_dir / f"worker-{name}.log")
        for name, worker_env in zip(names, envs)
    ]
    try:
        for worker in workers:
            wait_for(f"celery worker {worker.name} to be ready", worker.ready, timeout, alive=worker.exited)
        yield workers
    finally:
        # SIGTERM = Celery's warm shutdown (finish the current step, then exit); all workers at once
        stop_groups([worker.proc for worker in workers], signal.SIGTERM, timeout=60)


def delete_celery_queue(broker_url: str, queue: str) -> None:
    """Remove a test's queue from the broker (declared durable, it would outlive the test). On Redis, kombu also
    keeps binding sets named after the queue; every key holding the (unique) queue name goes."""
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(broker_url, connect_timeout=5) as connection:
        connection.default_channel.queue_delete(queue)
    if broker_url.startswith("redis://"):
        import redis

        with contextlib.suppress(Exception):
            client = redis.Redis.from_url(broker_url, socket_timeout=5)
            keys = list(client.scan_iter(match=f"*{queue}*"))
            if keys:
                client.delete(*keys)
            client.close()
