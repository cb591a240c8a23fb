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
_COMMAND_MODULES = ("supernet", "db", "search", "train", "heal", "report", "demo")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"nas.cli.{_name}").register(app)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Error classes whose message is meant for the user (printed without a traceback)."""
    # deferred: storage's package imports sqlalchemy and pandas; only needed once an error surfaced
    from storage.errors import StorageError

    return (NasError, EvaluatorError, StorageError)


#: Exit statuses: a check that fails (``nas pick`` with no match, ``nas supernet verify``
#: above tolerance, an export that does not reproduce its scores), bad input (usage errors,
#: unknown names, bad files), an interrupt (Ctrl-C).
EXIT_FAILED_CHECK = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

#: Usage errors: typer's own (it bundles click; TyperException is their public base) and click's.
_USAGE_ERRORS = (typer.TyperException, click.ClickException)
_ABORTS = (typer.Abort, click.exceptions.Abort)
_EXITS = (typer.Exit, click.exceptions.Exit)


def _no_interrupt_traceback(record: logging.LogRecord) -> bool:
    """Optuna logs a trial aborted by Ctrl-C with the KeyboardInterrupt's traceback: keep its
    one line, drop the traceback (the interrupt is the user's, not a bug)."""
    if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
        record.exc_info, record.exc_text = None, None
    return True


def main(argv: list[str] | None = None) -> None:
    """Run ``nas`` and exit with a status a script can test: 0 on success, 1 for a check
    that fails, 2 for bad input (one line on stderr, with the usage hint for usage errors),
    130 for an interrupt."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna.study._optimize").addFilter(_no_interrupt_traceback)
    try:
        code = app(args=argv, prog_name="nas", standalone_mode=False)
    except _EXITS as exc:
        code = exc.exit_code
    except _USAGE_ERRORS as exc:
        if hasattr(exc, "show"):
            exc.show()
        else:
            sys.stderr.write(f"error: {exc.format_message()}\n")
        code = exc.exit_code
    except _ABORTS:
        sys.stderr.write("aborted\n")
        code = EXIT_FAILED_CHECK
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_FAILED_CHECK
    except _user_errors() as exc:
        sys.stderr.write(f"error: {exc}\n")
        code = EXIT_BAD_INPUT
    # typer returns the status of a typer.Exit raised by a command (and 130 for Ctrl-C)
    # instead of exiting with it when standalone_mode is off: pass it on.
    code = code if isinstance(code, int) else 0
    if code == EXIT_INTERRUPTED:
        sys.stderr.write("interrupted\n")
    sys.exit(code)


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED_CHECK", "EXIT_INTERRUPTED", "app", "main"]
