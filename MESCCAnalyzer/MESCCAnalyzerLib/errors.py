"""Exceptions that carry a sentence a radiologist understands.

The command line turns :class:`MESCCError` into one line ``mescc CMD: PATH: message`` and
exit status 2; the Slicer widget shows the same text in a message box.
"""

from __future__ import annotations

import os


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name) shown escaped."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


class MESCCError(ValueError):
    """A problem with the user's input or request, with an optional file and fixing hint."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, hint: str = ""):
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text += f" ({self.hint})"
        return printable(text)


class InputError(MESCCError):
    """An input file or folder cannot be used as given."""


class MissingTagError(InputError):
    """A DICOM attribute needed for a computation (e.g. SUV) is absent or empty."""

    def __init__(self, tag: str, *, path=None, hint: str = ""):
        self.tag = tag
        super().__init__(f"missing DICOM attribute {tag}", path=path, hint=hint)


class ComputationError(MESCCError):
    """An algorithm could not produce a trustworthy result (e.g. registration did not converge)."""


class Cancelled(MESCCError):
    """The user cancelled a long operation."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)
