"""User-facing errors of the `nas` package.

Anything a user can cause (bad YAML, a config outside the space, a missing file, a
corrupt checkpoint) raises :class:`NasError` with one message that names the input
and the fix. The CLI prints it without a stack trace.
"""

from __future__ import annotations


class NasError(Exception):
    """A problem with user input or environment, explained in one message."""


__all__ = ["NasError"]
