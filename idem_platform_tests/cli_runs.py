"""Helpers for tests that drive the real `dagster` and `idem` command lines in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def materialize_command(select: str, *, partition: str | None = None, partition_range: str | None = None) -> list[str]:
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "idem_platform.definitions", "--select", select]
    if partition:
        cmd += ["--partition", partition]
    if partition_range:
        cmd += ["--partition-range", partition_range]
    return cmd


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30) -> None:
    """Stop a process started with `start_new_session=True` and everything it spawned (daemon, run workers)."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
