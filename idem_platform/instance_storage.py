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

**Two kinds of per-partition events are stored in one transaction per batch** (`store_event_batch`), where
dagster-postgres stores them one at a time:
- the planned events of a run (one per asset and partition, written when the run is created, ~1 s of a 365-day
  run before its first step): their rows in one INSERT, their tags, and each asset's entry, as dagster-postgres
  stores its batches of materializations;
- check evaluations: their rows in one INSERT, then Dagster's own per-evaluation update of its check executions
  table, on the same connection. One at a time, each was an INSERT, a NOTIFY, a catalog query and an UPDATE,
  4-5 ms: 1.5-2 s of a 365-day run's checks; as a batch, ~0.45 s.

Dagster sends planned events as a batch already (with `DAGSTER_EVENT_BATCH_SIZE` set, as the platform sets it);
`check_records.log_evaluations` logs a range run's evaluations as a batch when this storage says it takes them
(`stores_check_evaluation_batches`); dagster-postgres' own storage refuses them. A batch that fails rolls back
whole, and Dagster then stores its events one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
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
        """dagster-postgres' batches, except two kinds it stores one event at a time, stored here in one
        transaction each (module docstring): check evaluations, and the per-partition planned events."""
        if not events:
            return super().store_event_batch(events)
        if all(e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION for e in events):
            return self._store_evaluations(events)
        planned = [e for e in events if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
        if len(planned) < 2:
            return super().store_event_batch(events)
        self._store_planned(planned)
        rest = [e for e in events if e.dagster_event_type != DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
        if rest:  # the run's planned check events: dagster-postgres stores them
            super().store_event_batch(rest)

    @contextmanager
    def _one_transaction(self):
        """A connection in a transaction, which every storage call of this thread uses until it ends."""
        with create_pg_connection(self._engine) as conn:
            conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                self._batch.connection = conn
                try:
                    yield conn
                finally:
                    self._batch.connection = None

    def _insert(self, conn, events: Sequence[EventLogEntry]) -> list[int]:
        """The events' rows of the event log, in one INSERT; their ids, in order."""
        rows = conn.execute(self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)).fetchall()
        return [int(event_id) for (event_id,) in rows]

    def _store_evaluations(self, events: Sequence[EventLogEntry]) -> None:
        """The event rows, then Dagster's own update of its check executions table for each."""
        with self._one_transaction() as conn:
            for event, event_id in zip(events, self._insert(conn, events), strict=True):
                self.store_asset_check_event(event, event_id)

    def _store_planned(self, events: Sequence[EventLogEntry]) -> None:
        """What dagster-postgres' `store_event` does for each planned event (its row, its tags, the asset's
        entry), as its own batch of materializations does it: the asset's entry from the asset's last event
        (it records the run that plans the asset, the same for all of them)."""
        with self._one_transaction() as conn:
            ids = self._insert(conn, events)
            self._store_asset_event_tags(conn, events, ids)
            last = {event.dagster_event.asset_key: (event, event_id) for event, event_id in zip(events, ids, strict=True)}
            for event, event_id in last.values():
                self._store_asset_event(conn, event, event_id)

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
