"""Every `IDEM_*` environment variable, in one place: its name, default and meaning, parsed when asked for.

Nothing here is read at import: `current()` reads the environment each time it is called, so a variable set
after `import idem_platform` (by a test, a CLI, a code location that sets its own defaults) still counts.
Every other module asks this one; `grep os.environ idem_platform/` finds only this module and the modules that
start processes (`services.py`, `cli.py`, which hand an environment to their children).

    from idem_platform import settings
    settings.current().pg_schema          # "warehouse" unless IDEM_PG_SCHEMA says otherwise

The README's configuration table is generated from `VARIABLES` (a test compares them).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variable:
    name: str
    default: str  # as the README shows it
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("IDEM_PG_DSN", "embedded server",
             "PostgreSQL URL (`postgresql://user@host:5432/db`) for the warehouse, the ledger and the Dagster instance"),
    Variable("IDEM_PG_SCHEMA", "`warehouse`",
             "schema of the asset tables (never `public`, where dagster-postgres keeps `runs`, `event_logs`, ...)"),
    Variable("IDEM_PG_SWAP_MIN_ROWS", "unset: never",
             "opt in to the swap: days with at least this many rows are staged and swapped in (about 2x faster "
             "for 1M-row days), at the cost of REPEATABLE READ / SERIALIZABLE snapshots taken before the swap "
             "reading the day as empty; unset, every day is replaced in place (MVCC: every reader sees old or new)"),
    Variable("IDEM_PG_SWAP_LOCK_TIMEOUT_MS", "`500`", "how long one swap attempt waits for readers' locks"),
    Variable("IDEM_PG_SWAP_WAIT_S", "`120`", "how long all swap attempts of a day wait together"),
    Variable("IDEM_PG_LOCK_WAIT_S", "`60`",
             "how long a write waits for a table lock another session holds (never for the partition lock of its "
             "own day, which queues writers of that day); then it fails naming the blocking session"),
    Variable("IDEM_PG_DAYS_PER_TRANSACTION", "`100`",
             "longer ranges are published in several transactions of at most this many days (as even as they "
             "can be)"),
    Variable("IDEM_PG_PARALLEL_TRANSACTIONS", "`2`",
             "how many of a longer range's transactions run at once when no day is swapped (each one's new days "
             "get their empty partitions first, in a short transaction, so no DDL runs on the table while they "
             "write); `1`: one after another"),
    Variable("IDEM_STATE_DIR", "nearest `.idem`",
             "project-local state (embedded server data, lake, Dagster home, the local search server's URL): "
             "the `.idem` directory in the current directory or its nearest parent that has one, else `./.idem`"),
    Variable("IDEM_LAKE_DIR", "`<state dir>/lake`", "root of the lake files: `<lake>/<asset>/<YYYY-MM-DD>.parquet`"),
    Variable("DAGSTER_HOME", "`<state dir>/dagster_home`",
             "the Dagster instance directory (webserver, daemon and CLI must share it)"),
    Variable("IDEM_PARTITIONS_START", "`2024-01-01`",
             "default first day of an asset's partitions (`@idem_asset(start=...)` overrides it per asset)"),
    Variable("IDEM_PARTITIONS_TIMEZONE", "`UTC`",
             "default timezone of an asset's days (`@idem_asset(timezone=...)` overrides it per asset)"),
    Variable("IDEM_DEFAULT_OWNER", "`team:data-platform`", "owner of an asset that names none"),
    Variable("IDEM_ES_URL", "local in-memory server",
             "Elasticsearch URL; unset, the local server `idem up` started (its URL in `<state dir>/search.url`)"),
    Variable("IDEM_ES_PLAIN_JSON", "`true`",
             "send `application/json` / `application/x-ndjson` instead of the Elasticsearch 9 vendor media types: "
             "needed by the osmem server and by Elasticsearch 8, harmless for Elasticsearch 9; turn off only for "
             "Elasticsearch 10+"),
    Variable("IDEM_ES_API_KEY", "", "search API key (read as an `EnvVar`: never in run config, logs or metadata)"),
    Variable("IDEM_ES_USERNAME", "", "search basic-auth user (with `IDEM_ES_PASSWORD`; read as an `EnvVar`)"),
    Variable("IDEM_ES_PASSWORD", "", "search basic-auth password (read as an `EnvVar`)"),
    Variable("IDEM_SOURCE_DSN", "`IDEM_PG_DSN`", "the 311 example's source system (schema `source`)"),
    Variable("IDEM_INBOX_DIR", "`<state dir>/inbox`",
             "the scooter example's inbox: `scooter_trips/<YYYY-MM-DD>.csv` or `<YYYY-MM-DD>__<part>.csv`"),
    Variable("IDEM_INBOX_SENSOR_INTERVAL", "`30`", "seconds between ticks of the scooter inbox sensor"),
    Variable("IDEM_PEOPLE_PER_DAY", "`1000`", "default rows per day of the example `raw_people` (run config `rows_per_day`)"),
    Variable("IDEM_LATE_DATA_INTERVAL_SECONDS", "`30`", "tick of the late-data and automation sensors"),
    Variable("IDEM_LATE_DATA_LOOKBACK_DAYS", "`60`",
             "how far back the late-data sensor compares the source with the ledger"),
    Variable("IDEM_RECHECK_DAYS", "`7`",
             "days re-checked by the `drift_check_schedule` and by a checks run without partitions (the UI's "
             "\"Execute all\"): the asset's last published days"),
    Variable("IDEM_DRIFT_CHECK_CRON", "`0 5 * * *`", "when `drift_check_schedule` re-checks the recent days (cron)"),
    Variable("IDEM_UI_HOST", "`127.0.0.1`", "where `idem dev` serves the UI (binds loopback unless told otherwise)"),
    Variable("IDEM_UI_PORT", "`3000`", "the UI's port for `idem dev`"),
    Variable("IDEM_BACKFILL_INTERVAL_SECONDS", "`5`",
             "seconds between the backfill daemon's iterations under `idem dev` (`idem_platform.daemon`; Dagster's "
             "own is a fixed 30): a backfill's run is submitted, and the backfill marked done, at most this long "
             "after it is launched or its run ends"),
    Variable("IDEM_EVENT_BATCH_SIZE", "`1000`",
             "Dagster's `DAGSTER_EVENT_BATCH_SIZE` (unless set) for the processes that load a code location made by "
             "`idem_definitions`: a range run stores its per-day planned and materialization events in batches of "
             "this many instead of one at a time (~3 s of a 365-day run); `0`: Dagster's default"),
    Variable("IDEM_FAULT", "", "tests only: crash a write at `[<sink>:]<point>` (see `storage/faults.py`)"),
    Variable("IDEM_FAULT_ASSET", "", "tests only: crash only writes of this asset"),
    Variable("IDEM_FAULT_MODE", "`exit`", "tests only: `exit` (`os._exit(137)`), `kill` (SIGKILL) or `pause` (wait at the point)"),
    Variable("IDEM_FAULT_PAUSE", "", "tests only: with `pause`, create `<path>.reached` at the point, go on once `<path>` exists"),
)

NAMES = frozenset(v.name for v in VARIABLES)


class SettingError(ValueError):
    """An environment variable holds a value the platform cannot use; the message names it."""


def raw(name: str) -> str:
    """The variable's value, stripped ('' when unset). Only declared names may be read."""
    if name not in NAMES:  # pragma: no cover - a typo in the platform itself
        raise KeyError(f"{name} is not a declared setting; add it to idem_platform.settings.VARIABLES")
    return os.environ.get(name, "").strip()


def _number(name: str, default: float, kind=int):
    value = raw(name)
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise SettingError(f"{name}={value!r} is not a number") from None
    if number < 0:
        raise SettingError(f"{name}={value!r} must not be negative")
    return number


def _flag(name: str, default: bool) -> bool:
    value = raw(name).lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}={value!r}: use true or false")


def _day(name: str, default: str) -> str:
    value = raw(name) or default
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise SettingError(f"{name}={value!r} is not a day in YYYY-MM-DD form") from None
    return value


def find_state_dir(start: Path | None = None) -> Path:
    """`IDEM_STATE_DIR`, else the `.idem` of the current directory or its nearest parent, else `./.idem`.

    Looking upwards lets `dagster asset materialize`, the webserver and `idem` started in a subdirectory of the
    project find the services `idem up` started at its root.
    """
    explicit = raw("IDEM_STATE_DIR")
    if explicit:
        return Path(explicit).absolute()
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        if (directory / ".idem").is_dir():
            return directory / ".idem"
    return here / ".idem"


@dataclass(frozen=True)
class Settings:
    """The platform's configuration as the environment gives it now."""

    pg_dsn: str
    pg_schema: str
    pg_swap_min_rows: int | None  # None: never swap
    pg_swap_lock_timeout_ms: int
    pg_swap_wait_s: float
    pg_days_per_transaction: int
    pg_parallel_transactions: int
    pg_lock_wait_s: float
    state_dir: Path
    lake_dir: str
    dagster_home: Path
    partitions_start: str
    partitions_timezone: str
    default_owner: str
    es_url: str
    es_plain_json: bool
    source_dsn: str
    inbox_dir: str
    inbox_sensor_interval: int
    people_per_day: int
    late_data_interval: int
    late_data_lookback_days: int
    recheck_days: int
    drift_check_cron: str
    ui_host: str
    ui_port: int
    backfill_interval: int
    event_batch_size: int

    @property
    def embedded_dsn_file(self) -> Path:
        return self.state_dir / "postgres.dsn"

    @property
    def search_url_file(self) -> Path:
        return self.state_dir / "search.url"

    def embedded_dsn(self) -> str:
        """The DSN of the embedded PostgreSQL `idem up` started here ('' if none)."""
        return self.embedded_dsn_file.read_text().strip() if self.embedded_dsn_file.exists() else ""

    def local_search_url(self) -> str:
        """The URL of the local search server `idem up` started here ('' if none)."""
        return self.search_url_file.read_text().strip() if self.search_url_file.exists() else ""


def current() -> Settings:
    """Read every setting from the environment now."""
    state = find_state_dir()
    return Settings(
        pg_dsn=raw("IDEM_PG_DSN"),
        pg_schema=raw("IDEM_PG_SCHEMA") or "warehouse",
        pg_swap_min_rows=_number("IDEM_PG_SWAP_MIN_ROWS", None),
        pg_swap_lock_timeout_ms=_number("IDEM_PG_SWAP_LOCK_TIMEOUT_MS", 500) or 500,
        pg_swap_wait_s=_number("IDEM_PG_SWAP_WAIT_S", 120.0, float),
        pg_days_per_transaction=_number("IDEM_PG_DAYS_PER_TRANSACTION", 100),
        pg_parallel_transactions=max(1, _number("IDEM_PG_PARALLEL_TRANSACTIONS", 2) or 1),
        pg_lock_wait_s=_number("IDEM_PG_LOCK_WAIT_S", 60.0, float),
        state_dir=state,
        lake_dir=raw("IDEM_LAKE_DIR") or str(state / "lake"),
        dagster_home=Path(raw("DAGSTER_HOME") or state / "dagster_home").absolute(),
        partitions_start=_day("IDEM_PARTITIONS_START", "2024-01-01"),
        partitions_timezone=raw("IDEM_PARTITIONS_TIMEZONE") or "UTC",
        default_owner=raw("IDEM_DEFAULT_OWNER") or "team:data-platform",
        es_url=raw("IDEM_ES_URL"),
        es_plain_json=_flag("IDEM_ES_PLAIN_JSON", True),
        source_dsn=raw("IDEM_SOURCE_DSN"),
        inbox_dir=raw("IDEM_INBOX_DIR") or str(state / "inbox"),
        inbox_sensor_interval=_number("IDEM_INBOX_SENSOR_INTERVAL", 30),
        people_per_day=_number("IDEM_PEOPLE_PER_DAY", 1000),
        late_data_interval=_number("IDEM_LATE_DATA_INTERVAL_SECONDS", 30),
        late_data_lookback_days=_number("IDEM_LATE_DATA_LOOKBACK_DAYS", 60),
        recheck_days=_number("IDEM_RECHECK_DAYS", 7),
        drift_check_cron=raw("IDEM_DRIFT_CHECK_CRON") or "0 5 * * *",
        ui_host=raw("IDEM_UI_HOST") or "127.0.0.1",
        ui_port=_number("IDEM_UI_PORT", 3000),
        backfill_interval=_number("IDEM_BACKFILL_INTERVAL_SECONDS", 5) or 5,
        event_batch_size=_number("IDEM_EVENT_BATCH_SIZE", 1000),
    )


DAGSTER_EVENT_BATCH_SIZE = "DAGSTER_EVENT_BATCH_SIZE"


def apply_dagster_defaults() -> None:
    """Give this process the Dagster settings the platform recommends, where the user set none.

    Dagster reads `DAGSTER_EVENT_BATCH_SIZE` from the environment whenever it stores an event, so setting it when
    a code location loads covers every process that runs its assets (the CLI, the code server and the run
    workers it starts, which inherit its environment). Dagster batches only what it can store in one statement
    (planned and materialization events of a partition range, written in one loop) and falls back to one at a
    time if a batch fails."""
    size = current().event_batch_size
    if size > 0 and DAGSTER_EVENT_BATCH_SIZE not in os.environ:
        os.environ[DAGSTER_EVENT_BATCH_SIZE] = str(size)


def dagster_event_batch_size() -> int:
    """Dagster's event batch size in this process (`DAGSTER_EVENT_BATCH_SIZE`, 0: no batching), as Dagster reads it."""
    try:
        return max(0, int(os.environ.get(DAGSTER_EVENT_BATCH_SIZE, "0") or 0))
    except ValueError:
        return 0


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{v.name}` | {v.default} | {v.meaning} |" for v in VARIABLES]
    return "\n".join(lines)
