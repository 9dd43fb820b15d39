"""Error types shared by the library.

Every error raised for bad input names the offending file or field and what was
expected, so that a user can fix the input without reading our code.
"""

from __future__ import annotations

from pathlib import Path


class VlmtError(Exception):
    """Base class for errors the CLI reports as a one-line message."""


class InputError(VlmtError):
    """Bad user input: a missing/unreadable file or a malformed field.

    ``where`` is the path or ``file:field`` at fault; ``expected`` says what would be valid.
    """

    def __init__(self, where: str | Path, problem: str, expected: str | None = None):
        self.where = str(where)
        self.problem = problem
        self.expected = expected
        message = f"{self.where}: {problem}"
        if expected:
            message += f" (expected {expected})"
        super().__init__(message)


class MissingDependencyError(VlmtError):
    """An optional external package is needed for this operation and is not installed."""
