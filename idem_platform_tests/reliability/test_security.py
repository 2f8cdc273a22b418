"""Security checks of the write path: hostile names and values, credentials in logs and metadata, the UI bind.

- Names: Dagster itself refuses asset names outside `^[A-Za-z0-9_]+$`, so hostile asset names are tried where they
  could still arrive, the sink layer (`AssetTarget`) under the Dagster layer; hostile column names and values go
  through Dagster too. Whatever the names, the statements executed create exactly the table, columns, files and
  indices the names spell, and nothing else is touched (`victim` tables keep their row, the set of relations
  and indices is exactly the expected one). Hostile partition keys are refused before any connection.
- Credentials: a CLI run whose `IDEM_PG_DSN` carries the password of a real role (connecting over TCP) and whose
  `IDEM_ES_PASSWORD` is set leaves neither password in its output, in any row of any table of the instance
  database (event log, runs, tags, ledger, warehouse), or in any file under DAGSTER_HOME or the lake.
- UI: `idem dev` binds the webserver to 127.0.0.1 unless told otherwise.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pandas.testing as pdt
import psycopg
import pytest
from psycopg import sql

from idem_platform.cli import build_parser
from idem_platform.declare import idem_asset
from idem_platform.partitions import InvalidPartitionKey
from idem_platform.resources import PostgresResource
from idem_platform.services import DAGSTER_YAML, dagster_cli
from idem_platform.storage import lake_store, ledger
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.search_layout import VERSION_FIELD
from idem_platform.storage.partition_store import AssetTarget, load_partitions, publish_partitions
from idem_platform.storage.postgres_store import PostgresPartitionIOManager
from idem_platform.storage.schema import PARTITION_COLUMN, TableDeclaration
from idem_platform_tests.cli_runs import run
from idem_platform_tests.reliability.content import NOTES
from idem_platform_tests.reliability.test_concurrency import cli_command

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-01-05"
HOSTILE_ASSET = "évé'; DROP TABLE victim; --"
HOSTILE_COLUMNS = {
    "id": "string",
    "'; DROP TABLE victim; --": "string",
    'naïve "col"': "int",
    "semi;colon, 日本": "float",
}
HOSTILE_DAYS = ["2026-01-05'; DROP TABLE victim; --", "2026-01-05; DELETE FROM idem.ledger", "２０２６-01-05"]


def hostile_decl() -> TableDeclaration:
    return TableDeclaration.build(HOSTILE_COLUMNS, key=["id"])


def hostile_frame(decl: TableDeclaration, rows: int = 21) -> pd.DataFrame:
    return decl.coerce(pd.DataFrame({
        "id": [f"{NOTES[i % len(NOTES)]}#{i}" for i in range(rows)],  # keys with quotes, newlines, `\.`, unicode
        "'; DROP TABLE victim; --": [NOTES[(i + 3) % len(NOTES)] for i in range(rows)],
        'naïve "col"': [None if i % 5 == 0 else i for i in range(rows)],
        "semi;colon, 日本": [i / 3 for i in range(rows)],
        PARTITION_COLUMN: [DAY] * rows,
    }))


def relations(dsn: str) -> set[str]:
    """Every relation outside the system schemas, as `schema.name (kind)`."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
                 AND n.nspname NOT LIKE 'pg_temp%%'"""
        ).fetchall()
    return {f"{schema}.{name} ({kind})" for schema, name, kind in rows}


def make_victims(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for table in (sql.Identifier("public", "victim"), sql.Identifier(schema, "victim")):
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (v text)").format(table))
            conn.execute(sql.SQL("INSERT INTO {} VALUES ('still here')").format(table))


def victims_intact(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return all(
            conn.execute(sql.SQL("SELECT array_agg(v) FROM {}").format(table)).fetchone()[0] == ["still here"]
            for table in (sql.Identifier("public", "victim"), sql.Identifier(schema, "victim"))
        )


@pytest.fixture
def security_dsn(make_database) -> str:
    """A database of this test's own: the relation checks see everything in it."""
    return make_database("idem_sec")


def test_dagster_refuses_hostile_asset_names(scorecard):
    with scorecard.scenario("security/names/dagster_asset_names", "security", "-"):
        for name in (HOSTILE_ASSET, "people; DROP TABLE runs", 'a"b', "naïve", "../escape"):
            with pytest.raises(dg.DagsterInvalidDefinitionError, match="not a valid name"):
                idem_asset(columns={"id": "string"}, key=["id"], io_manager_key="warehouse_io", name=name)(
                    lambda context: None
                )


def test_hostile_names_and_values_in_the_postgres_sink(security_dsn, make_store, scorecard):
    spec = make_store("postgres", dsn=security_dsn, asset=HOSTILE_ASSET)
    decl = hostile_decl()
    target = AssetTarget(spec.asset, decl, AuditRules())
    with scorecard.scenario("security/names/postgres_sink", "security", "postgres"):
        make_victims(security_dsn, spec.schema)
        before = relations(security_dsn)
        frame = hostile_frame(decl)
        [entry] = publish_partitions(spec.sink(), spec.postgres, target, [DAY], frame, f"hostile-{uuid.uuid4()}")
        [again] = publish_partitions(spec.sink(), spec.postgres, target, [DAY], frame, f"hostile-{uuid.uuid4()}")

        back = load_partitions(spec.sink(), spec.postgres, target, [DAY])
        pdt.assert_frame_equal(back.sort_values("id", ignore_index=True), frame.sort_values("id", ignore_index=True))
        assert fingerprint(back, decl) == entry.fingerprint == again.fingerprint and not again.changed
        assert victims_intact(security_dsn, spec.schema)
        created = relations(security_dsn) - before
        ledger_relations = {"idem.ledger (r)", "idem.ledger_pkey (i)", "idem.ledger_id_seq (S)",
                            *(f"idem.{name} (i)" for name in ledger.LEDGER_INDEXES)}
        day_table = f"{spec.schema}.{HOSTILE_ASSET}$p{DAY.replace('-', '')}"
        assert created == {
            f"{spec.schema}.{HOSTILE_ASSET} (p)", f"{spec.schema}.{HOSTILE_ASSET}$pkey (I)",  # partitioned by day
            f"{day_table} (r)", f"{day_table}$pkey (i)",
        } | ledger_relations
        with psycopg.connect(security_dsn) as conn:
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position", (spec.schema, HOSTILE_ASSET)
            ).fetchall()
        assert [c for (c,) in columns] == decl.names


def test_a_warehouse_table_cannot_collide_with_dagster_tables(security_dsn, make_store, scorecard):
    """An asset called `runs` (a dagster-postgres table in `public`) lands in the warehouse schema."""
    spec = make_store("postgres", dsn=security_dsn)
    with scorecard.scenario("security/names/asset_named_runs", "security", "postgres"):
        make_victims(security_dsn, spec.schema)
        with psycopg.connect(security_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.runs (run_id text)")
            conn.execute("INSERT INTO public.runs VALUES ('a dagster run')")

        @idem_asset(columns={"id": "string", "v": "string"}, key=["id"], io_manager_key="warehouse_io", name="runs")
        def runs(context):
            return pd.DataFrame({"id": ["r1", "r2"], "v": NOTES[1:3], PARTITION_COLUMN: [DAY, DAY]})

        resources = {"warehouse_io": PostgresPartitionIOManager(postgres=PostgresResource(dsn=security_dsn),
                                                                db_schema=spec.schema)}
        assert dg.materialize([runs], partition_key=DAY, resources=resources,
                              instance=dg.DagsterInstance.ephemeral()).success
        with psycopg.connect(security_dsn) as conn:
            assert conn.execute("SELECT array_agg(run_id) FROM public.runs").fetchone()[0] == ["a dagster run"]
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.schema, "runs"))).fetchone()[0] == 2
        assert victims_intact(security_dsn, spec.schema)


def test_hostile_names_and_values_in_the_lake_sink(make_store, scorecard):
    spec = make_store("lake", asset=HOSTILE_ASSET)
    decl = hostile_decl()
    target = AssetTarget(spec.asset, decl, AuditRules())
    with scorecard.scenario("security/names/lake_sink", "security", "lake"):
        frame = hostile_frame(decl)
        [entry] = publish_partitions(spec.sink(), spec.postgres, target, [DAY], frame, f"hostile-{uuid.uuid4()}")
        back = load_partitions(spec.sink(), spec.postgres, target, [DAY])
        pdt.assert_frame_equal(back, frame)
        assert fingerprint(back, decl) == entry.fingerprint
        # Exactly one directory, named exactly as the asset, with exactly the day's file and the asset's declared
        # types (lake_store.SCHEMA_FILE): no other path touched.
        written = sorted(str(p.relative_to(spec.lake_root)) for p in Path(spec.lake_root).rglob("*"))
        assert written == [HOSTILE_ASSET, f"{HOSTILE_ASSET}/{DAY}.parquet", f"{HOSTILE_ASSET}/{lake_store.SCHEMA_FILE}"]


def test_hostile_names_and_values_in_the_search_sink(make_store, scorecard):
    decl = hostile_decl()
    with scorecard.scenario("security/names/search_sink", "security", "elasticsearch"):
        # A hostile asset name never reaches the server: index names must be [a-z0-9][a-z0-9_]*.
        refused = make_store("elasticsearch", asset=HOSTILE_ASSET)
        sink = refused.sink()
        indices_before = set(sink.client.indices.get_alias(index="*", expand_wildcards="all").body)
        with pytest.raises(ValueError, match="cannot name an index"):
            publish_partitions(sink, refused.postgres, AssetTarget(HOSTILE_ASSET, decl, AuditRules()), [DAY],
                               hostile_frame(decl), f"hostile-{uuid.uuid4()}")
        assert set(sink.client.indices.get_alias(index="*", expand_wildcards="all").body) == indices_before
        assert refused.ledger() == []

        # Hostile column names and values in a valid asset: the mapping has exactly the declared fields.
        spec = make_store("elasticsearch")
        target = AssetTarget(spec.asset, decl, AuditRules())
        frame = hostile_frame(decl)
        [entry] = publish_partitions(spec.sink(), spec.postgres, target, [DAY], frame, f"hostile-{uuid.uuid4()}")
        back = spec.sink().read(target, [DAY])
        assert fingerprint(back, decl) == entry.fingerprint
        pdt.assert_frame_equal(back.sort_values("id", ignore_index=True), frame.sort_values("id", ignore_index=True))
        created = set(sink.client.indices.get_alias(index="*", expand_wildcards="all").body) - indices_before
        assert created == {f"{spec.asset}-2026"}  # the asset's index of the year
        mapping = sink.client.indices.get_mapping(index=spec.asset).body
        [properties] = [m["mappings"]["properties"] for m in mapping.values()]
        assert set(properties) == {*decl.names, VERSION_FIELD}  # the declared fields and the write version


@pytest.mark.parametrize("kind", ["postgres", "lake", "elasticsearch"])
def test_hostile_partition_keys_are_refused_before_any_write(kind, security_dsn, make_store, scorecard):
    spec = make_store(kind, dsn=security_dsn)
    with scorecard.scenario(f"security/partition_keys/{kind}", "security", kind):
        make_victims(security_dsn, spec.schema)
        before = relations(security_dsn)
        frame = hostile_frame(hostile_decl())
        for day in HOSTILE_DAYS:
            with pytest.raises(InvalidPartitionKey, match="not a day in YYYY-MM-DD form"):
                publish_partitions(spec.sink(), spec.postgres, spec.target(), [day], frame, "hostile")
        # A hostile value in the partition column of the frame is refused by the declared date type.
        bad = frame.astype({PARTITION_COLUMN: object})
        bad.loc[0, PARTITION_COLUMN] = HOSTILE_DAYS[0]
        with pytest.raises((ValueError, TypeError)):
            publish_partitions(spec.sink(), spec.postgres, AssetTarget(spec.asset, hostile_decl(), AuditRules()),
                               [DAY], bad, "hostile")
        assert relations(security_dsn) == before and victims_intact(security_dsn, spec.schema)
        if kind == "lake":
            assert not Path(spec.lake_root).exists() or not any(Path(spec.lake_root).rglob("*.parquet"))


# ------------------------------------------------------------------------------------------------- credentials


@pytest.fixture
def secret_role(pg_admin_dsn, tmp_path_factory):
    """A real role with a password, its own database, and a migrated Dagster instance owned by it."""
    role, password = f"idem_cred_{uuid.uuid4().hex[:8]}", f"pw-{secrets.token_hex(12)}-S3cret"
    database = f"{role}_db"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    server = psycopg.conninfo.conninfo_to_dict(pg_admin_dsn)
    dsn = f"postgresql://{role}:{password}@127.0.0.1:{server.get('port') or 5432}/{database}"
    home = tmp_path_factory.mktemp("dagster_home_secret")
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    try:
        yield role, password, dsn, home
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_credentials_from_the_environment_never_reach_logs_or_metadata(secret_role, es, tmp_path, scorecard):
    role, password, dsn, home = secret_role
    es_password = f"es-{secrets.token_hex(12)}-S3cret"
    env = {**os.environ, "IDEM_PG_DSN": dsn, "DAGSTER_HOME": str(home), "IDEM_PG_SCHEMA": "warehouse",
           "IDEM_LAKE_DIR": str(tmp_path / "lake"), "IDEM_STATE_DIR": str(tmp_path / "state"),
           "IDEM_PEOPLE_PER_DAY": "50", "PYTHONWARNINGS": "ignore"}
    if not os.environ.get("IDEM_ES_URL"):  # the local server ignores credentials; a real cluster keeps its own
        env.update({"IDEM_ES_URL": es.url, "IDEM_ES_USERNAME": "idem", "IDEM_ES_PASSWORD": es_password})
    secrets_in_play = [s for s in (password, env.get("IDEM_ES_PASSWORD")) if s]
    with scorecard.scenario("security/credentials/cli_run", "security", "all") as sc:
        migrate = subprocess.run([dagster_cli(), "instance", "migrate"], env=env, capture_output=True, text=True)
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        done = run(cli_command("raw_people,people,people_search", partition=DAY), env)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

        leaks = [f"CLI output contains {s[:6]}..." for s in secrets_in_play if s in done.stdout + done.stderr]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == role  # the run really used this DSN
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
            ).fetchall()
            searched = {}
            for schema, table in tables:
                name = sql.Identifier(schema, table)
                searched[f"{schema}.{table}"] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
                for s in secrets_in_play:
                    hits = conn.execute(sql.SQL("SELECT count(*) FROM {} t WHERE t::text LIKE %s").format(name),
                                        (f"%{s}%",)).fetchone()[0]
                    if hits:
                        leaks.append(f"{hits} rows of {schema}.{table} contain {s[:6]}...")
            ledger_runs = conn.execute("SELECT count(*) FROM idem.ledger").fetchone()[0]
        assert ledger_runs == 3 and searched.get("public.event_logs", 0) > 0, searched
        for root in (home, tmp_path / "lake"):
            for path in Path(root).rglob("*"):
                if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets_in_play):
                    leaks.append(f"file {path} contains a secret")
        sc.note = f"searched output, {len(searched)} tables ({sum(searched.values())} rows), DAGSTER_HOME and lake files"
        assert leaks == []


# ----------------------------------------------------------------------------------------------------- web UI


def _listening(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, _, st = line.split()[1:4]
            address, hex_port = local.split(":")
            if st == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent, the kernel picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_web_ui_binds_to_loopback_unless_told_otherwise(make_database, search_url, tmp_path, monkeypatch, scorecard):
    monkeypatch.delenv("IDEM_UI_HOST", raising=False)
    assert build_parser().parse_args(["dev"]).host == "127.0.0.1"
    monkeypatch.setenv("IDEM_UI_HOST", "0.0.0.0")
    assert build_parser().parse_args(["dev"]).host == "0.0.0.0"  # told otherwise, deliberately

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "IDEM_PG_DSN": make_database("idem_ui"), "DAGSTER_HOME": str(tmp_path / "home"),
           "IDEM_STATE_DIR": str(tmp_path / "state"), "PYTHONWARNINGS": "ignore"}
    env.pop("IDEM_UI_HOST", None)
    if search_url:
        env["IDEM_ES_URL"] = search_url
    with scorecard.scenario("security/ui/binds_loopback", "security", "-") as sc:
        dev = subprocess.Popen([str(Path(sys.executable).with_name("idem")), "dev", "--port", str(port)], env=env,
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while not _listening(port) and dev.poll() is None and time.monotonic() < deadline:
                time.sleep(0.25)
            assert _listening(port) == {"0100007F"}, f"listening on {_listening(port)} (0100007F is 127.0.0.1)"
            waited = time.monotonic() - deadline + 90
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            other = _non_loopback_address()
            if other:
                with pytest.raises(OSError):
                    socket.create_connection((other, port), timeout=5).close()
            sc.note = (f"webserver listening on 127.0.0.1:{port} only (after {waited:.1f} s); "
                       f"{other or 'no other address'} refused")
        finally:
            dev.send_signal(signal.SIGTERM)  # idem dev stops the webserver and the daemon it started
            try:
                dev.communicate(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)  # the session this test started, by its id
                dev.communicate()


def test_source_readers_enforce_their_bound_and_are_not_public(make_database, scorecard):
    """The SECURITY DEFINER readers of the 311 source serve one day (or the late-data look-back), to their owner
    and the roles it grants them to; `-infinity..infinity` and PUBLIC used to get the whole table."""
    from idem_platform.pipelines.service_requests import source

    dsn = make_database("idem_source")
    role = f"outsider_{uuid.uuid4().hex[:8]}"
    with scorecard.scenario("security/source/bounded_readers", "security", "postgres"):
        with psycopg.connect(dsn, autocommit=True) as conn:
            source.ensure_source(conn)
            source.simulate(conn, ["2026-01-05", "2026-01-06"], seed=1, per_day=20)
            assert len(source.read_window(conn, "2026-01-05")) == 20
            for start, end in (("-infinity", "infinity"), ("2026-01-01", "2026-01-09"), ("2026-01-06", "2026-01-05")):
                with pytest.raises(psycopg.errors.InvalidParameterValue, match="at most one day"):
                    conn.execute("SELECT count(*) FROM source.requests_created_between(%s, %s)", (start, end))
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="at most 1000 days"):
                conn.execute("SELECT count(*) FROM source.latest_update_by_day('-infinity', 'infinity')")
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            try:
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA source TO {}").format(sql.Identifier(role)))
                with psycopg.connect(dsn, autocommit=True, user=role) as outsider:
                    for function in ("requests_created_between", "latest_update_by_day"):
                        with pytest.raises(psycopg.errors.InsufficientPrivilege):
                            outsider.execute(
                                f"SELECT * FROM source.{function}('2026-01-05', '2026-01-06')"
                            )
            finally:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_inbox_reads_regular_files_only(tmp_path, scorecard):
    """A symbolic link in the inbox (to /etc/passwd, to another day's file) is reported, never read."""
    from idem_platform.pipelines.scooters.inbox import InboxFileError, day_files, trips_dir
    from idem_platform.pipelines.scooters.reading import read_inbox_day
    from idem_platform.pipelines.scooters.sensor import InboxCursor, plan_inbox

    with scorecard.scenario("security/inbox/regular_files_only", "security", "-"):
        trips = trips_dir(tmp_path)
        trips.mkdir(parents=True)
        secret = tmp_path / "secret.csv"
        secret.write_text("trip_id,started_at\n1,2026-01-05T00:00:00Z\n")
        (trips / "2026-01-05.csv").symlink_to(secret)
        assert day_files(tmp_path, "2026-01-05") == []
        plan = plan_inbox(tmp_path, InboxCursor(), settle_seconds=0)
        assert plan.requests == []
        assert [(r.kind, r.file) for r in plan.reports] == [("file_ignored", "2026-01-05.csv")]
        assert "symbolic link" in plan.reports[0].message
        with pytest.raises(InboxFileError, match="no inbox file|no file"):
            read_inbox_day(tmp_path, "2026-01-05")


def test_idem_up_never_prints_a_password():
    from idem_platform.cli import mask_password

    assert mask_password("postgresql://idem:s3cret@db:5432/wh") == "postgresql://idem:***@db:5432/wh"
    assert "s3cret" not in mask_password("host=db user=idem password=s3cret dbname=wh")
    assert mask_password("postgresql://idem@db/wh") == "postgresql://idem@db/wh"
