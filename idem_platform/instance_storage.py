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

**A batch of check evaluations is stored in one transaction** (`store_event_batch`): the rows of the event log
in one INSERT, then Dagster's own per-evaluation update of its check executions table, all on one connection,
one COMMIT. Dagster stores evaluations one at a time (they are not among the events it batches): an INSERT, a
NOTIFY, a catalog query and an UPDATE each, 4-5 ms, 1.5-2 s of a 365-day run's checks; as a batch, 0.45 s.
`check_records.log_evaluations` logs a range run's evaluations as such a batch when this storage says it takes
them (`stores_check_evaluation_batches`); dagster-postgres' own storage refuses them. A batch that fails rolls
back whole, and Dagster then stores its events one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import sqlalchemy as db
import sqlalchemy.pool as db_pool
from dagster import DagsterEventType, EventLogEntry
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_connection, create_pg_engine, get_token_provider_from_config, pg_url_from_config

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


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    stores_check_evaluation_batches = True  # read by check_records.log_evaluations

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        self._batch = threading.local()  # before dagster-postgres' __init__ connects
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = _pooled_engine(self.postgres_url, self._token_provider)

    @property
    def supports_asset_checks(self) -> bool:
        """dagster-postgres asks the catalog on every check event whether its table exists; once it does, it stays."""
        if not getattr(self, "_has_asset_check_table", False):
            self._has_asset_check_table = super().supports_asset_checks
        return self._has_asset_check_table

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """dagster-postgres' batches; a batch of check evaluations in one transaction (module docstring)."""
        if not events or any(e.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION for e in events):
            return super().store_event_batch(events)
        with create_pg_connection(self._engine) as conn:
            conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                ids = conn.execute(self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)).fetchall()
                self._batch.connection = conn  # Dagster's own update below then runs on this connection
                try:
                    for event, (event_id,) in zip(events, ids, strict=True):
                        self.store_asset_check_event(event, int(event_id))
                finally:
                    self._batch.connection = None

    def _connect(self):
        held = getattr(self._batch, "connection", None)
        return nullcontext(held) if held is not None else super()._connect()

    def dispose(self) -> None:
        """Close the connections the pools hold (dagster-postgres' own engine held none)."""
        super().dispose()
        self._engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value: dict[str, Any]) -> PooledPostgresEventLogStorage:
        return cls(
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
