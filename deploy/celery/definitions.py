"""The platform's code location with every step executed on Celery workers (dagster-celery).

Same assets, checks, resources, jobs, schedules and sensors as `idem_platform.definitions`; only the executor
differs: each step of a run (an asset's compute + publish, or an asset check) becomes a Celery task on the
broker, and any worker started with `deploy/celery/worker.sh` (on this machine or another) executes it.

Settings (environment; the same values on the run's machine and on every worker):

    IDEM_CELERY_BROKER   broker URL       default pyamqp://guest:guest@127.0.0.1:5672//  (RabbitMQ)
                                          or redis://127.0.0.1:6379/0 (Redis)
    IDEM_CELERY_BACKEND  result backend   default rpc:// (RabbitMQ); with Redis: redis://127.0.0.1:6379/1
    IDEM_CELERY_QUEUE    queue name       default dagster (workers listen with -q on the same name)

The broker and backend reach the executor config as `env:` references, so a password in the URL is never
written into the run config the UI shows.

Load it with `-f deploy/celery/definitions.py` (CLI) or `deploy/celery/workspace.yaml` (webserver, daemon).
"""

import os

import dagster as dg
from dagster_celery import celery_executor

from idem_platform import definitions as platform  # a module, not its Definitions: one Definitions per module

DEFAULTS = {
    "IDEM_CELERY_BROKER": "pyamqp://guest:guest@127.0.0.1:5672//",
    "IDEM_CELERY_BACKEND": "rpc://",
    "IDEM_CELERY_QUEUE": "dagster",
}
for name, value in DEFAULTS.items():
    os.environ.setdefault(name, value)

celery_steps = celery_executor.configured(
    {
        "broker": {"env": "IDEM_CELERY_BROKER"},
        "backend": {"env": "IDEM_CELERY_BACKEND"},
        "config_source": {"task_default_queue": os.environ["IDEM_CELERY_QUEUE"]},
    },
    name="celery_steps",
)

# Everything of the platform's Definitions but its executor (Definitions.merge refuses two executors).
defs = dg.Definitions(
    assets=platform.defs.assets,
    asset_checks=platform.defs.asset_checks,
    jobs=platform.defs.jobs,
    schedules=platform.defs.schedules,
    sensors=platform.defs.sensors,
    resources=platform.defs.resources,
    loggers=platform.defs.loggers,
    metadata=platform.defs.metadata,
    executor=celery_steps,
)
