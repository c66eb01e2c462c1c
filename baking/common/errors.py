"""The project's exceptions.

Every error a user can cause by handing us bad input derives from ``Dna2GffError``, so command-line
wrappers can catch exactly these, print one ``error: ...`` line and exit 2, while real bugs still
raise tracebacks.
"""

from __future__ import annotations

from pathlib import Path


class Dna2GffError(Exception):
    """Base class of user-facing errors (bad input, bad configuration)."""


class InputError(Dna2GffError):
    """Bad content in an input file, located as ``path:line: reason`` (or ``path:line:col``)."""

    def __init__(
        self, path: str | Path, reason: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.path = str(path)
        self.line = line
        self.column = column
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        if line is not None and column is not None:
            where += f":{column}"
        super().__init__(f"{where}: {reason}")


class OutputError(Dna2GffError):
    """An output that cannot be written (where, or what is there), as ``path: reason``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(Dna2GffError):
    """An invalid option or configuration value."""
