"""The suite's multiprocessing context, shared by writer and reader processes.

Children are forked from a forkserver that has imported the platform once: a child starts in milliseconds instead
of the ~1.5 s a fresh interpreter takes.
"""

from __future__ import annotations

import multiprocessing

_FORKSERVER = None


def forkserver():
    """The suite's multiprocessing context: children forked from a server that imported the platform once."""
    global _FORKSERVER
    if _FORKSERVER is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(  # the modules whose functions run in children
            ["idem_platform_tests.reliability.readers", "idem_platform_tests.reliability.writers"]
        )
        _FORKSERVER = ctx
    return _FORKSERVER
