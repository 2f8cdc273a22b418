"""Fault points: a test-only way to make a partition write die at a chosen step, to prove crash safety.

Set `IDEM_FAULT=<point>` or `IDEM_FAULT=<sink>:<point>` (sink: postgres, lake, elasticsearch) in the environment
of a run, optionally `IDEM_FAULT_ASSET=<asset>`; the process dies when the write reaches that point, with no
cleanup at all, as a power cut or `kill -9` would leave it:

    before_stage   partition lock held, nothing written yet
    mid_stage      inside the COPY / bulk / file write, after the first chunk
    after_stage    everything staged, not yet verified
    after_audit    staged content verified, no ledger intent yet
    after_intent   the ledger intent committed (lake, search; the table has none), not yet published
    after_publish  published in the sink (alias swapped, file replaced), ledger row not yet written / confirmed
    after_ledger   ledger rows written / intents confirmed, transaction not yet committed
    after_commit   everything committed

`IDEM_FAULT_MODE=exit` (default) calls `os._exit(137)`; `kill` sends SIGKILL to the process itself; `pause` stops
the write there (it creates `<IDEM_FAULT_PAUSE>.reached` and goes on once `<IDEM_FAULT_PAUSE>` exists), so a test
can act meanwhile, e.g. terminate the writer's PostgreSQL session to prove fencing. Unset, every fault point is a
no-op costing one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .. import settings

POINTS = ("before_stage", "mid_stage", "after_stage", "after_audit", "after_intent", "after_publish", "after_ledger", "after_commit")
EXIT_CODE = 137


def fault_point(sink: str, point: str, asset: str | None = None) -> None:
    wanted = settings.raw("IDEM_FAULT")
    if not wanted:
        return
    if point not in POINTS:  # pragma: no cover - a typo in the platform itself
        raise ValueError(f"unknown fault point {point!r}")
    target_sink, _, target_point = wanted.rpartition(":")
    if target_point != point or (target_sink and target_sink != sink):
        return
    only_asset = settings.raw("IDEM_FAULT_ASSET")
    if only_asset and asset and only_asset != asset:
        return
    mode = settings.raw("IDEM_FAULT_MODE")
    if mode == "pause":
        resume = Path(settings.raw("IDEM_FAULT_PAUSE"))
        Path(f"{resume}.reached").touch()
        while not resume.exists():
            time.sleep(0.01)
        return
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(EXIT_CODE)
