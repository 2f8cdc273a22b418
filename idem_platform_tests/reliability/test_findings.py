"""Regression tests for what the reliability suite found in code it does not own.

Lake reads during a concurrent republish (fixed in 68190ce): `LakeSink.read` read with
`pd.read_parquet(path)`, and pyarrow opens a path twice (footer, then pages); an `os.replace` by a concurrent rerun
between the two opens made the read fail ('Column cannot have more than one dictionary', 'Unexpected end of
stream: Page was smaller ...'), about one read in twenty under a tight republish loop. The published file was
never partial: the reader mixed two files. It now reads through one file descriptor.
"""

from __future__ import annotations

import threading
import time
import uuid

from idem_platform_tests.reliability.scorecard import full_matrix
from idem_platform_tests.reliability.stores import stale_publishes
from idem_platform_tests.reliability.writers import publish

DAY = "2026-03-02"


def test_lake_read_during_a_concurrent_republish_never_fails(make_store, scorecard):
    spec = make_store("lake")
    publish(spec, "w00", {DAY: 40}, f"first-{uuid.uuid4()}")
    stop, errors, reads = threading.Event(), [], 0

    sample_times = []  # ("lake", start, end, 1) per read, as in a reader's summary

    def republish() -> None:
        i = 0
        with sc.publishing():  # the republish loop is one long publish window
            while not stop.is_set():
                i += 1
                publish(spec, f"w{i % 5:02d}", {DAY: 40 + 7 * (i % 5)}, f"again-{uuid.uuid4()}")

    with scorecard.scenario("concurrency/lake/read_during_republish", "concurrency", "lake") as sc:
        writer = threading.Thread(target=republish)
        writer.start()
        sink, target = spec.sink(), spec.target()
        deadline = time.monotonic() + (20 if full_matrix() else 4)  # with the bug, the first error came in < 1 s
        try:
            while not errors and time.monotonic() < deadline:
                try:
                    began = time.monotonic()
                    frame = sink.read(target, [DAY])  # what a downstream asset's load_input does
                    sample_times.append(("lake", began, time.monotonic(), 1))
                    reads += 1
                    assert frame["gen"].nunique() == 1 and len(frame) == 40 + 7 * int(frame["gen"].iloc[0][1:])
                except OSError as exc:
                    errors.append(exc)
        finally:
            stop.set()
            writer.join()
        sc.add_reader({"samples": reads + len(errors), "partial": len(errors), "duplicates": 0, "lost": 0,
                       "examples": [f"reader error: lake {e!r}"[:300] for e in errors], "sample_times": sample_times})
        sc.record_stale(stale_publishes(spec, [DAY]))
        assert errors == [], f"read {reads + 1} of the day failed during a concurrent republish: {errors[0]!r}"
