"""SQLMesh 0.236 (`sqlmesh[postgres]`): projects/sqlmesh, one INCREMENTAL_BY_TIME_RANGE model (time_column =
the day) over the source table `peer_src.flights`, prod environment, state in the same database.

- first load (the model's start ... LAST): `sqlmesh plan --auto-apply --no-prompts --execution-time LAST+1`
- a loaded range or day again: `sqlmesh plan --restate-model peer_sqlmesh.flights --start .. --end .. --auto-apply --no-prompts`
- a new day: `sqlmesh run --start DAY --end DAY` (its missing interval)
"""

from __future__ import annotations

import datetime as dt

from benchmarks.peers.base import Tool

PINS = {"sqlmesh": "0.236."}
MODEL = "peer_sqlmesh.flights"


class SqlmeshTool(Tool):
    def __init__(self, ctx):
        super().__init__(ctx, name="sqlmesh", table=MODEL, in_database=True)

    def install(self) -> None:
        self.pip_install(["sqlmesh[postgres]==0.236.*"], PINS)

    def version(self) -> str:
        have = self.installed_versions(["sqlmesh", "sqlglot", "psycopg2-binary", "psycopg2"])
        return ", ".join(f"{k} {v}" for k, v in have.items())

    def prepare(self) -> None:
        self.project = self.copy_project("sqlmesh")

    def startup_command(self) -> list[str]:
        return [self.venv_bin("sqlmesh"), "--version"]

    def command(self, first, last, kind, slot=0):
        sqlmesh = self.venv_bin("sqlmesh")
        if kind == "backfill":
            # a prod plan takes no --start/--end (SQLMesh refuses them without restatements): the plan is made
            # "as of" the day after the range, so it backfills the model's start ... last
            after = (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat()
            argv = [sqlmesh, "plan", "--auto-apply", "--no-prompts", "--execution-time", after]
        elif kind == "new":
            argv = [sqlmesh, "run", "--start", first, "--end", last]
        else:
            argv = [sqlmesh, "plan", "--restate-model", MODEL, "--start", first, "--end", last,
                    "--auto-apply", "--no-prompts"]
        return argv, self.ctx.pg_env(), self.project
