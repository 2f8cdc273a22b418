"""What every tool adapter of `make bench-peers` is: install, (source table), the command that runs days, its table.

An adapter only says which command a user would type for "run days first...last" (`command`); this module
starts it (its own process group, so kill -9 reaches every process of it), times it end to end and keeps its
output in `<state>/bench-peers/work/logs/`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = Path(__file__).resolve().parent / "projects"


@dataclass
class Context:
    """Where everything lives for one benchmark run."""

    state: Path  # <state dir>/bench-peers
    dsn: str  # URL of the benchmark's database
    source: Path  # per-day Parquet files
    log: callable = print

    @property
    def work(self) -> Path:
        return self.state / "work"

    @property
    def venvs(self) -> Path:
        return self.state / "venvs"

    def pg_env(self) -> dict[str, str]:
        """The connection as separate variables (dbt profile, SQLMesh config)."""
        parts = urlsplit(self.dsn)
        return {
            "PEERS_PG_HOST": parts.hostname or "127.0.0.1", "PEERS_PG_PORT": str(parts.port or 5432),
            "PEERS_PG_USER": parts.username or "postgres", "PEERS_PG_PASSWORD": parts.password or "",
            "PEERS_PG_DB": parts.path.lstrip("/"),
        }


@dataclass
class Outcome:
    code: int
    seconds: float
    log: Path
    started_wall: float = 0.0  # time.time() at the start

    def tail(self, chars: int = 1500) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-chars:]


@dataclass
class Running:
    proc: subprocess.Popen
    started: float
    log: Path
    out: object = None
    started_wall: float = field(default_factory=time.time)

    def wait(self, timeout: float = 1800) -> Outcome:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        elapsed = time.perf_counter() - self.started
        if self.out:
            self.out.close()
        return Outcome(code, elapsed, self.log, self.started_wall)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Tool:
    """One tool: subclasses fill `name`, `table`, `in_database`, `install`, `version`, `prepare`, `command`."""

    ctx: Context
    name: str = ""
    table: str = ""  # schema.relation the verdicts read
    in_database: bool = False  # reads the PostgreSQL source table (loading it counts in its end-to-end time)
    unavailable: str = ""  # why it cannot run (install failed ...), shown in the table
    _invocations: int = field(default=0, repr=False)

    # --- to fill
    def startup_command(self) -> list[str]:
        """The tool's bare start-up (its CLI printing its version): the floor under every run's time."""
        return []

    def recover(self) -> str:
        """What a user does after failed runs so that later runs work again (documented by the tool); what was done."""
        return ""

    def install(self) -> None: ...
    def version(self) -> str: return "?"
    def prepare(self) -> None: ...
    def command(self, first: str, last: str, kind: str, slot: int = 0) -> tuple[list[str], dict[str, str], Path]:
        """argv, extra environment, cwd. kind: backfill (first load of a range), rerun (a range again),
        day (a loaded day again), new (a day never loaded)."""
        raise NotImplementedError

    # --- shared
    def start(self, first: str, last: str, kind: str, slot: int = 0) -> Running:
        argv, extra, cwd = self.command(first, last, kind, slot)
        self._invocations += 1
        logs = self.ctx.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{self.name}-{self._invocations:03d}-{kind}-{first}-{slot}.log"
        out = open(log, "wb")
        out.write((" ".join(argv) + "\n").encode())
        out.flush()
        env = {**os.environ, **extra}
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        return Running(proc, started, log, out)

    def run(self, first: str, last: str, kind: str) -> Outcome:
        outcome = self.start(first, last, kind).wait()
        if outcome.code != 0:
            self.ctx.log(f"  {self.name} {kind} {first}...{last}: exit {outcome.code}; {outcome.log}\n"
                         + outcome.tail(800))
        return outcome

    # --- helpers for subclasses
    def venv(self) -> Path:
        return self.ctx.venvs / self.name

    def venv_bin(self, program: str) -> str:
        return str(self.venv() / "bin" / program)

    def installed_versions(self, dists: list[str]) -> dict[str, str]:
        python = self.venv() / "bin" / "python"
        if not python.exists():
            return {}
        code = ("import importlib.metadata as m, json\nout = {}\nfor d in %r:\n    try: out[d] = m.version(d)\n"
                "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))" % (dists,))
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        import json

        return json.loads(done.stdout) if done.returncode == 0 else {}

    def pip_install(self, requirements: list[str], dists: dict[str, str]) -> None:
        """Create the venv and pip install, unless every dist is there at its pinned prefix (e.g. '1.31.')."""
        have = self.installed_versions(list(dists))
        if all(have.get(dist, "").startswith(prefix) for dist, prefix in dists.items()):
            return
        self.ctx.log(f"installing {' '.join(requirements)} into {self.venv()}")
        if not (self.venv() / "bin" / "python").exists():
            subprocess.run(["python3", "-m", "venv", str(self.venv())], check=True)
        done = subprocess.run([self.venv_bin("python"), "-m", "pip", "install", "-q", *requirements],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(requirements)} failed: {done.stderr.strip()[-400:]}")

    def copy_project(self, project: str) -> Path:
        """A fresh copy of the tool's project files in the work dir (its caches and logs stay out of the repo)."""
        target = self.ctx.work / project
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(PROJECTS / project, target)
        return target


def python_bin(program: str) -> str:
    """A program of the Python running the benchmark (the project's venv)."""
    return str(Path(sys.executable).with_name(program))
