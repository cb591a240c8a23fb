"""The `nas` command line: the composition root that wires nas, evaluators, storage and reports.

Each command group lives in its own module exposing ``register(app)``; this file only
assembles them, so that the groups can evolve independently.
"""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="nas",
    help="Search the sub-networks of an elastic LLM supernet for the best accuracy/cost trade-offs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; each defines register(app: typer.Typer) -> None.
_COMMAND_MODULES = ("supernet", "db", "search", "train", "report", "demo")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"nas.cli.{_name}").register(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


__all__ = ["app", "main"]
