"""Dry runs: an IO manager in `dry_run` mode audits and hands over its frame instead of publishing it.

`idem verify` recomputes a partition through the asset's own code path and needs the frame it would have
published. The run is tagged with a capture token; the IO manager stores the audited frame under that token
for the verifying process (the run executes in-process), and the sink is never touched.
"""

from __future__ import annotations

import threading

import dagster as dg
import pandas as pd

CAPTURE_TAG = "idem/verify_capture"

_captured: dict[str, pd.DataFrame] = {}
_lock = threading.Lock()


def capture(context: dg.OutputContext, frame: pd.DataFrame) -> None:
    token = context.step_context.run_tags.get(CAPTURE_TAG)
    if token is None:
        raise dg.DagsterInvariantViolationError(
            "an IO manager in dry_run mode publishes nothing; it only runs inside `idem verify`"
        )
    with _lock:
        _captured[token] = frame


def take(token: str) -> pd.DataFrame:
    with _lock:
        return _captured.pop(token)
