"""Load on the web service: a 1,000-trial study, 50 concurrent clients for 20 s on loopback.

Writes a synthetic finished study (1,000 trials, storage rows only) into a fresh SQLite
database, starts ``nas serve`` on a free loopback port in its own process, warms it up
(one request per endpoint: the cold build of the study view is reported separately), then
runs 50 concurrent clients, each alternating the study page (``/studies/NAME``) and the
front API (``/api/studies/NAME/front``) as fast as they can for 20 s.

Prints one JSON object: ``requests``, ``errors``, ``p50_ms``, ``p95_ms`` (goal: errors = 0,
p95 < 500 ms), plus throughput, per-endpoint figures and the cold-start times.

    .venv/bin/python bench/web_load.py [--trials 1000] [--clients 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the synthetic-study fixture

from nas.model.config import SupernetConfig  # noqa: E402
from storage import open_database  # noqa: E402

from _synthetic import write_synthetic_study  # noqa: E402

STUDY = "load"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q * (len(ordered) - 1)))))
    return ordered[k]


async def _client(base: str, paths: list[str], stop_at: float, out: list[tuple[str, float, bool]], offset: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        i = offset
        while time.monotonic() < stop_at:
            path = paths[i % len(paths)]
            i += 1
            start = time.perf_counter()
            try:
                res = await client.get(path)
                ok = res.status_code == 200 and len(res.content) > 0
            except httpx.HTTPError:
                ok = False
            out.append((path, (time.perf_counter() - start) * 1e3, ok))


async def _load(base: str, paths: list[str], clients: int, seconds: float) -> tuple[list[tuple[str, float, bool]], float]:
    out: list[tuple[str, float, bool]] = []
    start = time.monotonic()
    await asyncio.gather(*(_client(base, paths, start + seconds, out, k) for k in range(clients)))
    return out, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nas-web-load-"))
    url = f"sqlite:///{tmp / 'nas.db'}"
    config = SupernetConfig(vocab_size=49152, d_model=576, n_layer=30, n_head=9, n_kv_head=3, d_ff=1536)
    t0 = time.perf_counter()
    with open_database(url) as db:
        write_synthetic_study(db, name=STUDY, config=config, n_trials=args.trials, seed=0)
    write_s = time.perf_counter() - t0

    port = _free_port()
    env = {**os.environ, "NAS_API_TOKEN": "bench-token", "NAS_WORK_DIR": str(tmp / "work")}
    server = subprocess.Popen(
        [sys.executable, "-c", "from nas.cli import main; main()", "serve", "--port", str(port), "--storage", url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    paths = [f"/studies/{STUDY}", f"/api/studies/{STUDY}/front"]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/api/health", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nas serve did not start: " + (server.stderr.read().decode() if server.stderr else ""))
                time.sleep(0.2)
        cold = {}
        for path in paths:
            start = time.perf_counter()
            httpx.get(base + path, timeout=60.0).raise_for_status()
            cold[path] = round((time.perf_counter() - start) * 1e3, 1)
        results, elapsed = asyncio.run(_load(base, paths, args.clients, args.seconds))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    latencies = [ms for _, ms, ok in results if ok]
    by_endpoint = {}
    for path in paths:
        mine = [ms for p, ms, ok in results if p == path and ok]
        by_endpoint[path] = {
            "requests": sum(1 for p, _, _ in results if p == path),
            "errors": sum(1 for p, _, ok in results if p == path and not ok),
            "p50_ms": round(_percentile(mine, 0.50), 1),
            "p95_ms": round(_percentile(mine, 0.95), 1),
        }
    out = {
        "trials": args.trials,
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "requests": len(results),
        "errors": sum(1 for _, _, ok in results if not ok),
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p95_ms": round(_percentile(latencies, 0.95), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "requests_per_s": round(len(results) / elapsed, 1),
        "by_endpoint": by_endpoint,
        "cold_ms": cold,
        "write_study_s": round(write_s, 1),
        "cpus": os.cpu_count(),
        "goal_met": bool(results) and all(ok for _, _, ok in results) and _percentile(latencies, 0.95) < 500,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
