"""A host-wide lock that keeps a timing clean when several CPU workers share a machine.

Throughput is measured on the same cores a neighbour trains on; a measurement taken during
a neighbour's training step reads the neighbour's load, not the design. So, when several
workers run on one host's CPU (`--workers N`), a measurement holds the lock exclusively and
every training step holds it shared: steps wait while a measurement runs, and a measurement
waits for the steps in flight. A turnstile in front keeps a stream of overlapping steps
from starving the measurement (flock has no writer priority).

The lock is two files under the system's temp directory (fcntl.flock: released by the
kernel when a process dies, so a killed trial never leaves it held). It is off unless the
environment names it (ATTNDSL_MEASURE_LOCK), which the supervisor of CPU workers does.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

ENV = "ATTNDSL_MEASURE_LOCK"


def default_path() -> str:
    return str(Path(tempfile.gettempdir()) / "attndsl-measure.lock")


class HostLock:
    def __init__(self, path: str):
        self.main = open(path, "a+")
        self.turnstile = open(path + ".turnstile", "a+")

    @contextlib.contextmanager
    def exclusive(self):
        """For a measurement: no training step runs on this host meanwhile."""
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)      # new steps queue behind us
        try:
            fcntl.flock(self.main, fcntl.LOCK_EX)       # the steps in flight finish
            try:
                yield
            finally:
                fcntl.flock(self.main, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def shared(self):
        """For one training step: runs alongside other steps, never during a measurement."""
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        fcntl.flock(self.main, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self.main, fcntl.LOCK_UN)


def from_environment() -> HostLock | None:
    path = os.environ.get(ENV)
    return HostLock(path) if path else None
