"""`nas` commands of this group (filled in by the group owner)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
