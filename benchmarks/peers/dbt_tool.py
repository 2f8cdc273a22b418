"""dbt-core 1.11 + dbt-postgres 1.11: projects/dbt, one incremental microbatch model (day batches) over the
source table `peer_src.flights`.

`dbt run --select flights --event-time-start FIRST --event-time-end LAST+1` (the end is exclusive). Concurrent
runs get their own target and log paths (DBT_TARGET_PATH, DBT_LOG_PATH), so they share the database only,
not dbt's local artifacts.
"""

from __future__ import annotations

import datetime as dt

from benchmarks.peers.base import Tool

PINS = {"dbt-core": "1.11.", "dbt-postgres": "1.11."}


class DbtTool(Tool):
    def __init__(self, ctx):
        super().__init__(ctx, name="dbt", table="peer_dbt.flights", in_database=True)

    def install(self) -> None:
        self.pip_install(["dbt-core==1.11.*", "dbt-postgres==1.11.*"], PINS)

    def version(self) -> str:
        have = self.installed_versions(list(PINS))
        return ", ".join(f"{k} {v}" for k, v in have.items())

    def prepare(self) -> None:
        self.project = self.copy_project("dbt")

    def startup_command(self) -> list[str]:
        return [self.venv_bin("dbt"), "--version"]

    def command(self, first, last, kind, slot=0):
        end = (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat()
        argv = [self.venv_bin("dbt"), "run", "--select", "flights", "--event-time-start", first,
                "--event-time-end", end]
        env = {**self.ctx.pg_env(), "DBT_PROFILES_DIR": str(self.project), "DBT_PROJECT_DIR": str(self.project),
               "DBT_TARGET_PATH": str(self.project / f"target-{slot}"), "DBT_LOG_PATH": str(self.project / f"logs-{slot}"),
               "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        return argv, env, self.project
