"""`dagster-daemon` for one machine: the same command, with a prompt backfill daemon.

    python -m idem_platform.daemon run -w workspace.yaml      # what `idem dev` runs; arguments as dagster-daemon's

Dagster 1.13's backfill daemon sleeps a fixed 30 s between iterations (`DEFAULT_DAEMON_INTERVAL_SECONDS` in
`dagster._daemon.controller`; dagster.yaml has no setting for it, dagster-io/dagster#11649). A backfill needs one
iteration to submit its run and another to see it finished, so a 3-day backfill launched from the UI spent most of
its 45-60 s waiting. This module sets that interval to IDEM_BACKFILL_INTERVAL_SECONDS (default 5; 30 is Dagster's)
before the daemon starts; everything else is dagster-daemon's. An idle iteration reads the requested backfills from
the run storage: two small queries per interval.

It also switches off the instance's legacy "auto-materialize paused" flag, which Dagster sets by default. Since
automation conditions are evaluated by sensors (`auto_materialize: use_sensors`, the default since 1.8), that flag
no longer pauses anything (`follow_upstream` runs whatever it says), but the job page shows it as an
"Auto-materialize off" tag. Whether automation runs is the sensor's own status (Automation -> follow_upstream).
"""

from __future__ import annotations

import logging
import sys

from . import settings

_log = logging.getLogger("idem_platform.daemon")


def set_backfill_interval(seconds: float) -> bool:
    """Set the backfill daemon's interval for daemons created after this call; False if this Dagster has no such
    knob (then its own interval applies)."""
    from dagster._daemon import controller

    if not isinstance(getattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", None), int | float):
        return False
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = seconds
    return True


def unpause_legacy_auto_materialize() -> None:
    """Clear the pre-sensor "auto-materialize paused" flag of the instance (DAGSTER_HOME) when sensors evaluate
    automation conditions: there it pauses nothing and only shows as "Auto-materialize off"."""
    import dagster as dg
    from dagster._daemon.asset_daemon import get_auto_materialize_paused, set_auto_materialize_paused

    with dg.DagsterInstance.get() as instance:
        if instance.auto_materialize_use_sensors and get_auto_materialize_paused(instance):
            set_auto_materialize_paused(instance, False)


def main() -> None:
    from dagster._daemon.cli import main as dagster_daemon

    interval = settings.current().backfill_interval
    if not set_backfill_interval(interval):
        _log.warning("this Dagster has no backfill daemon interval to set: backfills start at its own pace")
    if sys.argv[1:2] == ["run"]:
        try:
            unpause_legacy_auto_materialize()
        except Exception as exc:  # noqa: BLE001 - a tag in the UI: never a reason not to start the daemon
            _log.warning(f"could not clear the legacy auto-materialize pause: {exc}")
    dagster_daemon()


if __name__ == "__main__":
    main()
