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
"""

from __future__ import annotations

from typing import Any

import sqlalchemy.pool as db_pool
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

POOL_RECYCLE_SECONDS = 3600


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            poolclass=db_pool.QueuePool,
            pool_size=2,
            max_overflow=-1,
            pool_recycle=POOL_RECYCLE_SECONDS,
            pool_pre_ping=True,
        )

    @classmethod
    def from_config_value(cls, inst_data, config_value: dict[str, Any]) -> PooledPostgresEventLogStorage:
        return cls(
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
