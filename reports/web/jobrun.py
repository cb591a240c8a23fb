"""Run one web job's command and record how it ended, for a server that may not be there to see it.

    python reports/web/jobrun.py EXIT_FILE -- COMMAND [ARGS...]

The web service starts every job through this runner (by path, so that it imports nothing
of the project). It runs ``COMMAND`` as its child, passes on SIGTERM, SIGINT and SIGHUP,
and when the child ends writes ``{"returncode": ..., "finished_at": ...}`` to
``EXIT_FILE`` (atomically; a negative return code is the signal that ended the child, as
:mod:`subprocess` reports it). A server restarted after a crash reads the file to learn the
status of a job it did not start. Exits with the child's status (128 + N for signal N).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: jobrun.py EXIT_FILE -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    exit_file, command = Path(argv[0]), argv[2:]
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child is None:  # arrived before the command started: it never will
            pending.append(signum)
            return
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    # handlers first, so that a cancellation in the first instant is not lost (the command
    # starts with the default handlers: exec resets caught signals)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    if pending:
        code = -pending[0]
    else:
        try:
            child = subprocess.Popen(command)  # noqa: S603 - the web service's own fixed command
        except OSError as exc:
            print(f"error: cannot run {command[0]!r}: {exc}", file=sys.stderr)
            code = 127
        else:
            code = child.wait()
    tmp = exit_file.with_name(exit_file.name + ".tmp")
    tmp.write_text(json.dumps({"returncode": code, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}))
    os.replace(tmp, exit_file)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
