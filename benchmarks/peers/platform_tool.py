"""The platform: `dagster asset materialize` of benchmarks/peers/platform_defs.py, as a user runs it.

A Dagster instance of its own (`<state>/bench-peers/work/platform/dagster_home`, dagster-postgres in the
benchmark's database, the `dagster.yaml` that `idem up` writes, migrated once), the asset table in schema
`peer_platform`, default settings otherwise (no IDEM_PG_SWAP_MIN_ROWS: every day replaced in place).
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from benchmarks.peers.base import ROOT, Tool, python_bin

SCHEMA = "peer_platform"


class PlatformTool(Tool):
    def __init__(self, ctx):
        super().__init__(ctx, name="platform", table=f"{SCHEMA}.flights", in_database=False)

    def install(self) -> None:  # the project's own venv
        pass

    def version(self) -> str:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return f"idem_platform {metadata.version('idem_platform')} ({rev.stdout.strip() or '?'}), dagster {metadata.version('dagster')}"

    def home(self) -> Path:
        return self.ctx.work / "platform" / "dagster_home"

    def env(self) -> dict[str, str]:
        return {
            "IDEM_PG_DSN": self.ctx.dsn, "IDEM_PG_SCHEMA": SCHEMA, "DAGSTER_HOME": str(self.home()),
            "IDEM_STATE_DIR": str(self.ctx.work / "platform"), "PEERS_SOURCE_DIR": str(self.ctx.source),
            "PYTHONPATH": str(ROOT),
        }

    def prepare(self) -> None:
        from idem_platform.services import write_dagster_yaml  # the instance `idem up` sets up

        write_dagster_yaml(self.home())
        import os

        subprocess.run([python_bin("dagster"), "instance", "migrate"], env={**os.environ, **self.env()}, cwd=ROOT,
                       check=True, capture_output=True)

    def command(self, first, last, kind, slot=0):
        partitions = ["--partition", first] if first == last else ["--partition-range", f"{first}...{last}"]
        argv = [python_bin("dagster"), "asset", "materialize", "-m", "benchmarks.peers.platform_defs",
                "--select", "flights", *partitions]
        return argv, self.env(), ROOT
