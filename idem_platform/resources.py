"""Resources, and the one place that decides which servers the platform talks to.

Configuration comes from the environment, with safe local defaults:

- `IDEM_PG_DSN`: the PostgreSQL that holds the warehouse (schema `IDEM_PG_SCHEMA`, default `warehouse`), the
  ledger (schema `idem`) and, through dagster-postgres, the Dagster instance. Unset, the platform uses the
  embedded PostgreSQL that `idem up` / `make run` started under the state directory.
- `IDEM_SOURCE_DSN`: the 311 source system (default: the same server, schema `source`).
- `IDEM_LAKE_DIR`: root of the lake files (default `<state dir>/lake`).
- `IDEM_STATE_DIR`: project-local state (default `./.idem`): embedded server data, lake, DAGSTER_HOME.

Secrets never enter run config or metadata: when `IDEM_PG_DSN` is set the resource holds `EnvVar("IDEM_PG_DSN")`,
which the UI shows by name only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg

PG_DSN_ENV = "IDEM_PG_DSN"
ES_URL_ENV = "IDEM_ES_URL"
DEFAULT_WAREHOUSE_SCHEMA = "warehouse"
META_SCHEMA = "idem"


def state_dir() -> Path:
    return Path(os.environ.get("IDEM_STATE_DIR", ".idem")).absolute()


def embedded_dsn_file() -> Path:
    return state_dir() / "postgres.dsn"


def local_search_url() -> str:
    """The URL of the local search server `idem up`/`make run` started (empty if none)."""
    path = state_dir() / "search.url"
    return path.read_text().strip() if path.exists() else ""


def lake_dir() -> str:
    return os.environ.get("IDEM_LAKE_DIR") or str(state_dir() / "lake")


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL server reached by DSN; every connection is one transaction (commit on success)."""

    dsn: str
    connect_timeout: int = 10
    application_name: str = "idem_platform"

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        with psycopg.connect(
            self.dsn,
            autocommit=autocommit,
            connect_timeout=self.connect_timeout,
            application_name=self.application_name,
        ) as conn:
            yield conn


class LakeResource(dg.ConfigurableResource):
    """A directory tree of partition files: `<root>/<asset>/<YYYY-MM-DD>.<format>`."""

    root: str

    def asset_dir(self, asset: str) -> Path:
        path = Path(self.root) / asset
        path.mkdir(parents=True, exist_ok=True)
        return path


def postgres_from_env() -> PostgresResource:
    """`IDEM_PG_DSN` if set (as an EnvVar, so the UI never shows the value), else the embedded server's DSN."""
    if os.environ.get(PG_DSN_ENV):
        return PostgresResource(dsn=dg.EnvVar(PG_DSN_ENV))
    dsn_file = embedded_dsn_file()
    if dsn_file.exists():
        return PostgresResource(dsn=dsn_file.read_text().strip())
    # Resolved lazily: loading definitions must not fail just because no server was started yet.
    return PostgresResource(dsn=dg.EnvVar(PG_DSN_ENV))


def postgres_for_cli() -> PostgresResource:
    """The same server as `postgres_from_env`, with the DSN value resolved (outside Dagster, EnvVars are not)."""
    dsn = os.environ.get(PG_DSN_ENV)
    if not dsn and embedded_dsn_file().exists():
        dsn = embedded_dsn_file().read_text().strip()
    if not dsn:
        raise RuntimeError(f"{PG_DSN_ENV} is not set and no embedded PostgreSQL was started here; run `idem up` first")
    return PostgresResource(dsn=dsn)


SOURCE_DSN_ENV = "IDEM_SOURCE_DSN"


def source_from_env() -> PostgresResource:
    """The 311 source system: `IDEM_SOURCE_DSN`, else the platform's own server (schema `source`)."""
    if os.environ.get(SOURCE_DSN_ENV):
        return PostgresResource(dsn=dg.EnvVar(SOURCE_DSN_ENV), application_name="idem_platform_source")
    return postgres_from_env()


def source_for_cli() -> PostgresResource:
    if os.environ.get(SOURCE_DSN_ENV):
        return PostgresResource(dsn=os.environ[SOURCE_DSN_ENV])
    return postgres_for_cli()


def warehouse_schema() -> str:
    return os.environ.get("IDEM_PG_SCHEMA", DEFAULT_WAREHOUSE_SCHEMA)
