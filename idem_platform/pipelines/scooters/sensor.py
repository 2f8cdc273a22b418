"""Sensors. `scooter_inbox_sensor`: the inbox file sensor of the scooter-trips pipeline.

Each tick lists `<inbox>/scooter_trips/`, hashes the files of every day (sha256 of the content; a file whose size
and mtime did not change since the last tick keeps its hash) and compares each day's *manifest* (its file names with
their sha256) with the last one it requested a run for:

- a new day, a changed file, an added part or a removed part: one `RunRequest` for that day's partition of
  `scooter_inbox_job`, with `run_key = scooter_trips/<day>@<manifest digest>`. The manifest digest is the sha256 of
  the (path, sha256 of content) pairs of the day, so the key is the issue's (path, content hash) generalised to a
  day made of several files: the same files never run twice (even after the cursor is lost, Dagster's run-key
  dedup blocks a key it has seen), a corrected file runs its day exactly once, and two parts dropped in the same
  tick make one run, not two. A day that goes back to content it had before (a correction undone) gets the key
  with a `.N` suffix (N-th return), because Dagster would skip a key it has already seen.
- the same content again (a file dropped twice, touched, or copied over itself): nothing.
- a removed file is reported, never ignored: a warning in the tick log and an `AssetObservation` on
  `scooter_trips` for the day (`inbox_event = file_removed`). If other files of the day remain, the day runs
  again from them (its rows from the removed file leave the published partition, reported as such); if none
  remains, nothing runs and the published partitions are kept (the observation says so).
- a file whose name is not a day (`<YYYY-MM-DD>[__<part>].csv`), or a day outside the partitions, is reported
  once (log + observation `inbox_event = file_ignored`) and never run; a day that is not complete yet (today, UTC)
  is reported once and requested once it becomes a partition.
- files younger than `settle_seconds`, and upload names (`.x`, `~x`, `*.tmp`, `*.part`...), wait for a later tick.

The cursor (JSON) holds the hashes of the files seen, the manifests requested per day and the problems already
reported; it is an optimisation and a memory of reverts, not the dedup fence: the run key is.
"""

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import dagster as dg

from idem_platform import settings

from .inbox import (
    TRIP_DAYS,
    INBOX_SUBDIR,
    InboxNameError,
    ScooterInboxResource,
    in_progress,
    manifest_digest,
    parse_inbox_name,
    trips_dir,
)

SCOOTER_GROUP = "scooters"
SCOOTER_ASSET = dg.AssetKey("scooter_trips")
RUN_KEY_PREFIX = f"{INBOX_SUBDIR}/"
MANIFEST_TAG = "idem/inbox_manifest"
FILES_TAG = "idem/inbox_files"
CHANGE_TAG = "idem/inbox_change"
HISTORY_PER_DAY = 20


scooter_inbox_job = dg.define_asset_job(
    "scooter_inbox_job",
    selection=dg.AssetSelection.groups(SCOOTER_GROUP),
    description="Quarantine, clean and summarize one day of scooter trips from the inbox (started by the inbox sensor).",
)


@dataclasses.dataclass
class InboxCursor:
    files: dict[str, list] = dataclasses.field(default_factory=dict)  # name -> [sha256, size, mtime_ns]
    requested: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # day -> manifest digests requested
    reported: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> problem already reported

    @classmethod
    def load(cls, cursor: str | None) -> "InboxCursor":
        return cls(**json.loads(cursor)) if cursor else cls()

    def dump(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class DayRequest:
    day: str
    run_key: str
    files: dict[str, str]
    change: str

    def run_request(self) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=self.run_key,
            partition_key=self.day,
            tags={
                MANIFEST_TAG: self.run_key.rsplit("@", 1)[1],
                FILES_TAG: ", ".join(f"{name}@{sha[:12]}" for name, sha in sorted(self.files.items())),
                CHANGE_TAG: self.change,
            },
        )


@dataclasses.dataclass(frozen=True)
class InboxReport:
    kind: str  # file_removed | file_ignored | file_waiting
    file: str
    day: str | None
    message: str

    def observation(self) -> dg.AssetObservation:
        return dg.AssetObservation(
            asset_key=SCOOTER_ASSET,
            partition=self.day,
            metadata={"inbox_event": self.kind, "file": self.file, "detail": self.message},
        )


@dataclasses.dataclass
class InboxPlan:
    requests: list[DayRequest]
    reports: list[InboxReport]
    cursor: InboxCursor
    watched: int
    settling: list[str]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_inbox(
    root: str | os.PathLike, previous: InboxCursor, *, settle_seconds: float, now: float | None = None
) -> InboxPlan:
    """What one tick does: the runs to request, the reports to make and the next cursor (pure but for the reads)."""
    now = time.time() if now is None else now
    directory = trips_dir(root)
    cursor = InboxCursor(files={}, requested={d: list(h) for d, h in previous.requested.items()}, reported={})
    reports: list[InboxReport] = []
    settling: list[str] = []
    by_day: dict[str, dict[str, str]] = {}
    present: set[str] = set()

    def report_once(kind: str, name: str, day: str | None, message: str) -> None:
        key = f"{kind}:{message}"
        cursor.reported[name] = key
        if previous.reported.get(name) != key:
            reports.append(InboxReport(kind, name, day, message))

    entries = sorted(directory.iterdir(), key=lambda p: p.name) if directory.is_dir() else []
    for path in entries:
        name = path.name
        if in_progress(name):
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if not path.is_file():
            continue
        if path.is_symlink():  # the inbox reads regular files only: a link could point anywhere on the host
            report_once("file_ignored", name, None, f"inbox file {name!r} is a symbolic link; only regular files are read")
            continue
        present.add(name)
        try:
            parsed = parse_inbox_name(name)
        except InboxNameError as exc:
            waiting = exc.rule == "day within the partitions" and "once it is complete" in exc.detail
            report_once("file_waiting" if waiting else "file_ignored", name, None, str(exc))
            continue
        if now - st.st_mtime < settle_seconds:
            settling.append(name)
            if name in previous.files:
                cursor.files[name] = previous.files[name]
            continue
        cached = previous.files.get(name)
        if cached and cached[1:] == [st.st_size, st.st_mtime_ns]:
            sha = cached[0]
        else:
            try:
                sha = _sha256(path)
            except FileNotFoundError:
                present.discard(name)
                continue
        cursor.files[name] = [sha, st.st_size, st.st_mtime_ns]
        by_day.setdefault(parsed.day, {})[name] = sha

    removed_by_day: dict[str, list[str]] = {}
    for name in sorted(set(previous.files) - present):
        try:
            removed_by_day.setdefault(parse_inbox_name(name).day, []).append(name)
        except InboxNameError:  # the partitions definition moved since the file was seen
            continue

    requests: list[DayRequest] = []
    for day in sorted(set(by_day) | set(removed_by_day)):
        files = by_day.get(day, {})
        removed = removed_by_day.get(day, [])
        history = cursor.requested.get(day, [])
        for name in removed:
            sha = previous.files[name][0]
            if files:
                detail = (f"inbox file {name} (sha256 {sha[:12]}) was removed; day {day} runs again from its other "
                          f"files ({', '.join(sorted(files))}): the removed file's rows leave the published partition")
            else:
                detail = (f"inbox file {name} (sha256 {sha[:12]}) was removed and day {day} has no inbox file left; "
                          f"nothing runs and the published partitions of {day} are kept. Drop a file for the day to "
                          "replace them")
            reports.append(InboxReport("file_removed", name, day, detail))
        if not files:
            continue
        digest = manifest_digest(files)
        if history and history[-1] == digest:
            continue
        returns = history.count(digest)
        run_key = f"{RUN_KEY_PREFIX}{day}@{digest[:24]}" + (f".{returns}" if returns else "")
        change = "file removed" if removed else "new day" if not history else "files changed"
        requests.append(DayRequest(day, run_key, dict(files), change))
        cursor.requested[day] = (history + [digest])[-HISTORY_PER_DAY:]
    return InboxPlan(requests, reports, cursor, watched=len(present), settling=settling)


@dg.sensor(
    job=scooter_inbox_job,
    minimum_interval_seconds=settings.current().inbox_sensor_interval,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Runs a day of scooter_inbox_job when the inbox files of that day change (run key: the day's file names and "
        "content hashes); reports removed files and files that name no partition."
    ),
)
def scooter_inbox_sensor(context: dg.SensorEvaluationContext, scooter_inbox: ScooterInboxResource):
    plan = plan_inbox(scooter_inbox.inbox_root(), InboxCursor.load(context.cursor), settle_seconds=scooter_inbox.settle_seconds)
    for report in plan.reports:
        context.log.warning(report.message)
    for request in plan.requests:
        context.log.info(f"requesting {request.day} ({request.change}): {request.run_key}")
    events = [report.observation() for report in plan.reports]
    if plan.requests:
        return dg.SensorResult(
            run_requests=[r.run_request() for r in plan.requests], cursor=plan.cursor.dump(), asset_events=events
        )
    waiting = f"; {len(plan.settling)} file(s) settling" if plan.settling else ""
    return dg.SensorResult(
        skip_reason=f"no new or changed inbox files ({plan.watched} file(s) in {scooter_inbox.trips_dir()}{waiting})",
        cursor=plan.cursor.dump(),
        asset_events=events,
    )

