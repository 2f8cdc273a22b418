"""Fixtures of the reliability suite, and the scorecard printed at the end of the session.

Reuses the top-level fixtures (real PostgreSQL: `make_database`, `pg_admin_dsn`) and the search server of the
`idem_platform_tests.search_server` plugin (osmem, or the cluster `IDEM_ES_URL` names); CLI runs get a
dagster-postgres instance of the suite's own (`rel_instance_env`), so no other test's runs reach its ledger.
Scale: `IDEM_RELIABILITY_FULL=1` runs the full matrix; without it every fault point of every store runs at least
once and the suite stays fast.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from idem_platform_tests.reliability.scorecard import SCORECARD, Scorecard, format_scorecard
from idem_platform_tests.reliability.stores import StoreSpec
from idem_platform_tests.search_server import delete_asset_indices, external_search_url

from idem_platform.services import DAGSTER_YAML, dagster_cli
from idem_platform.storage.search_client import ElasticsearchResource


@pytest.fixture(scope="session")
def scorecard() -> Scorecard:
    return SCORECARD


@pytest.fixture(autouse=True)
def _suite_clock(scorecard):
    """The scorecard's time: from the first test of this suite to the last (not the whole pytest session)."""
    scorecard.mark()
    yield
    scorecard.mark()


@pytest.fixture(scope="session")
def rel_dsn(make_database) -> str:
    """One database for the suite's driver-level scenarios; each scenario has its own asset, schema and lake."""
    return make_database("idem_rel")


@pytest.fixture(scope="session")
def rel_instance_env(make_database, tmp_path_factory) -> dict[str, str]:
    """A migrated dagster-postgres instance of the suite's own: its ledger sees no other test's runs."""
    home = tmp_path_factory.mktemp("dagster_home_rel")
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {**os.environ, "IDEM_PG_DSN": make_database("idem_rel_instance"), "DAGSTER_HOME": str(home),
           "PYTHONWARNINGS": "ignore"}
    subprocess.run([dagster_cli(), "instance", "migrate"], env=env, check=True, capture_output=True)
    return env


@pytest.fixture
def rel_cli_env(rel_instance_env, es, tmp_path) -> dict[str, str]:
    """Per-test environment for CLI runs (as the top-level `cli_env`, on the suite's own instance)."""
    env = {**rel_instance_env, "IDEM_PG_SCHEMA": f"wh_{uuid.uuid4().hex[:8]}", "IDEM_LAKE_DIR": str(tmp_path / "lake"),
           "IDEM_STATE_DIR": str(tmp_path / "state")}
    if not external_search_url():
        env["IDEM_ES_URL"] = es.url
    return env


@pytest.fixture(scope="session")
def search_url(search_base_server) -> Iterator[str | None]:
    """URL of the suite's search server (one osmem clone), or None: the cluster of IDEM_ES_URL (from the env)."""
    if search_base_server is None:
        yield None
        return
    clone = search_base_server.clone()
    try:
        yield clone.url
    finally:
        clone.close()


@pytest.fixture(scope="session")
def asset_names(search_url) -> Iterator[list[str]]:
    """Every asset name the suite made; on a shared cluster their indices and templates are deleted at the end."""
    names: list[str] = []
    yield names
    if search_url is not None or not external_search_url() or not names:
        return
    delete_asset_indices(ElasticsearchResource(), names)


@pytest.fixture
def make_store(rel_dsn, search_url, asset_names, tmp_path):
    """Factory: a `StoreSpec` of a fresh asset (own table schema, own lake root, own indices) in one store."""

    def make(kind: str, **overrides) -> StoreSpec:
        token = uuid.uuid4().hex[:8]
        asset = overrides.pop("asset", f"rel_{token}")
        asset_names.append(asset)
        return StoreSpec(
            kind=kind, dsn=overrides.pop("dsn", rel_dsn), asset=asset, schema=f"rel_{token}",
            lake_root=str(tmp_path / f"lake_{token}"), es_url=search_url, **overrides,
        )

    return make


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not SCORECARD.scenarios:
        return
    path = SCORECARD.write()
    terminalreporter.section("idem reliability scorecard")
    terminalreporter.write_line(format_scorecard(SCORECARD.as_dict()))
    terminalreporter.write_line(f"  written to {os.path.relpath(path, Path.cwd())}")
