"""Progress and cancellation callables shared by long operations.

Long functions take ``progress(fraction, message)`` and ``cancel() -> bool``; they call
:func:`check` between steps, which raises :class:`~MESCCAnalyzerLib.errors.Cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import Cancelled

ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]


def no_progress(fraction: float, message: str) -> None:  # noqa: ARG001 - the protocol
    """A progress callback that ignores its reports."""


def check(cancel: CancelCallback | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` says so."""
    if cancel is not None and cancel():
        raise Cancelled()


def sub_progress(progress: ProgressCallback | None, start: float, stop: float) -> ProgressCallback:
    """Map a nested step's 0..1 progress onto ``start..stop`` of the caller's."""
    if progress is None:
        return no_progress

    def report(fraction: float, message: str) -> None:
        progress(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return report
