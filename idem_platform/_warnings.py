"""Dagster's Beta/Preview warnings for the features the platform relies on by design, silenced where it uses them.

`BackfillPolicy.single_run()` (beta) is how a range is one run; partitioned asset checks (preview) are how each
day's check has a status. Users did not choose them and cannot act on the warnings, which every CLI call printed.
"""

import contextlib
import warnings

import dagster as dg


@contextlib.contextmanager
def quiet_dagster_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield
