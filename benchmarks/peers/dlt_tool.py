"""dlt 1.31 (`dlt[postgres]`): projects/dlt/dlt_pipeline.py, merge (delete-insert) with merge_key = the day.

Reads the per-day Parquet files itself (no source table). Its pipeline working dir is under the state dir,
shared by concurrent runs as it would be on one machine.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from benchmarks.peers.base import Tool

PINS = {"dlt": "1.31."}


class DltTool(Tool):
    def __init__(self, ctx):
        super().__init__(ctx, name="dlt", table="peer_dlt.flights", in_database=False)

    def install(self) -> None:
        self.pip_install(["dlt[postgres]==1.31.*", "pyarrow"], PINS)

    def version(self) -> str:
        have = self.installed_versions(["dlt", "psycopg2-binary", "pyarrow"])
        return ", ".join(f"{k} {v}" for k, v in have.items())

    def prepare(self) -> None:
        self.project = self.copy_project("dlt")

    def dsn(self) -> str:
        """dlt requires a password in its credentials; with trust auth any one does."""
        parts = urlsplit(self.ctx.dsn)
        if parts.password:
            return self.ctx.dsn
        netloc = f"{parts.username or 'postgres'}:unused@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(parts._replace(netloc=netloc))

    def recover(self) -> str:
        """Failed concurrent runs leave pending load packages that every later run retries first (and fails on,
        ignoring its new data): abort them as dlt's message says; when that fails too (the runs removed each
        other's package files), delete the pipeline's working directory, which dlt restores from the destination."""
        import shutil
        import subprocess

        done = subprocess.run([self.venv_bin("dlt"), "-y", "pipeline", "--pipelines-dir", str(self.project / "pipelines"),
                               "peers_flights", "abort-packages"], capture_output=True, text=True, cwd=self.project)
        output = (done.stdout + done.stderr).strip().splitlines()
        error = next((line for line in output if "Errno" in line or "rror" in line), "")
        if done.returncode == 0 and not error:
            return "then `dlt pipeline peers_flights abort-packages`"
        shutil.rmtree(self.project / "pipelines" / "peers_flights", ignore_errors=True)
        return ("then `dlt pipeline peers_flights abort-packages` failed too"
                f"{' (' + error.split(']')[0] + '])' if error else ''}, so the pipeline's working directory was deleted")

    def startup_command(self) -> list[str]:
        return [self.venv_bin("python"), "-c", "import dlt"]

    def command(self, first, last, kind, slot=0):
        argv = [self.venv_bin("python"), str(self.project / "dlt_pipeline.py"), "--start", first, "--end", last]
        env = {"PEERS_DLT_DSN": self.dsn(), "PEERS_DLT_PIPELINES_DIR": str(self.project / "pipelines"),
               "PEERS_SOURCE_DIR": str(self.ctx.source)}
        return argv, env, self.project
