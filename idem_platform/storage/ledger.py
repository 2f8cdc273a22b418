"""The publish ledger and the partition lock: the two PostgreSQL pieces every sink shares.

The ledger (`idem.ledger`) has one row per published partition: asset, partition, sink, store (where the sink
keeps the asset: schema.table, lake directory, read alias), location, run id, row count, fingerprint, previous
fingerprint, changed, published at. "Previous" and "published?" are looked up per (asset, sink, store), so
deployments sharing one ledger database never see each other's history. For the PostgreSQL sink it is written in the
same transaction as the publish; for the others right after the publish, inside the transaction that holds the
partition lock.

The lock is `pg_advisory_xact_lock` keyed on (asset, partition). Writers of the same partition queue on it, in
any sink, whatever started them (CLI, daemon, UI, a range backfill that bypasses the run queue). A range takes
its days in ascending order, so overlapping ranges cannot deadlock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..resources import META_SCHEMA

LEDGER = sql.Identifier(META_SCHEMA, "ledger")


@dataclass(frozen=True)
class LedgerEntry:
    asset: str
    partition: str
    sink: str
    location: str
    run_id: str
    row_count: int
    fingerprint: str
    previous_fingerprint: str | None
    published_at: dt.datetime | None = None
    store: str = ""  # where the sink keeps this asset (schema.table, lake directory, read alias)
    # Did this write change what the sink held? None: judge by the ledger (previous != new). The write path sets
    # it from the sink's content when the ledger says "unchanged", so a rerun that repairs drift says True.
    changed: bool | None = None

    def __post_init__(self):
        if self.changed is None:
            object.__setattr__(self, "changed", self.previous_fingerprint != self.fingerprint)


# The ledger's schema version, kept as the table's comment: reading it (pg_description) locks nothing, so a
# write of any asset checks it without touching the table's locks. Bump it with every migration step below.
LEDGER_VERSION = "idem ledger v2"

def _version(conn: psycopg.Connection) -> str | None:
    return conn.execute(
        "SELECT obj_description(to_regclass(%s), 'pg_class')", (f"{META_SCHEMA}.ledger",)
    ).fetchone()[0]


def ensure_ledger(conn: psycopg.Connection) -> None:
    """Create or migrate the ledger once; when it is at LEDGER_VERSION, take no lock at all.

    Every write calls this. DDL such as `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` takes ACCESS EXCLUSIVE even
    when there is nothing to do, which queued every write behind any open reader of the ledger (a BI tool idle in
    a transaction) and every reader behind it. So the version is read from the catalog first, and the migration
    (serialized by an advisory lock) runs only on a ledger older than this code.
    """
    if _version(conn) != LEDGER_VERSION:
        _migrate(conn)


def _migrate(conn: psycopg.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('idem:ddl:ledger', 0))")
        if _version(conn) == LEDGER_VERSION:  # another process migrated it while this one waited
            return
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(META_SCHEMA)))
        cur.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    id bigserial PRIMARY KEY,
                    asset text NOT NULL,
                    partition text NOT NULL,
                    sink text NOT NULL,
                    location text NOT NULL,
                    run_id text NOT NULL,
                    row_count bigint NOT NULL,
                    fingerprint text NOT NULL,
                    previous_fingerprint text,
                    changed boolean NOT NULL,
                    published_at timestamptz NOT NULL DEFAULT clock_timestamp()
                )"""
            ).format(LEDGER)
        )
        # v2: `store` tells deployments sharing one ledger apart (two warehouse schemas, two lake roots).
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS store text NOT NULL DEFAULT ''").format(LEDGER))
        cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(META_SCHEMA, "ledger_asset_partition")))
        cur.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS ledger_asset_store_partition ON {} (asset, sink, store, partition, id)"
            ).format(LEDGER)
        )
        cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(LEDGER, sql.Literal(LEDGER_VERSION)))


def lock_partitions(conn: psycopg.Connection, asset: str, days: Iterable[str]) -> None:
    """Take the transaction-scoped advisory lock of every (asset, day), in ascending day order."""
    with conn.cursor() as cur:
        for day in sorted(set(days)):
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"idem:partition:{asset}:{day}",))


def latest_fingerprints(
    conn: psycopg.Connection, asset: str, sink: str, days: Sequence[str], store: str
) -> dict[str, str]:
    """The fingerprint last published for each of `days` in that store (days never published are absent)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                """SELECT DISTINCT ON (partition) partition, fingerprint FROM {}
                   WHERE asset = %s AND sink = %s AND store = %s AND partition = ANY(%s)
                   ORDER BY partition, id DESC"""
            ).format(LEDGER),
            (asset, sink, store, list(days)),
        )
        return dict(cur.fetchall())


def record(conn: psycopg.Connection, entries: Sequence[LedgerEntry]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                """INSERT INTO {} (asset, partition, sink, store, location, run_id, row_count, fingerprint,
                                   previous_fingerprint, changed)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""
            ).format(LEDGER),
            [
                (e.asset, e.partition, e.sink, e.store, e.location, e.run_id, e.row_count, e.fingerprint,
                 e.previous_fingerprint, e.changed)
                for e in entries
            ],
        )


def history(
    conn: psycopg.Connection, asset: str | None = None, days: Sequence[str] | None = None
) -> list[LedgerEntry]:
    """Every ledger row, oldest first, optionally for one asset and some days."""
    conditions, params = [sql.SQL("TRUE")], []
    if asset:
        conditions.append(sql.SQL("asset = %s"))
        params.append(asset)
    if days:
        conditions.append(sql.SQL("partition = ANY(%s)"))
        params.append(list(days))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                """SELECT asset, partition, sink, location, run_id, row_count, fingerprint, previous_fingerprint,
                          published_at, store, changed FROM {} WHERE {} ORDER BY id"""
            ).format(LEDGER, sql.SQL(" AND ").join(conditions)),
            params,
        )
        return [LedgerEntry(**row) for row in cur.fetchall()]


def latest_entries(
    conn: psycopg.Connection, asset: str, days: Sequence[str], sink: str | None = None
) -> dict[str, LedgerEntry]:
    """The last ledger row of each of `days` of `asset` (optionally in one sink); days never published are absent."""
    if not ledger_exists(conn):
        return {}
    latest: dict[str, LedgerEntry] = {}
    for entry in history(conn, asset=asset, days=days):
        if sink is None or entry.sink == sink:
            latest[entry.partition] = entry
    return latest


def ledger_exists(conn: psycopg.Connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{META_SCHEMA}.ledger",))
        return cur.fetchone()[0]
