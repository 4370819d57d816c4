"""Errors raised on bad input: one line that names the file (or case) and the problem."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset, split or file is unusable. ``str(err)`` is a single line: ``<path>: <problem>``."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = " ".join(str(problem).split())  # force one line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")


class SplitError(DataError):
    """A split file is malformed or disagrees with the dataset (e.g. names absent cases)."""
