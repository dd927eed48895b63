"""The errors an evaluation reports instead of scoring: bad inputs, missing files, bad tasks.

The CLI turns every one of them into exit code 2."""

from __future__ import annotations


class EvalConfigError(ValueError):
    """Bad evaluation inputs (reported before any model is loaded)."""


class MissingInputError(EvalConfigError, FileNotFoundError):
    """A model / adapter / data path that should exist does not."""


class TaskLoadError(EvalConfigError):
    """A task (or its dataset) could not be loaded."""
