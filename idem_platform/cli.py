"""`idem`: the platform's command line.

    idem up                       start/locate services, write DAGSTER_HOME/dagster.yaml, print the environment
    idem dev [--host --port]      services + shared code servers + dagster-webserver (127.0.0.1:3000) + the daemon
                                  (idem_platform.daemon: prompt backfills); Ctrl-C stops all
    idem run [--days 7] [-m MODULE | -f FILE] [--select ASSET ...]
                                  materialize the last N days as ONE --partition-range run (default: the
                                  example's people pipeline, or every idem asset of the code location given),
                                  then print what that run published, per partition (rows, fingerprint),
                                  from the ledger
    idem simulate-311 [--days 14 --seed 1 | --update DAY...]
                                  fill the 311 source system (source.service_requests), or update past days
    idem ledger [ASSET] [-m MODULE | -f FILE] [--partition DAY | --range A...B] [--limit 1000] [--json]
                                  the history of publishes of the code location's assets (the last
                                  --limit of them; 0: all)
    idem verify ASSET [-m MODULE | -f FILE] (--partition DAY | --range A...B) [--json]
                                  recompute without publishing and compare with the ledger and the sink:
                                  exit 0 identical, 1 differs (a rerun would change rows), 2 drifted (the sink
                                  no longer holds what was published), 3 could not verify, 4 fingerprint
                                  algorithm changed (the ledger's was made by another algorithm: rerun to re-record)

The code location is found as the Dagster CLI finds it: `-m MODULE` or `-f FILE`, else workspace.yaml, else
pyproject.toml's [tool.dagster] module_name in the current directory, else the example (idem_platform.definitions).

Everything is configured by environment variables (idem_platform/settings.py, the README's table); with none
set, `idem up`/`idem run` start an embedded PostgreSQL and a local search server under ./.idem and say so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence

import dagster as dg

from . import partitions, settings
from .locations import DEFAULT_MODULE, Location, LocationError, load_location
from .partitions import InvalidPartitionKey
from .resources import PostgresResource, ServiceNotFound
from .services import Services, dagster_cli, ensure_services
from .storage import ledger
from .verification import idem_asset_keys

MAIN_ASSETS = ("raw_people", "people", "people_search")  # the example's main job
LEDGER_LIMIT = 1000  # `idem ledger` lists the last this many publishes unless told otherwise (--limit)


def _print_services(services: Services) -> None:
    if services.pg_embedded:
        print(f"PostgreSQL: embedded server (IDEM_PG_DSN unset), data in {services.pg_dsn.split('host=')[-1]}")
    else:
        print("PostgreSQL: IDEM_PG_DSN")
    if services.es_local:
        print(f"Search: local in-memory OpenSearch-compatible server at {services.es_url} (IDEM_ES_URL unset); "
              "its data is NOT persisted and is lost when it stops")
    else:
        print("Search: IDEM_ES_URL")
    print(f"Dagster instance: DAGSTER_HOME={services.dagster_home} (run, event-log and schedule storage on PostgreSQL)")


def cmd_up(args: argparse.Namespace) -> int:
    services = ensure_services()
    _print_services(services)
    exports = {name: mask_password(value) for name, value in services.exports().items()}
    print("\nTo use these services from another shell (dagster CLI, webserver, daemon, your own code):")
    print("  export " + " ".join(f"{name}='{value}'" for name, value in exports.items()))
    if exports != services.exports():
        print("  (the password is not printed: put it in IDEM_PG_DSN yourself, as in this shell)")
    return 0


def mask_password(dsn: str) -> str:
    """A DSN or URL with its password replaced by `***` (URL `user:secret@host` and key=value `password=`)."""
    dsn = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", dsn)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def _progress(message: str) -> None:
    """Progress of a long command, on a terminal only (scripts reading stdout get the result alone)."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def _location(args: argparse.Namespace) -> Location:
    return load_location(getattr(args, "module", None), getattr(args, "file", None))


def summary_rows(
    conn, assets: Sequence[str], days: Sequence[str], run_id: str
) -> tuple[list[ledger.LedgerEntry], str]:
    """What run `run_id` (the run `idem run` launched) published of `assets` and `days`: the last row of each
    (day, asset, sink), by day and the assets' order, and the run to report. One query, on these assets' days only.

    By the run, not by "the newest row of each day": the ledger may be shared by deployments that write the same
    assets into other stores (another warehouse schema or lake root, or a search cluster of their own, whose store
    is the same read alias), and their later publish of a day would be reported as this run's. The run id names
    exactly what this command wrote, in whichever sinks and stores its code location writes to."""
    order = {asset: i for i, asset in enumerate(assets)}
    rows = ledger.latest_by_asset(conn, assets, days, run_id)
    return sorted(rows, key=lambda e: (e.partition, order[e.asset], e.sink)), run_id


def ledger_rows(
    conn, assets: Sequence[str], days: Sequence[str] | None, limit: int | None = None
) -> list[ledger.LedgerEntry]:
    """What `idem ledger` lists: the publishes of `assets` (of `days`), oldest first; the newest `limit` only."""
    return ledger.publishes(conn, assets, days, limit) if ledger.ledger_exists(conn) else []


def print_summary(rows: Sequence[ledger.LedgerEntry], run_id: str | None = None) -> None:
    print(f"\n{'partition':<12} {'asset':<22} {'sink':<14} {'rows':>8}  fingerprint")
    for e in rows:
        print(f"{e.partition:<12} {e.asset:<22} {e.sink:<14} {e.row_count:>8}  {e.fingerprint}")
    if run_id:
        mine = [e for e in rows if e.run_id == run_id]
        print(f"\nthis run changed {sum(e.changed for e in mine)} of {len(mine)} partitions")


# Every line Dagster's console logger prints for a run's event: `<time> - dagster - <LEVEL> - <job> - <run id> - ...`
_RUN_LINE = re.compile(r" - dagster - [A-Z]+ - \S+ - ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) - ")


def _run_streaming(command: list[str], env: dict[str, str]) -> tuple[int, str, str | None]:
    """Run a dagster command; on a terminal its publish lines are shown as progress. Returns (exit, output tail,
    the id of the run it executed, from its log lines: `dagster asset materialize` takes no tags and prints no
    other trace of the run, and the id is what tells this run's ledger rows from others' in `idem run`'s summary)."""
    tail: list[str] = []
    run_id = None
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            tail = (tail + [line])[-200:]
            if run_id is None and (found := _RUN_LINE.search(line)):
                run_id = found.group(1)
            if ": published " in line or "STEP_FAILURE" in line:
                _progress("  " + line.strip()[-200:])
    return proc.returncode, "".join(tail), run_id


def cmd_run(args: argparse.Namespace) -> int:
    days = partitions.last_n_days(args.days)
    services = ensure_services()
    _print_services(services)
    location = _location(args)
    own = [k.to_user_string() for k in idem_asset_keys(location.defs)]
    default = list(MAIN_ASSETS) if location.dagster_args == ("-m", DEFAULT_MODULE) else own
    selection = ",".join(args.select or default)
    print(f"\nMaterializing {selection} for {days[0]}...{days[-1]} as one run:", flush=True)
    command = [
        dagster_cli(), "asset", "materialize", *location.dagster_args,
        "--select", selection, "--partition-range", f"{days[0]}...{days[-1]}",
    ]
    print("  " + " ".join(command), flush=True)
    code, output, run_id = _run_streaming(command, services.env())
    if code != 0:
        sys.stderr.write(output[-8000:])
        print(f"\nmaterialization failed (exit {code}); the log above names the asset and partition")
        return code
    if run_id is None:
        print("\nno summary: dagster's output did not name the run (its console log level hides run events); "
              "`idem ledger` lists the publishes")
    else:
        with PostgresResource(dsn=services.pg_dsn).connect() as conn:
            rows, run_id = summary_rows(conn, selection.split(","), days, run_id)
        print_summary(rows, run_id)
    print("\nOpen the UI (webserver + daemon) on the same instance:")
    print("  make dev        # then http://127.0.0.1:3000")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Webserver and daemon on the same dagster-postgres instance; Ctrl-C stops them (and embedded services)."""
    from .services import dev_processes

    host, port = args.host, args.port
    services = ensure_services()
    _print_services(services)
    print(f"\nDagster UI: http://{host}:{port}  (Ctrl-C stops the webserver and the daemon)", flush=True)
    return dev_processes(services, host=host, port=port)


def cmd_simulate_311(args: argparse.Namespace) -> int:
    from .pipelines.service_requests import source as source_311

    postgres = source_311.source_db()
    with postgres.connect() as conn:
        source_311.ensure_source(conn)
        if args.update:
            days = sorted(args.update)
            partitions.validate_partition_keys(days)
            n = source_311.update_requests(conn, days, args.seed, share=args.share)
            print(f"updated {n} requests created on {', '.join(days)} (status Closed, updated_at now)")
        else:
            days = partitions.last_n_days(args.days)
            n = source_311.simulate(conn, days, args.seed, args.per_day)
            print(f"source.service_requests holds the {n} requests of {days[0]}...{days[-1]} (seed {args.seed})")
    return 0


def _days_arg(args: argparse.Namespace, location: Location | None = None, asset: str | None = None) -> list[str] | None:
    """The days --partition / --range name, validated against the asset's own partitions when it is known."""
    if not (args.partition or args.range):
        return None
    if location is not None and asset:
        from .verification import asset_days

        return asset_days(location.defs, asset, [args.partition] if args.partition else [], args.range or "")
    if args.partition:
        partitions.parse_partition_key(args.partition, valid=("0001-01-01", "9999-12-31"))
        return [args.partition]
    first, last = partitions.parse_range(args.range)
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def cmd_ledger(args: argparse.Namespace) -> int:
    location = _location(args)
    keys = [k.to_user_string() for k in idem_asset_keys(location.defs)]
    if args.asset and args.asset not in keys:
        raise LocationError(f"no idem asset {args.asset!r} in {location.name} (its assets: {', '.join(keys) or 'none'})")
    assets = [args.asset] if args.asset else keys  # the ledger's key: the asset key as Dagster prints it
    days = _days_arg(args, location, args.asset)
    limit = args.limit or None
    with PostgresResource().connect() as conn:
        rows = ledger_rows(conn, assets, days, limit)
    if limit is not None and len(rows) == limit:
        print(f"idem ledger: the last {limit} publishes; --limit 0 lists all, --partition/--range narrows",
              file=sys.stderr)
    if args.json:
        print(json.dumps([{**e.__dict__, "changed": e.changed, "published_at": e.published_at.isoformat()} for e in rows], indent=2))
        return 0
    print(f"{'published_at':<27} {'asset':<20} {'partition':<11} {'sink':<14} {'rows':>8} {'fingerprint':<17} {'changed':<8} run_id")
    for e in rows:
        print(f"{e.published_at.isoformat(timespec='seconds'):<27} {e.asset:<20} {e.partition:<11} {e.sink:<14} "
              f"{e.row_count:>8} {e.fingerprint:<17} {str(e.changed).lower():<8} {e.run_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verification import exit_code, verify_partitions

    try:
        location = _location(args)
        days = _days_arg(args, location, args.asset)
        _progress(f"idem verify: recomputing {args.asset} for {len(days)} day(s) {days[0]}..{days[-1]} "
                  f"from {location.name}, without publishing")
        run_config = json.loads(args.config_json) if args.config_json else None
        verdicts = verify_partitions(location.defs, args.asset, days, run_config, progress=_progress)
    except Exception as exc:  # noqa: BLE001 - any failure to verify is exit 3, with its cause
        print(f"idem verify: could not verify {args.asset} {args.partition or args.range}: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps([v.as_dict() for v in verdicts], indent=2))
    else:
        for verdict in verdicts:
            print(verdict.describe())
    if not args.no_record:
        _record_on_instance(verdicts)
    return exit_code(verdicts)


def _record_on_instance(verdicts) -> None:
    """The verdicts as per-day evaluations of the drift check in the Dagster instance (DAGSTER_HOME), so the UI
    shows them on the asset; without an instance, said on a terminal and skipped."""
    from .check_records import record_verdicts

    home = settings.current().dagster_home
    if not (home / "dagster.yaml").exists():
        _progress(f"idem verify: no Dagster instance at {home} (DAGSTER_HOME): verdicts not recorded on the assets")
        return
    with dg.DagsterInstance.from_config(str(home)) as instance:
        recorded = record_verdicts(instance, verdicts)
    _progress(f"idem verify: recorded {recorded} check evaluation(s) of fingerprint_matches_ledger in {home}")


def cmd_search_migrate(args: argparse.Namespace) -> int:
    from .search_migration import migrate_asset, search_assets

    location = _location(args)
    assets = [args.asset] if args.asset else search_assets(location.defs)
    for asset in assets:
        print(migrate_asset(location.defs, asset, progress=_progress).describe(), flush=True)
    return 0


def _add_partition_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--partition", help="one day, YYYY-MM-DD")
    group.add_argument("--range", help="days A...B (or [A...B]), inclusive")


def _add_location_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-m", "--module", help="the code location's module (as for `dagster ... -m`)")
    group.add_argument("-f", "--file", help="the code location's file (as for `dagster ... -f`)")


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 3, never 1 or 2: those mean `differs` and `drifted` to scripts calling idem verify."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(3, f"{self.prog}: error: {message}\n")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give a count of publishes, or 0 for all")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="idem", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start or locate services and write DAGSTER_HOME/dagster.yaml").set_defaults(func=cmd_up)
    dev = sub.add_parser("dev", help="start services, dagster-webserver and dagster-daemon on one instance")
    config = settings.current()
    dev.add_argument("--host", default=config.ui_host,
                     help="address the UI binds to (default IDEM_UI_HOST or 127.0.0.1; set 0.0.0.0 deliberately)")
    dev.add_argument("--port", type=int, default=config.ui_port, help="default IDEM_UI_PORT or 3000")
    dev.set_defaults(func=cmd_dev)
    run = sub.add_parser("run", help="materialize the main job for the last N days in one run and print a summary")
    run.add_argument("--days", type=int, default=7)
    run.add_argument("--select", action="append", help="asset to materialize (repeatable; default: the main job)")
    _add_location_args(run)
    run.set_defaults(func=cmd_run)
    led = sub.add_parser("ledger", help="the history of publishes")
    led.add_argument("asset", nargs="?")
    _add_location_args(led)
    _add_partition_args(led)
    led.add_argument("--json", action="store_true")
    led.add_argument("--limit", type=_count, default=LEDGER_LIMIT, metavar="N",
                     help=f"the last N publishes only (default {LEDGER_LIMIT}; 0: all of them)")
    led.set_defaults(func=cmd_ledger)
    sim = sub.add_parser("simulate-311", help="fill (or update) the 311 source system, deterministically")
    sim.add_argument("--days", type=int, default=14, help="the last N complete days (default 14)")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--per-day", type=int, default=200)
    sim.add_argument("--update", nargs="+", metavar="DAY", help="close some requests of these days now (late data)")
    sim.add_argument("--share", type=float, default=0.1, help="share of open requests --update closes")
    sim.set_defaults(func=cmd_simulate_311)
    ver = sub.add_parser(
        "verify",
        help="recompute partitions without publishing; exit 0 identical, 1 differs, 2 drifted, 3 could not verify, "
        "4 fingerprint algorithm changed",
    )
    ver.add_argument("asset")
    _add_location_args(ver)
    _add_partition_args(ver, required=True)
    ver.add_argument("--config-json", help="run config for the recomputation (as for dagster asset materialize)")
    ver.add_argument("--json", action="store_true")
    ver.add_argument("--no-record", action="store_true",
                     help="do not record the verdicts as check evaluations in the Dagster instance (DAGSTER_HOME)")
    ver.set_defaults(func=cmd_verify)
    mig = sub.add_parser(
        "search-migrate",
        help="move days published as one search index per day (before the year indices) into their year index, "
        "atomically per day",
    )
    mig.add_argument("asset", nargs="?", help="one asset (default: every search asset of the code location)")
    _add_location_args(mig)
    mig.set_defaults(func=cmd_search_migrate)
    from .pipelines.scooters.simulator import add_simulate_scooters_parser

    add_simulate_scooters_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # for the dagster subprocesses
    for category in (dg.BetaWarning, dg.PreviewWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (InvalidPartitionKey, LocationError, ServiceNotFound, settings.SettingError, RuntimeError, KeyError) as exc:
        print(f"idem: {exc}", file=sys.stderr)
        return 3
    except subprocess.CalledProcessError as exc:
        print(f"idem: {' '.join(map(str, exc.cmd))} failed:\n{exc.stdout or ''}{exc.stderr or ''}", file=sys.stderr)
        return exc.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
