"""Why a `financial-etl` run failed: the exception each failed step raised, and its exit code.

A failure hook added to the job by the CLI records `HookContext.op_exception`, the step's
own exception (a DuckDB or driver error keeps its type and its `__cause__` chain), so the
exit code comes from the exception's class (errors.py), not from the names and texts
Dagster serializes into the event log. The run itself goes on as without the hook: steps
that do not depend on a failed one still run, and the result keeps every event.
"""

from __future__ import annotations

import traceback

from dagster import HookContext, HookDefinition, failure_hook

from financial_etl.errors import EXIT_STORAGE, EXIT_UNEXPECTED, chain, exit_code_for, project_error


class StepErrors:
    """The exception of each failed step, in the order the steps failed."""

    def __init__(self) -> None:
        self.by_step: dict[str, BaseException] = {}

    def hook(self) -> HookDefinition:
        @failure_hook(name="financial_etl_step_errors")
        def record_step_error(context: HookContext) -> None:
            if context.op_exception is not None:
                self.by_step.setdefault(context.step_key, context.op_exception)

        return record_step_error

    def first(self) -> tuple[str, BaseException] | None:
        return next(iter(self.by_step.items()), None)


def exit_code_for_failure(exc: BaseException) -> int:
    """The project's code for `exc`; a full or read-only disk under any library's error is 5."""
    from financial_etl.warehouse.storage import storage_problem

    if (code := exit_code_for(exc)) is not None:
        return code
    return EXIT_STORAGE if storage_problem(exc) is not None else EXIT_UNEXPECTED


def failure_message(exc: BaseException) -> str:
    """The project's own message when one is in the chain (it says what to do), else the
    innermost cause's, each as a traceback's last line shows it."""
    shown = project_error(exc) or list(chain(exc))[-1]
    return "".join(traceback.format_exception_only(type(shown), shown)).strip()
