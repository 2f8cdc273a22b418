"""The platform's resources: the PostgreSQL server and the lake directory, found the same way by every process.

A resource left unconfigured resolves its server **when it is used**, from `idem_platform.settings`, not when
the code location is loaded: the CLI, `dagster asset materialize`, the webserver's code server and the daemon
all find the same servers, even a server `idem up` started after the code location was loaded.

- `PostgresResource()`: `IDEM_PG_DSN`, else the embedded PostgreSQL `idem up` / `make run` started under the state
  directory (its DSN in `<state dir>/postgres.dsn`). Neither is ever copied into run config or the UI.
- `PostgresResource(dsn=...)`: that server (pass a `dg.EnvVar` to keep a secret out of the UI).
- `LakeResource()`: `IDEM_LAKE_DIR`, else `<state dir>/lake`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc_dbapi
import dagster as dg
import psycopg
from psycopg import conninfo
from pydantic import Field

from . import settings

META_SCHEMA = "idem"


class ServiceNotFound(RuntimeError):
    """No server is configured and none was started locally; the message says what to do."""


def _resolved(value):
    """The value of a field that may still be an unresolved `dg.EnvVar` (a resource used outside a run)."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


def platform_dsn() -> str:
    """The platform's PostgreSQL: `IDEM_PG_DSN`, else the embedded server started under the state directory."""
    current = settings.current()
    dsn = current.pg_dsn or current.embedded_dsn()
    if not dsn:
        raise ServiceNotFound(
            f"no PostgreSQL: IDEM_PG_DSN is not set and no embedded server was started under {current.state_dir} "
            "(run `idem up` there, or set IDEM_STATE_DIR to the state directory it printed, or set IDEM_PG_DSN)"
        )
    return dsn


_arrow_connections = threading.local()  # PostgresResource.connect_arrow's connections of this thread


def _answers(conn: adbc_dbapi.Connection) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        return True
    except Exception:  # noqa: BLE001 - any failure: drop it and connect anew
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
        return False


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL server reached by DSN; every connection is one transaction (commit on success)."""

    dsn: str = Field(default="", description="libpq URL; empty: IDEM_PG_DSN, else the embedded server of `idem up`")
    connect_timeout: int = 10
    application_name: str = "idem_platform"

    def resolved_dsn(self) -> str:
        return _resolved(self.dsn) or platform_dsn()

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A psycopg connection that never prepares statements (`prepare_threshold=None`).

        psycopg prepares a statement run 5 times on one connection; the server then chooses, by its own cost
        comparison, between planning each call with its values and reusing one generic plan, and the ledger's
        statistics move that choice (measured on a 10k-row ledger: generic plans after 10 calls; on a 10M-row
        one: custom plans forever). Unprepared, every ledger read is planned with its own values on every call,
        in a daemon's long-lived sensor loop as in a one-day run: the plans `test_ledger_queries` asserts are the
        plans that run, whatever the ledger's shape. Planning one of these reads costs ~0.05 ms."""
        with psycopg.connect(
            self.resolved_dsn(),
            autocommit=autocommit,
            connect_timeout=self.connect_timeout,
            application_name=self.application_name,
            prepare_threshold=None,
        ) as conn:
            yield conn


    @contextmanager
    def connect_arrow(self) -> Iterator[adbc_dbapi.Connection]:
        """An ADBC connection (the PostgreSQL driver reads results as Arrow columns through binary COPY): for
        reads of whole partitions, typed and columnar, never through Python objects.

        Connecting costs the driver a read of the type catalog (0.2 s on a loaded machine, ten psycopg connects),
        so each thread keeps one connection per DSN, in autocommit (an idle one holds no snapshot and no lock); one
        that fails is closed and the next read connects anew."""
        dsn = conninfo.make_conninfo(
            self.resolved_dsn(), connect_timeout=self.connect_timeout, application_name=self.application_name
        )
        cache = _arrow_connections.__dict__.setdefault("by_dsn", {})
        key = (os.getpid(), dsn)
        conn = cache.pop(key, None)
        if conn is not None and not _answers(conn):  # the server restarted, the session was terminated
            conn = None
        conn = conn or adbc_dbapi.connect(dsn, autocommit=True)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        cache[key] = conn  # only a connection that just worked goes back


class LakeResource(dg.ConfigurableResource):
    """A directory tree of partition files: `<root>/<asset>/<YYYY-MM-DD>.<format>`."""

    root: str = Field(default="", description="lake root; empty: IDEM_LAKE_DIR, else <state dir>/lake")

    def resolved_root(self) -> Path:
        return Path(_resolved(self.root) or settings.current().lake_dir)

    def asset_dir(self, asset: str) -> Path:
        path = self.resolved_root() / asset
        path.mkdir(parents=True, exist_ok=True)
        return path
