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

    def startup_command(self) -> list[str]:
        return [python_bin("dagster"), "--version"]

    def command(self, first, last, kind, slot=0):
        partitions = ["--partition", first] if first == last else ["--partition-range", f"{first}...{last}"]
        argv = [python_bin("dagster"), "asset", "materialize", "-m", "benchmarks.peers.platform_defs",
                "--select", "flights", *partitions]
        return argv, self.env(), ROOT


def breakdown(outcome) -> str:
    """Where a `dagster asset materialize` run's wall time went, from its own log (whole seconds: the split of
    the asset step is shown for steps of 3 s or more only)."""
    import datetime as dt
    import re

    stamps: dict[str, float] = {}
    steps: dict[str, float] = {}
    for line in outcome.log.read_text(errors="replace").splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+0000 - dagster - \w+ - .*? - ([A-Z][A-Z_]{2,}) - ", line)
        if not match:
            continue
        when = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
        event = match.group(2)
        if event in ("RUN_START", "STEP_START", "ASSET_MATERIALIZATION", "RUN_SUCCESS"):
            stamps.setdefault(event, when)
        step = re.search(r'Finished execution of step "([^"]+)" in ([\d.]+)(m?s)', line)
        if step:
            steps[step.group(1)] = float(step.group(2)) / (1000 if step.group(3) == "ms" else 1)
    if "RUN_START" not in stamps:
        return ""
    parts = [f"start-up to RUN_START ~{stamps['RUN_START'] - outcome.started_wall:.0f} s"]
    if "flights" in steps:
        if "ASSET_MATERIALIZATION" in stamps and "STEP_START" in stamps and steps["flights"] >= 3:
            compute = stamps["ASSET_MATERIALIZATION"] - stamps["STEP_START"]
            parts.append(f"asset step {steps['flights']:.1f} s (read + coerce + fingerprint + audit + write + "
                         f"ledger ~{compute:.0f} s, then the per-day materialization events ~{max(steps['flights'] - compute, 0.0):.0f} s)")
        else:
            parts.append(f"asset step {steps['flights']:.1f} s")
    checks = sum(v for k, v in steps.items() if k != "flights")
    if checks:
        parts.append(f"generated checks {checks:.1f} s")
    if "RUN_SUCCESS" in stamps:
        parts.append(f"after RUN_SUCCESS to exit ~{outcome.started_wall + outcome.seconds - stamps['RUN_SUCCESS']:.0f} s")
    return "; ".join(parts)
