"""Service faults: the service a write depends on goes away mid-write, then comes back.

- PostgreSQL: the writer's connection is killed with `pg_terminate_backend` in the middle of its COPY.
- Search server: the server is taken away (every connection reset, new ones refused) after the first bulk chunk.
- Lake: the asset's directory is read-only for the run process (a read-only bind mount in the run's own mount
  namespace when the suite runs as root, whom permission bits do not stop; `chmod a-w` otherwise).

Each time: the run fails with an error naming the cause, a reader polling throughout sees only the old complete
content, the ledger is untouched, and a retry once the service is back converges to a clean end state whose
content is what the ledger's latest row names. The faulted run and the retry are the publish windows.

The PostgreSQL and search faults are injected at the store's own `mid_stage` fault point (its `fault_point` is
swapped, in this process only, for a hook that takes the service away instead of killing the process) and run
through `dagster.materialize` with the real IO manager; the lake fault through a real `dagster asset
materialize` CLI run.
"""

import os
import shutil
from urllib.parse import urlsplit

import pandas as pd
import psycopg
import pytest

from idem_platform.pipelines.people import raw_people
from idem_platform.resources import LakeResource, PostgresResource
from idem_platform.storage import elasticsearch_store, postgres_store
from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager, ElasticsearchResource
from idem_platform.storage.lake_store import LakePartitionIOManager
from idem_platform.storage.postgres_store import PostgresPartitionIOManager
from idem_platform_tests.cli_runs import run
from idem_platform_tests.reliability.content import digests_for, state
from idem_platform_tests.reliability.dagster_runs import dagster_asset, failure_message, materialize
from idem_platform_tests.reliability.readers import Expectation, Reader
from idem_platform_tests.reliability.stores import (
    StoreSpec,
    latest_ledger,
    ledger_chain_breaks,
    stale_publishes,
    visible,
)
from idem_platform_tests.reliability.tcp_proxy import TcpProxy
from idem_platform_tests.reliability.test_concurrency import cli_command

DAY = "2026-01-12"
OLD, NEW = {DAY: 150}, {DAY: 120}


def _cause_line(message: str, cause: tuple[str, ...]) -> str:
    """The line of an error output that names the cause (for the scorecard)."""
    return next((line.strip() for line in message.splitlines() if any(c in line for c in cause)), "")[:400]


def _faulted_then_retried(spec: StoreSpec, resources: dict, io_key: str, scorecard, cause: tuple[str, ...],
                          take_away, bring_back, fault_point_owner) -> None:
    """Publish old; take the service away at mid_stage of a new write; check; bring it back; retry; check."""
    days = sorted(OLD)
    accepted = {d: [state("old", OLD[d]), state("new", NEW[d])] for d in days}
    with scorecard.scenario(f"service/{spec.kind}/{take_away.__name__}", "service", spec.kind, faults=1,
                            fault_mode="service") as sc:
        assert materialize(dagster_asset(spec, io_key, "old", OLD), resources, days).success
        [published] = spec.ledger()
        taken = []

        def hook(sink, point, asset=None):
            if point == "mid_stage" and not taken:
                taken.append(take_away())

        original = fault_point_owner.fault_point
        with Reader([spec], Expectation(accepted)) as reader:
            fault_point_owner.fault_point = hook
            try:
                with sc.publishing():
                    failed = materialize(dagster_asset(spec, io_key, "new", NEW), resources, days)
            finally:
                fault_point_owner.fault_point = original
            assert taken and taken[0], "the service was not taken away at mid_stage"
            assert not failed.success
            message = failure_message(failed)
            sc.writer_error(message)
            assert spec.asset in message and any(c in message for c in cause), message[-3000:]
            sc.note = _cause_line(message, cause)
            # Nothing partial, nothing new: the old content and its ledger row, exactly.
            assert visible(spec, days) == digests_for("old", OLD)
            assert spec.ledger() == [published]

            bring_back()
            with sc.publishing():
                retried = materialize(dagster_asset(spec, io_key, "new", NEW), resources, days)
            sc.writer_error(failure_message(retried))
            assert retried.success, failure_message(retried)[-3000:]
            sc.add_reader(reader.stop())
        sc.record_stale(stale_publishes(spec, days))
        assert visible(spec, days) == digests_for("new", NEW)
        assert {d: e.fingerprint for d, e in latest_ledger(spec, days).items()} == {
            d: p.fingerprint for d, p in digests_for("new", NEW).items()}
        assert len(spec.ledger()) == 2 and ledger_chain_breaks(spec.ledger()) == []
        assert spec.leftovers(days) == []


def test_postgres_connection_killed_mid_copy(make_store, scorecard, monkeypatch):
    spec = make_store("postgres")
    monkeypatch.setattr(postgres_store, "COPY_CHUNK_ROWS", 50)
    resources = {"warehouse_io": PostgresPartitionIOManager(postgres=spec.postgres, db_schema=spec.schema)}

    def pg_terminate_backend() -> int:
        with psycopg.connect(spec.dsn, autocommit=True) as admin:
            killed = admin.execute(
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'COPY%%'"""
            ).fetchall()
        return len(killed)

    cause = ("terminating connection due to administrator command", "server closed the connection")
    _faulted_then_retried(spec, resources, "warehouse_io", scorecard, cause, pg_terminate_backend, lambda: None,
                          postgres_store)


def test_search_server_stopped_mid_bulk(make_store, scorecard):
    spec = make_store("elasticsearch")
    direct = spec.es()
    if urlsplit(direct.url).scheme != "http":
        pytest.skip("the TCP proxy that stops the server cannot sit in front of an https cluster")
    upstream = urlsplit(direct.url)
    proxy = TcpProxy(upstream.hostname, upstream.port).start()
    # A new resource, not model_copy: Dagster rebuilds nested resources from their constructor arguments.
    through_proxy = ElasticsearchResource(url=proxy.url, api_key=direct.api_key, username=direct.username,
                                          password=direct.password, plain_json=direct.plain_json)
    resources = {"search_io": ElasticsearchPartitionIOManager(
        postgres=spec.postgres, es=through_proxy, replicas=0, bulk_chunk_docs=50)}

    def stop_search_server() -> bool:
        proxy.stop()
        return True

    cause = ("ConnectionError", "Connection refused", "Connection reset", "RemoteDisconnected")
    try:
        _faulted_then_retried(spec, resources, "search_io", scorecard, cause, stop_search_server, proxy.start,
                              elasticsearch_store)
    finally:
        proxy.stop()


def test_lake_directory_read_only(rel_cli_env, scorecard):
    """A real CLI run of raw_people against a read-only asset directory fails naming it; a retry converges.

    The baseline and the retry are in-process runs of the same asset (the CLI's fixed cost is ~5 s a run).
    """
    env = {**rel_cli_env, "IDEM_PEOPLE_PER_DAY": "200"}
    lake = env["IDEM_LAKE_DIR"]
    spec = StoreSpec("lake", dsn=env["IDEM_PG_DSN"], asset="raw_people", lake_root=lake, key="person_id",
                     gen_column=None, declaration="raw_people")
    folder = os.path.join(lake, "raw_people")
    resources = {"lake_io": LakePartitionIOManager(postgres=PostgresResource(dsn=env["IDEM_PG_DSN"]),
                                                   lake=LakeResource(root=lake))}
    accepted = {DAY: [{"*": 150}, {"*": 200}]}
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("unshare"):
        pytest.skip("running as root needs `unshare` (util-linux) to make the directory read-only for the run")

    with scorecard.scenario("service/lake/read_only_directory", "service", "lake", faults=1, fault_mode="service") as sc:
        import dagster as dg

        baseline = dg.materialize([raw_people], partition_key=DAY, resources=resources,
                                  run_config={"ops": {"raw_people": {"config": {"rows_per_day": 150}}}},
                                  instance=dg.DagsterInstance.ephemeral())
        assert baseline.success
        [published] = spec.ledger()
        command = cli_command("raw_people", partition=DAY)
        if as_root:  # root ignores permission bits: a read-only bind mount, in the run's own mount namespace only
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount --bind -o ro "$0" "$0" && exec "$@"', folder, *command]
        with Reader([spec], Expectation(accepted)) as reader:
            os.chmod(folder, 0o555)
            try:
                with sc.publishing():  # the CLI run's process, from its start to its end
                    failed = run(command, env)
            finally:
                os.chmod(folder, 0o755)
            output = failed.stdout + failed.stderr
            sc.writer_error(output)
            assert failed.returncode != 0
            assert ("Read-only file system" in output or "Permission denied" in output) and folder in output, output[-3000:]
            sc.note = _cause_line(output, ("Read-only file system", "Permission denied"))
            assert visible(spec, [DAY])[DAY].fingerprint == published.fingerprint
            assert spec.ledger() == [published]

            with sc.publishing():
                retried = dg.materialize([raw_people], partition_key=DAY, resources=resources,  # writable again
                                         run_config={"ops": {"raw_people": {"config": {"rows_per_day": 200}}}},
                                         instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
            sc.writer_error(failure_message(retried))
            assert retried.success, failure_message(retried)[-3000:]
            sc.add_reader(reader.stop())
        sc.record_stale(stale_publishes(spec, [DAY]))
        after = spec.ledger()
        assert len(after) == 2 and ledger_chain_breaks(after) == []
        assert visible(spec, [DAY])[DAY] == type(visible(spec, [DAY])[DAY])(200, after[-1].fingerprint)
        assert spec.leftovers([DAY]) == []
        assert pd.read_parquet(os.path.join(folder, f"{DAY}.parquet")).shape[0] == 200
