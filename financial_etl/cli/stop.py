"""Stopping `financial-etl run` on SIGTERM or SIGINT: within seconds, nothing half-written.

Dagster turns either signal into an interrupt of the running step: its handler raises in
the main thread, and DuckDB's Python client stops a query running there. Two kinds of
work run elsewhere and would hold the process: SQLMesh evaluates the model in a thread of
its own (its query is interrupted here, and the transactional adapter of
sqlmesh_project/config.py rolls it back), and dlt loads files in worker threads. So once
the run has recorded its failure, the process exits without waiting for threads: a
statement still running in one is discarded uncommitted, as DuckDB discards it when the
process is killed (docs/operations.md, "Stopping a run").

Which signal came is read from the pipe Python's C-level handler writes each signal's
number to (`signal.set_wakeup_fd`), whichever Python handler (Dagster's, dlt's, ours)
is installed at the time.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from financial_etl.errors import exit_code_for_signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# After the signal, how long the run gets to record its end before the process exits anyway.
GRACE_S = 20.0
REPEAT_S = 0.2  # how often running queries are interrupted again (one may start after the first)


class StoppedBySignal(KeyboardInterrupt):
    """Raised in the main thread outside a Dagster step (Dagster raises its own inside one).
    A KeyboardInterrupt, so that no library's `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopOnSignal:
    """Around a run: records the first SIGINT or SIGTERM, interrupts the queries `interrupt`
    reaches until the process ends, and exits the process GRACE_S after the signal if the
    run has not ended by then."""

    def __init__(self, interrupt: Callable[[], None] = lambda: None, grace_s: float = GRACE_S):
        self.signum: int | None = None
        self.interrupt, self._grace_s = interrupt, grace_s
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._closed = False

    @property
    def exit_code(self) -> int | None:
        return exit_code_for_signal(self.signum) if self.signum else None

    def __enter__(self) -> StopOnSignal:
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._raise)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="financial-etl-stop", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._closed = True
        os.write(self._write, b"\0")  # wakes the watcher, which closes the pipe

    def _raise(self, signum, frame) -> None:
        raise StoppedBySignal(signum)

    def _watch(self) -> None:
        while True:
            received = os.read(self._read, 1)
            if received and received[0] in SIGNALS and self.signum is None:
                self.signum = received[0]
                break
            if self._closed:  # the run ended without a signal
                os.close(self._read)
                os.close(self._write)
                return
        deadline = time.monotonic() + self._grace_s
        while time.monotonic() < deadline:
            try:
                self.interrupt()
            except Exception:  # noqa: BLE001 - a query that has just ended, a closed connection
                pass
            time.sleep(REPEAT_S)
        name = signal.Signals(self.signum).name
        print(
            f"financial-etl: stopped by {name}; the run did not end within {self._grace_s:.0f} s, exiting "
            f"(exit {self.exit_code})",
            file=sys.stderr,
            flush=True,
        )
        exit_now(self.exit_code)


def exit_now(code: int) -> None:
    """Exit without waiting for library threads (see the module's docstring)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
