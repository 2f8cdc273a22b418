"""The publish ledger and the partition lock: the two PostgreSQL pieces every sink shares.

The ledger (`idem.ledger`) has one row per published partition: asset, partition, sink, store (where the sink
keeps the asset: schema.table, lake directory, read alias), location, run id, row count, fingerprint (and the
`fingerprint_algo` that made it), previous fingerprint, changed, published at, plus `version` (which content of the sink the row describes: the lake file's
version token, the physical index) and `confirmed`. "Previous" and "published?" are looked up per (asset, sink,
store), so deployments sharing one ledger database never see each other's history.

For the PostgreSQL sink the row is written, confirmed, in the publishing transaction. A lake file or an index
cannot share a transaction with the ledger, so those writes record an *intent* first (an unconfirmed row with the
version about to be published, committed on its own connection before the publish) and confirm it in the
transaction that holds the partition lock, after the publish. A crash between the two leaves an unconfirmed intent;
`partition_store.published_entries` resolves it from what the sink holds (its version live: published; not live:
never happened), so readers, downstream loads and `idem verify` agree with the sink without a manual step, and the
next write of the day confirms it for good.

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
from .fingerprint import ALGORITHM, PREVIOUS_ALGORITHM

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
    version: str | None = None  # the sink's version of this content (lake token, index version, `xid:<n>` for a table)
    confirmed: bool = True  # False: an intent whose publish may or may not have happened (see the module docstring)
    # The fingerprint algorithm that made `fingerprint` (fingerprint.ALGORITHM); rows from before ledger v4 read as
    # PREVIOUS_ALGORITHM. `idem verify` does not compare fingerprints made by different algorithms.
    fingerprint_algo: str = ALGORITHM
    id: int | None = None  # the ledger row's id (None before it is written)

    def __post_init__(self):
        if self.changed is None:
            object.__setattr__(self, "changed", self.previous_fingerprint != self.fingerprint)


# The ledger's schema version, kept as the table's comment: reading it (pg_description) locks nothing, so a
# write of any asset checks it without touching the table's locks. Bump it with every migration step below.
LEDGER_VERSION = "idem ledger v5"

# Every read of the ledger names the asset first, so the growth of the ledger (other assets, other days, other
# deployments) never enters a read: `ledger_by_day` serves every read of some days of an asset (with or without
# sink and store: the previous fingerprint of a write, `idem verify`, the late-data sensor, `idem ledger --range`,
# the `idem run` summary, the checks' upstream counts) and the last published days (a backward scan);
# `ledger_by_asset` serves the last N publishes of an asset (`idem ledger` without a range; `recent`, on every
# write, in one sink and store: a backward scan that skips the asset's other stores).
LEDGER_INDEXES = {
    "ledger_by_day": ("asset", "partition", "sink", "store", "id"),
    "ledger_by_asset": ("asset", "id"),
}
# The planner takes asset, sink and store for independent columns unless told: then it expects a store (a
# schema.table, a lake directory) to be rare, estimates (asset, sink, store) at one row, and picks plans that read
# the store's whole history (the partition filtered from the heap, or every row of the store sorted by id). The
# store determines asset and sink; these statistics say so (ANALYZE, i.e. autovacuum, fills them).
LEDGER_STATISTICS = "ledger_store_determines_asset"

def _version(conn: psycopg.Connection) -> int:
    """The ledger's schema version number (0: no ledger, or one from before versions were kept)."""
    # A join on the catalogs, not to_regclass: the statement's snapshot sees a ledger another session created
    # while this one waited for the migration lock (a name lookup could answer from this session's cache).
    row = conn.execute(
        """SELECT d.description FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_description d ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0
           WHERE n.nspname = %s AND c.relname = 'ledger'""",
        (META_SCHEMA,),
    ).fetchone()
    comment = row[0] if row else None
    prefix = LEDGER_VERSION.rstrip("0123456789")
    return int(comment[len(prefix):]) if comment and comment.startswith(prefix) and comment[len(prefix):].isdigit() else 0


def _ours() -> int:
    return int(LEDGER_VERSION.rsplit("v", 1)[1])


def ensure_ledger(conn: psycopg.Connection) -> None:
    """Create or migrate the ledger once; when it is at LEDGER_VERSION, take no lock at all.

    Every write calls this. DDL such as `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` takes ACCESS EXCLUSIVE even
    when there is nothing to do, which queued every write behind any open reader of the ledger (a BI tool idle in
    a transaction) and every reader behind it. So the version is read from the catalog first, and the migration
    (serialized by an advisory lock) runs only on a ledger older than this code. A newer ledger is left alone:
    every step is additive (new columns have defaults), so code one version behind (a rolling deploy) keeps working
    instead of migrating it back and forth.
    """
    if _version(conn) < _ours():
        _migrate(conn)


def _migrate(conn: psycopg.Connection) -> None:
    """Bring the ledger to LEDGER_VERSION in one transaction, under an advisory lock (one process migrates).

    What it costs on a large existing ledger: v5 builds its two indexes (`LEDGER_INDEXES`) with a plain CREATE
    INDEX, which holds a SHARE lock on the ledger while it reads the table: readers go on, writes of every asset
    wait until the COMMIT (about a minute per index for 10M rows, 2 GB, on 2 cores under load; seconds for
    100k rows). CREATE INDEX CONCURRENTLY would let writes go on, but it cannot run inside a transaction, and the
    migration must be one: the version comment is set in the same COMMIT as the indexes, so no process ever sees
    v5 without them, and a migration that fails leaves v4 whole. So the build is done in place, once, on the first
    write after the upgrade. To avoid that pause on a very large ledger, build the indexes beforehand, without
    blocking anyone, under the same names:

        CREATE INDEX CONCURRENTLY IF NOT EXISTS ledger_by_day ON idem.ledger (asset, partition, sink, store, id);
        CREATE INDEX CONCURRENTLY IF NOT EXISTS ledger_by_asset ON idem.ledger (asset, id);

    then the migration finds them (IF NOT EXISTS) and only drops the v4 index, an ACCESS EXCLUSIVE lock held
    for milliseconds (as the ALTER TABLE steps above take; each step is a no-op on a ledger that has it), and
    ANALYZEs the ledger for its new statistics (a sample of 30,000 rows: a second or two, blocking nobody).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('idem:ddl:ledger', 0))")
        if _version(conn) >= _ours():  # another process migrated it while this one waited
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
        # v3: intents (unconfirmed rows) and the sink's version of the content, for lake and search publishes.
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS version text").format(LEDGER))
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS confirmed boolean NOT NULL DEFAULT true").format(LEDGER))
        # v4: the fingerprint algorithm of each row (NULL: rows from before, made by fingerprint.PREVIOUS_ALGORITHM).
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS fingerprint_algo text").format(LEDGER))
        cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(META_SCHEMA, "ledger_asset_partition")))
        # v5: the indexes every read of the ledger is served by (LEDGER_INDEXES); v2-v4's
        # (asset, sink, store, partition, id) is superseded by the first.
        for name, columns in LEDGER_INDEXES.items():
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(name), LEDGER, sql.SQL(", ").join(map(sql.Identifier, columns))))
        cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(META_SCHEMA, "ledger_asset_store_partition")))
        cur.execute(sql.SQL("CREATE STATISTICS IF NOT EXISTS {} (dependencies, ndistinct) ON asset, sink, store FROM {}").format(
            sql.Identifier(META_SCHEMA, LEDGER_STATISTICS), LEDGER))
        # ... filled now: autovacuum analyzes a large ledger only after a tenth of it changed.
        cur.execute(sql.SQL("ANALYZE {}").format(LEDGER))
        cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(LEDGER, sql.Literal(LEDGER_VERSION)))


def lock_partitions(conn: psycopg.Connection, asset: str, days: Iterable[str]) -> None:
    """Take the transaction-scoped advisory lock of every (asset, day), in ascending day order."""
    with conn.cursor() as cur:
        for day in sorted(set(days)):
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"idem:partition:{asset}:{day}",))


def lock_containers(conn: psycopg.Connection, names: Iterable[str]) -> None:
    """Take the transaction-scoped advisory lock of each sink container several days share (e.g. a search
    index holding a year), in ascending order, after the partition locks: writers of different days publishing
    into one container take turns, and no two writers wait on each other in a cycle."""
    with conn.cursor() as cur:
        for name in sorted(set(names)):
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"idem:container:{name}",))


_SELECTED = sql.SQL(
    "id, asset, partition, sink, location, run_id, row_count, fingerprint, previous_fingerprint, published_at, store, "
    "changed, version, confirmed, COALESCE(fingerprint_algo, {}) AS fingerprint_algo"
).format(sql.Literal(PREVIOUS_ALGORITHM))


def _days_match(days: Sequence[str]) -> tuple[sql.Composable, list]:
    """The condition on `partition` for `days`, and its parameters. Consecutive days (a range) are one range of
    `ledger_by_day` per asset (`BETWEEN`, exact by the filter beside it, which no index serves) instead of one
    descent of the index per day."""
    days = sorted(set(days))
    try:
        consecutive = len(days) > 1 and (dt.date.fromisoformat(days[-1]) - dt.date.fromisoformat(days[0])).days == len(days) - 1
    except ValueError:  # not ISO days
        consecutive = False
    if consecutive:
        return sql.SQL("partition BETWEEN %s AND %s AND (partition || '') = ANY(%s)"), [days[0], days[-1], days]
    return sql.SQL("partition = ANY(%s)"), [days]


def latest_confirmed(
    conn: psycopg.Connection, asset: str, sink: str, days: Sequence[str], store: str
) -> dict[str, LedgerEntry]:
    """The last confirmed row of each of `days` in that store (days never published are absent)."""
    match, params = _days_match(days)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                """SELECT DISTINCT ON (partition) {} FROM {}
                   WHERE asset = %s AND sink = %s AND store = %s AND {} AND confirmed
                   ORDER BY partition, id DESC"""
            ).format(_SELECTED, LEDGER, match),
            (asset, sink, store, *params),
        )
        return {row["partition"]: LedgerEntry(**row) for row in cur.fetchall()}


_COLUMNS = ("asset", "partition", "sink", "store", "location", "run_id", "row_count", "fingerprint",
            "previous_fingerprint", "changed", "version", "confirmed", "fingerprint_algo")


def _insert(conn: psycopg.Connection, entries: Sequence[LedgerEntry], confirmed: bool) -> list[int]:
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        LEDGER, sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS))
    )
    if not entries:
        return []
    rows = [(e.asset, e.partition, e.sink, e.store, e.location, e.run_id, e.row_count, e.fingerprint,
             e.previous_fingerprint, e.changed, e.version, confirmed, e.fingerprint_algo) for e in entries]
    ids = []
    with conn.cursor() as cur:
        cur.executemany(statement, rows, returning=True)
        while True:
            ids.append(cur.fetchone()[0])
            if not cur.nextset():
                return ids


def record(conn: psycopg.Connection, entries: Sequence[LedgerEntry]) -> None:
    """Confirmed rows, in the caller's transaction (the PostgreSQL sink's publishing transaction)."""
    _insert(conn, entries, confirmed=True)


def record_intents(conn: psycopg.Connection, entries: Sequence[LedgerEntry]) -> list[int]:
    """Unconfirmed rows for a publish about to happen; `conn` must commit them before the publish (autocommit)."""
    return _insert(conn, entries, confirmed=False)


def confirm(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    """Mark intents published (in the transaction that holds their partition lock)."""
    if ids:
        conn.execute(
            sql.SQL("UPDATE {} SET confirmed = true, published_at = clock_timestamp() WHERE id = ANY(%s)").format(LEDGER),
            (list(ids),),
        )


def pending_intents(
    conn: psycopg.Connection, asset: str, sink: str, days: Sequence[str], store: str
) -> dict[str, list[LedgerEntry]]:
    """Per day, the unconfirmed intents newer than its last confirmed row, newest first."""
    match, params = _days_match(days)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                """SELECT {} FROM {} l
                   WHERE asset = %s AND sink = %s AND store = %s AND {} AND NOT confirmed
                     AND id > COALESCE((SELECT max(id) FROM {} c WHERE c.asset = l.asset AND c.sink = l.sink
                                        AND c.store = l.store AND c.partition = l.partition AND c.confirmed), 0)
                   ORDER BY id DESC"""
            ).format(_SELECTED, LEDGER, match, LEDGER),
            (asset, sink, store, *params),
        )
        pending: dict[str, list[LedgerEntry]] = {}
        for row in cur.fetchall():
            pending.setdefault(row["partition"], []).append(LedgerEntry(**row))
        return pending


def history(
    conn: psycopg.Connection, asset: str | None = None, days: Sequence[str] | None = None, *, intents: bool = False
) -> list[LedgerEntry]:
    """Every confirmed ledger row, oldest first, optionally for one asset and some days (`intents`: unconfirmed
    rows too; whether such a publish happened is known only from its sink, see partition_store.published_entries)."""
    conditions, params = [sql.SQL("TRUE") if intents else sql.SQL("confirmed")], []
    if asset:
        conditions.append(sql.SQL("asset = %s"))
        params.append(asset)
    if days:
        conditions.append(sql.SQL("partition = ANY(%s)"))
        params.append(list(days))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "SELECT {} FROM {} WHERE {} ORDER BY id"
            ).format(_SELECTED, LEDGER, sql.SQL(" AND ").join(conditions)),
            params,
        )
        return [LedgerEntry(**row) for row in cur.fetchall()]


def recent(conn: psycopg.Connection, asset: str, sink: str, store: str, limit: int = 10) -> list[LedgerEntry]:
    """The last `limit` confirmed publishes of `asset` in that sink and store, newest first (one query)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                """SELECT {} FROM {} WHERE asset = %s AND sink = %s AND store = %s AND confirmed
                   ORDER BY id DESC LIMIT %s"""
            ).format(_SELECTED, LEDGER),
            (asset, sink, store, limit),
        )
        return [LedgerEntry(**row) for row in cur.fetchall()]


def latest_entries(
    conn: psycopg.Connection, asset: str, days: Sequence[str], sink: str | None = None, store: str | None = None
) -> dict[str, LedgerEntry]:
    """The last confirmed ledger row of each of `days` of `asset` (optionally in one sink, and in one store); days
    never published are absent. One query on `ledger_by_day`, whatever the ledger holds besides.

    Without `store` it is the last publish in *any* store: on a ledger shared by deployments that write the asset
    into different stores (`warehouse.orders`, `other.orders`), another deployment's. A reader that means its own
    deployment's publishes (the late-data sensor) names the store its IO manager writes to."""
    if not ledger_exists(conn):
        return {}
    conditions, params = [], []
    for column, value in (("sink", sink), ("store", store)):
        if value is not None:
            conditions.append(sql.SQL("AND {} = %s").format(sql.Identifier(column)))
            params.append(value)
    match, matched = _days_match(days)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                """SELECT DISTINCT ON (partition) {} FROM {}
                   WHERE asset = %s AND {} {} AND confirmed
                   ORDER BY partition, id DESC"""
            ).format(_SELECTED, LEDGER, match, sql.SQL(" ").join(conditions)),
            (asset, *matched, *params),
        )
        return {row["partition"]: LedgerEntry(**row) for row in cur.fetchall()}


def latest_by_asset(
    conn: psycopg.Connection, assets: Sequence[str], days: Sequence[str], run_id: str
) -> list[LedgerEntry]:
    """The last confirmed row that run `run_id` wrote of each (asset, day, sink) of `assets` and `days`, by asset,
    day and sink.

    Only that run's rows: the newest row of a day in any store may be another deployment's (a ledger shared by
    deployments writing the same asset into other stores), and a store alone does not tell deployments apart in
    every sink (a search store is the read alias, the same name on two clusters); a run id names one run of one
    instance. `ledger_by_day` finds the days of the assets; the run is a filter on them."""
    match, params = _days_match(days)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                """SELECT DISTINCT ON (asset, partition, sink) {} FROM {}
                   WHERE asset = ANY(%s) AND {} AND run_id = %s AND confirmed
                   ORDER BY asset, partition, sink, id DESC"""
            ).format(_SELECTED, LEDGER, match),
            (list(assets), *params, run_id),
        )
        return [LedgerEntry(**row) for row in cur.fetchall()]


def publishes(
    conn: psycopg.Connection, assets: Sequence[str], days: Sequence[str] | None = None, limit: int | None = None
) -> list[LedgerEntry]:
    """The confirmed rows of `assets` (of `days`, when given), oldest first; with `limit`, only the newest `limit`.

    Only these assets' rows are read: by day (`ledger_by_day`), or, without days, the newest `limit` of them
    (`ledger_by_asset`, see below). Without days or a limit, it is every publish of these assets: as long as
    their history."""
    if not assets:
        return []
    params: list = [list(assets)]
    if days is not None:
        match, matched = _days_match(days)
        query = sql.SQL("SELECT {} FROM {} WHERE asset = ANY(%s) AND {} AND confirmed").format(_SELECTED, LEDGER, match)
        params += matched
    elif limit is not None:
        # The newest `limit` of each asset (a backward scan of `ledger_by_asset` that stops there), merged by id:
        # at most `limit` rows per asset are read, however long their histories.
        params = [value for asset in assets for value in (asset, limit)]
        query = sql.SQL("SELECT * FROM ({}) merged").format(sql.SQL(" UNION ALL ").join(
            sql.SQL("(SELECT {} FROM {} WHERE asset = %s AND confirmed ORDER BY id DESC LIMIT %s)").format(
                _SELECTED, LEDGER)
            for _ in assets
        ))
    else:
        query = sql.SQL("SELECT {} FROM {} WHERE asset = ANY(%s) AND confirmed").format(_SELECTED, LEDGER)
    if limit is not None:
        query = sql.SQL("SELECT * FROM ({} ORDER BY id DESC LIMIT %s) newest").format(query)
        params.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("{} ORDER BY id").format(query), params)
        return [LedgerEntry(**row) for row in cur.fetchall()]


def last_partitions(conn: psycopg.Connection, asset: str, sink: str, store: str, n: int) -> list[str]:
    """The last `n` days of `asset` published in that sink and store, oldest first (a short backward scan of
    `ledger_by_day`: it stops at the n-th day, whatever the asset's history)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                """SELECT DISTINCT partition FROM {} WHERE asset = %s AND sink = %s AND store = %s AND confirmed
                   ORDER BY partition DESC LIMIT %s"""
            ).format(LEDGER),
            (asset, sink, store, n),
        )
        return sorted(day for (day,) in cur.fetchall())


def ledger_exists(conn: psycopg.Connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{META_SCHEMA}.ledger",))
        return cur.fetchone()[0]
