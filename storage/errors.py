"""User-facing errors of the `storage` package.

Anything a user can cause (a bad database URL, an unreachable server, a read-only
path, a corrupt SQLite file, a database written by a newer version of this package,
an unknown study) raises :class:`StorageError` with one message that names the
input and the fix. The CLI prints it as ``error: <message>`` without a stack trace.
"""

from __future__ import annotations


class StorageError(Exception):
    """A problem with the database or with what was asked of it, explained in one message."""


__all__ = ["StorageError"]
