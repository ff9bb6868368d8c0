"""A failed step's exit code from the exception it raised: its class (errors.py), or the
errno of a disk error anywhere in its chain; never from class names or message text."""

from __future__ import annotations

import errno

import dagster as dg
import pytest

from financial_etl.cli.failures import StepErrors, exit_code_for_failure, failure_message
from financial_etl.errors import (
    EXIT_CONNECTION,
    EXIT_STORAGE,
    EXIT_UNEXPECTED,
    DestinationUnreachableError,
    chain,
)


class DriverError(Exception):
    """A library's own error type, unknown to the project."""


def wrapped_destination_error():
    try:
        raise DriverError("connection refused")
    except DriverError as exc:
        raise DestinationUnreachableError("cannot reach the server") from exc


def disk_full_under_a_library_error():
    try:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x.parquet")
    except OSError as exc:
        raise DriverError("load failed") from exc


def library_error_after_a_project_error_it_hid():
    try:
        raise DestinationUnreachableError("not this one")
    except DestinationUnreachableError:
        raise DriverError("a bug") from None


def failed_step(raiser) -> BaseException:
    """What the CLI's failure hook records when a real step raises through `raiser`."""

    @dg.op
    def step():
        raiser()

    errors = StepErrors()

    @dg.job(hooks={errors.hook()})
    def one_step():
        step()

    result = one_step.execute_in_process(raise_on_error=False, instance=dg.DagsterInstance.ephemeral())
    assert not result.success
    ((key, exc),) = errors.by_step.items()
    assert key == "step"
    return exc


@pytest.mark.parametrize(
    ("raiser", "code", "message"),
    [
        (
            wrapped_destination_error,
            EXIT_CONNECTION,
            "financial_etl.errors.DestinationUnreachableError: cannot reach the server",
        ),
        (
            disk_full_under_a_library_error,
            EXIT_STORAGE,
            "OSError: [Errno 28] No space left on device: '/data/x.parquet'",
        ),
        (
            library_error_after_a_project_error_it_hid,
            EXIT_UNEXPECTED,
            "financial_etl_tests.cli.test_failures.DriverError: a bug",
        ),
    ],
)
def test_a_failed_steps_own_exception_gives_the_exit_code_and_the_line(raiser, code, message):
    exc = failed_step(raiser)
    assert exit_code_for_failure(exc) == code
    assert failure_message(exc) == message


def test_the_chain_is_what_a_traceback_shows():
    with pytest.raises(DriverError) as hid:
        library_error_after_a_project_error_it_hid()
    assert [type(e) for e in chain(hid.value)] == [DriverError]  # `from None` hides the context
    with pytest.raises(DestinationUnreachableError) as wrapped:
        wrapped_destination_error()
    assert [type(e) for e in chain(wrapped.value)] == [DestinationUnreachableError, DriverError]
