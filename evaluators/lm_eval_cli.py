"""lm-eval's own command line with the ``nas-subnet`` model and the offline task pack.

lm-eval 0.4.x finds models through its registry and has no plugin entry points, so a
bare ``lm_eval --model nas-subnet`` cannot know about this package. This module
registers the model (by importing :mod:`evaluators.harness`), points lm-eval at the
generated task YAMLs of the offline pack (unless ``--include_path`` is given), and
then runs lm-eval's CLI unchanged::

    python -m evaluators.lm_eval_cli --model nas-subnet \\
        --model_args supernet=work/smollm2,subnet=largest,dtype=bf16 \\
        --tasks arc_easy,hellaswag --limit 100

Every lm-eval option works as usual. When every requested task is a local pack task,
lm-eval's index of its ~14,000 built-in YAMLs (about 10 s) is skipped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from evaluators.errors import EvaluatorError


def _requested_tasks(args: Sequence[str]) -> list[str]:
    names: list[str] = []
    for pos, arg in enumerate(args):
        values: list[str] = []
        if arg in ("--tasks", "-t"):
            for value in args[pos + 1 :]:
                if value.startswith("-"):
                    break
                values.append(value)
        elif arg.startswith("--tasks="):
            values.append(arg.split("=", 1)[1])
        names.extend(n for v in values for n in v.split(",") if n)
    return names


def main(argv: Sequence[str] | None = None) -> None:
    """Run lm-eval's CLI with ``argv`` (default: ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # deferred: lm-eval's CLI and task registry are heavy; argument errors are reported before loading them
        import evaluators.harness  # noqa: F401  (registers --model nas-subnet)
        from evaluators.tasks import TaskPack

        pack_only = False
        if not any(a == "--include_path" or a.startswith("--include_path=") for a in args):
            pack = TaskPack()
            if pack.data_dir is not None:
                pack.write()
                args += ["--include_path", str(pack.directory)]
                tasks = _requested_tasks(args)
                pack_only = bool(tasks) and all(pack.is_local(t) for t in tasks)
    except EvaluatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    # deferred: lm-eval's CLI and task registry are heavy; argument errors are reported before loading them
    import lm_eval.tasks
    from lm_eval.__main__ import cli_evaluate

    logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)  # pack tasks override built-ins on purpose
    sys.argv = ["lm-eval", *args]
    if not pack_only:
        _run(cli_evaluate)
        return

    builtin_manager = lm_eval.tasks.TaskManager

    class PackTaskManager(builtin_manager):  # type: ignore[misc, valid-type]
        """lm-eval's TaskManager over the generated pack only (no index of the built-ins)."""

        def __init__(self, *a: object, include_defaults: bool = True, **kw: object) -> None:
            super().__init__(*a, include_defaults=False, **kw)  # type: ignore[arg-type]

    lm_eval.tasks.TaskManager = PackTaskManager  # lm-eval's run command looks it up at call time
    try:
        _run(cli_evaluate)
    finally:
        lm_eval.tasks.TaskManager = builtin_manager


def _run(cli: Callable[[], None]) -> None:
    try:
        cli()
    except EvaluatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
