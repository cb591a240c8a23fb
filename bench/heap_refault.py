"""What freed heap memory costs when it is used again: glibc's trim threshold on this machine.

Each setting runs in its own process (``mallopt`` is per process): grow the heap by
``--gib`` GiB in 64 MiB blocks, touching every page (``first_s``), free them, wait
``--idle`` seconds (a VM whose balloon reports free pages hands them to the host in that
time), and grow it again (``again_s``). Settings:

- ``kept``: :func:`nas.model.heap.retain_freed_memory` as it is (trimming off);
- ``trim_2gib``: the same with the trim threshold at 2 GiB - 1 (the setting before): the heap
  is trimmed once more than that lies free at its top;
- ``glibc_default``: ``NAS_RETAIN_HEAP=0``, glibc's own thresholds (64 MiB blocks mmapped).

Prints one JSON object: per setting ``first_s`` and ``again_s``, and the settings.

    python bench/heap_refault.py [--gib 5] [--idle 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETTINGS = ("kept", "trim_2gib", "glibc_default")


def child(setting: str, gib: float, idle: float) -> dict[str, float]:
    from nas.model import heap

    if setting == "trim_2gib":
        heap.TRIM_THRESHOLD = (1 << 31) - 1
    heap.retain_freed_memory()
    nbytes = int(gib * 2**30)
    first = heap.grow_heap(nbytes)
    time.sleep(idle)
    return {"first_s": round(first, 2), "again_s": round(heap.grow_heap(nbytes), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=5.0, help="heap grown, freed and grown again (GiB)")
    parser.add_argument("--idle", type=float, default=6.0, help="seconds between freeing and growing again")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.gib, args.idle)))
        return
    out: dict[str, object] = {"gib": args.gib, "idle_s": args.idle}
    for setting in SETTINGS:
        env = {**os.environ, "NAS_RETAIN_HEAP": "0" if setting == "glibc_default" else "1"}
        run = subprocess.run([sys.executable, __file__, "--child", setting, "--gib", str(args.gib), "--idle", str(args.idle)],
                             env=env, capture_output=True, text=True, check=True)
        out[setting] = json.loads(run.stdout)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
