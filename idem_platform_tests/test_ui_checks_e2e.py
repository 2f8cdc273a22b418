"""Issue 19's acceptance, clicked through in headless Chromium against `idem dev` (webserver + daemon on an
instance of the test's own), as a person would:

1. after `idem run --days 3`, people -> Checks -> fingerprint_matches_ledger -> Partitions shows the 3 days
   passed (verdict "identical"); after an out-of-band UPDATE of one row of the middle day, a re-check of that day
   (a) launched from recheck_job's Launchpad with its partition picker and (b) `idem verify people --partition
   DAY` on the command line (same DAGSTER_HOME: it records its verdicts in an `idem_verify` run) shows that day
   failed with verdict "drifted", the other two still passed; a repairing run of the day
   (`dagster asset materialize`) makes it passed again. A screenshot of each state goes to test-output/.
2. "Execute all" on people's Checks tab (after a range materialization) launches runs that all succeed, and
   records each published day's checks.

Plus, in process: recheck_job is partitioned (Dagster drops `partitions_def` from a checks-only asset job, which
left the Launchpad without a partition picker and made drift_check_schedule's partitioned run requests fail).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from idem_platform_tests.cli_runs import BIN, materialize_command, run
from idem_platform_tests.ui_helpers import (
    TEST_OUTPUT,
    browser_page,
    chromium_or_skip,
    dismiss_dialogs,
    graphql,
    idem_dev,
    keep_screenshot,
    log_tail,
    run_error_messages,
    wait_for,
)

CHECK = "fingerprint_matches_ledger"
UI_TIMEOUT = 90_000  # ms; the machine is shared, pages can take tens of seconds

RUNS = """query($filter: RunsFilter) { runsOrError(filter: $filter, limit: 100) { __typename
  ... on Runs { results { runId jobName status assetCheckSelection { name assetKey { path } } } } } }"""

CHECK_EXECUTIONS = """query($check: String!) {
  assetCheckExecutions(assetKey: {path: ["people"]}, checkName: $check, limit: 100) {
    runId status partition evaluation { partition success } } }"""


@pytest.fixture
def dev_env(cli_env, make_database, tmp_path) -> dict[str, str]:
    """cli_env (this test's warehouse schema, lake and search server) on an instance of its own, so the Partitions
    view and the runs list hold only this test's runs."""
    return {
        **cli_env,
        "IDEM_PG_DSN": make_database("idem_uichk"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        # the daemon's sensors tick rarely: they are not what this test watches, and the machine is shared
        "IDEM_LATE_DATA_INTERVAL_SECONDS": "300",
        "IDEM_INBOX_SENSOR_INTERVAL": "300",
    }


# --- the command line ---------------------------------------------------------------------------------------------

def idem(env: dict[str, str], *args: str, timeout: float = 600):
    return run([str(BIN / "idem"), *args], env, timeout=timeout)


@contextlib.contextmanager
def dev_after_idem_run(env: dict[str, str], log: Path, days: int, timings: dict[str, float]):
    """`idem dev`, and once it has prepared the instance (it prints the UI's address after migrating it),
    `idem run --days N` while the code location loads. Yields the server and the days `idem run` materialized."""
    started = time.monotonic()
    with idem_dev(env, log) as dev:
        wait_for("`idem dev` to prepare the instance", lambda: "Dagster UI: http" in log_tail(log, 100_000), 180,
                 alive=dev.exited)
        t0 = time.monotonic()
        done = idem(env, "run", "--days", str(days))
        timings[f"idem run --days {days}"] = time.monotonic() - t0
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        first, last = re.search(r" for (\d{4}-\d\d-\d\d)\.\.\.(\d{4}-\d\d-\d\d) as one run", done.stdout).groups()
        run_days = [(dt.date.fromisoformat(first) + dt.timedelta(days=i)).isoformat() for i in range(days)]
        assert run_days[-1] == last
        summary = [line.split() for line in done.stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\d\s+people\s", line)]
        assert [(s[0], s[3]) for s in summary] == [(d, "1000") for d in run_days], done.stdout[-3000:]
        dev.wait_ready()
        timings["idem dev ready (idem run meanwhile)"] = time.monotonic() - started
        yield dev, run_days


def runs(url: str, **run_filter) -> list[dict]:
    return graphql(url, RUNS, {"filter": run_filter or None})["runsOrError"]["results"]


def check_executions(url: str, check: str = CHECK) -> list[dict]:
    return graphql(url, CHECK_EXECUTIONS, {"check": check})["assetCheckExecutions"]


# --- the browser --------------------------------------------------------------------------------------------------

def body(page) -> str:
    return page.inner_text("body")


def open_check_partitions(page, url: str, check: str = CHECK, first_visit: bool = False) -> None:
    """Asset people -> Checks tab -> the check -> its Partitions tab, clicked as a person would (a fresh page load,
    so the view shows what the instance holds now)."""
    from playwright.sync_api import expect

    page.goto(f"{url}/assets/people", wait_until="domcontentloaded")
    dismiss_dialogs(page, wait_ms=10_000 if first_visit else 1_000)
    page.get_by_role("tab", name="Checks", exact=True).click(timeout=UI_TIMEOUT)
    page.get_by_text(check, exact=True).first.click(timeout=UI_TIMEOUT)  # the check in the list of checks
    check_tabs = page.get_by_role("tablist").filter(has=page.get_by_role("tab", name="Execution history"))
    check_tabs.get_by_role("tab", name="Partitions", exact=True).click(timeout=UI_TIMEOUT)
    expect(page.get_by_text(re.compile(r"^[\d,]+ Partitions Selected$"))).to_be_visible(timeout=UI_TIMEOUT)


def expect_counts(page, passed: int, failed: int) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_text(f"Passed ({passed})", exact=True)).to_be_visible(timeout=UI_TIMEOUT)
    expect(page.get_by_text(f"Failed ({failed})", exact=True)).to_be_visible(timeout=UI_TIMEOUT)
    expect(page.get_by_text("Execution Failed (0)", exact=True)).to_be_visible(timeout=UI_TIMEOUT)


def day_detail(page, day: str) -> dict[str, str]:
    """Click the day in the check's partition list; returns what its detail pane says: status, run (its first 8
    characters, as the UI prints it) and the evaluation's metadata (label -> value)."""
    # the list's rows carry the day as their title (the partition bar's end label is the same text)
    page.get_by_title(day, exact=True).first.click(timeout=UI_TIMEOUT)
    pattern = re.compile(rf"(?:^|\n){re.escape(day)}\n(?:{re.escape(day)}\n)?(Passed|Failed)\nLatest execution\n(.*)",
                         re.S)
    seen: list[str] = []

    def settled():  # the same detail twice in a row: the pane has finished loading the day
        found = pattern.search(body(page))
        seen.append(found.group(0) if found else "")
        return found if found and len(seen) > 1 and seen[-2] == seen[-1] else None

    status, rest = wait_for(f"the detail of {day}", settled, timeout=UI_TIMEOUT / 1000, interval=1).groups()
    lines = [line.strip() for line in rest.splitlines() if line.strip()]
    run_id = lines[lines.index("Run") + 1] if "Run" in lines else ""
    metadata_lines = lines[lines.index("Metadata") + 1:] if "Metadata" in lines else []
    metadata = dict(zip(metadata_lines[0::2], metadata_lines[1::2]))
    return {"status": status, "run": run_id, **metadata}


def shot(page, tmp_path: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    keep_screenshot(path)


def update_one_row(env: dict[str, str], day: str) -> int:
    """Behind the pipeline's back: one row of the day in the warehouse table changes."""
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        return conn.execute(
            f'UPDATE "{env["IDEM_PG_SCHEMA"]}".people SET email = %s WHERE partition_date = %s AND person_id = '
            f'(SELECT min(person_id) FROM "{env["IDEM_PG_SCHEMA"]}".people WHERE partition_date = %s)',
            ("edited.behind.the.pipeline@example.org", day, day),
        ).rowcount


def launch_from_launchpad(page, url: str, job: str, day: str, screenshot: Path | None = None) -> str:
    """Jobs -> JOB -> Launchpad; pick the day in the partition picker; Launch Run. Returns the run's id."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, expect

    page.goto(f"{url}/locations/idem_platform/jobs/{job}", wait_until="domcontentloaded")
    dismiss_dialogs(page, wait_ms=1_000)
    page.get_by_role("tab", name="Launchpad", exact=True).click(timeout=UI_TIMEOUT)
    picker = page.get_by_placeholder("Partition", exact=True)
    option = page.get_by_role("menuitem", name=day, exact=True)

    def offered() -> bool:  # the picker loads the job's partitions after it renders: type again until offered
        picker.click(timeout=UI_TIMEOUT)
        picker.fill("")
        picker.press_sequentially(day, delay=50)
        with contextlib.suppress(PlaywrightTimeout):
            option.wait_for(state="visible", timeout=10_000)
        return option.is_visible()

    try:
        wait_for(f"the partition picker to offer {day}", offered, timeout=UI_TIMEOUT / 1000, interval=1)
    except AssertionError:
        page.screenshot(path=str(TEST_OUTPUT / f"{job}-launchpad-no-{day}.png"))
        raise
    option.click(timeout=UI_TIMEOUT)
    # the picked partition becomes the run's tag
    expect(page.get_by_text(f"partition: {day}", exact=True)).to_be_visible(timeout=UI_TIMEOUT)
    if screenshot:
        shot(page, screenshot.parent, screenshot.name)
    page.get_by_role("button", name="Launch Run").click(timeout=UI_TIMEOUT)
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=UI_TIMEOUT)
    return re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)


# --- the tests ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_check_partitions_show_passed_drifted_and_repaired_days(dev_env, tmp_path):
    chromium = chromium_or_skip()

    timings: dict[str, float] = {}
    started = time.monotonic()
    with dev_after_idem_run(dev_env, tmp_path / "idem-dev.log", 3, timings) as (dev, days):
        edited = days[1]
        with browser_page(chromium) as page:
            # 1. after the range run: 3 days passed, each "identical", linked to that run's materialization
            t0 = time.monotonic()
            open_check_partitions(page, dev.url, first_visit=True)
            expect_counts(page, passed=3, failed=0)
            range_run = next(r for r in runs(dev.url) if r["jobName"] == "__ASSET_JOB")["runId"]
            for day in days:
                detail = day_detail(page, day)
                assert (detail["status"], detail.get("verdict"), detail["run"]) == (
                    "Passed", "identical", range_run[:8]), (day, detail)
            shot(page, tmp_path, "check-partitions-1-after-idem-run.png")
            timings["browser: 3 days passed"] = time.monotonic() - t0

            # 2a. an out-of-band edit of one row, re-checked from the UI: recheck_job's Launchpad, that day
            assert update_one_row(dev_env, edited) == 1
            t0 = time.monotonic()
            recheck_run = launch_from_launchpad(page, dev.url, "recheck_job", edited,
                                                tmp_path / "recheck-job-launchpad-day-picked.png")
            status = dev.wait_for_run(recheck_run, timeout=300)
            assert status == "SUCCESS", (  # a check that fails is a finding, not a failed run
                f"recheck run {recheck_run} ended {status}: {run_error_messages(dev.url, recheck_run)[:5]}")
            timings["UI re-check (launch -> success)"] = time.monotonic() - t0
            open_check_partitions(page, dev.url)
            expect_counts(page, passed=2, failed=1)
            detail = day_detail(page, edited)
            assert (detail["status"], detail.get("verdict"), detail["run"]) == (
                "Failed", "drifted", recheck_run[:8]), detail
            assert detail["ledger"] != detail["sink"]
            for day in (days[0], days[2]):
                assert day_detail(page, day)["status"] == "Passed", day
            day_detail(page, edited)
            shot(page, tmp_path, "check-partitions-2-drifted-after-ui-recheck.png")

            # 2b. the same day verified on the command line: recorded on the instance as an idem_verify run
            t0 = time.monotonic()
            verify = idem(dev_env, "verify", "people", "--partition", edited)
            timings["idem verify"] = time.monotonic() - t0
            assert verify.returncode == 2, verify.stdout + verify.stderr[-3000:]  # 2: drifted
            assert f"people {edited}: drifted" in verify.stdout
            [verify_run] = runs(dev.url, pipelineName="idem_verify")
            assert verify_run["status"] == "SUCCESS"
            open_check_partitions(page, dev.url)
            expect_counts(page, passed=2, failed=1)
            detail = day_detail(page, edited)
            assert (detail["status"], detail.get("verdict"), detail.get("source"), detail["run"]) == (
                "Failed", "drifted", "idem verify", verify_run["runId"][:8]), detail
            assert (detail["rows_changed"], detail["rows_added"], detail["rows_removed"]) == ("1", "0", "0")
            shot(page, tmp_path, "check-partitions-3-drifted-after-idem-verify.png")

            # 3. a repairing run of that day: passed again, linked to the new materialization
            t0 = time.monotonic()
            repair = run(materialize_command("people", partition=edited), dev_env, timeout=600)
            assert repair.returncode == 0, repair.stdout[-3000:] + repair.stderr[-3000:]
            timings["repairing run"] = time.monotonic() - t0
            repair_run = next(r for r in runs(dev.url) if r["jobName"] == "__ASSET_JOB")
            assert repair_run["jobName"] == "__ASSET_JOB" and repair_run["status"] == "SUCCESS", repair_run
            open_check_partitions(page, dev.url)
            expect_counts(page, passed=3, failed=0)
            for day in days:
                detail = day_detail(page, day)
                expected_run = repair_run["runId"] if day == edited else range_run
                assert (detail["status"], detail.get("verdict"), detail["run"]) == (
                    "Passed", "identical", expected_run[:8]), (day, detail)
            day_detail(page, edited)
            shot(page, tmp_path, "check-partitions-4-passed-after-repair.png")

        # what the UI showed is what the instance holds: the edited day's evaluations, oldest first
        edited_history = [(e["status"], e["runId"]) for e in reversed(check_executions(dev.url))
                          if e["partition"] == edited]
        assert edited_history == [("SUCCEEDED", range_run), ("FAILED", recheck_run),
                                  ("FAILED", verify_run["runId"]), ("SUCCEEDED", repair_run["runId"])]
        assert not [r for r in runs(dev.url) if r["status"] != "SUCCESS"]

        t0 = time.monotonic()
        assert dev.ctrl_c(timeout=90), f"processes of `idem dev` outlived Ctrl-C by 90s:\n{log_tail(dev.log)}"
        timings["ctrl-c"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - started
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


@pytest.mark.slow
def test_execute_all_on_the_checks_tab_launches_no_failing_run(dev_env, tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import expect

    timings: dict[str, float] = {}
    started = time.monotonic()
    with dev_after_idem_run(dev_env, tmp_path / "idem-dev.log", 2, timings) as (dev, days):
        before = {r["runId"] for r in runs(dev.url)}
        with browser_page(chromium) as page:
            page.goto(f"{dev.url}/assets/people", wait_until="domcontentloaded")
            dismiss_dialogs(page)
            page.get_by_role("tab", name="Checks", exact=True).click(timeout=UI_TIMEOUT)
            expect(page.get_by_text("Checks (2)")).to_be_visible(timeout=UI_TIMEOUT)
            t0 = time.monotonic()
            page.get_by_role("button", name="Execute all").click(timeout=UI_TIMEOUT)
            expect(page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}"))).to_be_visible(timeout=UI_TIMEOUT)
            shot(page, tmp_path, "checks-execute-all-launched.png")

            launched = wait_for("the launched run(s)", lambda: [r for r in runs(dev.url) if r["runId"] not in before],
                                timeout=60)
            statuses = {r["runId"]: dev.wait_for_run(r["runId"], timeout=300) for r in launched}
            timings["Execute all (click -> runs done)"] = time.monotonic() - t0
            # any run launched meanwhile (e.g. by a click that launched twice) counts as well
            launched = [r for r in runs(dev.url) if r["runId"] not in before]
            statuses.update({r["runId"]: dev.wait_for_run(r["runId"], timeout=300)
                             for r in launched if r["runId"] not in statuses})
            assert set(statuses.values()) == {"SUCCESS"}, {
                run_id: (status, run_error_messages(dev.url, run_id)[:5]) for run_id, status in statuses.items()}
            # one run executed people's checks, and recorded them per published day
            [checks_run] = [r for r in launched if r["assetCheckSelection"]]
            assert {(c["assetKey"]["path"][0], c["name"]) for c in checks_run["assetCheckSelection"]} == {
                ("people", CHECK), ("people", "row_count_matches_upstream")}
            for check in (CHECK, "row_count_matches_upstream"):
                mine = {e["partition"]: e["status"] for e in check_executions(dev.url, check)
                        if e["runId"] == checks_run["runId"] and e["partition"]}
                assert mine == {day: "SUCCEEDED" for day in days}, (check, mine)

            # and the UI shows no failed check afterwards
            open_check_partitions(page, dev.url)
            expect_counts(page, passed=len(days), failed=0)
            for day in days:
                detail = day_detail(page, day)
                assert (detail["status"], detail.get("verdict"), detail["run"]) == (
                    "Passed", "identical", checks_run["runId"][:8]), (day, detail)
            checks_list = body(page).split("Execute all", 1)[1].split("Overview", 1)[0]
            assert "Failed" not in checks_list, checks_list
            shot(page, tmp_path, "checks-execute-all-done.png")
        assert dev.ctrl_c(timeout=90), f"processes of `idem dev` outlived Ctrl-C by 90s:\n{log_tail(dev.log)}"
    timings["total"] = time.monotonic() - started
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


def test_recheck_job_is_partitioned_for_the_launchpad_and_the_drift_schedule(store_resources):
    """Dagster infers an asset job's partitions from the assets it materializes; recheck_job materializes none,
    so without its partitioned config it was unpartitioned: no partition picker in the Launchpad, and every tick
    of drift_check_schedule (partitioned run requests) failed."""
    from idem_platform import idem_definitions
    from idem_platform.pipelines.people import people, raw_people

    defs = idem_definitions(assets=[raw_people, people], resources=store_resources)
    job = defs.resolve_job_def("recheck_job")
    assert job.partitions_def == people.partitions_def
    repository = defs.get_repository_def()
    schedule = repository.get_schedule_def("drift_check_schedule")
    with dg.instance_for_test() as instance:
        at = dt.datetime(2026, 1, 10, 5, tzinfo=dt.timezone.utc)
        tick = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                                                repository_def=repository))
    assert [r.partition_key for r in tick.run_requests] == [f"2026-01-0{d}" for d in range(3, 10)]
    assert all(r.tags["dagster/partition"] == r.partition_key for r in tick.run_requests)
