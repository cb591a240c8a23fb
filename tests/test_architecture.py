"""The layout holds: packages import on their own, modules stay small, deferred imports say
why, and the web app draws a study page without torch (the layer contracts themselves are
checked by `lint-imports` in `make test`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from nas.model.config import SupernetConfig

from _synthetic import write_synthetic_study

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("nas", "evaluators", "storage", "reports")
PACKAGES = (
    "nas", "nas.model", "nas.importing", "nas.training", "nas.search", "nas.export", "nas.cli",
    "nas.pareto", "nas.pick", "nas.front", "nas.metrics", "nas.stats",
    "evaluators", "storage", "reports", "reports.web",
)
MAX_LINES = 600


def _python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_every_package_imports_in_isolation() -> None:
    """A fresh interpreter per package: no package needs another to be imported first (no
    cycle hidden by import order)."""
    procs = {name: _python(f"import {name}") for name in PACKAGES}
    failures = {name: p.communicate(timeout=240)[0][-800:] for name, p in procs.items()}
    failures = {name: out for name, out in failures.items() if procs[name].returncode != 0}
    assert not failures, failures


def test_no_module_under_nas_is_over_600_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "nas").rglob("*.py")}
    assert sizes and not {p: n for p, n in sizes.items() if n > MAX_LINES}


def _function_imports(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    k = node.lineno - 2  # walk up over the import block (imports and blank lines)
                    while k >= 0 and (lines[k].strip().startswith(("from ", "import ")) or not lines[k].strip()):
                        k -= 1
                    if "# deferred:" not in lines[node.lineno - 1] and (k < 0 or "# deferred:" not in lines[k]):
                        out.append((node.lineno, lines[node.lineno - 1].strip()))
    return out


def test_function_level_imports_say_why_they_are_deferred() -> None:
    """A function-level import only defers a heavy optional dependency, with a
    ``# deferred:`` comment saying so."""
    bare = {
        f"{p.relative_to(ROOT)}:{line}": text
        for pkg in PRODUCT for p in sorted((ROOT / pkg).rglob("*.py")) for line, text in _function_imports(p)
    }
    assert not bare


_NO_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not importable in this test")
        return None

sys.meta_path.insert(0, NoTorch())
from pathlib import Path
from fastapi.testclient import TestClient
from reports.web import WebSettings, create_app

app = create_app(WebSettings(database_url={url!r}, work_dir=Path({work!r}), token="t" * 32))
with TestClient(app) as client:
    page = client.get("/studies/toy", headers={{"accept": "text/html"}})
    front = client.get("/api/studies/toy/front")
    assert page.status_code == 200 and 'id="pareto"' in page.text, page.status_code
    assert front.status_code == 200 and front.json(), front.text
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print("served without torch")
"""


@pytest.mark.slow
def test_web_app_serves_a_study_page_without_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    from storage import open_database

    with open_database(url) as db:
        config = SupernetConfig(vocab_size=128, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=64)
        write_synthetic_study(db, name="toy", config=config, n_trials=12, seed=1)
    proc = _python(_NO_TORCH.format(url=url, work=str(tmp_path)))
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0 and "served without torch" in out, out[-2000:]
