"""StopOnSignal (cli/stop.py) in a process of its own: it interrupts a DuckDB query that a
signal cannot reach (one running in another thread), and exits the process with the
signal's code when the run does not end within its grace period."""

import signal
import subprocess
import sys
import time

from financial_etl.errors import EXIT_SIGINT, EXIT_SIGTERM

QUERY_IN_A_THREAD = """
import threading, duckdb
from financial_etl.cli.stop import StopOnSignal
con = duckdb.connect()
cursor = con.cursor()
outcome, done = [], threading.Event()
def query():
    try:
        cursor.execute("SELECT sum(hash(a * b)) FROM range(4000000000) t(a), range(2) u(b)").fetchall()
        outcome.append("finished")
    except Exception as exc:
        outcome.append(type(exc).__name__)
    done.set()
with StopOnSignal(interrupt=cursor.interrupt) as stop:
    threading.Thread(target=query).start()
    print("ready", flush=True)
    while not done.is_set():
        try:
            done.wait()
        except KeyboardInterrupt:  # the main thread's own stop; the query runs on
            pass
print(stop.signum, outcome, flush=True)
"""

STUCK = """
import time
from financial_etl.cli.stop import StopOnSignal
with StopOnSignal(grace_s=1):
    print("ready", flush=True)
    while True:
        try:
            time.sleep(60)
        except KeyboardInterrupt:  # a run that does not end when told
            pass
"""


def started(script: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.5)
    return process


def test_a_query_running_in_another_thread_is_interrupted():
    process = started(QUERY_IN_A_THREAD)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert out.split("\n")[0] == f"{int(signal.SIGINT)} ['InterruptException']"


def test_a_run_that_does_not_end_is_exited_with_the_signals_code_after_the_grace_period():
    process = started(STUCK)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == EXIT_SIGTERM == 143 and EXIT_SIGINT == 130
    assert 1 <= time.monotonic() - sent < 10
    assert "stopped by SIGTERM; the run did not end within 1 s" in err
