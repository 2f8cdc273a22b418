"""The scenarios of `make bench-peers`, each run for every tool in turn, filling one row of the table.

Order matters (each starts from the state the previous ones left): the 365-day backfill, its identical
rerun, one-day reruns, a day with 10 source rows removed, a day with no source rows, 3 concurrent runs of a
present day, 3 concurrent first loads of the new 1M-row day, the 1M-row overwrite (new values in every row, same
keys), kill -9 mid-write of another such overwrite with a polling reader, then a rerun. For the in-database tools (dbt, SQLMesh) a scenario that needs
source rows first (re)loads them into `peer_src.flights`; that load counts in their end-to-end time and is
shown apart ("+ x s load").
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from dataclasses import dataclass, field

import psycopg

from benchmarks.peers import data, source_table, verdicts
from benchmarks.peers.base import Context, Tool

ONE_DAY = "2013-06-15"
REMOVED_DAY = "2013-03-10"
EMPTY_DAY = "2013-07-04"
PRESENT_DAY = "2013-09-12"
BIG_DAY = data.BIG_DAY
ONE_DAY_REPEAT = 3
KILL_FRACTION = 0.6
OVERWRITE_SEED, KILL_SEED = 2015, 2016  # the 1M-row day's content in those rows (data.generated_day)


@dataclass
class Cell:
    text: str
    seconds: float | None = None  # the tool's own command(s)
    load: float = 0.0  # source-table load counted with it (in-database tools)
    correct: bool | None = None

    @property
    def end_to_end(self) -> float | None:
        return None if self.seconds is None else self.seconds + self.load


@dataclass
class Results:
    rows: dict[str, dict[str, Cell]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # scenario -> a figure of the scenario itself (source load)
    platform: dict[str, str] = field(default_factory=dict)  # scenario -> where the platform's run spent its time

    def put(self, scenario: str, tool: str, cell: Cell) -> None:
        self.rows.setdefault(scenario, {})[tool] = cell


LABELS = {
    "backfill": "365-day backfill",
    "rerun": "identical rerun of the 365 days",
    "day": f"one-day rerun ({ONE_DAY}, median of {ONE_DAY_REPEAT})",
    "removed": f"{REMOVED_DAY}: 10 source rows removed, rerun",
    "empty": f"{EMPTY_DAY}: zero source rows, rerun",
    "concurrent_present": f"3 concurrent runs of a present day ({PRESENT_DAY})",
    "concurrent_new": f"3 concurrent first loads of a new 1M-row day ({BIG_DAY})",
    "overwrite": "1M-row day overwrite",
    "kill": "kill -9 mid-write of the 1M-row day, polling reader; then rerun",
}
ORDER = list(LABELS)


def timed_text(seconds: float, load: float, in_database: bool) -> str:
    if in_database and load:
        return f"{seconds:.1f} s + {load:.1f} s load = {seconds + load:.1f} s"
    return f"{seconds:.1f} s"


class Scenarios:
    def __init__(self, ctx: Context, tools: list[Tool], results: Results, on_row=None):
        self.ctx, self.tools, self.results = ctx, tools, results
        self.on_row = on_row or (lambda: None)
        self.in_db = any(tool.in_database for tool in tools)
        self.overwrite_seconds: dict[str, float] = {}
        self.big_loaded: set[str] = set()

    # ------------------------------------------------------------------------------------------- helpers

    def load(self, days: list[str]) -> float:
        """Reload the source table's rows of `days` (if an in-database tool runs); seconds."""
        return source_table.load_days(self.ctx.dsn, self.ctx.source, days) if self.in_db else 0.0

    def verdict(self, tool: Tool, days: list[str], label: str = "stale rows") -> tuple[bool, str]:
        verdict = verdicts.check(self.ctx.dsn, tool.table, data.expected_ids(self.ctx.source, days))
        return verdict.correct, verdict.text(label)

    def failed(self, tool: Tool, outcome) -> str:
        last = [line for line in outcome.tail(6000).splitlines() if line.strip() and "[WARNING]" not in line]
        final = re.compile(r"^\s*(([\w.]+(Error|Exception|Failed))|Error|ERROR)\b:?")
        reason = next((line for line in reversed(last) if final.match(line)),
                      next((line for line in reversed(last) if "rror" in line), last[-1] if last else ""))
        return f"exit {outcome.code}: {reason.strip()[:110]}"

    def run_timed(self, scenario: str, tool: Tool, first: str, last: str, kind: str, load: float,
                  days: list[str], label: str = "stale rows") -> Cell:
        outcome = tool.run(first, last, kind)
        self.note_platform(scenario, tool, outcome)
        load = load if tool.in_database else 0.0
        if outcome.code != 0:
            cell = Cell(f"FAILED after {outcome.seconds:.1f} s ({self.failed(tool, outcome)})", None, load, False)
        else:
            ok, text = self.verdict(tool, days, label)
            cell = Cell(f"{timed_text(outcome.seconds, load, tool.in_database)}, {text}", outcome.seconds, load, ok)
        self.results.put(scenario, tool.name, cell)
        self.ctx.log(f"  {tool.name:<8} {cell.text}")
        return cell

    def note_platform(self, scenario: str, tool: Tool, outcome) -> None:
        if tool.name == "platform" and outcome.code == 0:
            from benchmarks.peers.platform_tool import breakdown

            text = breakdown(outcome)
            if text:
                self.results.platform[scenario] = f"{outcome.seconds:.1f} s: {text}"

    def each(self, scenario: str, fn) -> None:
        self.ctx.log(f"\n== {LABELS[scenario]}  ({time.strftime('%H:%M:%S')})")
        for tool in self.tools:
            if tool.unavailable:
                self.results.put(scenario, tool.name, Cell(f"not run: {tool.unavailable}"))
                continue
            try:
                fn(tool)
            except Exception as exc:  # a tool's failure is a table entry, never a silent gap
                self.results.put(scenario, tool.name, Cell(f"ERROR: {type(exc).__name__}: {str(exc)[:200]}", correct=False))
                self.ctx.log(f"  {tool.name:<8} ERROR {exc!r}")
        self.on_row()

    # --------------------------------------------------------------------------------------------- scenarios

    def backfill(self) -> None:
        days = data.year_days()
        load = self.load(days)
        self.results.notes["backfill"] = f"source table load of the 365 days (336,776 rows): {load:.1f} s"
        self.each("backfill", lambda tool: self.run_timed("backfill", tool, days[0], days[-1], "backfill", load, days))

    def rerun(self) -> None:
        days = data.year_days()

        def one(tool):
            load = self.load(days) if tool.in_database else 0.0
            self.run_timed("rerun", tool, days[0], days[-1], "rerun", load, days)

        self.each("rerun", one)

    def day(self) -> None:
        def one(tool):
            times, loads, texts, ok = [], [], set(), True
            for _ in range(ONE_DAY_REPEAT):
                load = self.load([ONE_DAY]) if tool.in_database else 0.0
                outcome = tool.run(ONE_DAY, ONE_DAY, "day")
                if outcome.code != 0:
                    raise RuntimeError(self.failed(tool, outcome))
                times.append(outcome.seconds)
                loads.append(load)
                self.note_platform("day", tool, outcome)
                good, text = self.verdict(tool, [ONE_DAY])
                ok &= good
                texts.add(text)
            seconds, load = statistics.median(times), statistics.median(loads)
            cell = Cell(f"{timed_text(seconds, load, tool.in_database)}, {' / '.join(sorted(texts))}", seconds, load, ok)
            self.results.put("day", tool.name, cell)
            self.ctx.log(f"  {tool.name:<8} {cell.text} (runs: {', '.join(f'{t:.1f}' for t in times)} s)")

        self.each("day", one)

    def removed(self) -> None:
        frame = data.read_day(self.ctx.source, REMOVED_DAY)
        drop = frame.index[:: max(1, len(frame) // 10)][:10]
        data.rewrite_day(self.ctx.source, REMOVED_DAY, frame.drop(index=drop))

        def one(tool):
            load = self.load([REMOVED_DAY]) if tool.in_database else 0.0
            self.run_timed("removed", tool, REMOVED_DAY, REMOVED_DAY, "day", load, [REMOVED_DAY], "removed rows")

        self.each("removed", one)

    def empty(self) -> None:
        frame = data.read_day(self.ctx.source, EMPTY_DAY)
        self.results.notes["empty"] = f"{EMPTY_DAY} had {len(frame):,} rows"
        data.rewrite_day(self.ctx.source, EMPTY_DAY, frame.iloc[0:0])

        def one(tool):
            load = self.load([EMPTY_DAY]) if tool.in_database else 0.0
            self.run_timed("empty", tool, EMPTY_DAY, EMPTY_DAY, "day", load, [EMPTY_DAY], "rows of the now-empty day")

        self.each("empty", one)

    def concurrent(self, scenario: str, day: str, kind: str) -> None:
        def one(tool):
            if tool.in_database and kind == "new" and not self.big_loaded:
                self.results.notes[scenario] = f"source table load of the 1M-row day: {self.load([day]):.1f} s"
                self.big_loaded.add(day)
            runs = [tool.start(day, day, kind, slot) for slot in range(3)]
            outcomes = [run.wait() for run in runs]
            codes = ",".join(str(o.code) for o in outcomes)
            ok, text = self.verdict(tool, [day])
            good = ok and all(o.code == 0 for o in outcomes)
            failed = [o for o in outcomes if o.code != 0]
            why = f"; {len(failed)} of 3 runs failed: {self.failed(tool, failed[0])}" if failed else ""
            recovered = tool.recover() if failed else ""
            why += f"; {recovered}" if recovered else ""
            cell = Cell(f"{text} (exit codes {codes}, slowest {max(o.seconds for o in outcomes):.1f} s{why})",
                        max(o.seconds for o in outcomes), correct=good)
            self.results.put(scenario, tool.name, cell)
            self.ctx.log(f"  {tool.name:<8} {cell.text}")

        self.each(scenario, one)

    def concurrent_present(self) -> None:
        if self.in_db:
            self.load([PRESENT_DAY])
        self.concurrent("concurrent_present", PRESENT_DAY, "day")

    def concurrent_new(self) -> None:
        self.concurrent("concurrent_new", BIG_DAY, "new")

    def ensure_big_day(self, tool: Tool) -> None:
        """The 1M-row day loaded once (when the concurrent first loads were not run)."""
        if tool.in_database and BIG_DAY not in self.big_loaded:
            self.load([BIG_DAY])
            self.big_loaded.add(BIG_DAY)
        if "concurrent_new" not in self.results.rows:
            ids = verdicts.table_ids(self.ctx.dsn, tool.table, BIG_DAY, BIG_DAY) if self._exists(tool) else []
            if len(ids) == 0:
                tool.run(BIG_DAY, BIG_DAY, "new")

    def clean_big_day(self, tool: Tool) -> None:
        """A wrong 1M-row day (left by the concurrent first loads) is deleted by hand and loaded once, untimed,
        so that the overwrite and kill -9 rows measure the tool on a clean day; the table notes it."""
        ok, text = self.verdict(tool, [BIG_DAY])
        if ok:
            return
        with psycopg.connect(self.ctx.dsn) as conn:
            conn.execute(f"DELETE FROM {tool.table} WHERE flight_day = %s", (BIG_DAY,))
        outcome = tool.run(BIG_DAY, BIG_DAY, "day")
        _, after = self.verdict(tool, [BIG_DAY])
        note = self.results.notes.get("overwrite", "")
        self.results.notes["overwrite"] = (note + f"; {tool.name}: its 1M-row day was {text} before this row, so it "
                                           f"was deleted by hand and loaded once (exit {outcome.code}, untimed): {after}")

    def _exists(self, tool: Tool) -> bool:
        with psycopg.connect(self.ctx.dsn) as conn:
            return conn.execute("SELECT to_regclass(%s)", (tool.table,)).fetchone()[0] is not None

    def change_big_day(self, seed: int) -> float:
        """New values in every row of the 1M-row day (same `flight_id`s, another seed): the overwrite and the kill
        rows then write content the table does not hold yet, as a real overwrite does (a tool that skips a day
        whose content is unchanged, as the platform does, would otherwise measure a skip). Reloads the source
        table for the in-database tools; seconds of that load."""
        data.rewrite_day(self.ctx.source, BIG_DAY, data.generated_day(seed=seed))
        self.big_loaded.add(BIG_DAY)
        return self.load([BIG_DAY])

    def overwrite(self) -> None:
        for tool in self.tools:  # every tool starts from a correct 1M-row day of the current content, untimed
            if tool.unavailable:
                continue
            try:
                self.ensure_big_day(tool)
                self.clean_big_day(tool)
            except Exception as exc:  # the timed run below then shows the tool's state
                self.ctx.log(f"  {tool.name:<8} preparing the 1M-row day: ERROR {exc!r}")
        load = self.change_big_day(OVERWRITE_SEED)
        note = self.results.notes.get("overwrite", "")
        self.results.notes["overwrite"] = (f"every row's values changed (same keys); raw COPY of the 1M-row day into "
                                           f"the source table (Parquet -> CSV -> COPY, DELETE of the old rows "
                                           f"first): {load:.1f} s" + note)

        def one(tool):
            cell = self.run_timed("overwrite", tool, BIG_DAY, BIG_DAY, "day", load, [BIG_DAY])
            if cell.seconds:
                self.overwrite_seconds[tool.name] = cell.seconds

        self.each("overwrite", one)

    def kill(self) -> None:
        self.change_big_day(KILL_SEED)  # the killed run and its rerun write new values, as the overwrite did
        self.each("kill", self.kill_one)

    def kill_one(self, tool: Tool) -> None:
        self.ensure_big_day(tool)
        with psycopg.connect(self.ctx.dsn) as conn:
            old = conn.execute(f"SELECT count(*) FROM {tool.table} WHERE flight_day = %s", (BIG_DAY,)).fetchone()[0]
        new = len(data.expected_ids(self.ctx.source, [BIG_DAY])[BIG_DAY])
        reader = Reader(self.ctx.dsn, tool.table, BIG_DAY)
        reader.start()
        time.sleep(0.3)
        budget = self.overwrite_seconds.get(tool.name, 20.0)
        running = tool.start(BIG_DAY, BIG_DAY, "day")
        pattern = tool.table.split(".")[0]
        first_write, active = None, ""
        deadline = running.started + KILL_FRACTION * budget
        with psycopg.connect(self.ctx.dsn, autocommit=True) as watch:
            while running.proc.poll() is None:
                now = time.perf_counter()
                rows = watch.execute(
                    "SELECT left(regexp_replace(regexp_replace(query, '^\\s*/\\*.*?\\*/\\s*', ''), '\\s+', ' ', 'g'), 70) "
                    "FROM pg_stat_activity "
                    "WHERE datname = current_database() AND state = 'active' AND pid NOT IN (pg_backend_pid(), %s) "
                    "AND query ~* %s AND query ~* '\\m(insert|copy|merge|delete|update|create|alter|drop)\\M' "
                    "AND query !~* 'event_logs|run_tags|\\mruns\\M'",
                    (reader.pid or 0, pattern),
                ).fetchall()
                if rows:
                    active = rows[0][0]
                    if first_write is None:
                        first_write = now
                if (first_write is not None and now >= max(first_write + 0.5, deadline)) or now >= running.started + 0.95 * budget:
                    break
                time.sleep(0.02)
            at = time.perf_counter() - running.started
            finished_first = running.proc.poll() is not None
            running.kill()
            outcome = running.wait()
        time.sleep(1.0)
        reader.stop()
        with psycopg.connect(self.ctx.dsn) as conn:
            after = conn.execute(f"SELECT count(*) FROM {tool.table} WHERE flight_day = %s", (BIG_DAY,)).fetchone()[0]
        partial = sorted(c for c in reader.counts if c not in (old, new))
        seen = (f"reader ({reader.polls} polls) saw only {', '.join(f'{c:,}' for c in sorted(reader.counts))}"
                if not partial else f"reader ({reader.polls} polls) SAW PARTIAL counts {', '.join(f'{c:,}' for c in partial[:3])}")
        if reader.errors:
            seen += f", {len(reader.errors)} read errors ({reader.errors[0][:60]})"
        when = (f"process had ended (exit {outcome.code}) before the kill at {at:.1f} s" if finished_first
                else f"killed at {at:.1f} s" + (f" during `{active[:50]}`" if active else " (no write seen yet)"))
        rerun = tool.run(BIG_DAY, BIG_DAY, "day")
        if rerun.code != 0:
            after_text = f"rerun FAILED ({self.failed(tool, rerun)})"
            ok = False
        else:
            ok, text = self.verdict(tool, [BIG_DAY])
            after_text = f"rerun {rerun.seconds:.1f} s: {text}"
        cell = Cell(f"{seen}; {when}; {after:,} rows right after; {after_text}", correct=ok and not partial)
        self.results.put("kill", tool.name, cell)
        self.ctx.log(f"  {tool.name:<8} {cell.text}")


class Reader(threading.Thread):
    """Counts the day's rows every ~50 ms in its own connection (autocommit: each count a fresh snapshot)."""

    def __init__(self, dsn: str, table: str, day: str):
        super().__init__(daemon=True)
        self.dsn, self.table, self.day = dsn, table, day
        self.counts: set[int] = set()
        self.errors: list[str] = []
        self.polls = 0
        self.pid = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.pid = conn.info.backend_pid
            while not self._stop_event.is_set():
                try:
                    self.counts.add(conn.execute(f"SELECT count(*) FROM {self.table} WHERE flight_day = %s",
                                                 (self.day,)).fetchone()[0])
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                self.polls += 1
                self._stop_event.wait(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
