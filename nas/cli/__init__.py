"""The `nas` command line: the composition root that wires nas, evaluators, storage and reports.

Each command group lives in its own module exposing ``register(app)``; this file only
assembles them, so that the groups can evolve independently.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click
import typer

from evaluators.errors import EvaluatorError
from nas.errors import NasError

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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Error classes whose message is meant for the user (printed without a traceback)."""
    # deferred: storage's package imports sqlalchemy and pandas; only needed once an error surfaced
    from storage.errors import StorageError

    return (NasError, EvaluatorError, StorageError)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except _user_errors() as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


__all__ = ["app", "main"]
