"""The web UI in a real browser: how soon the Pareto plot is drawn, what a repeat visit
transfers, and console errors on every page.

Writes two synthetic finished studies (1,000 and 30 trials of a SmolLM2-shaped supernet,
storage rows only) into a fresh SQLite database, starts ``nas serve`` on a free loopback
port in its own process, warms the server (one request per study: the cold build of a
study view is reported apart), then drives Debian's Chromium (playwright, headless):

* ``pareto_drawn_ms``: navigation start -> the Pareto plot drawn (the page stamps
  ``performance.now()`` when plotly has rendered it), first visit (empty browser cache)
  and repeat visit, median of ``--repeats``; goals 1,000 trials <= 1,000 ms, 30 <= 500 ms;
* ``pareto_drawn_ms_full_bundle``: the same, side by side in the same run, from a second
  server whose pages load plotly.js's full bundle (``NAS_PLOTLY_BUNDLE=full``) instead of
  the basic partial one (``plotly_bundle`` says which the first server served);
* ``transfer_bytes``: bytes over the network (``transferSize`` of the document and every
  resource) for the 1,000-trial study page, first and repeat visit; goal repeat <= 1.5 MB;
* ``console_errors``: console errors and uncaught exceptions per page (studies, both study
  pages, a front member, an infeasible trial, pick with a submitted budget, compare, the
  study overlay, launch, /docs); goal 0 everywhere. Requests that leave the server
  are refused and counted as errors (the pages must work offline).

Prints one JSON object.

    .venv/bin/python bench/web_ui.py [--repeats 3]
"""

from __future__ import annotations

import argparse
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

from _browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from _synthetic import write_synthetic_study  # noqa: E402

BIG, SMALL = "big", "small"
TOKEN = "bench-ui-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(url: str, work: Path, *, bundle: str = "") -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "NAS_API_TOKEN": TOKEN, "NAS_WORK_DIR": str(work), "NAS_PLOTLY_BUNDLE": bundle}
    server = subprocess.Popen(
        [sys.executable, "-c", "from nas.cli import main; main()", "serve", "--port", str(port), "--storage", url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(base + "/api/health", timeout=1.0).raise_for_status()
            return server, base
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nas serve did not start: " + (server.stderr.read().decode() if server.stderr else ""))
            time.sleep(0.2)


def _watch(page, base: str) -> list[str]:  # noqa: ANN001
    """Collect console errors, uncaught exceptions and requests that leave the server (only
    listened to: intercepting requests would switch the browser cache off)."""
    errors: list[str] = []
    page.on("request", lambda req: None if req.url.startswith((base, "data:", "blob:")) else errors.append(f"off-site {req.url}"))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


_TRANSFER = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  return (nav ? nav.transferSize : 0) + res.reduce((n, r) => n + r.transferSize, 0);
}"""


def _visit_study(page, base: str, study: str) -> tuple[float, int]:  # noqa: ANN001
    """(ms from navigation start to the Pareto plot drawn, bytes transferred once the page settled)."""
    page.goto(f"{base}/studies/{study}")
    page.wait_for_selector("#pareto[data-drawn-ms]", timeout=60_000)
    drawn = float(page.get_attribute("#pareto", "data-drawn-ms"))
    page.wait_for_selector('#trials-card[data-ready="1"]', timeout=60_000)
    page.wait_for_selector("#parallel .main-svg", timeout=60_000)
    page.wait_for_load_state("networkidle")
    return drawn, int(page.evaluate(_TRANSFER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    # deferred: playwright only when benchmarking in a browser
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="nas-web-ui-"))
    url = f"sqlite:///{tmp / 'nas.db'}"
    config = SupernetConfig(vocab_size=49152, d_model=576, n_layer=30, n_head=9, n_kv_head=3, d_ff=1536)
    with open_database(url) as db:
        write_synthetic_study(db, name=BIG, config=config, n_trials=1000, seed=0)
        write_synthetic_study(db, name=SMALL, config=config, n_trials=30, seed=1)
    server, base = _start_server(url, tmp / "work")
    full_server, full_base = _start_server(url, tmp / "work", bundle="full")
    page_html = httpx.get(f"{base}/studies/{SMALL}", timeout=120.0).text
    out: dict = {"cpus": os.cpu_count(), "plotly_bundle": "basic" if "/static/plotly-basic-" in page_html else "full"}
    try:
        server_cold = {}
        for study in (BIG, SMALL):
            start = time.perf_counter()
            httpx.get(f"{base}/studies/{study}", timeout=120.0).raise_for_status()
            server_cold[study] = round((time.perf_counter() - start) * 1e3)
        out["server_cold_page_ms"] = server_cold
        pareto = httpx.get(f"{base}/api/studies/{BIG}/figures/pareto", headers={"accept-encoding": "gzip"})
        out["pareto_payload_bytes_1000"] = {"json": len(pareto.content),
                                            "gzip": int(pareto.headers.get("content-length", len(pareto.content)))}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            servers = {"served": base, "full": full_base}
            drawn = {b: {s: {"first": [], "repeat": []} for s in (BIG, SMALL)} for b in servers}
            transfer: dict[str, list[int]] = {"first": [], "repeat": []}
            for _ in range(args.repeats):
                for which, server_base in servers.items():  # side by side, interleaved
                    for study in (BIG, SMALL):
                        context = browser.new_context(viewport={"width": 1440, "height": 1000})
                        page = context.new_page()
                        _watch(page, server_base)
                        for visit in ("first", "repeat"):
                            ms, size = _visit_study(page, server_base, study)
                            drawn[which][study][visit].append(ms)
                            if study == BIG and which == "served":
                                transfer[visit].append(size)
                        context.close()
            for which, key in (("served", "pareto_drawn_ms"), ("full", "pareto_drawn_ms_full_bundle")):
                out[key] = {
                    f"{n}_trials": {k: round(statistics.median(v)) for k, v in drawn[which][s].items()}
                    for s, n in ((BIG, 1000), (SMALL, 30))
                }
            out["transfer_bytes_1000_trial_study_page"] = {k: int(statistics.median(v)) for k, v in transfer.items()}
            out["console_errors"] = _console_errors(browser, base)
            browser.close()
    finally:
        for proc in (server, full_server):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    big, small = out["pareto_drawn_ms"]["1000_trials"], out["pareto_drawn_ms"]["30_trials"]
    out["goals"] = {
        "pareto_1000_le_1000ms": {visit: ms <= 1000 for visit, ms in big.items()},
        "pareto_30_le_500ms": {visit: ms <= 500 for visit, ms in small.items()},
        "repeat_transfer_le_1.5MB": out["transfer_bytes_1000_trial_study_page"]["repeat"] <= 1_500_000,
        "no_console_errors": not any(v for k, v in out["console_errors"].items() if k != "messages"),
    }
    print(json.dumps(out))


def _console_errors(browser, base: str) -> dict[str, int]:  # noqa: ANN001
    front = httpx.get(f"{base}/api/studies/{BIG}/front").json()
    trials = httpx.get(f"{base}/api/studies/{BIG}/trials", params={"feasible": "no", "limit": 1}).json()["trials"]
    pages = {
        "studies": ("/", "table"),
        "study_1000": (f"/studies/{BIG}", "#parallel .main-svg"),
        "study_30": (f"/studies/{SMALL}", "#parallel .main-svg"),
        "candidate": (f"/studies/{BIG}/trials/{front[0]['trial']}", "#layers .main-svg"),
        "candidate_infeasible": (f"/studies/{BIG}/trials/{trials[0]['trial']}", "#layers .main-svg"),
        "pick": (f"/studies/{BIG}/pick", None),
        "compare_candidates": (f"/studies/{BIG}/compare?trials={front[0]['trial']},{front[-1]['trial']}", "#layer-diff"),
        "compare_studies": (f"/compare?study={BIG}&study={SMALL}", "#overlay .main-svg"),
        "launch": ("/launch", "#launch-form"),
        "docs": ("/docs", ".swagger-ui .opblock"),
    }
    out = {}
    for name, (path, ready) in pages.items():
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        errors = _watch(page, base)
        page.goto(base + path)
        if name == "pick":
            page.locator("#bounds .bound-max").first.fill("100M")
            page.click("#pick-submit")
            ready = '#pick-plot[data-ready="1"]'
        if ready:
            page.wait_for_selector(ready, timeout=60_000)
        page.wait_for_load_state("networkidle")
        out[name] = len(errors)
        if errors:
            out.setdefault("messages", []).extend(f"{name}: {e[:200]}" for e in errors[:3])
        context.close()
    return out


if __name__ == "__main__":
    main()
