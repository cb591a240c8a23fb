"""User-facing errors of the evaluators (unknown task, missing data, bad sub-network)."""

from __future__ import annotations


class EvaluatorError(Exception):
    """A problem with evaluation input, explained in one message that names the fix."""


__all__ = ["EvaluatorError"]
