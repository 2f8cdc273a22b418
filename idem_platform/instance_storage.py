"""dagster-postgres' event log storage, holding its connection instead of opening one per event.

`dagster_postgres.PostgresEventLogStorage` uses SQLAlchemy's NullPool: every event a run writes (one
ASSET_MATERIALIZATION_PLANNED and one materialization per partition, step and log events...) opens and closes
a PostgreSQL connection. A 365-day backfill run opens ~1,900 of them. This subclass keeps a small pool instead
(two connections held per process: dagster-postgres opens a second one while it writes an asset check evaluation,
which with one held connection cost a new connection per evaluation, 365 in a range run; more threads get overflow
connections that are closed on return), the same
engine settings dagster-postgres itself uses for the webserver (`optimize_for_webserver`). Connections are
checked before use (`pool_pre_ping`) and recycled hourly, so a restarted server costs one failed ping, not a
failed run. Everything else (schema, migrations, queries) is dagster-postgres' own.

**Asset check evaluations are committed without waiting for the disk** (`synchronous_commit = off` on their
own connections; `IDEM_ASYNC_CHECK_COMMITS`). Dagster stores them one at a time (they are not among the
events it batches), each an INSERT and an UPDATE, each a COMMIT that waits for a WAL flush: a 365-day range
run's checks spent 2.7-3.0 s in 730 such waits (5 ms each on this machine's disk) and almost nothing else.
Nothing durable is given up: the WAL is one sequence, so the next synchronous COMMIT of anything (the step's
end event, which Dagster stores after the evaluations) flushes them too. A server crash before that point loses
only evaluations of a step that never ended, which Dagster records as failed and a rerun evaluates again.
Every other event keeps dagster-postgres' synchronous commits.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
import sqlalchemy.pool as db_pool
from dagster import DagsterEventType, EventLogEntry
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_connection, create_pg_engine, get_token_provider_from_config, pg_url_from_config

from . import settings

POOL_RECYCLE_SECONDS = 3600


def _pooled_engine(url: str, token_provider) -> db.engine.Engine:
    return create_pg_engine(
        url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        poolclass=db_pool.QueuePool,
        pool_size=2,
        max_overflow=-1,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_pre_ping=True,
    )


def _commit_without_flush_wait(dbapi_connection, _record) -> None:
    """Every session of the engine: `synchronous_commit = off` (committed, so the setting survives)."""
    with dbapi_connection.cursor() as cur:
        cur.execute("SET synchronous_commit TO off")
    dbapi_connection.commit()


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        self._storing_evaluation = threading.local()  # before dagster-postgres' __init__ connects
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = _pooled_engine(self.postgres_url, self._token_provider)
        self._async_engine = _pooled_engine(self.postgres_url, self._token_provider)  # connects when first used
        db.event.listen(self._async_engine, "connect", _commit_without_flush_wait)

    def store_event(self, event: EventLogEntry) -> None:
        """dagster-postgres' `store_event`; an asset check evaluation goes over the connections that do not
        wait for the WAL flush (see the module docstring)."""
        if event.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION or not settings.current().async_check_commits:
            return super().store_event(event)
        with self._evaluation_connections():
            return super().store_event(event)

    @contextmanager
    def _evaluation_connections(self):
        self._storing_evaluation.on = True
        try:
            yield
        finally:
            self._storing_evaluation.on = False

    def _connect(self):
        if getattr(self._storing_evaluation, "on", False):
            return create_pg_connection(self._async_engine)
        return super()._connect()

    def dispose(self) -> None:
        """Close the connections the pools hold (dagster-postgres' own engine held none)."""
        super().dispose()
        self._engine.dispose()
        self._async_engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value: dict[str, Any]) -> PooledPostgresEventLogStorage:
        return cls(
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
