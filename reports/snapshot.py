"""A PNG of a study's Pareto plot, rendered by a real headless Chromium.

    python -m reports.snapshot STUDY --out docs/pareto.png [--storage URL] [--width 900 --height 520]

Draws :func:`reports.figures.pareto_figure` into a small offline HTML page (plotly.js
inline) and screenshots it with the Python ``playwright`` package driving the system's
Chromium (``/usr/bin/chromium``, or ``NAS_CHROMIUM``); it never downloads a browser.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from reports.data import load_study
from reports.figures import pareto_figure
from storage import StorageError, open_database

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_path() -> str:
    path = os.environ.get("NAS_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).is_file():
        raise StorageError(f"no Chromium at {path}; install Debian's chromium or set NAS_CHROMIUM to a Chromium binary")
    return path


def snapshot(study: str, out: str | Path, *, storage: str | None = None, width: int = 900, height: int = 520) -> Path:
    """Write the Pareto plot of ``study`` as a PNG to ``out``; return its path."""
    # deferred: playwright is a dev dependency (only for PNG snapshots)
    from playwright.sync_api import sync_playwright


    db = open_database(storage)
    try:
        view = load_study(db, study)
    finally:
        db.close()
    figure = pareto_figure(view)
    figure.update_layout(width=width, height=height, margin={"l": 60, "r": 20, "t": 90, "b": 50})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "pareto.html"
        figure.write_html(str(page_file), include_plotlyjs=True, full_html=True, config={"displayModeBar": False})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(page_file.as_uri())
                page.wait_for_selector(".main-svg")
                page.screenshot(path=str(out))
            finally:
                browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="PNG of a study's Pareto plot (headless Chromium)")
    parser.add_argument("study")
    parser.add_argument("--out", required=True)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--height", type=int, default=520)
    args = parser.parse_args()
    print(snapshot(args.study, args.out, storage=args.storage, width=args.width, height=args.height))


if __name__ == "__main__":
    main()
