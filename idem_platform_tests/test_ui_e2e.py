"""End to end through the operator's tools: `idem dev` (dagster-webserver + dagster-daemon on one dagster-postgres
instance), a partition launched through the webserver's GraphQL API, and the asset pages in headless Chromium.

What this proves, in order:
1. `idem dev` with IDEM_PG_DSN/IDEM_ES_URL set starts the webserver on 127.0.0.1 and the daemon, the code location
   loads, and every asset the UI lists carries a description, an owner, a column schema and its checks;
2. a run launched through GraphQL is QUEUED (the instance's QueuedRunCoordinator), dequeued by the daemon and
   succeeds;
3. the browser shows the asset's partitions page with the right counts (1 materialized, the rest missing) and the
   partition's materialization metadata (row_count, the fingerprint the ledger recorded, changed), the asset
   overview (description, owner, columns) and its checks;
4. Ctrl-C (SIGINT to the process group, as a terminal sends it) stops webserver, daemon and code servers, and
   `idem dev` exits 0.
Screenshots are saved under the test's tmp path and copied to test-output/.
"""

from __future__ import annotations

import re
import time

import psycopg
import pytest

from idem_platform.partitions import daily_partitions as _days
daily_partitions = _days()
from idem_platform_tests.ui_helpers import (
    ASSET_NODES,
    browser_page,
    chromium_or_skip,
    dismiss_dialogs,
    graphql,
    idem_dev,
    keep_screenshot,
    launch_partition_run,
    log_tail,
    number_pattern,
    run_error_messages,
)

DAY = "2026-01-05"
ROWS = 1000
PEOPLE_ASSETS = ("raw_people", "people", "people_search")


@pytest.fixture
def dev_env(cli_env, make_database, tmp_path) -> dict[str, str]:
    """cli_env (this test's warehouse schema, lake and search server) on an instance of its own: the daemon's
    sensors and automation then see only this test's runs, never the other tests' shared instance."""
    return {
        **cli_env,
        "IDEM_PG_DSN": make_database("idem_ui"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        # the daemon's sensors tick rarely: they are not what this test watches, and the machine is shared
        "IDEM_LATE_DATA_INTERVAL_SECONDS": "300",
        "IDEM_INBOX_SENSOR_INTERVAL": "300",
    }


def ledger_entry(env: dict[str, str], asset: str, day: str) -> tuple[int, str, bool, str]:
    with psycopg.connect(env["IDEM_PG_DSN"]) as conn:
        return conn.execute(
            "SELECT row_count, fingerprint, changed, run_id FROM idem.ledger"
            " WHERE asset = %s AND partition = %s ORDER BY id DESC LIMIT 1",
            (asset, day),
        ).fetchone()


def page_text(page) -> str:
    return page.inner_text("body")


@pytest.mark.slow
def test_dev_ui_shows_partition_launched_through_graphql(dev_env, tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import expect

    timings: dict[str, float] = {}
    started = time.monotonic()
    with idem_dev(dev_env, tmp_path / "idem-dev.log") as dev:
        dev.wait_ready()
        timings["idem dev ready"] = time.monotonic() - started
        assert f"Serving dagster-webserver on http://127.0.0.1:{dev.port}" in log_tail(dev.log, 100_000)

        # 1. what the UI is told about every asset
        nodes = {tuple(n["assetKey"]["path"]): n for n in graphql(dev.url, ASSET_NODES)["assetNodes"]}
        assert {("people",), ("raw_people",), ("people_search",)} <= set(nodes)
        for key, node in nodes.items():
            assert node["description"], f"asset {key} has no description"
            assert node["owners"], f"asset {key} has no owner"
            assert node["isPartitioned"], f"asset {key} is not partitioned"
            assert "dagster/column_schema" in {m["label"] for m in node["metadataEntries"]}, f"{key}: no column schema"
            assert node["assetChecksOrError"].get("checks"), f"asset {key} has no checks"

        # 2. launch one partition of the people job through GraphQL; the daemon dequeues it
        run = launch_partition_run(dev.url, "people_job", DAY)
        assert run["status"] in ("QUEUED", "NOT_STARTED"), run
        t0 = time.monotonic()
        status = dev.wait_for_run(run["runId"], timeout=300)
        timings["run (queued -> success)"] = time.monotonic() - t0
        assert status == "SUCCESS", (
            f"run {run['runId']} ended {status}: {run_error_messages(dev.url, run['runId'])[:5]}\n{log_tail(dev.log)}"
        )
        assert dev.statuses_seen[run["runId"]][0] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")

        rows, fingerprint, changed, run_id = ledger_entry(dev_env, "people", DAY)
        assert (rows, changed, run_id) == (ROWS, True, run["runId"])
        partitions_now = {len(daily_partitions.get_partition_keys())}

        # 3. the browser
        t0 = time.monotonic()
        with browser_page(chromium) as page:
            page.goto(f"{dev.url}/assets/people?view=partitions&partition={DAY}", wait_until="domcontentloaded")
            dismiss_dialogs(page)
            expect(page.get_by_text("Materialized (1)")).to_be_visible(timeout=90_000)
            expect(page.get_by_text(fingerprint).first).to_be_visible()  # the metadata and recent_publishes
            page.wait_for_load_state("networkidle")
            partitions_shot = tmp_path / "people-partitions.png"
            page.screenshot(path=str(partitions_shot))
            text = page_text(page)

            page.goto(f"{dev.url}/assets/people", wait_until="domcontentloaded")
            dismiss_dialogs(page, wait_ms=1000)
            expect(page.get_by_text("Columns", exact=True)).to_be_visible(timeout=60_000)
            expect(page.get_by_text("phone_digits")).to_be_visible()
            page.wait_for_load_state("networkidle")
            overview_shot = tmp_path / "people-overview.png"
            page.screenshot(path=str(overview_shot))
            overview = page_text(page)

            page.goto(f"{dev.url}/assets/people?view=checks", wait_until="domcontentloaded")
            dismiss_dialogs(page, wait_ms=1000)
            expect(page.get_by_text("Checks (2)")).to_be_visible(timeout=60_000)
            for check in ("fingerprint_matches_ledger", "row_count_matches_upstream"):  # no unique_key: a table
                # the list renders after the tab's header (slow hosts: seconds later)
                expect(page.get_by_text(check).first).to_be_visible(timeout=60_000)
            checks = page_text(page)
        timings["browser"] = time.monotonic() - t0
        partitions_now.add(len(daily_partitions.get_partition_keys()))  # a UTC midnight may pass meanwhile
        for shot in (partitions_shot, overview_shot):
            assert shot.stat().st_size > 10_000
            keep_screenshot(shot)

        # the partitions page: asset name, counts, the selected partition and its metadata
        assert re.search(r"\bpeople\b", text)
        assert any(re.search(rf"{number_pattern(n)} Partitions Selected", text) for n in partitions_now), text[:2000]
        assert "Materialized (1)" in text and "Failed (0)" in text
        assert any(re.search(rf"Missing \({number_pattern(n - 1)}\)", text) for n in partitions_now), text[:2000]
        assert re.search(rf"{DAY}\s+Materialized", text)
        assert re.search(rf"row_count\s+{ROWS}\b", text)
        assert re.search(rf"fingerprint\s+{fingerprint}", text)
        assert re.search(r"changed\s+true", text)
        assert "recent_publishes" in text and text.count(fingerprint) >= 2  # the ledger at a glance, as a table
        assert "dagster/column_schema" in text

        # the overview: description, owner, column schema, latest partition
        assert "People typed and cleaned" in overview
        assert "data-platform" in overview
        for column in ("person_id", "full_name", "phone_digits", "birth_date", "partition_date"):
            assert column in overview
        assert DAY in overview

        # the checks tab lists the generated checks
        for check in ("fingerprint_matches_ledger", "row_count_matches_upstream"):  # no unique_key: a table
            assert check in checks

        # a quiet log: webserver and daemon share the code server (none of theirs times out and is replaced)
        assert "No heartbeat received" not in log_tail(dev.log, 10_000_000)

        # 4. Ctrl-C stops everything idem dev started
        t0 = time.monotonic()
        assert dev.ctrl_c(timeout=90), f"processes of `idem dev` outlived Ctrl-C by 90s:\n{log_tail(dev.log)}"
        timings["ctrl-c -> all stopped"] = time.monotonic() - t0
        assert dev.proc.returncode == 0, log_tail(dev.log)

    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
