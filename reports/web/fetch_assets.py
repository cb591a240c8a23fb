"""``python -m reports.web.fetch_assets``: install plotly.js's basic partial bundle for the web pages.

Fetches the npm package of the plotly.js version that the ``plotly`` package bundles, checks it
against the registry's sha512 and keeps it in ``reports/web/bundles/`` (see
:mod:`reports.web.assets`). Exit status 0 when installed, 1 (with the reason) when it cannot
be fetched: the pages then load the full bundle, which works offline but parses four times
the code on a first visit.
"""

from __future__ import annotations

import sys
import tarfile

from reports.web.assets import fetch_basic_bundle


def main() -> int:
    try:
        path = fetch_basic_bundle()
    except (OSError, RuntimeError, KeyError, ValueError, tarfile.TarError) as exc:
        print(f"could not fetch plotly.js's basic bundle ({exc}); the web pages will load the full bundle instead",
              file=sys.stderr)
        return 1
    print(f"plotly.js basic bundle: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
